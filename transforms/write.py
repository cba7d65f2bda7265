"""Write stage: the audit table (parquet) and the run summary (report/summary.json).

Both go through Beam's filesystems, so an output prefix may be local, gs:// or s3://.
Only contract columns are written: in-flight image data never reaches a sink.
"""
from __future__ import annotations

import collections
import json
import os
import posixpath
import shutil

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms.records import (
    AUDIT_SCHEMA,
    EMBEDDING_SCHEMA,
    REVIEW_SCHEMA,
    PUBLISHED_SCHEMA,
    REMOVAL_SCHEMA,
    STATUSES,
    audit_row,
    embedding_row,
    published_row,
    removal_rows,
    review_row,
)


def output_dir(output_path: str, name: str) -> str:
    return FileSystems.join(output_path, name) if "://" in output_path else posixpath.join(output_path, name)


# Everything a run writes under its output path.
OUTPUT_DIRS = ("audit", "removals", "published", "review", "embeddings", "clean", "report")


def clear_outputs(output_path: str) -> None:
    """Remove a previous run's outputs. Beam replaces only shards of the same count, so
    a rerun into the same path would otherwise leave old shards beside the new ones."""
    for name in OUTPUT_DIRS:
        folder = output_dir(output_path, name)
        if "://" in folder:
            found = FileSystems.match([folder + "/**"])[0].metadata_list
            if found:
                FileSystems.delete([m.path for m in found])
        elif os.path.isdir(folder):
            shutil.rmtree(folder)


def write_json(path: str, payload: dict) -> None:
    with FileSystems.create(path, mime_type="application/json") as handle:
        handle.write(json.dumps(payload, indent=2, sort_keys=True).encode("utf-8"))


def read_json(path: str) -> dict:
    with FileSystems.open(path) as handle:
        return json.loads(handle.read().decode("utf-8"))


class _ToAuditRow(beam.DoFn):
    """Project a record to contract columns and count it, per status and per action."""

    def __init__(self):
        self._audited = Metrics.counter("audit", "rows_audited")
        self._per_status = {s: Metrics.counter("audit", f"status_{s}") for s in STATUSES}

    def process(self, record: dict):
        row = audit_row(record)
        self._audited.inc()
        counter = self._per_status.get(row["status"])
        if counter is not None:
            counter.inc()
        yield row


class WriteAudit(beam.PTransform):
    """Records -> `<output>/audit/part-*.parquet` (one row per record)."""

    def __init__(self, output_path: str, num_shards: int = 0):
        super().__init__()
        self._prefix = output_dir(output_path, "audit/part")
        self._num_shards = num_shards

    def expand(self, records):
        return (
            records
            | "ToAuditRow" >> beam.ParDo(_ToAuditRow())
            | "WriteParquet" >> _parquet(self._prefix, AUDIT_SCHEMA, self._num_shards)
        )


def _parquet(prefix: str, schema, num_shards: int = 0) -> beam.io.WriteToParquet:
    return beam.io.WriteToParquet(
        prefix, schema=schema, file_name_suffix=".parquet", num_shards=num_shards, codec="zstd"
    )


class WriteRemovals(beam.PTransform):
    """Removed records -> `removals/` (operator only) and `published/` (safe to post)."""

    def __init__(self, output_path: str):
        super().__init__()
        self._output = output_path

    def expand(self, removed):
        removals = (
            removed
            | "RemovalRows" >> beam.FlatMap(removal_rows)
            | "WriteRemovals" >> _parquet(output_dir(self._output, "removals/part"), REMOVAL_SCHEMA)
        )
        published = (
            removed
            | "PublishedRows" >> beam.Map(published_row)
            | "WritePublished" >> _parquet(output_dir(self._output, "published/part"), PUBLISHED_SCHEMA)
        )
        return removals, published


class WriteReview(beam.PTransform):
    """Records whose action is review -> `review/` (labels, scores, flags, reasons)."""

    def __init__(self, output_path: str):
        super().__init__()
        self._prefix = output_dir(output_path, "review/part")

    def expand(self, to_review):
        return (
            to_review
            | "ReviewRows" >> beam.Map(review_row)
            | "WriteReview" >> _parquet(self._prefix, REVIEW_SCHEMA)
        )


class WriteEmbeddings(beam.PTransform):
    """Embedded records -> `embeddings/` (row_id, float16 vector). Only when asked:
    an embedding says much about an image."""

    def __init__(self, output_path: str):
        super().__init__()
        self._prefix = output_dir(output_path, "embeddings/part")

    def expand(self, records):
        return (
            records
            | "Embedded" >> beam.Filter(lambda r: r.get("_embedding") is not None)
            | "EmbeddingRows" >> beam.Map(embedding_row)
            | "WriteEmbeddings" >> _parquet(self._prefix, EMBEDDING_SCHEMA)
        )


class SummaryFn(beam.CombineFn):
    """Counts over audit records: rows, statuses, actions, labels, matches, bytes."""

    def create_accumulator(self):
        return {
            "rows_audited": 0,
            "bytes_fetched": 0,
            "status": collections.Counter(),
            "action": collections.Counter(),
            "labels": collections.Counter(),
            "caption_flags": collections.Counter(),
            "matched_lists": collections.Counter(),
        }

    def add_input(self, acc, record):
        acc["rows_audited"] += 1
        acc["bytes_fetched"] += record.get("bytes") or 0
        acc["status"][record.get("status") or "internal_error"] += 1
        if record.get("action"):
            acc["action"][record["action"]] += 1
        acc["labels"].update(record.get("labels") or ())
        acc["caption_flags"].update(record.get("caption_flags") or ())
        acc["matched_lists"].update({m["list_id"] for m in record.get("matches") or ()})
        return acc

    def merge_accumulators(self, accumulators):
        merged = self.create_accumulator()
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
    """Write `<output>/report/summary.json` from the records and the count of rows read."""

    def __init__(self, output_path: str, extra: dict | None = None):
        super().__init__()
        self._path = summary_path(output_path)
        self._extra = extra or {}

    def expand(self, pcolls):
        records, rows_in = pcolls
        counts = records | "Count" >> beam.CombineGlobally(SummaryFn())
        rows_in_total = rows_in | "RowsIn" >> beam.combiners.Count.Globally()
        path, extra = self._path, self._extra
        return counts | "Write" >> beam.Map(
            lambda c, n: write_json(path, summary_payload(c, n, extra)) or path,
            beam.pvalue.AsSingleton(rows_in_total),
        )


def summary_path(output_path: str) -> str:
    return output_dir(output_dir(output_path, "report"), "summary.json")
