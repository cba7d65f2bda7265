"""Takedown stage: list files, thresholds, exact and multi-index Hamming search, Beam path."""
from __future__ import annotations

import hashlib
import json

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from transforms.takedown import (
    MatchTakedown,
    TakedownEntry,
    TakedownIndex,
    TakedownListError,
    Thresholds,
    add_matches,
    clip_to_value,
    hamming_hex,
    load_list,
    load_lists,
    write_list,
)
from transforms.urls import url_sha256_of


def random_hex(rng: np.random.Generator, nbytes: int) -> str:
    return rng.integers(0, 256, nbytes, dtype=np.uint8).tobytes().hex()


def flip_bits(value: str, count: int, rng: np.random.Generator) -> str:
    """``value`` with exactly ``count`` distinct bits flipped."""
    bits = len(value) * 4
    number = int(value, 16)
    for bit in rng.choice(bits, size=count, replace=False):
        number ^= 1 << int(bit)
    out = f"{number:0{len(value)}x}"
    assert hamming_hex(out, value) == count
    return out


def entry(entry_id: str, kind: str, value: str, max_distance=None, list_id="list-a", reason=None):
    return TakedownEntry(list_id, entry_id, kind, value, max_distance, reason)


def matched_ids(matches: list[dict]) -> set[str]:
    return {m["entry_id"] for m in matches}


# ------------------------------------------------------------------ Hamming thresholds


@pytest.mark.parametrize("strategy", ["flat", "mih"])
@pytest.mark.parametrize("kind,nbytes,threshold", [("pdq", 32, 31), ("phash", 8, 8)])
def test_hamming_threshold_at_under_and_over(strategy, kind, nbytes, threshold):
    rng = np.random.default_rng(7)
    value = random_hex(rng, nbytes)
    others = [entry(f"noise-{i}", kind, random_hex(rng, nbytes)) for i in range(300)]
    index = TakedownIndex([entry("target", kind, value)] + others, hamming_strategy=strategy)
    assert index.strategy(kind) == strategy
    distances = [threshold - 1, threshold, threshold + 1, 0]
    rows = [flip_bits(value, d, rng) for d in distances]
    results = index.match_columns({kind: rows})
    target = [[m for m in r if m["entry_id"] == "target"] for r in results]
    assert [len(t) for t in target] == [1, 1, 0, 1]
    assert [t[0]["distance"] for t in target if t] == [threshold - 1, threshold, 0.0]
    assert all(t[0]["kind"] == kind and t[0]["list_id"] == "list-a" for t in target if t)


@pytest.mark.parametrize("strategy", ["flat", "mih"])
def test_per_entry_max_distance_tightens_and_loosens(strategy):
    rng = np.random.default_rng(11)
    tight, loose, default = (random_hex(rng, 32) for _ in range(3))
    index = TakedownIndex(
        [entry("tight", "pdq", tight, 10), entry("loose", "pdq", loose, 40), entry("default", "pdq", default)],
        hamming_strategy=strategy,
    )
    rows = {
        "tight@10": flip_bits(tight, 10, rng),
        "tight@11": flip_bits(tight, 11, rng),
        "loose@40": flip_bits(loose, 40, rng),
        "loose@41": flip_bits(loose, 41, rng),
        "default@31": flip_bits(default, 31, rng),
        "default@32": flip_bits(default, 32, rng),
    }
    results = index.match_columns({"pdq": list(rows.values())})
    got = {name: matched_ids(r) for name, r in zip(rows, results)}
    assert got == {
        "tight@10": {"tight"}, "tight@11": set(),
        "loose@40": {"loose"}, "loose@41": set(),
        "default@31": {"default"}, "default@32": set(),
    }


def test_index_default_thresholds_are_configurable():
    rng = np.random.default_rng(5)
    value = random_hex(rng, 32)
    row = flip_bits(value, 20, rng)
    assert matched_ids(TakedownIndex([entry("e", "pdq", value)]).match_columns({"pdq": [row]})[0]) == {"e"}
    strict = TakedownIndex([entry("e", "pdq", value)], thresholds=Thresholds(pdq=19))
    assert strict.match_columns({"pdq": [row]}) == [[]]


