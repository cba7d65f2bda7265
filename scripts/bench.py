"""Fetch + hash + match: laion-audit against img2dataset, one command, one run.

    python scripts/bench.py                  # 3,000 images (also: make bench)
    python scripts/bench.py --rows 500       # a quick run
    python scripts/bench.py --rows 12000     # 4x: does peak memory stay flat?

Makes (or reuses, under bench-data/) a corpus of up to CORPUS_MAX photo-like images at
real sizes (a larger --rows fetches them again under distinct URLs, ?r=2 ...): 85 %
JPEG at the long sides and aspect ratios web photos come in (500-1,500 px, about 150 KB),
the rest PNG and WebP. Serves it from a separate HTTP server process on 127.0.0.1:
nginx where it is installed (`make bench` installs it with apt where it can), else
scripts/image_host.py (aiohttp) in its own process. The server's CPU is nobody's. Then,
on the same URL list, each contender as a whole process tree (start-up included):

  (a) img2dataset in its cheapest configuration, in its own venv (bench-data/
      img2dataset-venv, made on first use from PyPI): --resize_mode no
      --processes_count 2 --thread_count 64 --output_format files
      --disallowed_header_directives '[]' (it still writes every image to disk and
      computes its default SHA-256);
  (b) `laion-audit run`: fetch, decode, MD5/SHA-256, pHash, PDQ, match against a
      100k-entry PDQ list, decide, audit table; embedding off; the default runner
      (FnApiRunner in this process: one Beam SDK, one takedown index);
  (b2) the same on two SDK worker processes (configs/local.yaml's runner), unless
      --skip-two-processes: both cores hash, each process pays its own start-up;
  (c) `laion-audit rematch` of (b)'s audit against the same list (no network).

For each: rows/s (wall), core-ms per row (user + sys CPU of the process and all its
children, from wait4, divided by rows) and peak RSS (the sum over the process tree,
sampled every 50 ms from /proc). Prints (b)'s and (b2)'s per-core ratios to (a). On a shared
machine core-ms per row is the figure to trust; wall rows/s moves with the neighbours.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.bench_fetch import free_port  # noqa: E402
from scripts.bench_memory import tree_rss  # noqa: E402
from scripts.sample_images import make_photo_jpeg  # noqa: E402

BIN = Path(sys.executable).parent
DATA = ROOT / "bench-data"
PEER_VENV = DATA / "img2dataset-venv"
LIST_ENTRIES = 100_000
CORPUS_MAX = 3000  # distinct images; more rows repeat them under other URLs

# Long sides and aspect ratios as web photos come (many share a size, as on the web).
LONG_SIDES = (500, 600, 640, 700, 750, 800, 900, 960, 1000, 1024, 1080, 1200, 1280, 1500)
ASPECTS = (1.0, 4 / 3, 3 / 2, 16 / 9, 3 / 4, 2 / 3)


# ------------------------------------------------------------------------------ corpus


def _image_spec(i: int) -> tuple[str, int, int]:
    rng = random.Random(i)
    kind = rng.choices(("jpg", "png", "webp"), weights=(85, 7.5, 7.5))[0]
    long_side = rng.choice(LONG_SIDES if kind != "png" else LONG_SIDES[:6])
    aspect = rng.choice(ASPECTS)
    w, h = (long_side, round(long_side / aspect)) if aspect >= 1 else (round(long_side * aspect), long_side)
    return kind, w, h


def _make_one(args: tuple[Path, int]) -> str:
    folder, i = args
    kind, w, h = _image_spec(i)
    name = f"img{i:05d}.{kind}"
    path = folder / name
    if not path.exists():
        from PIL import Image

        data = make_photo_jpeg(i, w, h, quality=90)
        if kind != "jpg":
            img = Image.open(io.BytesIO(data))
            out = io.BytesIO()
            img.save(out, "PNG" if kind == "png" else "WEBP", **({"quality": 85} if kind == "webp" else {}))
            data = out.getvalue()
        tmp = folder / f".{name}.{os.getpid()}.tmp"  # renamed whole: a reader never sees half a file
        tmp.write_bytes(data)
        tmp.replace(path)
    return name


def make_corpus(count: int) -> list[str]:
    """The first ``count`` images of the corpus (made once, reused by later runs)."""
    folder = DATA / "corpus"
    folder.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return list(pool.map(_make_one, [(folder, i) for i in range(count)], chunksize=16))


# ------------------------------------------------------------------------------ server


NGINX_CONF = """
daemon off;
worker_processes 2;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 60;
    keepalive_requests 100000;
    types {{ image/jpeg jpg; image/png png; image/webp webp; }}
    client_body_temp_path {prefix}/tmp; proxy_temp_path {prefix}/tmp;
    fastcgi_temp_path {prefix}/tmp; uwsgi_temp_path {prefix}/tmp; scgi_temp_path {prefix}/tmp;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {root};
    }}
}}
"""


def _wait_for(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"{what} did not start")


def start_server(root: Path) -> tuple[subprocess.Popen, int, str]:
    """nginx on 127.0.0.1 if installed, else the aiohttp image host, in its own process."""
    port = free_port()
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if nginx:
        prefix = DATA / "nginx"
        (prefix / "tmp").mkdir(parents=True, exist_ok=True)
        conf = prefix / "nginx.conf"
        conf.write_text(NGINX_CONF.format(prefix=prefix, port=port, root=root.resolve()))
        proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(prefix)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for(port, proc, "nginx")
        version = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr.strip()
        return proc, port, version.replace("nginx version: ", "")
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "image_host.py"), str(root), "--port", str(port)],
                            stdout=subprocess.DEVNULL)
    _wait_for(port, proc, "image host")
    return proc, port, "aiohttp image host (nginx not installed)"


# ------------------------------------------------------------------------------ timing


def timed(cmd: list[str], env: dict | None = None) -> dict:
    """Run ``cmd``; wall s, CPU s of its whole process tree (wait4: children that were
    waited for are included), peak RSS of the tree (sampled) and the output."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], tree_rss(proc.pid))
            except Exception:  # a process ended while being read
                pass
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    stop.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.stderr.write(output[-4000:])
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss": peak[0], "output": output}


