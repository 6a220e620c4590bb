"""``ssl-passthrough``: which hosts relay TLS undecrypted, and to which backend.

ingress-nginx's rules, followed here:

- The controller must run with ``--enable-ssl-passthrough``; without it the annotation
  is ignored (fastroute says so, with a warning on the Ingress).
- Passthrough belongs to a *host*: once any Ingress with rules on the host asks for it,
  every TLS connection whose SNI names the host is relayed, whichever Ingress's rules.
- Its connections go to the backend of the host's ``/`` rule (an explicit ``/`` path, or
  the implicit one an Ingress's ``defaultBackend`` gives its hosts). A host without one
  is not passed through (warning). Its other paths are never reached over HTTPS: the
  proxy sees no request there, only bytes (warning per rule). Plain HTTP to the host is
  served by its rules as before.
- No other annotation applies to a passthrough connection: there is no request to apply
  it to.

Where fastroute goes further: a wildcard host (``*.example.com``) may be passed through;
an exact host with its own rules that it covers stays terminated, as an exact host wins
over a wildcard for routing and certificates. ingress-nginx compares the SNI with its
hosts as strings, so a wildcard never matched there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from fastroute import Router
from fastroute.ingress.model import Problem, Target
from fastroute.ingress.spec import IngressSpec

__all__ = ["FLAG", "passthrough_map", "passthrough_target"]

FLAG = "--enable-ssl-passthrough"
_WHERE = "metadata.annotations"


def passthrough_target(
    host: str,
    specs: Sequence[IngressSpec],
    router: Router,
    enabled: bool,
    problems: list[Problem],
) -> Target | None:
    """The Target a passthrough ``host`` relays to, or None; problems are appended.

    Args:
        host: a host as the router keys it ("" for rules without a host).
        specs: the Ingresses with rules on ``host``.
        router: the router with ``host``'s rules already in it.
        enabled: the controller runs with ``--enable-ssl-passthrough``.
        problems: where the reasons a request for passthrough is not (fully) met go.
    """
    asking = sorted((s for s in specs if s.policy.ssl_passthrough), key=lambda s: s.order)
    if not asking:
        return None
    if not enabled:
        for spec in asking:
            reason = f"ssl-passthrough ignored: the controller runs without {FLAG}"
            _add(problems, Problem("Ingress", spec.key, _WHERE, reason, warning=True))
        return None
    if not host:
        for spec in asking:
            reason = "ssl-passthrough needs a host: the rules without one are terminated"
            _add(problems, Problem("Ingress", spec.key, _WHERE, reason, warning=True))
        return None
    found = router.explain(host, "/")
    winner = found.winner
    if found.rule_host != host or winner is None or winner.path != "/":
        reason = (
            f"ssl-passthrough ignored on host {host!r}: it has no rule for path '/', "
            "whose backend passthrough connections go to"
        )
        for spec in asking:
            _add(problems, Problem("Ingress", spec.key, _WHERE, reason, warning=True))
        return None
    for spec in specs:
        for rule in spec.rules:
            if rule.bucket == host and rule.path != "/":
                reason = (
                    f"not reached over HTTPS: host {host!r} is SSL passthrough, whose "
                    "connections all go to the backend of its '/' rule"
                )
                _add(problems, Problem("Ingress", spec.key, rule.where, reason, warning=True))
    target: Target = winner.backend
    return target


def passthrough_map(
    targets: Mapping[str, Target], hosts_under: Mapping[str, Iterable[str]]
) -> dict[str, Target | None]:
    """``RouteConfig.passthrough``: the passthrough hosts, and None for every exact host
    that a passthrough wildcard covers but that is not passed through itself.

    Args:
        targets: passthrough host -> its Target.
        hosts_under: parent domain ("b.com") -> the exact hosts with rules under it.
    """
    found: dict[str, Target | None] = dict(targets)
    for host in targets:
        if host.startswith("*."):
            for covered in hosts_under.get(host[2:], ()):
                found.setdefault(covered, None)
    return found


def _add(problems: list[Problem], problem: Problem) -> None:
    if problem not in problems:
        problems.append(problem)
