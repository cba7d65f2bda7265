"""Hamming search over packed binary codes: the index of the pdq and phash kinds.

Both strategies are exact (no false negatives; the tests check hashes at exactly the
threshold, and agreement with a full scan):

* ``flat``: ``faiss.IndexBinaryFlat`` + one ``range_search`` per batch. Linear in the
  list: ~1.5 ns per (row, PDQ entry) pair on one core, so ~2 us/row at 1k entries but
  ~1.5 ms/row at 1M.
* ``mih``: multi-index hashing. The code is cut into m disjoint substrings of w bits,
  each with a table substring -> entries (a run of entry ids per bucket).
  If a row is within d bits of an entry, the m substring distances sum to at most d.
  Writing d = a * m + b (0 <= b < m), some one of b + 1 chosen substrings is within a
  bits or some other one within a - 1 (else the sum would be at least d + 1; see
  ``_plans``). Probing each such substring's keys within that many bit flips reaches
  every entry within d; each candidate is then checked on its full code and held to
  its entry's own threshold. Probes per row grow with w and the flips, candidates per
  row shrink as n / 2^w, so the split is chosen per list (``best_plan``, by
  ``_Plan.cost_ns``, whose random reads cost more as the arrays outgrow the caches):
  for PDQ at 31 bits, 16 x 16 bits with 1 flip at 3k-10k entries, 13 x 19-20 bits
  with 2 flips (1 for some) at 100k, 11 x 23-24 bits with 2 flips at 1M and above.
  The tables and the search loop are compiled (``hamming_kernel``: numba, no GIL):
  a bitmap of non-empty buckets answers the probes, offsets are kept for non-empty
  buckets only, each hit comes out once without a sort.

  A batch at least four times as long as the list (a rematch's: a whole audit against
  a list) is searched turned round: the batch is indexed the same way and the list's
  entries probe it, so the probes grow with the list, not the batch (a 100k list, 1M
  rows: 3.0 us/row, 6.7 the usual way; ``_MultiIndexHamming.rows_per_batch``).

Measured with ``scripts/bench_match.py`` (CPU time of one process on a 2-core machine
shared with other work, load average 5-6, so +-30%; batches of 1024 rows, PDQ only,
random codes, us per row; numpy scan: a plain XOR + popcount of the whole list; mih
before: the same plans searched with numpy array operations instead of compiled code):

    PDQ entries   flat (faiss)   mih      mih before   numpy scan
    1k                  ~2.8     ~2.5          ~6          ~45
    100k                ~190     11-23         ~34       ~4,400
    1M                ~4,400     50-67         ~106     ~43,000
    10M                          ~225          ~465      (peak RSS 1.43 GB, 1.61 before)

At 100k and 1M, before and after were run interleaved in one process (11 against 34,
52 against 106 us/row; the same hits). The 10M index holds 305 MiB of codes, 420 MiB
of ids (11 tables), 264 MiB of offsets and 21 MiB of bitmap and ranks (1.17 GB before:
an offset for every bucket); its build, a radix sort per table, takes ~6 s (~30 s by a
counting sort) and 120 MB beyond that while it runs (``scripts/bench_list_memory.py``:
peak RSS 1.46-1.67 GB for the worker). The compiled code is cached on disk: a process
loads it in about 0.6 s of CPU; compiling it (the first run after an install) takes
about 9 s once.

faiss's own ``IndexBinaryMultiHash`` does the same lookup but was slower here (16 x 16
bits, nflip 1: ~1.5 ms/row at 1M; 11 x 23 bits, nflip 2: ~0.45 ms/row after a 15 s
build, ~0.1 ms/row even at 1k entries). No strategy is flat in list size at d = 31 of
256 bits (12% of the bits: a wide radius for any exact index).

``strategy="auto"`` (the default) picks, per kind, the strategy with the lower
``estimated_search_ns`` for that list size, code length and loosest threshold: flat
below several hundred PDQ entries, multi-index hashing above. Real lists are less
uniform than random hashes: many entries sharing one substring make that bucket a hot
spot (slower, never a miss).

Both are immutable once built; faiss searches are const and the multi-index search
reads shared arrays only, so one index serves every thread of a worker process.
"""
from __future__ import annotations

import functools
import itertools
import math
from typing import NamedTuple

import faiss
import numpy as np

from transforms.takedown.search import RowValues, no_hits

HAMMING_STRATEGIES = ("auto", "flat", "mih")

