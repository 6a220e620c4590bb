"""``bench/proxy.py``: its reading of wrk's report, and a smoke run of the whole benchmark.

The parser is checked on reports a real wrk 4.1 printed (against a local nginx), one
clean and one with socket errors and error statuses, since a misread report would turn
into a wrong figure in a results table. The smoke run starts the real processes (nginx,
fastroute, wrk) for a few seconds and checks that every proxy answered without an error
and that the report states the ratios; it asserts no speed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.proxy_peers import find_tool
from bench.wrk import WrkResult, parse_wrk

REPO = Path(__file__).resolve().parent.parent  # where ``python -m bench.…`` runs

# `wrk -t1 -c16 -d2s --latency -H 'Host: a.test' http://127.0.0.1:43757/` on nginx
CLEAN = """\
Running 2s test @ http://127.0.0.1:43757/
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    68.28us   63.77us   2.11ms   97.82%
    Req/Sec   152.10k     7.00k  158.81k    95.24%
  Latency Distribution
     50%   51.00us
     75%   92.00us
     90%   99.00us
     99%  164.00us
  317455 requests in 2.10s, 50.56MB read
Requests/sec: 151193.67
Transfer/sec:     24.08MB
"""

# the same with -c64 and a rotation script, on an nginx with worker_connections 32 that
# answers 404 on one of the three paths: resets and error statuses
ERRORS = """\
Running 2s test @ http://127.0.0.1:43757/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.00ms  608.40us   3.22ms   65.37%
    Req/Sec   837.88    707.77     1.90k    75.00%
  Latency Distribution
     50%    1.13ms
     75%    1.31ms
     90%    1.61ms
     99%    2.86ms
  1025 requests in 2.01s, 214.39KB read
  Socket errors: connect 0, read 52077, write 0, timeout 0
  Non-2xx or 3xx responses: 343
Requests/sec:    511.01
Transfer/sec:    106.88KB
"""

SMOKE_TIMEOUT = 90  # seconds; the run itself takes about 15


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (CLEAN, WrkResult(317455, 2.10, 151193.67, 0.051, 0.164, 0, 0)),
        (ERRORS, WrkResult(1025, 2.01, 511.01, 1.13, 2.86, 343, 52077)),
    ],
    ids=["clean", "errors"],
)
def test_wrk_reports_are_read_as_printed(output: str, expected: WrkResult) -> None:
    result = parse_wrk(output)
    assert result.requests == expected.requests
    assert result.non_2xx == expected.non_2xx
    assert result.socket_errors == expected.socket_errors
    for got, want in [
        (result.seconds, expected.seconds),
        (result.rps, expected.rps),
        (result.p50_ms, expected.p50_ms),
        (result.p99_ms, expected.p99_ms),
    ]:
        assert got == pytest.approx(want)
    assert result.failed == expected.non_2xx + expected.socket_errors


@pytest.mark.parametrize(
    ("line", "ms"),
    [("750.00us", 0.75), ("2.86ms", 2.86), ("1.20s", 1200.0), ("1.50m", 90_000.0)],
)
def test_every_time_unit_wrk_prints_becomes_milliseconds(line: str, ms: float) -> None:
    output = CLEAN.replace("99%  164.00us", f"99%  {line}")
    assert parse_wrk(output).p99_ms == pytest.approx(ms)


@pytest.mark.parametrize("missing", ["Requests/sec:", "99%", "requests in"])
def test_a_report_without_a_figure_is_refused(missing: str) -> None:
    output = "\n".join(line for line in CLEAN.splitlines() if missing not in line)
    with pytest.raises(ValueError, match="wrk output has no"):
        parse_wrk(output)


@pytest.mark.skipif(
    find_tool("nginx") is None or find_tool("wrk") is None,
    reason="needs nginx and wrk (apt-get install -y nginx-light wrk)",
)
@pytest.mark.e2e
def test_a_quick_run_loads_every_proxy_without_an_error(tmp_path: Path) -> None:
    report = tmp_path / "results.json"
    command = [sys.executable, "-m", "bench.proxy", "--quick", "--skip-aiohttp", "--trio-floor"]
    command += ["--codec-floor", "--pump-floor"]
    command += ["--connections", "64", "--json", str(report)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=SMOKE_TIMEOUT, cwd=REPO)
    assert run.returncode == 0, run.stderr
    results = json.loads(report.read_text())["results"]
    route_sets = {"fastroute-annotated", "fastroute-canary", "fastroute-regex", "fastroute-auth"}
    peers = {"nginx", "haproxy"} if find_tool("haproxy") else {"nginx"}  # installed by the run
    floors = {"trio floor", "codec floor", "pump floor"}
    assert {r["proxy"] for r in results} == {*peers, "fastroute", *floors, *route_sets}
    for result in results:
        (only,) = result["rounds"]
        assert only["requests"] > 0, result
        assert only["non_2xx"] == 0, result
        assert only["socket_errors"] == 0, result
    cpu = {r["proxy"]: r["cpu_us_per_request"] for r in results}
    kernel = {r["proxy"]: r["cpu_kernel_us_per_request"] for r in results}
    # read from /proc for every proxy's processes (nginx's worker is its master's child);
    # the route sets are the fastroute process on its annotated, canary, regex routes
    for name in {*peers, "fastroute", *floors, *route_sets}:
        assert cpu[name] > 0, name
        assert 0 <= kernel[name] <= cpu[name], name
    for ratio in (
        "fastroute/nginx req/s",
        "fastroute/nginx p99",
        "fastroute/nginx CPU/req",
        "annotated/plain req/s",
        "annotated/plain CPU/req",
        "canary/plain req/s",
        "regex/plain CPU/req",
        "trio floor/nginx req/s",
        "codec floor/nginx p99",
        "pump floor/nginx p99",
        "fastroute/trio floor req/s",
    ):
        assert any(line.startswith("c64") and ratio in line for line in run.stdout.splitlines())
    assert "fastroute/aiohttp req/s" in run.stdout  # reported as skipped, not left out
    assert "swaps: " in run.stdout


@pytest.mark.parametrize("mode", ["plain", "annotated", "canary", "auth", "direct"])
@pytest.mark.e2e
def test_the_instruction_count_driver_gets_every_answer(mode: str) -> None:
    # bench/route_cost.py counts what a request costs; its client waits for the backend's
    # body on every request, so a route that refused (403, 503) would never finish
    command = [sys.executable, "-m", "bench.route_cost", "--one", mode, "48"]
    run = subprocess.run(
        [*command, "--connections", "4"], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert run.returncode == 0, run.stderr
