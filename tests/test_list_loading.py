"""List files loaded as columns: the same entries, the same first error and the same
matches as reading them one row at a time (a reference reader here, written the way
the loader used to be), with no Python object per entry."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
import tracemalloc

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from transforms.takedown import (
    EntryTable,
    TakedownEntry,
    TakedownIndex,
    TakedownListError,
    clip_to_value,
    load_list,
    load_lists,
    write_list,
)
from transforms.takedown import list_formats, list_loader
from transforms.takedown.lists import _entry_of, _list_stem, _missing_columns, _text

# ------------------------------------------------------------------ the reference reader


def _ref_lines(data: bytes):
    first = True
    for raw in io.BytesIO(data):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("not UTF-8 text") from None
        if first:
            line, first = line.lstrip("\ufeff"), False
        yield line


def _ref_rows(path: str, fmt: str):
    data = open(path, "rb").read()
    if fmt == "csv":
        reader = csv.reader(_ref_lines(data))
        header = [name.strip().lower() for name in next(reader)]
        missing = _missing_columns(header)
        if missing:
            raise TakedownListError(f"{path} line 1 (header): missing column {missing[0]!r}")
        line = reader.line_num
        for cells in reader:
            start, line = line + 1, reader.line_num
            if any(cell.strip() for cell in cells):
                yield f"{path} line {start}", dict(zip(header, cells))
    elif fmt == "jsonl":
        for number, line in enumerate(_ref_lines(data), start=1):
            if not line.strip():
                continue
            where = f"{path} line {number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise TakedownListError(f"{where}: not a JSON object ({err.msg})") from None
            if not isinstance(row, dict):
                raise TakedownListError(f"{where}: not a JSON object")
            missing = _missing_columns(row)
            if missing:
                entry_id = _text(row.get("entry_id"))
                at = f"{where} (entry {entry_id})" if entry_id else where
                raise TakedownListError(f"{at}: missing column {missing[0]!r}")
            yield where, row
    elif fmt == "parquet":
        table = pq.read_table(path)
        names = [n.lower() for n in table.column_names]
        columns = {n: table.column(i).to_pylist() for i, n in enumerate(names)}
        for number, cells in enumerate(zip(*columns.values()), start=1):
            yield f"{path} row {number}", dict(zip(columns, cells))
    else:
        for number, line in enumerate(_ref_lines(data), start=1):
            text = line.split("#", 1)[0].strip()
            if text:
                yield f"{path} line {number}", {"list_id": _list_stem(path), "entry_id": str(number),
                                                "kind": "pdq", "value": text}


def reference_load(path: str, fmt: str) -> list[TakedownEntry]:
    """One row at a time, every row through ``_entry_of``: the loader's old way."""
    entries, seen = [], set()
    try:
        for where, fields in _ref_rows(path, fmt):
            entry = _entry_of(fields, where)
            key = (entry.list_id, entry.entry_id)
            if key in seen:
                raise TakedownListError(f"{where} (entry {entry.entry_id}): duplicate entry id in list {entry.list_id!r}")
            seen.add(key)
            entries.append(entry)
    except TakedownListError:
        raise
    except (ValueError, csv.Error) as err:
        raise TakedownListError(f"{path}: {err}") from None
    return entries