# Multi-index hashing limits and cost constants (ns on one core, fitted on
# scripts/bench_match.py runs of the compiled search). A probe reads one bit of the
# bitmap, a hit (a non-empty bucket) its rank, offset and ids, a candidate its code:
# each a random read, whose cost grows from cache-resident to main memory with the size
# of what it reads (interpolated on log2 of the bytes, between the bounds below).
_MAX_FLIPS = 3
_MAX_SUBSTRING_BITS = 24
_MAX_TABLE_BYTES = 512 << 20
_NS_PER_PROBE = (2.0, 10.0)
_NS_PER_HIT = (12.0, 35.0)
_NS_PER_CANDIDATE = (12.0, 30.0)
_NS_PER_TABLE = 10.0  # a query's key in each table
# A batch searched turned round (_MultiIndexHamming.search): rows per list entry from
# which it pays and at which it costs near its least, the fewest rows worth an index,
# the most indexed at once (about 150 MB).
_TURNS_FROM_ROWS_PER_ENTRY = 4
_TURNED_ROWS_PER_ENTRY = 10
_TURNED_MIN_ROWS = 1 << 16
_TURNED_MAX_ROWS = 2_000_000
_CACHED_BYTES, _UNCACHED_BYTES = 1 << 20, 32 << 20


def _random_read_ns(cost: tuple[float, float], nbytes: float) -> float:
    """A random read's cost in an array of ``nbytes``: ``cost[0]`` when it stays in cache,
    ``cost[1]`` from main memory."""
    span = math.log2(_UNCACHED_BYTES / _CACHED_BYTES)
    where = min(1.0, max(0.0, math.log2(max(nbytes, 1) / _CACHED_BYTES) / span))
    return cost[0] + where * (cost[1] - cost[0])


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
        used = [(p, w) for p, w in zip(probes, self.widths) if p]
        fill = [entries / (1 << w) for _, w in used]  # entries per bucket
        candidates = sum(p * f for (p, _), f in zip(used, fill))
        hits = sum(p * -math.expm1(-f) for (p, _), f in zip(used, fill))  # probes of non-empty buckets
        bitmap = sum(1 << w for _, w in used) / 8
        ids = 4 * entries * len(used)
        return (len(used) * _NS_PER_TABLE + sum(probes) * _random_read_ns(_NS_PER_PROBE, bitmap)
                + hits * _random_read_ns(_NS_PER_HIT, ids)
                + candidates * _random_read_ns(_NS_PER_CANDIDATE, ids))

    def table_bytes(self, entries: int = 0) -> int:
        """Memory of the probed tables but their ids: the bitmap and its ranks (at most 2
        bits a bucket) and an offset per non-empty bucket (at most one per entry)."""
        return sum((1 << w) // 4 + 4 * min(entries, 1 << w)
                   for w, f in zip(self.widths, self.flips) if f >= 0)


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


@functools.lru_cache(maxsize=64)
def best_plan(bits: int, radius: int, entries: int) -> _Plan | None:
    """The cheapest exact multi-index plan within the table memory cap; None if none."""
    # Tables much wider than the list is long cost memory and build time for nothing.
    widest = max(8, math.ceil(math.log2(max(entries, 1))) + 4)
    plans = [p for p in _plans(bits, radius)
             if p.table_bytes(entries) <= _MAX_TABLE_BYTES and max(p.widths) <= widest]
    return min(plans, key=lambda p: p.cost_ns(entries), default=None)


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


