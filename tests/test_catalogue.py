"""The catalogue of ingress-nginx names: what the README says, and what the parsers read.

A user reads the README's table (and ``check``'s report, made from the same catalogue) to
decide whether a migration keeps their behaviour, so the table must be the catalogue, and
"honoured" must mean that a parser reads the name. ``python tests/test_catalogue.py``
rewrites the README's tables from the catalogue.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from fastroute.ingress import annotations as annotation_parser
from fastroute.ingress import settings as settings_module
from fastroute.ingress.catalogue import (
    ANNOTATION_PREFIXES,
    ANNOTATIONS,
    CONFIGMAP_KEYS,
    Entry,
    Status,
    annotation_entry,
    honoured,
)
from fastroute.ingress.configmap import HEADER_KEYS, KEYS

README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN, END = "<!-- catalogue:begin -->\n", "<!-- catalogue:end -->\n"
PARSER_TABLE = getattr(annotation_parser, "ANNOTATIONS", None)


def _table(title: str, entries: Mapping[str, Entry]) -> str:
    rows = [f"### {title}\n", "\n", "| name | status | notes |\n", "| --- | --- | --- |\n"]
    for name in sorted(entries):
        entry = entries[name]
        note = entry.note.replace("|", "\\|")
        rows.append(f"| `{name}` | {entry.shown_status} | {note} |\n")
    return "".join(rows)


def catalogue_markdown() -> str:
    """The README's tables, as the catalogue says."""
    counts = {
        title: ", ".join(f"{sum(e.status is s for e in table.values())} {s}" for s in Status)
        for title, table in (("annotations", ANNOTATIONS), ("keys", CONFIGMAP_KEYS))
    }
    return (
        _table("Annotations", ANNOTATIONS)
        + f"\n{len(ANNOTATIONS)} annotations: {counts['annotations']}.\n\n"
        + _table("ConfigMap keys", CONFIGMAP_KEYS)
        + f"\n{len(CONFIGMAP_KEYS)} keys: {counts['keys']}.\n"
    )


def _readme_tables(text: str) -> str:
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[start:end]


def test_the_readme_tables_are_the_catalogue() -> None:
    assert _readme_tables(README.read_text()) == catalogue_markdown(), (
        "the README's ingress-nginx tables differ from fastroute/ingress/catalogue.py: "
        "run `python tests/test_catalogue.py` to rewrite them"
    )


def test_every_readme_row_names_a_catalogued_name_once() -> None:
    tables = _readme_tables(README.read_text())
    names = re.findall(r"^\| `([a-z0-9-]+)` \|", tables, flags=re.MULTILINE)
    assert len(names) == len(ANNOTATIONS) + len(CONFIGMAP_KEYS)
    assert set(names) == set(ANNOTATIONS) | set(CONFIGMAP_KEYS)


def test_the_honoured_configmap_keys_are_the_settings_fields() -> None:
    fields = {f.name.replace("_", "-") for f in dataclasses.fields(settings_module.Settings)}
    assert honoured(CONFIGMAP_KEYS) == fields


@pytest.mark.skipif(
    PARSER_TABLE is None,
    reason="fastroute.ingress.annotations has no ANNOTATIONS table yet (the annotation "
    "parser's branch brings it)",
)
def test_the_honoured_annotations_are_the_parser_table() -> None:
    assert PARSER_TABLE is not None
    parsed: set[str] = set()
    no_ops: set[str] = set()
    for key, entry in PARSER_TABLE.items():
        for prefix in ANNOTATION_PREFIXES:
            key = key.removeprefix(prefix)
        (no_ops if entry.no_op else parsed).add(key)
    assert honoured(ANNOTATIONS) == parsed
    # what the parser validates and drops is what the catalogue calls accepted
    assert all(ANNOTATIONS[name].status == "accepted" for name in no_ops)


def test_the_honoured_configmap_keys_are_the_settings_parser_table() -> None:
    assert honoured(CONFIGMAP_KEYS) == set(KEYS) | set(HEADER_KEYS)


def test_what_is_not_honoured_says_why() -> None:
    for table in (ANNOTATIONS, CONFIGMAP_KEYS):
        for name, entry in table.items():
            assert entry.name == name
            assert entry.note.strip(), name
            assert (entry.status is Status.PLANNED) == bool(entry.planned_in), name


@pytest.mark.parametrize(
    ("name", "status", "planned_in"),
    [
        ("proxy-body-size", Status.HONOURED, ""),
        ("proxy-buffering", Status.ACCEPTED, ""),
        ("configuration-snippet", Status.UNSUPPORTED, ""),
        ("canary-weight", Status.HONOURED, ""),
        ("ssl-passthrough", Status.HONOURED, ""),
        ("auth-url", Status.HONOURED, ""),
        ("satisfy", Status.HONOURED, ""),
        ("auth-tls-secret", Status.HONOURED, ""),
    ],
)
def test_an_annotation_has_its_status_under_both_prefixes(
    name: str, status: Status, planned_in: str
) -> None:
    for prefix in ANNOTATION_PREFIXES:
        entry = annotation_entry(prefix + name)
        assert entry is not None
        assert (entry.status, entry.planned_in) == (status, planned_in)


def test_names_outside_the_prefixes_or_unknown_to_ingress_nginx_have_no_entry() -> None:
    assert annotation_entry("kubernetes.io/ingress.class") is None
    assert annotation_entry("nginx.ingress.kubernetes.io/no-such-annotation") is None
    assert annotation_entry("proxy-body-size") is None


def test_every_snippet_is_unsupported_and_names_a_typed_replacement() -> None:
    snippets = [n for n in [*ANNOTATIONS, *CONFIGMAP_KEYS] if n.endswith("snippet")]
    assert len(snippets) >= 10
    for name in snippets:
        entry = ANNOTATIONS.get(name) or CONFIGMAP_KEYS[name]
        assert entry.status is Status.UNSUPPORTED
        assert "never executed" in entry.note
        assert "use " in entry.note


def _rewrite_readme() -> None:
    text = README.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    README.write_text(text[:start] + catalogue_markdown() + text[end:])


if __name__ == "__main__":
    _rewrite_readme()
    sys.exit(0)
