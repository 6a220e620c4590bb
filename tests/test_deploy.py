"""The container image and the deploy manifests, as a cluster operator meets them.

- Every manifest in ``deploy/`` and ``deploy/variants/`` is valid for the Kubernetes API
  (kubernetes-validate's strict schemas: a misspelt field fails), on the oldest Kubernetes
  the manifests support and on the newest the package ships; ``kubectl apply -f deploy/``
  creates them in an order that works.
- The Deployment runs the image the way the controller expects: its arguments parse with
  the real command line, the probes answer on the status port, ports and names line up
  with the Service, the Role and the PodDisruptionBudget, and shutdown fits the grace period.
- The pod meets the "restricted" Pod Security Standard its namespace enforces, with a
  read-only root filesystem.
- The IngressClass makes Ingresses this controller's; the Dockerfile's entrypoint and
  command are the real module and a valid command.
- ``tests/rbac.py`` maps real client traffic (lightkube against the API emulator) to RBAC
  requests, and the deploy rules allow exactly the calls the controller makes.
"""

from __future__ import annotations

import argparse
import copy
import fnmatch
import importlib.util
import json
import re
import shlex
import tomllib
from collections.abc import Generator, Iterator, Mapping
from contextlib import closing
from functools import cache, partial
from pathlib import Path
from typing import Any, cast

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import trio
from lightkube import Client, KubeConfig
from lightkube.core.exceptions import ApiError as LightkubeError
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import ConfigMap, Event, Node, Pod, Secret, Service
from lightkube.resources.discovery_v1 import EndpointSlice
from lightkube.resources.networking_v1 import Ingress, IngressClass
from lightkube.types import PatchType

from controller.__main__ import _parser
from controller.status import serve_status
from controller.supervisor import STOP_MARGIN
from fastroute.ingress import CONTROLLER_NAME, build_config
from tests.kubeapi import KubeAPI
from tests.rbac import DEPLOY, Call, Grant, Rule, check_rbac, classify, load_objects, load_rules

pytest_plugins = ["tests.kubeapi.fixtures"]

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = DEPLOY / "variants"
NODEPORT = VARIANTS / "service-nodeport.yaml"
DOCKERFILE = ROOT / "controller" / "Dockerfile"
MANIFESTS = sorted(DEPLOY.glob("*.yaml")) + sorted(VARIANTS.glob("*.yaml"))
# The oldest Kubernetes the manifests are written for (topology spread's matchLabelKeys and
# the PodDisruptionBudget's unhealthyPodEvictionPolicy are on by default from 1.27), and the
# newest that the installed kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.28", kubernetes_validate.latest_version())
NAMESPACED_KINDS = {
    "ConfigMap",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "Deployment",
    "Service",
    "PodDisruptionBudget",
}


# -- the manifests -----------------------------------------------------------------------


def _documents() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in MANIFESTS:
        for obj in load_objects(path):
            yield f"{path.relative_to(DEPLOY)}:{obj['kind']}/{obj['metadata']['name']}", obj


@cache
def _deploy() -> tuple[dict[str, Any], ...]:
    """The objects ``kubectl apply -f deploy/`` applies, in its order."""
    return tuple(load_objects(DEPLOY))


def _one(kind: str) -> dict[str, Any]:
    """The one object of a kind that ``kubectl apply -f deploy/`` applies (a copy)."""
    found = [o for o in _deploy() if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind} in deploy/, found {len(found)}"
    return copy.deepcopy(found[0])


def _pod() -> dict[str, Any]:
    spec: dict[str, Any] = _one("Deployment")["spec"]["template"]["spec"]
    return spec


