"""Host allow-lists: does a host name match a list of `example.com` / `*.example.com` patterns."""

from __future__ import annotations

from urllib.parse import urlsplit


def host_allowed(host: str | None, allowed: tuple[str, ...]) -> bool:
    """True if `host` matches the allow-list (an empty list allows everything).

    A pattern is an exact host name, or `*.example.com` for any subdomain of example.com (not
    example.com itself). Case-insensitive, a trailing dot ignored; ports are not part of the match.
    """
    if not allowed:
        return True
    if not host:
        return False
    host = host.lower().rstrip(".")
    for pattern in allowed:
        pattern = pattern.lower().rstrip(".")
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]):
                return True
        elif host == pattern:
            return True
    return False


def url_host(url: str) -> str | None:
    """The host name of `url`, or None when it has none or does not parse."""
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None
