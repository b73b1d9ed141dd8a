# -*- test-case-name: tests.test_access -*-
"""
Who may connect, without any I/O: the web origins whose pages are admitted
(L{OriginPolicy}), the shared secret (L{token_matches}), whether a listening
address can be reached from other machines (L{is_exposed}), and how to name
an endpoint in the log without its file paths (L{describe_endpoint}).

A browser sends the page's origin with every WebSocket handshake and a page
cannot forge it; that is what an origin list protects against: a web page
from elsewhere that the participant happens to open.  A program (a Python
script, curl) sends whatever it likes, or no C{Origin} at all; only the
token keeps those out.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from typing import List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

__all__ = [
    "LOCAL_ORIGINS",
    "OriginPolicy",
    "TOKEN_ALPHABET",
    "check_token",
    "describe_endpoint",
    "is_exposed",
    "normalize_origin",
    "split_endpoint",
    "token_matches",
]

#: What C{local} in an origin list stands for: pages served from this
#: machine, on any port and either scheme, and pages opened from disk.
LOCAL_ORIGINS = (
    "http://localhost:*",
    "https://localhost:*",
    "http://127.0.0.1:*",
    "https://127.0.0.1:*",
    "http://[::1]:*",
    "https://[::1]:*",
    "null",
)

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def normalize_origin(origin: str) -> str:
    """
    C{scheme://host:port} in lower case, with the scheme's default port
    filled in (C{http://Localhost} -> C{http://localhost:80}); C{null}
    stays C{null}.

    @raise ValueError: not an origin.
    """
    text = origin.strip()
    if text.lower() == "null":
        return "null"
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if not scheme or not parts.netloc or parts.path not in ("", "/"):
        raise ValueError(f"{origin!r} is not an origin such as http://localhost:8000")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        raise ValueError(f"{origin!r} has a port that is not a number") from None
    if not host:
        raise ValueError(f"{origin!r} names no host")
    if ":" in host:
        host = f"[{host}]"
    port = port if port is not None else _DEFAULT_PORTS.get(scheme)
    return f"{scheme}://{host}" + ("" if port is None else f":{port}")


def _pattern(text: str) -> "re.Pattern[str]":
    """
    A wildcard origin (C{http://localhost:*}, C{https://*.lab.example.org})
    as a regular expression over normalised origins.  A C{*} stands for any
    run of characters other than C{:} and C{/}, so it covers one host label
    sequence or one port, never more; a pattern without a port means the
    scheme's default port.
    """
    text = text.strip()
    scheme, sep, rest = text.partition("://")
    if not sep or not rest:
        raise ValueError(f"{text!r} is not an origin such as http://localhost:*")
    scheme = scheme.lower()
    rest = rest.rstrip("/").lower()
    if rest.startswith("["):
        closing = rest.find("]")
        host, port = rest[: closing + 1], rest[closing + 1 :]
    else:
        host, _, port = rest.rpartition(":") if ":" in rest else (rest, "", "")
        port = f":{port}" if _ else ""
    if not port and "*" not in scheme and scheme in _DEFAULT_PORTS:
        port = f":{_DEFAULT_PORTS[scheme]}"
    if port and port != ":*" and not port[1:].isdigit():
        raise ValueError(f"{text!r}: the port must be a number or *")
    whole = f"{scheme}://{host}{port}"
    return re.compile("".join("[^:/]*" if c == "*" else re.escape(c) for c in whole) + r"\Z")


class OriginPolicy:
    """
    Which pages may connect.  The patterns are origins with optional
    wildcards, C{null} (pages opened from disk), C{local} (L{LOCAL_ORIGINS})
    or C{*} (every page).  A handshake without an C{Origin} header comes
    from a program, not a page, and is admitted: an origin list is no
    protection against programs (see L{token_matches}).

    @raise ValueError: a pattern is not an origin.
    """

    def __init__(self, patterns: Sequence[str]):
        self.patterns: List[str] = [p.strip() for p in patterns if p.strip()]
        if not self.patterns:
            raise ValueError("give at least one origin, local, or *")
        self.admits_every_page = "*" in self.patterns
        expanded: List[str] = []
        for pattern in self.patterns:
            expanded.extend(LOCAL_ORIGINS if pattern.lower() == "local" else [pattern])
        self.admits_null = self.admits_every_page or any(p.lower() == "null" for p in expanded)
        self._matchers = [_pattern(p) for p in expanded if p != "*" and p.lower() != "null"]

    def allows(self, origin: Optional[str]) -> bool:
        """Whether a handshake with this C{Origin} header (None or "": none) is admitted."""
        if not origin or self.admits_every_page:
            return True
        try:
            normal = normalize_origin(origin)
        except ValueError:
            return False
        if normal == "null":
            return self.admits_null
        return any(m.match(normal) for m in self._matchers)

    def admitting(self, origin: str) -> str:
        """The C{--allowed-origins} value that would also admit C{origin}."""
        try:
            shown = normalize_origin(origin)
        except ValueError:
            shown = origin
        scheme, _, rest = shown.partition("://")
        if rest.endswith(f":{_DEFAULT_PORTS.get(scheme)}"):
            shown = f"{scheme}://{rest.rpartition(':')[0]}"
        return ",".join(self.patterns + [shown])


# -- the shared secret

#: Characters a token may use: they need no escaping in a URL.
TOKEN_ALPHABET = "A-Z a-z 0-9 - . _ ~"
_TOKEN = re.compile(r"[A-Za-z0-9._~-]{1,1024}\Z")


def check_token(option: str, token: str) -> str:
    """
    The token, if it is one; else ValueError naming C{option}.  Tokens are
    1 to 1024 characters that a URL carries unchanged (L{TOKEN_ALPHABET}).
    """
    if not _TOKEN.match(token):
        if not token:
            raise ValueError(f"{option}: the token is empty")
        if len(token) > 1024:
            raise ValueError(f"{option}: the token is longer than 1024 characters")
        raise ValueError(
            f"{option}: use only the characters {TOKEN_ALPHABET} (they need no escaping "
            "in the WebSocket URL); for example: "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return token


def token_matches(presented: Optional[str], token: str) -> bool:
    """
    Whether the token a client presented is the server's, compared in
    constant time (the digests have one length whatever was presented).
    """
    if presented is None:
        return False
    given = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
    wanted = hashlib.sha256(token.encode("utf-8")).digest()
    return hmac.compare_digest(given, wanted)


# -- endpoints


def split_endpoint(description: str) -> Tuple[List[str], dict]:
    """
    A Twisted endpoint description split as Twisted does: positional
    arguments (the first is the type) and C{key=value} arguments, with
    C{\\:} and C{\\=} escapes.
    """
    fields: List[str] = []
    current: List[str] = []
    escaped = False
    for c in description:
        if escaped:
            current.append(c)
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == ":":
            fields.append("".join(current))
            current = []
        else:
            current.append(c)
    fields.append("".join(current))
    positional: List[str] = []
    keywords: dict = {}
    for field in fields:
        key, sep, value = field.partition("=")
        if sep and positional:
            keywords[key] = value
        else:
            positional.append(field)
    return positional, keywords


def describe_endpoint(description: str) -> str:
    """
    An endpoint for the log: its type, port (or socket path) and interface,
    without the other parameters (an C{ssl:} endpoint's key and certificate
    paths stay out of the log).
    """
    positional, keywords = split_endpoint(description)
    shown = positional[:2]
    for key in ("interface", "domain", "index", "name"):
        if key in keywords:
            shown.append(f"{key}={keywords[key]}")
    return ":".join(p.replace(":", "\\:") for p in shown)


def _loopback(host: str) -> bool:
    host = host.strip().strip("[]").lower()
    if host in ("localhost", "ip6-localhost", "ip6-loopback") or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_exposed(port: str, host: str) -> bool:
    """
    Whether listening as configured (C{--port}, C{--host}) can be reached
    from other machines: any interface but the loopback one.  A UNIX socket
    is local; an endpoint whose interface the server cannot tell (a socket
    passed by systemd) counts as reachable.
    """
    if port.isdigit():
        return not _loopback(host)
    positional, keywords = split_endpoint(port)
    kind = positional[0].lower()
    if kind == "unix":
        return False
    if kind in ("tcp", "tcp6", "ssl"):
        return not _loopback(keywords.get("interface", ""))
    return True
