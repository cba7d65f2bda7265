"""Peak memory of a local audit at 1x and Nx the rows: does it stay bounded?

Runs `laion-audit run` as a subprocess on the same config over a dataset of ROWS rows in
FILES files, then SCALE times both, and samples the resident memory of the whole process
tree (the CLI and any worker it starts, from /proc) every 50 ms. Prints rows, groups,
wall, peak RSS and the Nx/1x ratio (the goal: within 1.3x).

    python scripts/bench_memory.py                        # fetch off, 50k/4 files vs 200k/16 files
    python scripts/bench_memory.py --fetch --rows 5000    # fetch on, against a local image host
    python scripts/bench_memory.py --group-rows 0         # one pipeline, as before the driver
    python scripts/bench_memory.py --previous             # with dataset.previous_audit

Fetch on serves a few photo-like JPEGs from 127.0.0.1 (scripts/image_host.py), each URL
distinct by its query string.

--previous writes, beside each scale's dataset, a previous audit (AUDIT_SCHEMA, status
ok, hashes and scores filled) of 5 rows in 6 of it (a new version = the old + 20 %), in
files of 50k rows as an audit's groups write them, and sets dataset.previous_audit: the
measured run reuses those rows and fetches (or, fetch off, marks not_fetched) the rest.
Also printed: core-ms per row (user + sys CPU of the run's process tree / rows).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import datetime as dt
import hashlib

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: scripts.* and the package importable


def tree_rss(root: int) -> int:
    """Resident bytes of `root` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            with open(f"/proc/{pid}/status") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
    return total


def write_dataset(folder: Path, rows: int, files: int, url_of) -> None:
    folder.mkdir(parents=True)
    per_file = rows // files
    for f in range(files):
        start = f * per_file
        n = per_file if f < files - 1 else rows - start
        ids = range(start, start + n)
        table = pa.table({
            "SAMPLE_ID": pa.array(ids, pa.int64()),
            "URL": pa.array([url_of(i) for i in ids], pa.string()),
            "TEXT": pa.array([f"a photo of a quiet beach at dusk, number {i}" for i in ids], pa.string()),
            "WIDTH": pa.array([640] * n, pa.int32()),
            "HEIGHT": pa.array([480] * n, pa.int32()),
        })
        pq.write_table(table, folder / f"part-{f:05d}.parquet", row_group_size=5000)


def write_previous_audit(folder: Path, rows: int, url_of, file_rows: int = 50_000) -> int:
    """An earlier audit of the rows i with i % 6 != 5, as audit/ parquet; returns its rows."""
    from transforms.records import AUDIT_SCHEMA, audit_row, new_record
    from transforms.urls import url_sha256_of

    folder = folder / "audit"
    folder.mkdir(parents=True)
    kept = [i for i in range(rows) if i % 6 != 5]
    when = dt.datetime.now(dt.timezone.utc)
    for part, start in enumerate(range(0, len(kept), file_rows)):
        batch = []
        for i in kept[start:start + file_rows]:
            record = new_record(f"part:{i}", url_of(i), f"a photo of a quiet beach at dusk, number {i}")
            digest = hashlib.md5(str(i).encode()).hexdigest()
            record.update(url_sha256=url_sha256_of(url_of(i)), status="ok", http_status=200,
                          content_md5=digest, content_sha256=digest * 2, bytes=40_000, mime="image/jpeg",
                          width=640, height=480, phash=digest[:16], pdq=digest * 2, pdq_quality=90,
                          scores={"nudity": 0.01, "violence": 0.02}, labels=[], action="keep", audited_at=when)
            batch.append(audit_row(record))
        pq.write_table(pa.Table.from_pylist(batch, AUDIT_SCHEMA),
                       folder / f"g{part:05d}-part-00000-of-00001.parquet", row_group_size=file_rows)
    return len(kept)


