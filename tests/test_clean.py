import codecs
import gzip
import json
import posixpath

import pyarrow.parquet as pq
import pytest

from tests.conftest import laion_table
from transforms.clean import clean_file, drop_by_row_id, drop_by_url_sha256
from transforms.clean_beam import _CleanFiles
from transforms.read import DatasetError, DatasetSpec, ReadUnit, format_of, read_unit_columns, records_of_block
from transforms.urls import url_sha256_of


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



def test_a_list_published_in_uppercase_hex_still_removes(tmp_path):
    src = tmp_path / "p.parquet"
    pq.write_table(laion_table(["http://e.com/a.jpg", "http://e.com/b.jpg"]), src)
    out = tmp_path / "c.parquet"
    upper = url_sha256_of("http://e.com/a.jpg").upper()
    assert clean_file(str(src), "p.parquet", str(out), DatasetSpec(), drop_by_url_sha256({upper})) == (1, 1)
    assert pq.read_table(out).column("URL").to_pylist() == ["http://e.com/b.jpg"]

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


def _read_ids_by_url(path, spec=DatasetSpec()) -> dict:
    """Row ids as the read stage gives them, by URL."""
    unit = ReadUnit(path, posixpath.basename(path), format_of(path, spec.format))
    return {r["url"]: r["row_id"] for position, block in read_unit_columns(unit, spec)
            for r in records_of_block(unit, position, block, spec)}


@pytest.mark.parametrize("fmt, sep", [("csv", ","), ("tsv", "\t")])
def test_rows_longer_or_shorter_than_the_header_are_copied_as_read(tmp_path, fmt, sep):
    src = tmp_path / f"rows.{fmt}"
    src.write_text(f"URL{sep}TEXT\nhttp://e.com/1{sep}a{sep}extra\n\nhttp://e.com/2\n"
                   f"http://e.com/3{sep}c{sep}x{sep}y\nhttp://e.com/4{sep}d\n")
    removed = _read_ids_by_url(str(src))["http://e.com/3"]
    out = tmp_path / f"out.{fmt}"
    assert clean_file(str(src), src.name, str(out), DatasetSpec(), drop_by_row_id({removed})) == (3, 1)
    assert out.read_text() == (f"URL{sep}TEXT\nhttp://e.com/1{sep}a{sep}extra\nhttp://e.com/2\n"
                               f"http://e.com/4{sep}d\n")


@pytest.mark.parametrize("name, lines", [
    ("rows.csv", ["URL,TEXT\n", "http://e.com/1,a\n", "http://e.com/2,b\n"]),
    ("rows.jsonl", [json.dumps({"URL": "http://e.com/1"}) + "\n", json.dumps({"URL": "http://e.com/2"}) + "\n"]),
])
def test_a_byte_order_mark_does_not_hide_the_url_column(tmp_path, name, lines):
    src = tmp_path / name
    src.write_bytes(codecs.BOM_UTF8 + "".join(lines).encode())
    out = tmp_path / f"out-{name}"
    removed = {url_sha256_of("http://e.com/2")}
    assert clean_file(str(src), name, str(out), DatasetSpec(), drop_by_url_sha256(removed)) == (1, 1)
    assert out.read_text() == "".join(lines[:-1])


def test_gzipped_text_inputs_clean_to_gzipped_outputs(tmp_path):
    csv_body = 'URL,TEXT\nhttp://e.com/1,"two\nlines"\nhttp://e.com/2,caf\u00e9\nhttp://e.com/3,c\n'
    lines = [json.dumps({"URL": f"http://e.com/{i}", "TEXT": "caf\u00e9 \u2028"}, ensure_ascii=False) + "\n"
             for i in (1, 2, 3)]
    for name, body, expected in [
        ("rows.csv.gz", csv_body, 'URL,TEXT\nhttp://e.com/1,"two\nlines"\nhttp://e.com/3,c\n'),
        ("rows.jsonl.gz", "".join(lines), lines[0] + lines[2]),
    ]:
        src = tmp_path / name
        src.write_bytes(gzip.compress(body.encode()))
        removed = {_read_ids_by_url(str(src))["http://e.com/2"]}
        out = tmp_path / "out" / name
        assert clean_file(str(src), name, str(out), DatasetSpec(), drop_by_row_id(removed)) == (2, 1)
        assert gzip.decompress(out.read_bytes()).decode() == expected


