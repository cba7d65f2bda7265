"""report/index.html: a run's summary as a page people read, safe to share.

    report/summary.json + report/manifest.json -> report/index.html

One self-contained file: plotly's charts with plotly.js inline (no CDN, no font or
script from elsewhere), so it opens offline. Every number in it comes from summary.json
(its counts and its `report` object, transforms/report_counts.py) or from the manifest; it
holds no image, no URL or caption of any row and no hash-list value. Written at the end
of `run` and `rematch`, and by `laion-audit report OUTPUT_DIR`.
"""
from __future__ import annotations

import html
import json
import logging
import posixpath

import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from pipelines.manifest import ManifestError, read_manifest
from transforms.report_counts import HOSTS_SHOWN, MIN_HOST_FAILURES, OTHER_HOSTS, SCORE_BINS
from transforms.write import output_dir, read_json, summary_path

log = logging.getLogger(__name__)

# Charts in page order: (div id, title). The browser test walks the same list.
CHARTS = (
    ("status", "Rows by status"),
    ("failures", f"Failed fetches by host (top {HOSTS_SHOWN} of those with {MIN_HOST_FAILURES}+ failed rows)"),
    ("actions", "Actions and their reasons"),
    ("labels", "Labels per category"),
    ("caption_flags", "Caption flags"),
    ("matches", "Takedown matches by list and kind"),
    ("scores", "Score distributions per category (threshold marked)"),
    ("throughput", "Throughput over the run (rows per second, from audited_at)"),
)
# What a chart's title leaves out, said under it.
NOTES = {
    "failures": (f"A host is named only when at least {MIN_HOST_FAILURES} of its rows failed; every other host's "
                 f"failures are summed under \"{OTHER_HOSTS}\". Rows decided remove are not counted here: the host "
                 "of a URL taken down is part of what was taken down."),
}
REMATCH_THROUGHPUT = ("A rematch fetches nothing: its rows keep the audit's audited_at, so its rate is the "
                      "audit's. See the audited run's own report.")
# Drawn offline: no link out, no MathJax, no remote topojson.
PLOTLY_CONFIG = {"displaylogo": False, "responsive": True, "typesetMath": False,
                 "showSendToCloud": False, "topojsonURL": ""}


def report_path(output_path: str) -> str:
    return output_dir(output_dir(output_path, "report"), "index.html")


def category_thresholds(config) -> dict[str, float]:
    """Each category's label threshold, as the audit's classify stage reads them ({} when
    the run scores nothing)."""
    if not (config.embedding.enabled or config.embedding.precomputed):
        return {}
    from transforms.categories import load_categories

    return {spec.name: spec.threshold for spec in load_categories(config.classify.categories)}


def audit_thresholds(audit_dir: str) -> dict[str, float]:
    """The score thresholds an earlier run recorded in its summary.json ({} if none)."""
    try:
        return dict(read_json(summary_path(audit_dir)).get("score_thresholds") or {})
    except (OSError, ValueError):
        return {}


def finish_report(output_path: str, summary: dict, thresholds: dict[str, float]) -> dict:
    """The end of a run: the score thresholds recorded in its summary.json
    (`score_thresholds`) and report/index.html written. Returns the summary as written."""
    from transforms.write import write_json

    summary = {**summary, "score_thresholds": dict(sorted(thresholds.items()))}
    write_json(summary_path(output_path), summary)
    try:
        write_report(output_path, summary)
    except Exception as err:  # noqa: BLE001 - the run itself is done and counted: its exit code stands
        log.warning("report/index.html not written (%s: %s); write it again with `laion-audit report %s`",
                    type(err).__name__, (str(err).strip().splitlines() or [""])[0][:200], output_path)
    return summary


def write_report(output_path: str, summary: dict | None = None) -> str:
    """report/index.html from the run's summary.json and manifest.json; its path."""
    from apache_beam.io.filesystems import FileSystems

    summary = summary if summary is not None else read_json(summary_path(output_path))
    try:
        manifest = json.loads(read_manifest(output_path).to_json())
    except ManifestError:
        manifest = None
    page = build_html(summary, manifest)
    path = report_path(output_path)
    with FileSystems.create(path, mime_type="text/html") as handle:
        handle.write(page.encode("utf-8"))
    return path


