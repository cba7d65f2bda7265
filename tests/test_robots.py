"""robots.txt (RFC 9309) against real local servers: which image URLs the server is asked
for under each robots.txt, and what the rows say about it."""
from __future__ import annotations

import socket
import time
from dataclasses import replace

import apache_beam as beam
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that

from scripts.sample_images import make_photo_jpeg
from tests.hostile_server import HostileServer
from transforms import records
from transforms.fetch import Fetch, Fetcher, FetchSettings, fetch_batch, product_token

# 127.0.0.1, .2 and .3 are three hosts; each is let through the guard by its exact name.
HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
LOCAL = FetchSettings(allowed_private_hosts=HOSTS, timeout_s=2, connect_timeout_s=1, retries=0,
                      batch_size=8)
PHOTO = make_photo_jpeg(5, 32, 24)
NAMES = ("a", "b", "secret", "pub", "public", "gif.gif", "x")


def start(host: str = "127.0.0.1") -> HostileServer:
    server = HostileServer(host=host).start()
    for name in NAMES:
        server.add_image(name, PHOTO)
    return server


@pytest.fixture
def server():
    running = start()
    yield running
    running.stop()


def urls(server: HostileServer, *paths: str) -> list[str]:
    return [server.url(p) for p in paths]


def test_a_disallowed_url_is_never_requested(server: HostileServer) -> None:
    server.set_robots("User-agent: *\nDisallow: /img/secret\n")
    secret, photo = fetch_batch(urls(server, "/img/secret", "/img/a"), LOCAL)
    assert (secret.status, secret.opt_out, secret.robots_txt) == ("opted_out", ["robots.txt"], "disallowed")
    assert secret.http_status is None and secret.body is None and secret.attempts == 0
    assert "robots.txt" in secret.error
    assert (photo.status, photo.robots_txt, photo.body) == ("ok", "allowed", PHOTO)
    assert server.requests == ["/img/a"]
    assert server.robots_requests == 1


ROBOTS_GROUPS = """\
User-agent: *
Disallow: /

User-agent: LAION-AUDIT
Disallow: /img/
Allow: /img/pub
Disallow: /img/pub/private
Disallow: /*.gif$
"""


def test_allow_disallow_precedence_longest_match_and_wildcards(server: HostileServer) -> None:
    # Read by hand from RFC 9309: the group naming our product token (matched without
    # regard to case) replaces "*"; the longest matching rule wins; "*" matches any
    # run of characters and "$" the end of the path.
    server.set_robots(ROBOTS_GROUPS)
    expected = {
        "/img/a": "disallowed",  # Disallow: /img/
        "/img/pub": "allowed",  # Allow: /img/pub is longer
        "/img/public": "allowed",  # a prefix match of the Allow
        "/img/pub/private/b": "disallowed",  # the longest rule again
        "/other.gif": "disallowed",  # /*.gif$
        "/other.gifs": "allowed",  # $ anchors: no match
        "/img.gif/x": "allowed",  # neither /img/ nor .gif at the end
        "/html": "allowed",  # "*"'s Disallow: / is not ours
    }
    results = fetch_batch(urls(server, *expected), LOCAL)
    assert {p: r.robots_txt for p, r in zip(expected, results)} == expected
    for path, result in zip(expected, results):
        refused = expected[path] == "disallowed"
        assert (result.status == "opted_out") == refused, path
    assert sorted(server.requests) == sorted(p for p, v in expected.items() if v == "allowed")


def test_star_group_applies_when_no_group_names_us(server: HostileServer) -> None:
    server.set_robots("User-agent: otherbot\nDisallow: /img/a\n\nUser-agent: *\nDisallow: /img/b\n")
    results = fetch_batch(urls(server, "/img/a", "/img/b"), LOCAL)
    assert [r.status for r in results] == ["ok", "opted_out"]
    assert server.requests == ["/img/a"]


def test_own_user_agent_token_is_the_product_token(server: HostileServer) -> None:
    assert product_token("laion-audit/0.1 (+https://example)") == "laion-audit"
    assert product_token("mybot") == "mybot"
    server.set_robots("User-agent: mybot\nDisallow: /img/\n")
    mine = replace(LOCAL, user_agent="mybot/2.0 (+https://example.org/bot)")
    assert fetch_batch(urls(server, "/img/a"), mine)[0].status == "opted_out"
    assert fetch_batch(urls(server, "/img/a"), LOCAL)[0].status == "ok"
    assert server.requests == ["/img/a"]


