"""Clean stage: a copy of the dataset with removed rows left out, in the input's own
format, columns and types — a drop-in replacement for the original files.

One output file per input file, same base name, so a cleaned shard replaces its original.
Rows are dropped either by audit row id (the audit's own `clean/`) or by `url_sha256`
(`laion-audit apply`, which cleans any copy of the dataset with a published removal list).
"""
from __future__ import annotations

import codecs
import csv
from typing import Any, Callable, Iterable

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms.read import (
    DatasetSpec,
    csv_rows,
    field_at,
    format_of,
    header_columns,
    jsonl_rows,
    open_text,
    projected_columns,
)
from transforms.urls import already_normal, url_sha256_digests, url_sha256_of
from transforms.write import output_dir

# (row ids of the block, computed only when called; its url values, an Arrow string
# array or a list) -> which rows of the block to drop, as a bool array
DropRule = Callable[[Callable[[], list[str]], Any], np.ndarray]

_SHA256_HEX = set("0123456789abcdef")


def drop_by_row_id(removed: set[str]) -> DropRule:
    def rule(row_ids, urls):
        ids = row_ids()
        return np.fromiter((row_id in removed for row_id in ids), dtype=bool, count=len(ids))

    return rule


def drop_by_url_sha256(removed: Iterable[str]) -> DropRule:
    """Rows whose non-blank URL's ``url_sha256_of`` is one of ``removed`` (hex digests),
    for a whole block at once: URLs hashed in bulk, compared as raw digests."""
    # Compared as raw digests, so a list published in uppercase hex matches too.
    digests = {bytes.fromhex(k) for k in (k.lower() for k in removed if isinstance(k, str))
               if len(k) == 64 and set(k) <= _SHA256_HEX}

    def rule(row_ids, urls):
        if not isinstance(urls, (pa.Array, pa.ChunkedArray)):  # text formats: a row at a time
            return np.fromiter((isinstance(u, str) and bool(u.strip())
                                and bytes.fromhex(url_sha256_of(u)) in digests for u in urls), dtype=bool)
        if isinstance(urls, pa.ChunkedArray):
            urls = urls.combine_chunks()
        normal = already_normal(urls)
        found = url_sha256_digests(urls, normal)
        mask = np.fromiter((d in digests for d in found), dtype=bool, count=len(found))
        # A blank URL is never dropped; a URL already normal is not blank.
        check = np.flatnonzero(mask & ~normal)
        if len(check):
            for i, url in zip(check.tolist(), urls.take(pa.array(check)).to_pylist()):
                mask[i] = bool(url.strip())
        return mask

    return rule


def _row_ids(source: str, start: int, count: int, keys: list | None) -> list[str]:
    if keys is not None:
        return [str(k) if k is not None else f"{source}:{start + i}" for i, k in enumerate(keys)]
    return [f"{source}:{start + i}" for i in range(count)]


def clean_file(path: str, source: str, out_path: str, spec: DatasetSpec, drop: DropRule) -> tuple[int, int]:
    """Copy `path` to `out_path` without the rows `drop` selects; return (kept, dropped).

    Row ids are computed exactly as the read stage computes them, so `drop_by_row_id`
    with the audit's removals selects the same rows the audit removed.
    """
    fmt = format_of(path, spec.format)
    if fmt == "parquet":
        return _clean_parquet(path, source, out_path, spec, drop)
    return _clean_text(path, source, out_path, spec, drop, fmt)


def _clean_parquet(path, source, out_path, spec, drop) -> tuple[int, int]:
    kept = dropped = 0
    position = 0
    with FileSystems.open(path) as handle:
        parquet = pq.ParquetFile(handle)
        schema = parquet.schema_arrow
        projected_columns(schema.names, spec, path)
        with FileSystems.create(out_path) as sink, pq.ParquetWriter(sink, schema) as writer:
            for batch in parquet.iter_batches(batch_size=spec.read_batch_rows):
                urls = batch.column(spec.url_col)
                if not pa.types.is_string(urls.type):  # text in other spellings (dictionary, large_string)
                    urls = pa.array(urls.to_pylist(), pa.string())

                def row_ids(start=position, batch=batch):
                    keys = batch.column(spec.id_col).to_pylist() if spec.id_col else None
                    return _row_ids(source, start, batch.num_rows, keys)

                mask = drop(row_ids, urls)
                position += batch.num_rows
                keep = pa.array(~mask, pa.bool_())
                table = pa.Table.from_batches([batch], schema=schema).filter(keep)
                writer.write_table(table)
                kept += table.num_rows
                dropped += batch.num_rows - table.num_rows
    return kept, dropped


