import json

import pyarrow.parquet as pq

from tests.conftest import laion_table
from transforms.clean import clean_file, drop_by_row_id, drop_by_url_sha256
from transforms.read import DatasetSpec
from transforms.signals import url_sha256_of


def test_parquet_clean_keeps_schema_and_drops_exact_rows(tmp_path):
    urls = [f"http://e.com/{i}.jpg" for i in range(30)]
    src = tmp_path / "part-0.parquet"
    pq.write_table(laion_table(urls), src, row_group_size=7)
    out = tmp_path / "clean.parquet"
    kept, dropped = clean_file(str(src), "part-0.parquet", str(out), DatasetSpec(read_batch_rows=4),
                               drop_by_row_id({"part-0.parquet:3", "part-0.parquet:29", "other:1"}))
    assert (kept, dropped) == (28, 2)
    original, cleaned = pq.read_table(src), pq.read_table(out)
    assert cleaned.schema == original.schema
    expected = [row for i, row in enumerate(original.to_pylist()) if i not in (3, 29)]
    assert cleaned.to_pylist() == expected


def test_clean_by_url_hash_matches_normalised_urls(tmp_path):
    urls = ["http://e.com/a.jpg", "HTTP://E.COM:80/a.jpg#x", "http://e.com/b.jpg", None]
    src = tmp_path / "p.parquet"
    pq.write_table(laion_table(urls), src)
    out = tmp_path / "c.parquet"
    kept, dropped = clean_file(str(src), "p.parquet", str(out), DatasetSpec(),
                               drop_by_url_sha256({url_sha256_of("http://e.com/a.jpg")}))
    assert (kept, dropped) == (2, 2)
    assert pq.read_table(out).column("URL").to_pylist() == ["http://e.com/b.jpg", None]


def test_id_column_row_ids(tmp_path):
    src = tmp_path / "p.parquet"
    pq.write_table(laion_table(["http://e.com/a", "http://e.com/b"]), src)
    out = tmp_path / "c.parquet"
    clean_file(str(src), "p.parquet", str(out), DatasetSpec(id_col="SAMPLE_ID"), drop_by_row_id({"1001"}))
    assert pq.read_table(out).column("SAMPLE_ID").to_pylist() == [1000]


def test_csv_and_jsonl_keep_their_text(tmp_path):
    csv_src = tmp_path / "rows.csv"
    csv_src.write_text('URL,TEXT,WIDTH\nhttp://e.com/1,"a, quoted",10\nhttp://e.com/2,b,\n')
    csv_out = tmp_path / "out.csv"
    assert clean_file(str(csv_src), "rows.csv", str(csv_out), DatasetSpec(), drop_by_row_id({"rows.csv:1"})) == (1, 1)
    assert csv_out.read_text() == 'URL,TEXT,WIDTH\nhttp://e.com/1,"a, quoted",10\n'

    lines = [json.dumps({"URL": "http://e.com/1", "extra": [1, 2]}), json.dumps({"URL": None})]
    jsonl_src = tmp_path / "rows.jsonl"
    jsonl_src.write_text("\n".join(lines) + "\n")
    jsonl_out = tmp_path / "out.jsonl"
    assert clean_file(str(jsonl_src), "rows.jsonl", str(jsonl_out), DatasetSpec(),
                      drop_by_row_id({"rows.jsonl:0"})) == (1, 1)
    assert jsonl_out.read_text() == lines[1] + "\n"
