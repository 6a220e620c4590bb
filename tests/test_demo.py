"""The README's main command: the demo serves the example manifests as their documents say."""

from __future__ import annotations

import queue
import re
import signal
import ssl
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.polling import DEADLINE

pytestmark = pytest.mark.e2e

DEMO_DEADLINE = DEADLINE * 3  # the demo generates certificates and starts a backend per Service


def _wait_for_ready(demo: subprocess.Popen[str]) -> tuple[int, int, str]:
    """Read the demo's output until its ready line; (http port, https port, all output).

    A thread reads the lines: a pipe read can block, and the deadline must hold.
    """
    assert demo.stdout is not None
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in demo.stdout or []:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    output = ""
    end = time.monotonic() + DEMO_DEADLINE
    while time.monotonic() < end:
        try:
            line = lines.get(timeout=max(0.01, end - time.monotonic()))
        except queue.Empty:
            break
        output += line
        found = re.search(r"fastroute demo ready: http=(\d+) https=(\d+)", line)
        if found:
            return int(found[1]), int(found[2]), output
    raise AssertionError(f"the demo did not get ready:\n{output}")


def test_the_demo_routes_the_examples_as_their_documents_say() -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "controller", "demo", "--http-port", "0", "--https-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        http, https, output = _wait_for_ready(demo)
        assert "curl -H 'Host: sample.example.com'" in output
        with httpx.Client(trust_env=False, timeout=10) as client:

            def get(host: str, path: str) -> httpx.Response:
                return client.get(f"http://127.0.0.1:{http}{path}", headers={"host": host})

            # 05-default-backend.yaml: /path1/* -> svc-1, /path2/* -> svc-2, else -> default
            assert get("sample.example.com", "/path1/x").text.startswith(
                "service sample-ingress-svc-1 "
            )
            assert get("sample.example.com", "/path2").text.startswith(
                "service sample-ingress-svc-2 "
            )
            assert get("sample.example.com", "/else").text.startswith(
                "service sample-ingress-default "
            )
            # 03: two versions on two host names
            assert get("v2.echo.192.168.49.5.sslip.io", "/").text.startswith("service echo-v2 ")
            # 01: rewrite-target / sends everything under the path to /
            rewritten = get("alicek106.example.com", "/echo-hostname/deep").text
            assert rewritten.startswith("service hostname-service answered GET /\n")
            # 02: a TLS host redirects plain HTTP, to the demo's HTTPS port
            redirect = get("https-example.foo.com", "/x")
            assert redirect.status_code == 308
            assert redirect.headers["location"] == f"https://https-example.foo.com:{https}/x"
            # 05's defaultBackend is also the catch-all: other hosts, an IP address as Host
            for host in ("nowhere.example", f"127.0.0.1:{http}"):
                assert get(host, "/").text.startswith("service sample-ingress-default "), host
            # 06: ingress-nginx annotations at work, as the demo's instructions show them
            origin = "https://app.shop.example.com"
            preflight = client.options(
                f"http://127.0.0.1:{http}/api/cart",
                headers={"host": "shop.example.com", "origin": origin},
            )
            assert preflight.status_code == 204  # answered by the proxy: CORS
            assert preflight.headers["access-control-allow-origin"] == origin
            api = client.get(
                f"http://127.0.0.1:{http}/api/cart",
                headers={"host": "shop.example.com", "origin": origin},
            )
            assert api.text.startswith("service shop-api ")
            assert api.headers["access-control-allow-origin"] == origin
            upload = client.post(
                f"http://127.0.0.1:{http}/api/upload",
                headers={"host": "shop.example.com"},
                content=b"x" * 2048,
            )
            assert upload.status_code == 413  # proxy-body-size: 1k
            assert get("shop.example.com", "/admin").status_code == 403  # not in 10.0.0.0/8
            assert "allowlist: 403" in output
            # 07: a regex path's captures rewrite the path; a canary by header; a session
            api = client.get(  # X-Canary: never, else 10% of first requests go to store-v2
                f"http://127.0.0.1:{http}/API/cart/42",
                headers={"host": "store.example.com", "x-canary": "never"},
            )
            assert api.text.startswith("service store-v1 answered GET /cart/42\n")
            session = api.headers["set-cookie"].split(";")[0]
            assert session.startswith("store-session=")
            client.cookies.clear()  # a session would keep the client on store-v1
            canary = client.get(
                f"http://127.0.0.1:{http}/api/cart",
                headers={"host": "store.example.com", "x-canary": "always"},
            )
            assert canary.text.startswith("service store-v2 answered GET /cart\n")
            client.cookies.clear()  # the canary began a session of its own
            for _ in range(20):  # the session keeps its backend, canary weight or not
                kept = client.get(
                    f"http://127.0.0.1:{http}/api/cart",
                    headers={"host": "store.example.com", "cookie": session},
                )
                assert kept.text.startswith("service store-v1 ")
            assert "canary by header" in output
            # 08: basic auth with the htpasswd Secret (bcrypt), as the demo's lines show
            locked = get("admin.example.com", "/")
            assert locked.status_code == 401
            assert locked.headers["www-authenticate"] == (
                'Basic realm="Authentication Required - admin"'
            )
            opened = client.get(
                f"http://127.0.0.1:{http}/",
                headers={"host": "admin.example.com"},
                auth=("admin", "fastroute"),
            )
            assert opened.text.startswith("service admin-tool ")
            wrong = client.get(
                f"http://127.0.0.1:{http}/",
                headers={"host": "admin.example.com"},
                auth=("admin", "nginx"),
            )
            assert wrong.status_code == 401
            assert "curl -u admin:fastroute" in output
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        with httpx.Client(verify=insecure, trust_env=False, timeout=10) as client:
            response = client.get(
                f"https://127.0.0.1:{https}/scappy",
                headers={"host": "niniz.com"},
                extensions={"sni_hostname": "niniz.com"},
            )
            assert response.text.startswith("service scappy-node-port-svc ")
    finally:
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(timeout=DEMO_DEADLINE) == 0
