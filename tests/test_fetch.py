"""The fetch stage against a real misbehaving server on 127.0.0.1."""
from __future__ import annotations

import asyncio
import collections
import datetime as dt
import http.server
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from urllib.parse import parse_qs, quote, urlsplit

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that

from scripts.sample_images import make_photo_jpeg
from tests.hostile_server import HostileServer
from transforms import records
from transforms.fetch import (
    ConcurrencyLimits,
    Fetch,
    Fetcher,
    FetchImages,
    FetchResult,
    FetchSettings,
    apply_fetch_result,
    fetch_batch,
    opt_out_directives,
    parse_retry_after,
    read_opt_out,
)

# Tests serve from 127.0.0.1: that one address (any port) is let through the guard.
LOCAL = FetchSettings(
    allowed_private_hosts=("127.0.0.1",),
    timeout_s=2,
    connect_timeout_s=1,
    retries=2,
    backoff_base_s=0.01,
    backoff_max_s=5,
    max_bytes=4 * 1024 * 1024,
    batch_size=8,
)
GUARDED = FetchSettings(timeout_s=2, connect_timeout_s=1, retries=1, backoff_base_s=0.01)


@pytest.fixture(scope="module")
def server():
    with HostileServer() as running:
        running.add_image("photo", make_photo_jpeg(7, 96, 64))
        running.add_image("photo.png", make_photo_jpeg(8, 32, 32), content_type="image/png")
        yield running


class _RawLocationHandler(http.server.BaseHTTPRequestHandler):
    """302 with the ``to`` query value as Location, byte for byte (aiohttp's own
    HTTPFound re-parses the target, so it cannot send a Location yarl chokes on)."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path == "/robots.txt":
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(302)
        self.send_header("Location", parse_qs(urlsplit(self.path).query)["to"][0])
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def raw_redirector() -> Iterator[str]:
    """Base URL of a server on 127.0.0.1 that redirects to any raw Location text."""
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RawLocationHandler) as httpd:
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{httpd.server_address[1]}/"
        finally:
            httpd.shutdown()
            thread.join(timeout=10)


def unique(prefix: str) -> str:
    """A fresh key, so per-key routes (/flaky, /429) misbehave again in every test."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def fetch(server: HostileServer, path: str, settings: FetchSettings = LOCAL) -> FetchResult:
    return fetch_batch([server.url(path)], settings)[0]


# --------------------------------------------------------------------------- routes


def test_image_is_fetched_with_its_bytes(server: HostileServer) -> None:
    served = make_photo_jpeg(7, 96, 64)
    result = fetch(server, "/img/photo")
    assert result.status == "ok"
    assert result.http_status == 200
    assert result.body == served
    assert result.content_type == "image/jpeg"
    assert result.final_url == server.url("/img/photo")
    assert result.attempts == 1
    assert result.error is None and result.opt_out == []


@pytest.mark.parametrize(
    "path, status, http_status, error_words",
    [
        ("/404", "http_error", 404, "404"),
        ("/img/never-added", "http_error", 404, "404"),
        ("/500", "http_error", 500, "500"),
        ("/redirect-loop", "http_error", 302, "too many redirects"),
        ("/truncated", "connection_error", None, "truncated"),
        ("/html", "not_image", 200, "text/html"),
        ("/typed?type=application/json", "not_image", 200, "json"),
        ("/typed?type=application/xhtml%2Bxml", "not_image", 200, "html"),
        ("/empty", "not_image", 200, "empty body"),
        ("/redirect?to=ftp://example.com/a.jpg", "invalid_url", 302, "scheme"),
        ("/redirect?to=javascript:alert(1)", "invalid_url", 302, "scheme"),
    ],
)
def test_misbehaving_routes_get_their_status(
    server: HostileServer, path: str, status: str, http_status: int | None, error_words: str
) -> None:
    result = fetch(server, path)
    assert result.status == status
    assert result.http_status == http_status
    assert error_words in result.error
    assert result.body is None


@pytest.mark.parametrize(
    "path", ["/bomb.png", "/redirect-chain/3", "/redirect?to=/img/photo",
             "/typed?type=application/octet-stream"]
)
def test_image_like_responses_are_fetched(server: HostileServer, path: str) -> None:
    # A bomb is tiny on the wire: refusing it is the decoder's job (pixel cap), not ours.
    result = fetch(server, path)
    assert result.status == "ok"
    assert result.body