def _container() -> dict[str, Any]:
    containers = _pod()["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def _container_port(container: Mapping[str, Any], port: int | str) -> int:
    """A probe's or a Service's target port, by number or by the container port's name."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    return int(number)


def _expanded_args() -> list[str]:
    """The container's arguments as the kubelet passes them: ``$(VAR)`` from its env, here
    the downward API's values for a pod of this Deployment."""
    deployment = _one("Deployment")
    pod_fields = {
        "metadata.name": "fastroute-controller-7d4b9c-x2x5q",
        "metadata.namespace": deployment["metadata"]["namespace"],
    }
    env = {
        e["name"]: e["value"]
        if "value" in e
        else pod_fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
        for e in _container().get("env", [])
    }
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m[1]], arg) for arg in _container()["args"]]


def _args() -> tuple[argparse.Namespace, list[str]]:
    """The container's arguments parsed by the controller's own parser, and the ones it
    does not know."""
    return _parser().parse_known_args(_expanded_args())


def _matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(("where", "obj"), list(_documents()), ids=[w for w, _ in _documents()])
def test_every_manifest_is_valid_for_the_kubernetes_api(
    where: str, obj: dict[str, Any], version: str
) -> None:
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = ".".join(map(str, error.absolute_path))
        pytest.fail(f"{where} is not valid for Kubernetes {version} at {path}: {error.message}")


def test_validation_is_strict_so_a_misspelt_field_fails() -> None:
    deployment = _one("Deployment")
    context = deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    context["readOnlyRootFileSystem"] = context.pop("readOnlyRootFilesystem")  # capital S

    with pytest.raises(kubernetes_validate.ValidationError, match="readOnlyRootFileSystem"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def test_kubectl_apply_on_the_folder_creates_things_in_a_working_order() -> None:
    objects = _deploy()
    first = objects[0]
    assert first["kind"] == "Namespace", "the namespace must come first: the rest goes in it"
    namespace = first["metadata"]["name"]
    kinds = [o["kind"] for o in objects]
    assert kinds.index("ServiceAccount") < kinds.index("Deployment")
    for obj in objects:
        if obj["kind"] in NAMESPACED_KINDS:
            assert obj["metadata"].get("namespace") == namespace, obj["metadata"]["name"]
    # kubectl apply -f deploy/ does not recurse: the variants stay out
    assert {o["kind"] for o in objects} >= {
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "IngressClass",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    }
    assert [o["spec"]["type"] for o in objects if o["kind"] == "Service"] == ["LoadBalancer"]


# -- the Deployment and the controller's command line ----------------------------------


def test_the_deployment_args_parse_with_the_controllers_command_line() -> None:
    args, unknown = _args()

    assert not unknown, (
        f"40-deployment.yaml passes flags that `fastroute-controller` does not know: {unknown}"
    )
    assert args.command == "serve"
    # the Service in front of the pods, which 21-role.yaml lets the controller read
    service = _one("Service")["metadata"]
    assert args.publish_service == f"{service['namespace']}/{service['name']}"
    named = {
        r["resources"][0]: r["resourceNames"] for r in _one("Role")["rules"] if "resourceNames" in r
    }
    assert named["services"] == [service["name"]]
    # the Lease that 21-role.yaml lets it hold
    assert named["leases"] == [args.election_id]
    # its settings: the ConfigMap beside it
    configmap = _one("ConfigMap")["metadata"]
    assert args.configmap == f"{configmap['namespace']}/{configmap['name']}"


def test_the_containers_ports_are_the_ones_the_controller_listens_on() -> None:
    args, _ = _args()
    ports = {p["name"]: p["containerPort"] for p in _container()["ports"]}

    assert ports == {"http": args.http_port, "https": args.https_port, "status": args.status_port}
    assert args.status_port == 10254


@pytest.mark.parametrize(
    ("probe", "served_while_starting"), [("livenessProbe", True), ("readinessProbe", False)]
)
@pytest.mark.e2e
def test_the_probes_get_their_answers_from_the_status_listener(
    probe: str, served_while_starting: bool
) -> None:
    """The probe, sent as the kubelet sends it to the status listener: liveness must pass
    from the start (else restarts), readiness only once the proxy has a configuration."""
    args, _ = _args()
    http_get = _container()[probe]["httpGet"]
    assert http_get.get("scheme", "HTTP") == "HTTP"
    assert _container_port(_container(), http_get["port"]) == args.status_port
    codes: list[int] = []

    async def scenario() -> None:
        ready = False
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                partial(serve_status, ready=lambda: ready, metrics_text=lambda: b""),
                "127.0.0.1",
                0,
            )
            codes.append(await _probe(port, http_get["path"]))
            ready = True
            codes.append(await _probe(port, http_get["path"]))
            nursery.cancel_scope.cancel()

    trio.run(scenario)
    assert codes == [200 if served_while_starting else 503, 200]


