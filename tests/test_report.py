"""report/index.html and the numbers behind it (summary.json's `report` object): counted
column-wise as a plain per-row count says, summed over parts, drawn from a real audit,
self-contained and holding nothing of a removed row."""
from __future__ import annotations

import collections
import datetime as dt
import hashlib
import html
import json
import re
import urllib.parse
from pathlib import Path

import pyarrow as pa
import yaml

from pipelines.cli import main as cli_main
from pipelines.report import CHARTS, REMATCH_THROUGHPUT, build_html, finish_report, throughput_series
from tests.report_audit import (  # noqa: F401 - report_audit is the fixture
    NAMED_HOST,
    REMOVED_HOST,
    UNNAMED_HOST,
    read_rows,
    report_audit,
    report_html,
)
from transforms.categories import DEFAULT_CATEGORIES
from transforms.records import AUDIT_SCHEMA, audit_row, new_record
from transforms.report_counts import (
    HOSTS_SHOWN,
    MIN_HOST_FAILURES,
    SCORE_BINS,
    ReportCountsFn,
    add_tallies,
    coarsen_times,
    report_counts,
    shown_hosts,
    top_hosts,
)
from transforms.write import sum_summaries

REPO = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ a plain per-row count


def plain_report(rows: list[dict]) -> dict:
    """The report's numbers counted row by row, the obvious way (the reference)."""
    failures: dict = collections.defaultdict(collections.Counter)
    reasons: dict = collections.defaultdict(collections.Counter)
    scored: collections.Counter = collections.Counter()
    histograms: dict = {}
    matches: dict = collections.defaultdict(collections.Counter)
    times: collections.Counter = collections.Counter()
    for row in rows:
        status = row["status"] or "internal_error"
        if status not in ("ok", "reused", "not_fetched") and row["action"] != "remove":
            host = urllib.parse.urlsplit(row["url"]).hostname if row["url"] and "://" in row["url"] else None
            failures[host or "(no host)"][status] += 1
        if row["action"] is not None:
            for reason in row["reasons"] or ["(none)"]:
                reasons[row["action"]][reason] += 1
        for name, score in dict(row["scores"] or []).items():
            scored[name] += 1
            bins = histograms.setdefault(name, [0] * SCORE_BINS)
            bins[min(int(score * SCORE_BINS), SCORE_BINS - 1)] += 1
        for match in row["matches"] or []:
            matches[match["list_id"]][match["kind"]] += 1
        if row["audited_at"] is not None and status != "reused":
            times[row["audited_at"].strftime("%Y-%m-%dT%H:%M:%S")] += 1
    as_dicts = lambda d: {k: dict(v) for k, v in d.items()}  # noqa: E731
    return {"failures_by_host": as_dicts(failures), "reasons_by_action": as_dicts(reasons), "scored": dict(scored),
            "score_histograms": histograms, "matches_by_list": as_dicts(matches), "audited_per_second": dict(times)}


def plain_shown(failures: dict) -> dict:
    """The hosts a run's summary names, the obvious way: those with MIN_HOST_FAILURES
    failed rows or more, the HOSTS_SHOWN most failing of them; the rest summed."""
    totals = {host: sum(n.values()) for host, n in failures.items()}
    named = sorted((h for h in failures if totals[h] >= MIN_HOST_FAILURES), key=lambda h: (-totals[h], h))
    named = named[:HOSTS_SHOWN]
    shown = {host: failures[host] for host in named}
    other: collections.Counter = collections.Counter()
    for host, by_status in failures.items():
        if host not in shown:
            other.update(by_status)
    if other:
        shown["(other hosts)"] = dict(other)
    return shown


