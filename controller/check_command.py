"""``fastroute-controller check``: the migration report, from manifest files or the cluster.

``check -f PATH…`` reads Ingresses (and the ConfigMap ``--configmap`` names) from manifest
files and folders, with the reader the controller serves them with; without ``-f`` it lists
them from the Kubernetes API, found as the controller finds it. Exit status: 0 everything
carries over, 1 something does not (``controller.check.Report.exit_code``), 2 a usage error
or input that cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import trio

from controller.check import check, checked_config, find_configmap
from controller.kube.client import KubeConfigError, connect, load_config
from controller.kube.listing import ListError, list_once
from controller.kube.source import check_namespace
from controller.manifests import load_manifests
from fastroute.ingress.explain import explain_route

__all__ = ["main"]

USAGE_ERROR = 2


def _namespace(text: str) -> str:
    try:
        return check_namespace(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _configmap(text: str) -> tuple[str, str]:
    namespace, slash, name = text.partition("/")
    if not slash or not name:
        raise argparse.ArgumentTypeError(f"write NAMESPACE/NAME, got {text!r}")
    return _namespace(namespace), name


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastroute-controller check",
        description="For every Ingress, each ingress-nginx annotation it uses and each key of "
        "the controller's ConfigMap: honoured, accepted (a no-op), unsupported or planned, and "
        "why; plus the values fastroute rejects. Exit status: 0 everything carries over, 1 "
        "something does not, 2 a usage error or input that cannot be read.",
    )
    parser.add_argument(
        "-f",
        "--filename",
        type=Path,
        nargs="+",
        action="extend",
        default=[],
        metavar="PATH",
        help="manifest files or folders to check (default: the Kubernetes API)",
    )
    parser.add_argument(
        "--configmap",
        type=_configmap,
        default=None,
        metavar="NAMESPACE/NAME",
        help="the ConfigMap ingress-nginx's controller read (its --configmap)",
    )
    parser.add_argument(
        "--enable-ssl-passthrough",
        action="store_true",
        help="check as a controller started with this flag: ssl-passthrough is honoured",
    )
    parser.add_argument("--output", choices=["table", "json"], default="table")
    parser.add_argument(
        "--explain",
        nargs=2,
        default=None,
        metavar=("HOST", "PATH"),
        help="instead of the report, say where a request for HOST and PATH (with an optional "
        "?query) goes and why: the literal rules, the regex paths, the rewrite",
    )
    parser.add_argument("--kubeconfig", type=Path, default=None, metavar="PATH")
    parser.add_argument("--context", default=None, metavar="NAME")
    parser.add_argument(
        "--watch-namespace",
        type=_namespace,
        action="append",
        default=[],
        metavar="NS",
        help="check the Ingresses of this namespace only (repeatable; default: all)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long the API may take to list everything (default 30)",
    )
    return parser


def main(argv: Sequence[str], out: TextIO | None = None) -> int:
    """Run the check; its exit status."""
    out = out or sys.stdout
    parser = _parser()
    args = parser.parse_args(argv)
    wanted = f"{args.configmap[0]}/{args.configmap[1]}" if args.configmap else None
    if args.filename:
        if args.kubeconfig is not None or args.context or args.watch_namespace:
            parser.error(
                "--kubeconfig, --context and --watch-namespace are for the Kubernetes API; "
                "with -f the files are checked"
            )
        loaded = load_manifests(args.filename)
        if loaded.errors:
            for error in loaded.errors:
                print(f"fastroute-controller check: {error}", file=sys.stderr)
            return USAGE_ERROR
        objects: list[Mapping[str, Any]] = loaded.objects
        where = "the files given"
    else:
        try:
            client = connect(load_config(args.kubeconfig, args.context))
        except KubeConfigError as error:
            parser.error(
                f"no usable Kubernetes API configuration: {error}. Give --kubeconfig PATH, "
                "or -f PATH to check manifest files"
            )
        try:
            objects = trio.run(
                lambda: list_once(
                    client,
                    namespaces=args.watch_namespace,
                    configmap=args.configmap,
                    timeout=args.timeout,
                )
            )
        except ListError as error:
            print(f"fastroute-controller check: {error}", file=sys.stderr)
            return USAGE_ERROR
        where = "the cluster"
    configmap = None
    if wanted is not None:
        configmap = find_configmap(objects, wanted)
        if configmap is None:
            print(f"fastroute-controller check: no ConfigMap {wanted} in {where}", file=sys.stderr)
            return USAGE_ERROR
    if args.explain is not None:
        host, path = args.explain
        if not path.startswith("/"):
            parser.error(f"--explain: the path must start with '/', got {path!r}")
        config = checked_config(objects, configmap, ssl_passthrough=args.enable_ssl_passthrough)
        out.write(f"{explain_route(config, host, path)}\n")
        return 0
    report = check(objects, configmap=configmap, ssl_passthrough=args.enable_ssl_passthrough)
    if args.output == "json":
        json.dump(report.as_json(), out, indent=2)
        out.write("\n")
    else:
        out.write(report.table())
    return report.exit_code
