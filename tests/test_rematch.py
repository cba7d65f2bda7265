import pyarrow as pa

from pipelines.rematch import redecide, rematch_table, summary_of_table
from transforms.records import AUDIT_SCHEMA, audit_row, new_record
from transforms.takedown import TakedownEntry, TakedownIndex
from transforms.write import SummaryFn

PDQ = "f" * 64
NEAR = "e" + "f" * 63  # one bit away
FAR = "0" * 64


def _rows() -> list[dict]:
    rows = []
    for i, (pdq, action, reasons, matches) in enumerate([
        (NEAR, "keep", [], []),
        (FAR, "remove", ["takedown:old"], [{"list_id": "old", "entry_id": "x", "kind": "pdq", "distance": 3.0}]),
        (FAR, "review", ["policy:face"], []),
        (FAR, "remove", ["takedown:old", "policy:child and nudity"],
         [{"list_id": "old", "entry_id": "y", "kind": "md5", "distance": 0.0}]),
        (None, "keep", [], []),
    ]):
        record = new_record(f"p:{i}", f"http://e.com/{i}", "c")
        record.update(status="ok" if pdq else "http_error", pdq=pdq, action=action, reasons=reasons,
                      matches=matches, bytes=100 * i, labels=["face"] if i == 2 else [])
        rows.append(audit_row(record))
    return rows


def test_redecide_keeps_policy_reasons_and_replaces_takedowns():
    hit = [{"list_id": "new", "entry_id": "e", "kind": "pdq", "distance": 1.0}]
    assert redecide("keep", [], hit) == ("remove", ["takedown:new"])
    assert redecide("remove", ["takedown:old"], []) == ("keep", [])
    assert redecide("review", ["policy:face"], hit) == ("remove", ["takedown:new"])
    assert redecide("remove", ["takedown:old", "policy:p"], []) == ("remove", ["policy:p"])
    assert redecide("review", ["policy:face"], []) == ("review", ["policy:face"])


def test_rematch_table_recomputes_matches_actions_and_reasons():
    index = TakedownIndex([TakedownEntry("new", "e1", "pdq", PDQ)])
    table = pa.Table.from_pylist(_rows(), schema=AUDIT_SCHEMA)
    out = rematch_table(table, index).to_pylist()
    assert [r["action"] for r in out] == ["remove", "keep", "review", "remove", "keep"]
    assert [r["reasons"] for r in out] == [["takedown:new"], [], ["policy:face"], ["policy:child and nudity"], []]
    assert out[0]["matches"][0]["entry_id"] == "e1" and out[0]["matches"][0]["distance"] == 1.0
    assert all(r["matches"] == [] for r in out[1:])
    unchanged = ("row_id", "url", "pdq", "status", "bytes", "labels")
    assert [{k: r[k] for k in unchanged} for r in out] == [{k: r[k] for k in unchanged} for r in table.to_pylist()]


def test_table_summary_equals_the_row_summary():
    rows = _rows()
    fn = SummaryFn()
    acc = fn.create_accumulator()
    for row in rows:
        acc = fn.add_input(acc, row)
    table = pa.Table.from_pylist(rows, schema=AUDIT_SCHEMA)
    assert fn.extract_output(summary_of_table(table)) == fn.extract_output(acc)
