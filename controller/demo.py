"""The demo: the example manifests served on 127.0.0.1, with small echo backends as pods.

The examples (``examples/``) are real users' Ingresses; they carry no endpoints and no
certificates. The demo starts one echo backend per Service they use, adds the
EndpointSlices a cluster would have, generates a certificate for every TLS Secret they
name, writes it all to a manifest folder and runs the controller on that folder, so
editing the file changes the routes while the demo runs. Then it prints curl commands.
"""

from __future__ import annotations

import logging
import signal
import tempfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import h11
import trio
import yaml

from controller.app import Controller, Options
from controller.manifests import load_manifests
from fastroute.ingress import ClassPolicy
from fastroute.ingress.certs import self_signed_certificate, tls_secret
from fastroute.ingress.objects import kind, mapping, name, namespace, sequence, text, to_v1_ingress

__all__ = ["EXAMPLES", "demo_objects", "demo_services", "run_demo"]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
log = logging.getLogger("fastroute.demo")
Obj = Mapping[str, Any]


def _describe(service: str, request: h11.Request) -> bytes:
    """What an echo backend answers: who it is and what reached it."""
    headers = {n.decode(): v.decode("latin-1") for n, v in request.headers}
    lines = [f"service {service} answered {request.method.decode()} {request.target.decode()}"]
    lines += [
        f"  {h}: {headers.get(h, '')}" for h in ("host", "x-forwarded-for", "x-forwarded-proto")
    ]
    return ("\n".join(lines) + "\n").encode()


async def _echo(service: str, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """A backend that answers every request with who it is and what it got."""

    async def answer(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            try:
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await stream.receive_some(65536))
                        continue
                    if isinstance(event, h11.Request):
                        body = _describe(service, event)
                        response = h11.Response(
                            status_code=200,
                            headers=[
                                (b"content-type", b"text/plain"),
                                (b"content-length", str(len(body)).encode()),
                            ],
                        )
                        await stream.send_all(conn.send(response) + conn.send(h11.Data(data=body)))
                    elif isinstance(event, h11.EndOfMessage):
                        await stream.send_all(conn.send(h11.EndOfMessage()))
                        conn.start_next_cycle()
                    elif isinstance(event, h11.ConnectionClosed):
                        return
            except (h11.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
                return

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(answer, listeners)


def _backends(ingress: Obj) -> list[Obj]:
    spec = mapping(ingress.get("spec"))
    found = [mapping(spec.get("defaultBackend"))]
    for rule in sequence(spec.get("rules")):
        for path in sequence(mapping(mapping(rule).get("http")).get("paths")):
            found.append(mapping(mapping(path).get("backend")))
    return [b for b in found if b.get("service")]


def demo_services(examples: list[Obj]) -> dict[tuple[str, str], Obj]:
    """The Services the examples define or their Ingresses name, by (namespace, name).

    One the Ingresses name but the examples leave out becomes a one-port Service.
    """
    services = {(namespace(o), name(o)): o for o in examples if kind(o) == "Service"}
    for obj in examples:
        if kind(obj) != "Ingress":
            continue
        ingress, _ = to_v1_ingress(obj)
        for backend in _backends(ingress):
            service = mapping(backend.get("service"))
            key = (namespace(ingress), text(service.get("name")))
            if key not in services:
                port = mapping(service.get("port")).get("number") or 80
                services[key] = {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": key[1], "namespace": key[0]},
                    "spec": {"ports": [{"port": port}]},
                }
    return services


def demo_objects(examples: list[Obj], ports: Mapping[tuple[str, str], int]) -> list[Obj]:
    """The examples with their Services, EndpointSlices to the backends, and TLS Secrets.

    ``ports`` maps each of ``demo_services`` to the local port of its echo backend.
    """
    objects = [
        o
        for o in examples
        if kind(o) != "Service"
        and not (kind(o) == "Secret" and text(o.get("type")) == "kubernetes.io/tls")
    ]  # the examples' TLS Secrets are placeholders: generated below
    secrets: dict[tuple[str, str], set[str]] = {}
    for obj in examples:
        if kind(obj) == "Ingress":
            ingress, _ = to_v1_ingress(obj)
            for entry in sequence(mapping(ingress.get("spec")).get("tls")):
                hosts = {h for h in sequence(mapping(entry).get("hosts")) if isinstance(h, str)}
                key = (namespace(ingress), text(mapping(entry).get("secretName")))
                secrets.setdefault(key, set()).update(hosts)
    for (ns, service_name), service in demo_services(examples).items():
        objects.append(service)
        ports_of = [mapping(p) for p in sequence(mapping(service.get("spec")).get("ports"))]
        objects.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{service_name}-demo",
                    "namespace": ns,
                    "labels": {"kubernetes.io/service-name": service_name},
                },
                "addressType": "IPv4",
                "ports": [
                    {"name": text(p.get("name")), "port": ports[(ns, service_name)]}
                    for p in ports_of
                ],
                "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
            }
        )
    for (ns, secret_name), hosts in secrets.items():
        if secret_name:
            objects.append(tls_secret(ns, secret_name, self_signed_certificate(sorted(hosts))))
    return objects