def test_clean_reads_jsonl_as_the_read_stage_does(tmp_path):
    src = tmp_path / "rows.jsonl"
    src.write_text(json.dumps({"url": "http://e.com/1"}) + "\n")
    with pytest.raises(DatasetError, match=r"dataset.url_col: column 'URL' not in .*rows.jsonl \(keys seen: url\)"):
        clean_file(str(src), "rows.jsonl", str(tmp_path / "out.jsonl"), DatasetSpec(), drop_by_row_id(set()))
    src.write_text(json.dumps({"URL": "http://e.com/1"}) + "\n{not json\n")
    with pytest.raises(DatasetError, match=r"rows.jsonl:2: not a JSON object"):
        clean_file(str(src), "rows.jsonl", str(tmp_path / "out.jsonl"), DatasetSpec(), drop_by_row_id(set()))


@pytest.mark.parametrize("name", ["empty.csv", "empty.tsv"])
def test_an_empty_text_file_cleans_to_an_empty_file(tmp_path, name):
    src = tmp_path / name
    src.write_bytes(b"")
    out = tmp_path / f"out-{name}"
    assert clean_file(str(src), name, str(out), DatasetSpec(), drop_by_row_id({f"{name}:0"})) == (0, 0)
    assert out.read_bytes() == b""


def test_a_wrong_column_is_named_not_skipped(tmp_path):
    csv_src = tmp_path / "rows.csv"
    csv_src.write_text("url,TEXT\nhttp://e.com/1,a\n")
    with pytest.raises(DatasetError, match=r"dataset.url_col: column 'URL' not in .*rows.csv"):
        clean_file(str(csv_src), "rows.csv", str(tmp_path / "out.csv"), DatasetSpec(), drop_by_row_id(set()))
    parquet_src = tmp_path / "p.parquet"
    pq.write_table(laion_table(["http://e.com/a"]), parquet_src)
    with pytest.raises(DatasetError, match=r"dataset.id_col: column 'key' not in .*p.parquet"):
        clean_file(str(parquet_src), "p.parquet", str(tmp_path / "c.parquet"), DatasetSpec(id_col="key"),
                   drop_by_row_id(set()))


class _CountedList(list):
    """A side-input list that counts how often it is read."""

    def __init__(self, values):
        super().__init__(values)
        self.reads = 0

    def __iter__(self):
        self.reads += 1
        return super().__iter__()


def test_clean_files_reads_the_removed_keys_once_per_side_input(tmp_path):
    srcs = []
    for name in ("a.csv", "b.csv"):
        (tmp_path / name).write_text("URL,TEXT\nhttp://e.com/1,a\nhttp://e.com/2,b\n")
        srcs.append(str(tmp_path / name))
    out_dir = tmp_path / "not" / "yet" / "there"
    clean = _CleanFiles(DatasetSpec(), {s: posixpath.basename(s) for s in srcs}, str(out_dir), "row_id")
    removed = _CountedList(["a.csv:0", "b.csv:1"])
    results = [r for src in srcs for r in clean.process(src, removed)]
    assert [(r["kept"], r["dropped"]) for r in results] == [(1, 1), (1, 1)]
    assert removed.reads == 1
    assert (out_dir / "a.csv").read_text() == "URL,TEXT\nhttp://e.com/2,b\n"
    # A new side input (the next window or bundle) is read again, not served from the old one.
    fresh = _CountedList(["a.csv:1"])
    assert [(r["kept"], r["dropped"]) for r in clean.process(srcs[0], fresh)] == [(1, 1)]
    assert fresh.reads == 1 and (out_dir / "a.csv").read_text() == "URL,TEXT\nhttp://e.com/1,a\n"


# ----------------------------------------------- the bulk URL path against the per-row one

TRICKY_URLS = [
    "http://a.com/x", "https://a.com/", "http://a.com", "http://A.com/x", "HTTP://a.COM/x", "Https://A.b.c/x?Q=1",
    "http://a.com/x?", "http://a.com/?", "http://a.com/x??", "http://a.com/x?q#f", "http://a.com/x#", "http://a.com/x# ",
    "http://a.com:80/x", "https://a.com:443/x", "http://a.com:443/x", "https://a.com:80/x", "http://a.com:080/x",
    "http://a.com:/x", "http://a.com:99999/x", "http://a.com:8080/x", "http://u@a.com/x", "http://u:p@A.com:80/x",
    " http://a.com/x", "http://a.com/x ", "http://a.com/x\xa0", "http://a.com/x\xa0#f", "http://a.com/x\u3000y",
    "http://a.com/x\u2028", "http://a.com/x y", "http://a.com/x\t", "http://a.com/\x85", "http://a.com/x#\x1f",
    "http://a.com/x\x7f", "http://a.com/x\x1f", "ftp://a.com/x", "http://a..b/x", "http://" + "a" * 70 + ".com/x",
    "http://a.com./x", "http://a.com/é", "http://ä.com/x", "http://\u212aelvin.com/x", "http://a_b.com/x",
    "http://a.com/x?a=1&b=2", "http://[::1]/x", "http://[::1]:80/x", "http://[bad/x", "http://a.com/%7E",
    "http://a.com//x", "http:///x", "http://?x", "not a url", "", "  ", "http://a.com/x#y#z", "http://a.com\\x",
    "//a.com/x", "http:a.com/x", "HTTPS://WWW.EXAMPLE.COM:443/Path/To/IMG.JPG?Size=Large#Top",
]


