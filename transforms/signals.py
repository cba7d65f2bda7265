"""Takedown signal kinds: one class per kind of value a takedown list can hold.

Each kind says, in one place, how to validate and normalise a list value, which value
of an audit record it is compared with, how two values are compared (exact lookup or a
distance with a default threshold), and, where it makes sense, how to compute it from a
photo for ``laion-audit request``. Adding a kind is adding one class to SIGNAL_TYPES.

Kinds and their value formats:

========== ========= ===================================================================
kind       compare   value
========== ========= ===================================================================
url        exact     normalised absolute URL (see ``normalize_url``)
url_sha256 exact     SHA-256 of the normalised URL, 64 lowercase hex digits
md5        exact     MD5 of the image file bytes, 32 lowercase hex digits
sha256     exact     SHA-256 of the image file bytes, 64 lowercase hex digits
pdq        hamming   PDQ, 64 lowercase hex digits (python-threatexchange format);
                     match when distance <= threshold (default 31 of 256 bits)
phash      hamming   imagehash pHash, 16 lowercase hex digits; default threshold 8 of 64
clip       cosine    image embedding as base64 of little-endian float32, L2-normalised;
                     ``distance`` is the cosine *similarity*, match when it is >= the
                     threshold (default 0.9)
========== ========= ===================================================================

Error messages never echo the value itself: list values are sensitive.
"""
from __future__ import annotations

import abc
import base64
import binascii
import hashlib
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from transforms import hashing

_HEX_DIGITS = re.compile(r"[0-9a-f]*")
_DEFAULT_PORTS = {"http": 80, "https": 443}

# Below this PDQ quality the hash of a flat or featureless photo matches far too much
# (python-threatexchange uses the same cut-off).
PDQ_MIN_QUALITY = 50

PhotoInput = bytes | bytearray | memoryview | str | os.PathLike


# ------------------------------------------------------------------------ hex helpers


def normalize_hex(value: str, digits: int, what: str) -> str:
    """Lowercase hex of exactly ``digits`` digits, or ValueError naming ``what``."""
    if not isinstance(value, str):
        raise ValueError(f"{what} value must be a string of {digits} hex digits, "
                         f"got {type(value).__name__}")
    text = value.strip().lower()
    if len(text) != digits:
        raise ValueError(f"{what} value must be {digits} hex digits, got {len(text)} characters")
    if not _HEX_DIGITS.fullmatch(text):
        raise ValueError(f"{what} value must be {digits} hex digits, found non-hex characters")
    return text


def hamming_hex(a: str, b: str) -> int:
    """Number of differing bits between two equal-length hex strings."""
    if len(a) != len(b):
        raise ValueError(f"cannot compare hashes of different lengths ({len(a)} and {len(b)} hex digits)")
    return (int(a, 16) ^ int(b, 16)).bit_count()


def hex_to_bits_uint8(value: str | Sequence[str]) -> np.ndarray:
    """Hex hash(es) as packed bytes, big-endian: the layout faiss binary indexes take.

    One string gives shape (n_bytes,), a sequence of strings gives (count, n_bytes).
    faiss's Hamming distance on these rows equals ``hamming_hex`` on the strings.
    """
    if isinstance(value, str):
        return np.frombuffer(bytes.fromhex(value), dtype=np.uint8).copy()
    rows = [bytes.fromhex(v) for v in value]
    if not rows:
        return np.zeros((0, 0), dtype=np.uint8)
    if len({len(r) for r in rows}) != 1:
        raise ValueError("all hashes must have the same length")
    return np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), -1).copy()


# ---------------------------------------------------------------------------- URLs


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


# ----------------------------------------------------------------------------- CLIP


def _unit_vector(vec: Sequence[float] | np.ndarray) -> np.ndarray:
    """A finite, non-zero vector of >= 2 dimensions scaled to unit length, float32."""
    arr = np.asarray(vec, dtype=np.float64).reshape(-1)
    if arr.size < 2:
        raise ValueError("clip value must have at least 2 dimensions")
    if not np.all(np.isfinite(arr)):
        raise ValueError("clip value contains NaN or infinite numbers")
    norm = float(np.linalg.norm(arr))
    if norm == 0.0:
        raise ValueError("clip value is the zero vector")
    return (arr / norm).astype(np.float32)


def clip_to_value(vec: Sequence[float] | np.ndarray) -> str:
    """An embedding as a clip list value: L2-normalised float32 little-endian, base64."""
    return base64.b64encode(_unit_vector(vec).astype("<f4").tobytes()).decode("ascii")


def clip_from_value(value: str) -> np.ndarray:
    """A clip list value back to a float32 vector, L2-normalised."""
    if not isinstance(value, str):
        raise ValueError(f"clip value must be a base64 string, got {type(value).__name__}")
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("clip value must be base64 of little-endian float32 numbers") from None
    if len(raw) % 4:
        raise ValueError(f"clip value decodes to {len(raw)} bytes, not a whole number of float32")
    return _unit_vector(np.frombuffer(raw, dtype="<f4"))