def test_multi_index_search_finds_exactly_what_a_full_scan_finds():
    rng = np.random.default_rng(3)
    n = 20_000
    codes = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    entries = [entry(f"e{i}", "pdq", codes[i].tobytes().hex()) for i in range(n)]
    mih = TakedownIndex(entries)  # auto: large enough for multi-index hashing
    flat = TakedownIndex(entries, hamming_strategy="flat")
    assert (mih.strategy("pdq"), flat.strategy("pdq")) == ("mih", "flat")

    rows = []
    for i in range(400):
        if i % 4 == 3:
            rows.append(random_hex(rng, 32))
        else:
            distance = (0, 1, 2, 16, 29, 30, 31, 31, 32, 33, 40)[i % 11]
            rows.append(flip_bits(entries[int(rng.integers(n))].value, distance, rng))
    # Two entries close to each other: a row near both must report both.
    entries.append(entry("twin", "pdq", flip_bits(entries[0].value, 6, rng)))
    mih, flat = TakedownIndex(entries), TakedownIndex(entries, hamming_strategy="flat")
    rows.append(flip_bits(entries[0].value, 3, rng))

    query = np.frombuffer(b"".join(bytes.fromhex(r) for r in rows), np.uint8).reshape(len(rows), 32)
    table = np.frombuffer(b"".join(bytes.fromhex(e.value) for e in entries), np.uint8).reshape(-1, 32)
    brute = np.bitwise_count(query.view(np.uint64)[:, None, :] ^ table.view(np.uint64)[None, :, :]).sum(axis=2)
    expected = [{(entries[j].entry_id, float(brute[i, j])) for j in np.flatnonzero(brute[i] <= 31)}
                for i in range(len(rows))]
    for index in (mih, flat):
        got = [{(m["entry_id"], m["distance"]) for m in r} for r in index.match_columns({"pdq": rows})]
        assert got == expected
    found = sorted(d for row in expected for _, d in row)
    assert len(found) >= 200 and found.count(31.0) >= 40 and max(found) == 31.0
    assert {"e0", "twin"} <= {m for m, _ in expected[-1]}