async def _probe(port: int, path: str) -> int:
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(
                f"GET {path} HTTP/1.1\r\nHost: 10.0.0.7:{port}\r\nUser-Agent: kube-probe/1.31\r\n"
                "Accept: */*\r\nConnection: close\r\n\r\n".encode()
            )
            head = b""
            while b"\r\n" not in head:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    break
                head += chunk
    return int(head.split(b" ", 2)[1])


def test_pod_name_and_namespace_come_from_the_downward_api() -> None:
    env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}) for e in _container()["env"]}

    assert env["POD_NAME"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["fieldPath"] == "metadata.namespace"


def test_shutdown_drains_within_the_termination_grace_period() -> None:
    """preStop, then SIGTERM: requests in flight get --shutdown-grace, and a supervisor of
    workers waits STOP_MARGIN more; the kubelet's SIGKILL must come after all that."""
    args, _ = _args()
    command = _container()["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])

    budget = pre_stop + args.shutdown_grace + STOP_MARGIN
    assert budget <= _pod()["terminationGracePeriodSeconds"]
    assert args.shutdown_grace == 20


def test_the_pod_meets_the_restricted_pod_security_standard() -> None:
    """What `pod-security.kubernetes.io/enforce: restricted` checks, and a read-only root."""
    namespace = _one("Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    pod = _pod()
    container = _container()
    pod_context, context = pod.get("securityContext", {}), container.get("securityContext", {})

    def effective(key: str) -> Any:
        return context.get(key, pod_context.get(key))

    for host in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(host)
    allowed_volumes = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral"}
    allowed_volumes |= {"persistentVolumeClaim", "projected", "secret"}
    for volume in pod.get("volumes", []):
        assert set(volume) - {"name"} <= allowed_volumes
    assert not context.get("privileged")
    assert context["allowPrivilegeEscalation"] is False
    assert "ALL" in context["capabilities"]["drop"]
    assert set(context["capabilities"].get("add", [])) <= {"NET_BIND_SERVICE"}
    assert effective("runAsNonRoot") is True
    assert effective("runAsUser") not in (None, 0)
    assert effective("seccompProfile")["type"] in ("RuntimeDefault", "Localhost")
    assert all("hostPort" not in p for p in container["ports"])
    assert context["readOnlyRootFilesystem"] is True


def test_tmp_is_the_one_writable_place() -> None:
    """The image writes only to /tmp (TLS key files, the workers' metrics): an emptyDir."""
    volumes = {v["name"]: v for v in _pod()["volumes"]}
    (mount,) = _container()["volumeMounts"]

    assert mount["mountPath"] == "/tmp"
    assert "emptyDir" in volumes[mount["name"]]
    assert not mount.get("readOnly")


def test_replicas_are_spread_over_nodes_and_a_drain_keeps_one() -> None:
    deployment = _one("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert _matches(deployment["spec"]["selector"]["matchLabels"], labels)
    assert deployment["spec"]["replicas"] >= 2
    by_node = [
        c
        for c in _pod()["topologySpreadConstraints"]
        if c["topologyKey"] == "kubernetes.io/hostname"
    ]
    assert by_node, "no spread over nodes"
    assert _matches(by_node[0]["labelSelector"]["matchLabels"], labels)

    budget = _one("PodDisruptionBudget")["spec"]
    assert _matches(budget["selector"]["matchLabels"], labels)
    assert budget["minAvailable"] == 1 < deployment["spec"]["replicas"]


@pytest.mark.parametrize("path", [DEPLOY / "50-service.yaml", NODEPORT])
def test_the_service_sends_80_and_443_to_the_controllers_ports(path: Path) -> None:
    args, _ = _args()
    (service,) = [o for o in load_objects(path) if o["kind"] == "Service"]
    labels = _one("Deployment")["spec"]["template"]["metadata"]["labels"]

    assert _matches(service["spec"]["selector"], labels)
    assert service["metadata"]["name"] == _one("Service")["metadata"]["name"]  # a replacement
    targets = {
        p["port"]: _container_port(_container(), p["targetPort"]) for p in service["spec"]["ports"]
    }
    assert targets == {80: args.http_port, 443: args.https_port}
    assert args.https_redirect_port == 443  # HTTP-to-HTTPS redirects name the Service's port


def test_the_ingress_class_makes_ingresses_this_controllers() -> None:
    """By its spec.controller: a copy renamed `edge` still takes Ingresses of class `edge`;
    with the optional default-class annotation it also takes Ingresses naming no class."""
    ingress_class = _one("IngressClass")
    assert ingress_class["spec"]["controller"] == CONTROLLER_NAME
    assert ingress_class["metadata"]["name"] == "fastroute"
    assert (
        "ingressclass.kubernetes.io/is-default-class"
        in (DEPLOY / "30-ingressclass.yaml").read_text()
    )

    renamed = copy.deepcopy(ingress_class)
    renamed["metadata"]["name"] = "edge"
    served = build_config([renamed, _ingress("shop", "edge"), _ingress("other", "nginx")])
    assert served.ingresses == ("default/shop",)

    renamed["metadata"]["annotations"] = {"ingressclass.kubernetes.io/is-default-class": "true"}
    served = build_config([renamed, _ingress("shop", None)])
    assert served.ingresses == ("default/shop",)


def _ingress(name: str, cls: str | None) -> dict[str, Any]:
    backend = {"service": {"name": "web", "port": {"number": 80}}}
    spec: dict[str, Any] = {"defaultBackend": backend}
    if cls is not None:
        spec["ingressClassName"] = cls
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }


# -- the image ---------------------------------------------------------------------------


@cache
def _dockerfile_stages() -> tuple[tuple[tuple[str, str], ...], ...]:
    """The Dockerfile's stages (the ARGs before the first FROM form the first), each a
    sequence of (INSTRUCTION, arguments): comments dropped, continuation lines joined."""
    stages: list[list[tuple[str, str]]] = [[]]
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        instruction, _, arguments = (pending + stripped).partition(" ")
        pending = ""
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), arguments.strip()))
    return tuple(tuple(stage) for stage in stages)


