"""The output tail: what every run writes, the audit's and rematch's alike.

    tables of audit rows (AUDIT_SCHEMA) + the count of rows read
      -> audit/        every row (Beam counts rows audited on the way in)
      -> review/       rows whose action is review
      -> removals/     one row per takedown hit (or policy reason) of a removed row
      -> published/    url_sha256 + row key of each removed row
      -> clean/        the input files without the removed rows (when the input is readable)
      -> report/summary.json   the counts, from the same tables (transforms.write.SummaryFn)

The audit turns its decided records into tables (`RecordsToTables`); rematch decides on
tables already. `embeddings/` (the audit only, only when asked) stays outside: it needs
the records' vectors, which are no audit column.
"""
from __future__ import annotations

import apache_beam as beam
import pyarrow as pa

from transforms.clean_beam import WriteCleanDataset
from transforms.read import DatasetSpec, source_names
from transforms.records import AUDIT_SCHEMA, audit_row
from transforms.write import WriteAudit, WriteRemovals, WriteReview, WriteSummary, output_dir, removed_rows

# Rows per table made of the audit's records: large enough that per-table work (filters,
# counts) costs nothing per row, small enough to hold a bundle's worth lightly.
TABLE_ROWS = 4096


def _to_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=AUDIT_SCHEMA)


class RecordsToTables(beam.PTransform):
    """Audit records (dicts) -> Arrow tables of their contract columns (AUDIT_SCHEMA).

    Each record is projected first (`audit_row`), so in-flight image data is let go of
    before rows wait in a batch."""

    def __init__(self, rows_per_table: int = TABLE_ROWS):
        super().__init__()
        self._rows = rows_per_table

    def expand(self, records):
        return (
            records
            | "AuditRows" >> beam.Map(audit_row)
            | "Batch" >> beam.BatchElements(min_batch_size=self._rows, max_batch_size=self._rows)
            | "ToTable" >> beam.Map(_to_table).with_output_types(pa.Table)
        )


def removed_row_ids(table: pa.Table) -> list[str]:
    return removed_rows(table).column("row_id").to_pylist()


class WriteOutputs(beam.PTransform):
    """(tables of audit rows, rows read: a PCollection of one int) -> every output of a
    run under `output_path` (see the module's docstring).

    `dataset`: the input files, for clean/ (None or empty: clean/ is not written);
    `spec` says how to read them. `summary_extra` is added to summary.json as it is.

    One part of a run (a local run's group, pipelines/local_driver.py) writes under its
    own names: `part_prefix` starts each shard's name (`audit/g00003-part-*.parquet`),
    `summary_file` replaces report/summary.json, and `sources` names the files for row
    ids as the whole run does (default: `source_names(dataset)`)."""

    def __init__(self, output_path: str, dataset: list[str] | None = None, spec: DatasetSpec | None = None,
                 num_shards: int = 0, summary_extra: dict | None = None, part_prefix: str = "",
                 summary_file: str | None = None, sources: dict[str, str] | None = None):
        super().__init__()
        self._prefix = part_prefix
        self._summary_file = summary_file
        self._sources = sources
        self._output = output_path
        self._dataset = list(dataset or ())
        self._spec = spec or DatasetSpec()
        self._num_shards = num_shards
        self._extra = dict(summary_extra or {})

    def expand(self, pcolls):
        tables, rows_in = pcolls
        out = self._output
        prefix = self._prefix
        tables | "WriteAudit" >> WriteAudit(out, self._num_shards, prefix=prefix)
        tables | "WriteReview" >> WriteReview(out, prefix=prefix)
        tables | "WriteRemovals" >> WriteRemovals(out, prefix=prefix)
        if self._dataset:
            paths = self._dataset
            sources = self._sources or source_names(paths)
            (
                tables
                | "RemovedIds" >> beam.FlatMap(removed_row_ids)
                | "WriteClean" >> WriteCleanDataset(paths, sources, self._spec, output_dir(out, "clean"))
            )
        return (tables, rows_in) | "WriteSummary" >> WriteSummary(out, self._extra, path=self._summary_file)
