"""Clean stage: a copy of the dataset with removed rows left out, in the input's own
format, columns and types — a drop-in replacement for the original files.

One output file per input file, same base name, so a cleaned shard replaces its original.
Rows are dropped either by audit row id (the audit's own `clean/`) or by `url_sha256`
(`laion-audit apply`, which cleans any copy of the dataset with a published removal list).
A parquet file that loses no row is copied byte for byte: the same rows and schema as a
rewrite, without decoding and re-encoding every column (most shards of a large dataset
lose none).

Plain functions, no Beam at import: a local `laion-audit apply` calls `clean_file` in its
own process; transforms/clean_beam.py (`WriteCleanDataset`) calls it on Beam's workers.
"""
from __future__ import annotations

import codecs
import contextlib
import csv
import os
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from transforms.dataset_files import (
    DatasetError,
    DatasetSpec,
    create_output,
    csv_rows,
    field_at,
    format_of,
    header_columns,
    jsonl_rows,
    naming_file,
    open_input,
    open_text,
    projected_columns,
    reads_natively,
)
from transforms.urls import NotText, already_normal, url_sha256_digests, url_sha256_of

# (row ids of the block, computed only when called; its url values, an Arrow array or a
# list) -> which rows of the block to drop, as a bool array
DropRule = Callable[[Callable[[], list[str]], Any], np.ndarray]

_SHA256_HEX = set("0123456789abcdef")


def drop_by_row_id(removed: set[str]) -> DropRule:
    def rule(row_ids, urls):
        ids = row_ids()
        return np.fromiter((row_id in removed for row_id in ids), dtype=bool, count=len(ids))

    return rule


def removed_digests(removed: Iterable[Any]) -> set[bytes]:
    """The raw digests of the hex SHA-256 values among `removed` (any case); anything
    else (not a string, not 64 hex digits) matches no row and is left out."""
    return {bytes.fromhex(k) for k in (k.lower() for k in removed if isinstance(k, str))
            if len(k) == 64 and set(k) <= _SHA256_HEX}


def drop_by_url_sha256(removed: Iterable[str]) -> DropRule:
    """Rows whose non-blank URL's ``url_sha256_of`` is one of ``removed`` (hex digests),
    for a whole block at once: URLs hashed in bulk, compared as raw digests (so a list
    published in uppercase hex matches too). A dictionary-encoded column is hashed once
    per distinct URL. Raises urls.NotText for a column that is not text."""
    digests = removed_digests(removed)

    def rule(row_ids, urls):
        if not isinstance(urls, (pa.Array, pa.ChunkedArray)):  # the text formats' values
            try:  # a value that is not text (a JSON number) matches nothing, as a null
                urls = pa.array([u if isinstance(u, str) else None for u in urls], pa.string())
            except (pa.ArrowException, UnicodeEncodeError):  # a lone surrogate (JSON's "\ud800"): a row at a time
                return np.fromiter((isinstance(u, str) and bool(u.strip())
                                    and bytes.fromhex(url_sha256_of(u)) in digests for u in urls), dtype=bool)
        return _removed_urls(urls, digests)

    return rule


def _removed_urls(urls: pa.Array | pa.ChunkedArray, digests: set[bytes]) -> np.ndarray:
    if isinstance(urls, pa.ChunkedArray):
        urls = urls.combine_chunks()
    if pa.types.is_null(urls.type):  # a column of nulls only: no URL to match
        return np.zeros(len(urls), dtype=bool)
    if pa.types.is_dictionary(urls.type):
        values = _removed_urls(urls.dictionary, digests)
        if not values.any():
            return np.zeros(len(urls), dtype=bool)
        indices = urls.indices
        hit = values[indices.fill_null(0).to_numpy(zero_copy_only=False)]
        return hit & indices.is_valid().to_numpy(zero_copy_only=False)
    normal = already_normal(urls)
    found = url_sha256_digests(urls, normal)
    mask = np.fromiter(map(digests.__contains__, found), dtype=bool, count=len(found))
    # A blank URL is never dropped; a URL already normal is not blank.
    check = np.flatnonzero(mask & ~normal)
    if len(check):
        for i, url in zip(check.tolist(), urls.take(pa.array(check)).cast(pa.string()).to_pylist()):
            mask[i] = bool(url.strip())
    return mask


def _row_ids(source: str, start: int, count: int, keys: list | None) -> list[str]:
    if keys is not None:
        return [str(k) if k is not None else f"{source}:{start + i}" for i, k in enumerate(keys)]
    return [f"{source}:{start + i}" for i in range(count)]


