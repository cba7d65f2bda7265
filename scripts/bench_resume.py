"""How much a killed local audit redoes when started again.

Serves tiny photo-like JPEGs from a local image host on 127.0.0.2 (scripts/image_host.py)
that counts the image requests it answers (robots.txt ones apart), writes FILES parquet files of ROWS rows (every row
its own URL), and runs `laion-audit run` (fetch on) three ways:

  full    one run, start to end: the peer
  killed  the same, its process tree SIGKILLed once the host served --kill-at of the rows
  resume  the killed run started again with the same config and output path

Prints, per run, requests served, wall, core-ms per row (user + sys CPU of the run's
process tree / rows) and peak RSS, then the resumed run's requests as a share of the rows
(the goal: at most 75 % after a kill at 60 %) and its wall against the full run's.

    python scripts/bench_resume.py                         # 8 files x 100 rows, groups of 100
    python scripts/bench_resume.py --rows 500 --group-rows 250 --kill-at 0.6
"""
from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: scripts.* importable

from scripts.bench_memory import tree_rss  # noqa: E402
from scripts.image_host import ImageHost  # noqa: E402
from scripts.sample_images import make_photo_jpeg  # noqa: E402

IMAGES = 8


class CountingHost(ImageHost):
    """The image host, counting image requests only: robots.txt is answered 404, uncounted."""

    async def _serve(self, request):
        if request.match_info["name"] == "robots.txt":
            from aiohttp import web

            raise web.HTTPNotFound()
        return await super()._serve(request)


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def write_dataset(folder: Path, files: int, rows: int, host: ImageHost) -> None:
    folder.mkdir(parents=True)
    for f in range(files):
        urls = [f"{host.url(f'{i % IMAGES}.jpg')}?f={f}&i={i}" for i in range(rows)]
        pq.write_table(pa.table({"URL": urls, "TEXT": [f"photo {f}/{i}" for i in range(rows)]}),
                       folder / f"part-{f:02d}.parquet", row_group_size=max(1, rows // 4))


def write_config(work: Path, host: ImageHost, group_rows: int) -> Path:
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump({
        "dataset": {"input": str(work / "data" / "*.parquet")},
        "output": {"path": str(work / "out")},
        "fetch": {"timeout_s": 10, "retries": 0, "allowed_private_hosts": [f"127.0.0.2:{host.port}"]},
        "runner": {"name": "FnApiRunner", "local_group_rows": group_rows},
    }))
    return config


def run(config: Path, host: ImageHost, kill_after: int | None = None) -> dict:
    """Run the CLI; with `kill_after`, SIGKILL its process group once the host has
    served that many requests. Returns requests served, wall, CPU and peak RSS."""
    host.requests = 0
    cpu_before = _cpu_children()
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run", str(config)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        if kill_after is not None and host.requests >= kill_after:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    _, err = proc.communicate()
    wall = time.monotonic() - started
    if kill_after is None and proc.returncode != 0:
        sys.stderr.write(err.decode(errors="replace")[-3000:])
        raise SystemExit(f"run failed (exit {proc.returncode})")
    if kill_after is not None and proc.returncode != -signal.SIGKILL:
        raise SystemExit("the run ended before it was killed: use more rows")
    return {"requests": host.requests, "wall_s": wall, "cpu_s": _cpu_children() - cpu_before, "peak_rss": peak}


def audited_once(out: Path, rows: int) -> bool:
    ids = collections.Counter(i for f in glob.glob(f"{out}/audit/*.parquet")
                              for i in pq.read_table(f, columns=["row_id"]).column(0).to_pylist())
    return len(ids) == rows and set(ids.values()) == {1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--rows", type=int, default=100, help="rows per file")
    parser.add_argument("--group-rows", type=int, default=100, help="runner.local_group_rows")
    parser.add_argument("--kill-at", type=float, default=0.6, help="share of the rows served before the kill")
    args = parser.parse_args()
    rows = args.files * args.rows

    with tempfile.TemporaryDirectory(prefix="bench-resume-") as tmp:
        images = Path(tmp, "images")
        images.mkdir()
        for k in range(IMAGES):
            (images / f"{k}.jpg").write_bytes(make_photo_jpeg(k, 64, 48))
        with CountingHost(images, host="127.0.0.2") as host:
            full_work, work = Path(tmp, "full"), Path(tmp, "killed")
            for folder in (full_work, work):
                folder.mkdir()
                write_dataset(folder / "data", args.files, args.rows, host)
            full = run(write_config(full_work, host, args.group_rows), host)
            config = write_config(work, host, args.group_rows)
            killed = run(config, host, kill_after=int(args.kill_at * rows))
            done = len([p for p in (work / "out" / "report" / "groups").glob("g*.json")
                        if not p.name.endswith(".counts.json")])
            resumed = run(config, host)
        summary = json.loads((work / "out" / "report" / "summary.json").read_text())
        once = audited_once(work / "out", rows)

    print(f"rows={rows} files={args.files} groups={summary['groups']} (machine shared: compare ratios)")
    for name, result in (("full", full), ("killed", killed), ("resume", resumed)):
        print(f"{name:7s} requests={result['requests']:6d} wall={result['wall_s']:.1f}s "
              f"core_ms_per_row={1000 * result['cpu_s'] / rows:.2f} peak_rss={result['peak_rss'] / 2**20:.0f} MiB")
    print(f"killed after {killed['requests'] / rows:.0%} of the rows served, {done} group(s) recorded done; "
          f"resume refetched {resumed['requests'] / rows:.0%} of the rows (goal <= 75%), "
          f"wall {resumed['wall_s'] / full['wall_s']:.2f}x the full run's; "
          f"every row once: {once}, accounted: {summary['all_rows_accounted']}")


if __name__ == "__main__":
    main()
