"""summary.json's `report` object: the numbers report/index.html draws, counted
column-wise from tables of audit rows (AUDIT_SCHEMA). Every part adds up
(`add_tallies`), so Beam's partial accumulators and a local run's groups sum to the
whole run's; `shown_report` then bounds them as the run's summary.json holds them.

A removed row's host is never counted, and a host is named only with at least
MIN_HOST_FAILURES failed rows (the rest are summed under OTHER_HOSTS): a URL taken down
on request often fails, and its host alone can name the person who asked.
"""
from __future__ import annotations

import datetime as _dt

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Statuses that are no failure of this run's fetch.
NOT_FAILED = ("ok", "reused", "not_fetched")
SCORE_BINS = 20  # histogram bins of width 0.05 over [0, 1]
HOSTS_KEPT = 1000  # failing hosts kept while counting (the most failures first)
HOSTS_SHOWN = 20  # failing hosts named in the run's summary.json (the most failures first)
MIN_HOST_FAILURES = 10  # failed rows a host needs to be named in the run's summary.json
OTHER_HOSTS = "(other hosts)"  # the failures of every host not named, summed by status
TIME_POINTS = 3600  # throughput buckets at most: seconds, else minutes, hours, days
_TIME_LENGTHS = (19, 16, 13, 10)  # "YYYY-MM-DDTHH:MM:SS", "...THH:MM", "...THH", "YYYY-MM-DD"
_HOST = r"^[A-Za-z][A-Za-z0-9+.-]*://(?:[^@/?#]*@)?(?P<host>\[[^\]/]*\]|[^:/?#]+)"
NO_HOST = "(no host)"


def add_tallies(total, part):
    """`part` added into `total`: numbers summed, lists element by element, dicts key by
    key (nested to any depth). Returns the sum (`total` itself where it is a dict)."""
    if isinstance(part, dict):
        total = total if isinstance(total, dict) else {}
        for key, value in part.items():
            total[key] = add_tallies(total.get(key), value)
        return total
    if isinstance(part, list):
        total = list(total) if isinstance(total, list) else [0] * len(part)
        return [a + b for a, b in zip(total, part)]
    return (total or 0) + part


def _pair_counts(first: pa.Array, second: pa.Array) -> dict:
    """{a: {b: rows}} over the pairs (first[i], second[i])."""
    if len(first) == 0:
        return {}
    grouped = pa.table({"a": first, "b": second}).group_by(["a", "b"]).aggregate([("a", "count")])
    counts: dict = {}
    for a, b, n in zip(*(grouped.column(name).to_pylist() for name in ("a", "b", "a_count"))):
        counts.setdefault(a, {})[b] = n
    return counts


def url_hosts(urls) -> pa.Array:
    """The host of each URL, lowercased, column-wise; NO_HOST where there is none."""
    found = pc.struct_field(pc.extract_regex(pc.fill_null(urls, ""), _HOST), "host")
    return pc.fill_null(pc.utf8_lower(found), NO_HOST)


def top_hosts(failures: dict, keep: int) -> dict:
    """The `keep` hosts with the most failures (ties by name), as {host: {status: n}}."""
    if len(failures) <= keep:
        return failures
    ranked = sorted(failures.items(), key=lambda item: (-sum(item[1].values()), item[0]))
    return dict(ranked[:keep])


def shown_hosts(failures: dict, keep: int = HOSTS_SHOWN, minimum: int = MIN_HOST_FAILURES) -> dict:
    """The hosts the run's summary.json names: the `keep` most failing of those with at
    least `minimum` failed rows; every other host's failures summed by status under
    OTHER_HOSTS (absent when there are none)."""
    named = top_hosts({host: n for host, n in failures.items()
                       if host != OTHER_HOSTS and sum(n.values()) >= minimum}, keep)
    other: dict = {}
    for host, by_status in failures.items():
        if host not in named:
            other = add_tallies(other, by_status)
    return {**named, OTHER_HOSTS: other} if other else named


def coarsen_times(tally: dict, points: int = TIME_POINTS) -> dict:
    """Rows per second ("YYYY-MM-DDTHH:MM:SS") summed into minutes, hours or days until at
    most `points` buckets remain; keys of mixed precision are all cut to the coarsest."""
    if not tally:
        return tally
    length = min(len(key) for key in tally)
    while True:
        cut: dict = {}
        for key, n in tally.items():
            cut[key[:length]] = cut.get(key[:length], 0) + n
        coarser = [size for size in _TIME_LENGTHS if size < length]
        if len(cut) <= points or not coarser:
            return dict(sorted(cut.items()))
        length = coarser[0]