def clean_file(path: str, source: str, out_path: str, spec: DatasetSpec, drop: DropRule) -> tuple[int, int]:
    """Copy `path` to `out_path` without the rows `drop` selects; return (kept, dropped).

    Row ids are computed exactly as the read stage computes them, so `drop_by_row_id`
    with the audit's removals selects the same rows the audit removed. A file that
    cannot be read raises DatasetError naming it.
    """
    fmt = format_of(path, spec.format)
    if fmt == "parquet":
        return _clean_parquet(path, source, out_path, spec, drop)
    return _clean_text(path, source, out_path, spec, drop, fmt)


def _named(rows: Iterable, path: str, fmt: str) -> Iterator:
    """`rows` read under naming_file: what reading raises names the file (and what the
    consumer raises, writing, passes as it is)."""
    with naming_file(path, fmt):
        yield from rows


def _drop_mask(drop: DropRule, batch: pa.RecordBatch, source: str, start: int, spec: DatasetSpec,
               path: str) -> np.ndarray:
    def row_ids():
        keys = batch.column(spec.id_col).to_pylist() if spec.id_col else None
        return _row_ids(source, start, batch.num_rows, keys)

    urls = batch.column(spec.url_col)
    try:
        return drop(row_ids, urls)
    except NotText:
        raise DatasetError(f"dataset.url_col: column '{spec.url_col}' in {path} holds {urls.type}, "
                           "not text") from None


def _clean_parquet(path, source, out_path, spec, drop) -> tuple[int, int]:
    """First only the URL (and id) column is read, until a row is dropped; a file that
    loses none is copied. Otherwise it is rewritten batch by batch with the input's
    schema, reusing the masks of the batches already scanned."""
    with contextlib.ExitStack() as stack:
        with naming_file(path, "parquet"):
            parquet = pq.ParquetFile(path if reads_natively(path) else stack.enter_context(open_input(path)))
            schema = parquet.schema_arrow
        projected_columns(schema.names, spec, path)
        scan_columns = [c for c in dict.fromkeys([spec.url_col, spec.id_col]) if c]
        scanned: list[tuple[int, int, np.ndarray]] = []  # (start, rows, mask) per batch read
        position = 0
        scan = _named(parquet.iter_batches(batch_size=spec.read_batch_rows, columns=scan_columns), path, "parquet")
        for batch in scan:
            mask = _drop_mask(drop, batch, source, position, spec, path)
            scanned.append((position, batch.num_rows, mask))
            position += batch.num_rows
            if mask.any():
                scan.close()
                break
        else:
            _copy_file(path, out_path)
            return position, 0
        kept = dropped = position = 0
        with create_output(out_path) as sink, contextlib.ExitStack() as writing:
            writer = None
            batches = _named(parquet.iter_batches(batch_size=spec.read_batch_rows), path, "parquet")
            for index, batch in enumerate(batches):
                if writer is None:
                    writer = writing.enter_context(
                        pq.ParquetWriter(sink, schema, use_dictionary=dictionary_columns(parquet.metadata, batch)))
                if index < len(scanned) and scanned[index][:2] == (position, batch.num_rows):
                    mask = scanned[index][2]
                else:
                    mask = _drop_mask(drop, batch, source, position, spec, path)
                position += batch.num_rows
                table = pa.Table.from_batches([batch], schema=schema).filter(pa.array(~mask, pa.bool_()))
                writer.write_table(table)
                kept += table.num_rows
                dropped += batch.num_rows - table.num_rows
    return kept, dropped


# Bytes per value of the fixed-width parquet types as PLAIN writes them.
_PLAIN_BYTES = {"INT32": 4, "INT64": 8, "FLOAT": 4, "DOUBLE": 8, "INT96": 12}


def dictionary_columns(meta: pq.FileMetaData, batch: pa.RecordBatch) -> list[str] | bool:
    """The parquet columns (leaf paths) a rewrite dictionary-encodes: those whose chunk in
    the input's first row group is under 3/4 of its plain size, i.e. where the input shows
    that a dictionary pays (low-cardinality sizes, flags, languages), not where it only
    costs (unique URLs and captions, random floats; a writer falls back to plain there).
    Nested columns and text that `batch` cannot size keep the default (a dictionary);
    True, all of them, when the input has no rows."""
    group = next((meta.row_group(i) for i in range(meta.num_row_groups) if meta.row_group(i).num_rows), None)
    if group is None:
        return True
    chosen = []
    for i in range(meta.num_columns):
        chunk, column = group.column(i), meta.schema.column(i)
        per_value = chunk.total_uncompressed_size / max(chunk.num_values, 1)
        plain = _PLAIN_BYTES.get(column.physical_type)
        if column.physical_type == "FIXED_LEN_BYTE_ARRAY":
            plain = column.length
        elif column.physical_type == "BYTE_ARRAY" and column.path in batch.schema.names:
            values = batch.column(column.path)
            if pa.types.is_string(values.type) or pa.types.is_binary(values.type) \
                    or pa.types.is_large_string(values.type) or pa.types.is_large_binary(values.type):
                lengths = pc.binary_length(values)
                plain = 4 + (pc.sum(lengths).as_py() or 0) / max(len(values) - values.null_count, 1)
        if plain is None or per_value < 0.75 * plain:
            chosen.append(column.path)
    return chosen


