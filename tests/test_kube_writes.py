"""What the controller writes to Kubernetes: the leader's Lease, Ingress statuses, Events.

Against the API emulator (``tests/kubeapi``) over HTTPS with a real lightkube AsyncClient
under trio, one client per simulated replica. Snapshots are built the way ``KubeSource``
builds them: every object listed, translated by ``build_config``. Leases are short (1 s)
to keep the file fast; every wait polls with a deadline.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from lightkube import AsyncClient, KubeConfig

from controller.kube.events import EventRecorder
from controller.kube.ingress_status import StatusWriter, desired_status, parse_addresses
from controller.kube.leader import LeaderElector
from controller.kube.publisher import Publisher, PublishOptions, add_arguments
from fastroute.ingress import RouteConfig, build_config
from tests.kubeapi import KubeAPI
from tests.objects import ingress, service
from tests.polling import wait_for

pytest_plugins = ["tests.kubeapi.fixtures"]

INGRESSES = "/apis/networking.k8s.io/v1/namespaces/default/ingresses"
EVENTS = "/api/v1/namespaces/default/events"
LEASE = "fastroute-leader"
FAST: dict[str, Any] = {"lease_duration": 1.0, "renew_deadline": 0.6, "retry_period": 0.05}
BAD_PATH = "spec.rules[0].http.paths[0]: the path must be absolute (start with '/')"


# -- objects ---------------------------------------------------------------------------


def _ingress(name: str, *, cls: str = "fastroute", path: str = "/") -> dict[str, Any]:
    return ingress(name, f"{name}.example.com", paths=[(path, "Prefix", "web")], cls=cls)


def _node(name: str, ready: bool = True, **addresses: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "status": {
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "addresses": [{"type": kind, "address": a} for kind, a in addresses.items()],
        },
    }


FOREIGN = [{"ip": "192.0.2.99"}]  # another controller's address


def _cluster(api: KubeAPI) -> None:
    """Ours: ``a`` and ``bad`` (one rejected path); ``other`` is another controller's."""
    api.create(service("web"))
    api.create(_ingress("a"))
    api.create(_ingress("bad", path="api"))
    api.create({**_ingress("other", cls="nginx"), "status": {"loadBalancer": {"ingress": FOREIGN}}})


def _snapshot(api: KubeAPI) -> tuple[RouteConfig, list[dict[str, Any]]]:
    """What KubeSource hands over after a rebuild: the config and the objects it came from."""
    objects = [obj for kind in ("Ingress", "Service") for obj in api.list(kind)]
    return build_config(objects), objects


def _status(api: KubeAPI, name: str) -> list[dict[str, str]] | None:
    ingress = api.get("Ingress", name)
    assert ingress is not None
    found: list[dict[str, str]] | None = (
        ingress.get("status", {}).get("loadBalancer", {}).get("ingress")
    )
    return found


def _status_writes(api: KubeAPI, name: str) -> int:
    return len(api.writes_to(f"{INGRESSES}/{name}/status"))


def _lease_version(api: KubeAPI) -> str:
    lease = api.get("Lease", LEASE)
    assert lease is not None
    version: str = lease["metadata"]["resourceVersion"]
    return version


def _holder(api: KubeAPI) -> str | None:
    lease = api.get("Lease", LEASE)
    return None if lease is None else lease["spec"].get("holderIdentity")


# -- trio helpers ----------------------------------------------------------------------


@asynccontextmanager
async def _clients(kubeconfig: Path, count: int) -> AsyncIterator[list[AsyncClient]]:
    """One lightkube client per simulated replica, closed afterwards."""
    async with AsyncExitStack() as stack:
        clients = []
        for _ in range(count):
            client = AsyncClient(config=KubeConfig.from_file(kubeconfig))
            stack.push_async_callback(client.close)
            clients.append(client)
        yield clients


async def _until(
    check: Callable[[], bool],
    what: str,
    *,
    timeout: float = 5.0,
    always: Callable[[], None] | None = None,
) -> float:
    """Poll ``check`` until it holds (asserting ``always`` at each poll); the time taken."""
    started = trio.current_time()

    def holds() -> bool:
        if always is not None:
            always()
        return check()

    await wait_for(holds, what, timeout)
    return trio.current_time() - started


