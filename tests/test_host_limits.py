"""Per-host pace: the token bucket and its slow-down arithmetic on a controllable clock,
then the limits as a real server sees them (request arrival times on 127.0.0.2 / .3)."""
from __future__ import annotations

import asyncio
import math
from dataclasses import replace

import pytest

from scripts.sample_images import make_photo_jpeg
from tests.hostile_server import HostileServer
from transforms.fetch import ConcurrencyLimits, FetchSettings, HostPace, TokenBucket, fetch_batch
from transforms.fetch.host_limits import MIN_RPS, RECOVERY_FACTOR, RECOVERY_INTERVAL_S


class Clock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --------------------------------------------------------------------------- bucket


def test_bucket_gives_one_token_per_interval() -> None:
    clock = Clock()
    bucket = TokenBucket(4.0, clock=clock)
    assert bucket.try_take() == 0.0
    assert bucket.try_take() == pytest.approx(0.25)
    clock.advance(0.1)
    assert bucket.try_take() == pytest.approx(0.15)
    clock.advance(0.15)
    assert bucket.try_take() == 0.0
    clock.advance(10)  # a long idle spell earns no more than the burst
    assert [bucket.try_take() for _ in range(2)] == [0.0, pytest.approx(0.25)]


def test_bucket_with_burst_and_hold_until() -> None:
    clock = Clock()
    bucket = TokenBucket(2.0, burst=3, clock=clock)
    assert [bucket.try_take() for _ in range(3)] == [0.0] * 3
    assert bucket.try_take() == pytest.approx(0.5)
    clock.advance(5)
    bucket.hold_until(clock.now + 4)  # a Retry-After of 4 s
    assert bucket.try_take() == pytest.approx(4.0)
    clock.advance(4)
    assert bucket.try_take() == 0.0
    assert bucket.try_take() == pytest.approx(0.5)  # then the usual pace


def test_rate_change_applies_to_the_next_token() -> None:
    clock = Clock()
    bucket = TokenBucket(10.0, clock=clock)
    bucket.try_take()
    bucket.set_rate(1.0)
    assert bucket.try_take() == pytest.approx(1.0)


# --------------------------------------------------------------------------- pace


def test_a_refusal_halves_the_rate_once_per_burst_and_recovers_gradually() -> None:
    clock = Clock()
    pace = HostPace(8.0, clock)
    pace.throttled()
    assert pace.rate == 4.0
    pace.throttled()  # the same burst of refusals: counted once
    assert pace.rate == 4.0
    clock.advance(1.0)
    pace.throttled()
    assert pace.rate == 2.0
    pace.succeeded()  # too soon after the refusal
    assert pace.rate == 2.0
    rates = []
    for _ in range(6):
        clock.advance(RECOVERY_INTERVAL_S)
        pace.succeeded()
        rates.append(pace.rate)
    expected, rate = [], 2.0
    for _ in range(6):
        rate = min(8.0, rate * RECOVERY_FACTOR)
        expected.append(rate)
    assert rates == pytest.approx(expected)
    assert rates[-1] < 8.0  # six steps of 1.25 are not yet a factor of 4
    for _ in range(10):
        clock.advance(RECOVERY_INTERVAL_S)
        pace.succeeded()
    assert pace.rate == 8.0  # back at the target, never above it


def test_rate_never_falls_below_the_floor() -> None:
    clock = Clock()
    pace = HostPace(1.0, clock)
    for _ in range(20):
        clock.advance(60)
        pace.throttled()
    assert pace.rate == MIN_RPS


def test_an_uncapped_host_is_slowed_to_half_its_observed_rate_then_uncapped_again() -> None:
    clock = Clock()
    pace = HostPace(None, clock)
    assert pace.rate is None
    for _ in range(20):  # 20 requests over 2 s: 10 per second
        assert pace.try_take() == 0.0
        clock.advance(0.1)
    pace.throttled(retry_after=3)
    assert pace.rate == pytest.approx(20 / 2.0 / 2)
    assert pace.try_take() == pytest.approx(3.0)  # Retry-After holds the host
    clock.advance(3)
    assert pace.try_take() == 0.0
    steps = 0
    while pace.rate is not None:
        clock.advance(RECOVERY_INTERVAL_S)
        pace.succeeded()
        steps += 1
    # 5 rps back up to 10 rps by factors of 1.25: ceil(log(2) / log(1.25)) steps
    assert steps == math.ceil(math.log(2) / math.log(RECOVERY_FACTOR))


def test_limits_slow_one_host_and_not_another() -> None:
    clock = Clock()
    limits = ConcurrencyLimits(8, 8, per_host_rps=10.0, clock=clock)
    limits.throttled("slow.example")
    assert limits.pace("slow.example").rate == 5.0
    assert limits.pace("fast.example").rate == 10.0


def test_slots_wait_for_their_turn() -> None:
    # Real time, small numbers: 6 requests at 20 per second take at least 5 intervals.
    async def run() -> list[float]:
        limits = ConcurrencyLimits(concurrency=8, per_host=8, per_host_rps=20.0)
        loop = asyncio.get_running_loop()
        started: list[float] = []

        async def use() -> None:
            async with limits.slot("h"):
                started.append(loop.time())

        await asyncio.gather(*(use() for _ in range(6)))
        return started

    started = asyncio.run(run())
    assert max(started) - min(started) >= 5 * 0.05 * 0.9


