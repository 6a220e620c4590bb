"""Running ``python -m controller`` as a user types it, for the command-line tests."""

from __future__ import annotations

import subprocess
import sys


def run_controller(*arguments: str) -> subprocess.CompletedProcess[str]:
    """Run the controller's command line to its end (60 s at most); output captured."""
    return subprocess.run(
        [sys.executable, "-m", "controller", *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
