"""Benchmark fetch + hash: laion-audit against img2dataset over the same local host.

    python scripts/bench_fetch.py [--images 2000] [--workers 2] [--skip-peer]

Generates photo-like JPEGs of 500-1000 px (about 130 KB each, cached under
bench-data/), serves them from a separate image-host process on 127.0.0.1, and runs each
contender as its own process over the same URL list:

- laion-audit: `laion-audit run configs/local.yaml` (fetch, decode, MD5/SHA-256, pHash,
  PDQ, audit table) on the local multi-process runner;
- img2dataset (the peer): download and resize to 512 px (decode + resize + re-encode +
  write files), the closest job it has to ours.

Prints rows/s (wall clock, process start included) and core-ms per row (user + system
CPU of the process and all its children, divided by rows), and the ratio of the two.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.sample_images import make_photo_jpeg  # noqa: E402

BIN = Path(sys.executable).parent


def make_images(folder: Path, count: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    names = []
    for i in range(count):
        name = f"photo{i:05d}.jpg"
        path = folder / name
        if not path.exists():
            width = rng.randint(500, 1000)
            height = int(width * rng.choice([0.66, 0.75, 1.0, 1.33]))
            path.write_bytes(make_photo_jpeg(i, width, height, quality=90))
        names.append(name)
    return names


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_host(folder: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "image_host.py"), str(folder), "--port", str(port)],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("image host did not start")


def timed(cmd: list[str], **kwargs) -> tuple[float, float, subprocess.CompletedProcess]:
    """Run `cmd`; return (wall seconds, CPU seconds of it and its children, result)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-3000:] + result.stderr[-3000:])
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return wall, cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--data", default="bench-data")
    parser.add_argument("--skip-peer", action="store_true")
    args = parser.parse_args()

    data = Path(args.data)
    names = make_images(data / "images", args.images)
    sizes = [(data / "images" / n).stat().st_size for n in names]
    host, port = start_host(data / "images")
    rows = {}
    try:
        urls = [f"http://127.0.0.1:{port}/{n}" for n in names]
        dataset = data / "rows.parquet"
        pq.write_table(pa.table({"URL": urls, "TEXT": [f"photo {i}" for i in range(len(urls))]}), dataset)

        out = data / "out-audit"
        shutil.rmtree(out, ignore_errors=True)
        wall, cpu, _ = timed([
            str(BIN / "laion-audit"), "run", str(ROOT / "configs" / "local.yaml"),
            "--set", f"dataset.input={dataset}", "--set", f"output.path={out}",
            "--set", "fetch.allow_private_networks=true", "--set", "fetch.per_host=64",
            "--set", f"runner.options.direct_num_workers={args.workers}",
        ])
        summary = json.loads((out / "report" / "summary.json").read_text())
        assert summary["status"].get("ok") == len(urls), summary["status"]
        rows["laion-audit (fetch+decode+md5/sha256+pHash+PDQ)"] = (wall, cpu)
        pipeline_wall = summary["wall_s"]

        if not args.skip_peer:
            url_list = data / "urls.parquet"
            pq.write_table(pa.table({"url": urls}), url_list)
            peer_out = data / "out-img2dataset"
            shutil.rmtree(peer_out, ignore_errors=True)
            wall, cpu, _ = timed([
                str(BIN / "img2dataset"), f"--url_list={url_list}", "--input_format=parquet",
                "--url_col=url", f"--output_folder={peer_out}", "--output_format=files",
                f"--processes_count={args.workers}", "--thread_count=64", "--image_size=512",
                "--resize_mode=keep_ratio", "--compute_hash=md5", "--enable_wandb=False",
                "--number_sample_per_shard=1000",
            ], env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})
            stats = list(peer_out.glob("*_stats.json"))
            ok = sum(json.loads(p.read_text())["successes"] for p in stats)
            assert ok == len(urls), f"img2dataset fetched {ok} of {len(urls)}"
            rows["img2dataset (fetch+decode+resize 512+encode+write)"] = (wall, cpu)
    finally:
        host.terminate()
        host.wait(timeout=10)

    n = len(names)
    print(f"{n} JPEGs, {sum(sizes) / n / 1024:.0f} KB mean, 500-1000 px; {args.workers} workers; "
          f"{os.cpu_count()} cores")
    print(f"{'contender':<55} {'wall s':>8} {'rows/s':>8} {'core-ms/row':>12}")
    for name, (wall, cpu) in rows.items():
        print(f"{name:<55} {wall:8.1f} {n / wall:8.1f} {1000 * cpu / n:12.2f}")
    print(f"laion-audit pipeline alone (no interpreter start-up): {pipeline_wall:.1f} s, "
          f"{n / pipeline_wall:.1f} rows/s")
    if len(rows) == 2:
        (w1, c1), (w2, c2) = rows.values()
        print(f"ratio laion-audit / img2dataset: rows/s {w2 / w1:.2f}x, core-ms/row {c1 / c2:.2f}x")


if __name__ == "__main__":
    main()
