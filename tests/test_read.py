import json

import pyarrow.parquet as pq
import pytest

from tests.conftest import laion_table, run_transform
from transforms.read import (
    DatasetError,
    DatasetSpec,
    ReadDataset,
    ReadUnit,
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
