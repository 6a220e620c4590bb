"""``bench/controller_scale.py``: its readings of the controller, its objects, and a quick run.

A misread ``/proc`` status, ``/metrics`` page or log would turn into a wrong figure in a
results table, so each reader is checked on what the real thing writes. The objects are
checked to route every path to a Service that has an endpoint. The quick run starts the
real controller against the emulator with 200 Ingresses and checks what a user reads:
a ready time, a latency for every update, none failed; it asserts no speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from bench.controller_scale import (
    Memory,
    cluster_objects,
    ingress,
    log_problems,
    parse_cpu_seconds,
    parse_memory,
    parse_samples,
    percentile,
    reloads,
    series_count,
)
from controller.reload_metrics import ReloadMetrics
from fastroute.proxy.metrics import Metrics

REPO = Path(__file__).resolve().parent.parent  # where ``python -m bench.…`` runs

SMOKE_TIMEOUT = 60  # seconds; the quick run takes about 10

# /proc/PID/status of a running controller, abridged
STATUS = """\
Name:\tpython
Umask:\t0022
State:\tS (sleeping)
VmPeak:\t 1052344 kB
VmSize:\t  986808 kB
VmHWM:\t  309248 kB
VmRSS:\t  262144 kB
RssAnon:\t  240000 kB
Threads:\t4
"""


def test_proc_status_memory_is_read_in_mib() -> None:
    assert parse_memory(STATUS) == Memory(rss_mib=256.0, hwm_mib=302.0)


def test_this_process_status_is_read() -> None:
    memory = parse_memory(Path("/proc/self/status").read_text())
    assert 0 < memory.rss_mib <= memory.hwm_mib


def test_cpu_seconds_are_user_plus_system_even_with_a_parenthesis_in_the_name() -> None:
    ticks = os.sysconf("SC_CLK_TCK")
    fields = ["S", "1", "1", "1", "0", "-1", "4194560", "100", "0", "0", "0"]
    stat = f"4242 (py (x) thon) {' '.join(fields)} {3 * ticks} {ticks} 0 0 20 0 4 0"
    assert parse_cpu_seconds(stat) == 4.0


def test_this_process_cpu_seconds_grow_with_work() -> None:
    stat = Path("/proc/self/stat")
    before = parse_cpu_seconds(stat.read_text())
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:  # bounded: 50 ms of CPU
        pass
    assert parse_cpu_seconds(stat.read_text()) > before


def test_a_status_without_memory_lines_is_refused() -> None:
    with pytest.raises(ValueError, match="no VmRSS"):
        parse_memory("Name:\tpython\nState:\tZ (zombie)\n")


def test_reloads_are_read_from_the_controllers_own_metrics() -> None:
    metrics = Metrics()
    reload_metrics = ReloadMetrics(metrics.registry)
    for ok in (True, True, True, False):
        reload_metrics.config_reload(ok)
    # the page also has fastroute_config_reloads_created{result=...}: not counted
    assert reloads(metrics.text().decode()) == {"success": 3, "failure": 1}


def test_metric_samples_keep_labels_and_skip_comments() -> None:
    page = (
        "# HELP x_total things\n"
        "# TYPE x_total counter\n"
        'x_total{a="1",b="say \\"hi\\"\\n"} 2.5\n'
        "x_total 7 1700000000000\n"
        'x_total_created{a="1"} 1.7e+09\n'
    )
    assert parse_samples(page, "x_total") == [({"a": "1", "b": 'say "hi"\n'}, 2.5), ({}, 7.0)]
    assert series_count(page) == 3


def test_only_warnings_and_errors_of_the_log_are_problems() -> None:
    log = (
        "2026-01-02 10:00:00,001 INFO fastroute.controller: listening on 127.0.0.1\n"
        "2026-01-02 10:00:01,002 WARNING fastroute.controller.kube: Ingress a/b: ignored\n"
        "2026-01-02 10:00:02,003 ERROR fastroute.controller.kube: building failed\n"
        "Traceback (most recent call last):\n"
        "ValueError: ERROR in a message is not a level\n"
    )
    assert [line.split()[2] for line in log_problems(log)] == ["WARNING", "ERROR"]


@pytest.mark.parametrize(
    ("q", "expected"), [(0, 1.0), (50, 50.0), (90, 90.0), (99, 99.0), (99.5, 100.0), (100, 100.0)]
)
def test_percentiles_are_values_that_were_measured(q: float, expected: float) -> None:
    values = [float(v) for v in range(100, 0, -1)]
    assert percentile(values, q) == expected


def test_every_path_goes_to_a_service_with_an_endpoint() -> None:
    ports = {"blue": 1001, "green": 1002}
    objects = list(cluster_objects(150, 4, ports, namespaces=100))
    kinds = Counter(o["kind"] for o in objects)
    assert kinds == {
        "IngressClass": 1,
        "Namespace": 100,
        "Service": 150 + 2 * 100,
        "EndpointSlice": 150 + 2 * 100,
        "Ingress": 150,
    }
    slices = {
        (o["metadata"]["namespace"], o["metadata"]["labels"]["kubernetes.io/service-name"]): o
        for o in objects
        if o["kind"] == "EndpointSlice"
    }
    hosts = set()
    for obj in objects:
        if obj["kind"] != "Ingress":
            continue
        (rule,) = obj["spec"]["rules"]
        hosts.add(rule["host"])
        assert [p["path"] for p in rule["http"]["paths"]] == ["/p0", "/p1", "/p2", "/p3"]
        for path in rule["http"]["paths"]:
            target = (obj["metadata"]["namespace"], path["backend"]["service"]["name"])
            assert slices[target]["ports"][0]["port"] == ports["blue"]  # blue until switched
    assert len(hosts) == 150


def test_a_switched_path_names_the_color_service_of_its_namespace() -> None:
    obj = ingress(7, 100, 3, {1: "green"})
    services = [p["backend"]["service"]["name"] for p in obj["spec"]["rules"][0]["http"]["paths"]]
    assert services == ["app-7", "green", "app-7"]
    assert obj["metadata"] == {"name": "app-7", "namespace": "bench-07"}


@pytest.mark.e2e
def test_a_quick_run_times_ready_and_every_update(tmp_path: Path) -> None:
    report = tmp_path / "results.json"
    command = [sys.executable, "-m", "bench.controller_scale", "--quick"]
    command += ["--json", str(report), "--log-dir", str(tmp_path / "logs")]
    run = subprocess.run(command, capture_output=True, text=True, timeout=SMOKE_TIMEOUT, cwd=REPO)
    assert run.returncode == 0, run.stderr
    results = json.loads(report.read_text())
    (start,) = results["starts"]
    assert start["ready_s"] > 0
    assert start["memory"]["rss_mib"] > 0
    updates = results["updates"]
    assert len(updates["latencies_ms"]) == updates["requested"] == 30
    assert updates["failed"] == []
    assert updates["stopped_early"] is None
    assert results["log_problems"] == []
    for measure in ("time to first ready", "update to traffic, p99", "RSS growth"):
        assert any(line.startswith(f"| {measure}") for line in run.stdout.splitlines()), measure
    assert (tmp_path / "logs" / "controller-1.log").stat().st_size > 0


@pytest.mark.e2e
def test_a_quick_first_publication_run_times_updates_while_statuses_are_written(
    tmp_path: Path,
) -> None:
    report = tmp_path / "results.json"
    command = [sys.executable, "-m", "bench.controller_scale", "--quick"]
    command += ["--publish-address", "203.0.113.10", "--first-publication"]
    command += ["--json", str(report)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=SMOKE_TIMEOUT, cwd=REPO)
    assert run.returncode == 0, run.stderr
    updates = json.loads(report.read_text())["updates"]
    assert updates["failed"] == []
    assert updates["statuses_written"] > 0  # none was published: the controller wrote them
    assert updates["cpu_s"] > 0
    for measure in ("statuses written before the updates began", "controller CPU per update"):
        assert any(line.startswith(f"| {measure}") for line in run.stdout.splitlines()), measure
