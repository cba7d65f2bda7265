"""Read stage: dataset files in, one audit record per input row out.

Parquet is read in Arrow batches with column projection; a file is split into read units
(row-group ranges) so a few thousand large LAION shards spread over many workers. CSV/TSV
and JSONL are read one file per unit (UTF-8, a leading byte order mark ignored, `.gz`
decompressed). Row ids are stable across reruns: the dataset's own id column when
configured, else ``<source>:<row position>``. The clean stage reads text files through
the same helpers (transforms/dataset_files.py, which imports no Beam), so both count the
same rows.

A dataset's own image hashes (img2dataset's ``md5`` column: ``dataset.md5_col``,
``dataset.sha256_col``) become the record's ``content_md5`` / ``content_sha256`` when they
are hex digests of the right length (lowercased; anything else is left None), so exact
hash takedown entries match without a download. A fetched and hashed image replaces them
with its bytes' own hashes (transforms.hashing.hash_record).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

# The beam-free half of reading, named here too for the read stage's users.
from transforms.dataset_files import (  # noqa: F401
    FORMATS,
    DatasetError,
    DatasetSpec,
    check_dataset,
    csv_rows,
    field_at,
    format_of,
    header_columns,
    jsonl_rows,
    match_inputs,
    naming_file,
    open_text,
    projected_columns,
    source_names,
)
from transforms.dataset_files import _wanted_columns
from transforms.records import new_record
from transforms.urls import url_sha256_of

# In-flight (file path, row position) of a record, set with DatasetSpec.positions: how
# transforms.precomputed finds a row's published vector whatever the row id is.
POSITION_KEY = "_position"
_HEX = {32: re.compile(r"[0-9a-f]{32}"), 64: re.compile(r"[0-9a-f]{64}")}


@dataclass(frozen=True)
class ReadUnit:
    """A slice of one file: rows [start, start + count) of `path` (count -1: to the end)."""

    path: str
    source: str  # the name row ids use for this file
    format: str
    start: int = 0
    count: int = -1
    row_groups: tuple[int, ...] = ()


def plan_units(path: str, source: str, fmt: str, batch_rows: int) -> list[ReadUnit]:
    """Split a parquet file into row-group ranges of about `batch_rows` rows each."""
    if fmt != "parquet":
        return [ReadUnit(path, source, fmt)]
    with naming_file(path, fmt), FileSystems.open(path) as handle:
        meta = pq.ParquetFile(handle).metadata
    units, groups, start, rows = [], [], 0, 0
    for index in range(meta.num_row_groups):
        groups.append(index)
        rows += meta.row_group(index).num_rows
        if rows >= batch_rows:
            units.append(ReadUnit(path, source, fmt, start, rows, tuple(groups)))
            start, rows, groups = start + rows, 0, []
    if groups or not units:
        units.append(ReadUnit(path, source, fmt, start, rows, tuple(groups)))
    return units


def parquet_unit_batches(unit: ReadUnit, spec: DatasetSpec) -> Iterator[tuple[int, pa.RecordBatch]]:
    """Yield (first row position, record batch of the projected columns) of a parquet unit."""
    with naming_file(unit.path, unit.format), FileSystems.open(unit.path) as handle:
        parquet = pq.ParquetFile(handle)
        columns = projected_columns(parquet.schema_arrow.names, spec, unit.path)
        position = unit.start
        if not unit.row_groups:
            return
        for batch in parquet.iter_batches(
            batch_size=spec.read_batch_rows, row_groups=list(unit.row_groups), columns=columns
        ):
            yield position, batch
            position += batch.num_rows


def read_unit_columns(unit: ReadUnit, spec: DatasetSpec) -> Iterator[tuple[int, dict[str, list]]]:
    """Yield (first row position, {column: values}) blocks of the projected columns."""
    if unit.format == "parquet":
        for position, batch in parquet_unit_batches(unit, spec):
            yield position, batch.to_pydict()
        return
    columns = _wanted_columns(spec)
    position = 0
    block: list[dict] = []
    for row in _read_text_rows(unit, spec):
        block.append(row)
        if len(block) >= spec.read_batch_rows:
            yield position, {c: [r.get(c) for r in block] for c in columns}
            position += len(block)
            block = []
    if block:
        yield position, {c: [r.get(c) for r in block] for c in columns}


def _read_text_rows(unit: ReadUnit, spec: DatasetSpec) -> Iterator[dict]:
    with naming_file(unit.path, unit.format), FileSystems.open(unit.path) as handle:
        text = open_text(handle)
        if unit.format in ("csv", "tsv"):
            rows = csv_rows(text, unit.format)
            header = next(rows, None)
            if header is None:  # an empty file: no header, no rows
                return
            places = header_columns(header, spec, unit.path)
            # Fields past the header's length are kept by clean but have no column here.
            for row in rows:
                yield {col: field_at(row, index) for col, index in places.items()}
            return
        for _, row in jsonl_rows(text, unit.path, spec.url_col):
            yield row


def hex_digest(value, digits: int) -> str | None:
    """A dataset's digest value as lowercase hex of `digits` digits, or None when it is
    not one (raw digest bytes of the right length are taken as hex)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex() if len(value) * 2 == digits else None
    if not isinstance(value, str):
        return None
    value = value.strip().lower()
    return value if _HEX[digits].fullmatch(value) else None


