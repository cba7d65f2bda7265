"""Incremental reruns (transforms/reuse.py): an audit of a new dataset version fetches
only the URLs an earlier audit did not, reuses the rest (status reused, hashes carried),
and matches and decides every row by today's lists and policies."""
from __future__ import annotations

import datetime as dt
import glob
import itertools
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipelines.audit import run_audit
from pipelines.config import ConfigError, parse_config
from scripts.sample_images import make_photo_jpeg
from tests.conftest import laion_table
from tests.hostile_server import HostileServer
from transforms.fetch_settings import FetchSettings, parse_duration
from transforms.read import ReadUnit
from transforms.records import AUDIT_SCHEMA, audit_row, new_record
from transforms.reuse import (
    PREVIOUS_COLUMNS,
    PREVIOUS_SCHEMA,
    ReuseAudited,
    needs_fetch,
    original_status,
    micros,
    pick_one,
    rank,
    reuse_counts,
    reuse_record,
    reused_error,
    url_keys,
    write_previous_rows,
)
from transforms.takedown.lists import TakedownEntry, write_list

N = 10  # photos in v1
NEW = 2  # 20% more in v2
PHOTOS = {f"p{i}.jpg": make_photo_jpeg(100 + i, 320, 240) for i in range(N + NEW)}
UTC = dt.timezone.utc


# ------------------------------------------------------------------ plain functions


@pytest.mark.parametrize("text, seconds", [
    ("180d", 180 * 86400), ("12h", 12 * 3600), ("30m", 1800), ("45s", 45), ("2w", 14 * 86400),
    ("1.5h", 5400), (" 7d ", 7 * 86400), ("0s", 0),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "d", "10y", "-1d", "1d2h", "soon", 10, None])
