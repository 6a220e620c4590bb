"""``python -m fastroute.bench`` runs and reports everything, and its baseline is honest.

No timing is asserted here: performance lives in the benchmark's own output. What is
checked is that a quick run completes, covers every size and scenario, that every
peer it compared routed the sample as fastroute did, and that the pure-Python trie it
compares against has exactly fastroute's semantics.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastroute
from fastroute import RouteError, Router
from fastroute.bench.peers import PEERS
from fastroute.bench.pytrie import PyTrie
from fastroute.bench.workload import DEFAULT_BACKEND, SCENARIOS, make_workload

QUICK_SIZES = (10, 1000)

RunOutput = tuple[str, dict[str, Any]]


def _bench(args: list[str], cwd: Path, prelude: str = "") -> subprocess.CompletedProcess[str]:
    """Run ``python -m fastroute.bench ARGS`` on the fastroute this test imported."""
    env = dict(os.environ)
    package_parent = str(Path(fastroute.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    code = (
        f"{prelude}\nimport runpy, sys\nsys.argv = ['fastroute.bench', *{args!r}]\n"
        "runpy.run_module('fastroute.bench', run_name='__main__', alter_sys=True)"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=cwd,
        check=False,
    )


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> RunOutput:
    """One ``--quick --json`` run in a subprocess, shared by the tests that read it."""
    out = tmp_path_factory.mktemp("bench") / "results.json"
    done = _bench(["--quick", "--json", str(out)], out.parent)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.stdout, json.loads(out.read_text())


@pytest.mark.e2e
def test_table_mentions_every_scenario_and_section(quick_run: RunOutput) -> None:
    table, _ = quick_run
    for title in SCENARIOS.values():
        assert title in table
    for heading in ("cpu:", "python:", "Match:", "Build:", "Memory:", "Targets:"):
        assert heading in table
    for peer in PEERS:
        assert peer.name in table


@pytest.mark.e2e
def test_json_has_positive_figures_for_every_size_and_scenario(quick_run: RunOutput) -> None:
    _, results = quick_run
    rows = {(row["size"], row["scenario"]): row for row in results["match"]}
    assert set(rows) == {(size, key) for size in QUICK_SIZES for key in SCENARIOS}
    for row in rows.values():
        assert row["overhead_ns"] > 0
        assert row["fastroute_ns"] > 0
        assert row["fastroute_str_ns"] > 0
        assert row["fastroute_wrong"] == 0
    assert [b["size"] for b in results["build"]] == list(QUICK_SIZES)
    assert all(b["fastroute_ms"] > 0 for b in results["build"])
    assert [m["size"] for m in results["memory"]] == list(QUICK_SIZES)
    assert all(m["fastroute_retained_mb"] > 0 for m in results["memory"])
    assert {t["name"] for t in results["targets"]} >= {"prefix_hit_ns", "build_ms", "memory_mb"}


@pytest.mark.e2e
def test_every_installed_peer_agreed_with_fastroute(quick_run: RunOutput) -> None:
    _, results = quick_run
    assert results["problems"] == []
    installed = {p["name"] for p in results["peers"] if p["installed"]}
    assert "pytrie" in installed
    compared: set[str] = set()
    for row in results["match"]:
        for name, cell in row["peers"].items():
            assert cell["status"] not in ("disagrees", "error"), (row["scenario"], name, cell)
            if name not in installed:
                assert cell["status"] in ("not installed", "n/a")
            if cell["status"] == "ok":
                assert cell["checked"] > 0
                assert cell["mismatches"] == 0
                assert cell["value"] > 0
                compared.add(name)
    assert compared == installed  # each installed peer was checked and timed somewhere
    pytrie_cells = [row["peers"]["pytrie"]["status"] for row in results["match"]]
    assert set(pytrie_cells) == {"ok"}


@pytest.mark.e2e
def test_runs_with_no_optional_peer(tmp_path: Path) -> None:
    hide = "import sys\nfor m in ('http_router', 'werkzeug', 'starlette'): sys.modules[m] = None"
    done = _bench(["--sizes", "10", "--repeat", "1"], tmp_path, prelude=hide)
    assert done.returncode == 0, done.stderr
    for name in ("http-router", "werkzeug", "starlette"):
        assert f"{name} (not installed)" in done.stdout
    match_table = done.stdout.split("Build:")[0]
    assert match_table.count("not installed") >= 3 * len(SCENARIOS)


def _both(rules: Sequence[tuple[str, str, str, str]]) -> tuple[Router, PyTrie, PyTrie]:
    router, trie_bytes, trie_str = Router(), PyTrie(keys=bytes), PyTrie(keys=str)
    for rule in rules:
        try:
            router.add(*rule)
        except RouteError:
            continue  # refused by fastroute (malformed or conflicting): pytrie must not get it
        trie_bytes.add(*rule)
        trie_str.add(*rule)
    for matcher in (router, trie_bytes, trie_str):
        matcher.set_default(DEFAULT_BACKEND)
    return router, trie_bytes, trie_str


def test_pytrie_agrees_with_router_on_a_generated_workload() -> None:
    workload = make_workload(2000, seed=7)
    router, trie_bytes, trie_str = _both(workload.rules)
    assert len(router) == len(trie_bytes) == len(workload.rules)
    for scenario in workload.scenarios.values():
        for (hb, pb), (hs, ps), want in zip(
            scenario.bytes_pairs, scenario.str_pairs, scenario.expected, strict=True
        ):
            assert trie_bytes.match(hb, pb) == router.match(hb, pb) == want, (scenario.key, hs, ps)
            assert trie_str.match(hs, ps) == router.match(hs, ps) == want, (scenario.key, hs, ps)


_RULE_HOSTS = ["", "a.example.com", "*.example.com", "*.a.example.com", "b.a.example.com"]
_REQUEST_HOSTS = [
    *_RULE_HOSTS[1:],
    "",
    "A.Example.COM:8080",
    "x.example.com",
    "x.example.com.",
    "y.a.example.com:443",
    "x.y.example.com",
    "example.com",
    "other.org",
    "10.0.0.1",
    "[::1]:8080",
]
_SEGMENTS = ["a", "b", "ab"]


def _path(segments: list[str], slash: bool) -> str:
    path = "/" + "/".join(segments)
    return path + "/" if slash and segments else path


_paths = st.builds(_path, st.lists(st.sampled_from(_SEGMENTS), max_size=3), st.booleans())
_rules = st.lists(
    st.tuples(
        st.sampled_from(_RULE_HOSTS),
        _paths,
        st.sampled_from(["Exact", "Prefix", "ImplementationSpecific"]),
    ),
    max_size=12,
)
_request_paths = st.one_of(_paths, st.sampled_from(["", "*", "/a//b", "/A", "/a/b//"]))
_requests = st.lists(
    st.tuples(st.sampled_from(_REQUEST_HOSTS), _request_paths), min_size=1, max_size=8
)


@settings(max_examples=300, deadline=None)
@given(rules=_rules, requests=_requests)
def test_pytrie_agrees_with_router_on_edge_cases(
    rules: list[tuple[str, str, str]], requests: list[tuple[str, str]]
) -> None:
    numbered = [(host, path, kind, f"b{i}") for i, (host, path, kind) in enumerate(rules)]
    router, trie_bytes, trie_str = _both(numbered)
    for host, path in requests:
        want = router.match(host, path)
        assert trie_str.match(host, path) == want, (host, path)
        assert trie_bytes.match(host.encode(), path.encode()) == want, (host, path)
