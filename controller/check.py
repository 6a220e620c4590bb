"""``fastroute-controller check``: what a migration from ingress-nginx keeps and what it loses.

For every Ingress, each ``nginx.ingress.kubernetes.io/*`` and ``fastroute.io/*`` annotation
it carries, and for the controller's ConfigMap each key it sets, the report gives the status
from ``fastroute.ingress.catalogue`` and why, plus the problems the builder finds in the
Ingress (a malformed annotation value, a rule it cannot use). Pure: objects in, a report
out; the command line reads the objects and prints the report.

The exit status is for CI: 0 when everything is honoured or accepted and nothing is
rejected, 1 otherwise (see ``Report.exit_code``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastroute.ingress import ClassPolicy, Problem, build_config
from fastroute.ingress.catalogue import (
    ANNOTATION_PREFIXES,
    CONFIGMAP_KEYS,
    Entry,
    annotation_entry,
)
from fastroute.ingress.model import RouteConfig
from fastroute.ingress.objects import annotations_of, kind, mapping, name, namespace, text

__all__ = ["Finding", "IngressReport", "Report", "check", "checked_config", "find_configmap"]

UNKNOWN = "unknown"  # a name under an ingress-nginx prefix that ingress-nginx never had
_ANNOTATION_FIELD = "metadata.annotations["


@dataclass(frozen=True, slots=True)
class Finding:
    """One annotation or ConfigMap key as written, and what fastroute does with it."""

    key: str  # as written, prefix included
    value: str
    status: str  # a catalogue Status, or "unknown"
    note: str
    planned_in: str = ""

    @property
    def fine(self) -> bool:
        return self.status in ("honoured", "accepted")

    @property
    def shown_status(self) -> str:
        return f"{self.status} ({self.planned_in})" if self.planned_in else self.status

    def as_json(self) -> dict[str, str]:
        shown = {"key": self.key, "value": self.value, "status": self.status, "note": self.note}
        if self.planned_in:
            shown["planned_in"] = self.planned_in
        return shown


def _finding(key: str, value: object, entry: Entry | None, unknown: str) -> Finding:
    if entry is None:
        return Finding(key, _shown(value), UNKNOWN, unknown)
    return Finding(key, _shown(value), str(entry.status), entry.note, entry.planned_in)


def _shown(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@dataclass
class IngressReport:
    """One Ingress: its annotations and the builder's problems with it."""

    name: str  # namespace/name
    annotations: list[Finding] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def fine(self) -> bool:
        return all(f.fine for f in self.annotations) and not any(_fails(p) for p in self.problems)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "annotations": [f.as_json() for f in self.annotations],
            "problems": [_problem_json(p) for p in self.problems],
        }


def _problem_json(problem: Problem) -> dict[str, str]:
    return {
        "field": problem.field,
        "reason": problem.reason,
        "severity": "warning" if problem.warning else "rejected",
    }