# ----------------------------------------------------------------------------- contenders


def ensure_peer() -> Path:
    exe = PEER_VENV / "bin" / "img2dataset"
    if not exe.exists():
        print("installing img2dataset into", PEER_VENV, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run([str(PEER_VENV / "bin" / "pip"), "install", "--quiet", "img2dataset"], check=True)
    return exe


def run_peer(urls: Path, n: int) -> dict:
    out = DATA / "out-img2dataset"
    shutil.rmtree(out, ignore_errors=True)
    result = timed([
        str(ensure_peer()), f"--url_list={urls}", "--input_format=parquet", "--url_col=url",
        f"--output_folder={out}", "--output_format=files", "--resize_mode=no",
        "--processes_count=2", "--thread_count=64", "--disallowed_header_directives=[]",
        "--enable_wandb=False",
    ], env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})
    ok = sum(json.loads(p.read_text())["successes"] for p in out.glob("*_stats.json"))
    if ok != n:
        raise SystemExit(f"img2dataset fetched {ok} of {n}")
    return result


def make_list(path: Path, corpus_pdqs: list[str]) -> None:
    """100k PDQ entries: random hashes plus a few near copies of corpus images' hashes
    (a few bits flipped), so the run finds real matches."""
    rng = np.random.default_rng(0)
    values = [bytes(row).hex() for row in rng.integers(0, 256, size=(LIST_ENTRIES - len(corpus_pdqs), 32), dtype=np.uint8)]
    for pdq in corpus_pdqs:
        n = int(pdq, 16)
        for bit in rng.choice(256, size=6, replace=False):
            n ^= 1 << int(bit)
        values.append(format(n, "064x"))
    path.write_text("\n".join(values) + "\n")


def reference_pdqs(names: list[str], count: int) -> list[str]:
    """PDQ of a few corpus images by the reference library (pdqhash on the 512 px box
    copy), independent of the audit's own hashing."""
    import pdqhash
    from PIL import Image

    out = []
    for name in names[:count]:
        img = Image.open(DATA / "corpus" / name).convert("RGB")
        w, h = img.size
        if max(w, h) > 512:
            s = 512 / max(w, h)
            img = img.resize((round(w * s), round(h * s)), Image.Resampling.BOX)
        bits, _ = pdqhash.compute(np.asarray(img))
        out.append(np.packbits(bits.astype(bool)).tobytes().hex())
    return out


AUDIT_CONFIG = """
dataset: {{input: {dataset}, url_col: URL, caption_col: TEXT}}
output: {{path: {out}}}
fetch:
  enabled: true
  concurrency: 128
  per_host: 64
  allow_private_networks: true
takedown:
  lists: [{listfile}]
embedding: {{enabled: false}}
runner:
{runner}
"""
# (b): the runner a config without a runner section gets (FnApiRunner, in this process).
# (b2): the same with two SDK worker processes (configs/local.yaml's choice): both cores
# hash, at the price of a Beam SDK, gRPC and a takedown index in each process.
IN_PROCESS = "  name: FnApiRunner"
TWO_PROCESSES = "  name: FnApiRunner\n  options: {direct_running_mode: multi_processing, direct_num_workers: 2}"


