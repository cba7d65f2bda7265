"""Write stage: the writers of audit/, review/, removals/, published/, embeddings/ and
the run summary (report/summary.json), and the summary's counts (the report's own
numbers are counted in transforms/report_counts.py).

The writers take Arrow tables of audit rows (AUDIT_SCHEMA), the audit's and rematch's
alike; transforms/outputs.py wires them into the one output tail. Everything goes
through Beam's filesystems, so an output prefix may be local, gs:// or s3://. Only
contract columns are written: in-flight image data never reaches a sink.
"""
from __future__ import annotations

import collections
import json
import os
import shutil

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from transforms import paths
from transforms.table_coder import ArrowTableCoder  # noqa: F401 (registers the pa.Table coder)
from transforms.report_counts import (  # the report's numbers, summed like the counts
    ReportCountsFn,
    add_tallies,
    bound_report,
    shown_report,
)
from transforms.row_status import StatusCounters
from transforms.records import (
    AUDIT_SCHEMA,
    EMBEDDING_SCHEMA,
    REVIEW_SCHEMA,
    PUBLISHED_SCHEMA,
    REMOVAL_SCHEMA,
    STATUSES,
    embedding_row,
    published_row,
    removal_rows,
)

# Bytes of audit rows per row group of audit/ (Beam's WriteToParquet buffers as much).
ROW_GROUP_BYTES = 64 * 1024 * 1024


def output_dir(output_path: str, name: str) -> str:
    return paths.join(output_path, name)


# Everything a run writes under its output path.
OUTPUT_DIRS = ("audit", "removals", "published", "review", "embeddings", "clean", "report")


def clear_outputs(output_path: str) -> None:
    """Remove a previous run's outputs. Beam replaces only shards of the same count, so
    a rerun into the same path would otherwise leave old shards beside the new ones."""
    for name in OUTPUT_DIRS:
        folder = output_dir(output_path, name)
        if paths.is_remote(folder):
            found = [path for _, path in paths.list_folder(folder)]
            if found:
                FileSystems.delete(found)
        elif os.path.isdir(folder):
            shutil.rmtree(folder)


def write_json(path: str, payload: dict) -> None:
    with FileSystems.create(path, mime_type="application/json") as handle:
        handle.write(json.dumps(payload, indent=2, sort_keys=True).encode("utf-8"))


def read_json(path: str) -> dict:
    with FileSystems.open(path) as handle:
        return json.loads(handle.read().decode("utf-8"))


# ------------------------------------------------------------------ audit rows as tables
#
# Every writer below takes Arrow tables of audit rows (AUDIT_SCHEMA), the audit's and
# rematch's alike (transforms/outputs.py is the tail that wires them).


def removed_rows(table: pa.Table) -> pa.Table:
    """The removed rows: what removals/, published/ and clean/ are made of. Rows sent to
    review are not among them (they stay in clean/ until a person decides)."""
    return table.filter(pc.equal(table.column("action"), "remove"))


def review_table(table: pa.Table) -> pa.Table:
    """The review/ rows of a table, column-wise: the rows `review_row` makes of each
    record whose action is review."""
    review = table.filter(pc.equal(table.column("action"), "review"))
    return review.select(REVIEW_SCHEMA.names).cast(REVIEW_SCHEMA)


@beam.typehints.with_output_types(pa.Table)
class _CountAudited(beam.DoFn):
    """Beam's count of the rows on their way into audit/, in all and per status."""

    def __init__(self):
        self._audited = Metrics.counter("audit", "rows_audited")
        self._statuses = StatusCounters("audit")

    def process(self, table: pa.Table):
        self._audited.inc(table.num_rows)
        for item in pc.value_counts(table.column("status")).to_pylist():
            if item["values"] in STATUSES:
                self._statuses.inc(item["values"], item["counts"])
        yield table


@beam.typehints.with_output_types(pa.Table)
class _Rebatch(beam.DoFn):
    """Tables -> tables of at least `min_bytes` (a bundle's last one smaller). The sink
    writes each table as one row group (up to a million rows), so audit/ keeps row groups
    as large as Beam's own WriteToParquet makes them, however small the tables come."""

    def __init__(self, min_bytes: int = ROW_GROUP_BYTES):
        self._min_bytes = min_bytes

    def start_bundle(self):
        self._tables: list[pa.Table] = []
        self._bytes = 0

    def process(self, table: pa.Table):
        self._tables.append(table)
        self._bytes += table.nbytes
        if self._bytes >= self._min_bytes:
            yield self._flush()

    def finish_bundle(self):
        if self._tables:
            # Batch pipelines run in the global window (as Beam's parquet sink assumes).
            yield GlobalWindows.windowed_value_at_end_of_window(self._flush())

    def _flush(self) -> pa.Table:
        table = self._tables[0] if len(self._tables) == 1 else pa.concat_tables(self._tables)
        self._tables, self._bytes = [], 0
        return table


