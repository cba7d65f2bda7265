"""Benchmark a fetch-off audit (`fetch.enabled: false`): `laion-audit run` on tables of
audit rows against the same run on records (one dict per row), in one run.

    python scripts/bench_fetch_off.py [--rows 200000] [--files 4] [--entries 2000] [--only tables]

Writes N LAION-style rows (parquet shards with LAION's metadata columns, a null caption
in 997; captions drawn from --caption-pool distinct ones of scripts/bench_captions.py's
LAION-like mix: product, stock-photo and alt-text captions in
five languages, a fifth with numbers, a few medical, about 2% with personal data), a
url / url_sha256 takedown list with hits, and a config with a review and a remove policy.
Then runs the real CLI twice, each in its own process tree: tables (the default) and
records (LAION_AUDIT_TABLES=0). For each: rows/s, core-µs per row (user + sys CPU of the
whole process tree / rows), peak RSS; then the ratio, and whether the two audit/ tables
hold the same rows (every column but audited_at).
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.bench_apply import make_urls  # noqa: E402
from scripts.bench_captions import make_mix  # noqa: E402


def make_inputs(folder: Path, rows: int, files: int, entries: int, pool: int, seed: int = 0) -> Path:
    """The dataset, the takedown list and the config under `folder`; returns the config.
    Captions are drawn at random from `pool` distinct ones of the mix."""
    rng = np.random.default_rng(seed)
    shutil.rmtree(folder, ignore_errors=True)
    data = folder / "data"
    data.mkdir(parents=True)
    captions = [text for _, text in make_mix(min(rows, pool), seed)]
    pick = random.Random(seed)
    per_file = -(-rows // files)
    hits: list[tuple[str, str]] = []
    for f, start in enumerate(range(0, rows, per_file)):
        n = min(per_file, rows - start)
        urls = make_urls(rng, start, n)
        texts = [pick.choice(captions) for _ in range(n)]
        for i in range(0, n, 997):
            texts[i] = None  # null captions
        for i in rng.choice(n, size=max(1, entries // 2 // files), replace=False):
            url = urls[int(i)]
            hits.append(("url", url) if i % 2 else ("url_sha256", hashlib.sha256(url.encode()).hexdigest()))
        pq.write_table(pa.table({
            "SAMPLE_ID": pa.array(np.arange(start, start + n), pa.int64()),
            "URL": pa.array(urls, pa.string()),
            "TEXT": pa.array(texts, pa.string()),
            "HEIGHT": pa.array(rng.integers(200, 2000, n), pa.int64()),
            "WIDTH": pa.array(rng.integers(200, 2000, n), pa.int64()),
            "LICENSE": pa.array(["?"] * n, pa.string()),
            "NSFW": pa.array(["UNLIKELY"] * n, pa.string()),
            "similarity": pa.array(rng.random(n), pa.float64()),
        }), data / f"part-{f:05d}.parquet", row_group_size=20_000)
    while len(hits) < entries:  # entries that match nothing
        hits.append(("url_sha256", rng.integers(0, 256, 32, dtype=np.uint8).tobytes().hex()))
    listing = folder / "takedown.csv"
    with open(listing, "w", encoding="utf-8") as handle:
        handle.write("list_id,entry_id,kind,value\n")
        for i, (kind, value) in enumerate(hits):
            handle.write(f"requests,e{i},{kind},{value}\n")
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump({
        "dataset": {"input": str(data / "*.parquet")},
        "output": {"path": str(folder / "out")},
        "fetch": {"enabled": False},
        "takedown": {"lists": [str(listing)]},
        "policy": {"remove_if": ["national_id or payment_card"],
                   "review_if": ["email or phone", "name_with_medical_term"]},
        "runner": {"name": "FnApiRunner"},
    }))
    return config


# Runs the command as its only child, then prints that child's rusage: each contender's
# figures are its own process tree's, whatever ran before it.
_TREE = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(r.ru_utime + r.ru_stime, r.ru_maxrss)
"""


def run_tree(command: list[str], env: dict) -> tuple[float, float, float]:
    """(wall s, user+sys CPU s of the command's process tree, peak RSS MiB of its largest process)."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", _TREE, *command], check=True, capture_output=True, text=True,
                          cwd=ROOT, env=env)
    wall = time.monotonic() - started
    cpu, rss = done.stdout.split()
    return wall, float(cpu), int(rss) / 1024


def audit_rows(out: Path) -> pa.Table:
    table = pa.concat_tables(pq.read_table(f) for f in sorted(glob.glob(str(out / "audit" / "*.parquet"))))
    return table.drop_columns(["audited_at"]).sort_by("row_id")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--entries", type=int, default=2000)
    parser.add_argument("--caption-pool", type=int, default=200_000,
                        help="distinct captions the rows draw from (at 200k rows: about 63%% of rows distinct)")
    parser.add_argument("--data", default="bench-data/fetch_off")
    parser.add_argument("--only", choices=("tables", "records"), help="run one contender only")
    args = parser.parse_args()

    folder = (ROOT / args.data).resolve()
    config = make_inputs(folder, args.rows, args.files, args.entries, args.caption_pool)
    cli = str(Path(sys.executable).parent / "laion-audit")
    results, outs = {}, {}
    for name, flag in (("tables", "1"), ("records", "0")):
        if args.only and name != args.only:
            continue
        out = folder / f"out-{name}"
        env = {**os.environ, "LAION_AUDIT_TABLES": flag}
        results[name] = run_tree([cli, "--quiet", "run", str(config), "--set", f"output.path={out}"], env)
        outs[name] = out

    print(f"{args.rows} LAION-style rows in {args.files} parquet files, fetch off, {args.entries}-entry "
          f"url/url_sha256 list; {os.cpu_count()} cores, shared (RSS: the largest process of each tree)")
    print(f"{'path':<10} {'wall s':>8} {'rows/s':>10} {'core-µs/row':>12} {'peak MiB':>9}")
    for name, (wall, cpu, rss) in results.items():
        print(f"{name:<10} {wall:8.2f} {args.rows / wall:10.0f} {1e6 * cpu / args.rows:12.1f} {rss:9.0f}")
    if len(results) == 2:
        (w_t, c_t, _), (w_r, c_r, _) = results["tables"], results["records"]
        print(f"records / tables: core-µs per row {c_r / c_t:.2f}x, wall {w_r / w_t:.2f}x")
        same = audit_rows(outs["tables"]).equals(audit_rows(outs["records"]))
        print(f"audit/ rows identical (all columns but audited_at): {same}")
        if not same:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