def test_parse_duration_refuses(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_refetch_keys_are_checked_like_the_config(tmp_path):
    data = {"dataset": {"input": "x.parquet", "previous_audit": "old"}, "output": {"path": "o"}}
    config = parse_config(data, check_files=False)
    assert config.dataset.previous_audit == ["old"]
    assert config.fetch.refetch_older_than is None and config.fetch.refetch_statuses == ()
    config = parse_config({**data, "fetch": {"refetch_older_than": "180d", "refetch_statuses": "timeout"}},
                          check_files=False)
    assert config.fetch.refetch_statuses == ("timeout",)
    with pytest.raises(ConfigError, match=r"^fetch.refetch_older_than: .*'soon' is not a duration"):
        parse_config({**data, "fetch": {"refetch_older_than": "soon"}}, check_files=False)
    with pytest.raises(ConfigError, match=r"^fetch.refetch_statuses: .*'reused'"):
        parse_config({**data, "fetch": {"refetch_statuses": ["timeout", "reused"]}}, check_files=False)
    with pytest.raises(Exception):
        FetchSettings(refetch_statuses=["nope"])


def candidate(status="ok", audited_at=None, error=None, md5=None, **values) -> tuple:
    row = dict.fromkeys(PREVIOUS_COLUMNS)
    row.update(url_sha256="k", status=status, error=error, audited_at=None if audited_at is None else micros(audited_at),
               content_md5=md5, **values)
    return tuple(row[c] for c in PREVIOUS_COLUMNS)


def at(day: int) -> dt.datetime:
    return dt.datetime(2024, 1, day, tzinfo=UTC)


def test_pick_one_newest_ok_else_newest_whatever_the_order():
    ok_old, ok_new = candidate("ok", at(1), md5="a"), candidate("ok", at(5), md5="b")
    failed_newest = candidate("timeout", at(9), error="ReadTimeout")
    rows = [ok_old, ok_new, failed_newest]
    for order in itertools.permutations(rows):
        assert pick_one(order) == ok_new
    fails = [candidate("timeout", at(2)), candidate("http_error", at(7), http_status=404), candidate("timeout", None)]
    for order in itertools.permutations(fails):
        assert pick_one(order) == fails[1]
    # Same status and time, different values: still one answer, whatever the order.
    twins = [candidate("ok", at(3), md5="c"), candidate("ok", at(3), md5="d")]
    assert pick_one(twins) == pick_one(twins[::-1]) == max(twins, key=rank)
    # Beam combines partial picks: the pick of picks is the pick of all.
    everything = rows + fails + twins
    assert pick_one([pick_one(everything[:4]), pick_one(everything[4:])]) == pick_one(everything)


def test_a_reused_row_keeps_its_original_status():
    assert reused_error("ok", None) is None
    for status, error in [("timeout", "ReadTimeout"), ("http_error", "HTTP 404: Not Found"), ("not_image", None)]:
        assert original_status("reused", reused_error(status, error)) == status
    assert original_status("reused", None) == "ok"
    assert original_status("timeout", "x") == "timeout"
    assert original_status("reused", "garbled") == "internal_error"


def test_needs_fetch():
    cutoff = micros(at(10))
    assert needs_fetch(None, frozenset(), cutoff) == "new"
    assert needs_fetch(candidate("ok", at(11)), frozenset(), cutoff) is None
    assert needs_fetch(candidate("ok", at(9)), frozenset(), cutoff) == "age"
    assert needs_fetch(candidate("ok", None), frozenset(), cutoff) == "age"
    assert needs_fetch(candidate("ok", at(9)), frozenset(), None) is None
    assert needs_fetch(candidate("timeout", at(11)), frozenset({"timeout"}), cutoff) == "status"
    assert needs_fetch(candidate("timeout", at(11)), frozenset({"http_error"}), cutoff) is None
    assert needs_fetch(candidate("not_fetched", at(11)), frozenset(), None) == "status"


def test_reuse_record_carries_fetch_results_not_todays_judgement():
    today = {"row_id": "v2:0", "url": "u", "url_sha256": "k", "caption": "mail me a@b.org", "status": None,
             "scores": None, "labels": [], "caption_flags": [], "matches": [], "model": None}
    prev = candidate("ok", at(3), md5="m", content_sha256="s", pdq="f" * 64, pdq_quality=90,
                     scores=[("nudity", 0.25)], labels=["x"], model="ViT-B-32", opt_out=None)
    out = reuse_record(today, prev, carry_scores=True)
    assert out["status"] == "reused" and out["error"] is None and out["audited_at"] == at(3)
    assert (out["content_md5"], out["pdq"], out["pdq_quality"]) == ("m", "f" * 64, 90)
    assert out["scores"] == {"nudity": 0.25} and out["labels"] == ["x"] and out["model"] == "ViT-B-32"
    assert out["caption"] == today["caption"] and out["matches"] == [] and out["opt_out"] == []
    plain = reuse_record(today, prev, carry_scores=False)
    assert plain["scores"] is None and plain["labels"] == [] and plain["model"] is None
    assert reuse_counts({"reused": 5, "ok": 2, "timeout": 1, "invalid_url": 1}) == {"rows_reused": 5,
                                                                                  "rows_fetched": 3}


def test_previous_audit_must_exist_and_not_be_the_output(tmp_path):
    with pytest.raises(ValueError, match="no audit parquet matches"):
        ReuseAudited([str(tmp_path / "nothing")])
    (tmp_path / "out" / "audit").mkdir(parents=True)
    pq.write_table(AUDIT_SCHEMA.empty_table(), tmp_path / "out" / "audit" / "part-0.parquet")
    with pytest.raises(ValueError, match="output.path"):
        ReuseAudited([str(tmp_path / "out")], output_path=str(tmp_path / "out"))
    ReuseAudited([str(tmp_path / "out" / "audit" / "part-0.parquet")], output_path=str(tmp_path / "new"))


def _sha(url: str) -> str:  # the URLs below are already in normal form
    import hashlib

    return hashlib.sha256(url.encode()).hexdigest()


def test_a_groups_share_of_previous_audits_is_the_rows_of_its_urls(tmp_path):
    """A local run's group joins only the previous rows of its own URLs: from every
    previous audit, every row group, an older audit's narrower schema included."""
    urls = [f"http://img.example/{i}.jpg" for i in range(40)]
    rows = []
    for i, url in enumerate(urls):
        record = new_record(f"v1:{i}", url, "c")
        record.update(url_sha256=_sha(url), status="ok" if i % 3 else "timeout", content_md5=f"{i:032x}",
                      scores={"nudity": i / 100}, labels=["x"] if i % 2 else [])
        rows.append(audit_row(record))
    (tmp_path / "a" / "audit").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows[:25], AUDIT_SCHEMA), tmp_path / "a" / "audit" / "p0.parquet",
                   row_group_size=4)
    pq.write_table(pa.Table.from_pylist(rows[25:], AUDIT_SCHEMA), tmp_path / "a" / "audit" / "p1.parquet",
                   row_group_size=4)
    # An older audit without the score columns, naming URL 7 again and one of its own.
    older = pa.Table.from_pylist(rows[5:8] + rows[30:31], AUDIT_SCHEMA).drop_columns(["scores", "labels", "model"])
    pq.write_table(older, tmp_path / "older.parquet")

    wanted = {7, 8, 30, 39}
    keys = pa.array(sorted(_sha(urls[i]) for i in wanted) + [_sha("http://img.example/never.jpg")])
    share = tmp_path / "share.parquet"
    written = write_previous_rows([str(tmp_path / "a"), str(tmp_path / "older.parquet")], keys, str(share))

    table = pq.read_table(share)
    assert table.schema == PREVIOUS_SCHEMA
    got = sorted((r["url_sha256"], r["content_md5"], r["status"], r["scores"] is None) for r in table.to_pylist())
    expected = sorted([(_sha(urls[i]), f"{i:032x}", rows[i]["status"], False) for i in wanted]
                      + [(_sha(urls[i]), f"{i:032x}", rows[i]["status"], True) for i in (7, 30)])
    assert got == expected and written == len(expected)
    # No key of the group among them: an empty file, still one its join can read.
    assert write_previous_rows([str(tmp_path / "a")], pa.array([], pa.string()), str(share)) == 0
    assert pq.read_table(share).num_rows == 0