@pytest.mark.parametrize("status", [404, 403, 410])
def test_a_4xx_robots_txt_allows_everything(server: HostileServer, status: int) -> None:
    server.set_robots("User-agent: *\nDisallow: /\n", status=status)  # the body of an error page
    results = fetch_batch(urls(server, "/img/a", "/img/secret"), LOCAL)
    assert [(r.status, r.robots_txt) for r in results] == [("ok", "no_file")] * 2
    assert sorted(server.requests) == ["/img/a", "/img/secret"]


@pytest.mark.parametrize("status", [500, 503, 429])
def test_a_5xx_robots_txt_means_no_image_request(server: HostileServer, status: int) -> None:
    server.set_robots("User-agent: *\nAllow: /\n", status=status)
    results = fetch_batch(urls(server, "/img/a", "/img/b"), LOCAL)
    for result in results:
        assert (result.status, result.robots_txt, result.opt_out) == ("robots_unreachable", "unreachable", [])
        assert f"HTTP {status}" in result.error
    assert server.requests == []
    assert server.robots_requests == 1  # asked once for both rows


def test_an_unreachable_host_gets_robots_unreachable() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = fetch_batch([f"http://127.0.0.1:{port}/a.jpg"], LOCAL)[0]
    assert (result.status, result.robots_txt) == ("robots_unreachable", "unreachable")
    assert result.attempts == 0


def test_a_slow_robots_txt_times_out_and_blocks_the_host(server: HostileServer) -> None:
    server.set_robots("User-agent: *\nAllow: /\n", delay_s=5)
    result = fetch_batch(urls(server, "/img/a"), replace(LOCAL, timeout_s=0.5))[0]
    assert (result.status, result.robots_txt) == ("robots_unreachable", "unreachable")
    assert "no answer within 0.5 s" in result.error
    assert server.requests == []


def test_only_the_first_robots_max_bytes_are_parsed(server: HostileServer) -> None:
    filler = "# " + "x" * 98 + "\n"
    body = "User-agent: *\nDisallow: /img/a\n" + filler * 6000 + "Disallow: /img/b\n"  # ~600 KB
    assert len(body) > FetchSettings().robots_max_bytes
    server.set_robots(body)
    results = fetch_batch(urls(server, "/img/a", "/img/b"), LOCAL)
    assert [r.status for r in results] == ["opted_out", "ok"]
    assert server.requests == ["/img/b"]



def test_a_robots_txt_starting_with_a_bom_is_obeyed(server: HostileServer) -> None:
    server.set_robots(b"\xef\xbb\xbfUser-agent: *\nDisallow: /img/a\n")
    results = fetch_batch(urls(server, "/img/a", "/img/b"), LOCAL)
    assert [r.status for r in results] == ["opted_out", "ok"]
    assert server.requests == ["/img/b"]


def test_a_low_image_cap_does_not_cut_robots_txt_short(server: HostileServer) -> None:
    filler = "# " + "x" * 98 + "\n"
    body = "User-agent: *\n" + filler * 3000 + "Disallow: /img/b\n"  # ~300 KB
    server.set_robots(body)
    settings = replace(LOCAL, max_bytes=64 * 1024)
    assert len(body) > settings.max_bytes
    results = fetch_batch(urls(server, "/img/a", "/img/b"), settings)
    assert [r.status for r in results] == ["ok", "opted_out"]
    assert server.requests == ["/img/a"]

def test_robots_txt_redirect_is_followed_through_the_guard(server: HostileServer) -> None:
    server.add_image("rules.txt", b"User-agent: *\nDisallow: /img/b\n", content_type="text/plain")
    server.set_robots(redirect="/img/rules.txt")
    results = fetch_batch(urls(server, "/img/a", "/img/b"), LOCAL)
    assert [r.status for r in results] == ["ok", "opted_out"]
    assert server.requests == ["/img/rules.txt", "/img/a"]


