"""`Fetcher`: one event loop on a daemon thread with one aiohttp session, for sync callers
(Beam workers, the CLI, scripts); `fetch_batch` for a one-off list of URLs."""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Iterable, Iterator, Sequence

import aiohttp

from transforms.fetch.client import FetchResult, fetch_one
from transforms.fetch.host_limits import ConcurrencyLimits
from transforms.fetch.robots import RobotsCache
from transforms.fetch_settings import FetchSettings
from transforms.netguard import GuardedResolver

# Idle connections are kept this long for the next request to the same host: rows
# routed by host (transforms/fetch/stage.py) come to a worker host by host.
KEEPALIVE_S = 30.0


class Fetcher:
    """One event loop on a daemon thread with one aiohttp session, for sync callers.

    `fetch_all`, `fetch_as_completed` and `submit` may be called from several threads at
    once; all calls share the session, its connection pool, its DNS cache, the request
    slots and host paces, and the robots.txt cache.
    """

    def __init__(self, settings: FetchSettings | None = None) -> None:
        self.settings = settings or FetchSettings()
        self._lock = threading.Lock()
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="laion-audit-fetch", daemon=True
        )
        self._thread.start()
        try:
            self._session, self._resolver, self._limits = self._call(self._open())
        except BaseException:
            self._stop_loop()
            raise
        self.robots = RobotsCache(self.settings) if self.settings.respect_robots_txt else None

    def _call(self, coroutine):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    async def _open(self) -> tuple[aiohttp.ClientSession, GuardedResolver, ConcurrencyLimits]:
        s = self.settings
        resolver = GuardedResolver(
            allow_private_networks=s.allow_private_networks,
            allowed_hosts=s.allowed_private_hosts,
        )
        connector = aiohttp.TCPConnector(
            limit=s.concurrency,
            limit_per_host=s.per_host,
            resolver=resolver,  # its answers are cached: each name is checked once per TTL
            use_dns_cache=True,
            ttl_dns_cache=s.dns_cache_ttl_s,
            keepalive_timeout=KEEPALIVE_S,
        )
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=s.timeout_s, sock_connect=s.connect_timeout_s),
            headers={"User-Agent": s.user_agent, "Accept": "image/*,*/*;q=0.8"},
            cookie_jar=aiohttp.DummyCookieJar(),  # millions of hosts: keep no cookies
            trust_env=False,  # an environment proxy would bypass the address guard
        )
        return session, resolver, ConcurrencyLimits(s.concurrency, s.per_host, s.per_host_rps)

    def _one(self, url: object):  # type: ignore[no-untyped-def]
        return fetch_one(self._session, url, self.settings, self._limits, self.robots)

    async def _fetch_all(self, urls: Sequence[object]) -> list[FetchResult]:
        return list(await asyncio.gather(*(self._one(url) for url in urls)))

    def fetch_all(self, urls: Sequence[object]) -> list[FetchResult]:
        """Fetch every URL concurrently; results in the order of ``urls``."""
        with self._lock:
            if self._closed:
                raise RuntimeError("Fetcher is closed")
            future = asyncio.run_coroutine_threadsafe(self._fetch_all(list(urls)), self._loop)
        return future.result()

    def submit(self, url: object) -> concurrent.futures.Future:
        """Start fetching ``url``; the future's result is its `FetchResult`."""
        with self._lock:
            if self._closed:
                raise RuntimeError("Fetcher is closed")
            return asyncio.run_coroutine_threadsafe(self._one(url), self._loop)

    def fetch_as_completed(self, urls: Sequence[object]) -> Iterator[tuple[int, FetchResult]]:
        """Fetch every URL concurrently; yield ``(position, result)`` as each finishes.

        The caller works on early results (decoding, hashing) while the loop thread is
        still downloading the rest of the batch.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("Fetcher is closed")
            futures = {
                asyncio.run_coroutine_threadsafe(self._one(url), self._loop): i
                for i, url in enumerate(urls)
            }
        for future in concurrent.futures.as_completed(futures):
            yield futures[future], future.result()

    async def _aclose(self) -> None:
        await self._session.close()
        await self._resolver.close()  # not owned by the connector: close it ourselves

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        if not self._thread.is_alive():
            self._loop.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            asyncio.run_coroutine_threadsafe(self._aclose(), self._loop).result(timeout=30)
        finally:
            self._stop_loop()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def fetch_batch(urls: Iterable[object], settings: FetchSettings | None = None) -> list[FetchResult]:
    """Fetch ``urls`` with a short-lived `Fetcher`; results in input order."""
    with Fetcher(settings) as fetcher:
        return fetcher.fetch_all(list(urls))
