"""Rows accounting: every input row must come out as exactly one audit row, by the
outputs' own counts and by Beam's metrics. A fault injected into a real audit (a row
lost or doubled somewhere between read and write) must turn `all_rows_accounted` false,
name the counts that disagree, and make `laion-audit run` exit 1 saying so.

And `clean/` is the input minus the removed rows only: rows sent to review stay in it."""
from __future__ import annotations

import glob
import json
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

import pipelines.audit as audit
import transforms.outputs as outputs
from pipelines.audit import run_audit
from pipelines.cli import main
from pipelines.config import parse_config
from tests.conftest import laion_table
from transforms.takedown import TakedownEntry, write_list
from transforms.write import summary_payload

N_ROWS = 12
SOURCE = "rows.parquet"
VICTIM = f"{SOURCE}:5"  # the row the fault drops or doubles
# The four counts, in the order the CLI prints them.
COUNTS = ("rows_in", "rows_audited", "metrics.rows_in", "metrics.rows_audited")


class _Fault(beam.DoFn):
    """Passes records through, except VICTIM, which comes out `copies` times (0: lost).
    Tables of audit rows (the output tail's) likewise: VICTIM's row `copies` times."""

    def __init__(self, copies: int):
        self._copies = copies

    def process(self, record):
        if isinstance(record, pa.Table):
            victim = pc.equal(record.column("row_id"), VICTIM)
            yield pa.concat_tables([record.filter(pc.invert(victim))] + [record.filter(victim)] * self._copies)
            return
        for _ in range(self._copies if record["row_id"] == VICTIM else 1):
            yield dict(record)


class _FaultAfter(beam.PTransform):
    def __init__(self, real: beam.PTransform, copies: int):
        super().__init__()
        self._real, self._copies = real, copies

    def expand(self, pcoll):
        return pcoll | "Real" >> self._real | "Fault" >> beam.ParDo(_Fault(self._copies))


class _FaultBefore(_FaultAfter):
    def expand(self, pcoll):
        return pcoll | "Fault" >> beam.ParDo(_Fault(self._copies)) | "Real" >> self._real


def _inject(monkeypatch, place: str, copies: int) -> None:
    """Wrap one of the stages build_audit (or its output tail) looks up at call time."""
    if place == "read":  # after the read stage counted the row, before `rows` holds it
        real = audit.ReadDataset
        monkeypatch.setattr(audit, "ReadDataset", lambda *a, **k: _FaultAfter(real(*a, **k), copies))
    elif place == "records":  # between read and every writer
        real = audit.FlagCaptions
        monkeypatch.setattr(audit, "FlagCaptions", lambda *a, **k: _FaultAfter(real(*a, **k), copies))
    elif place == "audit_branch":  # only on the way into audit/, after the summary's branch
        real = outputs.WriteAudit  # the output tail's audit/ writer, on tables of audit rows
        monkeypatch.setattr(outputs, "WriteAudit", lambda *a, **k: _FaultBefore(real(*a, **k), copies))
    else:
        raise AssertionError(place)


# Which of the four counts see the fault, by where it is injected.
SEES_FAULT = {
    "read": {"rows_in", "rows_audited", "metrics.rows_audited"},
    "records": {"rows_audited", "metrics.rows_audited"},
    "audit_branch": {"metrics.rows_audited"},
}


def _audit_config(tmp_path: Path) -> tuple[str, str]:
    """A small parquet and a fetch-off config file for it; returns (config, output)."""
    urls = [f"http://img.example/{i}.jpg" for i in range(N_ROWS)]
    dataset = tmp_path / SOURCE
    pq.write_table(laion_table(urls), dataset, row_group_size=5)
    out = tmp_path / "out"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "dataset": {"input": str(dataset)},
        "output": {"path": str(out)},
        "fetch": {"enabled": False},
        "runner": {"name": "FnApiRunner"},
    }))
    return str(config), str(out)


def _summary(out: str) -> dict:
    return json.loads(Path(out, "report", "summary.json").read_text())


