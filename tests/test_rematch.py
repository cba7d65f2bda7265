import pyarrow as pa

from pipelines.rematch import rematch_table
from tests.conftest import run_transform
from transforms.outputs import RecordsToTables
from transforms.policy import compile_policies
from transforms.records import AUDIT_SCHEMA, audit_row, conform_table, new_record
from transforms.takedown import TakedownEntry, TakedownIndex
from transforms.write import SummaryFn, summary_counts

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



def test_rematch_reads_an_audit_written_before_the_evidence_columns():
    """An audit from an older version lacks robots_txt / opt_out_headers: it still
    rematches, the missing columns come out null and every other column is kept."""
    index = TakedownIndex([TakedownEntry("new", "e1", "pdq", PDQ)])
    full = pa.Table.from_pylist(_rows(), schema=AUDIT_SCHEMA)
    old = full.drop_columns(["robots_txt", "opt_out_headers"])
    out = rematch_table(old, index)
    assert out.schema == AUDIT_SCHEMA
    assert out.column("robots_txt").null_count == out.num_rows
    assert out.column("action").to_pylist() == rematch_table(full, index).column("action").to_pylist()


def test_rematch_matches_column_equals_the_per_row_matches():
    import numpy as np

    from transforms.table_audit import MATCHES_TYPE

    rng = np.random.default_rng(4)
    codes = [rng.integers(0, 256, 32, dtype=np.uint8).tobytes().hex() for _ in range(50)]
    entries = [TakedownEntry("a", f"p{i}", "pdq", c) for i, c in enumerate(codes)]
    entries += [TakedownEntry("b", "twin", "pdq", codes[3]), TakedownEntry("b", "m", "md5", "ab" * 16)]
    index = TakedownIndex(entries)
    rows = []
    for i in range(400):
        record = new_record(f"p:{i}", f"http://e.com/{i}", "c")
        pdq = codes[i % 50] if i % 7 == 0 else rng.integers(0, 256, 32, dtype=np.uint8).tobytes().hex()
        record.update(status="ok", pdq=pdq, pdq_quality=90, content_md5="ab" * 16 if i % 11 == 0 else None)
        rows.append(audit_row(record))
    table = pa.Table.from_pylist(rows, schema=AUDIT_SCHEMA)
    expected = index.match_columns({"pdq": [r["pdq"] for r in rows], "pdq_quality": [90] * len(rows),
                                    "content_md5": [r["content_md5"] for r in rows]})
    got = rematch_table(table, index).column("matches")
    assert got.type == MATCHES_TYPE and got.null_count == 0
    assert got.to_pylist() == pa.array(expected, type=MATCHES_TYPE).to_pylist()
    assert sum(1 for m in expected if m) >= 85 and any(len(m) >= 2 for m in expected)


def _summary_rows() -> list[dict]:
    """_rows() plus what the summary must also count: caption flags, a row matched twice
    by one list and once by another, and a row with no status, action or bytes."""
    rows = _rows()
    record = new_record("p:6", "http://e.com/6", "c")
    record.update(status="ok", action="remove", reasons=["takedown:old", "takedown:other"], bytes=12345,
                  labels=["child"], caption_flags=["email", "phone"],
                  matches=[{"list_id": "old", "entry_id": "a", "kind": "md5", "distance": 0.0},
                           {"list_id": "old", "entry_id": "b", "kind": "pdq", "distance": 5.0},
                           {"list_id": "other", "entry_id": "c", "kind": "sha256", "distance": 0.0}])
    rows.append(audit_row(record))
    record = new_record("p:7", "http://e.com/7", "c")
    record.update(caption_flags=["email"])  # status, action, bytes left None
    rows.append(audit_row(record))
    return rows


def _plain_counts(rows: list[dict]) -> dict:
    """The summary's counts, counted here row by row: a row without a status counts as
    internal_error, a row without an action is not counted, and each list a row matched
    counts once for that row however many of its entries matched."""
    status, action, labels, flags, lists = {}, {}, {}, {}, {}

    def bump(counts, key):
        counts[key] = counts.get(key, 0) + 1

    for row in rows:
        bump(status, row["status"] if row["status"] is not None else "internal_error")
        if row["action"] is not None:
            bump(action, row["action"])
        for label in row["labels"] or []:
            bump(labels, label)
        for flag in row["caption_flags"] or []:
            bump(flags, flag)
        for list_id in sorted({m["list_id"] for m in row["matches"] or []}):
            bump(lists, list_id)
    return {"rows_audited": len(rows), "bytes_fetched": sum(row["bytes"] or 0 for row in rows),
            "status": status, "action": action, "labels": labels, "caption_flags": flags,
            "matched_lists": lists}


