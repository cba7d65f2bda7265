"""How hard one worker presses each host: requests in flight, requests per second, and
slowing down when a host says it is overloaded.

`ConcurrencyLimits` gives out request slots: ``concurrency`` overall, ``per_host`` for
each host, and, per host, a turn from that host's `HostPace`: a token bucket at
``per_host_rps`` (none: no rate cap) that a 429 or 503 halves, a Retry-After pauses, and
quiet successes bring back gradually. One host's pace never holds another's requests.
The clock is a parameter, so the arithmetic is tested without sleeping.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable

Clock = Callable[[], float]

MIN_RPS = 0.2  # a throttled host is slowed to one request per 5 s at the slowest
RECOVERY_INTERVAL_S = 5.0  # quiet seconds between two steps back up
RECOVERY_FACTOR = 1.25  # each step back up: a quarter faster
OBSERVED_WINDOW_S = 10.0  # a host without a rate cap: its pace is measured over this
_SWEEP_AFTER = 1024  # paces of idle hosts kept before a sweep drops the forgettable ones


class TokenBucket:
    """A token bucket of ``burst`` tokens refilled at ``rate`` per second.

    `try_take` either takes a token (0.0) or says how long until the next one; callers
    sleep and ask again, so a rate change applies to waiters at once. `hold_until` makes
    the next token come no earlier than a given instant (a Retry-After).
    """

    def __init__(self, rate: float, burst: float = 1.0, clock: Clock = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self._clock = clock
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._stamp = clock()

    def _refill(self) -> float:
        now = self._clock()
        if now > self._stamp:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
        return now

    def try_take(self) -> float:
        """0.0 when a token was taken; else the seconds until one is due."""
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate

    def set_rate(self, rate: float) -> None:
        self._refill()  # tokens earned so far at the old rate
        self.rate = rate

    def hold_until(self, when: float) -> None:
        """No token before ``when`` (then the usual pace)."""
        now = self._refill()
        self._tokens = min(self._tokens, 1.0 - max(0.0, when - now) * self.rate)

    @property
    def full(self) -> bool:
        self._refill()
        return self._tokens >= self.burst


class HostPace:
    """One host's requests-per-second: ``target`` (None: no cap) and the current rate.

    A 429 or 503 (`throttled`) halves the current rate, at most once per second or per
    request interval, whichever is longer, so one burst of refusals counts once; a host
    with no cap is first given half the rate it was just asked at. A Retry-After holds
    the host's next request until then. Every `RECOVERY_INTERVAL_S` without a refusal a
    success (`succeeded`) raises the rate by `RECOVERY_FACTOR`, up to the target (for a
    host without a cap: up to the rate it had when first refused, then no cap again).
    """

    def __init__(self, target: float | None, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self.target = target
        self.bucket = TokenBucket(target, clock=clock) if target else None
        self._ceiling = target  # where recovery stops
        self._last_change = -math.inf
        self._starts: collections.deque[float] = collections.deque(maxlen=64)

    @property
    def rate(self) -> float | None:
        """Requests per second now; None when uncapped."""
        return self.bucket.rate if self.bucket is not None else None

    def forgettable(self) -> bool:
        """True when a fresh pace would act the same: at its target, and no request
        started within `OBSERVED_WINDOW_S` (so the bucket is full and nothing measured)."""
        if self.rate != self.target:
            return False
        last = self._starts[-1] if self._starts else -math.inf
        return self._clock() - last > OBSERVED_WINDOW_S and (self.bucket is None or self.bucket.full)

    def try_take(self) -> float:
        delay = 0.0 if self.bucket is None else self.bucket.try_take()
        if delay == 0.0:
            self._starts.append(self._clock())
        return delay

    def observed_rate(self) -> float:
        """Requests started per second over the last `OBSERVED_WINDOW_S` (at least 1 s)."""
        now = self._clock()
        recent = [t for t in self._starts if now - t <= OBSERVED_WINDOW_S]
        if not recent:
            return MIN_RPS
        return len(recent) / max(1.0, now - recent[0])

    def throttled(self, retry_after: float | None = None) -> None:
        now = self._clock()
        current = self.rate
        interval = 1.0 if current is None else max(1.0, 1.0 / current)
        if now - self._last_change >= interval:
            if current is None:
                current = self.observed_rate()
                self._ceiling = current
            slower = max(MIN_RPS, current / 2)
            if self.bucket is None:
                self.bucket = TokenBucket(slower, clock=self._clock)
            else:
                self.bucket.set_rate(slower)
            self._last_change = now
        if retry_after and self.bucket is not None:
            self.bucket.hold_until(now + retry_after)

    def succeeded(self) -> None:
        current = self.rate
        if current is None or current == self.target:
            return
        now = self._clock()
        if now - self._last_change < RECOVERY_INTERVAL_S:
            return
        faster = current * RECOVERY_FACTOR
        self._last_change = now
        ceiling = self._ceiling or math.inf
        if faster >= ceiling:
            if self.target is None:
                self.bucket = None  # back to no cap
                self._ceiling = None
                return
            faster = self.target
        self.bucket.set_rate(faster)  # type: ignore[union-attr]


class ConcurrencyLimits:
    """Request slots: ``concurrency`` overall and ``per_host`` for each host, each host's
    requests paced by its `HostPace` (``per_host_rps``; None: no rate cap).

    Slots are taken before an attempt's timeout starts and released before any backoff
    sleep, so a queue of URLs for one busy host neither times out while waiting nor
    holds slots other hosts could use. Entries of idle hosts vanish; their paces are swept
    once they have nothing to remember (a slowed host keeps its pace until recovered).
    """

    def __init__(self, concurrency: int, per_host: int, per_host_rps: float | None = None,
                 clock: Clock = time.monotonic) -> None:
        self._overall = asyncio.Semaphore(concurrency)
        self._per_host = per_host
        self._rps = per_host_rps
        self._clock = clock
        self._hosts: dict[str, list] = {}  # host -> [Semaphore, users]
        self._paces: dict[str, HostPace] = {}
        self._sweep_at = _SWEEP_AFTER  # paces kept before the next sweep

    def pace(self, host: str) -> HostPace:
        pace = self._paces.get(host)
        if pace is None:
            pace = self._paces[host] = HostPace(self._rps, self._clock)
        return pace

    async def _wait_turn(self, host: str) -> None:
        while True:
            delay = self.pace(host).try_take()
            if delay <= 0:
                return
            await asyncio.sleep(delay)

    @contextlib.asynccontextmanager
    async def slot(self, host: str) -> AsyncIterator[None]:
        entry = self._hosts.get(host)
        if entry is None:
            entry = self._hosts[host] = [asyncio.Semaphore(self._per_host), 0]
        entry[1] += 1
        try:
            # Host first, then its turn, then overall: a request waiting for a busy or
            # slowed host holds no overall slot, so one host cannot starve the others.
            async with entry[0]:
                await self._wait_turn(host)
                async with self._overall:
                    yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._hosts[host]
                if len(self._paces) > self._sweep_at:
                    self._sweep()

    def _sweep(self) -> None:
        """Drop the paces of idle hosts that have nothing to remember; the next sweep
        waits until the paces kept have doubled, so sweeping stays linear overall."""
        for host in [h for h, p in self._paces.items() if h not in self._hosts and p.forgettable()]:
            del self._paces[host]
        self._sweep_at = max(_SWEEP_AFTER, 2 * len(self._paces))

    def throttled(self, host: str, retry_after: float | None = None) -> None:
        """``host`` answered 429 or 503: slow it down (and pause it for ``retry_after``)."""
        self.pace(host).throttled(retry_after)

    def succeeded(self, host: str) -> None:
        """``host`` answered without refusing: let a slowed pace recover."""
        pace = self._paces.get(host)
        if pace is not None:
            pace.succeeded()

    @property
    def tracked_hosts(self) -> int:
        return len(self._hosts)

    @property
    def paced_hosts(self) -> int:
        return len(self._paces)