# --------------------------------------------------------------------------- servers

PHOTO = make_photo_jpeg(9, 16, 16)


@pytest.fixture
def hosts():
    servers = [HostileServer(host=h).start() for h in ("127.0.0.2", "127.0.0.3")]
    for s in servers:
        for i in range(40):
            s.add_image(f"p{i}", PHOTO)
    yield servers
    for s in servers:
        s.stop()


def settings_for(servers, **changes) -> FetchSettings:
    base = FetchSettings(allowed_private_hosts=tuple(f"{s.host}:{s.port}" for s in servers),
                         timeout_s=5, connect_timeout_s=2, retries=3, backoff_base_s=0.01,
                         backoff_max_s=5, concurrency=64, per_host=16)
    return replace(base, **changes)


def max_in_window(times: list[float], window: float) -> int:
    """The most arrivals within any `window` seconds."""
    times = sorted(times)
    best, first = 0, 0
    for last, t in enumerate(times):
        while t - times[first] > window:
            first += 1
        best = max(best, last - first + 1)
    return best


def test_rps_limit_holds_at_the_server(hosts) -> None:
    server = hosts[0]
    rps = 10.0
    results = fetch_batch([server.url(f"/img/p{i}") for i in range(21)],
                          settings_for(hosts, per_host_rps=rps))
    assert [r.status for r in results] == ["ok"] * 21
    arrivals = server.arrivals("/img/")
    assert len(arrivals) == 21
    # Nothing ever went faster than the limit: at most rps arrivals within any second
    # (+2: the window's edges, and network jitter between sending and arrival), and 21
    # arrivals need at least 20 intervals.
    assert max_in_window(arrivals, 1.0) <= rps + 2
    assert max(arrivals) - min(arrivals) >= 20 / rps * 0.9


def test_a_429_host_slows_down_while_another_keeps_its_pace(hosts) -> None:
    busy, calm = hosts
    rps, n = 10.0, 16
    busy.busy_left = 1  # one 429, then images
    urls = [busy.url(f"/busy/p{i}") for i in range(n)] + [calm.url(f"/img/p{i}") for i in range(n)]
    results = fetch_batch(urls, settings_for(hosts, per_host_rps=rps))
    assert [r.status for r in results] == ["ok"] * (2 * n)
    slowed, steady = busy.arrivals("/busy/"), calm.arrivals("/img/")
    assert (len(slowed), len(steady)) == (n + 1, n)  # one retry on the busy host
    # The busy host is at half the rate after its 429 (recovery needs 5 quiet seconds):
    # its n + 1 requests need at least about (n - 1) intervals of 1 / (rps / 2).
    assert max(slowed) - min(slowed) >= (n - 1) / (rps / 2) * 0.8
    assert max_in_window(slowed[1:], 1.0) <= rps / 2 + 2
    # The calm host, fetched in the same batch, was not slowed: its span is the plain
    # (n - 1) / rps, well under the busy one's (compared, not timed against a clock).
    assert max(steady) - min(steady) < (max(slowed) - min(slowed)) * 0.75
    assert max_in_window(steady, 1.0) <= rps + 2


def test_retry_after_pauses_the_whole_host(hosts) -> None:
    server = hosts[0]
    server.busy_left = 1
    after = 2
    urls = [server.url(f"/busy/p{i}?after={after}") for i in range(4)]
    results = fetch_batch(urls, settings_for(hosts, per_host=1))
    assert [r.status for r in results] == ["ok"] * 4
    first, *rest = server.arrivals("/busy/")
    # per_host 1: the 429 came first; every later request, this row's retry and the
    # other rows alike, waited out the Retry-After.
    assert len(rest) == 4 and min(rest) - first >= after * 0.95


def test_503_slows_the_host_too(hosts) -> None:
    server = hosts[0]
    server.busy_left = 1
    n, rps = 9, 10.0
    results = fetch_batch([server.url(f"/busy/p{i}?status=503") for i in range(n)],
                          settings_for(hosts, per_host_rps=rps))
    assert [r.status for r in results] == ["ok"] * n
    arrivals = server.arrivals("/busy/")
    assert max(arrivals) - min(arrivals) >= (n - 1) / (rps / 2) * 0.8


def test_paces_of_idle_hosts_are_swept_but_a_slowed_one_is_kept() -> None:
    from transforms.fetch.host_limits import _SWEEP_AFTER, OBSERVED_WINDOW_S

    clock = Clock()

    async def run() -> ConcurrencyLimits:
        limits = ConcurrencyLimits(8, 2, per_host_rps=100.0, clock=clock)
        async with limits.slot("slowed.example"):
            pass
        limits.throttled("slowed.example")
        for i in range(3 * _SWEEP_AFTER):
            async with limits.slot(f"h{i}.example"):
                pass
            if i % 100 == 0:
                clock.advance(OBSERVED_WINDOW_S / 4)
        return limits

    limits = asyncio.run(run())
    assert limits.tracked_hosts == 0
    assert limits.paced_hosts <= 2 * _SWEEP_AFTER + 1  # bounded, not one per host seen
    assert limits.pace("slowed.example").rate == 50.0  # what it learnt is kept