def _final(instruction: str) -> list[str]:
    return [args for name, args in _dockerfile_stages()[-1] if name == instruction]


def _base_images() -> list[str]:
    defaults = dict(
        args.partition("=")[::2] for name, args in _dockerfile_stages()[0] if name == "ARG"
    )
    return [
        re.sub(r"\$\{(\w+)\}", lambda m: defaults[m[1]], stage[0][1].split()[0])
        for stage in _dockerfile_stages()[1:]
    ]


def test_the_image_runs_the_controller_module_with_serve_by_default() -> None:
    (entrypoint,) = map(json.loads, _final("ENTRYPOINT"))  # exec form: signals reach Python
    (command,) = map(json.loads, _final("CMD"))
    python, dash_m, module = entrypoint
    assert (python, dash_m) == ("python", "-m")

    spec = importlib.util.find_spec(f"{module}.__main__")
    assert spec is not None
    assert spec.origin is not None
    assert Path(spec.origin).resolve().is_relative_to(ROOT)
    packaged = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert any(fnmatch.fnmatch(module, p) for p in packaged["packages"]["find"]["include"])
    assert _parser().parse_args(command).command == "serve"
    # the Deployment's args replace CMD and start with the same command
    assert _container()["args"][0] == command[0]


def test_the_image_user_is_the_deployments_non_root_user() -> None:
    (user,) = _final("USER")
    uid, _, gid = user.partition(":")
    context = _container()["securityContext"]

    assert int(uid) == context["runAsUser"] != 0  # numeric: runAsNonRoot can check it
    assert int(gid) == context["runAsGroup"]


