"""Ingress statuses converge, and quickly: written back within seconds when someone else
changes them, without a hot loop against another writer, retried with backoff when a write
fails, never written by a follower, and one changed Ingress costs one Ingress's work.

Against the API emulator (``tests/kubeapi``, real HTTP on 127.0.0.1): the real pipeline of
the controller, a ``KubeSource`` following the cluster and handing its configs and Ingress
watch events to a ``Publisher``, as ``controller.app`` wires them. Jitter is drawn from a
fixed source (the lowest draw), so the waits asserted are the ones the rules give.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from lightkube import AsyncClient, KubeConfig

from controller.kube.events import EventRecorder
from controller.kube.ingress_status import WRITE_RATE, StatusWriter, WriteOutcome
from controller.kube.leader import LeaderElector
from controller.kube.publisher import Publisher, PublishOptions, add_arguments
from controller.kube.reflector import WatchOptions
from controller.kube.source import KubeSource
from controller.kube.status_book import PACE_BASE, PACE_MAX, RETRY_MAX, StatusBook, WriteBudget
from controller.pipeline import Pipeline
from controller.reload_metrics import ReloadMetrics
from fastroute.ingress import RouteConfig
from fastroute.proxy.metrics import Metrics
from fastroute.proxy.server import Proxy
from tests.kubeapi import KubeAPI
from tests.objects import ingress
from tests.polling import DEADLINE, wait_for
from tests.test_kube_source import backends, running, site
from tests.test_kube_writes import FAST as FAST_LEASE

pytest_plugins = ["tests.kubeapi.fixtures"]

OURS = [{"ip": "203.0.113.7"}]
FOREIGN = [{"ip": "192.0.2.99"}]
INGRESSES = "/apis/networking.k8s.io/v1/namespaces/default/ingresses"
WATCH = WatchOptions(
    page_size=50, watch_timeout=30, backoff_initial=0.05, backoff_max=0.3, request_timeout=5
)


def _lowest() -> float:
    return 0.0


# -- objects and records -----------------------------------------------------------------


def _ingress(name: str, path: str = "/") -> dict[str, Any]:
    return ingress(name, f"{name}.example.com", paths=((path, "Prefix", "web"),))


def _status(api: KubeAPI, name: str) -> Any:
    ingress = api.get("Ingress", name) or {}
    return ingress.get("status", {}).get("loadBalancer", {}).get("ingress")


def _set_status(api: KubeAPI, name: str, value: Any) -> None:
    """Someone else writes the status (another controller, ``kubectl edit``, a restore)."""
    api.patch("Ingress", name, {"status": {"loadBalancer": {"ingress": value}}})


def _patches(api: KubeAPI, name: str) -> int:
    """Status writes the server received for one Ingress, answered or not."""
    return api.count("patch", f"{INGRESSES}/{name}/status")


def _written(api: KubeAPI, name: str) -> int:
    """Status writes the server accepted for one Ingress."""
    return sum(1 for w in api.writes_to(f"{INGRESSES}/{name}/status") if w.code == 200)


async def _until(check: Callable[[], bool], what: str, timeout: float = DEADLINE) -> float:
    """Poll ``check`` until it holds; the seconds it took."""
    started = trio.current_time()
    await wait_for(check, what, timeout)
    return trio.current_time() - started


async def _steady(check: Callable[[], bool], what: str, seconds: float) -> None:
    """Assert ``check`` holds at every poll for ``seconds`` (a bounded window)."""
    with trio.move_on_after(seconds):
        while True:
            assert check(), what
            await trio.sleep(0.01)


# -- a replica: a source following the emulator, feeding a publisher ---------------------


@dataclass
class Replica:
    source: KubeSource
    publisher: Publisher
    scope: trio.CancelScope
    config: RouteConfig | None = None  # the last config installed

    async def installed(self, config: RouteConfig, objects: Sequence[Mapping[str, Any]]) -> None:
        self.config = config
        await self.publisher.on_config(config, objects)


@asynccontextmanager
async def _replicas(
    kubeconfig: Path, count: int = 1, *, timeout: float = 10.0, rate: float = 100.0
) -> AsyncIterator[list[Replica]]:
    """``count`` replicas, each with its own client, source, pipeline and publisher
    (publishing ``OURS``), wired as ``controller.app`` wires them, running until the block
    ends; the first one started leads."""
    async with AsyncExitStack() as stack:
        clients = []
        for _ in range(count):
            client = AsyncClient(config=KubeConfig.from_file(kubeconfig))
            stack.push_async_callback(client.close)
            clients.append(client)
        # entered after the clients: the replicas stop (the leader releasing its Lease)
        # before the clients close
        nursery = await stack.enter_async_context(trio.open_nursery())
        replicas = []
        for n, client in enumerate(clients):
            identity = f"pod-{n}"
            elector = LeaderElector(
                client,
                namespace="default",
                name="fastroute-leader",
                identity=identity,
                **FAST_LEASE,
            )
            publisher = Publisher(
                client,
                elector,
                publish_service=None,
                publish_addresses=[OURS[0]["ip"]],
                recorder=EventRecorder(client, instance=identity),
                writer=StatusWriter(client, timeout=timeout, rate=rate),
                book=StatusBook(rng=_lowest),
            )
            source = KubeSource(client, watch=WATCH, on_ingress=publisher.on_ingress)
            metrics = Metrics()
            pipeline = Pipeline(Proxy(None, metrics=metrics), ReloadMetrics(metrics.registry))
            replica = Replica(source, publisher, trio.CancelScope())

            async def run(
                replica: Replica = replica,
                pipeline: Pipeline = pipeline,
                *,
                task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
            ) -> None:
                with replica.scope:
                    async with trio.open_nursery() as inner:
                        inner.start_soon(replica.publisher.run)
                        await inner.start(
                            partial(
                                pipeline.follow,
                                replica.source,
                                on_config=replica.installed,
                                debounce=0.01,
                            )
                        )
                        task_status.started()

            await nursery.start(run)
            if n == 0:
                await elector.wait_for(True)
            replicas.append(replica)
        try:
            yield replicas
        finally:
            nursery.cancel_scope.cancel()


async def _settled(replica: Replica) -> None:
    """Wait until the publisher's writes for the newest config installed are done."""
    await _until(
        lambda: replica.config is not None and replica.publisher.published is replica.config,
        "the publisher caught up with the newest config",
    )


