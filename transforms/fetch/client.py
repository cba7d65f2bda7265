"""One URL: `fetch_one` turns a URL into a `FetchResult` and never raises.

Every failure becomes one of the audit statuses (records.STATUSES). Non-http(s) URLs and
forbidden addresses are refused on every redirect hop (see netguard); each hop's origin
has its robots.txt read first (robots.py) when ``respect_robots_txt``; throttling,
server errors and dropped connections are retried with capped exponential backoff (a
timeout is final: a dead host must not hold a batch open for several timeouts), and a
429 or 503 slows that host down (host_limits.py). Opt-out headers are read before the
body, and reading stops at ``max_bytes``.
"""
from __future__ import annotations

import asyncio
import random
import socket
from dataclasses import dataclass, field

import aiohttp
from yarl import URL

from transforms import records
from transforms.fetch.headers import is_non_image_type, parse_retry_after, read_opt_out
from transforms.fetch.host_limits import ConcurrencyLimits
from transforms.fetch.robots import DISALLOWED, UNREACHABLE, RobotsCache, _blocked_reason, product_token
from transforms.fetch_settings import FetchSettings
from transforms.netguard import BlockedAddressError, check_url
from transforms.row_status import short_error

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
SLOW_DOWN_STATUSES = frozenset({429, 503})  # the host asks for less: its pace halves
ROBOTS_TXT = "robots.txt"  # the opt_out name of a robots.txt Disallow
_READ_CHUNK = 64 * 1024


@dataclass
class FetchResult:
    """What happened to one URL. ``body`` is set only when ``status == "ok"``.

    ``opt_out`` names each standard that said no (``noai``, ``noimageai``,
    ``tdm-reservation``, ``robots.txt``); ``opt_out_headers`` the opt-out header lines
    seen; ``robots_txt`` the robots.txt verdict (robots.ROBOTS_VERDICTS; None: not read).
    """

    status: str
    http_status: int | None = None
    error: str | None = None
    opt_out: list[str] = field(default_factory=list)
    body: bytes | None = None
    content_type: str | None = None
    final_url: str | None = None
    attempts: int = 0  # tries of the request (1 + retries used); redirects not counted
    robots_txt: str | None = None
    opt_out_headers: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.status not in records.STATUSES:
            raise ValueError(f"unknown fetch status {self.status!r}")


def backoff_delay(retry: int, settings: FetchSettings) -> float:
    """Exponential backoff with full jitter for the ``retry``-th retry (0-based)."""
    ceiling = min(settings.backoff_max_s, settings.backoff_base_s * (2**retry))
    return random.uniform(0.0, max(0.0, ceiling))


@dataclass
class _Redirect:
    location: str
    http_status: int


@dataclass
class _Retryable:
    result: FetchResult
    retry_after: float | None = None


def _host(url: URL) -> str:
    return (url.raw_host or "").lower()


def _length_bounded(response: aiohttp.ClientResponse) -> bool:
    """The body is exactly the declared Content-Length: not chunked, not compressed (what
    a compressed body inflates to is not bounded by its length)."""
    headers = response.headers
    if aiohttp.hdrs.TRANSFER_ENCODING in headers:
        return False
    encoding = headers.get(aiohttp.hdrs.CONTENT_ENCODING)
    return encoding is None or encoding.strip().lower() in ("", "identity")


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
    opt_out = read_opt_out(response.headers)
    content_type = response.headers.get(aiohttp.hdrs.CONTENT_TYPE)
    known = dict(http_status=status, opt_out=opt_out.said_no, content_type=content_type,
                 final_url=final_url, opt_out_headers=opt_out.headers)
    if opt_out.said_no and settings.respect_opt_out:
        response.close()
        return FetchResult("opted_out", error=short_error("opted out: " + "; ".join(opt_out.headers)),
                           **known)
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

    if declared is not None and _length_bounded(response):
        # The parser stops at Content-Length (checked against the cap above), so the body
        # is read whole, into one buffer, without a chunk loop or a second copy.
        whole = await response.read()
        if not whole:
            return FetchResult("not_image", error="empty body", **known)
        return FetchResult("ok", body=whole, **known)
    body = bytearray()  # no length, or compressed: what it inflates to is capped as it comes
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
    async with limits.slot(_host(url)):
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