class _MultiIndexHamming:
    """Exact multi-index hashing (see the module docstring); the tables and the search
    loop are compiled (``hamming_kernel``)."""

    name = "mih"

    def __init__(self, codes: np.ndarray, radius: int, plan: _Plan | None = None) -> None:
        from transforms.takedown import hamming_kernel  # numba loads only where a list needs it

        n, nbytes = codes.shape
        plan = plan or best_plan(nbytes * 8, radius, n)
        if plan is None:
            raise ValueError(f"no exact multi-index plan for radius {radius} of {nbytes * 8} bits; "
                             "use the flat scan")
        self.radius, self.plan = radius, plan
        self._n, self._nbytes, self._words = n, nbytes, -(-nbytes // 8)
        self._codes = _as_words(codes, self._words)
        # The probed substrings, widest first: each table then starts at a multiple of
        # its own size, so a probe's bucket is (key | table base) ^ flip, one XOR.
        used = sorted((j for j, f in enumerate(plan.flips) if f >= 0), key=lambda j: -plan.widths[j])
        starts = [plan.starts[j] for j in used]
        widths = [plan.widths[j] for j in used]
        bases = list(itertools.accumulate([1 << w for w in widths], initial=0))
        self._ids, self._bitmap, self._rank, self._starts = hamming_kernel.build_tables(
            self._codes, starts, widths, bases[:-1], bases[-1])
        as_int64 = lambda values: np.asarray(values, dtype=np.int64)  # noqa: E731
        self._slot_word = as_int64([s // 64 for s in starts])
        self._slot_shift = as_int64([s % 64 for s in starts])
        self._slot_width = as_int64(widths)
        self._slot_base = as_int64(bases[:-1])
        self._slot_flips = as_int64([plan.flips[j] for j in used])
        self._slot_masks = hamming_kernel.substring_masks(starts, widths, self._words)
        # Every probe of one table: which bits of its key are flipped.
        masks, begin = [], [0]
        for j in used:
            for count in range(plan.flips[j] + 1):
                for bits in itertools.combinations(range(plan.widths[j]), count):
                    masks.append(sum(1 << b for b in bits))
            begin.append(len(masks))
        self._probe_begin = as_int64(begin)
        self._probe_mask = as_int64(masks)

    def search(self, queries: np.ndarray, turned: bool | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query row, entry, bits apart) of every entry within the radius, each once.

        A batch many times longer than the list (a rematch's) is searched turned round:
        an index built over the batch, probed by the entries, so that the probes grow
        with the list, not the batch. ``turned`` forces the way (None: ``turns_for``)."""
        if turned is None:
            turned = self.turns_for(len(queries))
        if not turned:
            return self._search_words(_as_words(queries, self._words))
        over_batch = _MultiIndexHamming(queries, self.radius, best_plan(self._nbytes * 8, self.radius, len(queries)))
        rows, entries, distances = over_batch._search_words(self._codes, in_key_order=True)
        return entries, rows, distances

    def turns_for(self, rows: int) -> bool:
        """Whether a batch of ``rows`` is searched turned round: from 4 rows a list
        entry (and 2^16 rows) on, up to _TURNED_MAX_ROWS. Measured with
        ``scripts/bench_match.py --both-ways`` (CPU us per row, the usual way against
        turned): a 100k list, 1M rows 6.7 against 3.0, 600k 7.7 / 3.7, 400k 6.8 / 4.7,
        but 200k 6.5 / 10.8; a 50k list, 250k rows 4.9 / 2.4; a 10k list, 1M rows 2.0 /
        0.9; a 1k list, 65k rows 1.5 / 1.2, 4k rows 1.1 / 12.4."""
        return max(_TURNS_FROM_ROWS_PER_ENTRY * self._n, _TURNED_MIN_ROWS) <= rows <= _TURNED_MAX_ROWS

    @functools.cached_property
    def rows_per_batch(self) -> int:
        """The batch length to gather for this list, where a turned search costs near its
        least per row: 10 rows an entry, within the turned limits (0: no batch is
        searched turned round, the list being too long for such a batch)."""
        rows = min(max(_TURNED_ROWS_PER_ENTRY * self._n, _TURNED_MIN_ROWS), _TURNED_MAX_ROWS)
        return rows if self.turns_for(rows) else 0

    def _search_words(self, queries: np.ndarray, in_key_order: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from transforms.takedown.hamming_kernel import search_tables

        return search_tables(
            queries, self._codes, self._ids, self._bitmap, self._rank, self._starts,
            self._slot_word, self._slot_shift, self._slot_width, self._slot_base, self._slot_flips,
            self._slot_masks, self._probe_begin, self._probe_mask, self.radius, in_key_order)


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
    plan = None
    if strategy == "auto":
        n, nbytes = codes.shape
        plan = best_plan(nbytes * 8, radius, n)  # found once: the index is built by it too
        mih = math.inf if plan is None else plan.cost_ns(n)
        strategy = "mih" if mih < estimated_search_ns("flat", n, nbytes, radius) else "flat"
    return _MultiIndexHamming(codes, radius, plan) if strategy == "mih" else _FlatHamming(codes, radius)


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

    @property
    def rows_per_batch(self) -> int:
        """The batch length this search costs about the least per row at (0: any)."""
        return getattr(self._search, "rows_per_batch", 0)

    def query(self, rows: RowValues) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(batch row, entry, bits apart) of every hit; ``rows.values`` are packed codes."""
        positions, codes = rows
        if not len(codes):
            return no_hits()
        qrows, ids, dist = self._search.search(codes)
        keep = dist <= self._thresholds[ids]
        return positions[qrows[keep]], ids[keep], dist[keep]


__all__ = ["HAMMING_STRATEGIES", "HammingSearch", "estimated_search_ns"]