@pytest.mark.parametrize("location", ["http://[]@", "http://[]@/a.jpg", "http://[::1/a.jpg"])
def test_unparseable_redirect_location_is_an_http_error(
    raw_redirector: str, location: str
) -> None:
    # yarl raises IndexError on some of these; the row still gets the server's fault.
    result = fetch_batch([raw_redirector + "?to=" + quote(location)], LOCAL)[0]
    assert (result.status, result.http_status, result.error) == (
        "http_error", 302, "bad redirect location"
    )
    assert result.attempts == 1 and result.body is None


@pytest.mark.off_machine
@pytest.mark.parametrize("location", ["http://127.0.0.1../x", "http://[::ffff:127.1]/x",
                                      "http://1.2.3.4.5/x"])
def test_redirect_to_malformed_ip_literal_is_refused(raw_redirector: str, location: str) -> None:
    result = fetch_batch([raw_redirector + "?to=" + quote(location)], LOCAL)[0]
    assert (result.status, result.http_status) == ("invalid_url", 302)
    assert result.error.startswith("redirect refused")


def test_redirects_are_followed_up_to_the_limit(server: HostileServer) -> None:
    settings = replace(LOCAL, max_redirects=2)
    assert fetch(server, "/redirect-chain/2", settings).status == "ok"
    result = fetch(server, "/redirect-chain/3", settings)
    assert (result.status, result.error) == ("http_error", "too many redirects")


def test_server_error_then_success_is_retried(server: HostileServer) -> None:
    key = unique("flaky")
    result = fetch(server, f"/flaky/{key}")
    assert result.status == "ok"
    assert result.attempts == 2
    assert server.requests.count(f"/flaky/{key}") == 2


def test_persistent_server_error_gives_up_after_the_retries(server: HostileServer) -> None:
    server.clear_requests()
    result = fetch(server, "/500", replace(LOCAL, retries=1))
    assert (result.status, result.http_status, result.attempts) == ("http_error", 500, 2)
    assert server.requests.count("/500") == 2


def test_client_errors_are_not_retried(server: HostileServer) -> None:
    server.clear_requests()
    result = fetch(server, "/404")
    assert result.attempts == 1
    assert server.requests.count("/404") == 1


def test_throttling_honours_retry_after(server: HostileServer) -> None:
    key = unique("throttled")
    after = 1
    # Plain backoff would retry within backoff_base_s (10 ms): only the header waits 1 s.
    settings = replace(LOCAL, backoff_base_s=0.01, backoff_max_s=5)
    result = fetch(server, f"/429/{key}?after={after}", settings)
    assert result.status == "ok"
    assert result.attempts == 2
    first, second = server.arrival_times(f"/429/{key}")
    assert second - first >= after



def test_retry_after_on_a_server_error_is_honoured_too(server: HostileServer) -> None:
    """A 502 is not a slow-down status (its host keeps its pace), but its Retry-After
    still sets this row's wait before the retry."""
    key = unique("throttled")
    after = 1
    settings = replace(LOCAL, backoff_base_s=0.01, backoff_max_s=5)
    result = fetch(server, f"/429/{key}?after={after}&status=502", settings)
    assert (result.status, result.attempts) == ("ok", 2)
    first, second = server.arrival_times(f"/429/{key}")
    assert second - first >= after

def test_retry_after_beyond_backoff_max_gives_up_instead_of_sleeping(
    server: HostileServer,
) -> None:
    key = unique("throttled")
    after = 3
    settings = replace(LOCAL, backoff_max_s=0.5)
    started = time.monotonic()
    result = fetch(server, f"/429/{key}?after={after}", settings)
    elapsed = time.monotonic() - started
    assert (result.status, result.http_status, result.attempts) == ("http_error", 429, 1)
    assert f"Retry-After {after} s over backoff_max_s" in result.error
    # It gave up at once: no sleep, and no second request.
    assert elapsed < after / 2
    assert len(server.arrival_times(f"/429/{key}")) == 1