# ------------------------------------------------------------------ the charts


def _ranked(tally: dict) -> tuple[list, list]:
    items = sorted((tally or {}).items(), key=lambda item: (-item[1], str(item[0])))
    return [k for k, _ in items], [v for _, v in items]


def _layout(figure: go.Figure, height: int = 360) -> go.Figure:
    figure.update_layout(height=height, margin={"l": 60, "r": 20, "t": 30, "b": 60},
                         template="plotly_white", barmode="stack", legend={"orientation": "h", "y": -0.2})
    return figure


def _empty(figure: go.Figure, text: str) -> go.Figure:
    figure.add_annotation(text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                          font={"size": 14})
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False)
    return figure


def _stacked(nested: dict, horizontal: bool = False, order: list | None = None) -> go.Figure:
    """{outer: {inner: n}} as bars of `outer`, stacked by `inner` (one trace per inner)."""
    outer = order if order is not None else sorted(nested, key=lambda k: (-sum(nested[k].values()), str(k)))
    inners = sorted({inner for values in nested.values() for inner in values})
    figure = go.Figure()
    for inner in inners:
        counts = [nested[key].get(inner, 0) for key in outer]
        if horizontal:
            figure.add_bar(name=inner, y=outer, x=counts, orientation="h")
        else:
            figure.add_bar(name=inner, x=outer, y=counts)
    if horizontal:
        figure.update_yaxes(autorange="reversed")
    return figure


def status_chart(summary: dict) -> go.Figure:
    names, counts = _ranked(summary.get("status"))
    return go.Figure(go.Bar(x=names, y=counts, name="rows"))


def failures_chart(report: dict) -> go.Figure:
    failures = report.get("failures_by_host") or {}
    if not failures:
        return _layout(_empty(go.Figure(), "no failed fetch in this run"))
    figure = _stacked(failures, horizontal=True)
    return _layout(figure, height=max(360, 24 * len(failures) + 120))


def actions_chart(report: dict) -> go.Figure:
    reasons = report.get("reasons_by_action") or {}
    if not reasons:
        return _empty(go.Figure(), "no row was decided")
    return _stacked(reasons, order=[a for a in ("keep", "review", "remove") if a in reasons]
                    + sorted(a for a in reasons if a not in ("keep", "review", "remove")))


def labels_chart(summary: dict, report: dict) -> go.Figure:
    scored = report.get("scored") or {}
    labels = summary.get("labels") or {}
    categories = sorted(set(scored) | set(labels))
    if not categories:
        return _empty(go.Figure(), "no row was scored (embedding off)")
    figure = go.Figure()
    figure.add_bar(name="scored", x=categories, y=[scored.get(c, 0) for c in categories])
    figure.add_bar(name="labelled (score over threshold)", x=categories, y=[labels.get(c, 0) for c in categories])
    figure.update_layout(barmode="group")
    return figure


def flags_chart(summary: dict) -> go.Figure:
    names, counts = _ranked(summary.get("caption_flags"))
    if not names:
        return _empty(go.Figure(), "no caption was flagged")
    return go.Figure(go.Bar(x=names, y=counts, name="rows"))


def matches_chart(report: dict) -> go.Figure:
    matches = report.get("matches_by_list") or {}
    if not matches:
        return _empty(go.Figure(), "no takedown match")
    return _stacked(matches)