def _start(nursery: trio.Nursery, run: Callable[[], Any]) -> trio.CancelScope:
    """Run ``run`` in the nursery; cancelling the returned scope stops just that."""
    scope = trio.CancelScope()

    async def task() -> None:
        with scope:
            await run()

    nursery.start_soon(task)
    return scope


def _elector(client: AsyncClient, identity: str, **options: Any) -> LeaderElector:
    return LeaderElector(
        client, namespace="default", name=LEASE, identity=identity, **{**FAST, **options}
    )


def _publisher(client: AsyncClient, identity: str = "pod-a", **options: Any) -> Publisher:
    settings: dict[str, Any] = {"publish_service": None, "publish_addresses": ()}
    return Publisher(
        client,
        _elector(client, identity),
        recorder=EventRecorder(client, instance=identity),
        writer=StatusWriter(client),
        **{**settings, **options},
    )


async def _pass(
    publisher: Publisher,
    api: KubeAPI,
    snapshot: tuple[RouteConfig, list[dict[str, Any]]] | None = None,
) -> None:
    """Hand the publisher a snapshot (by default a fresh one, as a rebuild would make) and
    wait for the pass over it."""
    config, objects = snapshot or _snapshot(api)
    await publisher.on_config(config, objects)
    await _until(lambda: publisher.published is config, "a publishing pass")


# -- leader election -------------------------------------------------------------------


@pytest.mark.e2e
def test_one_leader_and_a_released_lease_is_taken_over_at_once(
    kubeapi_tls: KubeAPI, kubeconfig_file: Path
) -> None:
    api = kubeapi_tls

    async def main() -> None:
        async with _clients(kubeconfig_file, 2) as (one, two), trio.open_nursery() as nursery:
            a, b = _elector(one, "pod-a"), _elector(two, "pod-b")
            scopes = {"pod-a": _start(nursery, a.run), "pod-b": _start(nursery, b.run)}

            def never_two() -> None:
                assert not (a.is_leader and b.is_leader)

            await _until(lambda: a.is_leader or b.is_leader, "a leader", always=never_two)
            leader, follower = (a, b) if a.is_leader else (b, a)
            assert _holder(api) == leader.identity
            # several renewals (each a new resourceVersion) and the leader stays
            versions = {_lease_version(api)}

            def renewed() -> bool:
                versions.add(_lease_version(api))
                return len(versions) > 3

            await _until(renewed, "three renewals", always=never_two)
            assert leader.is_leader
            assert not follower.is_leader
            assert follower.leader == leader.identity

            scopes[leader.identity].cancel()  # a clean stop releases the Lease
            took = await _until(lambda: follower.is_leader, "a takeover", always=never_two)
            assert took < 0.5  # within a couple of retry periods, not the 1 s lease
            lease = api.get("Lease", LEASE)
            assert lease is not None
            assert lease["spec"]["holderIdentity"] == follower.identity
            assert lease["spec"]["leaseTransitions"] == 1
            assert lease["spec"]["leaseDurationSeconds"] == 1
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert _holder(api) is None  # the last one released it too


@pytest.mark.e2e
def test_a_leader_that_dies_is_replaced_when_its_lease_expires(
    kubeapi_tls: KubeAPI, kubeconfig_file: Path
) -> None:
    api = kubeapi_tls

    async def main() -> None:
        async with _clients(kubeconfig_file, 2) as (one, two), trio.open_nursery() as nursery:
            # release_on_exit=False: stopped as a killed process stops, without a word
            a = _elector(one, "pod-a", release_on_exit=False)
            b = _elector(two, "pod-b")
            crash = _start(nursery, a.run)
            await _until(lambda: a.is_leader, "pod-a leading")
            _start(nursery, b.run)
            await _until(lambda: b.leader == "pod-a", "pod-b seeing pod-a lead")

            crash.cancel()

            def held_by_a_until_taken() -> None:
                assert _holder(api) in ("pod-a", "pod-b")  # never released

            took = await _until(
                lambda: b.is_leader, "pod-b taking over", always=held_by_a_until_taken
            )
            assert 0.8 <= took <= 1.6  # it waited out the 1 s lease, and not much more
            assert _holder(api) == "pod-b"
            nursery.cancel_scope.cancel()

    trio.run(main)


