"""A fetch-off audit on tables of audit rows (transforms/table_audit.py) writes what the
same audit on records writes: the record path is the reference, run on the same inputs
and config (LAION_AUDIT_TABLES=0 forces it), and every output is compared."""
from __future__ import annotations

import csv
import glob
import hashlib
import inspect
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.audit import TABLES_ENV, records_only_reason, run_audit
from pipelines.config import parse_config
from scripts.bench_captions import make_mix
from tests import test_caption_dates, test_caption_identifiers, test_captions
from tests.conftest import laion_table
from transforms.captions import caption_flags, default_scanner
from transforms.policy import compile_policies, decide, decide_table
from transforms.records import AUDIT_SCHEMA
from transforms.takedown import TakedownEntry, write_list


def _valid_ssn(rng: random.Random) -> str:
    # Area 001-899 but not 666, group 01-99, serial 0001-9999 (tests/test_caption_identifiers).
    area = rng.choice([a for a in range(1, 900) if a != 666])
    return f"{area:03d}-{rng.randrange(1, 100):02d}-{rng.randrange(1, 10000):04d}"


def _captions(n: int, seed: int) -> list:
    """A LAION-like mix with personal data, medical context, names, nulls and odd text."""
    rng = random.Random(seed)
    mix = [text for _, text in make_mix(n, seed)]
    odd = [None, "", "   ", "ana.silva@example.com", "write to bob [at] mail [dot] org",
           f"scan of my card, SSN {_valid_ssn(rng)}", "call +44 20 7946 0958 today",
           "Dr. Maria Silva after rhinoplasty before and after", "Narbe nach der OP",
           "x" * 2500 + " post-op scar", "ﬁne ＠home", "Ιατρική φωτογραφία 2020",
           "instagram.com/some.person profile", "born 12 March 1990 (John Smith)"]
    out = []
    for i in range(n):
        out.append(odd[(i // 7) % len(odd)] if i % 7 == 0 else mix[i])
    return out


def _write_inputs(folder: Path) -> tuple[list[str], list[str]]:
    """parquet, csv and jsonl files of the same kind of rows; returns (paths, urls hit)."""
    folder.mkdir()
    n = 300
    urls = [f"http://img{i % 13}.example.com/p/{i}.jpg" for i in range(n)]
    urls[5] = None
    urls[6] = ""
    urls[7] = "not a url"
    urls[8] = "HTTP://IMG1.Example.com:80/p/8.jpg#frag"
    urls[9] = urls[10]  # a duplicate URL
    captions = _captions(n, 1)
    table = laion_table(urls, captions)
    table = pa.concat_tables([table, table.slice(20, 5)])  # duplicate rows
    pq.write_table(table, folder / "a.parquet", row_group_size=64)
    with open(folder / "b.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["URL", "TEXT", "WIDTH"])
        for i, caption in enumerate(_captions(120, 2)):
            writer.writerow([f"https://cdn.example.org/{i}.png" if i % 11 else " ", caption or "", 10])
        writer.writerow(["https://cdn.example.org/short.png"])  # a row shorter than the header
    with open(folder / "c.jsonl", "w", encoding="utf-8") as handle:
        for i, caption in enumerate(_captions(90, 3)):
            url = [f"https://x.example.net/{i}.webp", None, 12345, "ftp://x.example.net/a b"][i % 4] \
                if i % 5 == 0 else f"https://x.example.net/{i}.webp"
            handle.write(json.dumps({"URL": url, "TEXT": caption if i % 9 else 42}) + "\n")
    hits = [urls[i] for i in (1, 2, 10, 40, 200)] + ["https://cdn.example.org/3.png"]
    return [str(folder / name) for name in ("a.parquet", "b.csv", "c.jsonl")], hits


def _audit(tmp_path: Path, monkeypatch, tables: bool, inputs: list[str], listing: str, name: str):
    monkeypatch.setenv(TABLES_ENV, "1" if tables else "0")
    config = parse_config({
        "dataset": {"input": inputs},
        "output": {"path": str(tmp_path / name)},
        "fetch": {"enabled": False},
        "takedown": {"lists": [listing]},
        "policy": {"remove_if": ["national_id", "payment_card"],
                   "review_if": ["email or phone", "name_with_medical_term", 'status == "invalid_url"']},
        "runner": {"name": "FnApiRunner", "local_group_rows": 250},
    })
    assert (records_only_reason(config) is None) is tables
    return run_audit(config).summary, tmp_path / name


def _rows(out: Path, folder: str, sort: list[str]) -> list[dict]:
    files = sorted(glob.glob(str(out / folder / "*.parquet")))
    if not files:
        return []
    table = pa.concat_tables(pq.read_table(f) for f in files)
    if "audited_at" in table.column_names:
        table = table.drop_columns(["audited_at"])
    return table.sort_by([(c, "ascending") for c in sort]).to_pylist()


def test_a_fetch_off_audit_on_tables_writes_what_the_record_path_writes(tmp_path, monkeypatch):
    inputs, hit_urls = _write_inputs(tmp_path / "data")
    listing = str(tmp_path / "takedown.csv")
    entries = [TakedownEntry("requests", f"u{i}", "url", u) for i, u in enumerate(hit_urls[:3])]
    entries += [TakedownEntry("other", f"s{i}", "url_sha256", hashlib.sha256(u.encode()).hexdigest())
                for i, u in enumerate(hit_urls[3:])]
    write_list(entries, listing)

    summary_t, out_t = _audit(tmp_path, monkeypatch, True, inputs, listing, "tables")
    summary_r, out_r = _audit(tmp_path, monkeypatch, False, inputs, listing, "records")

    audit_t, audit_r = _rows(out_t, "audit", ["row_id"]), _rows(out_r, "audit", ["row_id"])
    # Every input row yields one audit row: counted here from the files themselves.
    rows_in = pq.ParquetFile(inputs[0]).metadata.num_rows + 121 + 90
    assert len(audit_t) == len(audit_r) == rows_in
    assert [r["row_id"] for r in audit_t] == [r["row_id"] for r in audit_r]
    for table_row, record_row in zip(audit_t, audit_r):
        assert table_row == record_row, table_row["row_id"]
    # The premise: the inputs reach every branch a fetch-off audit has.
    actions = {r["action"] for r in audit_r}
    assert actions == {"keep", "review", "remove"}
    assert {r["status"] for r in audit_r} == {"not_fetched", "invalid_url"}
    assert {"email", "national_id", "medical_term"} <= {f for r in audit_r for f in r["caption_flags"]}
    assert {m["kind"] for r in audit_r for m in r["matches"]} == {"url", "url_sha256"}
    assert {e for r in audit_r for e in (r["error"],) if e} >= {"empty URL", "URL is a int"}

    for folder, key in (("review", ["row_id"]), ("removals", ["row_id", "list_id", "entry_id", "reason"]),
                        ("published", ["url_sha256", "row_key"])):
        assert _rows(out_t, folder, key) == _rows(out_r, folder, key), folder
    assert _rows(out_r, "removals", ["row_id"])  # some were written
    for name in ("a.parquet", "b.csv", "c.jsonl"):
        assert Path(out_t, "clean", name).read_bytes() == Path(out_r, "clean", name).read_bytes()

    for key in ("rows_in", "rows_audited", "status", "action", "caption_flags", "matched_lists", "labels",
                "all_rows_accounted", "metrics", "count_mismatch"):
        assert summary_t[key] == summary_r[key], key
    assert summary_t["all_rows_accounted"] is True and summary_t["rows_in"] == rows_in
    assert summary_t["groups"] > 1  # local_group_rows as set: several groups


def test_an_id_column_names_rows_alike_on_both_paths(tmp_path, monkeypatch):
    folder = tmp_path / "data"
    folder.mkdir()
    urls = [f"http://h.example/{i}.jpg" for i in range(40)]
    table = laion_table(urls, _captions(40, 4))
    keys = pa.array([None if i % 9 == 4 else 5000 - i for i in range(40)], pa.int64())
    table = table.set_column(0, "SAMPLE_ID", keys)
    pq.write_table(table, folder / "k.parquet", row_group_size=16)
    got = {}
    for tables in (True, False):
        monkeypatch.setenv(TABLES_ENV, "1" if tables else "0")
        config = parse_config({"dataset": {"input": [str(folder / "k.parquet")], "id_col": "SAMPLE_ID"},
                               "output": {"path": str(tmp_path / f"out{tables}")}, "fetch": {"enabled": False},
                               "runner": {"name": "FnApiRunner"}})
        run_audit(config)
        got[tables] = _rows(tmp_path / f"out{tables}", "audit", ["row_id"])
    assert got[True] == got[False]
    assert {r["row_key"] for r in got[True]} >= {"5000", None}


@pytest.mark.parametrize("config, reason", [
    ({"fetch": {"enabled": True}}, "fetch.enabled"),
    ({"embedding": {"enabled": True}}, "embedding"),
    ({"dataset": {"previous_audit": ["old"]}}, "dataset.previous_audit"),
])
def test_stages_that_need_records_keep_the_record_path(tmp_path, config, reason, monkeypatch):
    monkeypatch.delenv(TABLES_ENV, raising=False)
    plain = {"dataset": {"input": ["x.parquet"]}, "output": {"path": str(tmp_path)}, "fetch": {"enabled": False}}
    assert records_only_reason(parse_config(plain, check_files=False)) is None
    with_stage = {section: {**plain.get(section, {}), **config.get(section, {})} for section in {*plain, *config}}
    assert records_only_reason(parse_config(with_stage, check_files=False)) == reason


# --------------------------------------------------------------------------- caption prefilter

def _parametrized_texts(*modules) -> list[str]:
    texts = []
    for module in modules:
        for _, func in inspect.getmembers(module, inspect.isfunction):
            for mark in getattr(func, "pytestmark", []):
                if mark.name == "parametrize" and len(mark.args) > 1:
                    for value in mark.args[1]:
                        values = value if isinstance(value, (tuple, list)) else (value,)
                        texts += [v for v in values if isinstance(v, str)]
    return texts


def _caption_corpus() -> list[str]:
    texts = _parametrized_texts(test_captions, test_caption_identifiers, test_caption_dates)
    texts += [t for _, t in make_mix(20_000, 7)] + [t for t in _captions(500, 8) if t]
    texts += ["NAME [AT] HOST [DOT] COM", "post\x0bop scar", "post\x1cop scar", "chest x\u2011ray",
              "ana＠example.com", "ｐｏｓｔ-ｏｐ scar", "Straße 12", "Łódź 1990", "çicatriz pós-operatório",
              "Pós-Operatório da Maria", "a" * 1999 + " cancer", "b" * 2100 + "cancer", "RHINOPLASTY Before And After"]
    return texts


def test_the_caption_prefilter_passes_every_caption_that_has_a_flag():
    texts = _caption_corpus()
    assert len(texts) > 20_000
    passed = default_scanner().may_flag(pa.array(texts, pa.string()))
    flagged = [t for t in texts if caption_flags(t)]
    missed = [t for t, ok in zip(texts, passed.tolist()) if not ok and caption_flags(t)]
    assert missed == []
    assert len(flagged) > 1000
    assert passed.mean() < 0.6  # it does skip ordinary captions (a premise of its use)


def test_caption_flags_of_a_column_are_each_captions_flags():
    from transforms.captions.stage import caption_flags_array

    texts = _caption_corpus() + _captions(300, 9) + ["ana.silva@example.com"] * 3
    flags = caption_flags_array(pa.array(texts, pa.string())).to_pylist()
    assert flags == [caption_flags(t) for t in texts]
    # The premise: medical terms the gates answered for, and ones they left to `flags`.
    known = default_scanner().gates(pa.array(texts, pa.string()))[1]
    medical = ["medical_term" in f for f in flags]
    assert any(m and k == 1 for m, k in zip(medical, known.tolist()))
    assert any(m and k == -1 for m, k in zip(medical, known.tolist()))


# --------------------------------------------------------------------------- decide on tables

NAMES = ("email", "phone", "medical_term", "nudity", "child", "pdq", "url")


def _random_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        matches = []
        if rng.random() < 0.1:
            matches = [{"list_id": rng.choice(["a", "b"]), "entry_id": f"e{j}",
                        "kind": rng.choice(["pdq", "url"]), "distance": 0.0, "reason": None}
                       for j in range(rng.randrange(1, 3))]
        scores = [("nudity", rng.random()), ("child", rng.random())] if rng.random() < 0.2 else None
        rows.append({
            "row_id": str(i),
            "status": rng.choice(["ok", "not_fetched", "invalid_url", None]),
            "labels": sorted(rng.sample(["nudity", "child"], rng.randrange(3))),
            "caption_flags": sorted(rng.sample(["email", "phone", "medical_term"], rng.randrange(4))),
            "matches": matches, "scores": scores,
        })
    return rows


def test_decide_table_makes_each_rows_decision():
    rows = _random_rows(3000, 3)
    remove = compile_policies(["child and nudity", "match.pdq", "scores.nudity > 0.9"], NAMES)
    review = compile_policies(["email or phone", "not medical_term and status == \"invalid_url\"",
                               'status != "ok" and 0.5 < scores.child'], NAMES)
    schema = pa.schema([AUDIT_SCHEMA.field(n) for n in ("row_id", "status", "labels", "caption_flags",
                                                         "matches", "scores")])
    table = pa.Table.from_pylist(rows, schema=schema)
    actions, reasons = decide_table(table, remove, review)
    expected = [decide(r, remove, review) for r in rows]
    assert list(zip(actions.to_pylist(), reasons.to_pylist())) == [(a, list(r)) for a, r in expected]
    assert {a for a, _ in expected} == {"keep", "review", "remove"}
