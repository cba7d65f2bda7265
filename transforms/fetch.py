"""Fetch stage: download each row's image politely and safely, one status per URL.

`fetch_one` turns a URL into a `FetchResult` and never raises: every failure becomes one
of the audit statuses (records.STATUSES). It refuses non-http(s) URLs and forbidden
addresses on every redirect hop (see netguard), retries throttling, server errors and
dropped connections with capped exponential backoff (a timeout is final: a dead host
must not hold a batch open for several timeouts), honours ``X-Robots-Tag: noai`` before
reading a body, and stops reading at ``max_bytes``. `Fetcher` runs one event loop and
one aiohttp session on a daemon thread so synchronous code (Beam workers, the CLI) can
submit whole batches; `Fetch` is the Beam transform the pipelines use, built from the
config's ``fetch`` section, which is a `FetchSettings` (transforms/fetch_settings.py).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import email.utils
import random
import re
import socket
import threading
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import aiohttp
import apache_beam as beam
from apache_beam.metrics import Metrics
from yarl import URL

from transforms import records
from transforms.fetch_settings import FetchSettings
from transforms.netguard import BlockedAddressError, GuardedResolver, check_url
from transforms.row_status import StatusCounters, short_error

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
AI_OPT_OUT_DIRECTIVES = ("noai", "noimageai")
_OPT_OUT_PATTERN = re.compile(r"(?<![\w-])(noai|noimageai)(?![\w-])", re.IGNORECASE)
_READ_CHUNK = 64 * 1024


@dataclass
class FetchResult:
    """What happened to one URL. ``body`` is set only when ``status == "ok"``."""

    status: str
    http_status: int | None = None
    error: str | None = None
    opt_out: list[str] = field(default_factory=list)
    body: bytes | None = None
    content_type: str | None = None
    final_url: str | None = None
    attempts: int = 0  # tries of the request (1 + retries used); redirects not counted

    def __post_init__(self) -> None:
        if self.status not in records.STATUSES:
            raise ValueError(f"unknown fetch status {self.status!r}")


# --------------------------------------------------------------------------- headers


def opt_out_directives(values: Iterable[str]) -> list[str]:
    """The AI opt-out directives in ``X-Robots-Tag`` header values, in order, deduplicated.

    Directives count whichever crawler they name ("otherbot: noai"): an image its owner
    withheld from AI use stays withheld from an audit that feeds AI datasets.
    """
    seen: list[str] = []
    for value in values:
        for match in _OPT_OUT_PATTERN.finditer(value):
            directive = match.group(1).lower()
            if directive not in seen:
                seen.append(directive)
    return seen


def parse_retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delay-seconds or HTTP date)."""
    if not value:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    now = now or dt.datetime.now(dt.timezone.utc)
    return max(0.0, (when - now).total_seconds())


def is_non_image_type(content_type: str) -> bool:
    """True for declared types that are certainly not images (pages, text, JSON)."""
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime.startswith("text/") or "html" in mime or "json" in mime


def backoff_delay(retry: int, settings: FetchSettings) -> float:
    """Exponential backoff with full jitter for the ``retry``-th retry (0-based)."""
    ceiling = min(settings.backoff_max_s, settings.backoff_base_s * (2**retry))
    return random.uniform(0.0, max(0.0, ceiling))


# --------------------------------------------------------------------------- one URL


class ConcurrencyLimits:
    """Request slots: ``concurrency`` overall and ``per_host`` for each host.

    Slots are taken before an attempt's timeout starts and released before any backoff
    sleep, so a queue of URLs for one busy host neither times out while waiting nor
    holds slots other hosts could use. Per-host entries vanish when idle.
    """

    def __init__(self, concurrency: int, per_host: int) -> None:
        self._overall = asyncio.Semaphore(concurrency)
        self._per_host = per_host
        self._hosts: dict[str, list] = {}  # host -> [Semaphore, users]

    @contextlib.asynccontextmanager
    async def slot(self, host: str) -> AsyncIterator[None]:
        entry = self._hosts.get(host)
        if entry is None:
            entry = self._hosts[host] = [asyncio.Semaphore(self._per_host), 0]
        entry[1] += 1
        try:
            # Host first, then overall: a request waiting for a busy host holds no
            # overall slot, so one slow host cannot starve the others.
            async with entry[0], self._overall:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._hosts[host]

    @property
    def tracked_hosts(self) -> int:
        return len(self._hosts)