def _fuzzed_urls(count: int, seed: int = 0) -> list[str]:
    import random

    rng = random.Random(seed)
    pieces = {
        "scheme": ["http", "https", "https", "https", "HTTP", "Https", "ftp", ""],
        "sep": ["://"] * 6 + [":/", "//"],
        "user": ["", "", "", "u@", "u:p@"],
        "host": ["a.com", "a.com", "img.cdn-1.example.org", "x_y.net", "A.Com", "ä.de", "[::1]", "", "a..b",
                 "\u212a.com"],
        "port": ["", "", "", ":80", ":443", ":8080", ":", ":0443", ":99999"],
        "path": ["", "/", "/x", "/a/b.jpg", "/a/b.jpg", "/a/b.jpg", "/a b", "/é", "/x\xa0", "//x", "/%20", "/x\x7f", "/x\u3000"],
        "query": ["", "", "?", "?a=1", "??", "?a=1&b=", "?q=#"],
        "frag": ["", "", "", "", "#", "#f", "#f ", "#\x1f", "#a#b"],
        "pad": [""] * 8 + [" ", "\t", "\xa0", "\u2028"],
    }
    out = []
    for _ in range(count):
        p = {k: rng.choice(v) for k, v in pieces.items()}
        out.append(p["scheme"] + p["sep"] + p["user"] + p["host"] + p["port"] + p["path"] + p["query"]
                   + p["frag"] + p["pad"])
    return out


def _reference_sha256(url):
    """url_sha256_of with the full (urlsplit) normalisation only: the definition."""
    import hashlib

    from transforms.urls import _normalize_url_full

    try:
        key = _normalize_url_full(url)
    except ValueError:
        key = str(url).strip()
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def test_fast_url_paths_equal_the_full_normalisation():
    import pyarrow as pa

    from transforms.urls import _normalize_url_full, already_normal, normalize_url, url_sha256_digests

    urls = TRICKY_URLS + _fuzzed_urls(5000) + [f"https://img{i}.example.com/p/{i}.jpg?x={i}" for i in range(200)]
    for url in urls:  # normalize_url's shortcut gives what urlsplit gives, or the same error
        try:
            expected = _normalize_url_full(url)
        except ValueError:
            with pytest.raises(ValueError):
                normalize_url(url)
        else:
            assert normalize_url(url) == expected, url
    column = pa.array(urls + [None], pa.string())
    normal = already_normal(column)
    assert normal.sum() > 100 and (~normal).sum() > 100
    for url, ok in zip(urls, normal.tolist()):
        if ok:
            assert _normalize_url_full(url) == url, url
    assert url_sha256_digests(column) == [_reference_sha256(u) for u in urls] + [None]
    sliced = column.slice(7, 300)  # an Arrow slice: offsets start mid-buffer
    assert url_sha256_digests(sliced) == [_reference_sha256(u) for u in urls[7:307]]


def test_url_kind_keys_equal_each_urls_own_normalisation():
    """The url kind's lookup keys (normal URLs found column-wise) are, row by row, what
    the full normalisation gives, the row's url_sha256 where it has no URL, else None."""
    from transforms.takedown.kinds import UrlKind
    from transforms.urls import _normalize_url_full

    urls = TRICKY_URLS + _fuzzed_urls(3000, seed=2) + ["", None, "HTTP://A.B/", "http://a.b/c?"]
    shas = [None] * (len(urls) - 4) + ["AB" * 32, "cd" * 32, None, None]

    def expected(url, sha):
        if isinstance(url, str) and url:
            try:
                return _normalize_url_full(url)
            except ValueError:
                return None
        return sha.strip().lower() if isinstance(sha, str) else None

    keys = UrlKind().rows({"url": urls, "url_sha256": shas}, len(urls)).values
    assert keys == [expected(u, h) for u, h in zip(urls, shas)]
    assert sum(k is not None for k in keys) > 1000
    mixed = UrlKind().rows({"url": [12345, "HTTP://A.B/x"], "url_sha256": ["ef" * 32, None]}, 2).values
    assert mixed == ["ef" * 32, "http://a.b/x"]  # a non-text URL cell: looked up by its url_sha256


