import codecs
import gzip
import json
import posixpath

import pyarrow.parquet as pq
import pytest

from tests.conftest import laion_table, run_transform
from transforms.read import (
    DatasetError,
    DatasetSpec,
    ReadDataset,
    ReadUnit,
    check_dataset,
    format_of,
    plan_units,
    read_unit_columns,
    records_of_block,
    source_names,
)


def _records(paths, spec=DatasetSpec()):
    return run_transform(ReadDataset(paths, spec))


def test_parquet_rows_become_records_with_stable_ids(write_parquet):
    urls = [f"http://example.com/{i}.jpg" for i in range(50)]
    path = write_parquet(urls, row_group_size=7)
    first = sorted(_records([path]), key=lambda r: int(r["row_id"].split(":")[1]))
    again = _records([path])
    assert [r["row_id"] for r in first] == [f"part-00000.parquet:{i}" for i in range(50)]
    assert [r["url"] for r in first] == urls
    assert {r["row_id"]: r["url"] for r in again} == {r["row_id"]: r["url"] for r in first}
    assert all(len(r["url_sha256"]) == 64 and r["status"] is None for r in first)


def test_row_groups_split_into_units_that_cover_every_row_once(write_parquet):
    path = write_parquet([f"http://e.com/{i}" for i in range(100)], row_group_size=10)
    units = plan_units(path, "p", "parquet", batch_rows=25)
    assert len(units) == 4  # 3 groups per unit (30 rows), last one 10 rows
    positions = []
    for unit in units:
        for start, block in read_unit_columns(unit, DatasetSpec(read_batch_rows=4)):
            positions.extend(range(start, start + len(block["URL"])))
    assert positions == list(range(100))


def test_id_column_is_used_when_configured(write_parquet):
    path = write_parquet(["http://e.com/a", "http://e.com/b"])
    records = _records([path], DatasetSpec(id_col="SAMPLE_ID"))
    assert sorted(r["row_id"] for r in records) == ["1000", "1001"]
    assert sorted(r["row_key"] for r in records) == ["1000", "1001"]


def test_null_empty_and_non_string_urls_are_invalid_rows(tmp_path):
    path = tmp_path / "rows.jsonl"
    lines = [{"URL": None}, {"URL": ""}, {"URL": 12345}, {"URL": ["x"]}, {}, "just a string",
             {"URL": "http://e.com/ok.jpg", "TEXT": 7}]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    records = sorted(_records([str(path)]), key=lambda r: r["row_id"])
    assert len(records) == len(lines)
    assert [r["status"] for r in records] == ["invalid_url"] * 6 + [None]
    assert records[2]["url"] == "12345" and records[2]["error"] == "URL is a int"
    assert records[6]["caption"] == "7"


@pytest.mark.parametrize("fmt, sep", [("csv", ","), ("tsv", "\t")])
def test_text_formats(tmp_path, fmt, sep):
    path = tmp_path / f"rows.{fmt}"
    path.write_text(f"URL{sep}TEXT{sep}WIDTH\nhttp://e.com/1.jpg{sep}a cat{sep}10\n{sep}empty{sep}3\n")
    records = sorted(_records([str(path)]), key=lambda r: r["row_id"])
    assert [r["caption"] for r in records] == ["a cat", "empty"]
    assert records[1]["status"] == "invalid_url"


def test_missing_url_column_names_the_key(write_parquet):
    path = write_parquet(["http://e.com/a"])
    unit = ReadUnit(path, "p", "parquet", 0, 1, (0,))
    with pytest.raises(DatasetError, match="dataset.url_col: column 'url' not in"):
        list(read_unit_columns(unit, DatasetSpec(url_col="url")))


def test_colliding_base_names_fall_back_to_relative_paths():
    names = source_names(["/d/a/part-0.parquet", "/d/b/part-0.parquet"])
    assert names == {"/d/a/part-0.parquet": "a/part-0.parquet", "/d/b/part-0.parquet": "b/part-0.parquet"}
    assert source_names(["/d/x.parquet", "/d/y.parquet"])["/d/x.parquet"] == "x.parquet"


