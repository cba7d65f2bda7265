"""Read stage: dataset files in, one audit record per input row out.

Parquet is read in Arrow batches with column projection; a file is split into read units
(row-group ranges) so a few thousand large LAION shards spread over many workers. CSV/TSV
and JSONL are read one file per unit (UTF-8, a leading byte order mark ignored, `.gz`
decompressed). Row ids are stable across reruns: the dataset's own id column when
configured, else ``<source>:<row position>``. The clean stage reads text files through
the same helpers here, so both count the same rows.

A dataset's own image hashes (img2dataset's ``md5`` column: ``dataset.md5_col``,
``dataset.sha256_col``) become the record's ``content_md5`` / ``content_sha256`` when they
are hex digests of the right length (lowercased; anything else is left None), so exact
hash takedown entries match without a download. A fetched and hashed image replaces them
with its bytes' own hashes (transforms.hashing.hash_record).
"""
from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import posixpath
import re
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Iterable, Iterator, TextIO

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms.records import new_record
from transforms.urls import url_sha256_of

FORMATS = ("parquet", "csv", "tsv", "jsonl")
_EXTENSIONS = {".parquet": "parquet", ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}
# In-flight (file path, row position) of a record, set with DatasetSpec.positions: how
# transforms.precomputed finds a row's published vector whatever the row id is.
POSITION_KEY = "_position"
_HEX = {32: re.compile(r"[0-9a-f]{32}"), 64: re.compile(r"[0-9a-f]{64}")}


class DatasetError(ValueError):
    """The dataset cannot be read as configured (missing column, unknown format...)."""


@contextlib.contextmanager
def naming_file(path: str, fmt: str):
    """Turn what a broken file raises while read (a truncated parquet, bytes that are not
    UTF-8, a bad gzip stream, a malformed CSV quote) into one DatasetError line that
    names the file, whoever reads it: the launch-time check or a worker."""
    try:
        yield
    except DatasetError:
        raise
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not UTF-8 text ({err.reason}, byte 0x{err.object[err.start]:02x}); "
                           "save the file as UTF-8") from None
    except pa.ArrowException as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DatasetError(f"{path}: not a readable {fmt} file ({first})") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DatasetError(f"{path}: cannot be decompressed ({err or type(err).__name__})") from None
    except csv.Error as err:
        raise DatasetError(f"{path}: not readable as {fmt} ({err})") from None
    except OSError as err:
        raise DatasetError(f"{path}: cannot be read ({err.strerror or err})") from None


@dataclass(frozen=True)
class DatasetSpec:
    url_col: str = "URL"
    caption_col: str = "TEXT"
    id_col: str | None = None
    format: str | None = None
    read_batch_rows: int = 65_536
    md5_col: str | None = None  # the dataset's MD5 of the image bytes (img2dataset's `md5`)
    sha256_col: str | None = None
    positions: bool = False  # records carry POSITION_KEY (precomputed embeddings need it)

    @classmethod
    def from_config(cls, cfg, positions: bool = False) -> "DatasetSpec":
        return cls(cfg.url_col, cfg.caption_col, cfg.id_col, cfg.format, cfg.read_batch_rows,
                   md5_col=cfg.md5_col, sha256_col=cfg.sha256_col, positions=positions)


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
    common = posixpath.commonpath(paths)  # only reached with two or more paths
    return {path: posixpath.relpath(path, common) for path in paths}


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


def _wanted_columns(spec: DatasetSpec) -> list[str]:
    return [c for c in dict.fromkeys([spec.url_col, spec.caption_col, spec.id_col, spec.md5_col, spec.sha256_col]) if c]


def _missing_column(key: str, col: str, path: str, available: Iterable[str], seen: str) -> DatasetError:
    return DatasetError(f"{key}: column '{col}' not in {path} ({seen}: {', '.join(available)})")


def projected_columns(available: list[str], spec: DatasetSpec, path: str, seen: str = "columns") -> list[str]:
    """The URL, caption, id and hash columns, each checked to be among `available`."""
    for key, col in (("dataset.url_col", spec.url_col), ("dataset.caption_col", spec.caption_col),
                     ("dataset.id_col", spec.id_col), ("dataset.md5_col", spec.md5_col),
                     ("dataset.sha256_col", spec.sha256_col)):
        if col and col not in available:
            raise _missing_column(key, col, path, available, seen)
    return _wanted_columns(spec)


class _ReadableHandle(io.RawIOBase):
    """A `read(n)`-only file object (Beam's gzip CompressedFile) as a raw stream that
    io.TextIOWrapper accepts."""

    def __init__(self, handle: BinaryIO):
        super().__init__()
        self._handle = handle

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._handle.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def open_text(handle: BinaryIO) -> TextIO:
    """The text of a FileSystems.open handle: UTF-8 with any byte order mark dropped, line
    endings untranslated (as csv needs). Lines end only at \\n, \\r or \\r\\n — not at the
    other Unicode line breaks captions may hold, which codecs' readers would split on."""
    buffered = io.BufferedReader(_ReadableHandle(handle), buffer_size=1 << 20)
    return io.TextIOWrapper(buffered, encoding="utf-8-sig", newline="")