def _parquet_tables(prefix: str, schema, num_shards: int = 0) -> beam.io.WriteToParquetBatched:
    return beam.io.WriteToParquetBatched(
        prefix, schema=schema, file_name_suffix=".parquet", num_shards=num_shards, codec="zstd"
    )


class WriteAudit(beam.PTransform):
    """Tables of audit rows -> `<output>/audit/<prefix>part-*.parquet` (one row per input
    row), counted by Beam's metrics on the way in (`audit/rows_audited`, `audit/status_*`).
    `prefix` names one part of a run's outputs (a local run's group, `g00003-`)."""

    def __init__(self, output_path: str, num_shards: int = 0, prefix: str = ""):
        super().__init__()
        self._prefix = output_dir(output_path, f"audit/{prefix}part")
        self._num_shards = num_shards

    def expand(self, tables):
        return (
            tables
            | "CountAudited" >> beam.ParDo(_CountAudited())
            | "Rebatch" >> beam.ParDo(_Rebatch())
            | "WriteParquet" >> _parquet_tables(self._prefix, AUDIT_SCHEMA, self._num_shards)
        )


def _parquet(prefix: str, schema, num_shards: int = 0) -> beam.io.WriteToParquet:
    return beam.io.WriteToParquet(
        prefix, schema=schema, file_name_suffix=".parquet", num_shards=num_shards, codec="zstd"
    )


def _removed_records(table: pa.Table) -> list[dict]:
    return removed_rows(table).to_pylist()


class WriteRemovals(beam.PTransform):
    """Tables of audit rows -> `removals/` (operator only) and `published/` (safe to
    post), made of the removed rows by `removal_rows` and `published_row`."""

    def __init__(self, output_path: str, prefix: str = ""):
        super().__init__()
        self._output = output_path
        self._part = f"{prefix}part"

    def expand(self, tables):
        removed = tables | "RemovedRows" >> beam.FlatMap(_removed_records)
        removals = (
            removed
            | "RemovalRows" >> beam.FlatMap(removal_rows)
            | "WriteRemovals" >> _parquet(output_dir(self._output, f"removals/{self._part}"), REMOVAL_SCHEMA)
        )
        published = (
            removed
            | "PublishedRows" >> beam.Map(published_row)
            | "WritePublished" >> _parquet(output_dir(self._output, f"published/{self._part}"), PUBLISHED_SCHEMA)
        )
        return removals, published


def _non_empty(table: pa.Table):
    if table.num_rows:
        yield table


class WriteReview(beam.PTransform):
    """Tables of audit rows -> `review/`: the rows whose action is review (labels,
    scores, caption flags, reasons)."""

    def __init__(self, output_path: str, prefix: str = ""):
        super().__init__()
        self._prefix = output_dir(output_path, f"review/{prefix}part")

    def expand(self, tables):
        return (
            tables
            | "ReviewRows" >> beam.Map(review_table).with_output_types(pa.Table)
            | "NonEmpty" >> beam.FlatMap(_non_empty).with_output_types(pa.Table)
            # A table holds a few review rows at most: merged, they make real row groups.
            | "Rebatch" >> beam.ParDo(_Rebatch())
            | "WriteReview" >> _parquet_tables(self._prefix, REVIEW_SCHEMA)
        )


class WriteEmbeddings(beam.PTransform):
    """Embedded records -> `embeddings/` (row_id, float16 vector). Only when asked:
    an embedding says much about an image."""

    def __init__(self, output_path: str, prefix: str = ""):
        super().__init__()
        self._prefix = output_dir(output_path, f"embeddings/{prefix}part")

    def expand(self, records):
        return (
            records
            | "Embedded" >> beam.Filter(lambda r: r.get("_embedding") is not None)
            | "EmbeddingRows" >> beam.Map(embedding_row)
            | "WriteEmbeddings" >> _parquet(self._prefix, EMBEDDING_SCHEMA)
        )


# ------------------------------------------------------------------ the run summary


def _new_counts() -> dict:
    return {
        "rows_audited": 0,
        "bytes_fetched": 0,
        "status": collections.Counter(),
        "action": collections.Counter(),
        "labels": collections.Counter(),
        "caption_flags": collections.Counter(),
        "matched_lists": collections.Counter(),
    }


