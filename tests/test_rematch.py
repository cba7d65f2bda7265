import pyarrow as pa

from pipelines.rematch import rematch_table, summary_of_table
from transforms.policy import compile_policies
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
        (FAR, "remove", ["takedown:old"], [{"list_id": "old", "entry_id": "z", "kind": "md5", "distance": 0.0}]),
        (None, "keep", [], []),
    ]):
        record = new_record(f"p:{i}", f"http://e.com/{i}", "c")
        record.update(status="ok" if pdq else "http_error", pdq=pdq, action=action, reasons=reasons,
                      matches=matches, bytes=100 * i,
                      labels={2: ["face"], 3: ["child", "nudity"], 4: ["face"]}.get(i, []))
        rows.append(audit_row(record))
    return rows


def test_rematch_table_decides_changed_rows_again_with_the_audit_policies():
    index = TakedownIndex([TakedownEntry("new", "e1", "pdq", PDQ)])
    names = {"face", "child", "nudity"}
    remove = compile_policies(["child and nudity"], names)
    review = compile_policies(["face"], names)
    table = pa.Table.from_pylist(_rows(), schema=AUDIT_SCHEMA)
    out = rematch_table(table, index, remove, review).to_pylist()
    # row 0: newly matched; 1: lost its match; 2: untouched (its policy reason stays);
    # 3: lost its match but its remove policy still holds; 4: lost its match, review
    # policy holds now that nothing removes it; 5: no hash, nothing to match.
    assert [r["action"] for r in out] == ["remove", "keep", "review", "remove", "review", "keep"]
    assert [r["reasons"] for r in out] == [["takedown:new"], [], ["policy:face"], ["policy:child and nudity"],
                                           ["policy:face"], []]
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