@dataclass
class _Redirect:
    location: str
    http_status: int


@dataclass
class _Retryable:
    result: FetchResult
    retry_after: float | None = None


def _blocked_reason(exc: BaseException) -> str | None:
    """The guard's reason when ``exc`` (or what it wraps) is a refused address."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, BlockedAddressError):
            return current.reason
        inner = getattr(current, "os_error", None)
        current = inner if isinstance(inner, BaseException) else current.__cause__
    return None


async def _read_response(
    response: aiohttp.ClientResponse, url: URL, settings: FetchSettings
) -> FetchResult | _Redirect | _Retryable:
    status = response.status
    final_url = str(url)
    if status in REDIRECT_STATUSES:
        location = response.headers.get(aiohttp.hdrs.LOCATION)
        if not location:
            return FetchResult("http_error", status, "redirect without Location",
                               final_url=final_url)
        return _Redirect(location, status)
    if status == 429 or status >= 500:
        retry_after = parse_retry_after(response.headers.get(aiohttp.hdrs.RETRY_AFTER))
        return _Retryable(
            FetchResult("http_error", status, f"HTTP {status}", final_url=final_url), retry_after
        )
    if not 200 <= status < 300:
        return FetchResult("http_error", status, f"HTTP {status}", final_url=final_url)

    # Everything below is decided from the headers before any body byte is read.
    opt_out = opt_out_directives(response.headers.getall("X-Robots-Tag", ()))
    content_type = response.headers.get(aiohttp.hdrs.CONTENT_TYPE)
    known = dict(http_status=status, opt_out=opt_out, content_type=content_type,
                 final_url=final_url)
    if opt_out and settings.respect_opt_out:
        response.close()
        return FetchResult("opted_out", error="X-Robots-Tag: " + ", ".join(opt_out), **known)
    if content_type and is_non_image_type(content_type):
        response.close()
        mime = content_type.split(";", 1)[0].strip()
        return FetchResult("not_image", error=short_error(f"content type {mime}"), **known)
    declared = response.content_length
    if declared is not None and declared > settings.max_bytes:
        response.close()
        return FetchResult(
            "too_large", error=f"Content-Length {declared} > {settings.max_bytes}", **known
        )

    body = bytearray()
    async for chunk in response.content.iter_chunked(_READ_CHUNK):
        body += chunk
        if len(body) > settings.max_bytes:
            response.close()  # drop the connection: the rest is never downloaded
            return FetchResult(
                "too_large", error=f"body over {settings.max_bytes} bytes", **known
            )
    if not body:
        return FetchResult("not_image", error="empty body", **known)
    return FetchResult("ok", body=bytes(body), **known)


async def _attempt(
    session: aiohttp.ClientSession,
    url: URL,
    settings: FetchSettings,
    limits: ConcurrencyLimits,
) -> FetchResult | _Redirect | _Retryable:
    """One request to ``url``; classifies every failure."""
    final_url = str(url)
    async with limits.slot((url.raw_host or "").lower()):
        try:
            async with asyncio.timeout(settings.timeout_s):
                async with session.get(url, allow_redirects=False) as response:
                    return await _read_response(response, url, settings)
        except TimeoutError:  # also aiohttp's ServerTimeoutError / ConnectionTimeoutError
            # Final, not retried: each retry would hold the whole batch another timeout_s.
            return FetchResult("timeout", error=f"no answer within {settings.timeout_s:g} s",
                               final_url=final_url)
        except aiohttp.ClientConnectorError as exc:
            blocked = _blocked_reason(exc)
            if blocked is not None:
                return FetchResult("blocked_address", error=blocked, final_url=final_url)
            failure = FetchResult("connection_error", error=short_error(exc), final_url=final_url)
            if isinstance(exc, aiohttp.ClientSSLError):
                return failure  # certificate problems do not fix themselves
            if isinstance(exc, aiohttp.ClientConnectorDNSError):
                os_error = exc.os_error
                if not (isinstance(os_error, socket.gaierror)
                        and os_error.errno == socket.EAI_AGAIN):
                    return failure  # unknown names stay unknown; only "try again" retries
            return _Retryable(failure)
        except aiohttp.ClientPayloadError as exc:
            return _Retryable(FetchResult(
                "connection_error", error=short_error(f"truncated body: {short_error(exc)}"),
                final_url=final_url))
        except aiohttp.InvalidURL as exc:
            return FetchResult("invalid_url", error=short_error(exc), final_url=final_url)
        except aiohttp.ClientResponseError as exc:  # a response aiohttp could not parse
            return FetchResult("http_error", exc.status or None, short_error(exc),
                               final_url=final_url)
        except BlockedAddressError as exc:
            return FetchResult("blocked_address", error=exc.reason, final_url=final_url)
        except (aiohttp.ClientError, OSError) as exc:
            return _Retryable(FetchResult("connection_error", error=short_error(exc),
                                          final_url=final_url))


def _next_hop(current: URL, location: str) -> URL | None:
    """Absolute URL of a redirect target, or None when the Location cannot be parsed."""
    try:
        target = URL(location)
        if not target.scheme:
            target = current.join(target)
        return target.with_fragment(None)
    except Exception:  # yarl raises more than ValueError (IndexError on "http://[]@")
        return None


async def _fetch(
    session: aiohttp.ClientSession,
    url: object,
    settings: FetchSettings,
    limits: ConcurrencyLimits,
) -> FetchResult:
    guard = dict(
        allow_private_networks=settings.allow_private_networks,
        allowed_hosts=settings.allowed_private_hosts,
    )
    verdict = check_url(url, **guard)
    if not verdict.ok:
        return FetchResult(verdict.status, error=verdict.reason)
    current = verdict.url
    assert current is not None
    redirects = 0
    retries_used = 0
    while True:
        outcome = await _attempt(session, current, settings, limits)
        if isinstance(outcome, _Redirect):
            redirects += 1
            if redirects > settings.max_redirects:
                return FetchResult("http_error", outcome.http_status, "too many redirects",
                                   final_url=str(current), attempts=retries_used + 1)
            target = _next_hop(current, outcome.location)
            if target is None:
                # The server's answer is broken (like a redirect without Location): an
                # http_error of that response, not a fault of the row's own URL.
                return FetchResult("http_error", outcome.http_status, "bad redirect location",
                                   final_url=str(current), attempts=retries_used + 1)
            # The guard runs again on every hop: a public page may redirect inwards.
            # A Location that parses but is refused keeps the guard's status
            # (invalid_url for a bad scheme or host, blocked_address for an inward hop).
            verdict = check_url(target, **guard)
            if not verdict.ok:
                return FetchResult(verdict.status, outcome.http_status,
                                   f"redirect refused: {verdict.reason}",
                                   final_url=str(target)[:2048], attempts=retries_used + 1)
            current = verdict.url
            continue
        if isinstance(outcome, _Retryable):
            result = outcome.result
            if retries_used >= settings.retries:
                result.attempts = retries_used + 1
                return result
            if outcome.retry_after is not None:
                if outcome.retry_after > settings.backoff_max_s:
                    result.error = (f"{result.error}; Retry-After {outcome.retry_after:g} s "
                                    f"over backoff_max_s")
                    result.attempts = retries_used + 1
                    return result
                delay = outcome.retry_after
            else:
                delay = backoff_delay(retries_used, settings)
            retries_used += 1
            await asyncio.sleep(delay)
            continue
        outcome.attempts = retries_used + 1
        return outcome


async def fetch_one(
    session: aiohttp.ClientSession,
    url: object,
    settings: FetchSettings,
    limits: ConcurrencyLimits | None = None,
) -> FetchResult:
    """Fetch one URL (any object: garbage becomes ``invalid_url``). Never raises.

    ``limits`` shares concurrency slots between calls; without it this call runs alone.
    """
    try:
        return await _fetch(
            session, url, settings,
            limits or ConcurrencyLimits(settings.concurrency, settings.per_host),
        )
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a bug or an aiohttp surprise must not lose the row
        return FetchResult("internal_error", error=type(exc).__name__)


# --------------------------------------------------------------------------- batches


class Fetcher:
    """One event loop on a daemon thread with one aiohttp session, for sync callers.

    `fetch_all` may be called from several threads at once; all calls share the
    session, its connection pool, its DNS cache and the concurrency limits.
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
            resolver=resolver,
            use_dns_cache=True,
            ttl_dns_cache=s.dns_cache_ttl_s,
        )
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=s.timeout_s, sock_connect=s.connect_timeout_s),
            headers={"User-Agent": s.user_agent, "Accept": "image/*,*/*;q=0.8"},
            cookie_jar=aiohttp.DummyCookieJar(),  # millions of hosts: keep no cookies
            trust_env=False,  # an environment proxy would bypass the address guard
        )
        return session, resolver, ConcurrencyLimits(s.concurrency, s.per_host)

    async def _fetch_all(self, urls: Sequence[object]) -> list[FetchResult]:
        return list(
            await asyncio.gather(
                *(fetch_one(self._session, url, self.settings, self._limits) for url in urls)
            )
        )

    def fetch_all(self, urls: Sequence[object]) -> list[FetchResult]:
        """Fetch every URL concurrently; results in the order of ``urls``."""
        with self._lock:
            if self._closed:
                raise RuntimeError("Fetcher is closed")
            future = asyncio.run_coroutine_threadsafe(self._fetch_all(list(urls)), self._loop)
        return future.result()

    def fetch_as_completed(self, urls: Sequence[object]) -> Iterator[tuple[int, FetchResult]]:
        """Fetch every URL concurrently; yield ``(position, result)`` as each finishes.

        The caller works on early results (decoding, hashing) while the loop thread is
        still downloading the rest of the batch.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("Fetcher is closed")
            futures = {
                asyncio.run_coroutine_threadsafe(
                    fetch_one(self._session, url, self.settings, self._limits), self._loop
                ): i
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


def apply_fetch_result(record: dict, result: FetchResult) -> dict:
    """A copy of ``record`` with the fetch columns (and in-flight ``_body``) filled in."""
    out = dict(record)
    out.update(
        status=result.status,
        http_status=result.http_status,
        error=result.error,
        opt_out=list(result.opt_out),
        bytes=len(result.body) if result.body is not None else None,
    )
    if result.status == "ok" and result.body is not None:
        out["_body"] = result.body
    else:
        out.pop("_body", None)
    return out


# --------------------------------------------------------------------------- Beam


class FetchImages(beam.DoFn):
    """Fetches a batch of records; rows that already have a status pass through."""

    def __init__(self, settings: FetchSettings | None = None) -> None:
        self._settings = settings or FetchSettings()
        self._fetcher: Fetcher | None = None

    def setup(self) -> None:
        self._bytes = Metrics.counter("fetch", "bytes")
        self._statuses = StatusCounters("fetch")
        self._fetcher = Fetcher(self._settings)

    def teardown(self) -> None:
        if self._fetcher is not None:
            self._fetcher.close()
            self._fetcher = None

    def _results(self, urls: list[object]) -> Iterator[tuple[int, FetchResult]]:
        """(position, result) for every URL, as fetches finish; a failure of the fetcher
        itself still gives one result per URL."""
        done: set[int] = set()
        try:
            if self._fetcher is None:
                self._fetcher = Fetcher(self._settings)
            for i, result in self._fetcher.fetch_as_completed(urls):
                done.add(i)
                yield i, result
        except Exception as exc:  # a failed batch must still yield one row per input
            for i in range(len(urls)):
                if i not in done:
                    yield i, FetchResult("internal_error", error=type(exc).__name__)

    def process(self, batch: Sequence[dict]):  # type: ignore[no-untyped-def]
        batch = list(batch)
        pending = []
        for record in batch:
            if record.get("status") is None:
                pending.append(record)
            else:
                yield record
        # Records leave as their fetches finish: the next stage (decode + hash, fused
        # into this thread) overlaps with the downloads still in flight.
        for i, result in self._results([record.get("url") for record in pending]):
            self._statuses.inc(result.status)
            if result.body is not None:
                self._bytes.inc(len(result.body))
            yield apply_fetch_result(pending[i], result)


class Fetch(beam.PTransform):
    """records -> records with fetch columns: batches, then fetches each batch."""

    def __init__(self, settings: FetchSettings | None = None, label: str | None = None) -> None:
        super().__init__(label)
        self._settings = settings or FetchSettings()

    @classmethod
    def from_config(cls, cfg: FetchSettings) -> Fetch:
        """From the config's ``fetch`` section, used as it is: it is the settings."""
        return cls(cfg)

    def expand(self, pcoll):  # type: ignore[no-untyped-def]
        s = self._settings
        return (
            pcoll
            | "Batch" >> beam.BatchElements(
                min_batch_size=s.min_batch_size, max_batch_size=s.max_batch_size
            )
            | "FetchImages" >> beam.ParDo(FetchImages(s))
        )