def test_robots_txt_redirecting_to_a_blocked_address_blocks_the_host() -> None:
    # 127.0.0.2 is let through; its robots.txt sends the crawler to 127.0.0.1, which
    # these settings do not let through: the file cannot be read, nothing is fetched.
    inner, outer = start("127.0.0.1"), start("127.0.0.2")
    try:
        outer.set_robots(redirect=inner.url("/robots.txt"))
        settings = replace(LOCAL, allowed_private_hosts=(f"127.0.0.2:{outer.port}",))
        result = fetch_batch(urls(outer, "/img/a"), settings)[0]
        assert (result.status, result.robots_txt) == ("robots_unreachable", "unreachable")
        assert "loopback" in result.error
        assert outer.requests == [] and inner.robots_requests == 0 and inner.requests == []
    finally:
        inner.stop()
        outer.stop()


@pytest.mark.off_machine
def test_robots_txt_redirecting_off_machine_is_refused(server: HostileServer) -> None:
    server.set_robots(redirect="http://10.0.0.1/robots.txt")
    result = fetch_batch(urls(server, "/img/a"), LOCAL)[0]
    assert (result.status, result.robots_txt) == ("robots_unreachable", "unreachable")
    assert "private network" in result.error
    assert server.requests == []


def test_a_host_the_guard_refuses_is_blocked_not_robots_unreachable(server: HostileServer) -> None:
    # "localhost" resolves to loopback: the guard refuses the robots.txt request and the
    # image request alike, so the row says blocked_address (and no request was made).
    result = fetch_batch([server.url("/img/a", host="localhost")], replace(LOCAL, allowed_private_hosts=()))[0]
    assert (result.status, result.robots_txt) == ("blocked_address", None)
    assert server.robots_requests == 0 and server.requests == []


def test_robots_txt_is_read_once_per_host_per_fetcher() -> None:
    servers = [start(host) for host in HOSTS[1:]]
    try:
        for s in servers:
            s.set_robots("User-agent: *\nDisallow: /img/secret\n")
        with Fetcher(LOCAL) as fetcher:
            for _ in range(3):
                results = fetcher.fetch_all([u for s in servers for u in urls(s, "/img/a", "/img/secret")])
                assert [r.status for r in results] == ["ok", "opted_out"] * 2
        assert [s.robots_requests for s in servers] == [1, 1]
        assert [s.requests for s in servers] == [["/img/a"] * 3] * 2
    finally:
        for s in servers:
            s.stop()


def test_robots_txt_is_read_again_after_its_ttl(server: HostileServer) -> None:
    server.set_robots("User-agent: *\nDisallow: /img/b\n")
    with Fetcher(replace(LOCAL, robots_cache_ttl_s=0.3)) as fetcher:
        assert fetcher.fetch_all(urls(server, "/img/b"))[0].status == "opted_out"
        server.set_robots("User-agent: *\nAllow: /\n")
        assert fetcher.fetch_all(urls(server, "/img/b"))[0].status == "opted_out"  # cached
        time.sleep(0.5)
        assert fetcher.fetch_all(urls(server, "/img/b"))[0].status == "ok"
    assert server.robots_requests == 2


def test_each_redirect_hop_obeys_its_own_hosts_robots_txt() -> None:
    a, b = start("127.0.0.2"), start("127.0.0.3")
    try:
        b.set_robots("User-agent: *\nDisallow: /img/x\n")
        result = fetch_batch(urls(a, "/redirect?to=" + b.url("/img/x")), LOCAL)[0]
        assert (result.status, result.opt_out, result.http_status) == ("opted_out", ["robots.txt"], 302)
        assert result.final_url == b.url("/img/x")
        assert a.requests == ["/redirect"] and b.requests == []
        assert (a.robots_requests, b.robots_requests) == (1, 1)
    finally:
        a.stop()
        b.stop()


def test_robots_txt_off_reads_no_robots_txt(server: HostileServer) -> None:
    server.set_robots("User-agent: *\nDisallow: /\n")
    result = fetch_batch(urls(server, "/img/a"), replace(LOCAL, respect_robots_txt=False))[0]
    assert (result.status, result.robots_txt) == ("ok", None)
    assert server.robots_requests == 0 and server.requests == ["/img/a"]


