"""Idle upstream connection bookkeeping: reuse order, expiry, limits."""

from __future__ import annotations

import pytest

from fastroute.proxy.pool import Pool


def _take(pool: Pool[str], endpoint: str, now: float) -> tuple[str | None, list[str]]:
    """``Pool.take``, its connections to close as a list."""
    connection, expired = pool.take(endpoint, now=now)
    return connection, list(expired)


def test_most_recently_used_connection_is_reused_first() -> None:
    pool: Pool[str] = Pool()
    assert list(pool.give("e1", "old", now=0.0)) == []
    assert list(pool.give("e1", "new", now=1.0)) == []
    assert _take(pool, "e1", 2.0) == ("new", [])
    assert _take(pool, "e1", 2.0) == ("old", [])
    assert _take(pool, "e1", 2.0) == (None, [])
    assert _take(pool, "other", 2.0) == (None, [])


def test_connections_idle_too_long_are_handed_back_to_close() -> None:
    pool: Pool[str] = Pool(idle_timeout=10.0)
    pool.give("e", "stale", now=0.0)
    pool.give("e", "stale-too", now=1.0)
    assert _take(pool, "e", 11.5) == (None, ["stale-too", "stale"])
    pool.give("e", "fresh", now=20.0)
    pool.give("f", "old", now=0.0)
    assert pool.sweep(now=25.0) == ["old"]
    assert len(pool) == 1


def test_more_idle_connections_than_the_limit_close_the_oldest() -> None:
    pool: Pool[int] = Pool(max_idle=2)
    assert list(pool.give("e", 1, now=0.0)) == []
    assert list(pool.give("e", 2, now=1.0)) == []
    assert list(pool.give("e", 3, now=2.0)) == [1]
    assert list(Pool[int](max_idle=0).give("e", 9, now=0.0)) == [9]


def test_drain_hands_back_everything() -> None:
    pool: Pool[int] = Pool()
    pool.give("a", 1, now=0.0)
    pool.give("b", 2, now=0.0)
    assert sorted(pool.drain()) == [1, 2]
    assert len(pool) == 0
    assert "idle={}" in repr(pool)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_idle": -1}, "max_idle must be 0 or more"),
        ({"idle_timeout": 0}, "idle_timeout must be positive"),
    ],
)
def test_bad_limits_are_named(options: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Pool(**options)  # type: ignore[arg-type]