def same_outcome(path: str, fmt: str) -> list[TakedownEntry] | str:
    """What the loader gives, checked against the reference: entries or the error."""
    try:
        expected: list[TakedownEntry] | str = reference_load(path, fmt)
    except TakedownListError as err:
        expected = str(err)
    try:
        got: list[TakedownEntry] | str = list(load_list(path))
    except TakedownListError as err:
        got = str(err)
    assert got == expected
    return got


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks and blocks of a few rows, so that every file spans many of them."""
    monkeypatch.setattr(list_formats, "CHUNK_ROWS", 7)
    monkeypatch.setattr(list_formats, "TXT_BLOCK", 300)


def hexes(rng: np.random.Generator, n: int, nbytes: int) -> list[str]:
    return [rng.integers(0, 256, nbytes, dtype=np.uint8).tobytes().hex() for _ in range(n)]


def mixed_entries(rng: np.random.Generator, n: int = 60) -> list[TakedownEntry]:
    kinds = [("pdq", 32), ("phash", 8), ("md5", 16), ("sha256", 32), ("url_sha256", 32)]
    out = []
    for i in range(n):
        kind, nbytes = kinds[i % len(kinds)]
        if i % 11 == 3:
            out.append(TakedownEntry(f"list-{i % 3}", f"u{i}", "url", f"http://example.com/p/{i}?a=b",
                                     reason=f"reason {i}"))
            continue
        max_distance = float(i % 20) if kind in ("pdq", "phash") and i % 4 == 0 else None
        quality = int(rng.integers(0, 101)) if kind == "pdq" and i % 3 else None
        out.append(TakedownEntry(f"list-{i % 3}", f"e{i}", kind, hexes(rng, 1, nbytes)[0], max_distance,
                                 "clinic" if i % 5 == 0 else None, quality))
    out.append(TakedownEntry("list-0", "c1", "clip", clip_to_value(rng.normal(size=8)), 0.95))
    return out


# --------------------------------------------------------------- the same entries


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_written_lists_load_to_the_same_entries_across_chunks(tmp_path, small_chunks, fmt):
    entries = mixed_entries(np.random.default_rng(1))
    path = str(tmp_path / f"list.{fmt}")
    write_list(entries, path)
    assert same_outcome(path, fmt) == entries
    table = load_list(path)
    assert isinstance(table, EntryTable)
    pdq = table.values["pdq"].values
    assert isinstance(pdq, np.ndarray) and pdq.dtype == np.uint8 and pdq.shape[1] == 32


def test_odd_but_valid_cells_are_normalised_as_one_row_at_a_time(tmp_path, small_chunks):
    rng = np.random.default_rng(2)
    rows = ["list_id,Entry_ID,kind,value,max_distance,reason,quality"]
    for i in range(40):
        value = hexes(rng, 1, 32)[0]
        cells = [f"l{i % 2}", f"e{i}", "pdq", value, "", "", ""]
        if i % 5 == 1:
            cells[3] = f"  {value.upper()} "  # blanks around, upper case
        if i % 7 == 2:
            cells[2] = " PDQ"
        if i % 6 == 3:
            cells[4], cells[6] = "12", "77.0"
        if i % 9 == 4:
            cells[5] = "  name in caption  "
        if i % 8 == 5:
            cells[0] = " l1 "
        rows.append(",".join(cells))
    rows.insert(10, "")
    rows.insert(20, '"l0","e-multi","md5","' + "ab" * 16 + '",,"a reason\non two lines",')
    path = tmp_path / "odd.csv"
    path.write_text("\ufeff" + "\r\n".join(rows) + "\r\n")
    entries = same_outcome(str(path), "csv")
    assert len(entries) == 41
    assert next(e for e in entries if e.entry_id == "e-multi").reason == "a reason\non two lines"

    parquet = str(tmp_path / "odd.parquet")
    pq.write_table(pa.table({"list_id": ["l"] * 9, "entry_id": list(range(9)), "kind": ["phash"] * 9,
                             "value": hexes(rng, 8, 8) + [" " + "AB" * 8],
                             "quality": pa.array([None, 5, 60, None, 0, 100, None, 1, 2], pa.int64())}),
                   parquet)
    assert [e.entry_id for e in same_outcome(parquet, "parquet")] == [str(i) for i in range(9)]

    jsonl = tmp_path / "odd.jsonl"
    jsonl.write_text("".join(json.dumps(row) + "\n" for row in [
        {"list_id": "l", "entry_id": 1, "kind": "md5", "value": "cd" * 16, "max_distance": 0},
        {"list_id": "l", "entry_id": "2", "kind": "pdq", "value": "ef" * 32, "max_distance": "20", "quality": 51},
        {"list_id": "l", "entry_id": 3.5, "kind": "pdq", "value": "01" * 32, "reason": 7},
    ] * 1))
    assert [e.entry_id for e in same_outcome(str(jsonl), "jsonl")] == ["1", "2", "3.5"]


def test_txt_lists_across_blocks_comments_crlf_and_no_final_newline(tmp_path, small_chunks):
    rng = np.random.default_rng(3)
    values = hexes(rng, 50, 32)
    lines = []
    for i, value in enumerate(values):
        if i % 10 == 0:
            lines.append("# a comment")
        if i % 13 == 1:
            lines.append("")
        lines.append(value if i % 7 else f"  {value.upper()}  # from a report")
    path = tmp_path / "ncmec-2025.txt"
    path.write_bytes(("\ufeff" + "\r\n".join(lines)).encode())  # CRLF, no newline at the end
    entries = same_outcome(str(path), "txt")
    assert [e.value for e in entries] == values
    assert {e.list_id for e in entries} == {"ncmec-2025"}
    table = load_list(str(path))
    assert isinstance(table.entry_ids, np.ndarray)  # line numbers, not strings


def test_cells_needing_no_strip_are_told_apart_as_python_strips(tmp_path):
    spaces = {chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()}
    assert set(list_loader.PYTHON_SPACES) == spaces
    rng = np.random.default_rng(12)
    reasons = ["Persönlichkeitsrecht", "é", "\u200bzero width", "ends in a no-break space\xa0",
               "\u3000ideographic", "x\x1f", "plain"]
    entries = [TakedownEntry("l", f"e{i}", "md5", v, reason=r)
               for i, (v, r) in enumerate(zip(hexes(rng, len(reasons), 16), reasons))]
    path = str(tmp_path / "reasons.parquet")
    write_list(entries, path)
    got = same_outcome(path, "parquet")
    assert [e.reason for e in got] == [r.strip() for r in reasons]


# ------------------------------------------------------------------ the same error


def _bad_csv(tmp_path, rows: list[str]) -> str:
    path = tmp_path / "list.csv"
    path.write_text("list_id,entry_id,kind,value,max_distance,quality\n" + "\n".join(rows) + "\n")
    return str(path)


@pytest.mark.parametrize("bad", [
    "l,e30,pdq,{short}", "l,e30,pdq,{value},400", "l,e30,md5,{md5},3", "l,e30,pdq,{value},,101",
    "l,e30,sha1,{value}", ",e30,pdq,{value}", "l,,pdq,{value}", "l,e30,pdq,", "l,e30,url,http://a b:9x/",
    "l,e30,pdq,{value},nan", "l,e30,pdq,{value},,49.5", "l,e3,pdq,{value}",
])
def test_the_first_bad_row_is_named_as_one_row_at_a_time(tmp_path, small_chunks, bad):
    rng = np.random.default_rng(4)
    rows = [f"l,e{i},pdq,{v}" for i, v in enumerate(hexes(rng, 60, 32))]
    value = hexes(rng, 1, 32)[0]
    rows[30] = bad.format(short=value[:-2], value=value, md5=value[:32])
    message = same_outcome(_bad_csv(tmp_path, rows), "csv")
    assert isinstance(message, str) and "line 32" in message and value not in message


def test_a_duplicate_before_a_bad_row_in_a_later_chunk_is_named_first(tmp_path, small_chunks):
    rng = np.random.default_rng(5)
    rows = [f"l,e{i},pdq,{v}" for i, v in enumerate(hexes(rng, 60, 32))]
    rows[12] = rows[12].replace("e12", "e3")  # duplicate of row 3, second chunk
    rows[40] = "l,e40,pdq,zz"  # bad value, a later chunk
    path = _bad_csv(tmp_path, rows)
    assert "line 14 (entry e3): duplicate entry id in list 'l'" in same_outcome(path, "csv")
    rows[12] = rows[12].replace("e3", "e12")
    rows[5] = "l,e5,pdq,zz"  # the bad row now comes before a duplicate
    rows[50] = rows[50].replace("e50", "e1")
    assert "line 7 (entry e5): pdq value must be 64 hex digits" in same_outcome(_bad_csv(tmp_path, rows), "csv")
    rows[5] = rows[5].replace("zz", "ab" * 32)
    rows[40] = rows[40].replace("zz", "cd" * 32)
    rows[50] = rows[50].replace("l,e1,", "other,e1,")  # the same id in another list is another entry
    assert len(same_outcome(_bad_csv(tmp_path, rows), "csv")) == 60


def test_reader_errors_keep_their_place_among_row_errors(tmp_path, small_chunks):
    rng = np.random.default_rng(6)
    good = [json.dumps({"list_id": "l", "entry_id": f"e{i}", "kind": "pdq", "value": v})
            for i, v in enumerate(hexes(rng, 30, 32))]
    path = tmp_path / "list.jsonl"
    for broken in ("{not json", "[1, 2]", json.dumps({"list_id": "l", "entry_id": "x", "value": "ab"})):
        lines = good[:20] + [broken] + good[20:]
        path.write_text("\n".join(lines) + "\n")
        assert "line 21" in same_outcome(str(path), "jsonl")
        lines[9] = json.dumps({"list_id": "l", "entry_id": "e9", "kind": "phash", "value": "ab"})
        path.write_text("\n".join(lines) + "\n")
        assert "line 10 (entry e9): phash value" in same_outcome(str(path), "jsonl")
    txt = tmp_path / "hashes.txt"
    values = hexes(rng, 40, 32)
    txt.write_bytes(("\n".join(values[:25]) + "\n").encode() + b"# caf\xe9\n" + ("\n".join(values[25:]) + "\n").encode())
    assert same_outcome(str(txt), "txt") == f"{txt}: not UTF-8 text"
    txt.write_text("\n".join(values[:33] + [values[33][:-1]] + values[34:]) + "\n")
    assert "line 34 (entry 34): pdq value must be 64 hex digits, got 63 characters" in same_outcome(str(txt), "txt")


def test_parquet_errors_name_their_row_across_batches(tmp_path, small_chunks):
    rng = np.random.default_rng(7)
    values = hexes(rng, 40, 32)
    values[25] = values[25][:10] + "g" + values[25][11:]
    path = str(tmp_path / "list.parquet")
    pq.write_table(pa.table({"LIST_ID": ["l"] * 40, "entry_id": [f"e{i}" for i in range(40)],
                             "kind": pa.array(["pdq"] * 40).dictionary_encode(), "value": values}), path)
    message = same_outcome(path, "parquet")
    assert "row 26 (entry e25): pdq value must be 64 hex digits, found non-hex characters" in message


def _jsonl(tmp_path, rows: list[dict]) -> str:
    path = tmp_path / "list.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.mark.parametrize("kind, bad, message", [
    ("pdq", 5, "pdq value must be a string of 64 hex digits, got int"),
    ("md5", 2**70, "md5 value must be a string of 32 hex digits, got int"),  # too big for Arrow
    ("sha256", [1], "sha256 value must be a string of 64 hex digits, got list"),
    ("url", 5, "url value must be a string, got int"),
    ("clip", 2.5, "clip value must be a base64 string, got float"),
])
def test_a_jsonl_value_of_another_type_is_named_as_one_row_at_a_time(tmp_path, small_chunks, kind, bad, message):
    rng = np.random.default_rng(13)
    good = {"pdq": lambda: hexes(rng, 1, 32)[0], "md5": lambda: hexes(rng, 1, 16)[0],
            "sha256": lambda: hexes(rng, 1, 32)[0], "url": lambda: f"http://example.com/{rng.integers(1e9)}",
            "clip": lambda: clip_to_value(rng.normal(size=4))}[kind]
    rows = [{"list_id": "l", "entry_id": f"e{i}", "kind": kind, "value": good()} for i in range(20)]
    rows[9]["value"] = bad  # the second chunk of 7 rows
    path = _jsonl(tmp_path, rows)
    assert same_outcome(path, "jsonl") == f"{path} line 10 (entry e9): {message}"
    rows = [{"list_id": "l", "entry_id": 1, "kind": kind, "value": bad}]  # the only row
    path = _jsonl(tmp_path, rows)
    assert same_outcome(path, "jsonl") == f"{path} line 1 (entry 1): {message}"


def test_jsonl_numbers_mixing_ints_and_floats_keep_their_text(tmp_path, small_chunks):
    rng = np.random.default_rng(14)
    values = hexes(rng, 6, 32)
    rows = [
        {"list_id": 1, "entry_id": 1, "kind": "pdq", "value": values[0], "reason": [1, 2]},
        {"list_id": 1.5, "entry_id": 2.5, "kind": "pdq", "value": values[1], "reason": [2.5]},
        {"list_id": 1, "entry_id": None, "kind": "pdq", "value": values[2], "reason": {"a": 1}},
        {"list_id": 1, "entry_id": 3.0, "kind": "pdq", "value": values[3], "reason": {"b": 2}},
        {"list_id": 1, "entry_id": True, "kind": "pdq", "value": values[4], "max_distance": 3},
        {"list_id": 1, "entry_id": 2**70, "kind": "pdq", "value": values[5], "max_distance": 4.5},
    ]
    rows[2]["entry_id"] = 7
    path = _jsonl(tmp_path, rows)
    entries = same_outcome(path, "jsonl")
    assert [(e.list_id, e.entry_id) for e in entries] == [
        ("1", "1"), ("1.5", "2.5"), ("1", "7"), ("1", "3.0"), ("1", "True"), ("1", str(2**70))]
    assert [e.reason for e in entries[:4]] == ["[1, 2]", "[2.5]", "{'a': 1}", "{'b': 2}"]
    assert [e.max_distance for e in entries[4:]] == [3.0, 4.5]
    nan_id = tmp_path / "nan.jsonl"  # JSON's NaN among ints: a missing id, as ever
    nan_id.write_text('{"list_id": "l", "entry_id": 1, "kind": "pdq", "value": "%s"}\n'
                      '{"list_id": "l", "entry_id": NaN, "kind": "pdq", "value": "%s"}\n' % tuple(values[:2]))
    assert same_outcome(str(nan_id), "jsonl") == f"{nan_id} line 2: missing entry_id"


def test_a_lone_surrogate_in_a_jsonl_cell_loads_as_its_escape(tmp_path, small_chunks):
    rng = np.random.default_rng(15)
    values = hexes(rng, 12, 32)
    rows = [{"list_id": "l", "entry_id": f"e{i}", "kind": "pdq", "value": v} for i, v in enumerate(values)]
    rows[8]["reason"] = "\ud800"  # JSON "\ud800": text UTF-8 cannot hold
    rows[9].update(list_id="l\udfff", entry_id="e\ud800")
    rows[10].update(entry_id="e\ud801")  # another lone surrogate: another entry
    rows.append({"list_id": "l", "entry_id": "u", "kind": "url", "value": "http://example.com/x\ud800"})
    path = _jsonl(tmp_path, rows)
    entries = list(load_list(path))
    expected = reference_load(path, "jsonl")
    assert [e.value for e in entries] == [e.value.replace("\ud800", "\\ud800") for e in expected]
    assert [(e.list_id, e.entry_id, e.reason) for e in entries[8:11]] == [
        ("l", "e8", "\\ud800"), ("l\\udfff", "e\\ud800", None), ("l", "e\\ud801", None)]
    assert entries[:8] == expected[:8] and entries[-1].value == "http://example.com/x\\ud800"
    rows[3]["value"] = values[3][:-1] + "\ud800"  # in a hex value: that row's own error
    path = _jsonl(tmp_path, rows)
    assert same_outcome(path, "jsonl") == (f"{path} line 4 (entry e3): pdq value must be 64 hex digits, "
                                           f"found non-hex characters")


def test_tables_concatenated_keep_every_entry_kind(tmp_path):
    rng = np.random.default_rng(16)
    loaded_entries = [TakedownEntry("a", "1", "pdq", hexes(rng, 1, 32)[0]),
                      TakedownEntry("a", "2", "md5", hexes(rng, 1, 16)[0])]
    path = str(tmp_path / "a.parquet")
    write_list(loaded_entries, path)
    given = [TakedownEntry("b", "1", "PDQ", hexes(rng, 1, 32)[0]),  # a kind as an object spells it
             TakedownEntry("b", "2", "md5", hexes(rng, 1, 16)[0])]
    for tables in ([load_list(path), EntryTable.from_entries(given)], [EntryTable.from_entries(given), load_list(path)]):
        joined = EntryTable.concat(tables)
        assert list(joined) == [e for t in tables for e in t]
        assert {e.kind for e in joined} == {"pdq", "md5", "PDQ"}
        got = TakedownIndex(joined).match_columns({"pdq": [given[0].value, loaded_entries[0].value],
                                                   "content_md5": [loaded_entries[1].value, given[1].value]})
        assert [sorted((m["list_id"], m["entry_id"]) for m in row) for row in got] == [
            [("a", "2"), ("b", "1")], [("a", "1"), ("b", "2")]]


def test_a_list_id_in_two_files_is_refused_across_formats(tmp_path):
    rng = np.random.default_rng(8)
    txt = tmp_path / "shared.txt"
    txt.write_text("\n".join(hexes(rng, 5, 32)) + "\n")
    other = str(tmp_path / "other.parquet")
    write_list([TakedownEntry("shared", "9", "pdq", hexes(rng, 1, 32)[0]),
                TakedownEntry("shared", "3", "md5", hexes(rng, 1, 16)[0])], other)
    with pytest.raises(TakedownListError, match=r"other\.parquet \(entry 3\): list 'shared' already has this "
                                                r"entry id in .*shared\.txt"):
        load_lists([str(txt), other])
    write_list([TakedownEntry("shared", "9", "pdq", hexes(rng, 1, 32)[0])], other)
    table = load_lists([str(txt), other])
    assert [e.entry_id for e in table] == ["1", "2", "3", "4", "5", "9"]
    assert table.kind_counts() == {"pdq": 6}


# ------------------------------------------------------------------ the same matches


def test_matches_are_those_of_the_same_entries_as_objects(tmp_path):
    rng = np.random.default_rng(9)
    entries = mixed_entries(rng, 400)
    entries += [TakedownEntry("list-9", f"twin-{i}", e.kind, e.value.upper() if e.kind == "md5" else e.value)
                for i, e in enumerate(entries[::37]) if e.kind in ("md5", "pdq", "sha256")]
    path = str(tmp_path / "list.parquet")
    write_list(entries, path)
    by_file = TakedownIndex(load_lists([path]))
    by_objects = TakedownIndex(entries)
    assert by_file.low_quality_entries == by_objects.low_quality_entries > 0
    pdq = [e for e in entries if e.kind == "pdq"]
    md5 = [e.value for e in entries if e.kind == "md5"]
    sha = [e.value for e in entries if e.kind == "sha256"]
    columns = {
        "pdq": [pdq[i % len(pdq)].value if i % 3 else hexes(rng, 1, 32)[0] for i in range(300)],
        "pdq_quality": [None if i % 4 else 90 for i in range(300)],
        # A blank inside a digest: no match, as a string comparison has it.
        "content_md5": [md5[i % len(md5)].upper() if i % 5 == 0 else
                        md5[i % len(md5)][:16] + " " + md5[i % len(md5)][16:] if i % 5 == 1 else None
                        for i in range(300)],
        "content_sha256": [sha[i % len(sha)] if i % 7 == 0 else "zz" for i in range(300)],
        "url": [f"http://EXAMPLE.com/p/{i}?a=b" if i % 2 else None for i in range(300)],
        "url_sha256": [None] * 300,
    }
    got = by_file.match_columns(columns)
    assert got == by_objects.match_columns(columns)
    hits = sum(map(len, got))
    assert hits > 150 and any(len(row) > 1 for row in got)
    # Exact digests against an independent expectation: every entry whose digest is the row's.
    for row, value in enumerate(columns["content_md5"]):
        expected = {(e.list_id, e.entry_id) for e in entries if e.kind == "md5" and value
                    and e.value.lower() == value.lower()}
        assert {(m["list_id"], m["entry_id"]) for m in got[row] if m["kind"] == "md5"} == expected


def test_exact_digests_match_on_every_byte_not_a_prefix(tmp_path):
    """Exact kinds look digests up by their first 8 bytes, then compare them whole: a
    digest that shares an entry's first bytes (or all but its last) is no match."""
    rng = np.random.default_rng(11)
    md5, sha = hexes(rng, 50, 16), hexes(rng, 50, 32)

    def twin(value: str, keep: int) -> str:  # the same first `keep` hex digits, then others
        tail = "".join("0123456789abcdef"[(int(c, 16) + 1) % 16] for c in value[keep:])
        return value[:keep] + tail

    entries = ([TakedownEntry("l", f"m{i}", "md5", v) for i, v in enumerate(md5)]
               + [TakedownEntry("l", f"s{i}", "sha256", v) for i, v in enumerate(sha)])
    path = str(tmp_path / "exact.parquet")
    write_list(entries, path)
    index = TakedownIndex(load_lists([path]))
    md5_rows = [md5[3], twin(md5[3], 16), twin(md5[4], 31), md5[4]]
    sha_rows = [twin(sha[5], 16), sha[5], twin(sha[6], 63), twin(sha[7], 40)]
    got = index.match_columns({"content_md5": md5_rows, "content_sha256": sha_rows})
    assert [[m["entry_id"] for m in row] for row in got] == [["m3"], ["s5"], [], ["m4"]]