# -- written back within seconds ---------------------------------------------------------


@pytest.mark.e2e
def test_a_status_cleared_or_changed_by_someone_else_is_written_back_within_seconds(
    kubeapi: KubeAPI, tmp_path: Path
) -> None:
    """The whole controller, its status interval at the default 60 s: the watch event,
    not the resync, brings the status back."""
    api = kubeapi
    publish = PublishOptions(publish_addresses=(OURS[0]["ip"],), namespace="default")

    async def scenario() -> None:
        async with backends("web") as ports:
            site(api, ports["web"])
            kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
            async with running(kubeconfig, ports, publish=publish):
                await _until(lambda: _status(api, "site") == OURS, "the first publication")
                _set_status(api, "site", None)  # cleared
                took = await _until(lambda: _status(api, "site") == OURS, "restored")
                assert took < 3.0
                _set_status(api, "site", FOREIGN)  # changed, seconds later
                took = await _until(lambda: _status(api, "site") == OURS, "restored again")
                assert took < 3.0

    trio.run(scenario)
    assert _written(api, "site") == 3


@pytest.mark.e2e
def test_our_own_write_coming_back_asks_for_no_other_write(
    kubeapi_tls: KubeAPI, kubeconfig_file: Path
) -> None:
    api = kubeapi_tls
    api.create(_ingress("a"))

    async def main() -> None:
        async with _replicas(kubeconfig_file) as (leader,):
            await _until(lambda: _status(api, "a") == OURS, "the first publication")
            _set_status(api, "a", None)
            await _until(lambda: _written(api, "a") == 2, "the status written back")

            def echoed() -> bool:  # the watch has delivered our second write
                (watch,) = [r for r in leader.source.reflectors if r.cache.kind == "Ingress"]
                cached = watch.cache.get(("default", "a")) or {}
                return bool(cached.get("status", {}).get("loadBalancer", {}).get("ingress") == OURS)

            book = leader.publisher.book
            # the answer to our write may come after its watch event: both, then
            await _until(lambda: echoed() and book.in_flight == 0, "our write seen and done")
            assert book.next_due() is None

    trio.run(main)
    assert _written(api, "a") == 2


