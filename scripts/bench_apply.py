"""Benchmark `laion-audit apply` against a DuckDB anti-join on sha256(URL), in one run.

    python scripts/bench_apply.py [--rows 800000] [--files 8] [--entries 2000]

Writes LAION-style metadata parquet files (URL, TEXT, WIDTH, HEIGHT, similarity,
punsafe, pwatermark; most URLs already normal, some with upper-case hosts, default
ports or fragments) and a published removal list (`url_sha256`, `row_key`) of
``--entries`` hashes, half of them of URLs in the files. Then runs, each as its own
process on the same files:

- duckdb: ``COPY (SELECT * FROM files ANTI JOIN published ON sha256(URL) =
  url_sha256) TO out.parquet`` (its fastest honest form: one query, all cores, no URL
  normalisation);
- laion-audit apply: the CLI, default runner (a local run: cleaned in its own process,
  without Beam), one cleaned file per input. Every file loses rows here, so none is
  copied as it is (what a file that loses none costs is not measured).

Prints wall seconds, rows/s, core-ms per row (user + sys CPU of the process tree /
rows), peak RSS and the ratios; both must keep the same number of rows.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent

DUCKDB_SCRIPT = """
import sys, duckdb
data, published, out = sys.argv[1:4]
con = duckdb.connect()
con.execute(f\"\"\"COPY (SELECT d.* FROM read_parquet('{data}') d ANTI JOIN read_parquet('{published}') p
                ON sha256(d.URL) = p.url_sha256) TO '{out}' (FORMAT parquet)\"\"\")
print(con.execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchone()[0])
"""


def make_urls(rng: np.random.Generator, start: int, n: int) -> list[str]:
    hosts = [f"img{i}.cdn{i % 37}.example.com" for i in range(2000)]
    urls = []
    for i in range(start, start + n):
        host = hosts[int(rng.integers(len(hosts)))]
        url = f"https://{host}/images/{i // 1000}/{i:09d}_{int(rng.integers(1 << 30)):x}.jpg"
        kind = i % 50
        if kind == 0:
            url = url.replace(host, host.upper(), 1)  # needs normalising
        elif kind == 1:
            url = url.replace(host, host + ":443", 1)
        elif kind == 2:
            url += "#main"
        elif kind == 3:
            url += "?w=512&h=512"
        urls.append(url)
    return urls


def make_inputs(folder: Path, rows: int, files: int, entries: int, seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    shutil.rmtree(folder, ignore_errors=True)
    data, published = folder / "data", folder / "published"
    data.mkdir(parents=True)
    published.mkdir()
    per_file = -(-rows // files)
    removed: list[str] = []
    for f, start in enumerate(range(0, rows, per_file)):
        n = min(per_file, rows - start)
        urls = make_urls(rng, start, n)
        for i in rng.choice(n, size=max(1, entries // 2 // files), replace=False):
            if i % 50 not in (0, 1, 2):  # the peer does not normalise: plant URLs both agree on
                removed.append(hashlib.sha256(urls[int(i)].encode()).hexdigest())
        pq.write_table(pa.table({
            "URL": pa.array(urls, pa.string()),
            "TEXT": pa.array([f"a photo of thing {start + i} on a table" for i in range(n)], pa.string()),
            "WIDTH": pa.array(rng.integers(200, 2000, n), pa.int64()),
            "HEIGHT": pa.array(rng.integers(200, 2000, n), pa.int64()),
            "similarity": pa.array(rng.random(n), pa.float64()),
            "punsafe": pa.array(rng.random(n), pa.float64()),
            "pwatermark": pa.array(rng.random(n), pa.float64()),
        }), data / f"part-{f:05d}.parquet")
    removed += [rng.integers(0, 256, 32, dtype=np.uint8).tobytes().hex() for _ in range(entries - len(removed))]
    pq.write_table(pa.table({"url_sha256": removed, "row_key": [f"k{i}" for i in range(len(removed))]}),
                   published / "part-00000.parquet")
    return data, published


# Runs a command and reports its process tree's CPU and largest RSS on stderr's last
# line: RUSAGE_CHILDREN's maxrss is the largest child ever waited for, so each contender
# is measured from a fresh parent of its own.
MEASURE = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:]).returncode
used = resource.getrusage(resource.RUSAGE_CHILDREN)
print(used.ru_utime + used.ru_stime, used.ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


def run_tree(command: list[str]) -> tuple[float, float, float, str]:
    """(wall s, user+sys CPU s of the process tree, peak RSS MiB, stdout) of one command."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", MEASURE, *command], capture_output=True, text=True, cwd=ROOT)
    wall = time.monotonic() - started
    if done.returncode:
        raise SystemExit(f"{command[0]} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    cpu, rss_kib = done.stderr.strip().splitlines()[-1].split()
    return wall, float(cpu), int(rss_kib) / 1024, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=800_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--entries", type=int, default=2000)
    parser.add_argument("--data", default="bench-data/apply")
    args = parser.parse_args()

    folder = (ROOT / args.data).resolve()
    data, published = make_inputs(folder, args.rows, args.files, args.entries)
    results = {}
    out_duck = folder / "duckdb.parquet"
    wall, cpu, rss, stdout = run_tree([sys.executable, "-c", DUCKDB_SCRIPT, str(data / "*.parquet"),
                                       str(published / "*.parquet"), str(out_duck)])
    results["duckdb anti-join (peer)"] = (wall, cpu, rss, int(stdout.strip().splitlines()[-1]))
    out_apply = folder / "clean"
    shutil.rmtree(out_apply, ignore_errors=True)
    cli = str(Path(sys.executable).parent / "laion-audit")
    inputs = sorted(str(p) for p in data.glob("*.parquet"))
    wall, cpu, rss, _ = run_tree([cli, "apply", "--removals", str(published), "--input", *inputs,
                                  "--out", str(out_apply)])
    kept = sum(pq.ParquetFile(p).metadata.num_rows for p in out_apply.glob("*.parquet"))
    results["laion-audit apply"] = (wall, cpu, rss, kept)

    print(f"{args.rows} rows in {args.files} parquet files, {args.entries} published hashes; "
          f"{os.cpu_count()} cores (RSS: the largest single process of the tree)")
    print(f"{'contender':<26} {'kept':>9} {'wall s':>8} {'rows/s':>10} {'core-ms/row':>12} {'peak MiB':>9}")
    for name, (wall, cpu, rss, kept_rows) in results.items():
        print(f"{name:<26} {kept_rows:>9} {wall:8.2f} {args.rows / wall:10.0f} {1000 * cpu / args.rows:12.5f} "
              f"{rss:9.0f}")
    (w_peer, c_peer, _, k_peer), (w_ours, c_ours, _, k_ours) = results.values()
    print(f"apply / duckdb: wall {w_ours / w_peer:.2f}x, core-ms per row {c_ours / c_peer:.2f}x")
    assert k_peer == k_ours, f"kept rows differ: duckdb {k_peer}, apply {k_ours}"


if __name__ == "__main__":
    main()
