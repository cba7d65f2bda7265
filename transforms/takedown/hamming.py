"""Hamming search over packed binary codes: the index of the pdq and phash kinds.

Both strategies are exact (no false negatives; the tests check hashes at exactly the
threshold, and agreement with a full scan):

* ``flat``: ``faiss.IndexBinaryFlat`` + one ``range_search`` per batch. Linear in the
  list: ~1.5 ns per (row, PDQ entry) pair on one core, so ~2 us/row at 1k entries but
  ~1.5 ms/row at 1M.
* ``mih``: multi-index hashing. The code is cut into m = bits/16 disjoint 16-bit
  substrings (16 for PDQ, 4 for pHash), each with a table substring -> entries (CSR
  arrays: 4 bytes per entry per table). If a row is within d bits of an entry, the m
  substring distances sum to at most d, so by pigeonhole at least one substring is
  within floor(d/m) bits. Probing, in every table, each key within floor(d/m) bit flips
  of the row's substring (1 + 16 probes per table for PDQ at 31, 1 + 16 + 120 for pHash
  at 8) reaches every entry within d; each candidate is then checked on its full code
  and held to its entry's own threshold. Candidates per row are ~ probes * n / 65536
  (~ n/241 for PDQ at 31), so the cost grows ~240x more slowly than the flat scan.

Measured with ``scripts/bench_match.py`` (one core, batches of 1024 rows, PDQ only,
us per row; the numpy peer is a plain XOR + popcount scan of the whole list):

    PDQ entries   flat (faiss)   mih     numpy scan
    1k                  ~2          ~6        ~35
    100k              ~150         ~45     ~3,000
    1M              ~1,500        ~330    ~36,000

faiss's own ``IndexBinaryMultiHash`` does the same lookup but was slower here (16 x 16
bits, nflip 1: ~1.5 ms/row at 1M; 11 x 23 bits, nflip 2: ~0.45 ms/row after a 15 s
build, ~0.1 ms/row even at 1k entries). No strategy is flat in list size at d = 31 of
256 bits (12% of the bits: a wide radius for any exact index); multi-index hashing is
the one whose cost grows slowly enough for million-entry lists.

``strategy="auto"`` (the default) picks, per kind, the strategy with the lower
``estimated_search_ns`` for that list size, code length and loosest threshold: flat
below a few thousand PDQ entries (or ~30k pHash entries), multi-index hashing above.
Real lists are less uniform than random hashes: many entries sharing one 16-bit
substring make that bucket a hot spot (slower, never a miss).

Both are immutable once built; faiss searches are const and the multi-index search
reads shared arrays only, so one index serves every thread of a worker process.
"""
from __future__ import annotations

import itertools
import math

import faiss
import numpy as np

from transforms.takedown.search import RowValues, no_hits

HAMMING_STRATEGIES = ("auto", "flat", "mih")