def records_of_block(unit: ReadUnit, position: int, block: dict[str, list], spec: DatasetSpec) -> Iterator[dict]:
    urls = block[spec.url_col]
    captions = block.get(spec.caption_col, [None] * len(urls))
    keys = block.get(spec.id_col) if spec.id_col else None
    md5s = block.get(spec.md5_col) if spec.md5_col else None
    sha256s = block.get(spec.sha256_col) if spec.sha256_col else None
    for offset, url in enumerate(urls):
        key = None if keys is None or keys[offset] is None else str(keys[offset])
        row_id = key if key is not None else f"{unit.source}:{position + offset}"
        caption = captions[offset]
        record = new_record(
            row_id,
            url if isinstance(url, str) else (None if url is None else repr(url)),
            caption if isinstance(caption, str) or caption is None else str(caption),
            row_key=key,
        )
        if md5s is not None:
            record["content_md5"] = hex_digest(md5s[offset], 32)
        if sha256s is not None:
            record["content_sha256"] = hex_digest(sha256s[offset], 64)
        if spec.positions:
            record[POSITION_KEY] = (unit.path, position + offset)
        if isinstance(url, str) and url.strip():
            record["url_sha256"] = url_sha256_of(url)
        else:
            # Null, empty and non-string URLs are audited rows, not read errors.
            record["status"] = "invalid_url"
            record["error"] = "empty URL" if url is None or isinstance(url, str) else f"URL is a {type(url).__name__}"
        yield record


class _PlanUnits(beam.DoFn):
    def __init__(self, spec: DatasetSpec, sources: dict[str, str]):
        self._spec = spec
        self._sources = sources

    def process(self, path: str):
        yield from plan_units(path, self._sources[path], format_of(path, self._spec.format), self._spec.read_batch_rows)


class _ReadUnitRecords(beam.DoFn):
    def __init__(self, spec: DatasetSpec):
        self._spec = spec
        self._rows_in = Metrics.counter("audit", "rows_in")

    def process(self, unit: ReadUnit):
        for position, block in read_unit_columns(unit, self._spec):
            for record in records_of_block(unit, position, block, self._spec):
                self._rows_in.inc()
                yield record


class ReadDataset(beam.PTransform):
    """Files -> audit records (one per input row), spread over workers by read unit.

    `units`: read these units only, planned beforehand (a local run's group of rows,
    pipelines/local_driver.py), instead of every unit of `paths`. `tables`: tables of
    audit rows (AUDIT_SCHEMA), one per read block, instead of records (a fetch-off audit,
    transforms/table_audit.py)."""

    def __init__(self, paths: list[str], spec: DatasetSpec, units: list[ReadUnit] | None = None,
                 tables: bool = False):
        super().__init__()
        self._paths = paths
        self._spec = spec
        self._units = list(units) if units is not None else None
        self._tables = tables

    def _reader(self) -> beam.DoFn:
        if self._tables:
            from transforms.table_audit import ReadUnitTables

            return ReadUnitTables(self._spec)
        return _ReadUnitRecords(self._spec)

    def expand(self, pbegin):
        if self._units is not None:
            return (
                pbegin
                | "Units" >> beam.Create(self._units)
                | "SpreadUnits" >> beam.Reshuffle()
                | "ReadRows" >> beam.ParDo(self._reader())
            )
        sources = source_names(self._paths)
        return (
            pbegin
            | "Files" >> beam.Create(self._paths)
            | "PlanUnits" >> beam.ParDo(_PlanUnits(self._spec, sources))
            | "SpreadUnits" >> beam.Reshuffle()
            | "ReadRows" >> beam.ParDo(self._reader())
        )

