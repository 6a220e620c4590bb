"""What the figures were measured on, printed above them: they mean little without it."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

__all__ = ["machine_info"]


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Hardware", "Processor", "cpu model"):
            return value.strip()
    return platform.processor() or "unknown"


def machine_info() -> dict[str, str]:
    """CPU, Python and fastroute build, as short strings."""
    import fastroute
    from fastroute import _match

    return {
        "cpu": _cpu_model(),
        "cpus": str(os.cpu_count() or "?"),
        "os": platform.platform(terse=True),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "python_build": " ".join(sys.version.split()[1:]),
        "fastroute": fastroute.__version__,
        "fastroute_module": str(getattr(_match, "__file__", "?")),
    }
