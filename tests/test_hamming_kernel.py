"""The compiled multi-index Hamming search against a brute-force numpy scan.

Exactness is the contract (a takedown must not be missed, nor reported twice): every
case compares the search's (row, entry, distance) set with a full XOR + popcount scan
computed here, on random lists, hot buckets, duplicates, the threshold edge, empty
inputs, pHash-sized and odd-sized codes, and threads searching one index at once.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from transforms.takedown.hamming import HammingSearch, _MultiIndexHamming, _plans, best_plan


def brute_force(queries: np.ndarray, codes: np.ndarray, radius: int) -> set[tuple[int, int, int]]:
    """Every (query row, entry, distance <= radius), by a full scan."""
    found = set()
    for start in range(0, len(queries), 64):
        block = queries[start:start + 64]
        distance = np.bitwise_count(block[:, None, :] ^ codes[None, :, :]).sum(axis=2, dtype=np.int64)
        for q, e in zip(*np.nonzero(distance <= radius)):
            found.add((start + int(q), int(e), int(distance[q, e])))
    return found


def searched(index: _MultiIndexHamming, queries: np.ndarray) -> set[tuple[int, int, int]]:
    """The hits of a search both ways round: the list's tables probed by the queries, and
    an index of the queries probed by the entries (what a long batch gets). Both must
    give every hit once, and the same hits."""
    found = []
    for turned in (False, True):
        rows, ids, dist = index.search(queries, turned=turned)
        hits = list(zip(rows.tolist(), ids.tolist(), dist.tolist()))
        assert len(hits) == len(set(hits)), f"a hit reported twice (turned={turned})"
        found.append(set(hits))
    assert found[0] == found[1], "the two ways round disagree"
    return found[0]


def flip_bits(code: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    out = code.copy()
    for bit in rng.choice(code.size * 8, size=count, replace=False):
        out[bit // 8] ^= np.uint8(1 << (bit % 8))
    return out


def near_queries(codes: np.ndarray, distances, rng: np.random.Generator) -> np.ndarray:
    return np.stack([flip_bits(codes[int(rng.integers(len(codes)))], int(d), rng) for d in distances])


@pytest.mark.parametrize("entries", [700, 5_000, 40_000])
def test_random_list_at_the_threshold_edge(entries):
    """The default plan for each size (1-flip and 2-flip tables), rows at r-1, r, r+1."""
    rng = np.random.default_rng(entries)
    radius = 31
    codes = rng.integers(0, 256, (entries, 32), dtype=np.uint8)
    distances = [radius + (-1, 0, 1)[i % 3] for i in range(150)] + [0, 1, 2, 16] * 5
    queries = np.concatenate([near_queries(codes, distances, rng),
                              rng.integers(0, 256, (50, 32), dtype=np.uint8)])
    index = _MultiIndexHamming(codes, radius)
    expected = brute_force(queries, codes, radius)
    assert searched(index, queries) == expected
    assert sum(1 for _, _, d in expected if d == radius) >= 30
    if entries >= 40_000:  # tables probed within 2 flips
        assert max(index.plan.flips) == 2


@pytest.mark.parametrize("nbytes,radius", [(32, 31), (32, 12), (8, 8), (12, 10)])
def test_hot_buckets_duplicates_and_many_hits_per_row(nbytes, radius):
    """Entries sharing substrings (one bucket holding thousands), exact duplicates, and
    rows within the radius of hundreds of entries: every hit, once."""
    rng = np.random.default_rng(nbytes * 100 + radius)
    prefix = rng.integers(0, 256, nbytes // 2, dtype=np.uint8)
    hot = rng.integers(0, 256, (3000, nbytes), dtype=np.uint8)
    hot[:, :nbytes // 2] = prefix  # the same first half: the same key in its tables
    center = hot[0].copy()
    close = np.stack([flip_bits(center, int(rng.integers(0, radius + 2)), rng) for _ in range(600)])
    twins = np.repeat(close[:5], 40, axis=0)  # exact duplicates under different ids
    codes = np.concatenate([hot, close, twins, rng.integers(0, 256, (2000, nbytes), dtype=np.uint8)])
    codes = codes[rng.permutation(len(codes))]
    queries = np.concatenate([center[None, :], close[:40], near_queries(codes, [radius] * 40, rng)])
    expected = brute_force(queries, codes, radius)
    assert max(sum(1 for q, _, _ in expected if q == row) for row in range(len(queries))) > 300
    plans = [p for p in _plans(nbytes * 8, radius) if max(p.widths) <= 16]
    for plan in [best_plan(nbytes * 8, radius, len(codes))] + plans[:: max(1, len(plans) // 3)]:
        assert searched(_MultiIndexHamming(codes, radius, plan=plan), queries) == expected, plan


def test_phash_codes_with_their_default_plan():
    rng = np.random.default_rng(64)
    radius = 8
    codes = rng.integers(0, 256, (30_000, 8), dtype=np.uint8)
    queries = np.concatenate([near_queries(codes, [radius + (-1, 0, 1)[i % 3] for i in range(300)], rng),
                              rng.integers(0, 256, (200, 8), dtype=np.uint8)])
    index = _MultiIndexHamming(codes, radius)
    expected = brute_force(queries, codes, radius)
    assert searched(index, queries) == expected
    assert sum(1 for _, _, d in expected if d == radius) >= 80


def test_empty_list_and_no_queries():
    rng = np.random.default_rng(0)
    empty = _MultiIndexHamming(np.zeros((0, 32), dtype=np.uint8), 31)
    rows, ids, dist = empty.search(rng.integers(0, 256, (10, 32), dtype=np.uint8))
    assert len(rows) == len(ids) == len(dist) == 0
    index = _MultiIndexHamming(rng.integers(0, 256, (100, 32), dtype=np.uint8), 31)
    rows, ids, dist = index.search(np.zeros((0, 32), dtype=np.uint8))
    assert len(rows) == len(ids) == len(dist) == 0
    assert rows.dtype == ids.dtype == dist.dtype == np.int64


def test_each_entry_is_held_to_its_own_threshold():
    rng = np.random.default_rng(9)
    codes = rng.integers(0, 256, (5000, 32), dtype=np.uint8)
    thresholds = rng.integers(0, 32, len(codes)).astype(np.float64)
    thresholds[:10] = 31.0
    queries = np.concatenate([near_queries(codes[:10], [31] * 20, rng), near_queries(codes, range(32), rng)])
    search = HammingSearch.build(codes, thresholds, hamming_strategy="mih")
    assert search.strategy == "mih"
    rows, ids, dist = search.query((np.arange(len(queries), dtype=np.int64) + 100, queries))
    expected = {(q + 100, e, d) for q, e, d in brute_force(queries, codes, 31) if d <= thresholds[e]}
    assert set(zip(rows.tolist(), ids.tolist(), dist.tolist())) == expected
    assert len(rows) == len(expected) and len(expected) >= 20


def test_threads_search_one_index_at_once():
    rng = np.random.default_rng(11)
    codes = rng.integers(0, 256, (20_000, 32), dtype=np.uint8)
    index = _MultiIndexHamming(codes, 31)
    batches = [near_queries(codes, rng.integers(0, 40, 200), rng) for _ in range(8)]
    expected = [brute_force(batch, codes, 31) for batch in batches]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda batch: searched(index, batch), batches * 2))
    assert got == expected * 2


def test_only_a_batch_far_longer_than_the_list_is_searched_turned_round():
    """Where scripts/bench_match.py --both-ways measured turning to pay: from 4 rows an
    entry, and 2^16 rows, on, up to 2 M rows; batches of 10 rows an entry gathered."""
    rng = np.random.default_rng(3)
    long_list = _MultiIndexHamming(rng.integers(0, 256, (100_000, 32), dtype=np.uint8), 31)
    assert long_list.rows_per_batch == 1_000_000
    assert long_list.turns_for(400_000) and long_list.turns_for(2_000_000)
    assert not long_list.turns_for(399_999) and not long_list.turns_for(1024)
    assert not long_list.turns_for(2_000_001)  # a batch index of more rows is not built
    short_list = _MultiIndexHamming(rng.integers(0, 256, (1_000, 32), dtype=np.uint8), 31)
    assert short_list.rows_per_batch == 65_536 and not short_list.turns_for(10_000)
    longer = _MultiIndexHamming(rng.integers(0, 256, (300_000, 32), dtype=np.uint8), 31)
    assert longer.rows_per_batch == 2_000_000 and not longer.turns_for(1_000_000)
    too_long = _MultiIndexHamming(rng.integers(0, 256, (600_000, 32), dtype=np.uint8), 31)
    assert too_long.rows_per_batch == 0 and not too_long.turns_for(2_000_000)
    flat = HammingSearch.build(rng.integers(0, 256, (50, 32), dtype=np.uint8), np.full(50, 31.0))
    assert flat.strategy == "flat" and flat.rows_per_batch == 0