@pytest.mark.e2e
def test_a_leader_that_cannot_renew_steps_down_before_its_lease_expires(
    kubeapi_tls: KubeAPI, kubeconfig_file: Path
) -> None:
    api = kubeapi_tls

    async def main() -> None:
        async with _clients(kubeconfig_file, 1) as (client,), trio.open_nursery() as nursery:
            elector = _elector(client, "pod-a")
            _start(nursery, elector.run)
            await elector.wait_for(True)
            api.forbid("update", "leases")  # every renewal now gets 403
            took = await _until(lambda: not elector.is_leader, "stepping down")
            assert took < 1.0  # renew_deadline (0.6 s) after the last renewal, < the lease
            api.allow("update", "leases")
            await _until(lambda: elector.is_leader, "leading again")
            nursery.cancel_scope.cancel()

    trio.run(main)
    lease = api.get("Lease", LEASE)
    assert lease is not None
    assert lease["spec"].get("leaseTransitions") == 0  # it never changed hands


# -- statuses --------------------------------------------------------------------------


# source: (objects in the cluster, Publisher options, the status expected)
SOURCES: dict[str, tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, str]]]] = {
    "publish-address": (
        [],
        {"publish_addresses": ["203.0.113.9, LB.example.com", "203.0.113.7", "203.0.113.9"]},
        [{"ip": "203.0.113.7"}, {"ip": "203.0.113.9"}, {"hostname": "lb.example.com"}],
    ),
    "LoadBalancer Service": (
        [
            {
                **service("edge", "fastroute", type="LoadBalancer", externalIPs=["192.0.2.5"]),
                "status": {
                    "loadBalancer": {
                        "ingress": [{"hostname": "abc.elb.example.com"}, {"ip": "198.51.100.20"}]
                    }
                },
            }
        ],
        {"publish_service": "fastroute/edge"},
        [{"ip": "192.0.2.5"}, {"ip": "198.51.100.20"}, {"hostname": "abc.elb.example.com"}],
    ),
    "NodePort Service": (
        [
            service("edge", "fastroute", type="NodePort"),
            _node("n1", ExternalIP="203.0.113.10", InternalIP="10.0.0.1"),
            _node("n2", InternalIP="10.0.0.2"),
            _node("n3", ready=False, InternalIP="10.0.0.3"),  # not ready: left out
            _node("n4", ExternalIP="203.0.113.10"),  # the same address once
        ],
        {"publish_service": "fastroute/edge"},
        [{"ip": "10.0.0.2"}, {"ip": "203.0.113.10"}],
    ),
}


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.e2e
def test_status_is_published_from_each_source_and_rewritten_only_on_change(
    kubeapi_tls: KubeAPI, kubeconfig_file: Path, source: str
) -> None:
    api = kubeapi_tls
    objects, options, expected = SOURCES[source]
    api.create_many(objects)
    _cluster(api)

    async def main() -> None:
        async with _clients(kubeconfig_file, 1) as (client,), trio.open_nursery() as nursery:
            publisher = _publisher(client, **options)
            _start(nursery, publisher.run)
            stale = _snapshot(api)
            await _pass(publisher, api, stale)
            assert _status(api, "a") == expected == _status(api, "bad")
            for _ in range(3):  # later rebuilds, with the statuses written
                await _pass(publisher, api)
            # a rebuild from before the write reached the watch: no second write either
            await _pass(publisher, api, stale)
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert _status_writes(api, "a") == _status_writes(api, "bad") == 1
    assert _status_writes(api, "other") == 0
    assert _status(api, "other") == FOREIGN
    (write,) = api.writes_to(f"{INGRESSES}/a/status")
    assert (write.verb, write.code) == ("patch", 200)