def _rows() -> list[dict]:
    start = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
    statuses = ["ok", "timeout", "http_error", "ok", "reused", "connection_error", "invalid_url", None, "not_fetched"]
    rows = []
    for i in range(27):
        url = [f"http://Img{i % 3}.Example.org:8080/a/{i}.jpg", f"https://user@cdn{i % 2}.example.net/{i}",
               "not a url", None, "http://[::1]:81/x"][i % 5]
        row = audit_row(new_record(f"r{i}", url, f"caption {i}"))
        row["status"] = statuses[i % len(statuses)]
        row["action"] = [None, "keep", "review", "remove"][i % 4]
        row["reasons"] = [[], ["email"], ["takedown:a", "nudity"], [], ["phone"]][i % 5]
        row["scores"] = [] if i % 6 == 3 else [("nudity", (i * 0.037) % 1.0), ("face", 1.0 if i % 2 else 0.0)]
        row["matches"] = [{"list_id": ["a", "b"][i % 2], "entry_id": f"e{i}", "kind": k, "distance": 0.0,
                           "reason": None} for k in (["md5", "pdq"][: i % 3])]
        row["audited_at"] = start + dt.timedelta(seconds=i // 4)
        rows.append(row)
    return rows


def test_report_counts_equal_a_plain_per_row_count():
    rows = _rows()
    expected = plain_report(rows)
    # The rows hold what each count must get right.
    assert len(expected["failures_by_host"]) >= 4 and "(no host)" in expected["failures_by_host"]
    expected["failures_by_host"]["[::1]"] = expected["failures_by_host"].pop("::1")  # as the report spells it
    assert expected["reasons_by_action"]["keep"]["(none)"] > 0 and expected["matches_by_list"]["b"]["pdq"] > 0
    # Failed rows decided remove are among the rows, and not counted.
    assert any(r["action"] == "remove" and r["status"] not in ("ok", "reused", "not_fetched") for r in rows)
    table = _table(rows)
    assert report_counts(table) == expected
    # Beam's partial accumulators: any split of the table adds up to the whole.
    fn = ReportCountsFn()
    parts = [fn.add_input(fn.create_accumulator(), table.slice(a, b - a)) for a, b in ((0, 5), (5, 6), (6, 27))]
    assert fn.extract_output(fn.merge_accumulators(parts)) == expected


def _table(rows):
    return pa.Table.from_pylist(rows, schema=AUDIT_SCHEMA)


def test_group_summaries_sum_to_the_whole_runs_report():
    rows = _rows()
    whole = plain_report(rows)
    groups = [{"rows_in": 9, "rows_audited": 9, "report": report_counts(_table(rows[i:i + 9]))} for i in (0, 9, 18)]
    summed = sum_summaries(groups)["report"]
    whole["failures_by_host"]["[::1]"] = whole["failures_by_host"].pop("::1")
    whole["failures_by_host"] = plain_shown(whole["failures_by_host"])
    assert summed == whole


def test_only_hosts_with_enough_failed_rows_are_named():
    at_minimum = {"timeout": MIN_HOST_FAILURES - 1, "http_error": 1}
    failures = {"big.example": {"timeout": 40}, "edge.example": at_minimum,
                "under.example": {"timeout": MIN_HOST_FAILURES - 1}, "one.example": {"http_error": 1}}
    assert shown_hosts(failures) == {
        "big.example": {"timeout": 40}, "edge.example": at_minimum,
        "(other hosts)": {"timeout": MIN_HOST_FAILURES - 1, "http_error": 1},
    }
    assert shown_hosts({"one.example": {"timeout": 1}}) == {"(other hosts)": {"timeout": 1}}
    many = {f"h{i:02d}.example": {"timeout": 100 + i} for i in range(HOSTS_SHOWN + 5)}
    shown = shown_hosts(many)
    assert list(shown)[:-1] == [f"h{i:02d}.example" for i in range(HOSTS_SHOWN + 4, 4, -1)]
    assert shown["(other hosts)"] == {"timeout": sum(100 + i for i in range(5))}
    assert shown_hosts(shown) == shown  # a summary's own hosts, shown again, stay as they are


def test_add_tallies_adds_numbers_lists_and_nested_dicts():
    total = add_tallies({"a": {"x": 1}, "h": [1, 2]}, {"a": {"x": 2, "y": 5}, "h": [10, 20], "n": 3})
    assert total == {"a": {"x": 3, "y": 5}, "h": [11, 22], "n": 3}


def test_top_hosts_keeps_the_most_failing_hosts():
    failures = {f"h{i}.example": {"timeout": i, "http_error": 1} for i in range(50)}
    kept = top_hosts(failures, HOSTS_SHOWN)
    assert list(kept) == [f"h{i}.example" for i in range(49, 49 - HOSTS_SHOWN, -1)]


def test_throughput_is_coarsened_to_minutes_then_hours():
    seconds = {f"2026-03-01T12:{m:02d}:{s:02d}": 1 for m in range(60) for s in range(60)}
    seconds["2026-03-01T13:00:00"] = 5
    minutes = coarsen_times(seconds, points=100)
    assert len(minutes) == 61 and minutes["2026-03-01T12:07"] == 60 and minutes["2026-03-01T13:00"] == 5
    assert coarsen_times(seconds, points=10) == {"2026-03-01T12": 3600, "2026-03-01T13": 5}
    # Keys of mixed precision (parts coarsened apart) are cut to the coarsest.
    assert coarsen_times({"2026-03-01T12:00": 4, "2026-03-01T12:00:59": 1}) == {"2026-03-01T12:00": 5}


def test_throughput_chart_fills_buckets_without_rows_and_divides_by_their_length():
    xs, ys = throughput_series({"2026-03-01T12:00": 120, "2026-03-01T12:03": 60})
    assert xs == ["2026-03-01T12:00", "2026-03-01T12:01", "2026-03-01T12:02", "2026-03-01T12:03"]
    assert ys == [2.0, 0.0, 0.0, 1.0]
    assert throughput_series({"2026-03-01T12:00:07": 3}) == (["2026-03-01T12:00:07"], [3.0])


# ------------------------------------------------------------------ a real audit's report


def _figure_data(page: str) -> dict[str, list]:
    """Each chart's traces, as plotly.js is given them in the page."""
    found = {}
    for name, _ in CHARTS:
        match = re.search(r'Plotly\.newPlot\(\s*"chart-' + name + r'",\s*(\[.*?\]),\s*\{', page, re.S)
        assert match, f"chart {name} missing"
        found[name] = json.loads(match.group(1))
    return found


def test_summary_holds_the_reports_numbers_of_the_audit_rows(report_audit):
    rows = read_rows(report_audit["output"])
    summary = json.loads(Path(report_audit["output"], "report", "summary.json").read_text())
    expected = plain_report(rows)
    # What the audit was built to hold, so the charts have something to draw.
    assert set(expected["failures_by_host"]) == {NAMED_HOST, UNNAMED_HOST, "(no host)", "files.example"}
    expected["failures_by_host"] = plain_shown(expected["failures_by_host"])
    assert summary["report"] == expected
    assert set(expected["failures_by_host"]) == {NAMED_HOST, "(other hosts)"}
    assert expected["matches_by_list"] == {"victims": {"md5": 2, "sha256": 2}, "urls": {"url": 2}}
    assert set(expected["reasons_by_action"]) == {"keep", "review", "remove"}
    categories = yaml.safe_load(DEFAULT_CATEGORIES.read_text())["categories"]
    assert summary["score_thresholds"] == {name: body["threshold"] for name, body in categories.items()}
    assert set(expected["score_histograms"]) == set(categories)


def test_report_is_self_contained_and_draws_summary_numbers(report_audit):
    page = report_html(report_audit)
    summary = json.loads(Path(report_audit["output"], "report", "summary.json").read_text())
    assert len(page.encode()) < 5_000_000  # kept under 5 MB (plotly.js is 4.8 of it)
    # plotly.js is inline, once; nothing is loaded from elsewhere.
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, re.S)
    assert not [attrs for attrs, _ in scripts if "src" in attrs]
    library = max((body for _, body in scripts), key=len)
    assert "plotly.js v" in library[:200]
    outside = page.replace(library, "")
    assert not re.search(r"https?://", outside), re.findall(r"https?://\S{0,40}", outside)
    assert "<link" not in outside and "@import" not in outside and "url(" not in outside
    figures = _figure_data(page)
    status = figures["status"][0]
    assert dict(zip(status["x"], status["y"])) == summary["status"]
    matches = {(trace["name"], x): y for trace in figures["matches"] for x, y in zip(trace["x"], trace["y"]) if y}
    assert matches == {(kind, lst): n for lst, kinds in summary["report"]["matches_by_list"].items()
                       for kind, n in kinds.items()}


