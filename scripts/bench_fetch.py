"""Helpers the fetch benchmarks share: a cached folder of photo-like JPEGs, a free port,
a local image-host process and a timer of a whole process tree.

The fetch + hash comparison against img2dataset is `scripts/bench.py`, which runs the
peer in its cheapest mode; scripts/bench_politeness.py builds on these helpers.
"""
from __future__ import annotations

import random
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

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


def start_host(folder: Path, robots: Path | None = None) -> tuple[subprocess.Popen, int]:
    """scripts/image_host.py serving ``folder`` (and ``robots`` as /robots.txt) in its own
    process; returns it and its port once it accepts connections."""
    port = free_port()
    command = [sys.executable, str(ROOT / "scripts" / "image_host.py"), str(folder), "--port", str(port)]
    if robots is not None:
        command += ["--robots-txt", str(robots)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
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
