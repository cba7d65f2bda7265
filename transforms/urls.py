"""URL normalisation: one spelling per URL, so that list entries and dataset rows compare
equal, and the ``url_sha256`` key of a row (read, clean, records and the ``url`` /
``url_sha256`` takedown kinds all use these two functions). ``url_sha256_digests`` is
the same key for a whole Arrow column at once."""
from __future__ import annotations

import hashlib
import operator
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_DEFAULT_PORTS = {"http": 80, "https": 443}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# The usual URL, as the full normalisation below would treat it: http(s), an ASCII host
# without userinfo, at most the default port, a path, maybe a fragment (ASCII-only case
# folding: under full Unicode folding [a-z] would also match the Kelvin sign).
_SIMPLE_URL = re.compile(r"(https?)://([a-z0-9._-]+)(?::(80|443))?(/[^\x00-\x20\x7f#]*)(?:#[^\x00-\x1f\x7f]*)?",
                         re.ASCII | re.IGNORECASE)


def _simple_normal(url: str) -> str | None:
    """``normalize_url`` of a usual URL without urlsplit; None when it is not one."""
    match = _SIMPLE_URL.fullmatch(url)
    if match is None:
        return None
    scheme, host, port, rest = match.groups()
    scheme = scheme.lower()
    if port is not None and _DEFAULT_PORTS[scheme] != int(port):
        return None
    if match.end(4) == len(url) and rest[-1].isspace():
        return None  # strip() would take it off
    if rest[-1] == "?" and rest.count("?") == 1:
        return None  # an empty query: urlunsplit drops the "?"
    return f"{scheme}://{host.lower()}{rest}"


def normalize_url(url: str) -> str:
    """One spelling per URL, so that list entries and dataset rows compare equal.

    Lowercases scheme and host (IDNA-encodes a non-ASCII host), drops the default port
    (80 for http, 443 for https) and the fragment, turns an empty path into "/", and
    keeps userinfo, path and query byte for byte (their case and escaping can matter to
    the server). Raises ValueError for anything that is not an absolute URL with a host.
    """
    if not isinstance(url, str):
        raise ValueError(f"url value must be a string, got {type(url).__name__}")
    simple = _simple_normal(url)
    return simple if simple is not None else _normalize_url_full(url)


def _normalize_url_full(url: str) -> str:
    """normalize_url by urlsplit, for every URL (the definition; see normalize_url)."""
    text = url.strip()
    if not text:
        raise ValueError("url value is empty")
    if _CONTROL.search(text):
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




# A URL that normalize_url returns unchanged: lowercase http(s) scheme, a lowercase ASCII
# host without port or userinfo, a path, no fragment, no control character or blank, no
# whitespace at the end (str.strip's), and not a bare "?" after the path (urlunsplit drops
# an empty query). Most dataset URLs are so; only the others go through normalize_url.
_NORMAL_URL = r"^https?://[a-z0-9._-]+/[^\x00-\x20\x7f#]*[^\x00-\x20\x7f#\x85\pZ]$|^https?://[a-z0-9._-]+/$"


class NotText(TypeError):
    """A URL column that is not text (numbers, bytes, lists...)."""


_DIGEST = operator.methodcaller("digest")


def _arrow_strings(urls: Any) -> pa.Array:
    if isinstance(urls, pa.ChunkedArray):
        urls = urls.combine_chunks()
    elif not isinstance(urls, pa.Array):
        urls = pa.array(urls, pa.string())
    if pa.types.is_large_string(urls.type) or pa.types.is_string_view(urls.type):
        urls = urls.cast(pa.string())
    if not pa.types.is_string(urls.type):
        raise NotText(f"URLs must be strings, not {urls.type}")
    return urls