def scan_cost(previous: Path, url_of, group_rows: int) -> None:
    """Print the CPU a local group spends picking its share of a previous audit
    (transforms.reuse.previous_rows_of), per previous row scanned: the part of a local
    rerun that grows with groups x previous rows."""
    from transforms.reuse import previous_files, previous_rows_of
    from transforms.urls import url_sha256_of

    files = previous_files([str(previous)])
    scanned = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    keys = pa.array(sorted({url_sha256_of(url_of(i)) for i in range(group_rows)}))
    best = None
    for _ in range(3):
        started = time.process_time()
        hits = sum(t.num_rows for t in previous_rows_of(files, keys))
        spent = time.process_time() - started
        best = spent if best is None else min(best, spent)
    print(f"share of the previous audit for one group of {group_rows} rows: {scanned} previous rows scanned, "
          f"{hits} picked, {best:.2f}s CPU = {1e6 * best / scanned:.2f} us per previous row per group")


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(work: Path, rows: int, files: int, url_of, fetch: bool, group_rows: int | None,
             previous: bool = False) -> dict:
    data = work / "data"
    write_dataset(data, rows, files, url_of)
    config = {
        "dataset": {"input": str(data / "*.parquet")},
        "output": {"path": str(work / "out")},
        "fetch": {"enabled": True, "allow_private_networks": True, "timeout_s": 10} if fetch else {"enabled": False},
        "runner": {"name": "FnApiRunner"},
    }
    if group_rows is not None:
        config["runner"]["local_group_rows"] = group_rows
    if previous:
        write_previous_audit(work / "previous", rows, url_of)
        config["dataset"]["previous_audit"] = [str(work / "previous")]
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    cpu_before = _cpu_children()
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run", str(work / "config.yaml")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak = 0
    output: list[bytes] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)
    reader.start()
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        time.sleep(0.05)
    reader.join()
    wall = time.monotonic() - started
    cpu = _cpu_children() - cpu_before
    if proc.returncode != 0:
        sys.stderr.write(b"".join(output).decode(errors="replace")[-3000:])
        raise SystemExit(f"run failed (exit {proc.returncode})")
    summary = json.loads((work / "out" / "report" / "summary.json").read_text())
    return {"rows": summary["rows_audited"], "files": files, "groups": summary.get("groups", 1),
            "wall_s": wall, "cpu_s": cpu, "peak_rss": peak, "accounted": summary["all_rows_accounted"],
            "status": summary["status"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=50_000, help="rows at 1x")
    parser.add_argument("--files", type=int, default=4, help="files at 1x")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--fetch", action="store_true", help="fetch from a local image host")
    parser.add_argument("--images", type=int, default=32, help="distinct images the host serves")
    parser.add_argument("--group-rows", type=int, default=None,
                        help="runner.local_group_rows (default: the config's; 0: one pipeline)")
    parser.add_argument("--previous", action="store_true",
                        help="set dataset.previous_audit to an earlier audit of 5 rows in 6")
    args = parser.parse_args()

    host = None
    url_of = lambda i: f"http://img.invalid/{i}.jpg"  # never fetched with fetch off
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        if args.fetch:
            from scripts.image_host import ImageHost
            from scripts.sample_images import make_photo_jpeg

            images = Path(tmp, "images")
            images.mkdir()
            for k in range(args.images):
                (images / f"{k}.jpg").write_bytes(make_photo_jpeg(k, 640, 480))
            host = ImageHost(images).start()
            url_of = lambda i: f"{host.url(f'{i % args.images}.jpg')}?row={i}"
        try:
            results = []
            for scale in (1, args.scale):
                result = run_once(Path(tmp, f"x{scale}"), args.rows * scale, args.files * scale, url_of,
                                  args.fetch, args.group_rows, args.previous)
                results.append(result)
                print(f"{scale}x: rows={result['rows']} files={result['files']} groups={result['groups']} "
                      f"wall={result['wall_s']:.1f}s core_ms_per_row={1000 * result['cpu_s'] / result['rows']:.3f} "
                      f"peak_rss={result['peak_rss'] / 2**20:.0f} MiB "
                      f"accounted={result['accounted']} status={result['status']}", flush=True)
            if args.previous:
                scan_cost(Path(tmp, f"x{args.scale}", "previous"), url_of, args.group_rows or 50_000)
        finally:
            if host is not None:
                host.stop()
    ratio = results[1]["peak_rss"] / results[0]["peak_rss"]
    children_max = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak RSS {args.scale}x/1x: {ratio:.2f}  (goal <= 1.3; largest single child process: "
          f"{children_max:.0f} MiB)")


if __name__ == "__main__":
    main()