def test_table_summary_equals_the_row_summary():
    rows = _summary_rows()
    expected = _plain_counts(rows)
    # The rows hold what each count must get right (else the checks below prove little).
    assert expected["matched_lists"] == {"old": 4, "other": 1}  # rows 1, 3, 4, 6; row 6 once
    assert expected["bytes_fetched"] == 100 * (0 + 1 + 2 + 3 + 4 + 5) + 12345
    assert expected["labels"]["face"] == 2 and expected["caption_flags"] == {"email": 2, "phone": 1}

    # The summary is counted in one place (summary_counts, over tables of audit rows),
    # whatever the tables: the whole, one row at a time, halves merged, the audit's own.
    fn = SummaryFn()
    table = pa.Table.from_pylist(rows, schema=AUDIT_SCHEMA)
    by_table = fn.extract_output(summary_counts(table))
    acc = fn.create_accumulator()
    for i in range(table.num_rows):
        acc = fn.add_input(acc, table.slice(i, 1))
    by_row = fn.extract_output(acc)
    # Beam combines partial accumulators: two halves merged count the same.
    halves = [fn.add_input(fn.create_accumulator(), part) for part in (table.slice(0, 3), table.slice(3))]
    merged = fn.extract_output(fn.merge_accumulators(halves))
    # The audit's records, turned into tables by the audit's own stage, 3 rows a table.
    acc = fn.create_accumulator()
    for part in run_transform(RecordsToTables(rows_per_table=3), rows):
        acc = fn.add_input(acc, part)
    audits = fn.extract_output(acc)

    for name, summary in (("row by row", by_row), ("summary_counts", by_table), ("merged", merged),
                          ("RecordsToTables", audits)):
        for key, value in expected.items():
            assert summary[key] == value, (name, key)
        assert summary.keys() == expected.keys(), name


def _pdq_list(path, entries: int) -> str:
    import numpy as np
    import pyarrow.parquet as pq

    rng = np.random.default_rng(entries)
    values = [rng.integers(0, 256, 32, dtype=np.uint8).tobytes().hex() for _ in range(entries - 1)] + [PDQ]
    pq.write_table(pa.table({"list_id": ["new"] * entries, "entry_id": [f"e{i}" for i in range(entries)],
                             "kind": ["pdq"] * entries, "value": values}), path)
    return str(path)


def _rematched(dofn, tables: list[pa.Table]) -> list[pa.Table]:
    """What the DoFn yields for ``tables`` in one bundle: (after which table, the batch)."""
    dofn.setup()
    dofn.start_bundle()
    out = [(i, t) for i, table in enumerate(tables) for t in dofn.process(table)]
    out += [(len(tables), w.value) for w in dofn.finish_bundle()]
    return out


def test_rematch_gathers_audit_tables_into_the_batch_the_index_asks_for(tmp_path):
    """A 100 k-entry PDQ list is searched turned round for batches of 1 M rows, so the
    rematch gathers tables up to that (or its byte cap) before matching; a short list
    is matched table by table. Either way every row comes out once, rematched as one
    table would be, an older audit's tables alongside current ones."""
    from pipelines.manifest import PolicyInfo
    from pipelines.rematch import _RematchTables
    from transforms.takedown import IndexSpec

    full = pa.Table.from_pylist(_rows(), schema=AUDIT_SCHEMA)
    tables = [full, full.drop_columns(["robots_txt", "opt_out_headers"]), full.slice(0, 2)]
    long_spec = IndexSpec(paths=(_pdq_list(tmp_path / "long.parquet", 100_000),))
    assert long_spec.build().rows_per_batch == 1_000_000

    gathered = _rematched(_RematchTables(long_spec, PolicyInfo()), tables)
    assert [(after, t.num_rows) for after, t in gathered] == [(3, 14)]
    as_read = pa.concat_tables([conform_table(t, AUDIT_SCHEMA) for t in tables])  # the old one's columns null
    expected = rematch_table(as_read, long_spec.build())
    assert gathered[0][1].equals(expected)
    assert gathered[0][1].column("action").to_pylist()[:6] == ["remove", "keep", "review", "keep", "keep", "keep"]

    capped = _rematched(_RematchTables(long_spec, PolicyInfo(), batch_bytes=1), tables)
    assert [(after, t.num_rows) for after, t in capped] == [(0, 6), (1, 6), (2, 2)]

    short_spec = IndexSpec(paths=(_pdq_list(tmp_path / "short.parquet", 3),))
    one_by_one = _rematched(_RematchTables(short_spec, PolicyInfo()), tables)
    assert [(after, t.num_rows) for after, t in one_by_one] == [(0, 6), (1, 6), (2, 2)]
    assert pa.concat_tables([t for _, t in one_by_one]).equals(rematch_table(as_read, short_spec.build()))
