"""Takedown kinds: one class per kind of value a takedown list can hold.

As in python-threatexchange's ``signal_type/``, each kind says in one place

* how to validate and normalise a list value (``validate``, ``check_max_distance``);
* which audit columns hold its value and how to read them for a whole batch
  (``columns``, ``rows``; ``record_value`` for one record), with its fallbacks and
  quality gate; ``rows`` is given lists, or Arrow columns as they come where the class
  says ``arrow_rows`` (a class that writes its own ``rows`` must say it again);
* how two values compare (``distance``, ``is_match``);
* which index serves it: ``build(values, thresholds)`` gives an index whose
  ``query(kind.rows(columns, n))`` returns (batch row, entry, distance) arrays
  (``transforms.takedown.search``);
* where it makes sense, how to compute it from a photo: ``photo_values``, which
  ``laion-audit request`` calls (``from_photo`` wraps it for one photo file).

Adding a kind is adding one class and registering it (``register_kind``): list files may
then name it, ``TakedownIndex`` matches it and ``Thresholds`` gives it a threshold. The
abstract class a kind implements, ``Kind``, is in ``transforms.takedown.kind_base``.

========== ========= ======================= ==========================================
kind       compare   row columns             value
========== ========= ======================= ==========================================
url        exact     url (else url_sha256)   normalised absolute URL (``transforms.urls``)
url_sha256 exact     url_sha256 (else url)   SHA-256 of the normalised URL, 64 hex digits
md5        exact     content_md5             MD5 of the image file bytes, 32 hex digits
sha256     exact     content_sha256          SHA-256 of the image file bytes, 64 hex digits
pdq        hamming   pdq, pdq_quality        PDQ, 64 lowercase hex digits (python-threatexchange
                                             format: the 256 bits as one big-endian number)
phash      hamming   phash                   imagehash pHash, 16 lowercase hex digits
clip       cosine    _embedding              image embedding, base64 of little-endian float32,
                                             L2-normalised
========== ========= ======================= ==========================================

Distances and thresholds (defined here, and only here). A distance is smaller-is-closer
for every kind and is what ``matches.distance`` holds: 0 for exact kinds, the number of
differing bits for pdq / phash, ``1 - cosine`` for clip. A threshold (a kind's value in
``Thresholds``, from the config keys ``takedown.pdq_max_distance``,
``phash_max_distance`` and ``clip_min_cosine``, or a list entry's own ``max_distance``)
is the most bits apart for pdq (default 31 of 256) and phash (8 of 64), but for clip the
*minimum cosine* (default 0.9): a clip entry matches when cosine >= threshold, that is
when its distance <= 1 - threshold. A value exactly at its threshold matches.

PDQ quality: a flat or featureless photo's PDQ matches unrelated flat images. A pdq
entry whose ``quality`` is below 50 is kept and flagged (``TakedownEntry.low_quality``),
and neither it nor a row whose ``pdq_quality`` is below 50 takes part in matching
(python-threatexchange uses the same cut-off): ``PdqKind.low_quality`` is that one gate.

Error messages never echo the value itself: list values are sensitive.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from transforms import hashing
from transforms.takedown.hamming import HammingSearch
from transforms.takedown.kind_base import Columns, Kind
from transforms.takedown.photos import Photo, PhotoInput, PhotoValue, read_photo
from transforms.takedown.search import (
    COSINE_TOLERANCE,
    BadEntryValue,
    CosineSearch,
    ExactSet,
    HexExactSet,
    RowValues,
    cosine_distance,
)
from transforms.takedown.values import (
    as_unit_vector,
    clip_from_value,
    clip_to_value,
    hamming_hex,
    hex_codes,
    normalize_hex,
    parse_hex_column,
    unit_rows,
)
from transforms.urls import NotText, already_normal, normalize_url, url_sha256_of

# Below this PDQ quality the hash of a flat or featureless photo matches far too much
# (python-threatexchange uses the same cut-off).
PDQ_MIN_QUALITY = 50


# ------------------------------------------------------------------------------ kinds


def _entry_codes(kind: HexExactKind | HammingKind, values: Sequence[str], **hex_options: bool) -> np.ndarray:
    """A hex kind's list values (strings) as packed codes, read as ``hex_codes`` reads
    them; BadEntryValue at the first that is not a hash of the kind's digits."""
    positions, codes = hex_codes(list(values), kind.digits // 2, **hex_options)
    if len(positions) != len(values):
        bad = int(np.setdiff1d(np.arange(len(values)), positions)[0])
        raise BadEntryValue(bad, f"{kind.name} value is not {kind.digits} hex digits")
    return codes


class HexExactKind(Kind):
    """An exact kind whose value is a hex digest, looked up as its bytes (packed codes,
    ``HexExactSet``): a row's digest stripped, in either case, as list values are."""

    digits: ClassVar[int]
    arrow_rows = True  # hex_codes decodes an Arrow column in bulk

    def validate(self, value: str) -> str:
        return normalize_hex(value, self.digits, self.name)

    def parse_values(self, values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        return parse_hex_column(values, self.digits)

    def record_value(self, record: Mapping[str, Any]) -> str | None:
        return record.get(self.columns[0]) or None

    def _column(self, columns: Columns) -> Sequence[Any] | None:
        return columns.get(self.columns[0])

    def rows(self, columns: Columns, n: int) -> RowValues:
        column = self._column(columns)
        if column is None:
            return RowValues(np.zeros(0, dtype=np.int64), np.zeros((0, self.digits // 2), dtype=np.uint8))
        return RowValues(*hex_codes(column, self.digits // 2, exact=True, strip=True))

    def build(self, values: Sequence[str] | np.ndarray, thresholds: np.ndarray, **options: Any) -> HexExactSet:
        if isinstance(values, np.ndarray):  # packed codes from a list file
            return HexExactSet.build(values)
        return HexExactSet.build(_entry_codes(self, values, exact=True, strip=True))


class UrlKind(Kind):
    """The image URL itself, normalised with ``normalize_url``. A row without a URL is
    looked up by its ``url_sha256``."""

    name = "url"
    columns = ("url", "url_sha256")

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

    def rows(self, columns: Columns, n: int) -> RowValues:
        urls, shas = columns.get("url"), columns.get("url_sha256")
        keys: list[str | None] = [None] * n
        rest: Sequence[int] = range(n)
        if urls is not None:
            try:  # URLs normalize_url leaves as they are, found column-wise (most of them)
                normal = already_normal(urls)
            except (NotText, pa.ArrowException):  # not all text: each row on its own
                normal = None
            if normal is not None:
                keys = [url if ok else None for url, ok in zip(urls, normal.tolist())]
                rest = np.flatnonzero(~normal).tolist()
        for i in rest:
            url = urls[i] if urls is not None else None
            if isinstance(url, str) and url:
                try:
                    keys[i] = normalize_url(url)
                except ValueError:
                    pass
            elif shas is not None and isinstance(shas[i], str):
                keys[i] = shas[i].strip().lower()
        return RowValues(None, keys)

    def build(self, values: Sequence[str], thresholds: np.ndarray, **options: Any) -> ExactSet:
        keys = []
        for i, value in enumerate(values):
            try:
                url = normalize_url(value)
            except ValueError:
                raise BadEntryValue(i, "url value is not a valid URL") from None
            keys.append((url, url_sha256_of(url)))  # a row known by its url_sha256 only
        return ExactSet.build(keys)


class UrlSha256Kind(HexExactKind):
    """SHA-256 of the normalised URL: lets a list name URLs without publishing them.
    Rows without a ``url_sha256`` column are hashed from their ``url``."""

    name = "url_sha256"
    digits = 64
    columns = ("url_sha256", "url")

    def _column(self, columns: Columns) -> Sequence[Any] | None:
        column = columns.get("url_sha256")
        urls = columns.get("url")
        if column is None and urls is not None:
            if isinstance(urls, (pa.Array, pa.ChunkedArray)):
                urls = urls.to_pylist()
            column = [url_sha256_of(u) if isinstance(u, str) and u else None for u in urls]
        return column


class FileDigestKind(HexExactKind):
    """A digest of the image file's bytes, named as hashlib names it (exact copies only)."""

    can_hash_photo = True

    def photo_values(self, photo: Photo) -> list[PhotoValue]:
        return [PhotoValue(photo.digest(self.name))]


class Md5Kind(FileDigestKind):
    name = "md5"
    digits = 32
    columns = ("content_md5",)


class Sha256Kind(FileDigestKind):
    name = "sha256"
    digits = 64
    columns = ("content_sha256",)


class HammingKind(Kind):
    """A perceptual hash in hex, compared by Hamming distance (``HammingSearch``).

    ``build`` takes the option ``hamming_strategy`` ("auto", "flat", "mih")."""

    exact = False
    arrow_rows = True  # hex_codes decodes an Arrow column in bulk
    digits: ClassVar[int]

    @property
    def bits(self) -> int:
        return self.digits * 4

    def validate(self, value: str) -> str:
        return normalize_hex(value, self.digits, self.name)

    def parse_values(self, values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        return parse_hex_column(values, self.digits)

    def check_max_distance(self, number: float) -> float | None:
        if not 0 <= number <= self.bits:
            raise ValueError(f"max_distance for {self.name} must be 0..{self.bits} bits, got {number:g}")
        return number

    def record_value(self, record: Mapping[str, Any]) -> str | None:
        return record.get(self.columns[0]) or None

    def distance(self, a: str, b: str) -> float:
        return float(hamming_hex(a, b))

    def rows(self, columns: Columns, n: int) -> RowValues:
        column = columns.get(self.columns[0])
        if column is None:
            return RowValues(np.zeros(0, dtype=np.int64), np.zeros((0, self.digits // 2), dtype=np.uint8))
        return RowValues(*hex_codes(column, self.digits // 2))

    def build(self, values: Sequence[str] | np.ndarray, thresholds: np.ndarray, **options: Any) -> HammingSearch:
        if isinstance(values, np.ndarray):  # packed codes from a list file
            return HammingSearch.build(values, thresholds, **options)
        return HammingSearch.build(_entry_codes(self, values), thresholds, **options)


class PdqKind(HammingKind):
    """PDQ perceptual hash; Hamming distance <= 31 of 256 bits is a match. Entries and
    rows of PDQ quality under 50 take no part (``low_quality``)."""

    name = "pdq"
    digits = 64
    columns = ("pdq", "pdq_quality")
    arrow_rows = True  # its rows: HammingKind's, and the quality as numbers
    default_threshold = 31
    can_hash_photo = True
    min_quality: ClassVar[int] = PDQ_MIN_QUALITY

    def low_quality(self, quality: Any) -> np.ndarray:
        return np.asarray(quality, dtype=np.float64) < self.min_quality

    def record_value(self, record: Mapping[str, Any]) -> str | None:
        value = record.get("pdq") or None
        if value is not None and self.low_quality(record.get("pdq_quality")):
            return None
        return value

    def rows(self, columns: Columns, n: int) -> RowValues:
        positions, codes = super().rows(columns, n)
        quality = columns.get("pdq_quality")
        if quality is not None and len(positions):
            # A flat image's PDQ matches other flat images: such rows take no part.
            keep = ~self.low_quality(quality)[positions]
            if not keep.all():
                positions, codes = positions[keep], codes[keep]
        return RowValues(positions, codes)

    def photo_values(self, photo: Photo) -> list[PhotoValue]:
        """The PDQ of each of the photo's eight rotations / mirror images that differs
        from the others (the original first), with the photo's quality."""
        variants = hashing.pdq_dihedral_of(photo.small)
        quality = variants[0][2]
        seen: dict[str, str] = {}
        for variant, value, _ in variants:
            seen.setdefault(value, variant)  # symmetric photos give equal hashes for some variants
        return [PhotoValue(value, variant, quality) for value, variant in seen.items()]

    def photo_warnings(self, values: Sequence[PhotoValue]) -> list[str]:
        if values and self.low_quality(values[0].quality):
            return [f"PDQ quality {values[0].quality} < {self.min_quality}: too flat to match safely"]
        return []

    def from_photo(self, photo: PhotoInput, max_pixels: int = hashing.DEFAULT_MAX_PIXELS,
                   flips: bool = False, min_quality: int = PDQ_MIN_QUALITY) -> list[str]:
        """The photo's PDQ; with ``flips`` also its rotations and mirror images.

        Raises ValueError when the quality is below ``min_quality``: such a hash
        would match unrelated flat images.
        """
        small = Photo(read_photo(photo), max_pixels).small
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


class PhashKind(HammingKind):
    """imagehash pHash (64-bit DCT hash); Hamming distance <= 8 is a match."""

    name = "phash"
    digits = 16
    columns = ("phash",)
    default_threshold = 8
    can_hash_photo = True

    def photo_values(self, photo: Photo) -> list[PhotoValue]:
        return [PhotoValue(hashing.phash_of(photo.small))]


class ClipKind(Kind):
    """An image embedding. ``cosine`` is the similarity; ``distance`` is ``1 - cosine``,
    as ``matches.distance`` reports it; the threshold is a minimum cosine (0.9; see the
    module docstring). Values must come from the same embedding model as the audit;
    vectors of different dimension raise."""

    name = "clip"
    exact = False
    default_threshold = 0.9
    columns = ("_embedding",)
    needs_embedding = True

    def validate(self, value: str) -> str:
        return clip_to_value(clip_from_value(value))

    def check_max_distance(self, number: float) -> float | None:
        if not -1.0 <= number <= 1.0:
            raise ValueError(f"max_distance for {self.name} is a minimum cosine in [-1, 1], got {number:g}")
        return number

    def record_value(self, record: Mapping[str, Any]) -> np.ndarray | None:
        embedding = record.get("_embedding")
        if embedding is None:
            return None
        try:
            return as_unit_vector(embedding)
        except ValueError:
            return None

    def cosine(self, a: str | np.ndarray, b: str | np.ndarray) -> float:
        """Cosine similarity of two embeddings (list values or vectors)."""
        ua, ub = as_unit_vector(a), as_unit_vector(b)
        if ua.shape != ub.shape:
            raise ValueError(f"cannot compare clip vectors of {ua.size} and {ub.size} dimensions")
        return float(np.dot(ua.astype(np.float64), ub.astype(np.float64)))

    def distance(self, a: str | np.ndarray, b: str | np.ndarray) -> float:
        return cosine_distance(self.cosine(a, b))

    def is_match(self, distance: float, threshold: float | None = None) -> bool:
        minimum = self.default_threshold if threshold is None else threshold
        return 1.0 - distance >= minimum - COSINE_TOLERANCE

    def rows(self, columns: Columns, n: int) -> RowValues:
        column = columns.get(self.columns[0])
        if column is None:
            return RowValues(np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32))
        return RowValues(*unit_rows(column))

    def build(self, values: Sequence[str], thresholds: np.ndarray, **options: Any) -> CosineSearch:
        vectors = []
        for i, value in enumerate(values):
            try:
                vectors.append(clip_from_value(value))
            except ValueError:
                raise BadEntryValue(i, "clip value is not a valid embedding") from None
        if len({v.size for v in vectors}) != 1:
            raise ValueError("clip entries have different dimensions")
        return CosineSearch.build(np.stack(vectors), thresholds, what=self.name)

    def photo_values(self, photo: Photo) -> list[PhotoValue]:
        """The embedding of the photo's hashing copy, made by ``photo.embed_fn``."""
        if photo.embed_fn is None:
            raise ValueError(f"kind '{self.name}' needs an embed_fn (PIL image -> vector)")
        vector = np.asarray(photo.embed_fn(photo.small), dtype=np.float32).reshape(-1)
        return [PhotoValue(clip_to_value(vector))]


# --------------------------------------------------------------------------- registry

_REGISTRY: dict[str, Kind] = {}

KINDS: Mapping[str, Kind] = MappingProxyType(_REGISTRY)
"""Every registered kind by name, in registration order (a live, read-only view)."""


def register_kind(kind: Kind | type[Kind]) -> Kind | type[Kind]:
    """Make a kind known: list files may name it, TakedownIndex matches it, Thresholds
    gives it a threshold (distance kinds). Takes an instance or a class (made with no
    arguments; usable as a class decorator) and returns what it was given. ValueError
    when a kind of that name is registered already."""
    instance = kind() if isinstance(kind, type) else kind
    if not isinstance(instance, Kind):
        raise TypeError(f"register_kind takes a Kind, got {type(instance).__name__}")
    name = instance.name
    if not isinstance(name, str) or name != name.strip().lower() or not name:
        raise ValueError(f"kind name {name!r} must be non-empty lowercase text without blanks around it")
    if name in _REGISTRY:
        raise ValueError(f"kind {name!r} is registered already")
    _REGISTRY[name] = instance
    return kind


def unregister_kind(name: str) -> Kind:
    """Remove a registered kind (what a test that registered one does afterwards)."""
    try:
        return _REGISTRY.pop(name)
    except KeyError:
        raise ValueError(f"kind {name!r} is not registered") from None


def kind_of(name: str) -> Kind:
    """The kind of that name (case and surrounding blanks ignored); ValueError listing
    the known kinds otherwise."""
    key = name.strip().lower() if isinstance(name, str) else name
    try:
        return _REGISTRY[key]
    except (KeyError, TypeError):
        raise ValueError(f"unknown kind {name!r}; known: {', '.join(_REGISTRY)}") from None


for _kind in (UrlKind, UrlSha256Kind, Md5Kind, Sha256Kind, PdqKind, PhashKind, ClipKind):
    register_kind(_kind)
del _kind


class Thresholds(Mapping[str, float]):
    """The match threshold of every registered distance kind, as one value (bits for the
    Hamming kinds, a minimum cosine for clip: see the module docstring). Kinds not given
    keep their class default; a list entry's own ``max_distance`` still overrides both.

    Immutable and hashable, so it can be part of a worker's index cache key.
    """

    def __init__(self, values: Mapping[str, float] | None = None, **by_kind: float) -> None:
        given = {**(values or {}), **by_kind}
        unknown = [k for k in given if k not in _REGISTRY or _REGISTRY[k].exact]
        if unknown:
            distance_kinds = ", ".join(k for k, kind in _REGISTRY.items() if not kind.exact)
            raise ValueError(f"no threshold for kind {unknown[0]!r}; kinds with one: {distance_kinds}")
        self._values = tuple(
            (name, float(given[name]) if given.get(name) is not None else float(kind.default_threshold))
            for name, kind in _REGISTRY.items() if not kind.exact
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


__all__ = [
    "KINDS",
    "PDQ_MIN_QUALITY",
    "ClipKind",
    "HammingKind",
    "HexExactKind",
    "Kind",
    "Md5Kind",
    "PdqKind",
    "PhashKind",
    "Sha256Kind",
    "Thresholds",
    "UrlKind",
    "UrlSha256Kind",
    "kind_of",
    "register_kind",
    "unregister_kind",
]
