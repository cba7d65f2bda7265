"""Benchmark a classification pass over published embeddings (no download): the cost per
row of `configs/laion5b-embeddings.yaml`, run locally on a generated directory in
LAION's layout (img_emb/img_emb_N.npy + metadata/metadata_N.parquet).

    python scripts/bench_classify.py [--rows 100000] [--dim 512] [--model ViT-B-32]

Runs `laion-audit run configs/laion5b-embeddings.yaml` twice as a subprocess, on N and
2N rows (runner, paths and model overridden to local ones; random weights: the text side
is encoded once per worker, so weights do not change the per-row cost), and reports
rows/s and core-ms per row of the whole process tree. The per-row figure is the slope
between the two runs, so interpreter start-up and model loading do not count.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
SHARD_ROWS = 25_000


def write_layout(root: Path, rows: int, dim: int) -> None:
    """LAION's embedding layout with its own (lowercase) metadata columns."""
    rng = np.random.default_rng(0)
    (root / "metadata").mkdir(parents=True)
    (root / "img_emb").mkdir(parents=True)
    for shard, start in enumerate(range(0, rows, SHARD_ROWS)):
        n = min(SHARD_ROWS, rows - start)
        ids = np.arange(start, start + n)
        table = pa.table({
            "image_path": [f"{shard:05d}/{i:09d}.jpg" for i in ids],
            "caption": [f"a photo number {i}" for i in ids],
            "url": [f"http://img{i % 97}.example/{i}.jpg" for i in ids],
            "key": [f"{i:09d}" for i in ids],
            "md5": [f"{i:032x}" for i in ids],
            "similarity": rng.random(n),
        })
        vectors = rng.standard_normal((n, dim)).astype(np.float16)
        vectors /= np.linalg.norm(vectors.astype(np.float32), axis=1, keepdims=True).astype(np.float16)
        pq.write_table(table, root / "metadata" / f"metadata_{shard:04d}.parquet")
        np.save(root / "img_emb" / f"img_emb_{shard:04d}.npy", vectors)


def run(layout: Path, out: Path, model: str) -> tuple[float, float, dict]:
    """(wall s, CPU s of the process tree, summary) of one local run of the config."""
    overrides = {
        "dataset.input": str(layout / "metadata" / "*.parquet"),
        "dataset.url_col": "url", "dataset.caption_col": "caption",
        "output.path": str(out),
        "embedding.precomputed": str(layout), "embedding.model": model, "embedding.pretrained": "null",
        "takedown.lists": "[]", "runner.name": "FnApiRunner", "runner.options": "{}",
    }
    command = [sys.executable, "-m", "pipelines.cli", "run", str(ROOT / "configs" / "laion5b-embeddings.yaml")]
    for key, value in overrides.items():
        command += ["--set", f"{key}={value}"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, json.loads((out / "report" / "summary.json").read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512, help="embedding width (512 for ViT-B-32, 768 for ViT-L-14)")
    parser.add_argument("--model", default="ViT-B-32")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-classify-"))
    try:
        results = []
        for rows in (args.rows, 2 * args.rows):
            layout = work / f"layout-{rows}"
            write_layout(layout, rows, args.dim)
            wall, cpu, summary = run(layout, work / f"out-{rows}", args.model)
            assert summary["rows_audited"] == rows and summary["all_rows_accounted"], summary
            results.append((rows, wall, cpu))
            print(f"{rows:>9} rows  wall {wall:7.1f} s  ({rows / wall:8.0f} rows/s)  "
                  f"CPU {cpu:7.1f} s  ({1000 * cpu / rows:.3f} core-ms/row incl. start-up)", flush=True)
        (n1, w1, c1), (n2, w2, c2) = results
        slope = 1000 * (c2 - c1) / (n2 - n1)
        print(f"per row (slope {n1}->{n2} rows): {slope:.3f} core-ms/row, "
              f"{(n2 - n1) / (w2 - w1):.0f} rows/s on this machine")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