def test_the_image_exposes_the_containers_ports_and_has_no_healthcheck() -> None:
    (exposed,) = _final("EXPOSE")

    assert {int(p) for p in exposed.split()} == {p["containerPort"] for p in _container()["ports"]}
    assert not _final("HEALTHCHECK")  # the kubelet probes instead


def test_the_image_writes_no_bytecode_and_uses_tmp() -> None:
    env = dict(
        pair.split("=", 1) for line in _final("ENV") for pair in shlex.split(line) if "=" in pair
    )

    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["TMPDIR"] == env["HOME"] == "/tmp"


def test_both_stages_use_one_pinned_python_3_11_or_later() -> None:
    """The compiled extension is built for the build stage's Python ABI."""
    build, runtime = _base_images()
    assert build == runtime
    match = re.fullmatch(r"python:3\.(\d+)[\w.]*-slim(-\w+)?", runtime)
    assert match is not None, runtime
    assert int(match[1]) >= 11


def test_the_build_copies_files_that_exist_and_the_context_keeps() -> None:
    """A COPY of a missing file, or of one .dockerignore leaves out, fails the build."""
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    sources = [
        source
        for stage in _dockerfile_stages()
        for name, args in stage
        if name == "COPY" and not args.startswith("--from")
        for source in args.split()[:-1]
    ]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert f"!{source}" in ignore, f"{source} is not let into the build context"


# -- RBAC ---------------------------------------------------------------------------------


NET, LEASES = "networking.k8s.io", "coordination.k8s.io"


@pytest.mark.parametrize(
    ("verb", "url", "expected"),
    [
        ("list", "/apis/networking.k8s.io/v1/ingresses", Call("list", NET, "ingresses")),
        ("watch", "/apis/networking.k8s.io/v1/ingresses", Call("watch", NET, "ingresses")),
        (
            "GET",
            "/api/v1/namespaces/shop/secrets?watch=true&fieldSelector=type%3Dkubernetes.io%2Ftls",
            Call("watch", "", "secrets", "shop"),
        ),
        ("GET", "/api/v1/watch/namespaces/shop/services", Call("watch", "", "services", "shop")),
        (
            "GET",
            "/api/v1/namespaces/shop/services?fieldSelector=metadata.name%3Dweb",
            Call("list", "", "services", "shop", "web"),
        ),
        (
            "get",
            "/api/v1/namespaces/fastroute/services/fastroute-controller",
            Call("get", "", "services", "fastroute", "fastroute-controller"),
        ),
        (
            "patch",
            "/apis/networking.k8s.io/v1/namespaces/shop/ingresses/web/status",
            Call("patch", NET, "ingresses/status", "shop", "web"),
        ),
        (
            "PUT",
            "/apis/coordination.k8s.io/v1/namespaces/fastroute/leases/fastroute-leader",
            Call("update", LEASES, "leases", "fastroute", "fastroute-leader"),
        ),
        ("POST", "/api/v1/namespaces/shop/events", Call("create", "", "events", "shop")),
        (
            "DELETE",
            "/api/v1/namespaces/shop/configmaps",
            Call("deletecollection", "", "configmaps", "shop"),
        ),
        ("get", "/api/v1/nodes", Call("list", "", "nodes")),
        ("get", "/api/v1/namespaces/shop", Call("get", "", "namespaces", "shop", "shop")),
        (
            "put",
            "/api/v1/namespaces/shop/finalize",
            Call("update", "", "namespaces/finalize", "shop", "shop"),
        ),
        ("get", "/api", None),
        ("get", "/apis/networking.k8s.io", None),
        ("get", "/apis/networking.k8s.io/v1", None),
        ("get", "/version", None),
    ],
)
def test_classify_maps_a_request_as_kube_apiserver_does(
    verb: str, url: str, expected: Call | None
) -> None:
    assert classify(verb, url) == expected