def test_url_keys_are_the_distinct_url_hashes_of_the_units(tmp_path):
    urls = ["http://img.example/a.jpg", None, "", "http://img.example/b.jpg", "http://img.example/a.jpg"]
    path = tmp_path / "d.parquet"
    pq.write_table(laion_table(urls), path, row_group_size=2)
    units = [ReadUnit(str(path), "d.parquet", "parquet", 0, 4, (0, 1)),
             ReadUnit(str(path), "d.parquet", "parquet", 4, 1, (2,))]
    from transforms.read import DatasetSpec

    assert url_keys(units, DatasetSpec()).to_pylist() == sorted({_sha(urls[0]), _sha(urls[3])})
    assert url_keys(units[1:], DatasetSpec()).to_pylist() == [_sha(urls[0])]


def test_local_groups_reuse_by_their_share_even_an_empty_one(tmp_path):
    """Fetch off, groups of 4 rows: the first group's share holds its 3 URLs an earlier
    audit saw, the second's is empty; each row comes out once, reused exactly when seen."""
    urls = [f"http://img.example/{i}.jpg" for i in range(8)]
    pq.write_table(laion_table(urls), tmp_path / "d.parquet", row_group_size=4)
    seen = []
    for i in (0, 2, 3):
        record = new_record(f"old:{i}", urls[i], "c")
        record.update(url_sha256=_sha(urls[i]), status="ok", content_md5=f"{i:032x}")
        seen.append(audit_row(record))
    (tmp_path / "old" / "audit").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(seen, AUDIT_SCHEMA), tmp_path / "old" / "audit" / "p.parquet")
    config = parse_config({
        "dataset": {"input": str(tmp_path / "d.parquet"), "previous_audit": [str(tmp_path / "old")]},
        "output": {"path": str(tmp_path / "out")}, "fetch": {"enabled": False},
        "runner": {"name": "FnApiRunner", "local_group_rows": 4}})
    run = run_audit(config)
    assert run.summary["groups"] == 2 and run.summary["all_rows_accounted"]
    rows = {r["row_id"]: r for r in audit_rows(tmp_path / "out")}
    assert sorted(rows) == sorted(f"d.parquet:{i}" for i in range(8))
    assert {k: (r["status"], r["content_md5"]) for k, r in rows.items()} == {
        f"d.parquet:{i}": ("reused", f"{i:032x}") if i in (0, 2, 3) else ("not_fetched", None) for i in range(8)}
    assert not glob.glob(f"{tmp_path}/out/report/groups/*.previous.parquet")


# ------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def server():
    with HostileServer() as srv:
        for name, data in PHOTOS.items():
            srv.add_image(name, data)
        yield srv


def v1_urls(server) -> list:
    return [server.url(f"/img/p{i}.jpg") for i in range(N)] + [server.url("/404"), None]


