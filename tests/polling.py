"""Waiting in tests: one deadline, and one way to poll for a condition until it holds.

Tests never sleep for a server to be ready or for a change to take effect: they poll a
check until it returns a true value, and fail at ``DEADLINE`` with a message that says what
they were waiting for and what the check last returned. ``wait_for`` polls under trio (the
check may be sync or async); ``wait_for_sync`` polls from plain threads (subprocesses,
blocking clients). ``run_within`` runs a whole trio scenario under a deadline of its own, so
that a test that hangs fails instead.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

import trio

DEADLINE = 10.0  # seconds: no test waits longer than this for any one thing
SCENARIO_DEADLINE = DEADLINE * 3  # a whole end-to-end scenario: several waits in a row
INTERVAL = 0.01  # seconds between two polls

T = TypeVar("T")


class WaitTimeoutError(AssertionError):
    """A condition a test waited for did not hold by the deadline."""

    def __init__(self, what: str, deadline: float, last: object) -> None:
        super().__init__(f"not within {deadline:g} s: {what} (the check last gave {last!r})")


@overload
async def wait_for(
    check: Callable[[], Awaitable[T | None]],
    what: str,
    deadline: float = ...,
    *,
    interval: float = ...,
) -> T: ...


@overload
async def wait_for(
    check: Callable[[], T | None], what: str, deadline: float = ..., *, interval: float = ...
) -> T: ...


async def wait_for(
    check: Callable[[], Any],
    what: str,
    deadline: float = DEADLINE,
    *,
    interval: float = INTERVAL,
) -> Any:
    """Poll ``check`` until it returns a true value, and return that value.

    Raises ``WaitTimeoutError`` naming ``what`` and the last value once ``deadline`` seconds pass.
    """
    last: object = None
    with trio.move_on_after(deadline):
        while True:
            value = check()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
            last = value
            await trio.sleep(interval)
    raise WaitTimeoutError(what, deadline, last)


def wait_for_sync(
    check: Callable[[], T | None],
    what: str,
    deadline: float = DEADLINE,
    *,
    interval: float = INTERVAL,
) -> T:
    """``wait_for`` outside trio: ``check`` is called from this thread, between short sleeps."""
    end = time.monotonic() + deadline
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= end:
            raise WaitTimeoutError(what, deadline, value)
        time.sleep(min(interval, max(0.0, end - time.monotonic())))


def run_within(scenario: Callable[[], Awaitable[T]], seconds: float = SCENARIO_DEADLINE) -> T:
    """``trio.run(scenario)``, failing with ``trio.TooSlowError`` once ``seconds`` pass."""

    async def bounded() -> T:
        with trio.fail_after(seconds):
            return await scenario()

    return trio.run(bounded)
