"""Fetch settings: the ``fetch`` section of a run config is what the fetcher runs by.

One definition, used twice: pipelines/config.py types ``AuditConfig.fetch`` with
`FetchSettings`, and the pipeline hands that same value to ``Fetch``. Each setting's
YAML key, default and range check are written here once, so a new fetch setting is one
new field. It is a pydantic dataclass, so building one by keyword (tests, scripts) runs
the same checks as loading a config and refuses unknown names, and a config's ``--set
fetch.KEY=VALUE`` is checked like any other key.

This module imports nothing but pydantic: checking a config must stay light, and
transforms/fetch/ pulls in aiohttp and Beam.
"""
from __future__ import annotations

import re
from typing import Any

from pydantic import ConfigDict, Field, field_validator
from pydantic.dataclasses import dataclass

DEFAULT_USER_AGENT = (
    "laion-audit/0.1 (+https://github.com/laion-audit/laion-audit; dataset audit; "
    "honours robots.txt, X-Robots-Tag noai, TDMRep)"
)
# The statuses `fetch.refetch_statuses` may name: what a fetch or decode left a row
# with (transforms/records.py STATUSES, less invalid_url, never joined, reused, never an
# original status, and not_fetched, always fetched again). Kept here: no pyarrow import.
REFETCHABLE_STATUSES = (
    "ok", "blocked_address", "opted_out", "robots_unreachable", "http_error", "timeout",
    "connection_error", "too_large", "not_image", "decode_error", "internal_error",
)
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*")


def parse_duration(text: str) -> float:
    """Seconds in a duration such as "180d", "12h", "30m", "45s" or "2w" (one number,
    one unit); a ValueError that quotes the text otherwise."""
    found = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if found is None:
        raise ValueError(f"{text!r} is not a duration like 180d, 12h, 30m, 45s or 2w")
    return float(found.group(1)) * _DURATION_UNITS[found.group(2)]


# Batches of URLs are at least this big (or batch_size, when that is smaller).
MIN_BATCH_SIZE = 16


@dataclass(config=ConfigDict(extra="forbid", validate_assignment=True))
class FetchSettings:
    """How the fetch stage behaves; every field is a ``fetch.*`` config key."""

    enabled: bool = True  # false: nothing is fetched, rows get status not_fetched
    concurrency: int = Field(default=64, gt=0)  # requests in flight per Fetcher (per worker)
    per_host: int = Field(default=8, gt=0)  # requests in flight to one host, per Fetcher
    # Requests per second to one host, per Fetcher (a token bucket; null: no rate cap).
    # A 429 or 503 halves it for that host; it recovers gradually.
    per_host_rps: float | None = Field(default=None, gt=0)
    # Rows are routed by host so that at most this many Fetchers (workers) fetch one
    # host: fleet-wide a host sees <= workers_per_host x per_host requests in flight
    # (and x per_host_rps per second). null: no routing, caps hold per Fetcher only.
    workers_per_host: int | None = Field(default=4, gt=0)
    routing_keys: int = Field(default=1024, gt=0)  # keys rows are routed over (>= fetching threads)
    timeout_s: float = Field(default=20.0, gt=0)  # one attempt: connect, headers and body
    connect_timeout_s: float = Field(default=5.0, gt=0)
    # Extra attempts after 429 / 5xx / connection errors (not timeouts).
    retries: int = Field(default=2, ge=0)
    backoff_base_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=30.0, ge=0)  # a longer Retry-After gives up instead
    max_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    max_redirects: int = Field(default=5, ge=0)
    # Decompression-bomb cap, checked by the decode stage (transforms/hashing.py) before
    # decoding.
    max_pixels: int = Field(default=40_000_000, gt=0)
    allow_private_networks: bool = False  # true only for tests / trusted local hosts
    # "host" or "host:port" let through the address guard (e.g. an internal mirror).
    allowed_private_hosts: tuple[str, ...] = ()
    respect_opt_out: bool = True  # X-Robots-Tag noai / noimageai, TDMRep tdm-reservation: 1
    # Read each origin's robots.txt (RFC 9309) before its first image request; a
    # Disallow makes the row opted_out, an unreadable file (5xx, unreachable) makes it
    # robots_unreachable.
    respect_robots_txt: bool = True
    robots_cache_ttl_s: float = Field(default=86400.0, gt=0)  # RFC 9309: at most a day
    robots_max_bytes: int = Field(default=512 * 1024, ge=500 * 1024)  # RFC 9309: >= 500 KiB parsed
    user_agent: str = DEFAULT_USER_AGENT  # null: this default
    batch_size: int = Field(default=128, gt=0)  # URLs fetched together (the most per batch)
    dns_cache_ttl_s: int = Field(default=300, ge=0)
    # With dataset.previous_audit (transforms/reuse.py): a previous row audited longer
    # ago than this duration ("180d", "12h", "30m", "45s", "2w"; null: never) is fetched
    # again, and so is one whose status (its original one, for a row reused before) is
    # listed here, e.g. [timeout, connection_error].
    refetch_older_than: str | None = None
    refetch_statuses: tuple[str, ...] = ()

    @field_validator("allowed_private_hosts", "refetch_statuses", mode="before")
    @classmethod
    def _as_list(cls, value: Any) -> Any:
        # Like every list key: one string is a list of one, null an empty list.
        if value is None:
            return ()
        return (value,) if isinstance(value, str) else value

    @field_validator("refetch_older_than")
    @classmethod
    def _check_duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @field_validator("refetch_statuses")
    @classmethod
    def _check_statuses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for status in value:
            if status not in REFETCHABLE_STATUSES:
                raise ValueError(f"{status!r} is not a status a previous row is refetched by "
                                 f"(one of: {', '.join(REFETCHABLE_STATUSES)})")
        return tuple(dict.fromkeys(value))

    @field_validator("user_agent", mode="before")
    @classmethod
    def _default_user_agent(cls, value: Any) -> Any:
        return DEFAULT_USER_AGENT if value is None else value

    @property
    def min_batch_size(self) -> int:
        return min(MIN_BATCH_SIZE, self.batch_size)

    @property
    def max_batch_size(self) -> int:
        return self.batch_size
