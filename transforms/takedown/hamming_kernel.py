"""The compiled multi-index Hamming search (numba): the tables' layout and the search loop.

``hamming.py`` chooses the plan (which substrings, how many bit flips each); this module
lays the tables out and searches them. The layout, for T probed substrings (tables) over
n entries:

* ``bitmap``: one bit per bucket of every table, set when the bucket holds an entry.
  Tables follow each other widest first, so each starts at a multiple of its own size
  and a probe's bucket is ``(key | table base) ^ flips``.
* ``rank``: the set bits before each 64-bit word of the bitmap. A non-empty bucket's
  rank (its place among the non-empty buckets) is ``rank[word]`` plus the set bits
  below it in its word.
* ``starts``: the run of the k-th non-empty bucket's entries is ``ids[starts[k]:
  starts[k + 1]]``. Only non-empty buckets have an offset: 1.5 bits per bucket (bitmap
  and int32 ranks) plus 4 bytes per non-empty one, where plain offsets cost 4 bytes per
  bucket.
* ``ids``: the entries of each table, sorted by that table's key (int32).

The search (``search_tables``) goes table after table, and in each probes every
query's keys within the table's flips, skips empty buckets on the bitmap, and checks
each candidate's full code. An entry within the radius can be reached through several
tables; it is reported only from the first table that reaches it (its substring there
within that table's flips), so each (row, entry) comes out once without a sort. The
loop holds no Python object and runs without the GIL: threads of a worker can search
one index at the same time. Nothing in it tells queries from entries: a long batch is
indexed and probed by the list's entries the same way (``hamming.py``).

Compiled code is cached on disk (``cache=True``) next to this file, or in the user's
cache folder when that is not writable.
"""
from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def _popcount(typingctx, value):
    """Set bits of a uint64, as int64: LLVM's ctpop, one instruction where the CPU has it."""
    signature = types.int64(types.uint64)

    def codegen(context, builder, sig, args):
        ctpop = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
        return builder.call(ctpop, args)

    return signature, codegen