def _as_unit_vector(value: str | Sequence[float] | np.ndarray) -> np.ndarray:
    return clip_from_value(value) if isinstance(value, str) else _unit_vector(value)


# ---------------------------------------------------------------------- signal types


def _read_photo(photo: PhotoInput) -> bytes:
    if isinstance(photo, (bytes, bytearray, memoryview)):
        return bytes(photo)
    with open(photo, "rb") as fh:
        return fh.read()


class SignalType(abc.ABC):
    """One kind of takedown value: parse it, find it in a record, compare it, make it."""

    name: ClassVar[str]
    exact: ClassVar[bool]  # True: equality lookup; False: distance + threshold
    default_threshold: ClassVar[float | None] = None
    higher_is_closer: ClassVar[bool] = False  # True for similarities (clip)
    can_hash_photo: ClassVar[bool] = False

    @abc.abstractmethod
    def validate(self, value: str) -> str:
        """The normalised form of a list value; ValueError saying what is wrong."""

    @abc.abstractmethod
    def record_value(self, record: Mapping[str, Any]) -> Any | None:
        """The value of this kind in an audit record, or None when it has none."""

    def distance(self, a: Any, b: Any) -> float:
        """Exact kinds: 0 when equal, infinity otherwise."""
        return 0.0 if a == b else math.inf

    def is_match(self, distance: float, threshold: float | None = None) -> bool:
        """Whether a distance from ``distance`` is a match under ``threshold``."""
        if self.exact:
            return distance == 0
        limit = self.default_threshold if threshold is None else threshold
        return distance >= limit if self.higher_is_closer else distance <= limit

    def matches(self, a: Any, b: Any, threshold: float | None = None) -> bool:
        return self.is_match(self.distance(a, b), threshold)

    def from_photo(self, photo: PhotoInput, max_pixels: int = hashing.DEFAULT_MAX_PIXELS) -> list[str]:
        """Values of this kind for a photo (bytes or a path); what a request submits."""
        raise NotImplementedError(f"kind '{self.name}' cannot be computed from a photo")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class _HexSignal(SignalType):
    digits: ClassVar[int]
    record_key: ClassVar[str]

    def validate(self, value: str) -> str:
        return normalize_hex(value, self.digits, self.name)

    def record_value(self, record: Mapping[str, Any]) -> str | None:
        value = record.get(self.record_key)
        return value or None


class UrlSignal(SignalType):
    """The image URL itself, normalised with ``normalize_url``."""

    name = "url"
    exact = True

    def validate(self, value: str) -> str:
        return normalize_url(value)

    def record_value(self, record: Mapping[str, Any]) -> str | None:
        url = record.get("url")
        if not url:
            return None
        try:
            return normalize_url(url)
        except ValueError:
            return None


class UrlSha256Signal(_HexSignal):
    """SHA-256 of the normalised URL: lets a list name URLs without publishing them."""

    name = "url_sha256"
    exact = True
    digits = 64
    record_key = "url_sha256"


class Md5Signal(_HexSignal):
    """MD5 of the image file's bytes (exact copies only)."""

    name = "md5"
    exact = True
    digits = 32
    record_key = "content_md5"
    can_hash_photo = True

    def from_photo(self, photo: PhotoInput, max_pixels: int = hashing.DEFAULT_MAX_PIXELS) -> list[str]:
        return [hashing.md5_sha256(_read_photo(photo))[0]]


class Sha256Signal(_HexSignal):
    """SHA-256 of the image file's bytes (exact copies only)."""

    name = "sha256"
    exact = True
    digits = 64
    record_key = "content_sha256"
    can_hash_photo = True

    def from_photo(self, photo: PhotoInput, max_pixels: int = hashing.DEFAULT_MAX_PIXELS) -> list[str]:
        return [hashing.md5_sha256(_read_photo(photo))[1]]


def _hashable_image(photo: PhotoInput, max_pixels: int):
    """Decode + downscale exactly as the audit does (raises hashing.ImageError)."""
    decoded = hashing.decode_image(_read_photo(photo), max_pixels)
    return hashing.downscale_for_hashing(decoded.image)


class PdqSignal(_HexSignal):
    """PDQ perceptual hash; Hamming distance <= 31 of 256 bits is a match."""

    name = "pdq"
    exact = False
    digits = 64
    record_key = "pdq"
    default_threshold = 31
    can_hash_photo = True

    def distance(self, a: str, b: str) -> float:
        return float(hamming_hex(a, b))

    def from_photo(self, photo: PhotoInput, max_pixels: int = hashing.DEFAULT_MAX_PIXELS,
                   flips: bool = False, min_quality: int = PDQ_MIN_QUALITY) -> list[str]:
        """The photo's PDQ; with ``flips`` also its rotations and mirror images.

        Raises ValueError when the quality is below ``min_quality``: such a hash
        would match unrelated flat images.
        """
        small = _hashable_image(photo, max_pixels)
        if flips:
            variants = hashing.pdq_dihedral_of(small)
            quality = variants[0][2]
            values = list(dict.fromkeys(hex_ for _, hex_, _ in variants))
        else:
            value, quality = hashing.pdq_of(small)
            values = [value]
        if quality < min_quality:
            raise ValueError(f"PDQ quality {quality} is below {min_quality}: the photo has too "
                             "little detail for a reliable PDQ match")
        return values