def test_records_of_block_keeps_position_offsets():
    unit = ReadUnit("f", "f.parquet", "parquet")
    block = {"URL": ["http://a/1", "http://a/2"], "TEXT": ["x", None]}
    records = list(records_of_block(unit, 40, block, DatasetSpec()))
    assert [r["row_id"] for r in records] == ["f.parquet:40", "f.parquet:41"]
    assert records[1]["caption"] is None


def test_empty_parquet_file_reads_zero_rows(tmp_path):
    path = tmp_path / "empty.parquet"
    pq.write_table(laion_table([]), path)
    assert _records([str(path)]) == []


def _unit_records(path: str, spec: DatasetSpec = DatasetSpec()) -> list[dict]:
    """The records one text file reads to, without a runner (its errors surface as raised)."""
    unit = ReadUnit(path, posixpath.basename(path), format_of(path, spec.format))
    return [record for position, block in read_unit_columns(unit, spec)
            for record in records_of_block(unit, position, block, spec)]


@pytest.mark.parametrize("fmt, sep", [("csv", ","), ("tsv", "\t")])
def test_rows_longer_or_shorter_than_the_header_are_one_row_each(tmp_path, fmt, sep):
    path = tmp_path / f"rows.{fmt}"
    path.write_text(f"TEXT{sep}URL\nlong{sep}http://e.com/1{sep}extra{sep}more\n\nshort\n"
                    f"ok{sep}http://e.com/3\n")
    records = _unit_records(str(path))
    assert [r["row_id"] for r in records] == [f"rows.{fmt}:{i}" for i in range(3)]
    assert [r["url"] for r in records] == ["http://e.com/1", None, "http://e.com/3"]
    assert [r["caption"] for r in records] == ["long", "short", "ok"]
    assert records[1]["status"] == "invalid_url"


@pytest.mark.parametrize("name, body", [
    ("rows.csv", "URL,TEXT\nhttp://e.com/1,a cat\n"),
    ("rows.tsv", "URL\tTEXT\nhttp://e.com/1\ta cat\n"),
    ("rows.jsonl", json.dumps({"URL": "http://e.com/1", "TEXT": "a cat"}) + "\n"),
])
def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path, name, body):
    path = tmp_path / name
    path.write_bytes(codecs.BOM_UTF8 + body.encode())
    records = _unit_records(str(path))
    assert [(r["url"], r["caption"]) for r in records] == [("http://e.com/1", "a cat")]


def test_gzipped_text_inputs_read_like_plain_ones(tmp_path):
    csv_path, jsonl_path = tmp_path / "rows.csv.gz", tmp_path / "rows.jsonl.gz"
    csv_path.write_bytes(gzip.compress('URL,TEXT\nhttp://e.com/1,"two\nlines"\nhttp://e.com/2,b\n'.encode()))
    rows = [{"URL": "http://e.com/1", "TEXT": "caf\u00e9 \u2028 x"}, {"URL": "http://e.com/2", "TEXT": "b"}]
    jsonl_path.write_bytes(gzip.compress("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()))
    csv_records = _unit_records(str(csv_path))
    assert [(r["row_id"], r["url"], r["caption"]) for r in csv_records] == [
        ("rows.csv.gz:0", "http://e.com/1", "two\nlines"), ("rows.csv.gz:1", "http://e.com/2", "b")]
    jsonl_records = _unit_records(str(jsonl_path))
    assert [(r["url"], r["caption"]) for r in jsonl_records] == [(r["URL"], r["TEXT"]) for r in rows]


def test_jsonl_without_the_url_column_in_any_object_row_is_an_error(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"url": "http://e.com/1", "caption": "a"}) + "\n" + json.dumps("x") + "\n")
    with pytest.raises(DatasetError, match=r"dataset.url_col: column 'URL' not in .*rows.jsonl \(keys seen: url, caption\)"):
        _unit_records(str(path))
    # One object row with the column is enough: other rows may leave it out.
    path.write_text(json.dumps({"url": "http://e.com/1"}) + "\n" + json.dumps({"URL": "http://e.com/2"}) + "\n")
    assert [r["status"] for r in _unit_records(str(path))] == ["invalid_url", None]


