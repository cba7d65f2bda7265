"""URL normalisation: one spelling per URL, so that list entries and dataset rows compare
equal, and the ``url_sha256`` key of a row (read, clean, records and the ``url`` /
``url_sha256`` takedown kinds all use these two functions)."""
from __future__ import annotations

import hashlib
from urllib.parse import urlsplit, urlunsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_url(url: str) -> str:
    """One spelling per URL, so that list entries and dataset rows compare equal.

    Lowercases scheme and host (IDNA-encodes a non-ASCII host), drops the default port
    (80 for http, 443 for https) and the fragment, turns an empty path into "/", and
    keeps userinfo, path and query byte for byte (their case and escaping can matter to
    the server). Raises ValueError for anything that is not an absolute URL with a host.
    """
    if not isinstance(url, str):
        raise ValueError(f"url value must be a string, got {type(url).__name__}")
    text = url.strip()
    if not text:
        raise ValueError("url value is empty")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        raise ValueError("url value contains control characters")
    try:
        parts = urlsplit(text)
        port = parts.port  # raises ValueError for a non-numeric or out-of-range port
    except ValueError as err:
        raise ValueError(f"url value is malformed ({err})") from None
    scheme = parts.scheme.lower()
    if not scheme or not parts.netloc:
        raise ValueError("url value must be an absolute URL with a scheme and a host")
    host = parts.hostname or ""
    if not host:
        raise ValueError("url value has no host")
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    else:
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            host = host.lower()  # not IDNA-encodable; still one spelling per host
    userinfo, _, _ = parts.netloc.rpartition("@")
    netloc = f"{userinfo}@{host}" if userinfo else host
    if port is not None and _DEFAULT_PORTS.get(scheme) != port:
        netloc = f"{netloc}:{port}"
    path = parts.path or "/"
    return urlunsplit((scheme, netloc, path, parts.query, ""))


def url_sha256_of(url: str | None) -> str | None:
    """SHA-256 (hex) of the normalised URL: the ``url_sha256`` audit column.

    A URL that cannot be normalised is hashed as given (stripped), so every row with a
    URL still gets a stable key; None stays None.
    """
    if url is None:
        return None
    try:
        key = normalize_url(url)
    except ValueError:
        key = str(url).strip()
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


__all__ = ["normalize_url", "url_sha256_of"]
