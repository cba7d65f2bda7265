"""Adding a kind is adding one class: toy kinds registered the documented way go through
the list writer, the loader, Thresholds and TakedownIndex with no other change; and the
built-in kinds say the same as the index they serve."""
from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pytest

from transforms.takedown import (
    KINDS,
    HammingKind,
    HexExactKind,
    RowValues,
    TakedownEntry,
    TakedownIndex,
    TakedownListError,
    Thresholds,
    clip_to_value,
    kind_of,
    load_list,
    register_kind,
    unregister_kind,
    write_list,
)


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class CaptionSha1Kind(HexExactKind):
    """Toy exact kind: SHA-1 of the row's caption (the value in a list is the digest)."""

    name = "caption_sha1"
    digits = 40
    columns = ("caption",)

    def record_value(self, record):
        caption = record.get("caption")
        return sha1(caption) if isinstance(caption, str) and caption else None

    def rows(self, columns, n):
        captions = columns.get("caption")
        if captions is None:
            return RowValues(None, ())
        return RowValues(None, [sha1(c) if isinstance(c, str) and c else None for c in captions])


class DhashKind(HammingKind):
    """Toy Hamming kind: a 64-bit difference hash in a ``dhash`` column."""

    name = "dhash"
    digits = 16
    columns = ("dhash",)
    default_threshold = 5


@pytest.fixture
def toy_kinds():
    registered = [register_kind(CaptionSha1Kind()), register_kind(DhashKind)]
    try:
        yield registered
    finally:
        for kind in registered:
            unregister_kind(kind.name)


def test_a_toy_exact_kind_is_written_loaded_and_matched(toy_kinds, tmp_path):
    entries = [TakedownEntry("captions", "c1", "caption_sha1", sha1("Jane Doe, post-op day 3"), reason="name")]
    for ext in ("csv", "parquet", "jsonl"):
        path = str(tmp_path / f"toy.{ext}")
        write_list(entries, path)
        assert load_list(path) == entries
    index = TakedownIndex(load_list(str(tmp_path / "toy.csv")))
    assert index.kinds == ("caption_sha1",) and "caption" in index.columns
    rows = [{"row_id": "1", "caption": "Jane Doe, post-op day 3"}, {"row_id": "2", "caption": "a cat"},
            {"row_id": "3", "caption": None}, {"row_id": "4"}]
    results = index.match_batch(rows)
    assert results == [[{"list_id": "captions", "entry_id": "c1", "kind": "caption_sha1", "distance": 0.0,
                         "reason": "name"}], [], [], []]
    # Its own rows() reads lists: an Arrow column reaches it as one (Kind.arrow_rows).
    assert not CaptionSha1Kind.arrow_rows and DhashKind.arrow_rows
    by_arrow = index.match_columns({"caption": pa.array([r.get("caption") for r in rows])})
    assert by_arrow == results
    assert kind_of("caption_sha1").record_value(rows[0]) == entries[0].value


def test_a_toy_hamming_kind_gets_a_threshold_and_is_searched(toy_kinds, tmp_path):
    assert Thresholds()["dhash"] == 5.0
    assert Thresholds(dhash=2).replace(pdq=19).to_dict() == {"pdq": 19.0, "phash": 8.0, "clip": 0.9, "dhash": 2.0}
    value = "0f" * 8
    near = f"{int(value, 16) ^ 0b11111:016x}"  # 5 bits away
    path = str(tmp_path / "dhash.parquet")
    write_list([TakedownEntry("toy", "d1", "dhash", value), TakedownEntry("toy", "d2", "dhash", "f0" * 8, 1.0)],
               path)
    for strategy in ("flat", "mih"):
        index = TakedownIndex(load_list(path), hamming_strategy=strategy)
        assert index.strategy("dhash") == strategy
        got = index.match_columns({"dhash": [near, value, "f0" * 8, None, "zz"]})
        assert [[(m["entry_id"], m["distance"]) for m in r] for r in got] == [
            [("d1", 5.0)], [("d1", 0.0)], [("d2", 0.0)], [], []]
        strict = TakedownIndex(load_list(path), thresholds=Thresholds(dhash=4), hamming_strategy=strategy)
        assert strict.match_columns({"dhash": [near]}) == [[]]
    bad = tmp_path / "bad.csv"
    bad.write_text(f"list_id,entry_id,kind,value,max_distance\ntoy,d1,dhash,{value},65\n")
    with pytest.raises(TakedownListError, match=r"max_distance for dhash must be 0\.\.64 bits"):
        load_list(str(bad))


def test_registration_is_undone_and_names_are_unique(tmp_path):
    register_kind(DhashKind)
    try:
        with pytest.raises(ValueError, match="registered already"):
            register_kind(DhashKind())
    finally:
        unregister_kind("dhash")
    assert "dhash" not in KINDS and "dhash" not in Thresholds()
    path = tmp_path / "list.csv"
    path.write_text(f"list_id,entry_id,kind,value\ntoy,d1,dhash,{'0' * 16}\n")
    with pytest.raises(TakedownListError, match="unknown kind 'dhash'"):
        load_list(str(path))


# ------------------------------------------------------- kinds agree with their index


def test_a_low_quality_pdq_row_is_left_out_alike_by_the_kind_and_by_matching():
    pdq = kind_of("pdq")
    index = TakedownIndex([TakedownEntry("l", "e", "pdq", "f" * 64)])
    rows = [{"pdq": "f" * 64, "pdq_quality": q} for q in (100, 50, 49, None)]
    by_index = [bool(m) for m in index.match_batch(rows)]
    by_kind = [pdq.record_value(r) is not None for r in rows]
    assert by_index == by_kind == [True, True, False, True]
    assert [bool(q) for q in pdq.low_quality([100, 50, 49, None])] == [False, False, True, False]
    assert TakedownEntry("l", "e", "pdq", "f" * 64, quality=49).low_quality
    assert not TakedownEntry("l", "e", "phash", "f" * 16, quality=49).low_quality


def test_clip_distance_of_the_kind_is_what_the_index_reports():
    clip = kind_of("clip")
    entry = clip_to_value([1.0, 0.0, 0.0, 0.0])
    rows = [np.array([0.95, 0.3, 0.1, 0.0]), np.array([0.9, 0.1, 0.4, 0.2])]
    index = TakedownIndex([TakedownEntry("l", "e", "clip", entry, max_distance=0.8)])
    reported = [r[0]["distance"] for r in index.match_columns({"_embedding": rows})]
    assert reported == pytest.approx([clip.distance(entry, r) for r in rows], abs=1e-6)
    assert all(clip.is_match(d, 0.8) for d in reported)
    assert all(d == pytest.approx(1 - clip.cosine(entry, r), abs=1e-6) for d, r in zip(reported, rows))


def test_every_registered_kind_names_its_columns_and_builds_its_index():
    for name, kind in KINDS.items():
        assert kind.columns and all(isinstance(c, str) for c in kind.columns), name
        assert kind.exact == (kind.default_threshold is None), name
    assert [k for k, kind in KINDS.items() if kind.needs_embedding] == ["clip"]