@dataclass
class Report:
    """The whole migration report."""

    ingresses: list[IngressReport]
    configmap: str | None = None  # namespace/name, when one was checked
    keys: list[Finding] = field(default_factory=list)
    # the ConfigMap's values fastroute rejects (the key keeps its default), and its warnings
    configmap_problems: list[Problem] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0: everything honoured or accepted, nothing rejected; 1: otherwise."""
        fine = all(i.fine for i in self.ingresses) and all(k.fine for k in self.keys)
        fine = fine and not any(not p.warning for p in self.configmap_problems)
        return 0 if fine else 1

    def as_json(self) -> dict[str, Any]:
        return {
            "ingresses": [i.as_json() for i in self.ingresses],
            "configmap": None
            if self.configmap is None
            else {
                "name": self.configmap,
                "keys": [k.as_json() for k in self.keys],
                "problems": [_problem_json(p) for p in self.configmap_problems],
            },
            "exit_code": self.exit_code,
        }

    def table(self) -> str:
        """The report for people: one block per Ingress, then the ConfigMap, then a summary."""
        lines: list[str] = []
        for ingress in self.ingresses:
            lines.append(f"Ingress {ingress.name}")
            if not ingress.annotations and not ingress.problems:
                lines.append("  no ingress-nginx annotations, no problems")
            lines += _rows(ingress.annotations)
            for problem in ingress.problems:
                severity = "warning" if problem.warning else "rejected"
                where = f"{problem.field}: " if problem.field else ""
                lines.append(f"  {severity}: {where}{problem.reason}")
            lines.append("")
        if self.configmap is not None:
            lines.append(f"ConfigMap {self.configmap}")
            if not self.keys:
                lines.append("  no keys set")
            lines += _rows(self.keys)
            for problem in self.configmap_problems:
                severity = "warning" if problem.warning else "rejected"
                lines.append(f"  {severity}: {problem.field}: {problem.reason}")
            lines.append("")
        lines.append(self._summary())
        return "\n".join(lines) + "\n"

    def _summary(self) -> str:
        findings = [f for i in self.ingresses for f in i.annotations] + self.keys
        counts: dict[str, int] = {}
        for finding in findings:
            counts[finding.status] = counts.get(finding.status, 0) + 1
        problems = [p for i in self.ingresses for p in i.problems if not p.warning]
        rejected = sum(1 for p in problems if _fails(p))
        parts = [f"{count} {status}" for status, count in sorted(counts.items())]
        parts.append(f"{rejected} rejected")
        if len(problems) > rejected:
            parts.append(f"{len(problems) - rejected} TLS Secret problems (not counted)")
        verdict = "ok" if self.exit_code == 0 else "not everything carries over"
        count = len(self.ingresses)
        return f"{count} Ingress{'' if count == 1 else 'es'}; {', '.join(parts)}: {verdict}"


def _fails(problem: Problem) -> bool:
    """Whether a problem fails the check. A TLS entry's problems (a Secret missing or not
    valid) depend on Secrets that manifests seldom carry, and ingress-nginx too serves its
    default certificate then: they are listed but do not fail it."""
    return not problem.warning and not problem.field.startswith("spec.tls")


def _rows(findings: list[Finding]) -> list[str]:
    if not findings:
        return []
    cells = [(f"{f.key}: {f.value}", f.shown_status, f.note) for f in findings]
    width = [max(len(c[i]) for c in cells) for i in (0, 1)]
    return [f"  {a:<{width[0]}}  {b:<{width[1]}}  {c}".rstrip() for a, b, c in cells]


def find_configmap(objects: Iterable[Mapping[str, Any]], where: str) -> Mapping[str, Any] | None:
    """The ConfigMap ``namespace/name`` among the objects, if there."""
    for obj in objects:
        if kind(obj) == "ConfigMap" and f"{namespace(obj)}/{name(obj)}" == where:
            return obj
    return None


def check(
    objects: Iterable[Mapping[str, Any]],
    *,
    configmap: Mapping[str, Any] | None = None,
    configmap_name: str | None = None,
    ssl_passthrough: bool = False,
) -> Report:
    """The migration report of the Ingresses among ``objects`` and of ``configmap``.

    Every Ingress is checked, whatever class it names: a cluster checks the Ingresses it
    is about to hand over, which still name ingress-nginx's class.
    """
    objects = list(objects)
    ingresses = [o for o in objects if kind(o) == "Ingress" and name(o)]
    if configmap is not None:
        configmap_name = configmap_name or f"{namespace(configmap)}/{name(configmap)}"
    config = checked_config(objects, configmap, configmap_name, ssl_passthrough=ssl_passthrough)
    reports = [_ingress_report(o, config.problems) for o in ingresses]
    reports.sort(key=lambda r: r.name)
    keys: list[Finding] = []
    if configmap is not None:
        data = mapping(configmap.get("data"))
        unknown = "not an ingress-nginx ConfigMap key: ignored"
        keys = [_finding(k, data[k], CONFIGMAP_KEYS.get(k), unknown) for k in sorted(data)]
        # what reading it said, except that a key is unknown: its status says that
        said = [
            p
            for p in config.problems
            if p.kind == "ConfigMap"
            and not any(p.field == f"data[{k.key}]" and k.status == UNKNOWN for k in keys)
        ]
        return Report(reports, configmap_name, keys, said)
    return Report(reports, configmap_name, keys)


def checked_config(
    objects: Iterable[Mapping[str, Any]],
    configmap: Mapping[str, Any] | None = None,
    configmap_name: str | None = None,
    *,
    ssl_passthrough: bool = False,
) -> RouteConfig:
    """The config of every Ingress among ``objects``, whatever class it names."""
    objects = list(objects)
    ingresses = [o for o in objects if kind(o) == "Ingress" and name(o)]
    classes = {text(mapping(o.get("spec")).get("ingressClassName")) for o in ingresses}
    classes |= {text(annotations_of(o).get("kubernetes.io/ingress.class")) for o in ingresses}
    if configmap is not None:
        configmap_name = configmap_name or f"{namespace(configmap)}/{name(configmap)}"
        if find_configmap(objects, configmap_name) is None:
            objects.append(configmap)
    return build_config(
        objects,
        classes=ClassPolicy(class_names=frozenset(classes - {""}), adopt_classless=True),
        configmap=configmap_name if configmap is not None else None,
        ssl_passthrough=ssl_passthrough,
    )


def _ingress_report(ingress: Mapping[str, Any], problems: Iterable[Problem]) -> IngressReport:
    key = f"{namespace(ingress)}/{name(ingress)}"
    annotations = annotations_of(ingress)
    ours = sorted(k for k in annotations if str(k).startswith(ANNOTATION_PREFIXES))
    unknown = "not an ingress-nginx annotation: ignored"
    findings = [_finding(k, annotations[k], annotation_entry(k), unknown) for k in ours]
    own = [
        p
        for p in problems
        if p.kind == "Ingress" and p.name == key and not _said_by_status(p, ours)
    ]
    return IngressReport(key, findings, own)


def _said_by_status(problem: Problem, annotations: list[str]) -> bool:
    """A warning that an annotation is ignored: its status in the report says it better."""
    if not problem.warning or not problem.field.startswith(_ANNOTATION_FIELD):
        return False
    return problem.field[len(_ANNOTATION_FIELD) : -1] in annotations