def run_audit(dataset: Path, listfile: Path, n: int, runner: str = IN_PROCESS,
              name: str = "out-audit") -> tuple[dict, Path]:
    out = DATA / name
    shutil.rmtree(out, ignore_errors=True)
    config = DATA / f"bench-{name}.yaml"
    config.write_text(AUDIT_CONFIG.format(dataset=dataset, out=out, listfile=listfile, runner=runner))
    result = timed([str(BIN / "laion-audit"), "run", str(config), "--fresh", "-q"])
    summary = json.loads((out / "report" / "summary.json").read_text())
    if summary["status"].get("ok") != n:
        raise SystemExit(f"laion-audit: statuses {summary['status']}")
    result["summary"] = summary
    return result, out


def run_rematch(audit: Path, listfile: Path) -> dict:
    out = DATA / "out-rematch"
    shutil.rmtree(out, ignore_errors=True)
    return timed([str(BIN / "laion-audit"), "rematch", "--audit", str(audit), "--lists", str(listfile),
                  "--out", str(out), "-q"])


# -------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=3000, help="images in the run (default 3000)")
    parser.add_argument("--skip-peer", action="store_true", help="leave img2dataset out")
    parser.add_argument("--skip-two-processes", action="store_true", help="leave (b2) out")
    args = parser.parse_args()

    n = args.rows
    distinct = make_corpus(min(n, CORPUS_MAX))
    names = [distinct[i % len(distinct)] + ("" if i < len(distinct) else f"?r={i // len(distinct) + 1}")
             for i in range(n)]
    sizes = [(DATA / "corpus" / name.split("?")[0]).stat().st_size for name in names]
    listfile = DATA / "pdq-100k.txt"
    make_list(listfile, reference_pdqs(distinct, 30))
    server, port, server_name = start_server(DATA / "corpus")
    results: dict[str, dict] = {}
    try:
        urls = [f"http://127.0.0.1:{port}/{name}" for name in names]
        dataset = DATA / f"rows-{n}.parquet"
        pq.write_table(pa.table({"URL": urls, "TEXT": [f"photo {i}" for i in range(n)]}), dataset)
        peer_urls = DATA / f"urls-{n}.parquet"
        pq.write_table(pa.table({"url": urls}), peer_urls)
        if not args.skip_peer:
            results["(a) img2dataset, resize off, 2 proc x 64 threads, files"] = run_peer(peer_urls, n)
        audit, audit_out = run_audit(dataset, listfile, n)
        results["(b) laion-audit run: fetch, hashes, match 100k PDQ, audit"] = audit
        if not args.skip_two_processes:
            results["(b2) the same, 2 SDK worker processes"] = run_audit(
                dataset, listfile, n, TWO_PROCESSES, "out-audit-2proc")[0]
        results["(c) laion-audit rematch of (b) against the same list"] = run_rematch(audit_out, listfile)
    finally:
        server.terminate()
        server.wait(timeout=10)

    kinds = {k: sum(name.split("?")[0].endswith(k) for name in names) for k in ("jpg", "png", "webp")}
    matched = audit["summary"].get("matched_rows", audit["summary"].get("matches"))
    print(f"\n{n} images ({len(distinct)} distinct; {kinds['jpg']} JPEG, {kinds['png']} PNG, {kinds['webp']} WebP), "
          f"{sum(sizes) / n / 1024:.0f} KiB mean, long side 500-1500 px; served by {server_name} on "
          f"127.0.0.1; {os.cpu_count()} cores; list {LIST_ENTRIES:,} PDQ entries"
          + (f"; rows matched: {matched}" if matched is not None else ""))
    print(f"{'contender':<60} {'wall s':>7} {'rows/s':>8} {'core-ms/row':>12} {'peak RSS MiB':>13}")
    for name, r in results.items():
        print(f"{name:<60} {r['wall']:7.1f} {n / r['wall']:8.1f} {1000 * r['cpu'] / n:12.2f} "
              f"{r['rss'] / 2**20:13.0f}")
    peer = results.get("(a) img2dataset, resize off, 2 proc x 64 threads, files")
    for label, ours in (("(b)", audit), ("(b2)", results.get("(b2) the same, 2 SDK worker processes"))):
        if peer and ours:
            print(f"{label} vs (a) per core: {peer['cpu'] / ours['cpu']:.2f}x img2dataset's rows per core-second "
                  f"(core-ms/row {1000 * ours['cpu'] / n:.2f} vs {1000 * peer['cpu'] / n:.2f}); "
                  f"wall rows/s {peer['wall'] / ours['wall']:.2f}x")


if __name__ == "__main__":
    main()