@pytest.mark.parametrize("fault, copies", [("drop", 0), ("duplicate", 2)])
@pytest.mark.parametrize("place", ["read", "records", "audit_branch"])
def test_a_lost_or_doubled_row_fails_the_run_and_names_the_counts(tmp_path, monkeypatch, capsys,
                                                                  place, fault, copies):
    config, out = _audit_config(tmp_path)
    _inject(monkeypatch, place, copies)

    assert main(["run", config]) == 1

    change = copies - 1  # -1 for a lost row, +1 for a doubled one
    expected = {name: N_ROWS + (change if name in SEES_FAULT[place] else 0) for name in COUNTS}
    summary = _summary(out)
    assert summary["all_rows_accounted"] is False
    assert summary["count_mismatch"] == expected
    assert (summary["rows_in"], summary["rows_audited"]) == (expected["rows_in"], expected["rows_audited"])
    assert summary["metrics"] == {"rows_in": expected["metrics.rows_in"],
                                  "rows_audited": expected["metrics.rows_audited"]}
    line = "laion-audit: rows not accounted: " + ", ".join(f"{n}={expected[n]}" for n in COUNTS)
    assert line in capsys.readouterr().err.splitlines()


def test_a_correct_run_exits_0_with_no_mismatch(tmp_path, capsys):
    config, out = _audit_config(tmp_path)
    assert main(["run", config]) == 0
    summary = _summary(out)
    assert summary["all_rows_accounted"] is True
    assert summary["count_mismatch"] is None
    assert (summary["rows_in"], summary["rows_audited"]) == (N_ROWS, N_ROWS)
    assert summary["metrics"] == {"rows_in": N_ROWS, "rows_audited": N_ROWS}
    assert "not accounted" not in capsys.readouterr().err


@pytest.mark.parametrize("rows_in, rows_audited, accounted", [(10, 10, True), (10, 9, False), (10, 11, False)])
def test_the_written_summary_flags_any_difference(rows_in, rows_audited, accounted):
    # What the pipeline itself writes, before the launcher adds Beam's metrics.
    payload = summary_payload({"rows_audited": rows_audited}, rows_in, {})
    assert payload["all_rows_accounted"] is accounted


# --------------------------------------------------------------------------- clean/
#
# Rows the policy sends to review stay in the cleaned dataset (a person decides about
# them later); rows a takedown list or a remove_if policy removes are left out.

CLEAN_ROWS = 15
EMAIL_ROWS = {1, 4, 9, 12}      # captions with an e-mail address: review_if "email"
SSN_ROWS = {6}                  # a US social security number: remove_if "national_id"
TAKEDOWN_ROWS = {3, 9, 13}      # URLs on a takedown list (9 also has an e-mail: removal wins)


def _caption(i: int) -> str:
    if i in EMAIL_ROWS:
        return f"holiday photo {i}, prints from ana.silva{i}@example.com"
    if i in SSN_ROWS:
        return f"scan {i} of my card, SSN 123-45-6789"
    return f"a quiet beach at dusk, picture {i}"


def test_clean_keeps_review_rows_and_drops_removed_ones(tmp_path):
    urls = [f"http://img.example/{i}.jpg" for i in range(CLEAN_ROWS)]
    captions = [_caption(i) for i in range(CLEAN_ROWS)]
    table = laion_table(urls, captions)
    dataset = tmp_path / "rows.parquet"
    pq.write_table(table, dataset, row_group_size=4)
    takedown = tmp_path / "takedown.csv"
    write_list([TakedownEntry("requests", f"e{i}", "url", urls[i]) for i in sorted(TAKEDOWN_ROWS)],
               str(takedown))
    config = parse_config({
        "dataset": {"input": str(dataset)},
        "output": {"path": str(tmp_path / "out")},
        "fetch": {"enabled": False},
        "takedown": {"lists": [str(takedown)]},
        "policy": {"remove_if": ["national_id"], "review_if": ["email"]},
        "runner": {"name": "FnApiRunner"},
    })

    run = run_audit(config)
    assert run.summary["all_rows_accounted"] is True

    removed = TAKEDOWN_ROWS | SSN_ROWS
    review = EMAIL_ROWS - removed
    expected_action = {f"rows.parquet:{i}": "remove" if i in removed else "review" if i in review else "keep"
                       for i in range(CLEAN_ROWS)}
    audited = [r for f in glob.glob(f"{config.output.path}/audit/*.parquet") for r in pq.read_table(f).to_pylist()]
    # The premise: the run did send rows to review, and removed others.
    assert {r["row_id"]: r["action"] for r in audited} == expected_action

    clean_files = glob.glob(f"{config.output.path}/clean/*")
    assert [f.rsplit("/", 1)[-1] for f in clean_files] == ["rows.parquet"]
    cleaned = pq.read_table(clean_files[0])
    assert cleaned.schema == table.schema
    expected_rows = [row for i, row in enumerate(table.to_pylist()) if i not in removed]
    assert cleaned.to_pylist() == expected_rows
    # Every review row is still there, by URL.
    assert {urls[i] for i in review} <= set(cleaned.column("URL").to_pylist())
