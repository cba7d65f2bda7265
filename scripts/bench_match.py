"""Takedown matching cost per row as the list grows: TakedownIndex against plain scans.

    python scripts/bench_match.py [--sizes 1000,100000,1000000] [--rows 20000]
                                  [--batch-size 1024] [--peer-rows 1000] [--threads 1]
    python scripts/bench_match.py --index-only --sizes 10000000 [--rows 20000]
    python scripts/bench_match.py --both-ways --sizes 10000,100000 --rows 1000000

For each list size it builds a random list (pdq entries, plus 10% as many phash and md5
entries), then matches a stream of query rows (pdq, phash, content_md5 columns; 2% of
rows are planted near copies of list entries at 0..31 bits, 1% exact md5 copies) with
``TakedownIndex.match_columns`` in batches, single process. It reports the build time,
the cost per row and rows per second for all kinds together and for PDQ alone, and, as
peers on a sample of the rows, the same PDQ search as faiss's flat scan and as a plain
numpy popcount scan (XOR + bit count over the whole list). Every planted match must be
found, and the index's PDQ matches must equal the numpy scan's on the sample. Times are
CPU seconds of this process (so rows/s is per core on a shared machine); peak RSS is the
process's so far (run one size per invocation for a size's own figure).

``--index-only`` builds just the PDQ Hamming index (``HammingSearch``) from packed random
codes, no list entries: the index's own build time, search cost and peak RSS at sizes
(10 M) where list entries as Python objects would not fit a worker.

``--both-ways`` searches one batch of ``--rows`` packed PDQ codes against each list size
both ways round: the list's tables probed by the rows (the usual way), and an index of
the batch built and probed by the entries (turned, what a rematch's long batches get),
its build included; both must find the same hits. It prints the cost of each per row
and the way the search chooses for that batch.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from transforms.takedown import HammingSearch, TakedownEntry, TakedownIndex  # noqa: E402
from transforms.takedown.hamming import _MultiIndexHamming  # noqa: E402

PDQ_BYTES, PHASH_BYTES, MD5_BYTES = 32, 8, 16
PDQ_MAX = 31


def random_codes(rng: np.random.Generator, n: int, nbytes: int) -> np.ndarray:
    return rng.integers(0, 256, (n, nbytes), dtype=np.uint8)


def hexes(codes: np.ndarray) -> list[str]:
    raw = codes.tobytes().hex()
    width = codes.shape[1] * 2
    return [raw[i:i + width] for i in range(0, len(raw), width)]


def flip_random_bits(code: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    out = code.copy()
    for bit in rng.choice(code.size * 8, size=count, replace=False):
        out[bit // 8] ^= np.uint8(1 << (7 - bit % 8))
    return out


def make_list(rng: np.random.Generator, n: int) -> tuple[list[TakedownEntry], dict[str, np.ndarray]]:
    pdq = random_codes(rng, n, PDQ_BYTES)
    extra = max(1, n // 10)
    phash = random_codes(rng, extra, PHASH_BYTES)
    md5 = random_codes(rng, extra, MD5_BYTES)
    entries = [TakedownEntry("bench", f"p{i}", "pdq", v) for i, v in enumerate(hexes(pdq))]
    entries += [TakedownEntry("bench", f"h{i}", "phash", v) for i, v in enumerate(hexes(phash))]
    entries += [TakedownEntry("bench", f"m{i}", "md5", v) for i, v in enumerate(hexes(md5))]
    return entries, {"pdq": pdq, "phash": phash, "md5": md5}


def make_rows(rng: np.random.Generator, rows: int, codes: dict[str, np.ndarray]):
    """Query columns plus the planted matches: {row: entry_id}."""
    pdq = random_codes(rng, rows, PDQ_BYTES)
    md5 = hexes(random_codes(rng, rows, MD5_BYTES))
    planted: dict[int, set[str]] = {}
    for row in rng.choice(rows, size=max(1, rows // 50), replace=False):
        target = int(rng.integers(len(codes["pdq"])))
        pdq[row] = flip_random_bits(codes["pdq"][target], int(rng.integers(0, PDQ_MAX + 1)), rng)
        planted.setdefault(int(row), set()).add(f"p{target}")
    for row in rng.choice(rows, size=max(1, rows // 100), replace=False):
        target = int(rng.integers(len(codes["md5"])))
        md5[row] = codes["md5"][target].tobytes().hex()
        planted.setdefault(int(row), set()).add(f"m{target}")
    columns = {"pdq": hexes(pdq), "phash": hexes(random_codes(rng, rows, PHASH_BYTES)), "content_md5": md5}
    return columns, pdq, planted


def timed_match(index: TakedownIndex, columns: dict[str, list], batch_size: int) -> tuple[float, list]:
    rows = len(next(iter(columns.values())))
    results: list = []
    started = time.process_time()
    for start in range(0, rows, batch_size):
        batch = {name: values[start:start + batch_size] for name, values in columns.items()}
        results.extend(index.match_columns(batch))
    return time.process_time() - started, results


def numpy_scan(table: np.ndarray, queries: np.ndarray) -> tuple[float, list[set[int]]]:
    """The plain peer: every query against every entry, XOR + popcount in numpy."""
    words = table.view(np.uint64)
    found = []
    started = time.process_time()
    for query in queries.view(np.uint64):
        distance = np.bitwise_count(words ^ query).sum(axis=1)
        found.append(set(np.flatnonzero(distance <= PDQ_MAX).tolist()))
    return time.process_time() - started, found


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def index_only(sizes: list[int], rows: int, batch_size: int, rng: np.random.Generator) -> None:
    """The PDQ index alone: build s, us/row, rows/s per core, peak RSS; planted rows found."""
    print(f"PDQ index only (HammingSearch, auto strategy), {rows} rows, batches of {batch_size}")
    print(f"{'pdq entries':>11} {'strategy':>8} {'build s':>8} {'us/row':>8} {'rows/s':>8} {'peak MiB':>9}")
    for size in sizes:
        codes = random_codes(rng, size, PDQ_BYTES)
        queries = random_codes(rng, rows, PDQ_BYTES)
        planted = rng.choice(rows, size=max(1, rows // 50), replace=False)
        targets = rng.integers(size, size=len(planted))
        for row, target in zip(planted, targets):
            queries[row] = flip_random_bits(codes[target], int(rng.integers(0, PDQ_MAX + 1)), rng)
        started = time.process_time()
        index = HammingSearch.build(codes, np.full(size, float(PDQ_MAX)))
        build = time.process_time() - started
        found: set[tuple[int, int]] = set()
        started = time.process_time()
        for start in range(0, rows, batch_size):
            batch = queries[start:start + batch_size]
            hit_rows, hit_ids, _ = index.query((np.arange(len(batch), dtype=np.int64) + start, batch))
            found.update(zip(hit_rows.tolist(), hit_ids.tolist()))
        seconds = time.process_time() - started
        missed = [(int(r), int(t)) for r, t in zip(planted, targets) if (int(r), int(t)) not in found]
        assert not missed, f"{len(missed)} planted matches missed"
        print(f"{size:>11,} {index.strategy:>8} {build:>8.2f} {seconds / rows * 1e6:>8.1f} "
              f"{rows / seconds:>8.0f} {peak_rss_mib():>9.0f}")
        del codes, index


def both_ways(sizes: list[int], rows: int, rng: np.random.Generator) -> None:
    """One batch of ``rows`` against each size, the usual way and turned round."""
    print(f"PDQ multi-index search of one batch of {rows:,} rows, both ways round (CPU us per row)")
    print(f"{'pdq entries':>11} {'usual':>8} {'turned':>8} {'chosen':>8}")
    queries = random_codes(rng, rows, PDQ_BYTES)
    for size in sizes:
        index = _MultiIndexHamming(random_codes(rng, size, PDQ_BYTES), PDQ_MAX)
        index.search(queries[:64], turned=True)  # compiled code loaded before timing
        seconds, hits = [], []
        for turned in (False, True):
            started = time.process_time()
            found = index.search(queries, turned=turned)
            seconds.append(time.process_time() - started)
            hits.append(set(zip(found[0].tolist(), found[1].tolist())))
        assert hits[0] == hits[1], "the two ways round found different hits"
        chosen = "turned" if index.turns_for(rows) else "usual"
        print(f"{size:>11,} {seconds[0] / rows * 1e6:>8.2f} {seconds[1] / rows * 1e6:>8.2f} {chosen:>8}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,100000,1000000")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--peer-rows", type=int, default=1000,
                        help="rows sampled for the flat and numpy peers (they are slow on big lists)")
    parser.add_argument("--threads", type=int, default=1, help="faiss OpenMP threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--index-only", action="store_true",
                        help="the PDQ index alone, from packed codes (no list entries)")
    parser.add_argument("--both-ways", action="store_true",
                        help="one batch of --rows against each size, usual and turned round")
    args = parser.parse_args(argv)
    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    if args.both_ways:
        both_ways([int(s) for s in args.sizes.split(",")], args.rows, rng)
        return
    if args.index_only:
        index_only([int(s) for s in args.sizes.split(",")], args.rows, args.batch_size, rng)
        return

    header = (f"{'pdq entries':>11} {'pdq search':>10} {'build s':>8} {'all us/row':>10} {'rows/s':>8} "
              f"{'pdq us/row':>10} {'flat us/row':>11} {'numpy us/row':>12} {'numpy/index':>11} {'peak MiB':>9}")
    print(f"batch size {args.batch_size}, {args.rows} rows, faiss threads {args.threads}; "
          f"lists: n pdq + n/10 phash + n/10 md5")
    print(header)
    print("-" * len(header))
    for size in (int(s) for s in args.sizes.split(",")):
        entries, codes = make_list(rng, size)
        columns, pdq_queries, planted = make_rows(rng, args.rows, codes)

        started = time.process_time()
        index = TakedownIndex(entries)
        build = time.process_time() - started
        seconds, results = timed_match(index, columns, args.batch_size)
        for row, expected in planted.items():
            got = {m["entry_id"] for m in results[row]}
            assert expected <= got, f"planted match missed in row {row}"
        pdq_seconds, _ = timed_match(index, {"pdq": columns["pdq"]}, args.batch_size)

        sample = min(args.peer_rows, args.rows)
        flat = TakedownIndex([e for e in entries if e.kind == "pdq"], hamming_strategy="flat")
        flat_seconds, _ = timed_match(flat, {"pdq": columns["pdq"][:sample]}, args.batch_size)
        numpy_sample = max(16, sample // max(1, size // 100_000))  # keep the scan under ~10 s
        numpy_sample = min(numpy_sample, sample)
        numpy_seconds, numpy_found = numpy_scan(codes["pdq"], pdq_queries[:numpy_sample])
        for row, expected_ids in enumerate(numpy_found):
            got = {int(m["entry_id"][1:]) for m in results[row] if m["kind"] == "pdq"}
            assert got == expected_ids, f"index and numpy scan disagree on row {row}"

        per_row = seconds / args.rows * 1e6
        pdq_per_row = pdq_seconds / args.rows * 1e6
        numpy_per_row = numpy_seconds / numpy_sample * 1e6
        print(f"{size:>11,} {index.strategy('pdq'):>10} {build:>8.2f} {per_row:>10.1f} "
              f"{args.rows / seconds:>8.0f} {pdq_per_row:>10.1f} {flat_seconds / sample * 1e6:>11.1f} "
              f"{numpy_per_row:>12.1f} {numpy_per_row / pdq_per_row:>10.0f}x {peak_rss_mib():>9.0f}")
        del entries, index, flat


if __name__ == "__main__":
    main()
