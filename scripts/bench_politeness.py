"""Benchmark what politeness costs: the audit with robots.txt and host routing (the
defaults) against the same audit without them, over the same local image host.

    python scripts/bench_politeness.py [--images 2000] [--workers 2]

Both runs are `laion-audit run configs/local.yaml` over the same URLs (bench_fetch's
images, served by scripts/image_host.py on 127.0.0.1 with a robots.txt of a few dozen
rules that allow every image, so both runs fetch and hash the same rows):

- polite: the defaults: each host's robots.txt read and every URL checked against it,
  rows routed by host (GroupByKey) before fetching, per-host pace kept;
- plain: `fetch.respect_robots_txt=false`, `fetch.workers_per_host=null` (batched as
  they come, the fetcher as it was without robots.txt or routing).

Prints rows/s (wall clock, process start included), core-ms per row (user + system CPU
of the process tree / rows) and peak RSS, and the polite / plain ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.bench_fetch import BIN, make_images, start_host, timed  # noqa: E402

ROBOTS_TXT = "User-agent: *\n" + "".join(f"Disallow: /private{i}/\nAllow: /private{i}/pub\n" for i in range(20)) + \
    "Disallow: /*.gif$\n\nUser-agent: laion-audit\n" + "".join(f"Disallow: /secret{i}/*.png$\n" for i in range(10))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--data", default="bench-data")
    args = parser.parse_args()

    data = Path(args.data)
    names = make_images(data / "images", args.images)
    robots = data / "robots.txt"
    robots.write_text(ROBOTS_TXT)
    host, port = start_host(data / "images", robots)
    results = {}
    try:
        urls = [f"http://127.0.0.1:{port}/{n}" for n in names]
        dataset = data / "politeness-rows.parquet"
        pq.write_table(pa.table({"URL": urls, "TEXT": [f"photo {i}" for i in range(len(urls))]}), dataset)
        variants = {
            "polite (robots.txt + routed by host)": [],
            "plain (no robots.txt, not routed)": ["--set", "fetch.respect_robots_txt=false",
                                                  "--set", "fetch.workers_per_host=null"],
        }
        for name, extra in variants.items():
            out = data / "out-politeness"
            shutil.rmtree(out, ignore_errors=True)
            wall, cpu, _ = timed([
                str(BIN / "laion-audit"), "run", str(ROOT / "configs" / "local.yaml"),
                "--set", f"dataset.input={dataset}", "--set", f"output.path={out}",
                "--set", "fetch.allowed_private_hosts=[127.0.0.1]", "--set", "fetch.per_host=64",
                "--set", f"runner.options.direct_num_workers={args.workers}", *extra,
            ])
            summary = json.loads((out / "report" / "summary.json").read_text())
            assert summary["status"].get("ok") == len(urls), summary["status"]
            results[name] = (wall, cpu)
    finally:
        host.kill()
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    rows = len(names)
    print(f"{rows} rows, {args.workers} workers (peak RSS of any one child process: {peak_kib / 1024:.0f} MiB)")
    for name, (wall, cpu) in results.items():
        print(f"{name:40s} {rows / wall:8.1f} rows/s {1000 * cpu / rows:8.2f} core-ms/row")
    (pw, pc), (bw, bc) = results.values()
    print(f"polite / plain: wall x{pw / bw:.2f}, core-ms/row x{pc / bc:.2f}")


if __name__ == "__main__":
    main()
