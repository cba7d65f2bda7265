"""Read stage: dataset files in, one audit record per input row out.

Parquet is read in Arrow batches with column projection; a file is split into read units
(row-group ranges) so a few thousand large LAION shards spread over many workers. CSV/TSV
and JSONL are read one file per unit. Row ids are stable across reruns: the dataset's own
id column when configured, else ``<source>:<row position>``.
"""
from __future__ import annotations

import csv
import io
import json
import posixpath
from dataclasses import dataclass
from typing import Iterable, Iterator

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms.records import new_record
from transforms.signals import url_sha256_of

FORMATS = ("parquet", "csv", "tsv", "jsonl")
_EXTENSIONS = {".parquet": "parquet", ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}


class DatasetError(ValueError):
    """The dataset cannot be read as configured (missing column, unknown format...)."""


@dataclass(frozen=True)
class DatasetSpec:
    url_col: str = "URL"
    caption_col: str = "TEXT"
    id_col: str | None = None
    format: str | None = None
    read_batch_rows: int = 65_536

    @classmethod
    def from_config(cls, cfg) -> "DatasetSpec":
        return cls(cfg.url_col, cfg.caption_col, cfg.id_col, cfg.format, cfg.read_batch_rows)


@dataclass(frozen=True)
class ReadUnit:
    """A slice of one file: rows [start, start + count) of `path` (count -1: to the end)."""

    path: str
    source: str  # the name row ids use for this file
    format: str
    start: int = 0
    count: int = -1
    row_groups: tuple[int, ...] = ()


def format_of(path: str, configured: str | None) -> str:
    if configured:
        return configured
    base = path[:-3] if path.endswith(".gz") else path
    ext = posixpath.splitext(base)[1].lower()
    try:
        return _EXTENSIONS[ext]
    except KeyError:
        raise DatasetError(
            f"dataset.format: cannot tell the format of '{path}' from its extension; set one of {FORMATS}"
        ) from None


def match_inputs(patterns: Iterable[str]) -> list[str]:
    """Expand globs (local, gs://, s3://) to a sorted, de-duplicated list of files."""
    paths: set[str] = set()
    for pattern in patterns:
        for match in FileSystems.match([pattern])[0].metadata_list:
            paths.add(match.path)
    if not paths:
        raise DatasetError(f"dataset.input: no file matches {list(patterns)}")
    return sorted(paths)


def source_names(paths: list[str]) -> dict[str, str]:
    """Name each file for its row ids: the base name, or the path below the common
    directory when base names collide (two `part-0.parquet` in different folders)."""
    names = {path: posixpath.basename(path) for path in paths}
    if len(set(names.values())) == len(paths):
        return names
    common = posixpath.commonpath(paths) if len(paths) > 1 else posixpath.dirname(paths[0])
    return {path: posixpath.relpath(path, common) for path in paths}


def plan_units(path: str, source: str, fmt: str, batch_rows: int) -> list[ReadUnit]:
    """Split a parquet file into row-group ranges of about `batch_rows` rows each."""
    if fmt != "parquet":
        return [ReadUnit(path, source, fmt)]
    with FileSystems.open(path) as handle:
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


def _projection(available: list[str], spec: DatasetSpec, path: str) -> list[str]:
    if spec.url_col not in available:
        raise DatasetError(
            f"dataset.url_col: column '{spec.url_col}' not in {path} (columns: {', '.join(available)})"
        )
    wanted = [spec.url_col, spec.caption_col, spec.id_col]
    for col in (spec.caption_col, spec.id_col):
        if col and col not in available:
            key = "dataset.caption_col" if col == spec.caption_col else "dataset.id_col"
            raise DatasetError(f"{key}: column '{col}' not in {path} (columns: {', '.join(available)})")
    return [c for c in dict.fromkeys(wanted) if c]


def read_unit_columns(unit: ReadUnit, spec: DatasetSpec) -> Iterator[tuple[int, dict[str, list]]]:
    """Yield (first row position, {column: values}) blocks of the projected columns."""
    if unit.format == "parquet":
        with FileSystems.open(unit.path) as handle:
            parquet = pq.ParquetFile(handle)
            columns = _projection(parquet.schema_arrow.names, spec, unit.path)
            position = unit.start
            if not unit.row_groups:
                return
            for batch in parquet.iter_batches(
                batch_size=spec.read_batch_rows, row_groups=list(unit.row_groups), columns=columns
            ):
                yield position, batch.to_pydict()
                position += batch.num_rows
        return
    rows = _read_text_rows(unit, spec)
    position = 0
    block: list[dict] = []
    columns: list[str] | None = None
    for row in rows:
        if columns is None:
            columns = [spec.url_col, spec.caption_col, spec.id_col]
            columns = [c for c in dict.fromkeys(columns) if c]
        block.append(row)
        if len(block) >= spec.read_batch_rows:
            yield position, {c: [r.get(c) for r in block] for c in columns}
            position += len(block)
            block = []
    if block:
        yield position, {c: [r.get(c) for r in block] for c in columns}


def _read_text_rows(unit: ReadUnit, spec: DatasetSpec) -> Iterator[dict]:
    with FileSystems.open(unit.path) as handle:
        text = io.TextIOWrapper(handle, encoding="utf-8", newline="")
        if unit.format in ("csv", "tsv"):
            reader = csv.DictReader(text, delimiter="," if unit.format == "csv" else "\t")
            _projection(list(reader.fieldnames or []), spec, unit.path)
            yield from reader
            return
        for line_no, line in enumerate(text, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DatasetError(f"{unit.path}:{line_no}: not a JSON object ({err.msg})") from None
            # A line that is valid JSON but not an object is still a row: it has no URL.
            yield row if isinstance(row, dict) else {}


def records_of_block(unit: ReadUnit, position: int, block: dict[str, list], spec: DatasetSpec) -> Iterator[dict]:
    urls = block[spec.url_col]
    captions = block.get(spec.caption_col, [None] * len(urls))
    keys = block.get(spec.id_col) if spec.id_col else None
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
    """Files -> audit records (one per input row), spread over workers by read unit."""

    def __init__(self, paths: list[str], spec: DatasetSpec):
        super().__init__()
        self._paths = paths
        self._spec = spec

    def expand(self, pbegin):
        sources = source_names(self._paths)
        return (
            pbegin
            | "Files" >> beam.Create(self._paths)
            | "PlanUnits" >> beam.ParDo(_PlanUnits(self._spec, sources))
            | "SpreadUnits" >> beam.Reshuffle()
            | "ReadRows" >> beam.ParDo(_ReadUnitRecords(self._spec))
        )


def input_schema(path: str, fmt: str) -> pa.Schema | None:
    """The Arrow schema of a parquet input (None for text formats)."""
    if fmt != "parquet":
        return None
    with FileSystems.open(path) as handle:
        return pq.ParquetFile(handle).schema_arrow
