"""Memory and time of loading a big PDQ takedown list into a worker's TakedownIndex.

    python scripts/bench_list_memory.py [--entries 10000000] [--formats parquet,txt]
                                        [--rows 20000] [--dir bench-data/list-memory]
    python scripts/bench_list_memory.py --entries 1000000 --code-root /path/to/other/tree

Writes a list of ``--entries`` random PDQ hashes in each format (parquet in the schema
``write_list`` writes; ``.txt``, one hash per line), once per size (reused from ``--dir``
afterwards). Then, for each format, a fresh Python process does what a worker does:
``load_lists`` of the file, ``TakedownIndex`` of the entries (the real loading path),
and matches ``--rows`` query rows (2% planted near copies of list entries at 0..31 bits,
every one of which must be found, with the right entry id and distance) in batches of
1024. It prints, per format: load and build time (CPU seconds of that process, so per
core on a shared machine), match cost per row, the process's RSS after its imports,
after loading (and its peak so far), after the index is built, and its peak RSS (what a
worker must hold).

``--code-root`` imports ``transforms`` from another checkout (an older tree, for a
before / after comparison in the same script).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PDQ_BYTES, PDQ_MAX = 32, 31
BATCH = 1024


def rss_mib() -> float:
    """The process's resident set now (MiB)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _hex_lines(codes: np.ndarray) -> bytes:
    """codes as lowercase hex, one per line (vectorised: no Python string per hash)."""
    table = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    out = np.empty((len(codes), 2 * codes.shape[1] + 1), dtype=np.uint8)
    out[:, 0:-1:2] = table[codes >> 4]
    out[:, 1:-1:2] = table[codes & 15]
    out[:, -1] = ord("\n")
    return out.tobytes()


