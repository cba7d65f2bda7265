"""Benchmark `laion-audit rematch`: an existing audit table against a takedown list,
offline, on Arrow batches — and the same matching on per-row dicts as the peer.

    python scripts/bench_rematch.py [--rows 1000000] [--entries 100000]

Writes a synthetic audit table (random PDQ / pHash / MD5 / SHA-256 / URL hashes, 1 in
10 000 rows planted near a list entry) and a takedown list, then times:

- rematch: the `laion-audit rematch` pipeline (Arrow record batches end to end);
- per-row peer: the same audit read as Python dicts, matched with MatchTakedown and
  written back, i.e. what rematch would cost built like the fetch path.

Both run on Beam's in-memory local runner in this process. Prints rows/s and core-ms
per row (process CPU time / rows) and their ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import apache_beam as beam  # noqa: E402

from pipelines.audit import run_pipeline  # noqa: E402
from pipelines.config import RunnerConfig  # noqa: E402
from pipelines.manifest import (  # noqa: E402
    DatasetInfo,
    ModelInfo,
    PolicyInfo,
    RunManifest,
    now_utc,
    package_version,
    write_manifest,
)
from pipelines.rematch import plan_rematch, run_rematch  # noqa: E402
from transforms.records import AUDIT_SCHEMA  # noqa: E402
from transforms.outputs import RecordsToTables  # noqa: E402
from transforms.takedown import MatchTakedown  # noqa: E402
from transforms.write import WriteAudit, write_json  # noqa: E402


def _hex(rng: np.random.Generator, rows: int, nbytes: int) -> np.ndarray:
    raw = rng.integers(0, 256, size=(rows, nbytes), dtype=np.uint8)
    return np.array([r.tobytes().hex() for r in raw])


def flip_bits(hex_value: str, bits: int, rng: np.random.Generator) -> str:
    value = int(hex_value, 16)
    for bit in rng.choice(len(hex_value) * 4, size=bits, replace=False):
        value ^= 1 << int(bit)
    return f"{value:0{len(hex_value)}x}"


def make_inputs(folder: Path, rows: int, entries: int, seed: int = 0) -> tuple[Path, Path, int]:
    rng = np.random.default_rng(seed)
    audit = folder / "audit"
    shutil.rmtree(folder, ignore_errors=True)
    (audit / "audit").mkdir(parents=True)
    (audit / "report").mkdir()
    list_pdq = _hex(rng, entries, 32)
    planted = 0
    chunk = 250_000
    for part, start in enumerate(range(0, rows, chunk)):
        n = min(chunk, rows - start)
        pdq = _hex(rng, n, 32)
        for i in range(0, n, 10_000):  # plant a near copy of a list entry
            pdq[i] = flip_bits(list_pdq[int(rng.integers(entries))], 10, rng)
            planted += 1
        table = pa.table({
            "row_id": pa.array([f"part-{part}.parquet:{i}" for i in range(n)]),
            "url": pa.array([f"http://img.example/{start + i}.jpg" for i in range(n)]),
            "url_sha256": pa.array(_hex(rng, n, 32)),
            "status": pa.array(["ok"] * n),
            "content_md5": pa.array(_hex(rng, n, 16)),
            "content_sha256": pa.array(_hex(rng, n, 32)),
            "bytes": pa.array(np.full(n, 130_000), pa.int64()),
            "phash": pa.array(_hex(rng, n, 8)),
            "pdq": pa.array(pdq),
            "pdq_quality": pa.array(np.full(n, 90), pa.int32()),
            "action": pa.array(["keep"] * n),
        })
        full = pa.table({f.name: table.column(f.name) if f.name in table.column_names
                         else pa.nulls(n, f.type) for f in AUDIT_SCHEMA})
        pq.write_table(full, audit / "audit" / f"part-{part:05d}.parquet", row_group_size=65_536)
    write_json(str(audit / "report" / "summary.json"), {"rows_audited": rows})
    write_manifest(str(audit), RunManifest(
        kind="audit", rematch_of=None, inputs=[], dataset=DatasetInfo(), thresholds={}, policy=PolicyInfo(),
        model=ModelInfo(), takedown_lists=[], config_sha256="", laion_audit_version=package_version(),
        written_at=now_utc(),
    ))
    lists = folder / "list.parquet"
    pq.write_table(pa.table({
        "list_id": ["bench"] * entries, "entry_id": [f"e{i}" for i in range(entries)],
        "kind": ["pdq"] * entries, "value": list_pdq,
    }), lists)
    return audit, lists, planted


def per_row_peer(audit: Path, lists: Path, out: Path) -> None:
    def build(pipeline):
        (
            pipeline
            | beam.io.ReadFromParquet(str(audit / "audit" / "*.parquet"))
            | beam.Reshuffle()
            | MatchTakedown([str(lists)])
            | RecordsToTables()
            | WriteAudit(str(out))
        )

    run_pipeline(RunnerConfig(), build)


def timed(fn) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.monotonic()
    fn()
    return time.monotonic() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--data", default="bench-data/rematch")
    parser.add_argument("--skip-peer", action="store_true")
    args = parser.parse_args()

    folder = Path(args.data)
    audit, lists, planted = make_inputs(folder, args.rows, args.entries)
    results = {}
    out = folder / "out"
    summary = {}

    def rematch():
        summary.update(run_rematch(plan_rematch(str(audit), [str(lists)], str(out))))

    results["rematch (Arrow batches)"] = timed(rematch)
    assert summary["all_rows_accounted"], summary
    removed = summary["action"].get("remove", 0)
    assert removed >= planted, f"{removed} removed, {planted} planted"
    if not args.skip_peer:
        results["per-row dicts + MatchTakedown (peer)"] = timed(lambda: per_row_peer(audit, lists, folder / "peer"))

    rows = args.rows
    print(f"{rows} audit rows, {args.entries} PDQ list entries, {planted} planted, {removed} removed; "
          f"{os.cpu_count()} cores, in-memory runner")
    print(f"{'contender':<40} {'wall s':>8} {'rows/s':>10} {'core-ms/row':>12}")
    for name, (wall, cpu) in results.items():
        print(f"{name:<40} {wall:8.1f} {rows / wall:10.0f} {1000 * cpu / rows:12.4f}")
    if len(results) == 2:
        (w1, c1), (w2, c2) = results.values()
        print(f"ratio rematch / peer: rows/s {w2 / w1:.2f}x, core-ms/row {c1 / c2:.2f}x")
    print(json.dumps({"status": summary["status"], "action": summary["action"]}))


if __name__ == "__main__":
    main()