def _score_counts(scores: pa.ChunkedArray) -> tuple[dict, dict]:
    """Rows scored per category, and each category's histogram of SCORE_BINS bins of
    width 1 / SCORE_BINS over [0, 1] (1.0 in the last; NaN not counted)."""
    chunks = [chunk for chunk in scores.chunks if len(chunk)]
    if not chunks:
        return {}, {}
    # As a list of (key, value) structs: flattening a list honours a slice's offsets.
    entry = pa.struct([("key", pa.string()), ("value", pa.float64())])
    flat = pa.concat_arrays([pc.list_flatten(chunk.cast(pa.list_(entry))) for chunk in chunks])
    if not len(flat):
        return {}, {}
    encoded = pc.dictionary_encode(flat.field("key")).combine_chunks() \
        if isinstance(flat.field("key"), pa.ChunkedArray) else pc.dictionary_encode(flat.field("key"))
    names = encoded.dictionary.to_pylist()
    category = encoded.indices.to_numpy(zero_copy_only=False)
    values = flat.field("value").to_numpy(zero_copy_only=False)
    scored = np.bincount(category, minlength=len(names))
    finite = np.isfinite(values)
    bins = np.clip(np.floor(values[finite] * SCORE_BINS), 0, SCORE_BINS - 1).astype(np.int64)
    counts = np.bincount(category[finite] * SCORE_BINS + bins, minlength=len(names) * SCORE_BINS)
    counts = counts.reshape(len(names), SCORE_BINS)
    return ({name: int(scored[i]) for i, name in enumerate(names)},
            {name: counts[i].tolist() for i, name in enumerate(names)})


def report_counts(table: pa.Table) -> dict:
    """The report's numbers of a table of audit rows, column-wise:

    failures_by_host    {host: {status: rows}} of rows whose status is a failure, removed
                        rows left out (their host is part of what was taken down)
    reasons_by_action   {action: {reason: rows}} (a row with no reason counts as "(none)")
    scored              {category: rows with a score}
    score_histograms    {category: [rows per bin]}, SCORE_BINS bins over [0, 1]
    matches_by_list     {list_id: {kind: takedown hits}}
    audited_per_second  {"YYYY-MM-DDTHH:MM:SS": rows} from audited_at (reused rows not)
    """
    status = pc.fill_null(table.column("status"), "internal_error")
    removed = pc.fill_null(pc.equal(table.column("action"), "remove"), False)
    failed = pc.and_(pc.invert(pc.is_in(status, pa.array(NOT_FAILED))), pc.invert(removed))
    failures = _pair_counts(url_hosts(table.column("url").filter(failed)), status.filter(failed))

    # A row with no reason counts under "(none)"; a row with no action is not counted.
    reasons = table.column("reasons").combine_chunks().cast(pa.list_(pa.string()))
    actions = table.column("action").combine_chunks()
    reasons_by_action = _pair_counts(pc.take(actions, pc.list_parent_indices(reasons)), pc.list_flatten(reasons))
    no_reason = pc.invert(pc.fill_null(pc.greater(pc.list_value_length(reasons), 0), False))
    for item in pc.value_counts(actions.filter(no_reason)).to_pylist():
        reasons_by_action.setdefault(item["values"], {})["(none)"] = item["counts"]
    reasons_by_action.pop(None, None)

    scored, histograms = _score_counts(table.column("scores"))
    matched = pc.list_flatten(table.column("matches"))
    matches = _pair_counts(pc.struct_field(matched, "list_id"), pc.struct_field(matched, "kind")) if len(matched) else {}

    fresh = pc.and_(pc.is_valid(table.column("audited_at")), pc.not_equal(status, "reused"))
    # Counted by whole second, then only the distinct seconds are spelled out.
    seconds = table.column("audited_at").filter(fresh).cast(pa.timestamp("s", tz="UTC"), safe=False)
    epoch = _dt.datetime(1970, 1, 1)
    times = {(epoch + _dt.timedelta(seconds=item["values"])).strftime("%Y-%m-%dT%H:%M:%S"): item["counts"]
             for item in pc.value_counts(seconds.cast(pa.int64())).to_pylist()}
    return {
        "failures_by_host": failures,
        "reasons_by_action": reasons_by_action,
        "scored": scored,
        "score_histograms": histograms,
        "matches_by_list": matches,
        "audited_per_second": times,
    }


def bound_report(report: dict, hosts: int = HOSTS_KEPT) -> dict:
    """`report` with its open-ended tallies bounded, as a part of a run keeps it to be
    summed: the `hosts` most failing hosts, at most TIME_POINTS throughput buckets."""
    report = dict(report)
    report["failures_by_host"] = top_hosts(report.get("failures_by_host") or {}, hosts)
    report["audited_per_second"] = coarsen_times(report.get("audited_per_second") or {})
    return report


def shown_report(report: dict) -> dict:
    """`report` as the run's summary.json holds it: bounded, and only the hosts
    `shown_hosts` names (the others under OTHER_HOSTS)."""
    report = bound_report(report)
    report["failures_by_host"] = shown_hosts(report["failures_by_host"])
    return report


class ReportCountsFn(beam.CombineFn):
    """The report's numbers over tables of audit rows (`report_counts` per table)."""

    def create_accumulator(self):
        return {}

    def add_input(self, acc, table: pa.Table):
        return self.merge_accumulators([acc, report_counts(table)])

    def merge_accumulators(self, accumulators):
        merged: dict = {}
        for acc in accumulators:
            merged = add_tallies(merged, acc)
        return bound_report(merged)

    def extract_output(self, acc):
        return bound_report(acc)