class PhashSignal(_HexSignal):
    """imagehash pHash (64-bit DCT hash); Hamming distance <= 8 is a match."""

    name = "phash"
    exact = False
    digits = 16
    record_key = "phash"
    default_threshold = 8
    can_hash_photo = True

    def distance(self, a: str, b: str) -> float:
        return float(hamming_hex(a, b))

    def from_photo(self, photo: PhotoInput, max_pixels: int = hashing.DEFAULT_MAX_PIXELS) -> list[str]:
        return [hashing.phash_of(_hashable_image(photo, max_pixels))]


class ClipSignal(SignalType):
    """An image embedding; cosine similarity >= 0.9 is a match.

    ``distance`` returns the cosine similarity (higher is closer), so a list entry's
    ``max_distance`` for this kind is read as the minimum similarity. Values must come
    from the same embedding model as the audit; vectors of different dimension raise.
    """

    name = "clip"
    exact = False
    default_threshold = 0.9
    higher_is_closer = True

    def validate(self, value: str) -> str:
        return clip_to_value(clip_from_value(value))

    def record_value(self, record: Mapping[str, Any]) -> np.ndarray | None:
        embedding = record.get("_embedding")
        if embedding is None:
            return None
        try:
            return _as_unit_vector(embedding)
        except ValueError:
            return None

    def distance(self, a: str | np.ndarray, b: str | np.ndarray) -> float:
        ua, ub = _as_unit_vector(a), _as_unit_vector(b)
        if ua.shape != ub.shape:
            raise ValueError(f"cannot compare clip vectors of {ua.size} and {ub.size} dimensions")
        return float(np.dot(ua.astype(np.float64), ub.astype(np.float64)))


SIGNAL_TYPES: dict[str, SignalType] = {
    s.name: s
    for s in (
        UrlSignal(),
        UrlSha256Signal(),
        Md5Signal(),
        Sha256Signal(),
        PdqSignal(),
        PhashSignal(),
        ClipSignal(),
    )
}

KINDS = tuple(SIGNAL_TYPES)


class Thresholds(Mapping[str, float]):
    """The match threshold of every distance kind, as one value: the most bits apart for
    Hamming kinds (pdq, phash), the least cosine for clip. Kinds not given keep their
    class default; a list entry's own ``max_distance`` still overrides both.

    Immutable and hashable, so it can be part of a worker's index cache key.
    """

    def __init__(self, values: Mapping[str, float] | None = None, **by_kind: float) -> None:
        given = {**(values or {}), **by_kind}
        unknown = [k for k in given if k not in SIGNAL_TYPES or SIGNAL_TYPES[k].exact]
        if unknown:
            distance_kinds = ", ".join(k for k, s in SIGNAL_TYPES.items() if not s.exact)
            raise ValueError(f"no threshold for kind {unknown[0]!r}; kinds with one: {distance_kinds}")
        self._values = tuple(
            (kind, float(given[kind]) if given.get(kind) is not None else float(sig.default_threshold))
            for kind, sig in SIGNAL_TYPES.items() if not sig.exact
        )

    def __getitem__(self, kind: str) -> float:
        for name, value in self._values:
            if name == kind:
                return value
        raise KeyError(kind)

    def __iter__(self):
        return (name for name, _ in self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __hash__(self) -> int:
        return hash(self._values)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Thresholds) and other._values == self._values

    def replace(self, **by_kind: float | None) -> Thresholds:
        """A copy with the given kinds changed (None leaves a kind as it is)."""
        return Thresholds({**self, **{k: v for k, v in by_kind.items() if v is not None}})

    def to_dict(self) -> dict[str, float]:
        return dict(self._values)

    def __repr__(self) -> str:
        return f"Thresholds({self.to_dict()})"


def signal_type(kind: str) -> SignalType:
    """The SignalType for a kind name (case and surrounding blanks ignored).

    ValueError listing the known kinds otherwise.
    """
    key = kind.strip().lower() if isinstance(kind, str) else kind
    try:
        return SIGNAL_TYPES[key]
    except (KeyError, TypeError):
        raise ValueError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}") from None


__all__ = [
    "KINDS",
    "PDQ_MIN_QUALITY",
    "SIGNAL_TYPES",
    "ClipSignal",
    "Md5Signal",
    "PdqSignal",
    "PhashSignal",
    "Sha256Signal",
    "SignalType",
    "Thresholds",
    "UrlSha256Signal",
    "UrlSignal",
    "clip_from_value",
    "clip_to_value",
    "hamming_hex",
    "hex_to_bits_uint8",
    "normalize_hex",
    "normalize_url",
    "signal_type",
    "url_sha256_of",
]
