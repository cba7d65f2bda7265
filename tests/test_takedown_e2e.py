"""End to end: a takedown request made from one photo removes its copies from an audit;
rematch reproduces the removals offline; apply cleans another copy of the dataset."""
from __future__ import annotations

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
        urls, copies = [], set()
        for i in range(24):
            urls.append(server.url(server.add_image(f"other{i}.jpg", make_photo_jpeg(1000 + i, 640, 480))))
        for name, data in copies_of(photo).items():
            url = server.url(server.add_image(name, data, "image/png" if name.endswith("png") else "image/jpeg"))
            urls.insert(3 * len(copies) + 1, url)
            copies.add(url)
        urls += [server.url("/404"), None]
        dataset = tmp / "rows.parquet"
        pq.write_table(laion_table(urls), dataset, row_group_size=8)
        config = parse_config({
            "dataset": {"input": str(dataset)},
            "output": {"path": str(tmp / "audit")},
            "fetch": {"allow_private_networks": True, "retries": 0, "timeout_s": 5},
            "takedown": {"lists": [str(request)]},
        })
        run = run_audit(config)
    return {"tmp": tmp, "config": config, "run": run, "copies": copies, "urls": urls,
            "request": request, "dataset": dataset}


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


def test_removals_and_clean_partition_the_input(audited):
    out = audited["tmp"] / "audit"
    original = pq.read_table(audited["dataset"])
    clean = pq.read_table(out / "clean" / "rows.parquet")
    removals = _table(out / "removals")
    assert clean.schema == original.schema
    removed_ids = {r["row_id"] for r in removals}
    assert len(removed_ids) + clean.num_rows == original.num_rows
    kept = [row for i, row in enumerate(original.to_pylist()) if f"rows.parquet:{i}" not in removed_ids]
    assert clean.to_pylist() == kept
    assert {r["url"] for r in removals} == audited["copies"]
    assert all(r["list_id"] == "req-1" and r["entry_id"].startswith("req-1-") for r in removals)


def test_published_list_holds_no_url_or_hash(audited):
    published = pq.read_table(audited["tmp"] / "audit" / "published")
    assert published.column_names == ["url_sha256", "row_key"]
    assert published.num_rows == len(audited["copies"])


def test_rematch_offline_reproduces_the_removals(audited, network_off, tmp_path):
    out = tmp_path / "rematch"
    plan = plan_rematch(str(audited["tmp"] / "audit"), [str(audited["request"])], str(out))
    summary = run_rematch(plan)
    assert summary["all_rows_accounted"] and summary["rows_in"] == len(audited["urls"])
    original = sorted((r["row_id"], r["entry_id"]) for r in _table(audited["tmp"] / "audit" / "removals"))
    again = sorted((r["row_id"], r["entry_id"]) for r in _table(out / "removals"))
    assert again == original
    assert pq.read_table(out / "clean" / "rows.parquet").equals(
        pq.read_table(audited["tmp"] / "audit" / "clean" / "rows.parquet"))
    with pytest.raises(OSError, match="network is off"):
        socket.create_connection(("127.0.0.1", 9), timeout=1)


def test_rematch_with_an_empty_list_restores_every_row(audited, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("list_id,entry_id,kind,value\n")
    plan = plan_rematch(str(audited["tmp"] / "audit"), [str(empty)], str(tmp_path / "out"))
    summary = run_rematch(plan)
    assert summary["action"] == {"keep": len(audited["urls"])}
    assert pq.read_table(tmp_path / "out" / "clean" / "rows.parquet").num_rows == len(audited["urls"])


def test_apply_cleans_a_copy_of_the_dataset_like_the_audit(audited, tmp_path):
    copy = tmp_path / "mirror" / "rows.parquet"
    copy.parent.mkdir()
    shutil.copy(audited["dataset"], copy)
    code = cli_main(["apply", "--removals", str(audited["tmp"] / "audit" / "published"),
                     "--input", str(copy), "--out", str(tmp_path / "cleaned")])
    assert code == 0
    assert pq.read_table(tmp_path / "cleaned" / "rows.parquet").equals(
        pq.read_table(audited["tmp"] / "audit" / "clean" / "rows.parquet"))


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
    run_audit(config)
    rows = _table(tmp_path / "audit" / "audit")
    assert len(rows) == len(audited["urls"]) and {r["status"] for r in rows} <= {"not_fetched", "invalid_url"}