def test_hanging_server_times_out_without_retrying(server: HostileServer) -> None:
    # A timeout is final even with retries left: retrying a dead host would hold the
    # whole batch open for (retries + 1) * timeout_s.
    settings = replace(LOCAL, timeout_s=1, retries=2)
    server.clear_requests()
    result = fetch(server, "/hang", settings)
    assert (result.status, result.attempts) == ("timeout", 1)
    assert result.body is None
    assert server.requests.count("/hang") == 1


def test_endless_body_is_cut_at_max_bytes(server: HostileServer) -> None:
    settings = replace(LOCAL, max_bytes=100_000)
    hung_up_before = server.disconnected["/endless"]
    result = fetch(server, "/endless", settings)
    assert result.status == "too_large"
    assert result.body is None
    # The fetcher hung up rather than draining the stream.
    assert server.wait_for(lambda: server.disconnected["/endless"] > hung_up_before)


def test_declared_length_over_max_bytes_is_refused_before_reading(
    server: HostileServer,
) -> None:
    settings = replace(LOCAL, max_bytes=1000)
    result = fetch(server, "/big?size=5000000", settings)
    assert result.status == "too_large"
    assert "Content-Length" in result.error
    assert fetch(server, "/big?size=1000", settings).status == "ok"


def test_noai_opts_out_without_reading_the_body(server: HostileServer) -> None:
    hung_up_before, completed_before = server.disconnected["/noai"], server.completed["/noai"]
    result = fetch(server, "/noai")
    assert result.status == "opted_out"
    assert result.opt_out == ["noai"]
    assert result.body is None
    # The client left after the headers: the server never got to send the whole body.
    assert server.wait_for(lambda: server.disconnected["/noai"] > hung_up_before)
    assert server.completed["/noai"] == completed_before


def test_opt_out_is_recorded_but_not_enforced_when_disabled(server: HostileServer) -> None:
    settings = replace(LOCAL, respect_opt_out=False)
    result = fetch(server, "/noai", settings)
    assert result.status == "ok"
    assert result.opt_out == ["noai"]
    assert len(result.body) == 1 << 20


@pytest.mark.parametrize(
    "tag, expected",
    [
        ("NoAI", ["noai"]),
        ("otherbot: noai", ["noai"]),
        ("noindex, noimageai", ["noimageai"]),
        ("noai,noimageai", ["noai", "noimageai"]),
        ("noarchive", []),
        ("", []),
    ],
)
def test_x_robots_tag_variants(server: HostileServer, tag: str, expected: list[str]) -> None:
    result = fetch(server, f"/robots?tag={quote(tag)}")
    assert result.opt_out == expected
    assert result.status == ("opted_out" if expected else "ok")


# --------------------------------------------------------------------------- guard


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "2130706433", "0x7f000001", "0x7f.0.0.1", "0177.0.0.1", "127.1",
     "127.0.0.1.", "[::ffff:127.0.0.1]", "[::1]", "localhost", "LocalHost",
     "example.com@127.0.0.1"],
)
def test_guard_blocks_loopback_in_every_spelling(server: HostileServer, host: str) -> None:
    server.clear_requests()
    result = fetch_batch([server.url("/img/photo", host=host)], GUARDED)[0]
    assert result.status == "blocked_address"
    assert result.body is None
    assert server.requests == []  # nothing reached the server


@pytest.mark.parametrize("host", ["127.0.0.1..", "[::ffff:127.1]", "[::ffff:127.0.0.1.1]"])
@pytest.mark.parametrize("settings", [GUARDED, LOCAL], ids=["guarded", "unguarded"])
def test_malformed_ip_literals_are_invalid_and_never_connect(
    server: HostileServer, host: str, settings: FetchSettings
) -> None:
    # aiohttp takes digit/colon hosts for addresses and skips the resolver: the literal
    # itself must be readable, or the URL is refused.
    server.clear_requests()
    result = fetch_batch([server.url("/img/photo", host=host)], settings)[0]
    assert result.status == "invalid_url"
    assert result.attempts == 0
    assert server.requests == []


@pytest.mark.off_machine
def test_guard_rechecks_every_redirect_hop(server: HostileServer) -> None:
    exempt = replace(GUARDED, allowed_private_hosts=(f"127.0.0.1:{server.port}",))
    assert fetch(server, "/img/photo", exempt).status == "ok"  # the exemption works
    result = fetch(server, "/redirect-private", exempt)
    assert (result.status, result.http_status) == ("blocked_address", 302)
    assert result.final_url == "http://10.0.0.1/x"