@pytest.mark.e2e
def test_status_follows_the_load_balancer_address(
    kubeapi_tls: KubeAPI, kubeconfig_file: Path
) -> None:
    api = kubeapi_tls
    lb = {"ingress": [{"ip": "198.51.100.20"}]}
    api.create({**service("edge", type="LoadBalancer"), "status": {"loadBalancer": lb}})
    _cluster(api)

    async def main() -> None:
        async with _clients(kubeconfig_file, 1) as (client,), trio.open_nursery() as nursery:
            publisher = _publisher(client, publish_service="default/edge")
            _start(nursery, publisher.run)
            await _pass(publisher, api)
            assert _status(api, "a") == [{"ip": "198.51.100.20"}]
            api.patch(
                "Service",
                "edge",
                {"status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.21"}]}}},
            )
            await _pass(publisher, api)
            assert _status(api, "a") == [{"ip": "198.51.100.21"}]
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert _status_writes(api, "a") == 2


@pytest.mark.e2e
def test_an_ingress_no_longer_ours_gets_its_status_cleared(
    kubeapi_tls: KubeAPI, kubeconfig_file: Path
) -> None:
    api = kubeapi_tls
    _cluster(api)
    ours = [{"ip": "203.0.113.7"}]

    async def main() -> None:
        async with _clients(kubeconfig_file, 1) as (client,), trio.open_nursery() as nursery:
            publisher = _publisher(client, publish_addresses=["203.0.113.7"])
            _start(nursery, publisher.run)
            await _pass(publisher, api)
            assert _status(api, "a") == ours

            api.patch("Ingress", "a", {"spec": {"ingressClassName": "nginx"}})
            await _pass(publisher, api)
            assert _status(api, "a") is None
            await _pass(publisher, api)  # cleared once, then left alone
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert [w.body for w in api.writes_to(f"{INGRESSES}/a/status")] == [
        {"status": {"loadBalancer": {"ingress": ours}}},
        {"status": {"loadBalancer": {"ingress": None}}},
    ]
    assert _status(api, "bad") == ours
    assert _status(api, "other") == FOREIGN  # not ours, and not our value: untouched
    assert _status_writes(api, "other") == 0


@pytest.mark.e2e
def test_only_the_leader_writes_and_its_successor_keeps_the_statuses(
    kubeapi_tls: KubeAPI, kubeconfig_file: Path
) -> None:
    api = kubeapi_tls
    _cluster(api)
    ours = [{"ip": "203.0.113.7"}]

    async def main() -> None:
        async with _clients(kubeconfig_file, 2) as (one, two), trio.open_nursery() as nursery:
            replicas = [
                _publisher(one, "pod-a", publish_addresses=["203.0.113.7"]),
                _publisher(two, "pod-b", publish_addresses=["203.0.113.7"]),
            ]
            scopes = [_start(nursery, p.run) for p in replicas]
            config, objects = _snapshot(api)
            for publisher in replicas:  # both rebuild from the same snapshot
                await publisher.on_config(config, objects)
            await _until(lambda: any(p.published is config for p in replicas), "a pass")
            leader = next(p for p in replicas if p.elector.is_leader)
            follower = next(p for p in replicas if p is not leader)
            assert follower.passes == 0
            assert _status(api, "a") == ours == _status(api, "bad")
            assert _status_writes(api, "a") == _status_writes(api, "bad") == 1

            # the follower's watch sees the statuses; then the leader stops (statuses kept)
            config, objects = _snapshot(api)
            await follower.on_config(config, objects)
            scopes[replicas.index(leader)].cancel()
            await _until(lambda: follower.published is config, "the successor's pass")
            assert _status(api, "a") == ours == _status(api, "bad")
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert _status_writes(api, "a") == _status_writes(api, "bad") == 1
    assert _status_writes(api, "other") == 0