def test_report_holds_nothing_of_a_removed_row(report_audit):
    page = report_html(report_audit)
    rows = read_rows(report_audit["output"])
    removed = [r for r in rows if r["action"] == "remove"]
    assert {r["url"] for r in removed} == set(report_audit["secret_urls"])
    # One removed row failed to fetch, alone on its host: that host is named nowhere.
    assert [r["status"] for r in removed if REMOVED_HOST in r["url"]] == ["http_error"]
    secrets = [*report_audit["secret_urls"], *report_audit["secret_captions"], *report_audit["secret_values"],
               REMOVED_HOST]
    for row in removed:
        secrets += [row["url_sha256"], urllib.parse.urlsplit(row["url"]).path, row["caption"].split()[0]]
        secrets += [row[key] for key in ("content_md5", "content_sha256", "phash", "pdq") if row["status"] == "ok"]
    for secret in secrets:
        assert secret and secret not in page, secret
    # A kept row's host with too few failures is not named either; one with enough is.
    assert UNNAMED_HOST not in page and NAMED_HOST in page
    assert f"at least {MIN_HOST_FAILURES} of its rows failed" in page
    outside = page.replace(_library(page), "")  # plotly.js itself holds those words
    assert "<img" not in outside and "data:image" not in outside


def _library(page: str) -> str:
    """The inline plotly.js (the page's one large script)."""
    return max(re.findall(r"<script[^>]*>(.*?)</script>", page, re.S), key=len)


