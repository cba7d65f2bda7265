"""The Beam side of fetching: rows routed by host, fetched, given their fetch columns.

With ``fetch.workers_per_host`` (the default) rows are keyed by host before fetching:
a host's URLs fall into at most ``workers_per_host`` of ``routing_keys`` keys (a hot
host is spread over exactly that many), and a GroupByKey hands each key to one fetching
DoFn instance. Each instance caps a host at ``per_host`` requests in flight and
``per_host_rps``, so however many workers run, a host sees at most
``workers_per_host x per_host`` requests in flight and ``workers_per_host x
per_host_rps`` per second, and its robots.txt is read at most ``workers_per_host``
times per cache TTL. Without it (null) rows are batched as they come and the caps hold
per instance only.
"""
from __future__ import annotations

import concurrent.futures
import zlib
from collections.abc import Iterable, Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows
from yarl import URL

from transforms.fetch.client import FetchResult
from transforms.fetch.fetcher import Fetcher
from transforms.fetch_settings import FetchSettings
from transforms.row_status import StatusCounters


def host_of(url: object) -> str:
    """The lower-case host of a URL, "" when there is none (such rows are refused anyway)."""
    if not isinstance(url, str):
        return ""
    try:
        return (URL(url.strip()).raw_host or "").lower()
    except Exception:  # yarl raises more than ValueError
        return ""


def _stable_hash(text: str) -> int:
    # Not hash(): Python salts it per process, and every worker must agree on a key.
    return zlib.crc32(text.encode("utf-8", "surrogatepass"))


def route_key(url: object, workers_per_host: int, routing_keys: int) -> int:
    """The routing key of a row's URL: one of at most ``workers_per_host`` consecutive
    keys (modulo ``routing_keys``) that its host's rows are spread over, by URL."""
    host = host_of(url)
    bucket = _stable_hash(url) % workers_per_host if isinstance(url, str) else 0
    return (_stable_hash(host) + bucket) % routing_keys


def apply_fetch_result(record: dict, result: FetchResult) -> dict:
    """A copy of ``record`` with the fetch columns (and in-flight ``_body``) filled in."""
    out = dict(record)
    out.update(
        status=result.status,
        http_status=result.http_status,
        error=result.error,
        opt_out=list(result.opt_out),
        opt_out_headers=list(result.opt_out_headers),
        robots_txt=result.robots_txt,
        bytes=len(result.body) if result.body is not None else None,
    )
    if result.status == "ok" and result.body is not None:
        out["_body"] = result.body
    else:
        out.pop("_body", None)
    return out


class FetchImages(beam.DoFn):
    """Fetches records; rows that already have a status pass through.

    An element is a batch of records or a ``(routing key, records)`` group. Fetches of
    a bundle overlap across elements, up to ``batch_size`` in flight, so many small
    groups keep the fetcher as busy as one large batch; records leave as their fetches
    finish (the decode stage fused after this one overlaps with the downloads), the
    last ones at the end of the bundle.
    """

    def __init__(self, settings: FetchSettings | None = None) -> None:
        self._settings = settings or FetchSettings()
        self._fetcher: Fetcher | None = None
        self._in_flight: dict[concurrent.futures.Future, dict] = {}

    def setup(self) -> None:
        self._bytes = Metrics.counter("fetch", "bytes")
        self._statuses = StatusCounters("fetch")
        self._fetcher = Fetcher(self._settings)

    def teardown(self) -> None:
        if self._fetcher is not None:
            self._fetcher.close()
            self._fetcher = None

    def start_bundle(self) -> None:
        self._in_flight = {}

    def _finish(self, record: dict, result: FetchResult) -> dict:
        self._statuses.inc(result.status)
        if result.body is not None:
            self._bytes.inc(len(result.body))
        return apply_fetch_result(record, result)

    def _submit(self, record: dict) -> dict | None:
        """Start a record's fetch; the finished record at once when the fetcher fails."""
        try:
            if self._fetcher is None:
                self._fetcher = Fetcher(self._settings)
            future = self._fetcher.submit(record.get("url"))
        except Exception as exc:  # a broken fetcher must still yield one row per input
            return self._finish(record, FetchResult("internal_error", error=type(exc).__name__))
        self._in_flight[future] = record
        return None

    def _collect(self, done: Iterable[concurrent.futures.Future]) -> Iterator[dict]:
        for future in done:
            record = self._in_flight.pop(future)
            try:
                result = future.result()
            except Exception as exc:  # fetch_one never raises; a cancelled loop might
                result = FetchResult("internal_error", error=type(exc).__name__)
            yield self._finish(record, result)

    def _wait(self, until_at_most: int) -> Iterator[dict]:
        while len(self._in_flight) > until_at_most:
            done, _ = concurrent.futures.wait(
                list(self._in_flight), return_when=concurrent.futures.FIRST_COMPLETED)
            yield from self._collect(done)

    def process(self, element):  # type: ignore[no-untyped-def]
        rows: Iterable[dict] = element[1] if isinstance(element, tuple) else element
        window = self._settings.batch_size
        for record in rows:
            if record.get("status") is not None:
                yield record
                continue
            failed = self._submit(record)
            if failed is not None:
                yield failed
            yield from self._wait(window - 1)
        yield from self._collect([f for f in list(self._in_flight) if f.done()])

    def finish_bundle(self):  # type: ignore[no-untyped-def]
        # Batch pipelines run in the global window (rows carry no timestamps of meaning).
        for record in self._wait(0):
            yield GlobalWindows.windowed_value(record)


def _keyed(record: dict, workers_per_host: int, routing_keys: int) -> tuple[int, dict]:
    return route_key(record.get("url"), workers_per_host, routing_keys), record


class Fetch(beam.PTransform):
    """records -> records with fetch columns: routed by host (or batched), then fetched."""

    def __init__(self, settings: FetchSettings | None = None, label: str | None = None) -> None:
        super().__init__(label)
        self._settings = settings or FetchSettings()

    @classmethod
    def from_config(cls, cfg: FetchSettings) -> Fetch:
        """From the config's ``fetch`` section, used as it is: it is the settings."""
        return cls(cfg)

    def expand(self, pcoll):  # type: ignore[no-untyped-def]
        s = self._settings
        if s.workers_per_host:
            grouped = (
                pcoll
                | "KeyByHost" >> beam.Map(_keyed, s.workers_per_host, s.routing_keys)
                | "GroupByHost" >> beam.GroupByKey()
            )
        else:
            grouped = pcoll | "Batch" >> beam.BatchElements(
                min_batch_size=s.min_batch_size, max_batch_size=s.max_batch_size
            )
        return grouped | "FetchImages" >> beam.ParDo(FetchImages(s))


def fleet_caps(settings: FetchSettings) -> dict[str, float | int | None]:
    """What one host can see from the whole fleet at most, with routing on (None: no
    bound; with routing off the caps multiply by the number of fetching instances)."""
    w = settings.workers_per_host
    if not w:
        return {"in_flight": None, "rps": None, "robots_fetches_per_ttl": None}
    return {"in_flight": w * settings.per_host,
            "rps": w * settings.per_host_rps if settings.per_host_rps else None,
            "robots_fetches_per_ttl": w}