def _copy_file(path: str, out_path: str) -> None:
    """`path`'s bytes to `out_path` as they are (no codec either way). What reading
    raises names the input (DatasetError); what writing raises, the output (OSError)."""
    with contextlib.ExitStack() as stack:
        if reads_natively(path) and reads_natively(out_path):
            with naming_file(path, "parquet"):
                source = stack.enter_context(open(path, "rb"))
            folder = os.path.dirname(out_path)
            with _writing(out_path):
                if folder:
                    os.makedirs(folder, exist_ok=True)
                sink = stack.enter_context(_closing_written(open(out_path, "wb"), out_path))
        else:
            from apache_beam.io.filesystem import CompressionTypes
            from apache_beam.io.filesystems import FileSystems

            plain = CompressionTypes.UNCOMPRESSED
            with naming_file(path, "parquet"):
                source = stack.enter_context(FileSystems.open(path, compression_type=plain))
            with _writing(out_path):
                sink = stack.enter_context(_closing_written(FileSystems.create(out_path, compression_type=plain),
                                                            out_path))
        while True:
            with naming_file(path, "parquet"):
                block = source.read(1 << 20)
            if not block:
                break
            with _writing(out_path):
                sink.write(block)


@contextlib.contextmanager
def _writing(out_path: str) -> Iterator[None]:
    """An OSError while writing `out_path`, as one line naming it."""
    try:
        yield
    except OSError as err:
        raise OSError(f"{out_path}: cannot be written ({err.strerror or err})") from err


@contextlib.contextmanager
def _closing_written(sink, out_path: str):
    """`sink`, closed at the end; what closing raises (a flush) names `out_path`."""
    try:
        yield sink
    finally:
        with _writing(out_path):
            sink.close()


def _clean_text(path, source, out_path, spec, drop, fmt) -> tuple[int, int]:
    """CSV/TSV rows are rewritten field for field as read (same header, rows longer or
    shorter than it left so); JSONL lines are copied verbatim. Rows are read and counted
    by the read stage's own helpers, so row positions agree, and judged a block of
    `read_batch_rows` at a time. Output is UTF-8 without a byte order mark, gzip when
    `out_path` ends in .gz."""
    kept = dropped = 0
    with open_input(path) as handle, create_output(out_path) as sink:
        text = open_text(handle)
        out = codecs.getwriter("utf-8")(sink)
        if fmt in ("csv", "tsv"):
            rows = _named(csv_rows(text, fmt), path, fmt)
            header = next(rows, None)
            if header is None:  # an empty file cleans to an empty file
                return 0, 0
            places = header_columns(header, spec, path)
            url_at, key_at = places[spec.url_col], places.get(spec.id_col)
            writer = csv.writer(out, delimiter="," if fmt == "csv" else "\t", lineterminator="\n")
            writer.writerow(header)
            emit = writer.writerow
            items = ((row, field_at(row, url_at), field_at(row, key_at)) for row in rows)
        else:
            def emit(line):
                out.write(line if line.endswith("\n") else line + "\n")

            items = ((line, row.get(spec.url_col), row.get(spec.id_col) if spec.id_col else None)
                     for line, row in _named(jsonl_rows(text, path, spec.url_col), path, fmt))
        start = 0
        for block in _blocks(items, spec.read_batch_rows):
            keys = [key for _, _, key in block] if spec.id_col else None
            mask = drop(lambda: _row_ids(source, start, len(block), keys), [url for _, url, _ in block])
            for (item, _, _), gone in zip(block, mask.tolist()):
                if gone:
                    dropped += 1
                else:
                    emit(item)
                    kept += 1
            start += len(block)
    return kept, dropped


def _blocks(items: Iterable, size: int) -> Iterator[list]:
    block: list = []
    for item in items:
        block.append(item)
        if len(block) >= size:
            yield block
            block = []
    if block:
        yield block