def test_rules_come_from_the_bindings_of_the_deployments_service_account() -> None:
    rules = load_rules()
    origins = {rule.origin for rule in rules}

    assert origins == {"ClusterRole fastroute-controller", "Role fastroute/fastroute-controller"}
    assert {rule.namespace for rule in rules} == {None, "fastroute"}
    # nobody else gets them
    assert load_rules(service_account=("default", "default")) == ()
    # the NodePort variant adds its own
    with_nodes = load_rules(DEPLOY, NODEPORT)
    assert {r.origin for r in with_nodes} - origins == {"ClusterRole fastroute-controller-nodes"}


def test_a_resource_names_rule_allows_only_those_names_and_no_create() -> None:
    rule = Rule(
        frozenset({"coordination.k8s.io"}),
        frozenset({"leases"}),
        frozenset({"get", "update", "create"}),
        frozenset({"fastroute-leader"}),
        "fastroute",
    )
    lease = partial(Call, group="coordination.k8s.io", resource="leases")

    assert rule.allows(lease("get", namespace="fastroute", name="fastroute-leader"))
    assert not rule.allows(lease("get", namespace="fastroute", name="someone-else"))
    assert not rule.allows(lease("get", namespace="default", name="fastroute-leader"))
    assert not rule.allows(lease("create", namespace="fastroute"))


@pytest.fixture
def client(kubeapi: KubeAPI) -> Iterator[Client]:
    with closing(Client(config=KubeConfig.from_dict(kubeapi.kubeconfig()))) as client:
        yield client