def test_rows_record_the_robots_verdict(server: HostileServer) -> None:
    server.set_robots("User-agent: *\nDisallow: /img/secret\n")
    rows = [records.new_record("allowed", server.url("/img/a"), None),
            records.new_record("refused", server.url("/img/secret"), None)]

    def check(outputs: list[dict]) -> None:
        by_id = {r["row_id"]: r for r in outputs}
        assert len(outputs) == 2
        assert (by_id["allowed"]["status"], by_id["allowed"]["robots_txt"]) == ("ok", "allowed")
        refused = by_id["refused"]
        assert (refused["status"], refused["robots_txt"], refused["opt_out"]) == (
            "opted_out", "disallowed", ["robots.txt"])
        assert set(records.AUDIT_COLUMNS) <= set(refused)

    with beam.Pipeline(runner=FnApiRunner()) as pipeline:
        out = pipeline | beam.Create(rows, reshuffle=False) | Fetch(LOCAL)
        assert_that(out, check)
    assert server.requests == ["/img/a"]


def test_audit_rows_and_summary_carry_the_evidence(tmp_path) -> None:
    import glob
    import json

    import pyarrow.parquet as pq

    from pipelines.audit import run_audit
    from pipelines.config import parse_config
    from tests.conftest import laion_table

    down, polite = start("127.0.0.2"), start("127.0.0.3")
    try:
        down.set_robots("oops", status=503)
        polite.set_robots("User-agent: *\nDisallow: /img/secret\n")
        rows = {
            down.url("/img/a"): ("robots_unreachable", "unreachable", []),
            polite.url("/img/secret"): ("opted_out", "disallowed", ["robots.txt"]),
            polite.url("/tdm?reservation=1"): ("opted_out", "allowed", ["tdm-reservation"]),
            polite.url("/img/a"): ("ok", "allowed", []),
            "ftp://x.example/a.jpg": ("invalid_url", None, []),
        }
        dataset = tmp_path / "rows.parquet"
        pq.write_table(laion_table(list(rows)), dataset)
        config = parse_config({
            "dataset": {"input": str(dataset)},
            "output": {"path": str(tmp_path / "out")},
            "fetch": {"allowed_private_hosts": list(HOSTS), "retries": 0, "timeout_s": 3},
            "runner": {"name": "FnApiRunner"},
        })
        run = run_audit(config)
    finally:
        down.stop()
        polite.stop()
    audit = [r for f in sorted(glob.glob(f"{tmp_path}/out/audit/*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert len(audit) == len(rows)
    for row in audit:
        assert (row["status"], row["robots_txt"], row["opt_out"]) == rows[row["url"]], row["url"]
    tdm = next(r for r in audit if "tdm" in r["url"])
    assert tdm["opt_out_headers"] == ["tdm-reservation: 1"]
    summary = json.loads((tmp_path / "out" / "report" / "summary.json").read_text())
    assert summary["status"] == {"robots_unreachable": 1, "opted_out": 2, "ok": 1, "invalid_url": 1}
    assert summary["all_rows_accounted"] and run.rows_audited == len(rows)
    assert down.requests == [] and polite.requests.count("/img/secret") == 0


def test_reused_rows_keep_the_robots_evidence() -> None:
    import pyarrow as pa

    from transforms.records import AUDIT_SCHEMA, audit_row
    from transforms.reuse import candidates_of_table, reuse_record

    old = records.new_record("old", "http://h.example/a.jpg", None)
    old.update(url_sha256="ab" * 32, status="opted_out", robots_txt="allowed",
               opt_out=["tdm-reservation"], opt_out_headers=["tdm-reservation: 1"])
    table = pa.Table.from_pylist([audit_row(old)], schema=AUDIT_SCHEMA)
    (_, candidate), = candidates_of_table(table)
    reused = reuse_record(records.new_record("new", old["url"], None), candidate, carry_scores=False)
    assert reused["status"] == "reused"
    assert (reused["robots_txt"], reused["opt_out"], reused["opt_out_headers"]) == (
        "allowed", ["tdm-reservation"], ["tdm-reservation: 1"])
    # An audit written before these columns existed: they come back empty, not an error.
    (_, older), = candidates_of_table(table.drop_columns(["robots_txt", "opt_out_headers"]))
    again = reuse_record(records.new_record("new", old["url"], None), older, carry_scores=False)
    assert (again["robots_txt"], again["opt_out_headers"]) == (None, [])