def already_normal(urls: Any) -> np.ndarray:
    """Per URL (an Arrow string array or a list): True where ``normalize_url`` would
    return it unchanged (known without calling it); False for the rest and for nulls."""
    urls = _arrow_strings(urls)
    normal = pc.fill_null(pc.match_substring_regex(urls, _NORMAL_URL), False).to_numpy(zero_copy_only=False)
    question = np.flatnonzero(normal & pc.fill_null(pc.ends_with(urls, "?"), False).to_numpy(zero_copy_only=False))
    if len(question):  # "...?" with no other "?": an empty query, which urlunsplit drops
        once = pc.equal(pc.count_substring(urls.take(pa.array(question)), "?"), 1).to_numpy(zero_copy_only=False)
        normal[question[once]] = False
    return normal


def url_sha256_digests(urls: Any, normal: np.ndarray | None = None) -> list[bytes | None]:
    """``url_sha256_of`` for a whole column, as raw 32-byte digests (None for null).

    URLs that are normal already (``already_normal``, or ``normal`` when the caller has
    it) are hashed as they are; only the others go through ``normalize_url``.
    """
    urls = _arrow_strings(urls)
    if normal is None:
        normal = already_normal(urls)
    # Every row hashed as it is, from its UTF-8 bytes (no str made), in one map: cheaper
    # than a test per row. The rows not normal (nulls included) are then put right.
    raw = urls.cast(pa.binary())
    if raw.null_count:
        raw = raw.fill_null(b"")
    digests: list[bytes | None] = list(map(_DIGEST, map(hashlib.sha256, raw.to_pylist())))
    valid = urls.is_valid().to_numpy(zero_copy_only=False)
    for i in np.flatnonzero(~valid).tolist():
        digests[i] = None
    rest = np.flatnonzero(~normal & valid)
    if len(rest):
        others = urls.take(pa.array(rest, pa.int64()))
        simple, normals = _simple_normals(others)
        for i, digest in zip(rest[simple].tolist(),
                             map(_DIGEST, map(hashlib.sha256, normals.filter(simple).cast(pa.binary()).to_pylist()))):
            digests[i] = digest
        for i, url in zip(rest[~simple].tolist(), others.filter(pa.array(~simple)).to_pylist()):
            digests[i] = bytes.fromhex(url_sha256_of(url))
    return digests


# _SIMPLE_URL in RE2 for a whole column: explicit ASCII letter classes (RE2's case
# folding would take in the Kelvin sign), for ASCII rows only (then the path cannot end
# in the Unicode whitespace strip() would take off).
_SIMPLE_URL_RE2 = (r"^(?P<scheme>[hH][tT][tT][pP][sS]?)://(?P<host>[A-Za-z0-9._-]+)(?::(?P<port>80|443))?"
                   r"(?P<rest>/[^\x00-\x20\x7f#]*)(?:#[^\x00-\x1f\x7f]*)?$")


def _simple_normals(urls: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """``_simple_normal`` of each URL of a string array without nulls, column-wise: where
    it is a usual URL (True) and its normal form (meaningless elsewhere)."""
    parts = pc.extract_regex(urls, _SIMPLE_URL_RE2)
    scheme, host = pc.ascii_lower(parts.field("scheme")), pc.ascii_lower(parts.field("host"))
    port, rest = parts.field("port"), parts.field("rest")
    default_port = pc.or_(pc.equal(port, ""), pc.or_(pc.and_(pc.equal(scheme, "http"), pc.equal(port, "80")),
                                                    pc.and_(pc.equal(scheme, "https"), pc.equal(port, "443"))))
    empty_query = pc.and_(pc.ends_with(rest, "?"), pc.equal(pc.count_substring(rest, "?"), 1))
    simple = pc.and_(pc.and_(parts.is_valid(), pc.string_is_ascii(urls)), pc.and_(default_port, pc.invert(empty_query)))
    normals = pc.binary_join_element_wise(scheme, "://", host, rest, "")
    return pc.fill_null(simple, False).to_numpy(zero_copy_only=False), normals


__all__ = ["NotText", "already_normal", "normalize_url", "url_sha256_digests", "url_sha256_of"]