def v2_urls(server) -> list:
    # v1 + 20% new photos, and one v1 URL twice (both rows reused, each once).
    return v1_urls(server) + [server.url(f"/img/p{i}.jpg") for i in range(N, N + NEW)] + [server.url("/img/p3.jpg")]


def write_version(folder: Path, name: str, urls: list, captions: list | None = None) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.parquet"
    pq.write_table(laion_table(urls, captions), path, row_group_size=4)
    return str(path)


def config_for(server, dataset: str, out: Path, previous=(), takedown=(), group_rows=None, **fetch):
    runner = {"name": "FnApiRunner"} if group_rows is None else {"name": "FnApiRunner", "local_group_rows": group_rows}
    return parse_config({
        "dataset": {"input": dataset, "previous_audit": list(previous)},
        "output": {"path": str(out)},
        "fetch": {"timeout_s": 3, "retries": 0, "allowed_private_hosts": [f"127.0.0.1:{server.port}"], **fetch},
        "takedown": {"lists": list(takedown)},
        "runner": runner,
    })


def audit_rows(out: Path) -> list[dict]:
    files = sorted(glob.glob(f"{out}/audit/*.parquet"))
    assert files
    return [row for f in files for row in pq.read_table(f).to_pylist()]


def by_url(rows: list[dict]) -> dict:
    return {r["url"]: r for r in rows if r["url"]}


@pytest.fixture(scope="module")
def v1(server, tmp_path_factory):
    base = tmp_path_factory.mktemp("v1")
    config = config_for(server, write_version(base, "v1", v1_urls(server)), base / "out")
    run = run_audit(config)
    assert run.summary["all_rows_accounted"] and run.summary["rows_fetched"] == N + 1
    rows = audit_rows(base / "out")
    assert sum(r["status"] == "ok" for r in rows) == N
    return base / "out", rows


def requested(server) -> list[str]:
    return sorted(server.requests)


def test_v2_fetches_only_new_urls_and_reuses_the_rest(server, v1, tmp_path):
    v1_out, v1_rows = v1
    urls = v2_urls(server)
    captions = [f"caption {i}" for i in range(len(urls))]
    captions[0] = "write to jane.doe@example.org"  # flags are today's, from today's caption
    server.clear_requests()
    config = config_for(server, write_version(tmp_path, "v2", urls, captions), tmp_path / "out", [str(v1_out)])
    run = run_audit(config)

    assert requested(server) == sorted(f"/img/p{i}.jpg" for i in range(N, N + NEW))
    rows = audit_rows(tmp_path / "out")
    assert sorted(r["row_id"] for r in rows) == sorted(f"v2.parquet:{i}" for i in range(len(urls)))
    summary = run.summary
    assert summary["all_rows_accounted"] and summary["rows_in"] == summary["rows_audited"] == len(urls)
    assert summary["status"] == {"reused": N + 2, "ok": NEW, "invalid_url": 1}
    assert (summary["rows_reused"], summary["rows_fetched"]) == (N + 2, NEW)

    old = by_url(v1_rows)
    carried = ["content_md5", "content_sha256", "pdq", "pdq_quality", "phash", "bytes", "width", "height",
               "mime", "http_status", "opt_out", "audited_at"]
    for row in rows:
        if row["status"] != "reused":
            continue
        before = old[row["url"]]
        assert {k: row[k] for k in carried} == {k: before[k] for k in carried}, row["url"]
        assert row["action"] == "keep"
    not_found = next(r for r in rows if r["url"] == server.url("/404"))
    assert not_found["error"].startswith("http_error: ") and not_found["http_status"] == 404
    assert next(r for r in rows if r["row_id"] == "v2.parquet:0")["caption_flags"] == ["email"]
    fresh = [r for r in rows if r["status"] == "ok"]
    assert {r["content_md5"] for r in fresh} == {_md5(PHOTOS[f"p{i}.jpg"]) for i in range(N, N + NEW)}

    # Same inputs, same previous audit: the same rows again, also as one pipeline per
    # few rows (a local run's groups each join against their share of the previous audit).
    server.clear_requests()
    again = config_for(server, config.dataset.input[0], tmp_path / "again", [str(v1_out)], group_rows=4)
    assert run_audit(again).summary["all_rows_accounted"]
    assert requested(server) == sorted(f"/img/p{i}.jpg" for i in range(N, N + NEW))
    assert not glob.glob(f"{tmp_path}/again/report/groups/*.previous.parquet")  # each group's share, removed
    stable = lambda rs: sorted((r["row_id"], r["status"], r["content_sha256"], r["error"]) for r in rs)  # noqa: E731
    assert stable(audit_rows(tmp_path / "again")) == stable(rows)