def test_report_shows_the_manifest(report_audit):
    page = report_html(report_audit)
    manifest = json.loads(Path(report_audit["output"], "report", "manifest.json").read_text())
    lists_sha = hashlib.sha256(Path(report_audit["lists"]).read_bytes()).hexdigest()
    for shown in (lists_sha, Path(report_audit["lists"]).name, Path(report_audit["dataset"]).name,
                  manifest["config_sha256"], manifest["laion_audit_version"], "ViT-B-32/random-init",
                  "random weights", "email"):
        assert shown in page, shown
    # File names only: the folders they are in (a person's name, often) are not shown.
    for folder in {str(Path(report_audit["lists"]).resolve().parent), str(Path(report_audit["dataset"]).parent)}:
        assert folder not in page, folder


def test_report_command_writes_the_same_page_again(report_audit, tmp_path):
    page = Path(report_audit["output"], "report", "index.html")
    before = page.read_bytes()
    page.unlink()
    assert cli_main(["report", report_audit["output"], "-q"]) == 0
    assert page.read_bytes() == before


def test_report_of_a_run_that_scored_and_matched_nothing_still_draws_every_chart():
    summary = {"rows_in": 2, "rows_audited": 2, "all_rows_accounted": True, "status": {"not_fetched": 2},
               "action": {"keep": 2}, "labels": {}, "caption_flags": {}, "report": {}}
    page = build_html(summary, None)
    figures = _figure_data(page)
    assert figures["status"][0]["y"] == [2]
    assert "No run manifest" in page and "no takedown match" in page


def _summary_with_times() -> dict:
    return {"rows_in": 3, "rows_audited": 3, "all_rows_accounted": True, "status": {"ok": 3},
            "action": {"keep": 3}, "report": {"audited_per_second": {"2026-03-01T12:00:00": 2,
                                                                     "2026-03-01T12:00:02": 1}}}


def test_a_rematch_draws_no_throughput_of_its_own():
    audit = _figure_data(build_html(_summary_with_times(), {"kind": "audit"}))
    assert audit["throughput"][0]["y"] == [2.0, 0.0, 1.0]
    page = build_html(_summary_with_times(), {"kind": "rematch", "rematch_of": "/somewhere/audit"})
    assert _figure_data(page)["throughput"] == []  # the audit's audited_at is not the rematch's rate
    assert html.escape(REMATCH_THROUGHPUT) in page and "not measured by a rematch" in page


def test_a_report_that_cannot_be_written_leaves_the_run_and_its_summary(tmp_path, caplog):
    blocked = tmp_path / "report" / "index.html"
    blocked.mkdir(parents=True)  # a folder where the page goes: writing it fails
    with caplog.at_level("WARNING", logger="pipelines.report"):
        summary = finish_report(str(tmp_path), _summary_with_times(), {"nudity": 0.5})
    assert summary["score_thresholds"] == {"nudity": 0.5} and summary["rows_audited"] == 3
    assert json.loads((tmp_path / "report" / "summary.json").read_text()) == summary
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "index.html not written" in warning and f"laion-audit report {tmp_path}" in warning
