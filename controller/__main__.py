"""Command line: ``python -m controller`` (also installed as ``fastroute-controller``).

``fastroute-controller`` follows the Kubernetes API (in-cluster, ``--kubeconfig PATH`` or
``~/.kube/config``) and serves its Ingresses; ``fastroute-controller --manifests DIR`` serves
the Ingresses in DIR instead and follows changes to the files;
``fastroute-controller demo`` starts local echo backends and serves the example manifests;
``fastroute-controller check`` reports what a migration from ingress-nginx keeps
(``controller.check_command``, with its own options).
``--workers N`` makes this process a supervisor of N serving processes
(``controller.supervisor``); otherwise it serves itself (``controller.lifecycle``).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from functools import partial
from pathlib import Path

import trio

from controller.app import KubeOptions, ListenError, Options, check_configmap
from controller.kube.client import KubeConfigError, connect, load_config
from controller.kube.publisher import PublishOptions, add_arguments
from controller.kube.source import check_namespace
from controller.lifecycle import serve_until_signalled
from controller.supervisor import Supervisor, worker_command
from fastroute.ingress import ClassPolicy
from fastroute.proxy.server import Limits

__all__ = ["main"]

DEFAULT_STATUS_PORT = 10254  # ingress-nginx's, so probes and scrape configs carry over
DEFAULT_MAX_BODY_SIZE = 1024 * 1024  # ingress-nginx's proxy-body-size: what it refused is refused


def _positive(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, got {text!r}")
    return value


def _workers(text: str) -> int:
    """``N`` processes, or ``auto``: one per CPU."""
    if text == "auto":
        return os.cpu_count() or 1
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a number of workers: {text!r} (write a number or 'auto')"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 worker, got {text!r}")
    return value


def _boolean(text: str) -> bool:
    """``true`` or ``false``, as Go's flags take them (ingress-nginx's ``--metrics-per-host``)."""
    value = {"true": True, "1": True, "false": False, "0": False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"not true or false: {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text!r}")
    return value


def _namespace(text: str) -> str:
    try:
        return check_namespace(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _configmap(text: str) -> str:
    try:
        return check_configmap(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a port: {text!r}")
    return value


def _size(text: str) -> int:
    """``512``, ``64k``, ``8m``, ``1g``: bytes, as nginx writes sizes."""
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    scale = units.get(text[-1:].lower(), 1)
    number = text[:-1] if scale > 1 else text
    try:
        value = int(number) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a size: {text!r} (write 512, 64k, 8m or 1g)"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 byte: {text!r}")
    return value


def _rate(text: str) -> int:
    """Bytes per second as a size (``1k``), or ``0`` for no minimum."""
    return 0 if text.strip() == "0" else _size(text)


def _parser() -> argparse.ArgumentParser:
    defaults = Limits()
    parser = argparse.ArgumentParser(
        prog="fastroute-controller",
        description="A Kubernetes Ingress controller: routes HTTP(S) by Ingress rules. "
        "'serve' (the default) follows the Kubernetes API: in a pod, through its service "
        "account; elsewhere through --kubeconfig, $KUBECONFIG or ~/.kube/config. With "
        "--manifests it serves manifest files instead. /readyz turns ready once every kind "
        "(Ingresses, IngressClasses, Services, EndpointSlices, TLS Secrets, ConfigMaps) has "
        "been listed.",
    )
    parser.add_argument(
        "command",
        nargs="?",
        choices=["serve", "demo", "check"],
        default="serve",
        help="'check': the ingress-nginx migration report (see 'check --help')",
    )
    parser.add_argument(
        "--manifests",
        type=Path,
        action="append",
        default=[],
        metavar="PATH",
        help="a manifest file or folder to serve and watch, instead of the Kubernetes API "
        "(repeatable)",
    )
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        default=None,
        metavar="PATH",
        help="the kubeconfig to reach the API with (default: in-cluster, else $KUBECONFIG "
        "or ~/.kube/config)",
    )
    parser.add_argument(
        "--context",
        default=None,
        metavar="NAME",
        help="the kubeconfig context to use (default: its current context)",
    )
    parser.add_argument(
        "--watch-namespace",
        type=_namespace,
        action="append",
        default=[],
        metavar="NS",
        help="watch Ingresses, Services, EndpointSlices, TLS Secrets and ConfigMaps in this "
        "namespace only (repeatable; default: all namespaces)",
    )
    parser.add_argument(
        "--configmap",
        type=_configmap,
        default=None,
        metavar="NAMESPACE/NAME",
        help="the controller's ConfigMap, with ingress-nginx's keys (watched; with "
        "--manifests, a ConfigMap in the files); a key it sets wins over the flag it overlaps",
    )
    parser.add_argument(
        "--bind", default=None, help="address to listen on (default 0.0.0.0; demo 127.0.0.1)"
    )
    parser.add_argument(
        "--http-port", type=_port, default=8080, help="plain HTTP port (default 8080)"
    )
    parser.add_argument("--https-port", type=_port, default=8443, help="HTTPS port (default 8443)")
    parser.add_argument(
        "--https-redirect-port",
        type=_port,
        default=443,
        help="the port HTTP-to-HTTPS redirects point to, as clients reach it (default 443)",
    )
    parser.add_argument(
        "--ingress-class",
        action="append",
        default=[],
        metavar="NAME",
        help="a class name to serve besides 'fastroute' (e.g. 'nginx' when migrating; repeatable)",
    )
    parser.add_argument(
        "--watch-ingress-without-class",
        action="store_true",
        help="also serve Ingresses that name no class",
    )
    parser.add_argument(
        "--enable-ssl-passthrough",
        action="store_true",
        help="relay TLS connections whose SNI names a host of an Ingress annotated "
        "ssl-passthrough to its '/' backend, undecrypted (as ingress-nginx's flag)",
    )
    parser.add_argument(
        "--trusted-proxy",
        action="append",
        default=[],
        metavar="CIDR",
        help="a peer whose X-Forwarded-* headers are believed (repeatable)",
    )
    limits: list[
        tuple[str, Callable[[str], object], float, str]
    ] = [  # flag, parser, default, metavar
        ("--max-header-size", _size, defaults.max_head_bytes, "SIZE"),
        ("--max-body-size", _size, DEFAULT_MAX_BODY_SIZE, "SIZE"),
        ("--header-timeout", _positive, defaults.head_timeout, "SECONDS"),
        ("--connect-timeout", _positive, defaults.connect_timeout, "SECONDS"),
        ("--upstream-timeout", _positive, defaults.upstream_timeout, "SECONDS"),
        ("--max-connections", int, defaults.max_connections, "N"),
        ("--min-body-rate", _rate, defaults.min_body_rate, "BYTES_PER_SECOND"),
    ]
    for flag, parse, default, metavar in limits:
        parser.add_argument(flag, type=parse, default=default, metavar=metavar)
    parser.add_argument(
        "--status-port",
        type=_port,
        default=None,
        metavar="PORT",
        help="/healthz, /readyz and /metrics (default 10254, as ingress-nginx; 0: any free "
        "port; the demo has none unless given)",
    )
    parser.add_argument(
        "--shutdown-grace",
        type=_seconds,
        default=20.0,
        metavar="SECONDS",
        help="on SIGTERM, how long requests in flight may take to finish (default 20, "
        "inside Kubernetes' 30 s terminationGracePeriodSeconds)",
    )
    parser.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N",
        help="serving processes sharing the ports (default 1; 'auto': one per CPU)",
    )
    parser.add_argument("--worker-of", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--metrics-per-ingress",
        type=_boolean,
        nargs="?",
        const=True,
        default=True,
        metavar="true|false",
        help="label request metrics by Ingress and Service (default true); false: one "
        "'_other' value for all, as ingress-nginx's --metrics-per-host=false drops a label",
    )
    parser.add_argument(
        "--metrics-max-ingresses",
        type=_count,
        default=None,
        metavar="N",
        help="only the N oldest Ingresses have request series of their own; the others "
        "share ingress and service '_other' (default: no limit)",
    )
    parser.add_argument(
        "--no-watch", action="store_true", help="read the manifests once (SIGHUP rereads them)"
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    add_arguments(parser)  # --publish-service, --election-id, ...: the cluster's writes
    return parser


def _options(
    args: argparse.Namespace, manifests: Sequence[Path], kubernetes: KubeOptions | None = None
) -> Options:
    return Options(
        manifests=manifests,
        kubernetes=kubernetes,
        bind=args.bind or ("127.0.0.1" if args.command == "demo" else "0.0.0.0"),
        http_port=args.http_port,
        https_port=args.https_port,
        classes=ClassPolicy(
            class_names=frozenset({"fastroute", *args.ingress_class}),
            adopt_classless=args.watch_ingress_without_class,
        ),
        trusted_proxies=args.trusted_proxy,
        limits=Limits(
            max_head_bytes=args.max_header_size,
            max_body_bytes=args.max_body_size,
            head_timeout=args.header_timeout,
            connect_timeout=args.connect_timeout,
            upstream_timeout=args.upstream_timeout,
            max_connections=args.max_connections,
            min_body_rate=args.min_body_rate,
        ),
        https_redirect_port=args.https_redirect_port,
        watch=not args.no_watch,
        status_port=_status_port(args),
        reuse_port=args.worker_of is not None,
        shutdown_grace=args.shutdown_grace,
        configmap=args.configmap,
        ssl_passthrough=args.enable_ssl_passthrough,
        metrics_max_ingresses=0 if not args.metrics_per_ingress else args.metrics_max_ingresses,
    )


def _status_port(args: argparse.Namespace) -> int | None:
    """Where this process serves /healthz etc.: a worker never does (its supervisor does)."""
    if args.worker_of is not None:
        return None
    if args.status_port is None and args.command == "serve":
        return DEFAULT_STATUS_PORT
    port: int | None = args.status_port
    return port


def main(argv: Sequence[str] | None = None) -> int:
    """Run the controller (or the demo, or a supervisor of workers); return the exit status."""
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["check"]:
        from controller.check_command import main as check

        return check(argv[1:])
    args = parser.parse_args(argv)
    if not args.metrics_per_ingress and args.metrics_max_ingresses:
        parser.error(
            "--metrics-max-ingresses N says which Ingresses get series; with "
            "--metrics-per-ingress=false none does: give one of the two"
        )
    several = args.workers > 1 or args.worker_of is not None
    logging.basicConfig(
        level=args.log_level,
        # with several processes, each line says which one wrote it
        format="%(asctime)s %(levelname)s %(name)s"
        + ("[%(process)d]" if several else "")
        + ": %(message)s",
    )
    if args.log_level != "DEBUG":  # httpx logs every API request (watches reconnect often)
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        if args.command == "demo":
            from controller.demo import run_demo

            trio.run(run_demo, _options(args, []))
            return 0
        options = _options(args, args.manifests, _kubernetes(parser, args))
        if args.workers > 1:
            return _supervise(parser, args, argv, options)
        return _run(partial(serve_until_signalled, options, supervisor=args.worker_of))
    except ValueError as error:  # an option that parsed but is out of range
        parser.error(str(error))


def _kubernetes(parser: argparse.ArgumentParser, args: argparse.Namespace) -> KubeOptions | None:
    """Where the cluster is (None: ``--manifests`` are served); checked before serving."""
    cluster_flags = args.kubeconfig is not None or args.context or args.watch_namespace
    if args.manifests:
        if cluster_flags:
            parser.error(
                "--kubeconfig, --context and --watch-namespace are for the Kubernetes API; "
                "with --manifests the files are served"
            )
        return None
    if args.no_watch:
        parser.error("--no-watch is for --manifests: the Kubernetes API is always watched")
    try:
        connect(load_config(args.kubeconfig, args.context))  # files, certificates: checked now
    except KubeConfigError as error:
        parser.error(
            f"no usable Kubernetes API configuration: {error}. Give --kubeconfig PATH, or "
            "run in a pod; to serve files, --manifests PATH is required (a file or folder "
            "of Kubernetes manifests)"
        )
    return KubeOptions(
        kubeconfig=args.kubeconfig,
        context=args.context,
        namespaces=args.watch_namespace,
        publish=PublishOptions.from_args(args),
    )


def _run(serve: Callable[[], Awaitable[int | None]]) -> int:
    """Run ``serve`` in trio; its exit status, or 1 when a listener cannot open its port."""
    status: int | None = 1
    try:
        status = trio.run(serve)
    except* ListenError as group:
        for error in _leaves(group):
            logging.getLogger("fastroute.controller").error("%s", error)
    return status or 0


def _leaves(group: BaseExceptionGroup[ListenError]) -> Iterator[ListenError]:
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            yield from _leaves(error)
        else:
            yield error


def _supervise(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    argv: Sequence[str],
    options: Options,
) -> int:
    if 0 in (options.http_port, options.https_port):
        parser.error(
            "--workers N needs fixed --http-port and --https-port: "
            "with 0 every worker would get a different port"
        )
    supervisor = Supervisor(
        worker_command(argv),
        args.workers,
        bind=options.bind,
        status_port=options.status_port,
        grace=options.shutdown_grace,
    )
    return _run(supervisor.run)


if __name__ == "__main__":
    sys.exit(main())