def _md5(data: bytes) -> str:
    import hashlib

    return hashlib.md5(data).hexdigest()


def test_a_reused_row_is_removed_by_todays_list(server, v1, tmp_path):
    v1_out, _ = v1
    listed = tmp_path / "list.csv"
    write_list([TakedownEntry("today", "e1", "md5", _md5(PHOTOS["p4.jpg"]))], str(listed))
    server.clear_requests()
    config = config_for(server, write_version(tmp_path, "v2", v2_urls(server)), tmp_path / "out", [str(v1_out)],
                        takedown=[str(listed)])
    run = run_audit(config)
    assert requested(server) == sorted(f"/img/p{i}.jpg" for i in range(N, N + NEW))
    removed = [r for r in audit_rows(tmp_path / "out") if r["action"] == "remove"]
    assert [(r["url"], r["status"], r["reasons"]) for r in removed] == [
        (server.url("/img/p4.jpg"), "reused", ["takedown:today"])]
    assert run.summary["action"]["remove"] == 1
    published = pq.read_table(glob.glob(f"{tmp_path}/out/published/*.parquet")).to_pylist()
    assert [p["url_sha256"] for p in published] == [removed[0]["url_sha256"]]


def test_refetch_statuses_refetches_failures_even_through_a_reused_audit(server, v1, tmp_path):
    v1_out, _ = v1
    dataset = write_version(tmp_path, "v2", v2_urls(server))
    # v2 reuses the 404 (status reused, error "http_error: ..."); v3, reading v2 only,
    # still knows it was an http_error.
    run_audit(config_for(server, dataset, tmp_path / "v2", [str(v1_out)]))
    server.clear_requests()
    run = run_audit(config_for(server, dataset, tmp_path / "v3", [str(tmp_path / "v2")],
                               refetch_statuses=["http_error", "timeout"]))
    assert requested(server) == ["/404"]
    assert run.summary["status"] == {"reused": N + NEW + 1, "http_error": 1, "invalid_url": 1}
    assert (run.summary["rows_reused"], run.summary["rows_fetched"]) == (N + NEW + 1, 1)


def test_refetch_older_than_refetches_rows_fetched_long_ago(server, v1, tmp_path):
    v1_out, v1_rows = v1
    # The previous audit, as if p0 and p1 were fetched 400 days ago (the rest today).
    table = pq.read_table(glob.glob(f"{v1_out}/audit/*.parquet"))
    long_ago = dt.datetime.now(UTC) - dt.timedelta(days=400)
    old_urls = {server.url("/img/p0.jpg"), server.url("/img/p1.jpg")}
    times = [long_ago if u in old_urls else t
             for u, t in zip(table.column("url").to_pylist(), table.column("audited_at").to_pylist())]
    table = table.set_column(table.schema.get_field_index("audited_at"), "audited_at",
                             pa.array(times, AUDIT_SCHEMA.field("audited_at").type))
    (tmp_path / "old" / "audit").mkdir(parents=True)
    pq.write_table(table, tmp_path / "old" / "audit" / "part-0.parquet")

    server.clear_requests()
    run = run_audit(config_for(server, write_version(tmp_path, "v2", v1_urls(server)), tmp_path / "out",
                               [str(tmp_path / "old")], refetch_older_than="180d"))
    assert requested(server) == ["/img/p0.jpg", "/img/p1.jpg"]
    rows = by_url(audit_rows(tmp_path / "out"))
    assert {u for u, r in rows.items() if r["status"] == "ok"} == old_urls
    assert all(r["audited_at"] > long_ago for r in rows.values())
    assert run.summary["rows_reused"] == N - 2 + 1

    # Without the limit the old rows are reused, with their old audited_at.
    server.clear_requests()
    run_audit(config_for(server, write_version(tmp_path, "v2", v1_urls(server)), tmp_path / "plain",
                         [str(tmp_path / "old")]))
    assert server.requests == []
    rows = by_url(audit_rows(tmp_path / "plain"))
    assert rows[server.url("/img/p0.jpg")]["audited_at"] == long_ago
    assert pc.all(pc.equal(pa.array([r["status"] for r in rows.values()]), "reused")).as_py()