class _FlatHamming:
    """Exact scan: faiss.IndexBinaryFlat, one range_search per batch of queries."""

    name = "flat"

    def __init__(self, codes: np.ndarray, radius: int) -> None:
        self.radius = radius
        self._index = faiss.IndexBinaryFlat(codes.shape[1] * 8)
        self._index.add(codes)

    def search(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # faiss keeps distances strictly below the radius it is given.
        lims, dist, ids = self._index.range_search(queries, self.radius + 1)
        rows = np.repeat(np.arange(len(queries), dtype=np.int64), np.diff(lims.astype(np.int64)))
        return rows, ids.astype(np.int64), dist.astype(np.int64)


class _MultiIndexHamming:
    """Exact multi-index hashing over 16-bit substrings (see the module docstring)."""

    name = "mih"
    SUBSTRING_BITS = 16
    MAX_FLIPS = 3

    def __init__(self, codes: np.ndarray, radius: int) -> None:
        n, nbytes = codes.shape
        if nbytes % 2:
            raise ValueError("multi-index hashing needs codes of whole 16-bit substrings")
        self.radius = radius
        self._codes = np.ascontiguousarray(codes)
        self._nbytes = nbytes
        # One void scalar per code: gathering rows this way is ~8x faster than a 2-D take.
        self._rows = self._codes.view(np.dtype((np.void, nbytes))).reshape(n)
        substrings = self._codes.view(">u2")  # (n, m)
        self._m = substrings.shape[1]
        self.nflip = radius // self._m
        if self.nflip > self.MAX_FLIPS:
            raise ValueError(f"radius {radius} needs {self.nflip} flips per substring; use the flat scan")
        size = 1 << self.SUBSTRING_BITS
        self._ids = np.empty((self._m, n), dtype=np.int32)
        self._offsets = np.empty((self._m, size + 1), dtype=np.int64)
        for j in range(self._m):
            column = substrings[:, j]
            self._ids[j] = np.argsort(column, kind="stable")
            self._offsets[j, 0] = 0
            np.cumsum(np.bincount(column, minlength=size), out=self._offsets[j, 1:])
        self._flat_ids = self._ids.reshape(-1)
        self._flat_offsets = self._offsets.reshape(-1)
        flips = [0]
        for count in range(1, self.nflip + 1):
            for bits in itertools.combinations(range(self.SUBSTRING_BITS), count):
                flips.append(sum(1 << b for b in bits))
        self._flips = np.array(flips, dtype=np.int64)
        self._table_base = (np.arange(self._m, dtype=np.int64) * (size + 1))[None, :, None]
        self._id_base = (np.arange(self._m, dtype=np.int64) * n)[None, :, None]
        # Queries per chunk: keep the candidate arrays around 2^17 elements (cache-sized).
        probes = self._m * len(self._flips)
        expected = probes * (1 + n / size)
        self._chunk = int(min(1024, max(8, (1 << 17) // max(1, int(expected)))))

    def search(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries)
        query_rows = queries.view(np.dtype((np.void, self._nbytes))).reshape(len(queries))
        words = self._nbytes // 8 if self._nbytes % 8 == 0 else None
        per_query = self._m * len(self._flips)
        found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for start in range(0, len(queries), self._chunk):
            chunk = queries[start:start + self._chunk]
            keys = chunk.view(">u2").astype(np.int64)  # (c, m)
            probes = (keys[:, :, None] ^ self._flips) + self._table_base  # (c, m, P)
            begin = self._flat_offsets[probes]
            length = (self._flat_offsets[probes + 1] - begin).reshape(-1)
            begin = (begin + self._id_base).reshape(-1)
            hit = np.flatnonzero(length)
            if not len(hit):
                continue
            begin, length = begin[hit], length[hit]
            total = int(length.sum())
            ends = np.cumsum(length)
            # Positions of every candidate: each probe's [begin, begin + length) run.
            pos = np.arange(total, dtype=np.int64) + np.repeat(begin - (ends - length), length)
            cand = self._flat_ids[pos].astype(np.int64)
            qrow = np.repeat(hit // per_query + start, length)
            a, b = self._rows[cand], query_rows[qrow]
            if words:
                xor = a.view(np.uint64) ^ b.view(np.uint64)
                dist = np.bitwise_count(xor).reshape(total, words).sum(axis=1, dtype=np.int64)
            else:
                xor = a.view(np.uint8) ^ b.view(np.uint8)
                dist = np.bitwise_count(xor).reshape(total, self._nbytes).sum(axis=1, dtype=np.int64)
            keep = np.flatnonzero(dist <= self.radius)
            if len(keep):
                found.append((qrow[keep], cand[keep], dist[keep]))
        if not found:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty
        rows = np.concatenate([f[0] for f in found])
        ids = np.concatenate([f[1] for f in found])
        dist = np.concatenate([f[2] for f in found])
        # A near entry can be reached through several substrings: report it once.
        _, first = np.unique(rows * len(self._codes) + ids, return_index=True)
        return rows[first], ids[first], dist[first]


def estimated_search_ns(strategy: str, entries: int, nbytes: int, radius: int) -> float:
    """Rough cost of one row's search, in ns on one core (constants fitted on
    scripts/bench_match.py runs); only the comparison between strategies matters."""
    if strategy == "flat":
        return entries * (0.25 + 0.3 * nbytes / 8)
    m = nbytes // 2
    nflip = radius // m
    if nbytes % 2 or nflip > _MultiIndexHamming.MAX_FLIPS:
        return math.inf
    probes = m * sum(math.comb(_MultiIndexHamming.SUBSTRING_BITS, k) for k in range(nflip + 1))
    candidates = probes * entries / (1 << _MultiIndexHamming.SUBSTRING_BITS)
    return probes * 20.0 + candidates * (10.0 + 1.7 * nbytes)


def _hamming_index(codes: np.ndarray, radius: int, strategy: str):
    if strategy not in HAMMING_STRATEGIES:
        raise ValueError(f"hamming_strategy must be one of {', '.join(HAMMING_STRATEGIES)}")
    if strategy == "auto":
        n, nbytes = codes.shape
        mih = estimated_search_ns("mih", n, nbytes, radius)
        strategy = "mih" if mih < estimated_search_ns("flat", n, nbytes, radius) else "flat"
    return _MultiIndexHamming(codes, radius) if strategy == "mih" else _FlatHamming(codes, radius)


class HammingSearch:
    """The index of a Hamming kind: every entry's packed code, each held to its own
    threshold in bits; searched once per batch at the loosest of them."""

    def __init__(self, search, thresholds: np.ndarray) -> None:
        self._search = search
        self._thresholds = thresholds

    @classmethod
    def build(cls, codes: np.ndarray, thresholds: np.ndarray, *, hamming_strategy: str = "auto",
              **_options) -> HammingSearch:
        """``codes``: (entries, bytes) uint8, big-endian; ``thresholds``: bits per entry."""
        thresholds = np.asarray(thresholds, dtype=np.float64)
        radius = int(math.floor(thresholds.max()))
        return cls(_hamming_index(codes, radius, hamming_strategy), thresholds)

    @property
    def strategy(self) -> str:
        """"flat" or "mih"."""
        return self._search.name

    def query(self, rows: RowValues) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(batch row, entry, bits apart) of every hit; ``rows.values`` are packed codes."""
        positions, codes = rows
        if not len(codes):
            return no_hits()
        qrows, ids, dist = self._search.search(codes)
        keep = dist <= self._thresholds[ids]
        return positions[qrows[keep]], ids[keep], dist[keep]


__all__ = ["HAMMING_STRATEGIES", "HammingSearch", "estimated_search_ns"]
