"""The output tail: an audit and a rematch write their outputs through one transform, so
a rematch writes review/ as the audit does, for the decisions it makes.

Before the tail was shared, rematch decided review actions again but wrote no review/."""
from __future__ import annotations


import pyarrow.parquet as pq
import pytest

from pipelines.audit import run_audit
from pipelines.config import parse_config
from pipelines.rematch import plan_rematch, run_rematch
from tests.conftest import laion_table
from transforms.records import REVIEW_SCHEMA, review_row
from transforms.takedown import TakedownEntry, write_list

ROWS = 15
EMAIL_ROWS = {1, 4, 9, 12}  # review_if "email"
AUDIT_LIST = {3, 9}         # the audit's list: 9 has an e-mail too, removal wins
REMATCH_LIST = {4, 13}      # the rematch's: 9 goes back to review, 4 is removed now


def _caption(i: int) -> str:
    return f"prints from ana.silva{i}@example.com" if i in EMAIL_ROWS else f"a quiet beach, picture {i}"


def _write_list(path, urls, rows) -> str:
    write_list([TakedownEntry("requests", f"e{i}", "url", urls[i]) for i in sorted(rows)], str(path))
    return str(path)


def _rows(folder) -> list[dict]:
    return sorted(pq.read_table(folder).to_pylist(), key=lambda r: r["row_id"])


def _actions(expected_review: set[int], removed: set[int]) -> dict[str, str]:
    return {f"rows.parquet:{i}": "remove" if i in removed else "review" if i in expected_review else "keep"
            for i in range(ROWS)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("outputs")
    urls = [f"http://img.example/{i}.jpg" for i in range(ROWS)]
    dataset = tmp / "rows.parquet"
    pq.write_table(laion_table(urls, [_caption(i) for i in range(ROWS)]), dataset, row_group_size=4)
    config = parse_config({
        "dataset": {"input": str(dataset)},
        "output": {"path": str(tmp / "audit")},
        "fetch": {"enabled": False},
        "takedown": {"lists": [_write_list(tmp / "audit-list.csv", urls, AUDIT_LIST)]},
        "policy": {"review_if": ["email"]},
        "runner": {"name": "FnApiRunner"},
    })
    assert run_audit(config).summary["all_rows_accounted"]
    plan = plan_rematch(str(tmp / "audit"), [_write_list(tmp / "rematch-list.csv", urls, REMATCH_LIST)],
                        str(tmp / "rematch"))
    assert run_rematch(plan)["all_rows_accounted"]
    return tmp / "audit", tmp / "rematch"


def test_rematch_writes_review_as_the_audit_would_for_its_decisions(runs):
    audit, rematch = runs
    audited, rematched = _rows(audit / "audit"), _rows(rematch / "audit")
    # The premise: the rematch changed decisions, both into and out of review.
    assert {r["row_id"]: r["action"] for r in audited} == _actions(EMAIL_ROWS - AUDIT_LIST, AUDIT_LIST)
    assert {r["row_id"]: r["action"] for r in rematched} == _actions(EMAIL_ROWS - REMATCH_LIST, REMATCH_LIST)

    for out, rows in ((audit, audited), (rematch, rematched)):
        review = pq.read_table(out / "review")
        assert review.schema.names == REVIEW_SCHEMA.names
        assert _rows(out / "review") == [review_row(r) for r in rows if r["action"] == "review"]

    # Rows whose decision did not change have the same review rows in both.
    unchanged = {f"rows.parquet:{i}" for i in EMAIL_ROWS - AUDIT_LIST - REMATCH_LIST}
    assert unchanged == {"rows.parquet:1", "rows.parquet:12"}
    audit_review = [r for r in _rows(audit / "review") if r["row_id"] in unchanged]
    rematch_review = [r for r in _rows(rematch / "review") if r["row_id"] in unchanged]
    assert rematch_review == audit_review and len(audit_review) == 2
    assert {r["row_id"] for r in _rows(rematch / "review")} == unchanged | {"rows.parquet:9"}


def test_rematch_writes_every_output_of_an_audit(runs):
    audit, rematch = runs
    for name in ("audit", "review", "removals", "published", "clean"):
        assert (rematch / name).is_dir(), name
    for name in ("summary.json", "manifest.json"):
        assert (audit / "report" / name).is_file() and (rematch / "report" / name).is_file(), name
    removed = {f"rows.parquet:{i}" for i in REMATCH_LIST}
    assert {r["row_id"] for r in _rows(rematch / "removals")} == removed
    assert {r["row_key"] for r in pq.read_table(rematch / "published").to_pylist()} == removed
    kept = [row for i, row in enumerate(pq.read_table(audit.parent / "rows.parquet").to_pylist())
            if i not in REMATCH_LIST]
    assert pq.read_table(rematch / "clean" / "rows.parquet").to_pylist() == kept