def summary_counts(table: pa.Table) -> dict:
    """The summary's counts of a table of audit rows, column-wise: the one place they are
    counted. A row without a status counts as internal_error, a row without an action is
    not counted, and each list a row matched counts once for that row however many of its
    entries matched."""
    acc = _new_counts()
    acc["rows_audited"] = table.num_rows
    acc["bytes_fetched"] = int(pc.sum(table.column("bytes")).as_py() or 0)
    for item in pc.value_counts(table.column("status")).to_pylist():
        acc["status"][item["values"] or "internal_error"] += item["counts"]
    for item in pc.value_counts(table.column("action")).to_pylist():
        if item["values"]:
            acc["action"][item["values"]] += item["counts"]
    for key in ("labels", "caption_flags"):
        for item in pc.value_counts(pc.list_flatten(table.column(key))).to_pylist():
            acc[key][item["values"]] += item["counts"]
    matches = table.column("matches")
    matched = pc.list_flatten(matches)
    if len(matched):
        lengths = pc.fill_null(pc.list_value_length(matches), 0).to_numpy()
        rows = np.repeat(np.arange(table.num_rows), lengths)
        list_ids = pc.struct_field(matched, "list_id").to_pylist()
        for _, list_id in {(r, lid) for r, lid in zip(rows.tolist(), list_ids)}:
            acc["matched_lists"][list_id] += 1
    return acc


class SummaryFn(beam.CombineFn):
    """The summary's counts over tables of audit rows (`summary_counts` per table)."""

    def create_accumulator(self):
        return _new_counts()

    def add_input(self, acc, table: pa.Table):
        return self.merge_accumulators([acc, summary_counts(table)])

    def merge_accumulators(self, accumulators):
        merged = _new_counts()
        for acc in accumulators:
            for key, value in acc.items():
                merged[key] += value
        return merged

    def extract_output(self, acc):
        return {key: dict(value) if isinstance(value, collections.Counter) else value for key, value in acc.items()}


def summary_payload(counts: dict, rows_in: int, extra: dict) -> dict:
    payload = dict(counts)
    payload["rows_in"] = rows_in
    payload["all_rows_accounted"] = rows_in == counts["rows_audited"]
    payload.update(extra)
    return payload


class WriteSummary(beam.PTransform):
    """Write `<output>/report/summary.json` from tables of audit rows and the count of
    rows read (a PCollection of one int); to `path` instead when given (a local run's
    group writes its own, summed into summary.json by pipelines/local_driver.py)."""

    def __init__(self, output_path: str, extra: dict | None = None, path: str | None = None):
        super().__init__()
        self._path = path or summary_path(output_path)
        self._part = path is not None
        self._extra = extra or {}

    def expand(self, pcolls):
        tables, rows_in = pcolls
        counts = tables | "Count" >> beam.CombineGlobally(SummaryFn())
        report = tables | "ReportCounts" >> beam.CombineGlobally(ReportCountsFn())
        path, extra = self._path, self._extra
        # A part of a run (a group's file) keeps HOSTS_KEPT hosts, to be summed; the run's
        # own summary.json only the hosts the report may name.
        bound = bound_report if self._part else shown_report
        return counts | "Write" >> beam.Map(
            lambda c, n, r: write_json(path, summary_payload({**c, "report": bound(r)}, n, extra))
            or path,
            beam.pvalue.AsSingleton(rows_in),
            beam.pvalue.AsSingleton(report),
        )


def summary_path(output_path: str) -> str:
    return output_dir(output_dir(output_path, "report"), "summary.json")


# The counts of a summary that add up over parts of a run (a local run's groups).
SUMMED_COUNTS = ("rows_in", "rows_audited", "bytes_fetched")
SUMMED_TALLIES = ("status", "action", "labels", "caption_flags", "matched_lists")


def sum_summaries(summaries: list[dict]) -> dict:
    """The counts of several summaries (parts of one run) added up: the numbers of
    SUMMED_COUNTS, key by key the tallies of SUMMED_TALLIES, and the report's numbers
    (`report`, bounded as the run's summary.json holds them)."""
    total: dict = {key: 0 for key in SUMMED_COUNTS}
    total.update({key: collections.Counter() for key in SUMMED_TALLIES})
    report: dict = {}
    for summary in summaries:
        for key in SUMMED_COUNTS:
            total[key] += int(summary.get(key) or 0)
        for key in SUMMED_TALLIES:
            total[key].update(summary.get(key) or {})
        report = add_tallies(report, summary.get("report") or {})
    total = {key: dict(value) if isinstance(value, collections.Counter) else value for key, value in total.items()}
    total["report"] = shown_report(report)
    return total


PART_DIRS = ("audit", "removals", "published", "review", "embeddings")


def clear_parts(output_path: str, keep_prefixes: tuple[str, ...]) -> list[str]:
    """Remove from the part folders (PART_DIRS) every entry whose name starts with none
    of `keep_prefixes`: a killed group's partial shards, Beam's temp folders, an older
    run's parts. Returns what was removed."""
    removed = []
    for name in PART_DIRS:
        stale = [path for entry, path in paths.list_folder(output_dir(output_path, name))
                 if not (keep_prefixes and entry.startswith(keep_prefixes))]
        if stale:
            FileSystems.delete(stale)  # a local folder (Beam's temp) goes with what it holds
        removed += stale
    return removed