def test_redirect_back_to_loopback_is_blocked(server: HostileServer) -> None:
    # Enter through an exempt name; the redirect names loopback directly.
    exempt = replace(GUARDED, allowed_private_hosts=(f"localhost:{server.port}",))
    server.clear_requests()
    result = fetch_batch([server.url("/redirect-to-loopback", host="localhost")], exempt)[0]
    assert result.status == "blocked_address"
    # Refused by the hop check itself, before anything (robots.txt included) is asked
    # of the new host; the connection guard behind it is the second wall, not the first.
    assert result.error.startswith("redirect refused"), result.error
    assert server.requests == ["/redirect-to-loopback"]


@pytest.mark.off_machine
def test_invalid_urls_never_reach_the_network() -> None:
    urls = [None, 123, "", "ftp://example.com/a.jpg", "javascript:alert(1)", "http://",
            "not a url", "http://[]@", "http://127.0.0.1../", "http://[::ffff:127.1]/"]
    results = fetch_batch(urls, GUARDED)
    assert [r.status for r in results] == ["invalid_url"] * len(urls)
    assert all(r.attempts == 0 and r.error for r in results)


def test_refused_connection_is_a_connection_error() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # (robots.txt off: with it on, the host's unreadable robots.txt decides first)
    settings = replace(LOCAL, retries=1, respect_robots_txt=False)
    result = fetch_batch([f"http://127.0.0.1:{port}/a.jpg"], settings)[0]
    assert result.status == "connection_error"
    assert result.attempts == 2


# --------------------------------------------------------------------------- batches


def test_fetch_all_keeps_input_order(server: HostileServer) -> None:
    paths = ["/html", "/img/photo", "/404", "/empty", "/img/photo.png", "/500"]
    expected = ["not_image", "ok", "http_error", "not_image", "ok", "http_error"]
    settings = replace(LOCAL, retries=0)
    results = fetch_batch([server.url(p) for p in paths] + ["nope"], settings)
    assert [r.status for r in results] == expected + ["invalid_url"]


def test_fetcher_serves_several_threads_at_once(server: HostileServer) -> None:
    images = {f"t{i}": make_photo_jpeg(100 + i, 24, 24) for i in range(12)}
    for name, data in images.items():
        server.add_image(name, data)
    names = list(images)
    outcomes: dict[int, list[bytes | None]] = {}

    with Fetcher(LOCAL) as fetcher:
        def work(worker: int) -> None:
            mine = names[worker:] + names[:worker]
            results = fetcher.fetch_all([server.url(f"/img/{n}") for n in mine])
            outcomes[worker] = [r.body for r in results]

        threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    for worker, bodies in outcomes.items():
        mine = names[worker:] + names[:worker]
        assert bodies == [images[n] for n in mine]
    assert len(outcomes) == 4
    with pytest.raises(RuntimeError):
        fetcher.fetch_all([server.url("/img/t0")])


# --------------------------------------------------------------------------- helpers


def test_concurrency_limits_cap_each_host_and_forget_idle_hosts() -> None:
    async def run() -> tuple[collections.Counter, int]:
        limits = ConcurrencyLimits(concurrency=3, per_host=2)
        active: collections.Counter = collections.Counter()
        peak: collections.Counter = collections.Counter()

        async def use(host: str) -> None:
            async with limits.slot(host):
                for key in (host, "all"):
                    active[key] += 1
                    peak[key] = max(peak[key], active[key])
                await asyncio.sleep(0.01)
                for key in (host, "all"):
                    active[key] -= 1

        await asyncio.gather(*(use(host) for host in ["a"] * 6 + ["b"] * 6))
        return peak, limits.tracked_hosts

    peak, tracked = asyncio.run(run())
    assert (peak["a"], peak["b"], peak["all"]) == (2, 2, 3)
    assert tracked == 0


def test_opt_out_directives_parsing() -> None:
    assert opt_out_directives(["noindex", "googlebot: NOAI, noimageai", "noai"]) == [
        "noai", "noimageai"
    ]
    assert opt_out_directives(["noaiextra, not-noai, noarchive"]) == []


