"""Running wrk and reading its report.

wrk prints a human report, not JSON, so the parser reads the lines it needs and fails
loudly when one is missing: a misread report must not become a figure in a table.
Errors are counted as wrk counts them: "Non-2xx or 3xx responses" is every status of
400 or more, and socket errors are connect, read, write and timeout (a request older
than wrk's 2 s timeout) added up.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.proxy_peers import Processes, find_tool

__all__ = ["WrkResult", "finish_wrk", "parse_wrk", "rotation_script", "run_wrk", "start_wrk"]

# wrk's format_time: "us", "ms", "s", and for very long runs "m" and "h"
_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_TIME = r"([\d.]+)(us|ms|s|m|h)\b"


@dataclass(frozen=True)
class WrkResult:
    """One wrk run, as its report states it."""

    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int  # wrk's "Non-2xx or 3xx responses": statuses >= 400
    socket_errors: int  # connect + read + write + timeout

    @property
    def failed(self) -> int:
        """Requests that did not get a good answer, as far as wrk can tell."""
        return self.non_2xx + self.socket_errors


def _ms(number: str, unit: str) -> float:
    return float(number) * _TIME_UNITS[unit]


def _required(pattern: str, output: str, what: str) -> re.Match[str]:
    found = re.search(pattern, output, re.MULTILINE)
    if found is None:
        raise ValueError(f"wrk output has no {what} line:\n{output}")
    return found


def parse_wrk(output: str) -> WrkResult:
    """The figures of a ``wrk --latency`` report; ValueError if one is missing."""
    total = _required(r"^\s*(\d+) requests in " + _TIME, output, "'N requests in T'")
    rps = _required(r"^Requests/sec:\s+([\d.]+)", output, "Requests/sec")
    p50 = _required(r"^\s*50%\s+" + _TIME, output, "50% latency (was --latency given?)")
    p99 = _required(r"^\s*99%\s+" + _TIME, output, "99% latency (was --latency given?)")
    non_2xx = re.search(r"^\s*Non-2xx or 3xx responses:\s+(\d+)", output, re.MULTILINE)
    sockets = re.search(
        r"^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
        output,
        re.MULTILINE,
    )
    return WrkResult(
        requests=int(total[1]),
        seconds=_ms(total[2], total[3]) / 1e3,
        rps=float(rps[1]),
        p50_ms=_ms(p50[1], p50[2]),
        p99_ms=_ms(p99[1], p99[2]),
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=sum(int(n) for n in sockets.groups()) if sockets else 0,
    )


def rotation_script(path: Path, targets: Sequence[tuple[str, str]]) -> Path:
    """Write a wrk Lua script sending GET to each (host, path) in turn; return its path.

    The requests are formatted once in ``init``, so each request costs wrk one table
    lookup, not a ``wrk.format`` call: the client stays cheap next to the proxies.
    """
    probes = ",\n".join(f"    {{{_lua(host)}, {_lua(target)}}}" for host, target in targets)
    path.write_text(
        "local requests = {}\n"
        "local n = 0\n"
        "init = function(args)\n"
        f"  local probes = {{\n{probes}\n  }}\n"
        "  for i, p in ipairs(probes) do\n"
        '    requests[i] = wrk.format("GET", p[2], { Host = p[1] })\n'
        "  end\n"
        "end\n"
        "request = function()\n"
        "  n = n % #requests + 1\n"
        "  return requests[n]\n"
        "end\n"
    )
    return path


def _lua(text: str) -> str:
    if not re.fullmatch(r"[\w./?=&%:-]*", text):
        raise ValueError(f"not a plain host or path: {text!r}")
    return f'"{text}"'


def start_wrk(
    processes: Processes,
    port: int,
    *,
    host: str,
    connections: int,
    seconds: int,
    script: Path | None = None,
) -> subprocess.Popen[str]:
    """Start ``wrk -t1 -cC -dTs --latency -H 'Host: HOST' [-s SCRIPT]`` on 127.0.0.1:PORT.

    wrk runs as a tracked process, so that Ctrl-C or a failure stops it too.
    """
    command = [find_tool("wrk") or "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    command += ["-H", f"Host: {host}"]
    if script is not None:
        command += ["-s", str(script)]
    command.append(f"http://127.0.0.1:{port}/")
    return processes.start("wrk", command, stdout=subprocess.PIPE)


def finish_wrk(processes: Processes, process: subprocess.Popen[str], seconds: int) -> WrkResult:
    """Wait for a wrk started for ``seconds`` (with a margin) and parse its report."""
    try:
        output, _ = process.communicate(timeout=seconds + 30)
    finally:
        processes.stop(process)
    if process.returncode != 0:
        raise RuntimeError(f"wrk exited with {process.returncode}:\n{output}")
    return parse_wrk(output)


def run_wrk(
    processes: Processes,
    port: int,
    *,
    host: str,
    connections: int,
    seconds: int,
    script: Path | None = None,
) -> WrkResult:
    """One wrk run from start to report (see ``start_wrk``)."""
    process = start_wrk(
        processes, port, host=host, connections=connections, seconds=seconds, script=script
    )
    return finish_wrk(processes, process, seconds)