def test_bulk_url_drop_rule_equals_the_per_row_rule():
    import pyarrow as pa

    urls = TRICKY_URLS + _fuzzed_urls(3000, seed=1) + [None]
    removed = {_reference_sha256(u).hex() for u in urls[::3] if u is not None}
    removed |= {url_sha256_of(" "), url_sha256_of(""), "F" * 64, "not hex"}  # blank URLs are never dropped
    expected = [isinstance(u, str) and bool(u.strip()) and _reference_sha256(u).hex() in removed for u in urls]
    rule = drop_by_url_sha256(removed)
    assert rule(lambda: pytest.fail("row ids are not needed"), pa.array(urls, pa.string())).tolist() == expected
    assert rule(lambda: [], urls).tolist() == expected  # the text formats' lists
    assert sum(expected) > 500


def test_a_rewrite_keeps_a_dictionary_only_where_the_input_shows_it_pays(tmp_path):
    import random

    import pyarrow as pa

    rng = random.Random(0)
    n = 5000
    urls = [f"https://img{i % 97}.example.com/{i}/{rng.getrandbits(40):x}.jpg" for i in range(n)]
    table = pa.table({
        "URL": urls,
        "lang": [("en", "de", "fr")[i % 3] for i in range(n)],
        "WIDTH": pa.array([(256, 512, 1024)[i % 3] for i in range(n)], pa.int64()),
        "similarity": [rng.random() for _ in range(n)],
        "tags": [["a"] * (i % 2) for i in range(n)],
    })
    src, out = tmp_path / "p.parquet", tmp_path / "out.parquet"
    pq.write_table(table, src)  # pyarrow's default: a dictionary tried on every column
    assert clean_file(str(src), "p.parquet", str(out), DatasetSpec(caption_col=None),
                      drop_by_url_sha256({url_sha256_of(urls[3])})) \
        == (n - 1, 1)
    assert pq.read_table(out).equals(table.filter(pa.array([i != 3 for i in range(n)])))
    meta = pq.ParquetFile(out).metadata
    with_dictionary = {meta.schema.column(i).path: meta.row_group(0).column(i).has_dictionary_page
                       for i in range(meta.num_columns)}
    assert with_dictionary == {"URL": False, "lang": True, "WIDTH": True, "similarity": False,
                               "tags.list.element": True}


def test_the_column_wise_shortcut_gives_the_row_wise_one():
    """URLs not normal but usual (upper-case host, default port, fragment) are normalised
    column-wise; each agrees with the row-wise shortcut, which the test above pins to the
    full normalisation, and every ASCII URL that shortcut takes is taken."""
    import pyarrow as pa

    from transforms.urls import _simple_normal, _simple_normals

    usual = [f"{s}://{h}{p}/a/{i}.jpg{q}{f}" for i, (s, h, p, q, f) in enumerate(
        (s, h, p, q, f) for s in ("http", "HTTPS", "https") for h in ("IMG.example.com", "img.example.com")
        for p in ("", ":80", ":443", ":8080") for q in ("", "?", "?a=1", "??") for f in ("", "#x", "#\x1f", "# "))]
    urls = usual + TRICKY_URLS + _fuzzed_urls(3000, seed=2)
    simple, normals = _simple_normals(pa.array(urls, pa.string()))
    for url, taken, normal in zip(urls, simple.tolist(), normals.to_pylist()):
        expected = _simple_normal(url)
        if taken:
            assert normal == expected, url
        else:
            assert expected is None or not url.isascii(), url
    assert simple.sum() > 150


def test_jsonl_blocks_match_odd_values_as_the_row_rule_does(tmp_path):
    """A JSONL block with a lone surrogate, a number and a null for a URL is judged whole,
    as one row at a time would judge it: the surrogate URL by its own bytes."""
    import hashlib

    lone = "http://e.com/\ud800.jpg"
    rows = [{"URL": "http://e.com/1.jpg"}, {"URL": lone}, {"URL": 5}, {"URL": None}, {"URL": "http://E.com/1.jpg"}]
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    removed = {hashlib.sha256(u.encode("utf-8", "surrogatepass")).hexdigest() for u in ("http://e.com/1.jpg", lone)}
    removed.add(hashlib.sha256(b"5").hexdigest())  # a number is no URL: never matched
    out = tmp_path / "out.jsonl"
    assert clean_file(str(src), "rows.jsonl", str(out), DatasetSpec(read_batch_rows=3),
                      drop_by_url_sha256(removed)) == (2, 3)
    assert [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()] == [{"URL": 5}, {"URL": None}]