async def _robots_refusal(
    session: aiohttp.ClientSession, url: URL, settings: FetchSettings,
    limits: ConcurrencyLimits, robots: RobotsCache | None, hop_status: int | None,
    attempts: int,
) -> tuple[str | None, FetchResult | None]:
    """(robots.txt verdict, a result when the verdict forbids requesting ``url``)."""
    if robots is None:
        return None, None
    rules = await robots.rules_for(session, url, limits)
    if rules.blocked:  # the guard refused this very host: its own request would be refused too
        return None, FetchResult("blocked_address", hop_status, rules.detail, final_url=str(url),
                                 attempts=attempts)
    verdict = rules.verdict(url, product_token(settings.user_agent))
    if verdict == DISALLOWED:
        return verdict, FetchResult("opted_out", hop_status, "robots.txt disallows this URL",
                                    opt_out=[ROBOTS_TXT], final_url=str(url), attempts=attempts,
                                    robots_txt=verdict)
    if verdict == UNREACHABLE:
        return verdict, FetchResult("robots_unreachable", hop_status, rules.detail,
                                    final_url=str(url), attempts=attempts, robots_txt=verdict)
    return verdict, None


async def _fetch(
    session: aiohttp.ClientSession,
    url: object,
    settings: FetchSettings,
    limits: ConcurrencyLimits,
    robots: RobotsCache | None,
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
    hop_status: int | None = None  # the redirect status that led to `current`
    robots_verdict, refused = await _robots_refusal(session, current, settings, limits, robots,
                                                    None, 0)
    if refused is not None:
        return refused
    while True:
        outcome = await _attempt(session, current, settings, limits)
        if isinstance(outcome, _Redirect):
            redirects += 1
            if redirects > settings.max_redirects:
                return FetchResult("http_error", outcome.http_status, "too many redirects",
                                   final_url=str(current), attempts=retries_used + 1,
                                   robots_txt=robots_verdict)
            target = _next_hop(current, outcome.location)
            if target is None:
                # The server's answer is broken (like a redirect without Location): an
                # http_error of that response, not a fault of the row's own URL.
                return FetchResult("http_error", outcome.http_status, "bad redirect location",
                                   final_url=str(current), attempts=retries_used + 1,
                                   robots_txt=robots_verdict)
            # The guard runs again on every hop: a public page may redirect inwards.
            # A Location that parses but is refused keeps the guard's status
            # (invalid_url for a bad scheme or host, blocked_address for an inward hop).
            verdict = check_url(target, **guard)
            if not verdict.ok:
                return FetchResult(verdict.status, outcome.http_status,
                                   f"redirect refused: {verdict.reason}",
                                   final_url=str(target)[:2048], attempts=retries_used + 1,
                                   robots_txt=robots_verdict)
            current = verdict.url
            hop_status = outcome.http_status
            # Each hop's origin has its own robots.txt (read once per origin, cached).
            robots_verdict, refused = await _robots_refusal(
                session, current, settings, limits, robots, hop_status, retries_used + 1)
            if refused is not None:
                return refused
            continue
        if isinstance(outcome, _Retryable):
            result = outcome.result
            result.robots_txt = robots_verdict
            if result.http_status in SLOW_DOWN_STATUSES:
                # The whole host slows down, not only this row: other rows of the host
                # wait for their turn, other hosts keep their pace.
                limits.throttled(_host(current), _host_pause(outcome.retry_after, settings))
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
        if outcome.http_status is not None and 200 <= outcome.http_status < 300:
            limits.succeeded(_host(current))
        outcome.attempts = retries_used + 1
        outcome.robots_txt = robots_verdict
        return outcome


def _host_pause(retry_after: float | None, settings: FetchSettings) -> float | None:
    """How long a Retry-After pauses its host: as asked, at most ``backoff_max_s``."""
    return None if retry_after is None else min(retry_after, settings.backoff_max_s)


async def fetch_one(
    session: aiohttp.ClientSession,
    url: object,
    settings: FetchSettings,
    limits: ConcurrencyLimits | None = None,
    robots: RobotsCache | None = None,
) -> FetchResult:
    """Fetch one URL (any object: garbage becomes ``invalid_url``). Never raises.

    ``limits`` shares request slots and host paces between calls, ``robots`` the
    robots.txt cache; without them this call runs alone (and, with
    ``respect_robots_txt``, reads the robots.txt itself).
    """
    if robots is None and settings.respect_robots_txt:
        robots = RobotsCache(settings)
    try:
        return await _fetch(
            session, url, settings,
            limits or ConcurrencyLimits(settings.concurrency, settings.per_host, settings.per_host_rps),
            robots if settings.respect_robots_txt else None,
        )
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a bug or an aiohttp surprise must not lose the row
        return FetchResult("internal_error", error=type(exc).__name__)
