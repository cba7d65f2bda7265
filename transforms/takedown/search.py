"""The indexes behind the kinds, one interface for all of them.

Every kind is served by one index type: ``ExactSet`` (a hash table: the url kind),
``HexExactSet`` (sorted packed codes: the hex digest kinds),
``HammingSearch`` (``transforms.takedown.hamming``: pdq, phash) or ``CosineSearch``
(faiss inner product: clip). Each is made by its kind (``Kind.build(values,
thresholds)``) from the kind's list values and one threshold per entry, and answers

    index.query(kind.rows(columns, n)) -> (batch row, entry, distance)

three equal-length arrays: the batch row (0..n-1) of each hit, the entry's position
among the values the index was built from, and the distance, where smaller is closer for
every kind (0 for exact kinds, bits for Hamming kinds, ``1 - cosine`` for clip). A
batch is searched at once; nothing here loops over the rows of a Hamming or cosine
search in Python.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, Protocol

import faiss
import numpy as np

from transforms.takedown.values import hex_codes

# Cosines are computed in float32; a vector compared with itself can come out a few
# ulps under 1, so a cosine this close under an entry's threshold still matches.
COSINE_TOLERANCE = 1e-6


class RowValues(NamedTuple):
    """A batch's values of one kind, as its index takes them.

    ``positions``: the batch row of each value (an int64 array), or None when
    ``values[i]`` belongs to row i. ``values``: keys (exact kinds), packed codes
    (Hamming kinds), unit vectors (clip).
    """

    positions: np.ndarray | None
    values: Any


class BadEntryValue(ValueError):
    """A list value an index cannot take; ``position`` is its place among the values."""

    def __init__(self, position: int, message: str) -> None:
        super().__init__(message)
        self.position = position


class KindIndex(Protocol):
    """What TakedownIndex needs of a kind's index (see the module docstring)."""

    def query(self, rows: RowValues) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


def no_hits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    empty = np.zeros(0, dtype=np.int64)
    return empty, empty, np.zeros(0, dtype=np.float64)


def cosine_distance(similarity: float) -> float:
    """What ``matches.distance`` holds for a clip hit: 1 - cosine, never negative."""
    return round(max(0.0, 1.0 - similarity), 6)


class ExactSet:
    """Exact kinds: key -> entries. An entry may have several keys (a url entry is found
    by its normalised URL and by that URL's SHA-256)."""

    def __init__(self, table: dict[str, list[int]]) -> None:
        self._table = table

    @classmethod
    def build(cls, keys: Sequence[Iterable[str]], thresholds: Any = None, **_options) -> ExactSet:
        """``keys[i]``: the keys of entry i (thresholds do not apply to exact kinds)."""
        table: dict[str, list[int]] = {}
        for i, entry_keys in enumerate(keys):
            for key in dict.fromkeys(entry_keys):
                table.setdefault(key, []).append(i)
        return cls(table)

    def query(self, rows: RowValues) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``rows.values``: one key per row, None for a row without one."""
        positions, keys = rows
        out_rows: list[int] = []
        out_entries: list[int] = []
        for i, found in enumerate(map(self._table.get, keys)):
            if found:
                out_rows.extend([i] * len(found))
                out_entries.extend(found)
        if not out_rows:
            return no_hits()
        hit_rows = np.asarray(out_rows, dtype=np.int64)
        if positions is not None:
            hit_rows = positions[hit_rows]
        return hit_rows, np.asarray(out_entries, dtype=np.int64), np.zeros(len(out_rows), dtype=np.float64)


class HexExactSet:
    """Exact kinds whose values are hex digests, held as packed codes (no Python object
    per entry): the codes sorted by their first 8 bytes, a row's candidates found by
    binary search on those and checked on every byte. Rows give their positions and
    packed digests, as ``HexExactKind.rows`` reads them."""

    def __init__(self, codes: np.ndarray, order: np.ndarray, prefixes: np.ndarray) -> None:
        self._codes = codes
        self._order = order
        self._prefixes = prefixes

    @staticmethod
    def _prefix(codes: np.ndarray) -> np.ndarray:
        head = np.zeros((len(codes), 8), dtype=np.uint8)
        width = min(8, codes.shape[1])
        head[:, :width] = codes[:, :width]
        return head.view(">u8").reshape(-1)

    @classmethod
    def build(cls, codes: np.ndarray, thresholds: Any = None, **_options) -> HexExactSet:
        """``codes[i]``: entry i's digest as (entries, bytes) uint8."""
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        prefixes = cls._prefix(codes)
        order = np.argsort(prefixes, kind="stable")
        return cls(codes, order, prefixes[order])

    def query(self, rows: RowValues) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``rows``: (batch rows, their digests as (rows, bytes) uint8), or (None, one hex
        string or None per batch row), as a kind that reads its own rows may give them."""
        found, codes = rows
        if found is None:
            found, codes = hex_codes(list(codes), self._codes.shape[1], exact=True, strip=True)
        if not len(self._codes) or not len(found):
            return no_hits()
        prefix = self._prefix(codes)
        lo = np.searchsorted(self._prefixes, prefix, side="left")
        hi = np.searchsorted(self._prefixes, prefix, side="right")
        count = hi - lo
        if not count.any():
            return no_hits()
        query = np.repeat(np.arange(len(found)), count)
        ends = np.cumsum(count)
        slot = np.arange(int(ends[-1])) - np.repeat(ends - count, count) + np.repeat(lo, count)
        entry = self._order[slot]
        same = (self._codes[entry] == codes[query]).all(axis=1)
        return found[query[same]], entry[same].astype(np.int64), np.zeros(int(same.sum()), dtype=np.float64)


class CosineSearch:
    """Embedding kinds: faiss.IndexFlatIP over unit vectors, one range search per batch.

    ``thresholds`` are minimum cosines, one per entry; a hit reports ``cosine_distance``.
    """

    def __init__(self, index, minimum: np.ndarray, what: str) -> None:
        self._index = index
        self._minimum = minimum
        self._what = what

    @classmethod
    def build(cls, vectors: np.ndarray, thresholds: np.ndarray, *, what: str = "embedding",
              **_options) -> CosineSearch:
        matrix = np.ascontiguousarray(vectors, dtype=np.float32)
        index = faiss.IndexFlatIP(matrix.shape[1])
        index.add(matrix)
        return cls(index, np.asarray(thresholds, dtype=np.float32), what)

    def query(self, rows: RowValues) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``rows.values``: (k, d) float32 unit vectors of the rows ``rows.positions``."""
        positions, queries = rows
        if not len(positions):
            return no_hits()
        if queries.shape[1] != self._index.d:
            raise ValueError(f"{self._what} entries have {self._index.d} dimensions but the rows' embeddings "
                             f"have {queries.shape[1]}: the list was made with another embedding model")
        minimum = self._minimum
        lims, sims, ids = self._index.range_search(queries, float(minimum.min()) - 2 * COSINE_TOLERANCE)
        qrows = np.repeat(np.arange(len(queries)), np.diff(lims.astype(np.int64)))
        keep = sims >= minimum[ids] - COSINE_TOLERANCE
        distances = np.array([cosine_distance(s) for s in sims[keep].tolist()], dtype=np.float64)
        return positions[qrows[keep]], ids[keep].astype(np.int64), distances


__all__ = [
    "COSINE_TOLERANCE",
    "BadEntryValue",
    "CosineSearch",
    "ExactSet",
    "HexExactSet",
    "KindIndex",
    "RowValues",
    "cosine_distance",
    "no_hits",
]
