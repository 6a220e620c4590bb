"""Command line: ``python -m controller`` (also installed as ``fastroute-controller``).

``fastroute-controller --manifests DIR`` serves the Ingresses in DIR and follows changes;
``fastroute-controller demo`` starts local echo backends and serves the example manifests.
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import trio

from controller.app import Controller, Options
from fastroute.ingress import ClassPolicy
from fastroute.proxy.server import Limits

__all__ = ["main"]


def _positive(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


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


def _parser() -> argparse.ArgumentParser:
    defaults = Limits()
    parser = argparse.ArgumentParser(
        prog="fastroute-controller",
        description="A Kubernetes Ingress controller: routes HTTP(S) by Ingress rules.",
    )
    parser.add_argument("command", nargs="?", choices=["serve", "demo"], default="serve")
    parser.add_argument(
        "--manifests",
        type=Path,
        action="append",
        default=[],
        metavar="PATH",
        help="a manifest file or folder to serve and watch (repeatable)",
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
        ("--max-body-size", _size, defaults.max_body_bytes, "SIZE"),
        ("--header-timeout", _positive, defaults.head_timeout, "SECONDS"),
        ("--connect-timeout", _positive, defaults.connect_timeout, "SECONDS"),
        ("--upstream-timeout", _positive, defaults.upstream_timeout, "SECONDS"),
        ("--max-connections", int, defaults.max_connections, "N"),
    ]
    for flag, parse, default, metavar in limits:
        parser.add_argument(flag, type=parse, default=default, metavar=metavar)
    parser.add_argument("--no-watch", action="store_true", help="read the manifests once")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    return parser


def _options(args: argparse.Namespace, manifests: Sequence[Path]) -> Options:
    return Options(
        manifests=manifests,
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
        ),
        https_redirect_port=args.https_redirect_port,
        watch=not args.no_watch,
    )


async def _serve_until_signalled(options: Options) -> None:
    controller = Controller(options)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            listening = await nursery.start(controller.run)
            logging.getLogger("fastroute.controller").info(
                "listening on %s: http %d, https %d",
                options.bind,
                listening.http_port,
                listening.https_port,
            )
            async for signum in signals:
                logging.getLogger("fastroute.controller").info(
                    "%s: stopping", signal.Signals(signum).name
                )
                nursery.cancel_scope.cancel()
                break


def main(argv: Sequence[str] | None = None) -> int:
    """Run the controller (or the demo); return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        if args.command == "demo":
            from controller.demo import run_demo

            trio.run(run_demo, _options(args, []))
            return 0
        if not args.manifests:
            parser.error("--manifests PATH is required (a file or folder of Kubernetes manifests)")
        trio.run(_serve_until_signalled, _options(args, args.manifests))
    except ValueError as error:  # an option that parsed but is out of range
        parser.error(str(error))
    return 0


if __name__ == "__main__":
    sys.exit(main())