# -- a fight is bounded ------------------------------------------------------------------


@pytest.mark.e2e
def test_a_fight_with_another_writer_is_paced_not_a_hot_loop(
    kubeapi_tls: KubeAPI, kubeconfig_file: Path
) -> None:
    """Another controller claims the Ingress too and sets its own address each time it
    sees ours: our rewrites space out (0.5, 1, 2, 4 s...), not one per watch event."""
    api = kubeapi_tls
    api.create(_ingress("a"))
    window = 4.0
    seen: list[float] = []  # when the rival saw our value

    async def rival() -> None:
        with trio.move_on_after(window):
            while True:  # bounded by the window
                if _status(api, "a") == OURS:
                    seen.append(trio.current_time())
                    _set_status(api, "a", FOREIGN)
                await trio.sleep(0.01)

    async def main() -> None:
        async with _replicas(kubeconfig_file):
            await _until(lambda: _status(api, "a") == OURS, "the first publication")
            before = _written(api, "a")
            await rival()
            during = _written(api, "a") - before
            # the holds, at the lowest jitter: 0.5, 1, 2 s after each write: 3 or 4
            # rewrites in 4 s (a hot loop would make hundreds)
            assert 2 <= during <= 4, during
            gaps = [b - a for a, b in itertools.pairwise(seen)]
            for n, gap in enumerate(gaps):
                assert gap >= PACE_BASE * 2.0**n * 0.5 * 0.9, gaps

    trio.run(main)


@pytest.mark.e2e
def test_a_write_waits_for_the_rebuild_an_ingress_change_started(
    kubeapi_tls: KubeAPI, kubeconfig_file: Path
) -> None:
    """A spec change, then a status cleared: the status is written back once the config
    with the change is in, not during its build (the two would slow each other down)."""
    api = kubeapi_tls
    # published already (by a replica before this one): no write holds the next one back
    api.create({**_ingress("b"), "status": {"loadBalancer": {"ingress": OURS}}})
    api.create({**_ingress("c"), "status": {"loadBalancer": {"ingress": OURS}}})

    async def main() -> None:
        async with _replicas(kubeconfig_file) as (leader,):
            await _settled(leader)
            writer = leader.publisher.writer
            sent_under: list[RouteConfig | None] = []  # the config in place at each write
            write = writer.write

            async def noting(namespace: str, name: str, value: Any) -> WriteOutcome:
                sent_under.append(leader.config)
                return await write(namespace, name, value)

            writer.write = noting  # type: ignore[method-assign]
            api.patch("Ingress", "c", {"spec": _ingress("c", path="/v2")["spec"]})
            _set_status(api, "b", None)
            await _until(lambda: _status(api, "b") == OURS, "b written back")
            (config,) = sent_under
            assert config is not None
            # the config in place when b was written no longer routes /other of c
            assert config.router.match("c.example.com", "/other") is None

    trio.run(main)


# -- failures are retried with backoff ----------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("code", [500, 503, 409, 429])
def test_a_failed_write_is_retried_first_within_two_seconds_then_later(
    kubeapi_tls: KubeAPI, kubeconfig_file: Path, code: int
) -> None:
    api = kubeapi_tls
    api.create(_ingress("a"))
    api.inject("patch", "ingresses/status", code=code, times=2)
    attempts: list[float] = []

    async def main() -> None:
        async with _replicas(kubeconfig_file):

            def attempt_counted() -> bool:
                while len(attempts) < _patches(api, "a"):
                    attempts.append(trio.current_time())
                return bool(_status(api, "a") == OURS)

            await _until(attempt_counted, "written after two failures")

    trio.run(main)
    assert len(attempts) == 3
    first, second = attempts[1] - attempts[0], attempts[2] - attempts[1]
    assert 0.9 <= first <= 2.2  # the first retry within about two seconds
    assert second >= 1.8  # backing off
    assert second > first


