"""Routing rows by host: a host's rows fall into at most ``workers_per_host`` keys, so
a fleet of fetching instances presses one host no harder than that many would."""
from __future__ import annotations

import collections
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from tests.hostile_server import HostileServer
from transforms import records
from transforms.fetch import FetchImages, FetchSettings, fleet_caps, route_key

REPO = Path(__file__).resolve().parents[1]
LOCAL = FetchSettings(allowed_private_hosts=("127.0.0.1",), timeout_s=5, connect_timeout_s=2, retries=0)


@pytest.fixture(scope="module")
def server():
    with HostileServer() as running:
        yield running


def test_route_key_spreads_a_host_over_at_most_workers_per_host_keys() -> None:
    hot = [f"https://i.hot.example/{i}.jpg" for i in range(2000)]
    for workers, keys in ((1, 64), (3, 64), (4, 1024)):
        assert len({route_key(u, workers, keys) for u in hot}) == workers
    assert len({route_key(u, 8, 4) for u in hot}) == 4  # fewer keys than workers: all keys
    # Many hosts spread over the keys: no key takes a large share.
    many = [f"https://h{i}.example/a.jpg" for i in range(4000)]
    counts = collections.Counter(route_key(u, 4, 64) for u in many)
    assert len(counts) == 64 and max(counts.values()) < 3 * 4000 / 64
    # Garbage routes somewhere too (it is refused without a request).
    assert 0 <= route_key(None, 4, 64) < 64 and 0 <= route_key("not a url", 4, 64) < 64


def test_route_key_is_the_same_in_every_process() -> None:
    # Workers must agree: no per-process salted hash.
    code = ("from transforms.fetch import route_key; "
            "print([route_key(f'http://h{i}.example/{i}', 4, 1024) for i in range(50)])")
    outputs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={"PYTHONHASHSEED": seed, "PATH": ""}, cwd=str(REPO)).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1
    assert outputs == {str([route_key(f"http://h{i}.example/{i}", 4, 1024) for i in range(50)]) + "\n"}


def _fleet_peak(server: HostileServer, settings: FetchSettings, workers: int, routed: bool) -> int:
    """Run `workers` FetchImages instances at once, as a fleet would, over 48 slow URLs of
    one host; the rows reach them grouped by routing key (what GroupByKey does) or, not
    routed, dealt out round robin. Returns the most requests the host had in flight."""
    rows = [records.new_record(f"r{i}", server.url(f"/slow/p{i}?s=0.3"), None) for i in range(48)]
    shares: list[list] = [[] for _ in range(workers)]
    if routed:
        groups: dict[int, list] = collections.defaultdict(list)
        for row in rows:
            groups[route_key(row["url"], settings.workers_per_host, settings.routing_keys)].append(row)
        for key, group in groups.items():
            shares[key % workers].append((key, group))
    else:
        for i, row in enumerate(rows):
            shares[i % workers].append([row])
    outputs: list[dict] = []
    lock = threading.Lock()

    def work(share: list) -> None:
        fn = FetchImages(settings)
        fn.setup()
        try:
            fn.start_bundle()
            out = [r for element in share for r in fn.process(element)]
            out += [w.value for w in fn.finish_bundle()]
        finally:
            fn.teardown()
        with lock:
            outputs.extend(out)

    server.peak_in_flight = 0
    threads = [threading.Thread(target=work, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(r["row_id"] for r in outputs) == sorted(r["row_id"] for r in rows)
    assert {r["status"] for r in outputs} == {"ok"}
    return server.peak_in_flight


def test_routing_caps_a_host_fleet_wide_whatever_the_number_of_workers(server: HostileServer) -> None:
    settings = replace(LOCAL, per_host=2, workers_per_host=2, routing_keys=64, concurrency=64,
                       batch_size=64)
    cap = fleet_caps(settings)["in_flight"]
    assert cap == 4  # workers_per_host x per_host
    assert _fleet_peak(server, settings, workers=6, routed=True) <= cap
    # The same six workers without routing press the host three times as hard: the cap
    # above is routing's doing, not the server's or the test's.
    assert _fleet_peak(server, settings, workers=6, routed=False) > cap


def test_fleet_caps_arithmetic() -> None:
    caps = fleet_caps(FetchSettings(per_host=8, workers_per_host=4, per_host_rps=2.5))
    assert caps == {"in_flight": 32, "rps": 10.0, "robots_fetches_per_ttl": 4}
    assert fleet_caps(FetchSettings(workers_per_host=None))["in_flight"] is None