def test_retry_after_parsing() -> None:
    now = dt.datetime(2024, 1, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after("Mon, 01 Jan 2024 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Mon, 01 Jan 2024 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_apply_fetch_result_leaves_the_input_alone() -> None:
    record = records.new_record("r1", "http://example.com/a.jpg", "a cat")
    ok = apply_fetch_result(record, FetchResult("ok", 200, body=b"\xff\xd8data"))
    assert (ok["status"], ok["bytes"], ok["_body"]) == ("ok", 6, b"\xff\xd8data")
    assert record["status"] is None and "_body" not in record
    refused = apply_fetch_result(ok, FetchResult("opted_out", 200, opt_out=["noai"]))
    assert refused["opt_out"] == ["noai"] and "_body" not in refused
    assert refused["bytes"] is None


# --------------------------------------------------------------------------- Beam


@pytest.mark.parametrize("workers_per_host", [4, None], ids=["routed-by-host", "batched"])
def test_fetch_transform_yields_one_row_per_input(server: HostileServer, workers_per_host) -> None:
    paths = ["/img/photo", "/404", "/html", "/noai", "/img/photo.png", "/empty", "/bomb.png"]
    rows = [records.new_record(f"r{i}", server.url(p), f"caption {i}") for i, p in enumerate(paths)]
    rows.append(records.new_record("garbage", "javascript:alert(1)", None))
    rows.append(records.new_record("none", None, None))
    reused = records.new_record("reused", server.url("/img/photo"), None)
    reused["status"] = "reused"
    rows.append(reused)
    expected = {
        "r0": "ok", "r1": "http_error", "r2": "not_image", "r3": "opted_out", "r4": "ok",
        "r5": "not_image", "r6": "ok", "garbage": "invalid_url", "none": "invalid_url",
        "reused": "reused",
    }

    def check(outputs: list[dict]) -> None:
        assert sorted(r["row_id"] for r in outputs) == sorted(expected)
        for row in outputs:
            assert row["status"] == expected[row["row_id"]], row["row_id"]
            assert ("_body" in row) == (row["status"] == "ok")
            if row["status"] == "ok":
                assert row["bytes"] == len(row["_body"]) > 0
            assert set(records.AUDIT_COLUMNS) <= set(row)

    pipeline = beam.Pipeline(runner=FnApiRunner())
    settings = replace(LOCAL, workers_per_host=workers_per_host, routing_keys=8)
    out = pipeline | beam.Create(rows, reshuffle=False) | Fetch(settings)
    assert_that(out, check)
    result = pipeline.run()
    result.wait_until_finish()

    counters = {
        c.key.metric.name: c.committed
        for c in result.metrics().query(MetricsFilter().with_namespace("fetch"))["counters"]
    }
    assert counters["status_ok"] == 3
    assert counters["status_invalid_url"] == 2
    assert "status_reused" not in counters  # passed through, not fetched
    assert counters["bytes"] > 0


def test_fetch_images_turns_a_broken_fetcher_into_internal_errors() -> None:
    do_fn = FetchImages(LOCAL)
    do_fn.setup()
    do_fn._fetcher.close()  # every later fetch_all raises
    try:
        batch = [records.new_record(f"r{i}", "http://example.com/a.jpg", None) for i in range(3)]
        out = list(do_fn.process(batch))
    finally:
        do_fn.teardown()
    assert [r["status"] for r in out] == ["internal_error"] * 3
    assert all(r["error"] == "RuntimeError" for r in out)


def test_fetch_as_completed_yields_each_position_once_fastest_first(server: HostileServer) -> None:
    settings = replace(LOCAL, timeout_s=2, retries=0)
    urls = [server.url("/hang"), server.url("/404"), server.url("/img/redirected")]
    with Fetcher(settings) as fetcher:
        order = list(fetcher.fetch_as_completed(urls))
    assert sorted(i for i, _ in order) == [0, 1, 2]
    assert order[-1][0] == 0 and order[-1][1].status == "timeout"
    assert {i: r.status for i, r in order} == {0: "timeout", 1: "http_error", 2: "ok"}


def test_undeclared_body_over_max_bytes_is_cut_while_streaming(server: HostileServer) -> None:
    # No Content-Length to refuse early: the cap must hold as the bytes arrive.
    settings = replace(LOCAL, max_bytes=100_000)
    path = "/chunked?size=400000"
    result = fetch(server, path, settings)
    assert result.status == "too_large" and result.body is None
    assert "body over 100000 bytes" in result.error
    assert server.wait_for(lambda: server.disconnected["/chunked"] >= 1)
    assert server.body_bytes_sent["/chunked"] < 400_000
    within = fetch(server, "/chunked?size=60000", settings)
    assert within.status == "ok" and len(within.body) == 60_000


# --------------------------------------------------------------------------- TDMRep


def test_tdm_reservation_opts_out_without_reading_the_body(server: HostileServer) -> None:
    hung_up_before, completed_before = server.disconnected["/tdm"], server.completed["/tdm"]
    policy = "https://example.org/tdm-policy.json"
    result = fetch(server, f"/tdm?reservation=1&policy={quote(policy)}")
    assert (result.status, result.opt_out, result.body) == ("opted_out", ["tdm-reservation"], None)
    assert result.opt_out_headers == ["tdm-reservation: 1", f"tdm-policy: {policy}"]
    assert "tdm-reservation: 1" in result.error
    assert server.wait_for(lambda: server.disconnected["/tdm"] > hung_up_before)
    assert server.completed["/tdm"] == completed_before


def test_tdm_reservation_0_reserves_nothing(server: HostileServer) -> None:
    result = fetch(server, "/tdm?reservation=0")
    assert (result.status, result.opt_out) == ("ok", [])
    assert result.opt_out_headers == ["tdm-reservation: 0"]  # seen, and kept as evidence
    assert len(result.body) == 1 << 20


def test_x_robots_tag_lines_are_kept_as_evidence(server: HostileServer) -> None:
    result = fetch(server, f"/robots?tag={quote('noindex, noimageai')}")
    assert result.opt_out_headers == ["x-robots-tag: noindex, noimageai"]
    assert fetch(server, "/img/photo").opt_out_headers == []


def test_tdm_is_recorded_but_not_enforced_when_opt_out_is_off(server: HostileServer) -> None:
    result = fetch(server, "/tdm?reservation=1", replace(LOCAL, respect_opt_out=False))
    assert (result.status, result.opt_out) == ("ok", ["tdm-reservation"])


def test_read_opt_out_names_each_standard() -> None:
    from multidict import CIMultiDict

    headers = CIMultiDict([("X-Robots-Tag", "otherbot: noai"), ("X-Robots-Tag", "noimageai"),
                           ("TDM-Reservation", " 1 "), ("Content-Type", "image/png")])
    found = read_opt_out(headers)
    assert found.said_no == ["noai", "noimageai", "tdm-reservation"]
    assert found.headers == ["x-robots-tag: otherbot: noai", "x-robots-tag: noimageai",
                             "tdm-reservation: 1"]
    assert read_opt_out(CIMultiDict([("tdm-reservation", "yes")])).said_no == []


# --------------------------------------------------------------------------- metadata


METADATA_URLS = [
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://2852039166/latest/meta-data/",
    "http://[::ffff:169.254.169.254]/latest/meta-data/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://100.100.100.200/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://METADATA.GOOGLE.INTERNAL./computeMetadata/v1/",
    "http://metadata/computeMetadata/v1/",
]


@pytest.mark.off_machine
def test_metadata_addresses_are_refused_with_private_networks_allowed() -> None:
    # In the loopback-only sandbox an unguarded request would fail at once with a
    # connection error (or an unreadable robots.txt): blocked_address, with no attempt,
    # is the guard's answer.
    settings = replace(LOCAL, allow_private_networks=True, allowed_private_hosts=())
    results = fetch_batch(METADATA_URLS, settings)
    assert [r.status for r in results] == ["blocked_address"] * len(METADATA_URLS)
    assert all("metadata" in r.error and r.attempts == 0 for r in results)


@pytest.mark.off_machine
def test_redirect_to_a_metadata_address_is_refused_with_private_networks_allowed(
    server: HostileServer,
) -> None:
    settings = replace(LOCAL, allow_private_networks=True, allowed_private_hosts=())
    target = quote("http://169.254.169.254/latest/meta-data/")
    result = fetch(server, f"/redirect?to={target}", settings)
    assert (result.status, result.http_status) == ("blocked_address", 302)
    assert "metadata" in result.error
