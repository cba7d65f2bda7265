"""robots.txt (RFC 9309): fetched once per origin per `Fetcher`, before that origin's
first image request, and cached.

The file is requested through the same session as images, so the same address guard
(every redirect hop too), timeout and a size cap apply. What the answer means follows
RFC 9309 section 2.3.1: 2xx is parsed (protego: the project's product token, else
``*``; longest match; Allow wins a tie; ``*`` and ``$``); 4xx means there is no file:
everything is allowed; 5xx, 429, a timeout or no connection means the file could not be
read: nothing is fetched from that origin (its rows get status ``robots_unreachable``,
which is no owner's opt-out). More than five redirects count as no file. Only the first
``robots_max_bytes`` are parsed, as RFC 9309 allows (it asks for at least 500 KiB).
"""
from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from protego import Protego
from yarl import URL

from transforms.fetch.host_limits import ConcurrencyLimits
from transforms.fetch_settings import FetchSettings
from transforms.netguard import BlockedAddressError, check_url
from transforms.row_status import short_error

# A row's `robots_txt` column: what the origin's robots.txt said of its URL.
ALLOWED, DISALLOWED, NO_FILE, UNREACHABLE = "allowed", "disallowed", "no_file", "unreachable"
ROBOTS_VERDICTS = (ALLOWED, DISALLOWED, NO_FILE, UNREACHABLE)
MAX_ROBOTS_REDIRECTS = 5  # RFC 9309 2.3.1.2: at least five are followed
# An unreachable file is asked again sooner than a read one: the outage may be brief.
UNREACHABLE_TTL_S = 600.0
MAX_CACHED_ORIGINS = 100_000
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class RobotsRules:
    """One origin's robots.txt as read: ``kind`` is "parsed", NO_FILE or UNREACHABLE;
    ``detail`` says why (e.g. "HTTP 503", "no answer within 20 s")."""

    kind: str
    detail: str | None = None
    parser: Protego | None = None
    # The guard refused the origin itself (not a redirect target): its rows are
    # blocked_address, as their own request would be.
    blocked: bool = False

    def verdict(self, url: URL | str, token: str) -> str:
        """ALLOWED / DISALLOWED for a parsed file, else NO_FILE or UNREACHABLE."""
        if self.kind != "parsed":
            return self.kind
        assert self.parser is not None
        return ALLOWED if self.parser.can_fetch(str(url), token) else DISALLOWED


def product_token(user_agent: str) -> str:
    """The product token a robots.txt group names this crawler by: the User-Agent's
    first word before any "/" ("laion-audit/0.1 (+https://...)" -> "laion-audit")."""
    first = user_agent.strip().split(None, 1)[0] if user_agent.strip() else "*"
    return first.split("/", 1)[0] or "*"


def origin_of(url: URL) -> str:
    """robots.txt applies per scheme, host and port (RFC 9309 2.3)."""
    return f"{url.scheme.lower()}://{(url.raw_host or '').lower()}:{url.port}"


def parse_robots(text: str) -> RobotsRules:
    try:
        return RobotsRules("parsed", parser=Protego.parse(text))
    except Exception as exc:  # noqa: BLE001 (a parser surprise must not lose rows)
        return RobotsRules(UNREACHABLE, f"robots.txt unparseable: {type(exc).__name__}")


async def _read_capped(response: aiohttp.ClientResponse, cap: int) -> bytes:
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) >= cap:
            response.close()  # the rest is never downloaded, nor parsed
            return bytes(body[:cap])
    return bytes(body)


