"""End to end: a takedown request made from one photo removes its copies from an audit;
rematch reproduces the removals offline; apply cleans another copy of the dataset."""
from __future__ import annotations

import json
import shutil
import socket

import pyarrow.parquet as pq
import pytest

from pipelines.audit import run_audit
from pipelines.cli import main as cli_main
from pipelines.config import parse_config
from pipelines.rematch import plan_rematch, run_rematch
from scripts.demo import copies_of
from scripts.sample_images import make_photo_jpeg
from tests.conftest import laion_table
from tests.hostile_server import HostileServer

@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """An audit of 24 unrelated photos and 5 copies of a requested photo, plus 2 dead rows."""
    tmp = tmp_path_factory.mktemp("takedown")
    photo = make_photo_jpeg(777, 800, 600, quality=92)
    (tmp / "me.jpg").write_bytes(photo)
    request = tmp / "request.parquet"
    assert cli_main(["request", str(tmp / "me.jpg"), "--out", str(request), "--list-id", "req-1"]) == 0

    with HostileServer() as server:
        urls, copies, served = [], set(), {}
        for i in range(24):
            data = make_photo_jpeg(1000 + i, 640, 480)
            urls.append(server.url(server.add_image(f"other{i}.jpg", data)))
            served[urls[-1]] = data
        for name, data in copies_of(photo).items():
            url = server.url(server.add_image(name, data, "image/png" if name.endswith("png") else "image/jpeg"))
            urls.insert(3 * len(copies) + 1, url)
            copies.add(url)
            served[url] = data
        urls += [server.url("/404"), None]
        dataset = tmp / "rows.parquet"
        pq.write_table(laion_table(urls), dataset, row_group_size=8)
        config = parse_config({
            "dataset": {"input": str(dataset)},
            "output": {"path": str(tmp / "audit")},
            "fetch": {"allowed_private_hosts": ["127.0.0.1"], "retries": 0, "timeout_s": 5},
            "takedown": {"lists": [str(request)]},
        })
        run = run_audit(config)
    # What each row must come out as, from the input alone: served images are fetched
    # (ok) and only the copies removed; /404 is an http_error and a missing URL invalid.
    expected = {}
    for i, url in enumerate(urls):
        status = "ok" if url in served else "invalid_url" if url is None else "http_error"
        expected[f"rows.parquet:{i}"] = (status, "remove" if url in copies else "keep")
    return {"tmp": tmp, "config": config, "run": run, "copies": copies, "urls": urls,
            "request": request, "dataset": dataset, "expected": expected,
            "bytes_served": sum(len(data) for data in served.values())}


def _count(values) -> dict:
    counts: dict = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


def _removed_ids(audited) -> set:
    return {row_id for row_id, (_, action) in audited["expected"].items() if action == "remove"}


def _input_without_copies(audited) -> list[dict]:
    """The input rows minus the copies of the requested photo: what clean/ must hold."""
    return [row for row in pq.read_table(audited["dataset"]).to_pylist() if row["URL"] not in audited["copies"]]


def _table(folder) -> list[dict]:
    return pq.read_table(folder).to_pylist()


def test_request_removes_every_copy_and_nothing_else(audited):
    audit = _table(audited["tmp"] / "audit" / "audit")
    removed = {r["url"] for r in audit if r["action"] == "remove"}
    assert removed == audited["copies"]
    for row in audit:
        if row["action"] == "remove":
            assert row["reasons"] == ["takedown:req-1"]
            assert {m["kind"] for m in row["matches"]} & {"pdq", "phash"}
        else:
            assert row["matches"] == [] and row["reasons"] == []
    assert audited["run"].summary["matched_lists"] == {"req-1": len(audited["copies"])}
    assert {r["row_id"]: (r["status"], r["action"]) for r in audit} == audited["expected"]


def test_summary_counts_follow_from_the_input(audited):
    expected = audited["expected"].values()
    summary = json.loads((audited["tmp"] / "audit" / "report" / "summary.json").read_text())
    assert summary["rows_in"] == summary["rows_audited"] == len(audited["urls"])
    assert summary["all_rows_accounted"] is True
    assert summary["metrics"] == {"rows_in": len(audited["urls"]), "rows_audited": len(audited["urls"])}
    assert summary["status"] == _count(status for status, _ in expected)
    assert summary["action"] == _count(action for _, action in expected)
    assert summary["matched_lists"] == {"req-1": len(audited["copies"])}  # once per removed row
    assert summary["labels"] == {} and summary["caption_flags"] == {}  # no embedding; plain captions
    assert summary["bytes_fetched"] == audited["bytes_served"]
    # What run_audit returned is what it wrote.
    assert {k: audited["run"].summary[k] for k in summary} == summary


