"""What a regex route's captures change in a forwarded request besides its path."""

from __future__ import annotations

from fastroute.ingress.regex import Groups, expand

__all__ = ["with_prefix_captures"]


def with_prefix_captures(lines: bytes, template: str, groups: Groups | None) -> bytes:
    """A route's upstream header lines with ``X-Forwarded-Prefix``'s ``$1``..``$9``
    replaced by the captures, empty without a regex match (ingress-nginx sets the header
    from the rewrite's match)."""
    written = b"X-Forwarded-Prefix: " + template.encode("latin-1") + b"\r\n"
    if b"$" not in written:
        return lines
    return lines.replace(
        written, b"X-Forwarded-Prefix: " + expand(written[20:-2], groups) + b"\r\n"
    )
