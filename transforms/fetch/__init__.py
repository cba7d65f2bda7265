"""Fetch stage: download each row's image politely and safely, one status per URL.

The package's parts, each one job:

| module | job |
|---|---|
| `client.py` | one URL -> `FetchResult`, never raising: guard, robots.txt, retries, caps, opt-outs |
| `headers.py` | what response headers say: X-Robots-Tag, TDMRep, Retry-After, declared types |
| `robots.py` | robots.txt per origin (RFC 9309, protego): fetched through the guard, cached |
| `host_limits.py` | request slots, per-host token buckets, slowing down on 429 / 503 |
| `fetcher.py` | `Fetcher`: one loop and session per worker for sync callers; `fetch_batch` |
| `stage.py` | the Beam transform: rows routed by host, `FetchImages`, `apply_fetch_result` |

`Fetch` is the transform the pipelines use, built from the config's ``fetch`` section,
which is a `FetchSettings` (transforms/fetch_settings.py).
"""
from transforms.fetch.client import (
    REDIRECT_STATUSES,
    ROBOTS_TXT,
    SLOW_DOWN_STATUSES,
    FetchResult,
    backoff_delay,
    fetch_one,
)
from transforms.fetch.fetcher import Fetcher, fetch_batch
from transforms.fetch.headers import (
    AI_OPT_OUT_DIRECTIVES,
    TDM_RESERVATION,
    OptOut,
    is_non_image_type,
    opt_out_directives,
    parse_retry_after,
    read_opt_out,
    tdm_reserved,
)
from transforms.fetch.host_limits import ConcurrencyLimits, HostPace, TokenBucket
from transforms.fetch.robots import ROBOTS_VERDICTS, RobotsCache, RobotsRules, fetch_robots, product_token
from transforms.fetch.stage import Fetch, FetchImages, apply_fetch_result, fleet_caps, host_of, route_key
from transforms.fetch_settings import FetchSettings

__all__ = [
    "AI_OPT_OUT_DIRECTIVES", "REDIRECT_STATUSES", "ROBOTS_TXT", "ROBOTS_VERDICTS",
    "SLOW_DOWN_STATUSES", "TDM_RESERVATION", "ConcurrencyLimits", "Fetch", "FetchImages",
    "FetchResult", "FetchSettings", "Fetcher", "HostPace", "OptOut", "RobotsCache",
    "RobotsRules", "TokenBucket", "apply_fetch_result", "backoff_delay", "fetch_batch",
    "fetch_one", "fetch_robots", "fleet_caps", "host_of", "is_non_image_type",
    "opt_out_directives", "parse_retry_after", "product_token", "read_opt_out", "route_key",
    "tdm_reserved",
]