@pytest.mark.e2e
def test_update_status_on_shutdown_clears_the_statuses(
    kubeapi_tls: KubeAPI, kubeconfig_file: Path
) -> None:
    api = kubeapi_tls
    _cluster(api)

    async def main() -> None:
        async with _clients(kubeconfig_file, 1) as (client,), trio.open_nursery() as nursery:
            publisher = _publisher(
                client, publish_addresses=["203.0.113.7"], update_status_on_shutdown=True
            )
            _start(nursery, publisher.run)
            await _pass(publisher, api)
            assert _status(api, "a") is not None
            await _pass(publisher, api)  # the watch saw the statuses
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert _status(api, "a") is None
    assert _status(api, "bad") is None
    assert _status(api, "other") == FOREIGN
    assert _holder(api) is None  # cleared while leading, then released


# -- Events ----------------------------------------------------------------------------


@pytest.mark.e2e
def test_a_rejected_ingress_gets_one_warning_event(
    kubeapi_tls: KubeAPI, kubeconfig_file: Path
) -> None:
    api = kubeapi_tls
    _cluster(api)

    def events() -> list[dict[str, Any]]:
        return api.list("Event", namespace="default")

    async def main() -> None:
        async with _clients(kubeconfig_file, 1) as (client,), trio.open_nursery() as nursery:
            publisher = _publisher(client, publish_addresses=["203.0.113.7"])
            _start(nursery, publisher.run)
            await _pass(publisher, api)
            assert len(events()) == 1
            for _ in range(3):  # rebuilds, one after our status write changed the Ingress
                await _pass(publisher, api)
            assert len(events()) == 1

            # a changed spec that is still wrong is reported again
            api.patch(
                "Ingress",
                "bad",
                {"spec": {"rules": [_ingress("bad", path="v2")["spec"]["rules"][0]]}},
            )
            await _pass(publisher, api)
            assert len(events()) == 2
            nursery.cancel_scope.cancel()

    trio.run(main)
    bad = api.get("Ingress", "bad")
    assert bad is not None
    event = events()[0]
    assert event["involvedObject"] == {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "namespace": "default",
        "name": "bad",
        "uid": bad["metadata"]["uid"],
        "resourceVersion": event["involvedObject"]["resourceVersion"],
    }
    assert event["type"] == "Warning"
    assert event["reason"] == "Rejected"
    assert event["message"] == BAD_PATH
    assert event["source"] == {"component": "fastroute-controller", "host": "pod-a"}
    assert event["count"] == 1
    assert all(e["involvedObject"]["name"] == "bad" for e in events())  # a is fine


@pytest.mark.e2e
def test_an_ingress_asking_for_authentication_gets_a_warning_event_naming_it(
    kubeapi_tls: KubeAPI, kubeconfig_file: Path
) -> None:
    """An auth-url fastroute cannot ask: the Ingress answers 503, and its owner is told why."""
    api = kubeapi_tls
    api.create(service("web"))
    guarded = _ingress("guarded")
    guarded["metadata"]["annotations"] = {
        "nginx.ingress.kubernetes.io/auth-url": "ldap://auth.default.svc/check"
    }
    api.create(guarded)

    async def main() -> None:
        async with _clients(kubeconfig_file, 1) as (client,), trio.open_nursery() as nursery:
            publisher = _publisher(client, publish_addresses=["203.0.113.7"])
            _start(nursery, publisher.run)
            await _pass(publisher, api)
            nursery.cancel_scope.cancel()

    trio.run(main)
    (event,) = api.list("Event", namespace="default")
    assert event["involvedObject"]["name"] == "guarded"
    assert (event["type"], event["reason"]) == ("Warning", "Rejected")
    assert event["message"].startswith(
        "metadata.annotations[nginx.ingress.kubernetes.io/auth-url]: "
    )
    assert "ldap://auth.default.svc/check" in event["message"]