def write_inputs(folder: Path, entries: int, rows: int, formats: list[str], seed: int) -> dict[str, Path]:
    """The list files (and the query rows with their planted matches), made once."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    paths = {fmt: folder / f"pdq-{entries}.{fmt}" for fmt in formats}
    queries = folder / f"queries-{entries}-{rows}.npz"
    if all(p.exists() for p in paths.values()) and queries.exists():
        return {**paths, "queries": queries}
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, (entries, PDQ_BYTES), dtype=np.uint8)
    query = rng.integers(0, 256, (rows, PDQ_BYTES), dtype=np.uint8)
    planted_rows = rng.choice(rows, size=max(1, rows // 50), replace=False)
    planted_entries = rng.integers(entries, size=len(planted_rows))
    planted_bits = rng.integers(0, PDQ_MAX + 1, size=len(planted_rows))
    for row, target, bits in zip(planted_rows, planted_entries, planted_bits):
        code = codes[target].copy()
        for bit in rng.choice(PDQ_BYTES * 8, size=int(bits), replace=False):
            code[bit // 8] ^= np.uint8(1 << (7 - bit % 8))
        query[row] = code
    np.savez(queries, codes=query, rows=planted_rows, entries=planted_entries, bits=planted_bits)
    lines = _hex_lines(codes)
    del codes
    for fmt, path in paths.items():
        tmp = path.with_suffix(".part")
        if fmt == "txt":
            tmp.write_bytes(lines)
        elif fmt == "parquet":
            # The schema write_list writes, built column-wise in slices (10M entries as
            # TakedownEntry objects would not fit here either).
            schema = pa.schema([("list_id", pa.string()), ("entry_id", pa.string()), ("kind", pa.string()),
                                ("value", pa.string()), ("max_distance", pa.float64()),
                                ("reason", pa.string()), ("quality", pa.int32())])
            width = 2 * PDQ_BYTES + 1
            step = 1 << 20
            with pq.ParquetWriter(tmp, schema) as writer:
                for start in range(0, entries, step):
                    stop = min(entries, start + step)
                    n = stop - start
                    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * (width - 1))
                    body = np.frombuffer(lines, dtype=np.uint8)[start * width:stop * width]
                    values = pa.StringArray.from_buffers(
                        n, offsets.buffers()[1], pa.py_buffer(body.reshape(n, width)[:, :-1].tobytes()))
                    ids = pc.binary_join_element_wise(
                        "p", pc.cast(pa.array(np.arange(start, stop)), pa.string()), "")
                    writer.write_table(pa.table({
                        "list_id": pa.array(["bench"] * n), "entry_id": ids,
                        "kind": pa.array(["pdq"] * n), "value": values,
                        "max_distance": pa.nulls(n, pa.float64()), "reason": pa.nulls(n, pa.string()),
                        "quality": pa.nulls(n, pa.int32())}, schema=schema))
        else:
            raise SystemExit(f"--formats: {fmt} is not written by this benchmark (parquet, txt)")
        tmp.rename(path)
    return {**paths, "queries": queries}


def child(path: str, queries_path: str, fmt: str) -> None:
    """One worker's load, build and match, measured; one JSON line on stdout."""
    import faiss

    from transforms.takedown import TakedownIndex, load_lists

    faiss.omp_set_num_threads(1)
    data = np.load(queries_path)
    query, planted_rows, planted_entries, planted_bits = data["codes"], data["rows"], data["entries"], data["bits"]
    hexes = query.tobytes().hex()
    width = 2 * PDQ_BYTES
    columns = [hexes[i:i + width] for i in range(0, len(hexes), width)]
    out = {"format": fmt, "rss_start": rss_mib()}

    started, wall = time.process_time(), time.perf_counter()
    entries = load_lists([path])
    out.update(load_s=time.process_time() - started, load_wall=time.perf_counter() - wall, rss_loaded=rss_mib(),
               peak_loaded=peak_mib(), entries=len(entries))
    started, wall = time.process_time(), time.perf_counter()
    index = TakedownIndex(entries)
    del entries  # what IndexSpec.build (TakedownIndex.from_lists) keeps: the index only
    out.update(build_s=time.process_time() - started, build_wall=time.perf_counter() - wall,
               rss_index=rss_mib(), peak_index=peak_mib(), strategy=index.strategy("pdq"))

    found: dict[int, list[dict]] = {}
    started = time.process_time()
    for start in range(0, len(columns), BATCH):
        for row, matches in enumerate(index.match_columns({"pdq": columns[start:start + BATCH]}), start):
            if matches:
                found[row] = matches
    out["match_us_per_row"] = (time.process_time() - started) / len(columns) * 1e6
    id_of = (lambda e: str(e + 1)) if fmt == "txt" else (lambda e: f"p{e}")
    for row, target, bits in zip(planted_rows.tolist(), planted_entries.tolist(), planted_bits.tolist()):
        hits = {(m["entry_id"], m["distance"]) for m in found.get(row, [])}
        assert (id_of(target), float(bits)) in hits, f"planted match missed in row {row}"
    out.update(peak=peak_mib(), rss_end=rss_mib(), rows_hit=len(found), planted=len(planted_rows))
    print(json.dumps(out))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=10_000_000)
    parser.add_argument("--formats", default="parquet,txt")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--dir", default=str(ROOT / "bench-data" / "list-memory"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--code-root", default=str(ROOT), help="the checkout whose transforms/ is measured")
    parser.add_argument("--child", nargs=3, metavar=("PATH", "QUERIES", "FORMAT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(args.code_root).resolve()))
    if args.child:
        child(*args.child)
        return

    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    started = time.perf_counter()
    inputs = write_inputs(Path(args.dir), args.entries, args.rows, formats, args.seed)
    print(f"{args.entries:,} PDQ entries, {args.rows:,} query rows (2% planted), code from {args.code_root}; "
          f"inputs ready in {time.perf_counter() - started:.1f} s")
    header = (f"{'format':>8} {'file MiB':>8} {'load s':>7} {'build s':>7} {'match us/row':>12} "
              f"{'RSS start':>9} {'RSS loaded':>10} {'peak load':>9} {'RSS index':>9} {'peak MiB':>8}")
    print(header)
    print("-" * len(header))
    for fmt in formats:
        path = inputs[fmt]
        run = subprocess.run([sys.executable, __file__, "--code-root", args.code_root, "--child",
                              str(path), str(inputs["queries"]), fmt],
                             capture_output=True, text=True, check=False)
        if run.returncode:
            print(f"{fmt:>8} failed: {run.stderr.strip().splitlines()[-1] if run.stderr.strip() else run.returncode}")
            continue
        r = json.loads(run.stdout.strip().splitlines()[-1])
        print(f"{fmt:>8} {os.path.getsize(path) / 2**20:>8.0f} {r['load_s']:>7.2f} {r['build_s']:>7.2f} "
              f"{r['match_us_per_row']:>12.1f} {r['rss_start']:>9.0f} {r['rss_loaded']:>10.0f} "
              f"{r['peak_loaded']:>9.0f} {r['rss_index']:>9.0f} {r['peak']:>8.0f}")


if __name__ == "__main__":
    main()