def test_removals_and_clean_partition_the_input(audited):
    out = audited["tmp"] / "audit"
    original = pq.read_table(audited["dataset"])
    clean = pq.read_table(out / "clean" / "rows.parquet")
    removals = _table(out / "removals")
    assert clean.schema == original.schema
    removed_ids = {r["row_id"] for r in removals}
    assert removed_ids == _removed_ids(audited)  # the rows of the copies, by input position
    assert len(removed_ids) + clean.num_rows == original.num_rows
    assert clean.to_pylist() == _input_without_copies(audited)
    assert {r["url"] for r in removals} == audited["copies"]
    assert all(r["list_id"] == "req-1" and r["entry_id"].startswith("req-1-") for r in removals)


def test_published_list_holds_no_url_or_hash(audited):
    published = pq.read_table(audited["tmp"] / "audit" / "published")
    assert published.column_names == ["url_sha256", "row_key"]
    assert published.num_rows == len(audited["copies"])
    # No id_col: a row's key is its row id, so the published keys are the copies' rows.
    assert set(published.column("row_key").to_pylist()) == _removed_ids(audited)


def test_rematch_offline_reproduces_the_removals(audited, network_off, tmp_path):
    out = tmp_path / "rematch"
    plan = plan_rematch(str(audited["tmp"] / "audit"), [str(audited["request"])], str(out))
    summary = run_rematch(plan)
    assert summary["all_rows_accounted"] and summary["rows_in"] == len(audited["urls"])
    # The same list again: the same decisions, counted from the input.
    expected = audited["expected"].values()
    assert summary["rows_audited"] == len(audited["urls"])
    assert summary["status"] == _count(status for status, _ in expected)
    assert summary["action"] == _count(action for _, action in expected)
    assert summary["matched_lists"] == {"req-1": len(audited["copies"])}
    assert {r["row_id"] for r in _table(out / "removals")} == _removed_ids(audited)
    original = sorted((r["row_id"], r["entry_id"]) for r in _table(audited["tmp"] / "audit" / "removals"))
    again = sorted((r["row_id"], r["entry_id"]) for r in _table(out / "removals"))
    assert again == original
    assert pq.read_table(out / "clean" / "rows.parquet").to_pylist() == _input_without_copies(audited)
    with pytest.raises(OSError, match="network is off"):
        socket.create_connection(("127.0.0.1", 9), timeout=1)


def test_rematch_with_an_empty_list_restores_every_row(audited, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("list_id,entry_id,kind,value\n")
    plan = plan_rematch(str(audited["tmp"] / "audit"), [str(empty)], str(tmp_path / "out"))
    summary = run_rematch(plan)
    assert summary["action"] == {"keep": len(audited["urls"])}
    assert summary["matched_lists"] == {}
    assert summary["status"] == _count(status for status, _ in audited["expected"].values())
    assert pq.read_table(tmp_path / "out" / "clean" / "rows.parquet").equals(pq.read_table(audited["dataset"]))


def test_apply_cleans_a_copy_of_the_dataset_like_the_audit(audited, tmp_path):
    copy = tmp_path / "mirror" / "rows.parquet"
    copy.parent.mkdir()
    shutil.copy(audited["dataset"], copy)
    code = cli_main(["apply", "--removals", str(audited["tmp"] / "audit" / "published"),
                     "--input", str(copy), "--out", str(tmp_path / "cleaned")])
    assert code == 0
    cleaned = pq.read_table(tmp_path / "cleaned" / "rows.parquet")
    assert cleaned.to_pylist() == _input_without_copies(audited)
    assert cleaned.equals(pq.read_table(audited["tmp"] / "audit" / "clean" / "rows.parquet"))


def test_bad_list_is_a_config_error(audited, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("list_id,entry_id,kind,value\nl,e1,pdq,abc\n")
    code = cli_main(["rematch", "--audit", str(audited["tmp"] / "audit"), "--lists", str(bad),
                     "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("laion-audit: config error: takedown.lists:") and "e1" in err
    assert "\n" not in err


def test_rematch_refuses_to_overwrite_the_audit_it_reads(audited, capsys):
    audit = str(audited["tmp"] / "audit")
    code = cli_main(["rematch", "--audit", audit, "--lists", str(audited["request"]), "--out", audit + "/"])
    assert code == 2
    assert "--out: must not be the audit being rematched" in capsys.readouterr().err


def test_rerun_into_the_same_output_replaces_every_shard(audited, tmp_path):
    shutil.copytree(audited["tmp"] / "audit", tmp_path / "audit")
    config = audited["config"].model_copy(deep=True)
    config.output.path = str(tmp_path / "audit")
    config.output.num_shards = 3  # another shard count than the first run's
    config.fetch.enabled = False  # a quick rerun: every row not_fetched
    run = run_audit(config)
    rows = _table(tmp_path / "audit" / "audit")
    # Without fetching, a row with a URL is not_fetched; the row without one stays invalid.
    want = {f"rows.parquet:{i}": "invalid_url" if url is None else "not_fetched"
            for i, url in enumerate(audited["urls"])}
    assert len(rows) == len(want)  # every shard of the first run replaced, none left over
    assert {r["row_id"]: r["status"] for r in rows} == want
    assert run.summary["status"] == _count(want.values())
    assert run.summary["rows_in"] == run.summary["rows_audited"] == len(audited["urls"])