def _flip_spread(code: np.ndarray, distance: int, parts, rng) -> np.ndarray:
    """``code`` with ``distance`` bits flipped, spread round-robin over the plan's parts
    (the case where the fewest parts stay within their probe radius)."""
    out = code.copy()
    per_part = [0] * len(parts)
    for k in range(distance):
        per_part[k % len(parts)] += 1
    for (start, width), count in zip(parts, per_part):
        for bit in rng.choice(width, size=min(count, width), replace=False):
            position = start + int(bit)  # bit k of little-endian word i is byte 8i + k // 8, bit k % 8
            out[position // 8] ^= np.uint8(1 << (position % 8))
    return out


@pytest.mark.parametrize("nbytes,radius", [(32, 31), (32, 40), (32, 15), (32, 0), (8, 8), (8, 3)])
def test_every_multi_index_plan_is_exact_at_the_pigeonhole_edge(nbytes, radius):
    from transforms.takedown.hamming import _MultiIndexHamming, _plans

    rng = np.random.default_rng(radius + nbytes)
    codes = rng.integers(0, 256, (3000, nbytes), dtype=np.uint8)
    plans = [p for p in _plans(nbytes * 8, radius) if max(p.widths) <= 16]
    assert plans
    for plan in plans[:: max(1, len(plans) // 6)]:
        index = _MultiIndexHamming(codes, radius, plan=plan)
        parts = list(zip(plan.starts, plan.widths))
        queries = []
        for i in range(120):
            distance = max(0, radius + (-1, 0, 0, 1)[i % 4])
            queries.append(_flip_spread(codes[int(rng.integers(len(codes)))], distance, parts, rng))
        queries = np.stack(queries)
        rows, ids, dist = index.search(queries)
        brute = np.bitwise_count(queries[:, None, :] ^ codes[None, :, :]).sum(axis=2)
        expected = {(int(q), int(e), int(brute[q, e])) for q, e in zip(*np.nonzero(brute <= radius))}
        assert set(zip(rows.tolist(), ids.tolist(), dist.tolist())) == expected, plan
        assert len(rows) == len(expected)  # each hit once
        assert sum(1 for q, _, d in expected if d == radius) >= 20


# ------------------------------------------------------------------------ exact kinds


def test_url_normalisation_match():
    index = TakedownIndex([entry("u1", "url", "http://example.com/a")])
    rows = ["HTTP://Example.COM:80/a#frag", "http://example.com/a?x=1", "http://example.com/A", None, "not a url"]
    assert [matched_ids(r) for r in index.match_columns({"url": rows})] == [{"u1"}, set(), set(), set(), set()]


def test_url_entry_matches_a_row_known_only_by_its_url_hash():
    index = TakedownIndex([entry("u1", "url", "https://example.com/photo.jpg")])
    sha = url_sha256_of("HTTPS://EXAMPLE.com:443/photo.jpg")
    results = index.match_columns({"url": [None, None], "url_sha256": [sha, "0" * 64]})
    assert [matched_ids(r) for r in results] == [{"u1"}, set()]


def test_url_sha256_entry_matches_the_row_column_or_its_url():
    sha = url_sha256_of("http://example.com/x.png")
    index = TakedownIndex([entry("h1", "url_sha256", sha.upper())])
    by_column = index.match_columns({"url_sha256": [sha, None]})
    by_url = index.match_columns({"url": ["http://EXAMPLE.com/x.png#top", "http://example.com/y.png"]})
    assert [matched_ids(r) for r in by_column + by_url] == [{"h1"}, set(), {"h1"}, set()]


def test_content_hashes_match_exactly_and_case_insensitively():
    body = b"some image bytes"
    md5, sha = hashlib.md5(body).hexdigest(), hashlib.sha256(body).hexdigest()
    index = TakedownIndex([entry("m", "md5", md5), entry("s", "sha256", sha, reason="court order")])
    results = index.match_batch([
        {"content_md5": md5.upper(), "content_sha256": sha},
        {"content_md5": hashlib.md5(b"other").hexdigest(), "content_sha256": None},
        {},
    ])
    assert [matched_ids(r) for r in results] == [{"m", "s"}, set(), set()]
    assert results[0] == [
        {"list_id": "list-a", "entry_id": "m", "kind": "md5", "distance": 0.0, "reason": None},
        {"list_id": "list-a", "entry_id": "s", "kind": "sha256", "distance": 0.0, "reason": "court order"},
    ]


# ------------------------------------------------------------------------------- clip


def test_clip_cosine_threshold_and_per_entry_minimum():
    rng = np.random.default_rng(9)
    basis, _ = np.linalg.qr(rng.normal(size=(64, 4)))
    a, b, c, d = basis.T  # orthonormal

    def at_cosine(u, v, cos):
        return cos * u + np.sqrt(1 - cos * cos) * v

    index = TakedownIndex([
        entry("default", "clip", clip_to_value(a)),
        entry("strict", "clip", clip_to_value(c), max_distance=0.97),
    ])
    rows = [at_cosine(a, b, 0.9), at_cosine(a, b, 0.89), at_cosine(c, d, 0.96), at_cosine(c, d, 0.975) * 3.0, None]
    results = index.match_columns({"_embedding": rows})
    assert [matched_ids(r) for r in results] == [{"default"}, set(), set(), {"strict"}, set()]
    assert results[0][0]["distance"] == pytest.approx(0.1, abs=1e-5)  # 1 - cosine
    with pytest.raises(ValueError, match="dimensions"):
        index.match_columns({"_embedding": [np.ones(32)]})


# --------------------------------------------------------------------- batches, columns


def test_match_batch_skips_missing_and_malformed_values_row_by_row():
    rng = np.random.default_rng(2)
    pdq, phash = random_hex(rng, 32), random_hex(rng, 8)
    index = TakedownIndex([entry("p", "pdq", pdq), entry("h", "phash", phash)])
    assert index.kinds == ("pdq", "phash") and len(index) == 2
    records = [
        {"pdq": flip_bits(pdq, 5, rng), "phash": None},
        {"pdq": "zz" * 32, "phash": phash.upper()},
        {"pdq": pdq[:-2], "phash": flip_bits(phash, 3, rng)},
        {"row_id": "nothing hashed"},
    ]
    assert [matched_ids(r) for r in index.match_batch(records)] == [{"p"}, {"h"}, {"h"}, set()]


def test_match_columns_takes_arrow_arrays_as_a_rematch_reads_them():
    rng = np.random.default_rng(4)
    pdq = random_hex(rng, 32)
    md5 = hashlib.md5(b"x").hexdigest()
    index = TakedownIndex([entry("p", "pdq", pdq), entry("m", "md5", md5)])
    batch = pa.record_batch({
        "pdq": pa.array([None, flip_bits(pdq, 30, rng), random_hex(rng, 32)]),
        "content_md5": pa.array([md5, None, None]),
    })
    results = index.match_columns({name: batch.column(name) for name in batch.schema.names})
    assert [matched_ids(r) for r in results] == [{"m"}, {"p"}, set()]


def test_empty_index_and_empty_batch():
    assert TakedownIndex([]).match_batch([{"pdq": "0" * 64}]) == [[]]
    assert TakedownIndex([entry("p", "pdq", "0" * 64)]).match_batch([]) == []


def test_index_refuses_duplicate_entry_ids():
    with pytest.raises(ValueError, match="duplicate"):
        TakedownIndex([entry("e", "md5", "0" * 32), entry("e", "sha256", "0" * 64)])


def test_add_matches_extends_existing_once_and_leaves_the_input_alone():
    old = {"list_id": "l", "entry_id": "a", "kind": "md5", "distance": 0.0, "reason": None}
    new = {"list_id": "l", "entry_id": "b", "kind": "pdq", "distance": 3.0, "reason": None}
    record = {"row_id": "r", "matches": [old]}
    out = add_matches(record, [old, new])
    assert out["matches"] == [old, new] and record["matches"] == [old]
    assert add_matches(record, [old]) is record
    assert add_matches(record, []) is record


# ------------------------------------------------------------------------- list files


def sample_entries() -> list[TakedownEntry]:
    rng = np.random.default_rng(1)
    return [
        TakedownEntry("list-a", "e-1", "pdq", random_hex(rng, 32), 20.0, "clinic photo", 87),
        TakedownEntry("list-a", "e-2", "pdq", random_hex(rng, 32), None, None, 31),
        TakedownEntry("list-a", "e-3", "phash", random_hex(rng, 8), None, "x", None),
        TakedownEntry("list-a", "e-4", "md5", random_hex(rng, 16), None, None, None),
        TakedownEntry("list-a", "e-5", "sha256", random_hex(rng, 32), None, None, None),
        TakedownEntry("list-a", "e-6", "url", "http://example.com/a", None, "a, \"quoted\" reason", None),
        TakedownEntry("list-a", "e-7", "url_sha256", random_hex(rng, 32), None, None, None),
        TakedownEntry("list-a", "e-8", "clip", clip_to_value(rng.normal(size=16)), 0.95, None, None),
    ]


@pytest.mark.parametrize("ext", ["parquet", "csv", "jsonl"])
def test_write_then_load_round_trip(tmp_path, ext):
    entries = sample_entries()
    path = str(tmp_path / f"list.{ext}")
    write_list(entries, path)
    loaded = load_list(path)
    assert loaded == entries
    assert [e.low_quality for e in loaded] == [False, True] + [False] * 6


def test_format_is_taken_from_the_extension_unless_named(tmp_path):
    path = str(tmp_path / "list.data")
    write_list(sample_entries()[:2], path, list_format="jsonl")
    with pytest.raises(TakedownListError, match="extension"):
        load_list(path)
    assert len(load_list(path, list_format="jsonl")) == 2


def test_txt_list_of_pdq_hashes(tmp_path):
    rng = np.random.default_rng(6)
    a, b = random_hex(rng, 32), random_hex(rng, 32)
    path = tmp_path / "stopncii-2024.txt"
    path.write_text(f"# exported hashes\n{a}\n\n   {b.upper()}  \n# end\n")
    loaded = load_list(str(path))
    assert [(e.list_id, e.entry_id, e.kind, e.value) for e in loaded] == [
        ("stopncii-2024", "2", "pdq", a), ("stopncii-2024", "4", "pdq", b)]
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{a}\n{b[:-1]}\n")
    with pytest.raises(TakedownListError, match=r"bad\.txt line 2 \(entry 2\): pdq value must be 64 hex digits, got 63 characters"):
        load_list(str(bad))


GOOD_PDQ = "ab" * 32
BAD_CASES = {
    # name: (csv row after a good first row, expected message part, the offending value)
    "bad_hex": ("list-a,e-2,pdq,{}".format("zz" + "ab" * 31), "pdq value must be 64 hex digits, found non-hex characters", "zz" + "ab" * 31),
    "wrong_length": ("list-a,e-2,pdq,{}".format("a" * 63), "pdq value must be 64 hex digits, got 63 characters", "a" * 63),
    "unknown_kind": ("list-a,e-2,sha1,{}".format("a" * 40), "unknown kind 'sha1'", "a" * 40),
    "empty_value": ("list-a,e-2,md5,", "missing md5 value", None),
    "missing_list_id": (",e-2,md5,{}".format("c" * 32), "missing list_id", "c" * 32),
    "bad_url": ("list-a,e-2,url,http://exa mple.com:8o/", "url value is malformed", "8o"),
    "bad_max_distance": ("list-a,e-2,pdq,{},300".format("d" * 64), "max_distance for pdq must be 0..256", "d" * 64),
    "duplicate_id": ("list-a,e-1,md5,{}".format("e" * 32), "duplicate entry id", "e" * 32),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_invalid_csv_entries_name_file_line_and_entry_but_not_the_value(tmp_path, case):
    row, expected, secret = BAD_CASES[case]
    path = tmp_path / "list.csv"
    header = "list_id,entry_id,kind,value" + (",max_distance" if case == "bad_max_distance" else "")
    first = f"list-a,e-1,pdq,{GOOD_PDQ}" + ("," if case == "bad_max_distance" else "")
    path.write_text(f"{header}\n{first}\n\n{row}\n")
    with pytest.raises(TakedownListError) as err:
        load_list(str(path))
    message = str(err.value)
    assert message.startswith(f"{path} line 4 (entry e-2)") or case == "duplicate_id"
    if case == "duplicate_id":
        assert message.startswith(f"{path} line 4 (entry e-1)")
    assert expected in message
    if secret:
        assert secret not in message


def test_missing_entry_id_and_missing_column(tmp_path):
    path = tmp_path / "list.csv"
    path.write_text(f"list_id,entry_id,kind,value\nlist-a,,pdq,{GOOD_PDQ}\n")
    with pytest.raises(TakedownListError, match=r"list\.csv line 2: missing entry_id"):
        load_list(str(path))
    path.write_text(f"list_id,entry_id,value\nlist-a,e-1,{GOOD_PDQ}\n")
    with pytest.raises(TakedownListError, match=r"list\.csv line 1 \(header\): missing column 'kind'"):
        load_list(str(path))
    jsonl = tmp_path / "list.jsonl"
    jsonl.write_text(json.dumps({"list_id": "l", "entry_id": "e-1", "kind": "pdq", "value": GOOD_PDQ}) + "\n"
                     + json.dumps({"list_id": "l", "entry_id": "e-9", "kind": "pdq"}) + "\n")
    with pytest.raises(TakedownListError, match=r"list\.jsonl line 2 \(entry e-9\): missing column 'value'"):
        load_list(str(jsonl))
    parquet = tmp_path / "list.parquet"
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"list_id": ["l"], "entry_id": ["e"], "value": [GOOD_PDQ]}), parquet)
    with pytest.raises(TakedownListError, match=r"list\.parquet: missing column 'kind'"):
        load_list(str(parquet))


def test_invalid_parquet_entry_names_its_row(tmp_path):
    path = str(tmp_path / "list.parquet")
    import pyarrow.parquet as pq
    pq.write_table(pa.table({
        "list_id": ["l", "l", "l"], "entry_id": [1, 2, 3], "kind": ["pdq", "phash", "phash"],
        "value": [GOOD_PDQ, "0123456789abcdef", "0123456789abcde"],
    }), path)
    with pytest.raises(TakedownListError, match=r"list\.parquet row 3 \(entry 3\): phash value must be 16 hex digits, got 15 characters"):
        load_list(path)


def test_load_lists_refuses_the_same_entry_in_two_files(tmp_path):
    first, second = str(tmp_path / "a.csv"), str(tmp_path / "b.jsonl")
    write_list(sample_entries()[:3], first)
    write_list(sample_entries()[2:4], second)
    with pytest.raises(TakedownListError, match=r"b\.jsonl \(entry e-3\).*already has this entry id in .*a\.csv"):
        load_lists([first, second])
    write_list(sample_entries()[3:5], second)
    assert [e.entry_id for e in load_lists([first, second])] == ["e-1", "e-2", "e-3", "e-4", "e-5"]


# ------------------------------------------------------------------------------- Beam


def test_match_takedown_pipeline_with_a_large_list_as_side_input(tmp_path):
    rng = np.random.default_rng(12)
    n = 120_000
    codes = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    hexes = [c.hex() for c in map(bytes, codes)]
    big = str(tmp_path / "big.parquet")
    write_list([TakedownEntry("big", f"b{i}", "pdq", hexes[i], None, None) for i in range(n)], big)
    md5 = hashlib.md5(b"exact copy").hexdigest()
    small = str(tmp_path / "small.csv")
    write_list([TakedownEntry("small", "m1", "md5", md5, None, "request")], small)

    planted = {f"row-{i}": int(rng.integers(n)) for i in range(0, 300, 60)}
    records = []
    for i in range(300):
        row_id = f"row-{i}"
        pdq = flip_bits(hexes[planted[row_id]], 25, rng) if row_id in planted else random_hex(rng, 32)
        records.append({"row_id": row_id, "pdq": pdq, "content_md5": md5 if i == 7 else None,
                        "matches": [{"list_id": "earlier", "entry_id": "x", "kind": "url",
                                     "distance": 0.0, "reason": None}] if i == 7 else []})

    options = PipelineOptions(direct_num_workers=2, direct_running_mode="multi_threading")
    pipeline = beam.Pipeline(runner=FnApiRunner(), options=options)
    lists = pipeline | "Lists" >> beam.Create([big, small])
    out = (pipeline
           | beam.Create(records)
           | MatchTakedown(lists, min_batch_size=16, max_batch_size=32)
           | beam.Map(lambda r: (r["row_id"], sorted((m["list_id"], m["entry_id"]) for m in r["matches"]))))
    from apache_beam.testing.util import assert_that, equal_to
    expected = [(f"row-{i}", []) for i in range(300)]
    expected = [(rid, [("big", f"b{planted[rid]}")] if rid in planted else m) for rid, m in expected]
    expected[7] = ("row-7", [("earlier", "x"), ("small", "m1")])
    assert_that(out, equal_to(expected))
    result = pipeline.run()
    result.wait_until_finish()

    def counter(name):
        found = result.metrics().query(
            beam.metrics.MetricsFilter().with_namespace("takedown").with_name(name))["counters"]
        return sum(c.committed for c in found)

    assert counter("rows_checked") == 300
    assert counter("rows_matched") == len(planted) + 1
    assert counter("matches_pdq") == len(planted)
    assert counter("matches_md5") == 1
    assert counter("index_builds") == 1


def test_match_takedown_with_static_paths(tmp_path):
    from tests.conftest import run_transform

    path = str(tmp_path / "list.jsonl")
    write_list([TakedownEntry("l", "u", "url", "http://example.com/a", None, None)], path)
    records = [{"row_id": "1", "url": "http://EXAMPLE.com/a#x", "matches": []},
               {"row_id": "2", "url": "http://example.com/b", "matches": []}]
    out = sorted(run_transform(MatchTakedown([path]), records), key=lambda r: r["row_id"])
    assert [[m["entry_id"] for m in r["matches"]] for r in out] == [["u"], []]


def test_list_globs_are_expanded(tmp_path):
    for n in range(2):
        (tmp_path / f"part-{n}.csv").write_text(
            f"list_id,entry_id,kind,value\nl{n},e1,md5,{'0123456789abcdef' * 2}\n")
    entries = load_lists([str(tmp_path / "part-*.csv")])
    assert sorted(e.list_id for e in entries) == ["l0", "l1"]
    with pytest.raises(TakedownListError, match="no list file matches"):
        load_lists([str(tmp_path / "none-*.csv")])


def test_low_quality_pdq_takes_no_part_in_matching():
    flat = "0" * 64
    index = TakedownIndex([
        TakedownEntry("req", "flat", "pdq", flat, quality=10),
        TakedownEntry("req", "good", "pdq", "f" * 64, quality=90),
    ])
    columns = {"pdq": [flat, "f" * 64, "f" * 64], "pdq_quality": [100, 100, 20]}
    hits = index.match_columns(columns)
    assert [[m["entry_id"] for m in row] for row in hits] == [[], ["good"], []]