def scores_chart(report: dict, thresholds: dict) -> go.Figure:
    histograms = report.get("score_histograms") or {}
    if not histograms:
        return _layout(_empty(go.Figure(), "no row was scored (embedding off)"))
    names = sorted(histograms)
    columns = min(3, len(names))
    rows = -(-len(names) // columns)
    titles = [f"{name} (threshold {thresholds[name]:g})" if name in thresholds else name for name in names]
    figure = make_subplots(rows=rows, cols=columns, subplot_titles=titles)
    width = 1.0 / SCORE_BINS
    centres = [round((i + 0.5) * width, 6) for i in range(SCORE_BINS)]
    for i, name in enumerate(names):
        row, col = i // columns + 1, i % columns + 1
        figure.add_bar(x=centres, y=histograms[name], width=width, name=name, showlegend=False, row=row, col=col)
        if name in thresholds:
            figure.add_vline(x=thresholds[name], line_dash="dash", line_color="crimson", row=row, col=col)
        figure.update_xaxes(range=[0, 1], row=row, col=col)
    return _layout(figure, height=300 * rows)


_BUCKETS = {19: ("%Y-%m-%dT%H:%M:%S", 1), 16: ("%Y-%m-%dT%H:%M", 60), 13: ("%Y-%m-%dT%H", 3600),
            10: ("%Y-%m-%d", 86400)}


def throughput_series(times: dict) -> tuple[list[str], list[float]]:
    """Rows per second in each bucket of `audited_per_second` (seconds, minutes, hours or
    days, as summary.json holds them), buckets without a row filled in as 0."""
    import datetime as dt

    keys = sorted(times)
    fmt, seconds = _BUCKETS[len(keys[0])]
    first, last = (dt.datetime.strptime(k, fmt) for k in (keys[0], keys[-1]))
    step = dt.timedelta(seconds=seconds)
    if (last - first) / step > 4 * len(keys) + 100:  # sparse (days between parts): as recorded
        return keys, [times[k] / seconds for k in keys]
    xs, ys, at = [], [], first
    while at <= last:
        key = at.strftime(fmt)
        xs.append(key)
        ys.append(times.get(key, 0) / seconds)
        at += step
    return xs, ys


def throughput_chart(report: dict, kind: str = "audit") -> go.Figure:
    if kind == "rematch":
        return _empty(go.Figure(), "not measured by a rematch (see below)")
    times = report.get("audited_per_second") or {}
    if not times:
        return _empty(go.Figure(), "no row audited in this run")
    xs, ys = throughput_series(times)
    figure = go.Figure(go.Scatter(x=xs, y=ys, mode="lines+markers", name="rows/s"))
    figure.update_yaxes(title_text="rows per second", rangemode="tozero")
    return figure


def figures(summary: dict, kind: str = "audit") -> dict[str, go.Figure]:
    """The report's charts by div id (CHARTS' order); `kind` the manifest's (a rematch
    draws no throughput)."""
    report = summary.get("report") or {}
    thresholds = summary.get("score_thresholds") or {}
    made = {
        "status": status_chart(summary),
        "failures": failures_chart(report),
        "actions": actions_chart(report),
        "labels": labels_chart(summary, report),
        "caption_flags": flags_chart(summary),
        "matches": matches_chart(report),
        "scores": scores_chart(report, thresholds),
        "throughput": throughput_chart(report, kind),
    }
    for name, figure in made.items():
        if name not in ("failures", "scores"):
            _layout(figure)
    return made


# ------------------------------------------------------------------ the page


def _table(rows: list[tuple[str, object]], table_id: str) -> str:
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f'<table id="{table_id}">{cells}</table>'


def _facts(summary: dict) -> list[tuple[str, object]]:
    facts = [("rows in", summary.get("rows_in")), ("rows audited", summary.get("rows_audited")),
             ("all rows accounted", "yes" if summary.get("all_rows_accounted") else "NO")]
    if summary.get("wall_s") is not None:
        facts.append(("wall seconds", summary["wall_s"]))
    if summary.get("rows_per_s") is not None:
        facts.append(("rows per second", summary["rows_per_s"]))
    for key in ("rows_reused", "rows_fetched", "groups"):
        if summary.get(key) is not None:
            facts.append((key.replace("_", " "), summary[key]))
    for action, n in sorted((summary.get("action") or {}).items()):
        facts.append((f"action {action}", n))
    if summary.get("model_warning"):
        facts.append(("model warning", summary["model_warning"]))
    return facts


def _manifest_html(manifest: dict | None) -> str:
    if manifest is None:
        return "<p>No run manifest (report/manifest.json) was found.</p>"
    model = manifest.get("model") or {}
    rows = [("kind", manifest.get("kind")), ("laion-audit version", manifest.get("laion_audit_version")),
            ("config sha256", manifest.get("config_sha256")), ("written at", manifest.get("written_at")),
            ("model", model.get("id") or "none (no embedding)")]
    if model.get("warning"):
        rows.append(("model warning", model["warning"]))
    if model.get("embeddings_from"):
        rows.append(("embeddings from", model["embeddings_from"]))
    if manifest.get("rematch_of"):
        rows.append(("rematch of", manifest["rematch_of"]))
    for kind, value in sorted((manifest.get("thresholds") or {}).items()):
        rows.append((f"match threshold {kind}", value))
    policy = manifest.get("policy") or {}
    for key in ("remove_if", "review_if"):
        rows.append((f"policy {key}", "; ".join(policy.get(key) or []) or "(none)"))
    dataset = manifest.get("dataset") or {}
    rows.append(("dataset columns", ", ".join(f"{k}={v}" for k, v in sorted(dataset.items()) if v)))
    parts = [_table(rows, "manifest")]
    lists = manifest.get("takedown_lists") or []
    # File names only: a folder's name can be a person's (/home/jane/requests/...).
    listed = "".join(f"<tr><td>{html.escape(_file_name(f['path']))}</td>"
                     f"<td><code>{html.escape(f['sha256'])}</code></td></tr>" for f in lists)
    parts.append("<h3>Takedown list files</h3>" + (
        f'<table id="lists"><tr><th>file</th><th>sha256 of the file</th></tr>{listed}</table>' if lists
        else "<p>none</p>"))
    inputs = manifest.get("inputs") or []
    shown = "".join(f"<li>{html.escape(_file_name(p))}</li>" for p in inputs[:50])
    more = f"<li>... and {len(inputs) - 50} more</li>" if len(inputs) > 50 else ""
    parts.append(f"<h3>Dataset files ({len(inputs)})</h3><ul id=\"inputs\">{shown}{more}</ul>")
    return "".join(parts)


def _file_name(path: str) -> str:
    """The last part of a local path or URL (gs://bucket/a/b.parquet -> b.parquet)."""
    return posixpath.basename(path.replace("\\", "/").rstrip("/")) or path


_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1100px;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left}
th{background:#f6f6f6;font-weight:600}code{font-size:.85em}.note{color:#555}
"""


def build_html(summary: dict, manifest: dict | None) -> str:
    """The whole page: facts, the charts of CHARTS (plotly.js inline once), the manifest."""
    kind = (manifest or {}).get("kind", "audit")
    made = figures(summary, kind)
    notes = dict(NOTES)
    if kind == "rematch":
        notes["throughput"] = REMATCH_THROUGHPUT
    blocks = []
    for i, (name, title) in enumerate(CHARTS):
        div = pio.to_html(made[name], full_html=False, include_plotlyjs=(i == 0), include_mathjax=False,
                          config=PLOTLY_CONFIG, div_id=f"chart-{name}", validate=True)
        note = f'<p class="note" id="note-{name}">{html.escape(notes[name])}</p>' if name in notes else ""
        blocks.append(f'<section class="chart"><h2>{html.escape(title)}</h2>{note}{div}</section>')
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; img-src data:; font-src 'none'\">"
        f"<title>laion-audit {html.escape(kind)} report</title><style>{_STYLE}</style></head><body>"
        f"<h1>laion-audit {html.escape(kind)} report</h1>"
        "<p class=\"note\">Counts only: this page holds no image, no URL or caption of any row and no "
        "hash-list value, so it can be shared. Its numbers are those of report/summary.json.</p>"
        f"<h2>The run in numbers</h2>{_table(_facts(summary), 'facts')}"
        + "".join(blocks)
        + f"<h2>What the run was asked to do (report/manifest.json)</h2>{_manifest_html(manifest)}"
        + "</body></html>\n"
    )
