"""Hamming search over packed binary codes: the index of the pdq and phash kinds.

Both strategies are exact (no false negatives; the tests check hashes at exactly the
threshold, and agreement with a full scan):

* ``flat``: ``faiss.IndexBinaryFlat`` + one ``range_search`` per batch. Linear in the
  list: ~1.5 ns per (row, PDQ entry) pair on one core, so ~2 us/row at 1k entries but
  ~1.5 ms/row at 1M.
* ``mih``: multi-index hashing. The code is cut into m disjoint substrings of w bits,
  each with a table substring -> entries (CSR arrays: a run of entry ids per bucket).
  If a row is within d bits of an entry, the m substring distances sum to at most d.
  Writing d = a * m + b (0 <= b < m), some one of b + 1 chosen substrings is within a
  bits or some other one within a - 1 (else the sum would be at least d + 1; see
  ``_plans``). Probing each such substring's keys within that many bit flips reaches
  every entry within d; each candidate is then checked on its full code and held to
  its entry's own threshold. Probes per row grow with w and the flips, candidates per
  row shrink as n / 2^w, so the split is chosen per list (``best_plan``, by
  ``_Plan.cost_ns``): 16 x 16 bits with 1 flip for PDQ at 31 bits up to ~100k
  entries, 11 x 23-24 bits with 2 flips (3 tables of 2^24 buckets) at 1M. A bitmap of
  non-empty buckets answers most probes of a sparse wide table from cache.

Measured with ``scripts/bench_match.py`` (CPU time of one process on a shared 2-core
machine, batches of 1024 rows, PDQ only, us per row; the numpy peer is a plain XOR +
popcount scan of the whole list):

    PDQ entries   flat (faiss)   mih     numpy scan
    1k                  ~2          ~6        ~35
    100k              ~150         ~37     ~3,000
    1M              ~1,500         ~95    ~36,000
    10M                            ~465              (index alone: 1.6 GB peak RSS)

faiss's own ``IndexBinaryMultiHash`` does the same lookup but was slower here (16 x 16
bits, nflip 1: ~1.5 ms/row at 1M; 11 x 23 bits, nflip 2: ~0.45 ms/row after a 15 s
build, ~0.1 ms/row even at 1k entries). No strategy is flat in list size at d = 31 of
256 bits (12% of the bits: a wide radius for any exact index).

``strategy="auto"`` (the default) picks, per kind, the strategy with the lower
``estimated_search_ns`` for that list size, code length and loosest threshold: flat
below a few thousand PDQ entries, multi-index hashing above. Real lists are less
uniform than random hashes: many entries sharing one substring make that bucket a hot
spot (slower, never a miss).

Both are immutable once built; faiss searches are const and the multi-index search
reads shared arrays only, so one index serves every thread of a worker process.
"""
from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import faiss
import numpy as np

from transforms.takedown.search import RowValues, no_hits

HAMMING_STRATEGIES = ("auto", "flat", "mih")

# Multi-index hashing limits and cost constants (ns on one core, fitted on
# scripts/bench_match.py runs): a probe is one bitmap lookup, a hit one probe of a
# non-empty bucket, a candidate one full-code check.
_MAX_FLIPS = 3
_MAX_SUBSTRING_BITS = 24
_MAX_TABLE_BYTES = 512 << 20
_NS_PER_PROBE = 25.0
_NS_PER_HIT = 40.0
_NS_PER_CANDIDATE = 55.0


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


class _Plan(NamedTuple):
    """How a multi-index hashes its codes: bit ``starts`` and ``widths`` of each disjoint
    substring (over the code read as little-endian 64-bit words) and the bit ``flips``
    probed in each."""

    starts: tuple[int, ...]
    widths: tuple[int, ...]
    flips: tuple[int, ...]

    def probes(self) -> list[int]:
        return [sum(math.comb(w, k) for k in range(f + 1)) if f >= 0 else 0
                for w, f in zip(self.widths, self.flips)]

    def cost_ns(self, entries: int) -> float:
        """Estimated search cost of one row against ``entries`` random codes."""
        probes = self.probes()
        fill = [entries / (1 << w) for w in self.widths]  # entries per bucket
        candidates = sum(p * f for p, f in zip(probes, fill))
        hits = sum(p * -math.expm1(-f) for p, f in zip(probes, fill))  # probes of non-empty buckets
        return sum(probes) * _NS_PER_PROBE + hits * _NS_PER_HIT + candidates * _NS_PER_CANDIDATE

    def table_bytes(self) -> int:
        return sum(4 * ((1 << w) + 1) for w, f in zip(self.widths, self.flips) if f >= 0)