def _instructions(http: int, https: int, manifest: Path) -> str:
    plain = f"http://127.0.0.1:{http}"

    def secure(host: str, path: str = "/") -> str:
        return f"curl -k --resolve {host}:{https}:127.0.0.1 https://{host}:{https}{path}"

    return f"""
fastroute demo: the Ingresses in examples/, served on {plain} and https://127.0.0.1:{https}
manifests (edit them and watch the routes follow): {manifest}

  host routing       curl -H 'Host: v1.echo.192.168.49.5.sslip.io' {plain}/
                     curl -H 'Host: v2.echo.192.168.49.5.sslip.io' {plain}/
  path precedence    curl -H 'Host: sample.example.com' {plain}/path1/deeper
                     curl -H 'Host: sample.example.com' {plain}/path2
  default backend    curl -H 'Host: sample.example.com' {plain}/anything-else
  rewrite-target     curl -H 'Host: alicek106.example.com' {plain}/echo-hostname/x
  legacy v1beta1     curl -H 'Host: jordy.niniz.com' {plain}/
  TLS by SNI         {secure("https-example.foo.com")}
                     {secure("niniz.com", "/scappy")}
  HTTP -> HTTPS 308  curl -i -H 'Host: https-example.foo.com' {plain}/
  CORS preflight     curl -i -X OPTIONS -H 'Host: shop.example.com' \\
                          -H 'Origin: https://app.shop.example.com' {plain}/api/cart
  allowlist: 403     curl -i -H 'Host: shop.example.com' {plain}/admin
  body limit: 413    curl -i -H 'Host: shop.example.com' --data-binary @/etc/services {plain}/api
  regex + rewrite    curl -H 'Host: store.example.com' {plain}/API/cart/42
  canary by header   curl -H 'Host: store.example.com' -H 'X-Canary: always' {plain}/api/cart
  sticky session     curl -i -H 'Host: store.example.com' {plain}/api/cart
  basic auth: 401    curl -i -H 'Host: admin.example.com' {plain}/
                     curl -u admin:fastroute -H 'Host: admin.example.com' {plain}/
  migration report   fastroute-controller check -f examples/
  why this route     fastroute-controller check -f examples/ --explain store.example.com /api/x
  catch-all          curl -H 'Host: nowhere.example' {plain}/
                     curl {plain}/

fastroute demo ready: http={http} https={https}
"""


async def run_demo(options: Options) -> None:
    """Start the backends and the controller; print how to try it; run until Ctrl-C."""
    examples = load_manifests([EXAMPLES])
    if not examples.complete:
        raise SystemExit("\n".join(examples.errors))
    with (
        tempfile.TemporaryDirectory(prefix="fastroute-demo-") as folder,
        trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals,
    ):
        async with trio.open_nursery() as nursery:
            ports: dict[tuple[str, str], int] = {}
            for key in demo_services(list(examples.objects)):
                ports[key] = await nursery.start(_echo, key[1])
            manifest = Path(folder) / "demo.yaml"
            manifest.write_text(
                yaml.safe_dump_all(demo_objects(list(examples.objects), ports), sort_keys=False)
            )
            demo = replace(
                options,
                manifests=[Path(folder)],
                classes=ClassPolicy(
                    class_names=frozenset({"fastroute", "nginx"}), adopt_classless=True
                ),
            )
            controller = Controller(demo)
            listening = await nursery.start(controller.run)
            controller.proxy.https_redirect_port = listening.https_port  # redirects work locally
            print(_instructions(listening.http_port, listening.https_port, manifest), flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
