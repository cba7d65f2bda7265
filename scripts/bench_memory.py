"""Peak memory of a local audit at 1x and Nx the rows: does it stay bounded?

Runs `laion-audit run` as a subprocess on the same config over a dataset of ROWS rows in
FILES files, then SCALE times both, and samples the resident memory of the whole process
tree (the CLI and any worker it starts, from /proc) every 50 ms. Prints rows, groups,
wall, peak RSS and the Nx/1x ratio (the goal: within 1.3x).

    python scripts/bench_memory.py                        # fetch off, 50k/4 files vs 200k/16 files
    python scripts/bench_memory.py --fetch --rows 5000    # fetch on, against a local image host
    python scripts/bench_memory.py --group-rows 0         # one pipeline, as before the driver

Fetch on serves a few photo-like JPEGs from 127.0.0.1 (scripts/image_host.py), each URL
distinct by its query string.
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


def run_once(work: Path, rows: int, files: int, url_of, fetch: bool, group_rows: int | None) -> dict:
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
    (work / "config.yaml").write_text(yaml.safe_dump(config))
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
    if proc.returncode != 0:
        sys.stderr.write(b"".join(output).decode(errors="replace")[-3000:])
        raise SystemExit(f"run failed (exit {proc.returncode})")
    summary = json.loads((work / "out" / "report" / "summary.json").read_text())
    return {"rows": summary["rows_audited"], "files": files, "groups": summary.get("groups", 1),
            "wall_s": wall, "peak_rss": peak, "accounted": summary["all_rows_accounted"],
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
                                  args.fetch, args.group_rows)
                results.append(result)
                print(f"{scale}x: rows={result['rows']} files={result['files']} groups={result['groups']} "
                      f"wall={result['wall_s']:.1f}s peak_rss={result['peak_rss'] / 2**20:.0f} MiB "
                      f"accounted={result['accounted']} status={result['status']}", flush=True)
        finally:
            if host is not None:
                host.stop()
    ratio = results[1]["peak_rss"] / results[0]["peak_rss"]
    children_max = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak RSS {args.scale}x/1x: {ratio:.2f}  (goal <= 1.3; largest single child process: "
          f"{children_max:.0f} MiB)")


if __name__ == "__main__":
    main()