def _plans(bits: int, radius: int):
    """Every exact split of ``bits`` into m near-equal substrings at this radius.

    Pigeonhole, sharpened: write radius = a * m + b (0 <= b < m). If b + 1 of the
    substrings were each more than a bits apart and the other m - b - 1 more than a - 1,
    the code would be at least (b + 1)(a + 1) + (m - b - 1) a = radius + 1 bits apart.
    So probing b + 1 substrings within a flips and the others within a - 1 (none when
    a = 0) reaches every code within the radius. Which substrings get a flips is free:
    both the widest and the narrowest first are tried."""
    for m in range(1, bits + 1):
        a, b = divmod(radius, m)
        if a > _MAX_FLIPS:
            continue
        width, wide = divmod(bits, m)
        if width + (wide > 0) > _MAX_SUBSTRING_BITS:
            continue
        widths = [width + 1] * wide + [width] * (m - wide)
        for order in (widths, widths[::-1]):
            flips = [a] * (b + 1) + [a - 1] * (m - b - 1)
            starts = list(itertools.accumulate([0] + order[:-1]))
            yield _Plan(tuple(starts), tuple(order), tuple(flips))


def best_plan(bits: int, radius: int, entries: int) -> _Plan | None:
    """The cheapest exact multi-index plan within the table memory cap; None if none."""
    # Tables much wider than the list is long cost memory and build time for nothing.
    widest = max(8, math.ceil(math.log2(max(entries, 1))) + 4)
    plans = [p for p in _plans(bits, radius)
             if p.table_bytes() <= _MAX_TABLE_BYTES and max(p.widths) <= widest]
    return min(plans, key=lambda p: p.cost_ns(entries), default=None)


def _substring(words: np.ndarray, start: int, width: int) -> np.ndarray:
    """Bits [start, start + width) of (rows, words) uint64 codes, as int64 keys."""
    word, shift = divmod(start, 64)
    key = words[:, word] >> np.uint64(shift)
    if shift + width > 64:  # the rest of it from the next word's low bits
        key = key | (words[:, word + 1] << np.uint64(64 - shift))
    return (key & np.uint64((1 << width) - 1)).view(np.int64)


def _as_words(codes: np.ndarray, words: int) -> np.ndarray:
    """(rows, bytes) uint8 codes as (rows, words) uint64, zero-padded to whole words
    (padding is equal on both sides of a comparison, so distances do not change). The
    code's bits are then bit positions 0 .. 8 * bytes - 1 of the little-endian words."""
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    if codes.shape[1] != 8 * words:
        padded = np.zeros((len(codes), 8 * words), dtype=np.uint8)
        padded[:, :codes.shape[1]] = codes
        codes = padded
    return codes.view("<u8").reshape(len(codes), words)


def _popcount_rows(xor: np.ndarray) -> np.ndarray:
    """Set bits per row of a (rows, words) uint64 array, as int64."""
    counts = np.bitwise_count(xor)  # uint8 per word
    total = counts[:, 0].astype(np.int64)
    for j in range(1, counts.shape[1]):
        total += counts[:, j]
    return total