@intrinsic
def _prefetch(typingctx, array, index):
    """Ask the CPU to start loading ``array[index]`` (its first element on that axis)."""

    def codegen(context, builder, sig, args):
        array_type = sig.args[0]
        ary = context.make_array(array_type)(context, builder, args[0])
        indices = [args[1]] + [context.get_constant(types.intp, 0)] * (array_type.ndim - 1)
        pointer = cgutils.get_item_pointer2(
            context, builder, data=ary.data, shape=cgutils.unpack_tuple(builder, ary.shape),
            strides=cgutils.unpack_tuple(builder, ary.strides), layout=array_type.layout,
            inds=indices, wraparound=False, boundscheck=False)
        byte_pointer, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        prefetch = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32]), "llvm.prefetch.p0")
        # read, keep in every cache level, data
        builder.call(prefetch, [builder.bitcast(pointer, byte_pointer), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(array, types.intp), codegen


@numba.njit(cache=True, nogil=True)
def _grow(array: np.ndarray, size: int) -> np.ndarray:
    bigger = np.empty(max(2 * len(array), size), dtype=array.dtype)
    bigger[:len(array)] = array
    return bigger


_AHEAD = 16  # loads prefetched ahead of use: random reads overlap instead of queueing
_RUN = 4  # ids copied per bucket without a branch (the ids array is padded by as many)


@numba.njit(cache=True, nogil=True)
def search_tables(queries, codes, ids, bitmap, rank, starts, slot_word, slot_shift, slot_width,
                  slot_base, slot_flips, slot_masks, probe_begin, probe_mask, radius, in_key_order):
    """(query row, entry, bits apart) of every entry within ``radius`` of a query, each
    once. ``queries`` and ``codes``: (rows, words) uint64; per table (slot): the word,
    shift and width of its substring, its base bucket, its flips and its substring's
    bits as a (slots, words) mask; its probes' flip masks are
    ``probe_mask[probe_begin[slot]:probe_begin[slot + 1]]``.

    Table after table, every query: one table's bitmap, ranks and offsets stay in cache
    while the batch probes it (query after query, all tables at once, read every table's
    arrays from memory). Each query goes in passes, so that the random reads of a pass
    do not wait on each other (and are prefetched ahead): the probes give the non-empty
    buckets (bitmap only), the buckets their ranks, the ranks the candidates, whose codes
    are checked. Hits come out by table, then by query row."""
    words = queries.shape[1]
    one = np.uint64(1)
    hit_bucket = np.empty(len(probe_mask), dtype=np.int64)
    capacity = 1024
    candidate = np.empty(capacity, dtype=np.int64)
    found = 0
    out_row = np.empty(64, dtype=np.int64)
    out_id = np.empty(64, dtype=np.int64)
    out_dist = np.empty(64, dtype=np.int64)
    for slot in range(len(slot_word)):
        word = slot_word[slot]
        shift = np.uint64(slot_shift[slot])
        straddles = slot_shift[slot] + slot_width[slot] > 64  # the substring spans two words
        key_mask = (one << np.uint64(slot_width[slot])) - one
        keys = np.empty(queries.shape[0], dtype=np.int64)
        for row in range(queries.shape[0]):  # _key's work, without a view of each row
            key = queries[row, word] >> shift
            if straddles:
                key |= queries[row, word + 1] << (np.uint64(64) - shift)
            keys[row] = np.int64(key & key_mask)
        # In key order, neighbouring queries probe the same cache lines of the bitmap,
        # ranks, offsets and ids: worth its sort when the tables outgrow the caches and
        # the queries are few against them (a turned search: scripts/bench_match.py).
        order = np.argsort(keys) if in_key_order else np.arange(queries.shape[0])
        for row in order:
            base = keys[row] | slot_base[slot]
            hits = 0
            for probe in range(probe_begin[slot], probe_begin[slot + 1]):
                bucket = base ^ probe_mask[probe]
                # written always, kept only when the bucket holds an entry (no branch)
                hit_bucket[hits] = bucket
                hits += np.int64((bitmap[bucket >> 6] >> np.uint64(bucket & 63)) & one)
            # bucket -> its rank among the non-empty buckets (in place)
            for i in range(hits):
                if i + _AHEAD < hits:
                    _prefetch(rank, hit_bucket[i + _AHEAD] >> 6)
                hit_bucket[i] = _rank_of(bitmap, rank, hit_bucket[i])
            count = 0
            for i in range(hits):
                if i + 2 * _AHEAD < hits:
                    _prefetch(starts, hit_bucket[i + 2 * _AHEAD])
                if i + _AHEAD < hits:
                    _prefetch(ids, starts[hit_bucket[i + _AHEAD]])
                begin = starts[hit_bucket[i]]
                length = starts[hit_bucket[i] + 1] - begin
                if count + length + _RUN > capacity:
                    capacity = 2 * (count + length + _RUN)
                    candidate = _grow(candidate, capacity)
                for j in range(_RUN):  # most runs are this short: copied without a branch
                    candidate[count + j] = ids[begin + j]
                for j in range(_RUN, length):
                    candidate[count + j] = ids[begin + j]
                count += length
            for i in range(count):
                if i + _AHEAD < count:
                    _prefetch(codes, candidate[i + _AHEAD])
                entry = candidate[i]
                distance = 0
                for w in range(words):
                    distance += _popcount(codes[entry, w] ^ queries[row, w])
                if distance > radius:
                    continue
                # Reached through an earlier table too? Then it is reported from there.
                earlier = False
                for other in range(slot):
                    part = 0
                    for w in range(words):
                        part += _popcount((codes[entry, w] ^ queries[row, w]) & slot_masks[other, w])
                    if part <= slot_flips[other]:
                        earlier = True
                        break
                if earlier:
                    continue
                if found == len(out_row):
                    out_row = _grow(out_row, found + 1)
                    out_id = _grow(out_id, found + 1)
                    out_dist = _grow(out_dist, found + 1)
                out_row[found] = row
                out_id[found] = entry
                out_dist[found] = distance
                found += 1
    return out_row[:found].copy(), out_id[:found].copy(), out_dist[:found].copy()


@numba.njit(cache=True, nogil=True)
def _key(code, word, shift, width):
    """Bits [64 * word + shift, ... + width) of one code (uint64 words), as int64."""
    one = np.uint64(1)
    key = code[word] >> np.uint64(shift)
    if shift + width > 64:
        key |= code[word + 1] << np.uint64(64 - shift)
    return np.int64(key & ((one << np.uint64(width)) - one))


@numba.njit(cache=True, nogil=True)
def _rank_of(bitmap, rank, bucket):
    """The non-empty buckets before ``bucket``."""
    below = (np.uint64(1) << np.uint64(bucket & 63)) - np.uint64(1)
    return rank[bucket >> 6] + _popcount(bitmap[bucket >> 6] & below)


@numba.njit(cache=True, nogil=True)
def _mark_buckets(bitmap, codes, word, shift, width, base):
    """Set the bitmap bit of every entry's bucket in one table (at bucket ``base``)."""
    for i in range(codes.shape[0]):
        bucket = _key(codes[i], word, shift, width) + base
        bitmap[bucket >> 6] |= np.uint64(1) << np.uint64(bucket & 63)


@numba.njit(cache=True, nogil=True)
def _digit_places(keys, digit_shift, digit_bits, first):
    """Where each value of a key digit begins in a stable sort by it (from ``first``)."""
    mask = (np.int64(1) << digit_bits) - 1
    place = np.zeros((np.int64(1) << digit_bits) + 1, dtype=np.int64)
    for i in range(len(keys)):
        place[((keys[i] >> digit_shift) & mask) + 1] += 1
    place[0] = first
    for d in range(1, len(place)):
        place[d] += place[d - 1]
    return place


@numba.njit(cache=True, nogil=True)
def _fill_table(ids, run_starts, bitmap, rank, codes, word, shift, width, base, offset):
    """One table's ids, sorted by bucket (stable: by entry within a bucket), from
    ``ids[offset]`` on, and where each of its non-empty buckets' run begins in
    ``run_starts``. A radix sort of the keys in two passes of half the key's bits each:
    its counts stay in cache and it reads in sequence, where a counting sort over every
    bucket reads and writes at random (4x slower at a million codes). It needs 12
    bytes a code while it runs, beyond the index."""
    n = codes.shape[0]
    keys = np.empty(n, dtype=np.int32)
    for i in range(n):
        keys[i] = _key(codes[i], word, shift, width)
    low = width // 2
    mask = (np.int64(1) << low) - 1
    half_keys = np.empty(n, dtype=np.int32)
    half_ids = np.empty(n, dtype=np.int32)
    place = _digit_places(keys, 0, low, 0)  # by the low half, entry order kept
    for i in range(n):
        d = keys[i] & mask
        half_keys[place[d]] = keys[i]
        half_ids[place[d]] = i
        place[d] += 1
    place = _digit_places(half_keys, low, width - low, offset)  # then by the high half
    for i in range(n):
        d = half_keys[i] >> low
        keys[place[d] - offset] = half_keys[i]
        ids[place[d]] = half_ids[i]
        place[d] += 1
    k = _rank_of(bitmap, rank, base)  # the table's first non-empty bucket
    for i in range(n):
        if i == 0 or keys[i] != keys[i - 1]:
            run_starts[k] = offset + i
            k += 1


def build_tables(codes: np.ndarray, starts: list[int], widths: list[int], bases: list[int],
                 total_buckets: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(ids, bitmap, rank, starts)`` of the tables of (n, words) uint64 ``codes`` for
    substrings at bit ``starts`` of ``widths``, table i at bucket ``bases[i]``.

    The bitmap first, so that the offsets are allocated once at their final size; then
    each table by a radix sort (``_fill_table``: 12 bytes a code beyond the index while
    it runs)."""
    n = len(codes)
    tables = len(widths)
    bitmap = np.zeros(-(-total_buckets // 64) + 1, dtype=np.uint64)
    for start, width, base in zip(starts, widths, bases):
        _mark_buckets(bitmap, codes, start // 64, start % 64, width, base)
    position_type = np.int32 if n * tables + _RUN < 2**31 else np.int64
    rank = np.zeros(len(bitmap), dtype=position_type)
    np.cumsum(np.bitwise_count(bitmap[:-1]), dtype=position_type, out=rank[1:])
    nonempty = int(rank[-1])
    run_starts = np.zeros(nonempty + 1, dtype=position_type)
    ids = np.zeros(n * tables + _RUN, dtype=np.int32)  # padded: see search_tables
    for slot, (start, width, base) in enumerate(zip(starts, widths, bases)):
        _fill_table(ids, run_starts, bitmap, rank, codes, start // 64, start % 64, width, base, slot * n)
    run_starts[nonempty] = n * tables
    return ids, bitmap, rank, run_starts


def substring_masks(starts: list[int], widths: list[int], words: int) -> np.ndarray:
    """(substrings, words) uint64: each substring's bits, over the code's words."""
    masks = np.zeros((len(starts), words), dtype=np.uint64)
    for i, (start, width) in enumerate(zip(starts, widths)):
        for bit in range(start, start + width):
            masks[i, bit // 64] |= np.uint64(1) << np.uint64(bit % 64)
    return masks


__all__ = ["build_tables", "search_tables", "substring_masks"]