def _clean_text(path, source, out_path, spec, drop, fmt) -> tuple[int, int]:
    """CSV/TSV rows are rewritten field for field as read (same header, rows longer or
    shorter than it left so); JSONL lines are copied verbatim. Rows are read and counted
    by the read stage's own helpers, so row positions agree. Output is UTF-8 without a
    byte order mark, gzip when `out_path` ends in .gz."""
    kept = dropped = 0
    with FileSystems.open(path) as handle, FileSystems.create(out_path) as sink:
        text = open_text(handle)
        out = codecs.getwriter("utf-8")(sink)
        if fmt in ("csv", "tsv"):
            rows = csv_rows(text, fmt)
            header = next(rows, None)
            if header is None:  # an empty file cleans to an empty file
                return 0, 0
            places = header_columns(header, spec, path)
            url_at, key_at = places[spec.url_col], places.get(spec.id_col)
            writer = csv.writer(out, delimiter="," if fmt == "csv" else "\t", lineterminator="\n")
            writer.writerow(header)
            for position, row in enumerate(rows):
                key = [field_at(row, key_at)] if spec.id_col else None
                if drop(lambda: _row_ids(source, position, 1, key), [field_at(row, url_at)])[0]:
                    dropped += 1
                else:
                    writer.writerow(row)
                    kept += 1
        else:
            for position, (line, row) in enumerate(jsonl_rows(text, path, spec.url_col)):
                key = [row.get(spec.id_col)] if spec.id_col else None
                if drop(lambda: _row_ids(source, position, 1, key), [row.get(spec.url_col)])[0]:
                    dropped += 1
                else:
                    out.write(line if line.endswith("\n") else line + "\n")
                    kept += 1
    return kept, dropped


class _CleanFiles(beam.DoFn):
    def __init__(self, spec: DatasetSpec, sources: dict[str, str], out_dir: str, by: str):
        self._spec, self._sources, self._out_dir, self._by = spec, sources, out_dir, by
        self._kept = Metrics.counter("clean", "rows_kept")
        self._dropped = Metrics.counter("clean", "rows_dropped")
        # The removed keys as a set, built once per side-input object rather than per file.
        self._removed_source: Iterable[str] | None = None
        self._rule: DropRule | None = None

    def process(self, path: str, removed: Iterable[str]):
        if removed is not self._removed_source:
            keys = set(removed)
            self._rule = drop_by_row_id(keys) if self._by == "row_id" else drop_by_url_sha256(keys)
            self._removed_source = removed
        source = self._sources[path]
        out_path = output_dir(self._out_dir, source)  # FileSystems.create makes local folders
        kept, dropped = clean_file(path, source, out_path, self._spec, self._rule)
        self._kept.inc(kept)
        self._dropped.inc(dropped)
        yield {"file": out_path, "kept": kept, "dropped": dropped}


class WriteCleanDataset(beam.PTransform):
    """Input files + removed keys (row ids or url_sha256s, a PCollection of str) ->
    cleaned files under `out_dir`, one per input file.

    The removed keys reach each worker as a side input: a removal list is small next to
    the dataset (thousands to millions of keys against billions of rows)."""

    def __init__(self, paths: list[str], sources: dict[str, str], spec: DatasetSpec, out_dir: str, by: str = "row_id"):
        super().__init__()
        if by not in ("row_id", "url_sha256"):
            raise ValueError(f"by must be row_id or url_sha256, not {by!r}")
        self._paths, self._sources, self._spec, self._out_dir, self._by = paths, sources, spec, out_dir, by

    def expand(self, removed_keys):
        return (
            removed_keys.pipeline
            | "CleanFiles" >> beam.Create(self._paths)
            | "SpreadFiles" >> beam.Reshuffle()
            | "Filter"
            >> beam.ParDo(
                _CleanFiles(self._spec, self._sources, self._out_dir, self._by),
                beam.pvalue.AsList(removed_keys),
            )
        )