def test_jsonl_of_no_objects_reads_rows_without_urls(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('"a"\n[1]\n')
    assert [r["status"] for r in _unit_records(str(path))] == ["invalid_url", "invalid_url"]


@pytest.mark.parametrize("name", ["empty.csv", "empty.tsv", "empty.csv.gz"])
def test_an_empty_text_file_reads_zero_rows(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(gzip.compress(b"") if name.endswith(".gz") else b"")
    assert _unit_records(str(path)) == []


def test_a_bad_jsonl_line_names_the_file_and_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"URL": "http://e.com/1"}) + "\n\n{not json\n")
    with pytest.raises(DatasetError, match=r"rows.jsonl:3: not a JSON object"):
        _unit_records(str(path))


def test_check_dataset_accepts_a_readable_dataset(tmp_path, write_parquet):
    parquet = write_parquet(["http://e.com/a"])
    (tmp_path / "a.csv").write_text("SAMPLE_ID,URL,TEXT\n1,http://e.com/1,a\n")
    (tmp_path / "b.csv").write_text("whatever\n")  # only the first file of a format is opened
    (tmp_path / "a.jsonl").write_text(json.dumps({"URL": "u", "SAMPLE_ID": 1}) + "\n"
                                      + json.dumps({"TEXT": "t"}) + "\n")
    paths = [parquet] + [str(tmp_path / n) for n in ("a.csv", "b.csv", "a.jsonl")]
    check_dataset(paths, DatasetSpec(id_col="SAMPLE_ID"))


@pytest.mark.parametrize("csv_header, spec, message", [
    ("URL,TEXT", DatasetSpec(url_col="url"),
     r"dataset.url_col: column 'url' not in .*part-00000.parquet \(columns: SAMPLE_ID, URL, TEXT"),
    ("URL,SAMPLE_ID", DatasetSpec(),
     r"dataset.caption_col: column 'TEXT' not in .*a.csv \(columns: URL, SAMPLE_ID\)"),
    ("URL,TEXT,SAMPLE_ID", DatasetSpec(id_col="SAMPLE_ID"),
     r"dataset.id_col: column 'SAMPLE_ID' not in .*a.jsonl \(keys seen: URL, TEXT\)"),
])
def test_check_dataset_names_a_missing_column(tmp_path, write_parquet, csv_header, spec, message):
    (tmp_path / "a.csv").write_text(csv_header + "\n")
    (tmp_path / "a.jsonl").write_text(json.dumps({"URL": "u"}) + "\n" + json.dumps({"TEXT": "t"}) + "\n")
    paths = [write_parquet(["http://e.com/a"])] + [str(tmp_path / n) for n in ("a.csv", "a.jsonl")]
    with pytest.raises(DatasetError, match=message):
        check_dataset(paths, spec)


def test_check_dataset_needs_a_format_for_every_file(tmp_path):
    (tmp_path / "a.csv").write_text("URL,TEXT\n")
    with pytest.raises(DatasetError, match=r"dataset.format: cannot tell the format of '.*notes.txt'"):
        check_dataset([str(tmp_path / "a.csv"), str(tmp_path / "notes.txt")], DatasetSpec())


def test_check_dataset_looks_past_empty_files_to_the_first_with_a_header(tmp_path):
    (tmp_path / "a.csv").write_bytes(b"")
    (tmp_path / "b.csv").write_text("url,TEXT\n")
    paths = [str(tmp_path / n) for n in ("a.csv", "b.csv")]
    with pytest.raises(DatasetError, match=r"dataset.url_col: column 'URL' not in .*b.csv"):
        check_dataset(paths, DatasetSpec())