@pytest.mark.e2e
def test_a_write_that_times_out_is_retried(kubeapi_tls: KubeAPI, kubeconfig_file: Path) -> None:
    api = kubeapi_tls
    api.create(_ingress("a"))
    api.inject("patch", "ingresses/status", code=503, delay=1.0, times=1)  # no answer in time

    async def main() -> None:
        async with _replicas(kubeconfig_file, timeout=0.3) as (leader,):
            await _until(lambda: _status(api, "a") == OURS, "written after the timeout")
            assert leader.publisher.writer.failures == 1

    trio.run(main)
    assert _patches(api, "a") == 2


def test_retries_back_off_to_thirty_seconds() -> None:
    """The waits between retries, as the book computes them: from 1-2 s, doubling, then
    never more than 30 s."""
    for draw in (0.0, 1.0):
        book = StatusBook(rng=partial(float, draw))
        book.set_want((("203.0.113.7", ""),))
        book.set_served({"default/a"}, 0.0)
        book.observe("default/a", _ingress("a"), 0.0)
        waits = []
        now = 0.0
        for _ in range(8):
            due = book.pop_due(now)
            assert due is not None
            assert due[0] == "default/a"
            wait = book.failed("default/a", now, retry=True)
            assert wait is not None
            waits.append(wait)
            assert book.pop_due(now + wait - 0.001) is None  # not before the wait
            now += wait
        assert 1.0 <= waits[0] <= 2.0
        assert all(b >= a for a, b in itertools.pairwise(waits))
        assert max(waits) <= RETRY_MAX
        assert waits[-1] >= RETRY_MAX / 2


def test_holds_between_rewrites_grow_to_thirty_seconds_and_start_over_after_a_quiet_minute() -> (
    None
):
    book = StatusBook(rng=lambda: 1.0)
    want = (("203.0.113.7", ""),)
    book.set_want(want)
    book.set_served({"default/a"}, 0.0)
    version = 1
    now = 0.0
    holds = []

    def overwritten(at: float) -> None:
        nonlocal version
        version += 2  # someone else's write, after ours (version + 1)
        obj = {**_ingress("a"), "status": {"loadBalancer": {"ingress": FOREIGN}}}
        obj["metadata"] = {**obj["metadata"], "resourceVersion": str(version)}
        book.observe("default/a", obj, at)

    book.observe("default/a", _ingress("a"), now)
    for _ in range(7):
        due = book.pop_due(now)
        assert due is not None
        book.wrote("default/a", want, str(version + 1), now)
        overwritten(now)
        when = book.next_due()
        assert when is not None
        holds.append(when - now)
        now = when
    assert holds == [min(PACE_MAX, PACE_BASE * 2.0**n) for n in range(7)]
    # a minute without a write: the next change is written back at once
    book.pop_due(now)
    book.wrote("default/a", want, str(version + 1), now)
    later = now + 90.0
    overwritten(later)
    assert book.next_due() == later


# -- only the leader writes ----------------------------------------------------------------


@pytest.mark.e2e
def test_a_follower_never_writes_and_a_leader_that_loses_the_lease_stops_retrying(
    kubeapi_tls: KubeAPI, kubeconfig_file: Path
) -> None:
    api = kubeapi_tls
    api.create(_ingress("a"))
    api.inject("patch", "ingresses/status", code=500, times=1000)  # every write fails

    async def main() -> None:
        async with _replicas(kubeconfig_file, 2) as (first, second):
            await _until(lambda: _patches(api, "a") >= 2, "the leader retrying")
            assert first.publisher.elector.is_leader
            api.forbid("update", "leases")  # nobody can renew, or take over
            await _until(lambda: not first.publisher.elector.is_leader, "stepping down")
            stopped = _patches(api, "a")
            # longer than the first retry's wait (at most 2 s): nobody sends another
            await _steady(lambda: _patches(api, "a") == stopped, "a write while not leading", 2.5)
            assert second.publisher.writer.writes == second.publisher.writer.failures == 0
            api.allow("update", "leases")
            await _until(
                lambda: first.publisher.elector.is_leader or second.publisher.elector.is_leader,
                "a leader again",
            )

    trio.run(main)
    assert _written(api, "a") == 0