class _MultiIndexHamming:
    """Exact multi-index hashing (see the module docstring)."""

    name = "mih"

    def __init__(self, codes: np.ndarray, radius: int, plan: _Plan | None = None) -> None:
        n, nbytes = codes.shape
        plan = plan or best_plan(nbytes * 8, radius, n)
        if plan is None:
            raise ValueError(f"no exact multi-index plan for radius {radius} of {nbytes * 8} bits; "
                             "use the flat scan")
        self.radius, self.plan = radius, plan
        self._n, self._nbytes, self._words = n, nbytes, -(-nbytes // 8)
        self._codes = _as_words(codes, self._words)
        # The probed substrings, widest first: each table then starts at a multiple of
        # its own size, so a probe's bucket is (key | table start) ^ flip, one XOR.
        used = sorted((j for j, f in enumerate(plan.flips) if f >= 0), key=lambda j: -plan.widths[j])
        self._used = used
        position_type = np.int32 if n * len(used) < 2**31 else np.int64
        starts = list(itertools.accumulate([1 << plan.widths[j] for j in used], initial=0))
        # _offsets[b] .. _offsets[b + 1]: the run of bucket b's entries in _ids (all tables).
        self._offsets = np.zeros(starts[-1] + 1, dtype=position_type)
        self._ids = np.empty(n * len(used), dtype=np.int32)
        for slot, j in enumerate(used):
            size = 1 << plan.widths[j]
            column = _substring(self._codes, plan.starts[j], plan.widths[j])
            runs = self._offsets[starts[slot] + 1:starts[slot] + size + 1]
            np.cumsum(np.bincount(column, minlength=size), out=runs)
            runs += slot * n
            self._ids[slot * n:(slot + 1) * n] = np.argsort(column, kind="stable")
            del column, runs
        starts.pop()
        self._table_start = np.asarray(starts, dtype=np.int32)
        # One bit per bucket, set when it holds an entry. When most buckets are empty (wide
        # tables) this bitmap, 1/32 of the offsets, answers most probes from cache.
        fill = n * len(used) / max(len(self._offsets) - 1, 1)
        if fill < 0.5:
            self._bitmap = np.packbits(self._offsets[1:] != self._offsets[:-1], bitorder="little")
        else:
            self._bitmap = None
        # Every probe of one query, flattened: which (probed) substring, which bits flipped.
        part, mask = [], []
        for slot, j in enumerate(used):
            for count in range(plan.flips[j] + 1):
                for bits in itertools.combinations(range(plan.widths[j]), count):
                    part.append(slot)
                    mask.append(sum(1 << b for b in bits))
        self._probe_part = np.asarray(part, dtype=np.int64)
        self._probe_mask = np.asarray(mask, dtype=np.int32)
        # Queries per chunk: keep the probe arrays around 2^16 elements (cache-sized).
        self._chunk = max(1, min(4096, (1 << 16) // len(part)))

    def _keys(self, queries: np.ndarray) -> np.ndarray:
        """(c, probed substrings) int32: each substring key with its table's start."""
        keys = np.empty((len(queries), len(self._used)), dtype=np.int32)
        for slot, j in enumerate(self._used):
            keys[:, slot] = _substring(queries, self.plan.starts[j], self.plan.widths[j])
        keys |= self._table_start
        return keys

    def search(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        queries = _as_words(queries, self._words)
        probes_per_query = len(self._probe_part)
        found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for start in range(0, len(queries), self._chunk):
            bucket = self._keys(queries[start:start + self._chunk])[:, self._probe_part]  # (c, probes)
            bucket ^= self._probe_mask
            bucket = bucket.reshape(-1)
            if self._bitmap is not None:
                occupied = self._bitmap[bucket >> 3]
                occupied >>= (bucket & 7).astype(np.uint8)
                occupied &= 1
                hit = np.flatnonzero(occupied)
                bucket = bucket[hit]
                begin = self._offsets[bucket]
                length = self._offsets[bucket + 1] - begin
            else:
                begin = self._offsets[bucket]
                length = self._offsets[bucket + 1] - begin
                hit = np.flatnonzero(length)
                begin, length = begin[hit], length[hit]
            if not len(hit):
                continue
            length = length.astype(np.int64)
            ends = np.cumsum(length)
            total = int(ends[-1])
            # Positions of every candidate: each probe's [begin, begin + length) run.
            pos = np.arange(total, dtype=np.int64) + np.repeat(begin - (ends - length), length)
            cand = self._ids[pos].astype(np.int64)
            qrow = np.repeat(hit // probes_per_query + start, length)
            xor = np.take(self._codes, cand, axis=0)
            xor ^= np.take(queries, qrow, axis=0)
            dist = _popcount_rows(xor)
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
        _, first = np.unique(rows * self._n + ids, return_index=True)
        return rows[first], ids[first], dist[first]


def estimated_search_ns(strategy: str, entries: int, nbytes: int, radius: int) -> float:
    """Rough cost of one row's search, in ns on one core (constants fitted on
    scripts/bench_match.py runs); only the comparison between strategies matters."""
    if strategy == "flat":
        return entries * (0.25 + 0.3 * nbytes / 8)
    plan = best_plan(nbytes * 8, radius, entries)
    return math.inf if plan is None else plan.cost_ns(entries)


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