def _controller_traffic(kubeapi: KubeAPI, client: Client, *, nodes: bool = False) -> None:
    """Through lightkube, the calls the controller makes (controller/kube/): list and watch
    what it routes by, read the publish Service (and the nodes, for a NodePort one), hold
    the leader Lease, patch an Ingress's status, post an Event."""
    shop = {"namespace": "shop"}
    for obj in [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
        {**_ingress("web", "fastroute"), "metadata": {"name": "web", **shop}},
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "fastroute-controller", "namespace": "fastroute"},
            "spec": {"type": "LoadBalancer"},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "IngressClass",
            "metadata": {"name": "fastroute"},
            "spec": {"controller": CONTROLLER_NAME},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "tls", **shop},
            "type": "kubernetes.io/tls",
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": "web-1", **shop},
            "addressType": "IPv4",
            "endpoints": [],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "fastroute-controller", "namespace": "fastroute"},
            "data": {"proxy-body-size": "8m"},
        },
    ]:
        kubeapi.create(obj)
    kubeapi.clear_records()
    _list_and_watch(client, Ingress, namespace="*")
    _list_and_watch(client, IngressClass)  # cluster-scoped
    _list_and_watch(client, Service, namespace="*")
    _list_and_watch(client, EndpointSlice, namespace="*")
    _list_and_watch(client, Secret, namespace="*", fields={"type": "kubernetes.io/tls"})
    _list_and_watch(client, ConfigMap, namespace="*")
    client.get(Service, "fastroute-controller", namespace="fastroute")
    if nodes:
        list(client.list(Node, chunk_size=500))
    with pytest.raises(LightkubeError):
        client.get(Lease, "fastroute-leader", namespace="fastroute")
    lease = client.create(
        Lease(
            metadata=ObjectMeta(name="fastroute-leader", namespace="fastroute"),
            spec=LeaseSpec(holderIdentity="fastroute-controller-0", leaseDurationSeconds=15),
        )
    )
    client.replace(lease)
    client.patch(
        Ingress.Status,
        "web",
        {"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}}},
        namespace="shop",
        patch_type=PatchType.MERGE,
    )
    client.create(
        Event(
            metadata=ObjectMeta(name="web.1", namespace="shop"),
            involvedObject=ObjectReference(kind="Ingress", name="web", namespace="shop"),
            reason="Rejected",
            message="no such Service",
            type="Warning",
            source=EventSource(component="fastroute-controller"),
        )
    )


def _list_and_watch(client: Client, kind: Any, **options: Any) -> None:
    """What a reflector does: list in pages, then watch (here, until the first event)."""
    assert list(client.list(kind, chunk_size=500, **options)), kind
    events = cast(Generator[tuple[str, Any]], client.watch(kind, server_timeout=5, **options))
    with closing(events):
        assert next(events)[0] == "ADDED"


@pytest.mark.e2e
def test_the_deploy_rules_allow_the_controllers_calls_and_nothing_more(
    kubeapi: KubeAPI, client: Client
) -> None:
    _controller_traffic(kubeapi, client)

    report = check_rbac(kubeapi.requests, load_rules())

    assert report.missing == (), report
    assert report.unused == (), report
    assert Call("watch", "", "secrets") in report.allowed  # watches are seen as watches
    assert Call("patch", "networking.k8s.io", "ingresses/status", "shop", "web") in report.allowed


@pytest.mark.e2e
def test_the_nodeport_variant_allows_listing_nodes(kubeapi: KubeAPI, client: Client) -> None:
    _controller_traffic(kubeapi, client, nodes=True)

    without = check_rbac(kubeapi.requests, load_rules())
    assert [str(call).split(" (")[0] for call in without.missing] == ["list nodes"]
    assert check_rbac(kubeapi.requests, load_rules(DEPLOY, NODEPORT)).ok


@pytest.mark.e2e
def test_calls_the_rules_do_not_allow_are_reported(kubeapi: KubeAPI, client: Client) -> None:
    """Each of these would be a 403 in a cluster set up from deploy/."""
    kubeapi.create(_ingress("web", "fastroute"))
    lease = Lease(metadata=ObjectMeta(name="fastroute-leader"), spec=LeaseSpec())

    client.delete(Ingress, "web", namespace="default")  # no delete
    with pytest.raises(LightkubeError):
        client.get(Secret, "tls", namespace="default")  # secrets: list and watch only
    with pytest.raises(LightkubeError):
        client.get(Lease, "other-leader", namespace="fastroute")  # another Lease's name
    client.create(lease, namespace="default")  # the Role is for the fastroute namespace only
    list(client.list(Pod, namespace="*"))  # pods: never needed

    report = check_rbac(kubeapi.requests, load_rules())

    assert report.missing == (
        Call("create", "coordination.k8s.io", "leases", "default"),
        Call("delete", "networking.k8s.io", "ingresses", "default", "web"),
        Call("get", "", "secrets", "default", "tls"),
        Call("get", "coordination.k8s.io", "leases", "fastroute", "other-leader"),
        Call("list", "", "pods"),
    ), report
    assert "delete ingresses.networking.k8s.io 'web'" in str(report)


@pytest.mark.e2e
def test_grants_no_call_used_are_reported(kubeapi: KubeAPI, client: Client) -> None:
    """A controller that never posted an Event: the create on events is a privilege held
    for nothing."""
    _controller_traffic(kubeapi, client)
    kubeapi.requests.pop(("create", "/api/v1/namespaces/shop/events"))

    report = check_rbac(kubeapi.requests, load_rules())

    assert report.missing == ()
    assert report.unused == (Grant("ClusterRole fastroute-controller", "", "events", "create"),)
    assert "ClusterRole fastroute-controller: create events" in str(report)
