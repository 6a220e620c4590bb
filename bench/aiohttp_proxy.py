"""A minimal aiohttp reverse proxy: the Python peer of ``bench/proxy.py``.

What a small Python proxy written the usual way looks like: an aiohttp.web server, one
ClientSession whose keep-alive connector is shared by every request, routes in a dict
(host to its paths, Ingress Exact and element-wise longest Prefix), the method, path,
headers and body forwarded, the status, headers and body returned. One process, the
default asyncio loop, no access log.

Usage: ``python bench/aiohttp_proxy.py --port P --backend-port B --routes JSON`` where
JSON is a list of ``[host, path, "Prefix" | "Exact"]``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

# RFC 9110 §7.6.1: meaningful for one hop only; aiohttp frames bodies itself
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)

Routes = dict[str, tuple[set[str], list[str]]]  # host: (exact paths, prefixes, longest first)
ROUTES: web.AppKey[Routes] = web.AppKey("routes", dict)
SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("session", aiohttp.ClientSession)
BACKEND: web.AppKey[str] = web.AppKey("backend", str)


def build_routes(rules: list[list[str]]) -> Routes:
    """The routing dict from ``[host, path, path_type]`` rules."""
    routes: Routes = {}
    for host, path, path_type in rules:
        exact, prefixes = routes.setdefault(host.lower(), (set(), []))
        if path_type == "Exact":
            exact.add(path)
        else:
            prefixes.append(path.rstrip("/"))  # "/" becomes "": every path starts with "/"
    for _, prefixes in routes.values():
        prefixes.sort(key=len, reverse=True)
    return routes


def routed(routes: Routes, host: str, path: str) -> bool:
    """Whether a rule takes ``path`` on ``host`` (a Prefix matches whole path elements)."""
    entry = routes.get(host.partition(":")[0].lower())
    if entry is None:
        return False
    exact, prefixes = entry
    if path in exact:
        return True
    return any(path == p or path.startswith(p + "/") for p in prefixes)


async def forward(request: web.Request) -> web.StreamResponse:
    """Send the request on to the backend and its answer back."""
    if not routed(request.app[ROUTES], request.host, request.path):
        return web.Response(status=404, text="no route\n")
    headers = CIMultiDict(
        (name, value) for name, value in request.headers.items() if name.lower() not in HOP_BY_HOP
    )
    headers.add("X-Forwarded-For", request.remote or "")
    headers.add("X-Forwarded-Proto", request.scheme)
    body = await request.read() if request.body_exists else None
    url = request.app[BACKEND] + request.rel_url.raw_path_qs
    async with request.app[SESSION].request(
        request.method, url, headers=headers, data=body, allow_redirects=False
    ) as upstream:
        payload = await upstream.read()
        answer = CIMultiDict(
            (name, value)
            for name, value in upstream.headers.items()
            if name.lower() not in HOP_BY_HOP
        )
        return web.Response(status=upstream.status, headers=answer, body=payload)


def make_app(backend_port: int, rules: list[list[str]]) -> web.Application:
    """The proxy application; its ClientSession lives as long as the app."""
    app = web.Application()
    app[ROUTES] = build_routes(rules)
    app[BACKEND] = f"http://127.0.0.1:{backend_port}"

    async def session(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=512, keepalive_timeout=75)
        async with aiohttp.ClientSession(
            connector=connector, auto_decompress=False, skip_auto_headers=["User-Agent"]
        ) as client:
            app[SESSION] = client
            yield

    app.cleanup_ctx.append(session)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend-port", type=int, required=True)
    parser.add_argument("--routes", type=json.loads, required=True)
    args = parser.parse_args()
    app = make_app(args.backend_port, args.routes)
    # run_app stops cleanly on SIGTERM, which is how the benchmark stops it
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