def test_a_txt_list_matches_with_line_numbers_as_entry_ids(tmp_path):
    rng = np.random.default_rng(10)
    values = hexes(rng, 2000, 32)
    path = tmp_path / "stopncii.txt"
    path.write_text("# header\n" + "\n".join(values) + "\n")
    index = TakedownIndex.from_lists([str(path)])
    query = [values[1234], values[7], hexes(rng, 1, 32)[0], hashlib.md5(b"x").hexdigest()]
    got = index.match_columns({"pdq": query})
    assert got[:3] == [[{"list_id": "stopncii", "entry_id": "1236", "kind": "pdq", "distance": 0.0, "reason": None}],
                       [{"list_id": "stopncii", "entry_id": "9", "kind": "pdq", "distance": 0.0, "reason": None}],
                       []]
    assert len(index) == 2000


# ------------------------------------------------------------------ no object per entry


def test_a_txt_list_loads_without_a_python_object_per_entry(tmp_path):
    n = 100_000
    codes = np.random.default_rng(11).integers(0, 256, (n, 32), dtype=np.uint8)
    path = tmp_path / "big.txt"
    path.write_text("\n".join(codes[i].tobytes().hex() for i in range(n)) + "\n")
    tracemalloc.start()
    try:
        table = load_list(str(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(table) == n and np.array_equal(table.values["pdq"].values, codes)
    # The codes (32 B) and line numbers (4 B) an entry needs, a block of text being read,
    # and nothing like the ~800 B of an entry object with its strings.
    assert peak < n * 80 + 3 * list_formats.TXT_BLOCK
