"""The README's Router example runs, and every ``match`` line returns what its comment says."""

from __future__ import annotations

import ast
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def _router_example() -> str:
    blocks: list[str] = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    examples = [block for block in blocks if "router.match(" in block]
    assert len(examples) == 1, "expected one Router example with match() calls in the README"
    return examples[0]


def test_readme_match_comments_are_what_match_returns() -> None:
    source = _router_example()
    namespace: dict[str, object] = {}
    exec(compile(source, str(README), "exec"), namespace)
    checked = 0
    for line in source.splitlines():
        call, _, comment = line.partition("  # ")
        if not call.startswith("router.match("):
            continue
        expected = ast.literal_eval(comment.split()[0])
        assert eval(call, namespace) == expected, line
        checked += 1
    assert checked >= 5