# -- O(changed) -------------------------------------------------------------------------------


@pytest.mark.e2e
def test_one_changed_ingress_among_many_costs_one_ingress_of_requests(
    kubeapi_tls: KubeAPI, kubeconfig_file: Path
) -> None:
    api = kubeapi_tls
    names = [f"app-{n}" for n in range(60)]
    for name in names:
        api.create(_ingress(name))

    async def main() -> None:
        async with _replicas(kubeconfig_file) as (leader,):
            await _until(lambda: all(_status(api, n) == OURS for n in names), "all published")
            await _settled(leader)
            api.clear_records()
            passes = leader.publisher.passes

            # a spec change (its status kept, as a PUT keeps it): a rebuild, a pass
            api.patch("Ingress", "app-7", {"spec": _ingress("app-7", path="/v2")["spec"]})
            _set_status(api, "app-8", None)  # someone clears another's status
            api.create(_ingress("app-new"))  # a new Ingress: served after a rebuild
            await _until(lambda: leader.publisher.passes > passes, "a pass")
            await _until(
                lambda: _status(api, "app-8") == OURS == _status(api, "app-new"), "written"
            )
            await _settled(leader)
            writes = sorted(w.path for w in api.writes if w.path.endswith("/status"))
            assert writes == [f"{INGRESSES}/app-8/status", f"{INGRESSES}/app-new/status"], writes
            # nothing read back: what the publisher knows comes from the watch
            assert not [key for key in api.requests if key[0] in ("get", "list")]
            assert api.served_objects("Ingress") == {
                ("default", "app-7"),
                ("default", "app-8"),
                ("default", "app-new"),
            }

    trio.run(main)


# -- many writes at once are spread out ----------------------------------------------------


@pytest.mark.e2e
def test_a_first_publication_of_many_statuses_keeps_to_the_write_rate(
    kubeapi_tls: KubeAPI, kubeconfig_file: Path
) -> None:
    """40 Ingresses, 20 writes a second: the last status lands about 2 s after the
    first, not all of them at once."""
    api = kubeapi_tls
    names = [f"app-{n}" for n in range(40)]
    for name in names:
        api.create(_ingress(name))

    async def main() -> None:
        async with _replicas(kubeconfig_file, rate=20.0):
            await _until(lambda: any(_status(api, n) == OURS for n in names), "the first")
            last = await _until(lambda: all(_status(api, n) == OURS for n in names), "all")
            assert last >= 1.3  # (40 - a burst of 2) / 20 s, less some slack
            assert last < 6.0

    trio.run(main)
    assert sum(_written(api, n) for n in names) == 40


def test_the_write_budget_allows_a_burst_then_its_rate() -> None:
    budget = WriteBudget(rate=100.0, burst=10)
    now = 0.0
    for _ in range(10):  # the burst, at once
        assert budget.ready_at(now) == now
        budget.spend(now)
    assert budget.ready_at(now) == pytest.approx(0.01)
    sent = 0
    while now < 1.0:  # one simulated second, bounded
        now = budget.ready_at(now)
        budget.spend(now)
        sent += 1
    assert 99 <= sent <= 101
    assert budget.ready_at(now + 60.0) == now + 60.0  # a quiet minute refills it


@pytest.mark.e2e
def test_the_status_write_rate_is_a_flag(kubeapi: KubeAPI) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    options = PublishOptions.from_args(parser.parse_args(["--status-write-rate=25"]))
    assert options.status_write_rate == 25.0
    assert PublishOptions.from_args(parser.parse_args([])).status_write_rate == WRITE_RATE
    for bad in ("0", "-1", "nan", "fast"):
        with pytest.raises(SystemExit):
            parser.parse_args([f"--status-write-rate={bad}"])

    async def build() -> Publisher:
        client = AsyncClient(config=KubeConfig.from_dict(kubeapi.kubeconfig()))
        built = options.publisher(client)
        await client.close()
        return built

    assert trio.run(build).writer.rate == 25.0