async def fetch_robots(
    session: aiohttp.ClientSession,
    origin_url: URL,
    settings: FetchSettings,
    limits: ConcurrencyLimits,
) -> RobotsRules:
    """Read ``origin_url``'s /robots.txt; never raises (a failure is UNREACHABLE)."""
    guard = dict(allow_private_networks=settings.allow_private_networks,
                 allowed_hosts=settings.allowed_private_hosts)
    current = origin_url.with_path("/robots.txt").with_query(None).with_fragment(None)
    for hop in range(MAX_ROBOTS_REDIRECTS + 1):
        verdict = check_url(current, **guard)
        if not verdict.ok:
            return RobotsRules(UNREACHABLE, f"robots.txt refused: {verdict.reason}", blocked=hop == 0)
        current = verdict.url
        assert current is not None
        try:
            async with limits.slot((current.raw_host or "").lower()):
                async with asyncio.timeout(settings.timeout_s):
                    async with session.get(current, allow_redirects=False,
                                           headers={"Accept": "text/plain, */*;q=0.5"}) as response:
                        status = response.status
                        if status in _REDIRECTS:
                            location = response.headers.get(aiohttp.hdrs.LOCATION)
                            if not location:
                                return RobotsRules(UNREACHABLE, f"robots.txt HTTP {status} without Location")
                            try:
                                target = URL(location)
                                current = (current.join(target) if not target.scheme else target)
                            except Exception:  # yarl raises more than ValueError
                                return RobotsRules(UNREACHABLE, "robots.txt bad redirect location")
                            continue
                        if status == 429 or status >= 500:
                            return RobotsRules(UNREACHABLE, f"robots.txt HTTP {status}")
                        if 400 <= status < 500:
                            return RobotsRules(NO_FILE, f"robots.txt HTTP {status}")
                        if not 200 <= status < 300:
                            return RobotsRules(UNREACHABLE, f"robots.txt HTTP {status}")
                        cap = settings.robots_max_bytes  # not max_bytes: a low image cap must not cut rules off
                        body = await _read_capped(response, cap)
        except TimeoutError:
            return RobotsRules(UNREACHABLE, f"robots.txt: no answer within {settings.timeout_s:g} s")
        except (aiohttp.ClientError, OSError) as exc:
            blocked = _blocked_reason(exc)
            if blocked is not None:
                if hop == 0:
                    return RobotsRules(UNREACHABLE, blocked, blocked=True)
                return RobotsRules(UNREACHABLE, f"robots.txt redirect refused: {blocked}")
            return RobotsRules(UNREACHABLE, short_error(f"robots.txt: {short_error(exc)}"))
        return parse_robots(body.decode("utf-8-sig", errors="replace"))  # a BOM would hide the first group
    return RobotsRules(NO_FILE, "robots.txt: too many redirects")


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


class RobotsCache:
    """Each origin's `RobotsRules`, read once and kept for ``robots_cache_ttl_s``
    (UNREACHABLE for at most `UNREACHABLE_TTL_S`). Concurrent asks for one origin share
    one request. Oldest origins are dropped past `MAX_CACHED_ORIGINS`."""

    def __init__(self, settings: FetchSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self._rules: collections.OrderedDict[str, tuple[RobotsRules, float]] = collections.OrderedDict()
        self._pending: dict[str, asyncio.Task] = {}
        self.fetches = 0  # robots.txt requests started (for tests and metrics)

    async def rules_for(self, session: aiohttp.ClientSession, url: URL,
                        limits: ConcurrencyLimits) -> RobotsRules:
        origin = origin_of(url)
        cached = self._rules.get(origin)
        if cached is not None:
            if cached[1] > self._clock():
                return cached[0]
            del self._rules[origin]
        task = self._pending.get(origin)
        if task is None:
            self.fetches += 1
            task = asyncio.ensure_future(fetch_robots(session, url, self._settings, limits))
            self._pending[origin] = task
            task.add_done_callback(lambda done, origin=origin: self._store(origin, done))
        # shield: one row's cancellation must not cancel the request others wait on
        return await asyncio.shield(task)

    def _store(self, origin: str, task: asyncio.Task) -> None:
        self._pending.pop(origin, None)
        if task.cancelled() or task.exception() is not None:
            return
        rules = task.result()
        ttl = self._settings.robots_cache_ttl_s
        if rules.kind == UNREACHABLE:
            ttl = min(ttl, UNREACHABLE_TTL_S)
        self._rules[origin] = (rules, self._clock() + ttl)
        while len(self._rules) > MAX_CACHED_ORIGINS:
            self._rules.popitem(last=False)