def csv_rows(text: TextIO, fmt: str) -> Iterator[list[str]]:
    """The rows of a CSV/TSV text as read, header first. Blank lines are not rows."""
    return (row for row in csv.reader(text, delimiter="," if fmt == "csv" else "\t") if row)


def header_columns(header: list[str], spec: DatasetSpec, path: str) -> dict[str, int]:
    """Where each projected column sits in a CSV/TSV row (its first place in the header)."""
    return {col: header.index(col) for col in projected_columns(header, spec, path)}


def field_at(row: list[str], index: int | None) -> str | None:
    """A row's field by header position; a row shorter than the header lacks it."""
    return row[index] if index is not None and index < len(row) else None


def _jsonl_value(line: str, path: str, line_no: int):
    try:
        return json.loads(line)
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}:{line_no}: not a JSON object ({err.msg})") from None


def jsonl_rows(text: TextIO, path: str, url_col: str) -> Iterator[tuple[str, dict]]:
    """(line, row) for each non-blank JSONL line; a line that is JSON but not an object is
    a row with no fields. Raises DatasetError on a line that is not JSON, and after the
    last line when object rows exist but none has `url_col` (a misnamed column)."""
    objects = url_seen = False
    keys_seen: dict[str, None] = {}
    for line_no, line in enumerate(text, start=1):
        if not line.strip():
            continue
        row = _jsonl_value(line, path, line_no)
        if isinstance(row, dict):
            objects = True
            if not url_seen:
                url_seen = url_col in row
                if len(keys_seen) < 20:  # enough to spot the right name, bounded however wide rows are
                    keys_seen.update(dict.fromkeys(row))
            yield line, row
        else:
            yield line, {}
    if objects and not url_seen:
        raise _missing_column("dataset.url_col", url_col, path, keys_seen, "keys seen")


def read_unit_columns(unit: ReadUnit, spec: DatasetSpec) -> Iterator[tuple[int, dict[str, list]]]:
    """Yield (first row position, {column: values}) blocks of the projected columns."""
    if unit.format == "parquet":
        with naming_file(unit.path, unit.format), FileSystems.open(unit.path) as handle:
            parquet = pq.ParquetFile(handle)
            columns = projected_columns(parquet.schema_arrow.names, spec, unit.path)
            position = unit.start
            if not unit.row_groups:
                return
            for batch in parquet.iter_batches(
                batch_size=spec.read_batch_rows, row_groups=list(unit.row_groups), columns=columns
            ):
                yield position, batch.to_pydict()
                position += batch.num_rows
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


def _available_columns(path: str, fmt: str) -> tuple[list[str], str] | None:
    """The column names a file offers and what to call them in errors; None when it has
    none to check (an empty text file, a JSONL without object rows)."""
    with naming_file(path, fmt), FileSystems.open(path) as handle:
        if fmt == "parquet":
            return pq.ParquetFile(handle).schema_arrow.names, "columns"
        text = open_text(handle)
        if fmt in ("csv", "tsv"):
            header = next(csv_rows(text, fmt), None)
            return (header, "columns") if header is not None else None
        keys: dict[str, None] = {}
        objects = 0
        for line_no, line in enumerate(text, start=1):
            if objects >= 100:
                break
            if line.strip():
                row = _jsonl_value(line, path, line_no)
                if isinstance(row, dict):
                    objects += 1
                    keys.update(dict.fromkeys(row))
        return (list(keys), "keys seen") if objects else None


def check_dataset(paths: list[str], spec: DatasetSpec) -> None:
    """Launch-time check, before any worker starts: every file has a known format, and
    the first file of each format with names to check holds the URL, caption and id
    columns (parquet: its schema; CSV/TSV: its header; JSONL: the keys of its first 100
    object rows). Empty files are passed over for the next file of their format.

    Raises DatasetError naming the config key at fault."""
    formats = {path: format_of(path, spec.format) for path in paths}
    checked: set[str] = set()
    for path, fmt in formats.items():
        if fmt in checked:
            continue
        available = _available_columns(path, fmt)
        if available is not None:
            projected_columns(available[0], spec, path, seen=available[1])
            checked.add(fmt)


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
    pipelines/local_driver.py), instead of every unit of `paths`."""

    def __init__(self, paths: list[str], spec: DatasetSpec, units: list[ReadUnit] | None = None):
        super().__init__()
        self._paths = paths
        self._spec = spec
        self._units = list(units) if units is not None else None

    def expand(self, pbegin):
        if self._units is not None:
            return (
                pbegin
                | "Units" >> beam.Create(self._units)
                | "SpreadUnits" >> beam.Reshuffle()
                | "ReadRows" >> beam.ParDo(_ReadUnitRecords(self._spec))
            )
        sources = source_names(self._paths)
        return (
            pbegin
            | "Files" >> beam.Create(self._paths)
            | "PlanUnits" >> beam.ParDo(_PlanUnits(self._spec, sources))
            | "SpreadUnits" >> beam.Reshuffle()
            | "ReadRows" >> beam.ParDo(_ReadUnitRecords(self._spec))
        )