@pytest.mark.e2e
def test_without_permission_to_post_events_rejections_are_logged_once(
    kubeapi_tls: KubeAPI, kubeconfig_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    api = kubeapi_tls
    api.forbid("create", "events")
    _cluster(api)
    api.create(_ingress("worse", path="v2"))
    caplog.set_level(logging.WARNING, logger="fastroute.controller.events")

    async def main() -> None:
        async with _clients(kubeconfig_file, 1) as (client,), trio.open_nursery() as nursery:
            publisher = _publisher(client, publish_addresses=["203.0.113.7"])
            _start(nursery, publisher.run)
            for _ in range(4):
                await _pass(publisher, api)
            nursery.cancel_scope.cancel()

    trio.run(main)
    lines = [r.getMessage() for r in caplog.records if r.name == "fastroute.controller.events"]
    assert lines[0].startswith("not allowed to post Events (grant create on events)")
    assert sorted(lines[1:]) == [
        f"Ingress default/bad Rejected: {BAD_PATH}",
        f"Ingress default/worse Rejected: {BAD_PATH}",
    ]
    # each tried once, not on every rebuild
    assert [w.code for w in api.writes_to(EVENTS)] == [403, 403]
    assert api.list("Event", namespace="default") == []
    assert _status(api, "a") == [{"ip": "203.0.113.7"}]  # the rest keeps working


# -- the pure parts and the command line -----------------------------------------------


@pytest.mark.parametrize(
    ("service", "expected"),
    [
        (
            service("s", clusterIP="10.96.0.10", externalIPs=["192.0.2.1"]),
            ["10.96.0.10", "192.0.2.1"],
        ),
        (service("s", clusterIP="None"), []),
        (
            service("s", type="ExternalName", externalName="Edge.Example.com."),
            ["edge.example.com"],
        ),
        (
            service("s", type="NodePort", externalIPs=["2001:DB8::1", "192.0.2.1"]),
            ["192.0.2.1", "2001:db8::1"],
        ),
        ({**service("s", type="LoadBalancer"), "status": {"loadBalancer": {}}}, []),
    ],
)
def test_desired_status_by_service_type(service: dict[str, Any], expected: Sequence[str]) -> None:
    found = desired_status(service=service, nodes=[_node("n", InternalIP="10.0.0.1")])
    assert [entry.get("ip") or entry.get("hostname") for entry in found] == expected


def test_publish_addresses_are_checked() -> None:
    assert parse_addresses(["a.example.com,192.0.2.1", " ", "::1"]) == [
        "a.example.com",
        "192.0.2.1",
        "::1",
    ]
    with pytest.raises(ValueError, match="not an IP address or a DNS name: 'http://x'"):
        parse_addresses(["http://x"])


@pytest.mark.e2e
def test_command_line_options(kubeapi: KubeAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "fastroute-7d9f-abcde")
    monkeypatch.setenv("POD_NAMESPACE", "ingress")
    parser = argparse.ArgumentParser()
    add_arguments(parser)

    options = PublishOptions.from_args(
        parser.parse_args(["--publish-service=ingress/edge", "--update-status-on-shutdown=false"])
    )
    assert options == PublishOptions(
        publish_service="ingress/edge",
        election_id="fastroute-leader",
        namespace="ingress",
        pod_name="fastroute-7d9f-abcde",
    )
    assert PublishOptions.from_args(
        parser.parse_args(
            ["--publish-status-address=192.0.2.1,lb.example.com", "--update-status-on-shutdown"]
        )
    ).publish_addresses == ("192.0.2.1", "lb.example.com")

    both = parser.parse_args(["--publish-service=ingress/edge", "--publish-address=192.0.2.1"])
    with pytest.raises(ValueError, match="mutually exclusive"):
        PublishOptions.from_args(both)

    async def build() -> list[Publisher]:
        client = AsyncClient(config=KubeConfig.from_dict(kubeapi.kubeconfig()))
        built = [options.publisher(client) for _ in range(2)]  # as two worker processes
        await client.close()
        return built

    one, two = trio.run(build)
    assert one.elector.identity.startswith("fastroute-7d9f-abcde_")
    assert one.elector.identity != two.elector.identity  # never mistaken for each other
    assert (one.elector.namespace, one.elector.name) == ("ingress", "fastroute-leader")
    assert one.recorder.instance == "fastroute-7d9f-abcde"
    assert one.publish_service == ("ingress", "edge")
    assert not one.update_status_on_shutdown
