"""A fetch-off audit on Arrow tables: the same audit rows as the record path, made
column-wise, a read block (thousands of rows) per element.

    read unit -> table of audit rows (AUDIT_SCHEMA)  `audit_table`: row ids, url_sha256,
                                                     invalid URLs, dataset hashes
      -> not_fetched                                 `mark_not_fetched_table`
      -> caption flags                               transforms.captions.flag_caption_table
      -> takedown url / hash matches                 `match_table` (TakedownIndex.match_hits)
      -> decide                                      transforms.policy.decide_table
      -> the output tail (transforms/outputs.py), which takes tables already

Without a fetch nothing per row needs Python but the captions that may hold a flag, the
URLs that are not in normal form and the rows a list or a policy may act on; at billions
of rows that per-row Python is the whole cost, so everything else is an Arrow compute
call. pipelines/audit.py says when an audit takes this path (`records_only_reason`).
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics

from transforms.read import (
    DatasetSpec,
    ReadUnit,
    hex_digest,
    parquet_unit_batches,
    read_unit_columns,
)
from transforms.records import AUDIT_SCHEMA
from transforms.table_coder import ArrowTableCoder  # noqa: F401 (registers the pa.Table coder)
from transforms.takedown.match import MatchTakedownBatches
from transforms.urls import url_sha256_digests

# Two hex digits per byte, as one uint16 each in memory order: a digest's hex in one take.
_HEX_PAIRS = np.frombuffer(b"".join(f"{i:02x}".encode() for i in range(256)), dtype=np.uint16)
_VISIBLE_ASCII = "[!-~]"  # a character str.strip never strips
_LIST_COLUMNS = ("opt_out", "opt_out_headers", "labels", "caption_flags", "matches", "reasons")


def hex_strings(digests: Sequence[bytes | None]) -> pa.Array:
    """Raw digests (None: null) as a string array of lowercase hex, column-wise."""
    n = len(digests)
    valid = np.fromiter((d is not None for d in digests), dtype=bool, count=n)
    present = [d for d in digests if d is not None]
    width = 2 * len(present[0]) if present else 0
    data = _HEX_PAIRS[np.frombuffer(b"".join(present), dtype=np.uint8)].tobytes()
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(valid.astype(np.int32) * width, out=offsets[1:])
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little").tobytes())
    return pa.Array.from_buffers(pa.string(), n, [bitmap, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data)])


def _empty_lists(n: int, type_: pa.DataType) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, dtype=np.int32)),
                                    pa.array([], type=type_.value_type), type=type_)


def _as_text(values, text_of) -> pa.Array:
    """A string column as it is; any other, cell by cell through `text_of` (the record
    path's own conversion of that column's values)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        if pa.types.is_string(values.type):
            return values
        if pa.types.is_large_string(values.type) or pa.types.is_string_view(values.type):
            return values.cast(pa.string())
        values = values.to_pylist()
    return pa.array([text_of(v) for v in values], pa.string())


def _url_text(url):
    return url if isinstance(url, str) else (None if url is None else repr(url))


def _caption_text(caption):
    return caption if isinstance(caption, str) or caption is None else str(caption)


def _key_text(key):
    return None if key is None else str(key)


def _keys(values) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array) and pa.types.is_integer(values.type):
        return values.cast(pa.string())  # str() of an int, column-wise
    return _as_text(values, _key_text)


def _url_columns(raw, n: int) -> tuple[pa.Array, pa.Array, pa.Array, pa.Array]:
    """(url, url_sha256, status, error) as `records_of_block` makes them: a URL that is a
    non-blank string gets its url_sha256; any other is an `invalid_url` row."""
    if isinstance(raw, pa.ChunkedArray):
        raw = raw.combine_chunks()
    if isinstance(raw, pa.Array) and (pa.types.is_string(raw.type) or pa.types.is_large_string(raw.type)
                                      or pa.types.is_string_view(raw.type)):
        urls = raw.cast(pa.string()) if not pa.types.is_string(raw.type) else raw
        kinds = None  # every cell a str or None
    else:
        cells = raw.to_pylist() if isinstance(raw, pa.Array) else list(raw)
        urls = pa.array([_url_text(u) for u in cells], pa.string())
        kinds = [None if u is None else type(u).__name__ for u in cells]
    valid = urls.is_valid().to_numpy(zero_copy_only=False)
    good = pc.fill_null(pc.match_substring_regex(urls, _VISIBLE_ASCII), False).to_numpy(zero_copy_only=False)
    unsure = np.flatnonzero(valid & ~good)  # no visible ASCII: blank or not, str.strip says
    if unsure.size:
        good = good.copy()
        for i, url in zip(unsure.tolist(), urls.take(pa.array(unsure)).to_pylist()):
            good[i] = bool(url.strip())
    if kinds is not None:
        good = good & np.array([k == "str" for k in kinds], dtype=bool)
    digests = url_sha256_digests(urls)
    bad = np.flatnonzero(~good)
    for i in bad.tolist():
        digests[i] = None
    sha = hex_strings(digests)
    status = [None] * n
    error = [None] * n
    for i in bad.tolist():
        status[i] = "invalid_url"
        kind = None if kinds is None else kinds[i]  # the cell's type as read (None: null)
        error[i] = "empty URL" if kind in (None, "str") else f"URL is a {kind}"
    return urls, sha, pa.array(status, pa.string()), pa.array(error, pa.string())


def audit_table(unit: ReadUnit, position: int, block: Mapping[str, object], spec: DatasetSpec,
                rows: int) -> pa.Table:
    """The audit rows of one read block (`records_of_block`'s records, column-wise):
    `block` maps the projected columns to Arrow arrays or lists of `rows` cells."""
    n = rows
    urls, sha, status, error = _url_columns(block[spec.url_col], n)
    caption = block.get(spec.caption_col)
    captions = _as_text(caption, _caption_text) if caption is not None else pa.nulls(n, pa.string())
    keys = _keys(block[spec.id_col]) if spec.id_col else pa.nulls(n, pa.string())
    places = pa.array(np.arange(position, position + n, dtype=np.int64)).cast(pa.string())
    row_ids = pc.coalesce(keys, pc.binary_join_element_wise(unit.source, places, ":"))
    columns: dict[str, pa.Array] = {
        "row_id": row_ids, "row_key": keys, "url": urls, "url_sha256": sha, "caption": captions,
        "status": status, "error": error,
    }
    for name, digits in (("content_md5", 32), ("content_sha256", 64)):
        col = spec.md5_col if digits == 32 else spec.sha256_col
        if col:
            values = block[col]
            values = values.to_pylist() if isinstance(values, (pa.Array, pa.ChunkedArray)) else values
            columns[name] = pa.array([hex_digest(v, digits) for v in values], pa.string())
    arrays = []
    for field in AUDIT_SCHEMA:
        if field.name in columns:
            arrays.append(columns[field.name])
        elif field.name in _LIST_COLUMNS:
            arrays.append(_empty_lists(n, field.type))
        else:
            arrays.append(pa.nulls(n, field.type))
    return pa.Table.from_arrays(arrays, schema=AUDIT_SCHEMA)


def unit_blocks(unit: ReadUnit, spec: DatasetSpec) -> Iterator[tuple[int, dict, int]]:
    """(first row position, {column: Arrow array or list}, rows) per block of a unit:
    parquet batches as Arrow arrays (no Python objects), text formats as read."""
    if unit.format == "parquet":
        for position, batch in parquet_unit_batches(unit, spec):
            yield position, {name: batch.column(name) for name in batch.schema.names}, batch.num_rows
        return
    for position, block in read_unit_columns(unit, spec):
        yield position, block, len(block[spec.url_col])


@beam.typehints.with_output_types(pa.Table)
class ReadUnitTables(beam.DoFn):
    """Read units -> tables of audit rows, one per read block; counts `audit/rows_in`."""

    def __init__(self, spec: DatasetSpec):
        self._spec = spec
        self._rows_in = Metrics.counter("audit", "rows_in")

    def process(self, unit: ReadUnit):
        for position, block, rows in unit_blocks(unit, self._spec):
            self._rows_in.inc(rows)
            yield audit_table(unit, position, block, self._spec, rows)


def mark_not_fetched_table(table: pa.Table) -> pa.Table:
    """Rows without a status yet get `not_fetched` (fetch is off)."""
    index = table.schema.get_field_index("status")
    return table.set_column(index, "status", pc.fill_null(table.column("status"), "not_fetched"))


def row_count(table: pa.Table) -> int:
    return table.num_rows


# ------------------------------------------------------------------ takedown matches

MATCHES_TYPE = AUDIT_SCHEMA.field("matches").type


def match_table(table: pa.Table, index) -> tuple[pa.Table, list[list[dict]]]:
    """The table with each row's takedown `matches` (TakedownIndex.match_hits on its
    columns; the rows had none before) and the hit rows' matches."""
    columns = {name: table.column(name) for name in index.columns if name in table.column_names}
    hit_rows, hit_matches = index.match_hits(columns, rows=table.num_rows)
    counts = np.zeros(table.num_rows, dtype=np.int32)
    counts[hit_rows] = [len(m) for m in hit_matches]
    offsets = np.zeros(table.num_rows + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    values = pa.array([m for ms in hit_matches for m in ms], type=MATCHES_TYPE.value_type)
    matches = pa.ListArray.from_arrays(pa.array(offsets), values, type=MATCHES_TYPE)
    return table.set_column(table.schema.get_field_index("matches"), "matches", matches), hit_matches


@beam.typehints.with_output_types(pa.Table)
class MatchTakedownTables(MatchTakedownBatches):
    """Tables of audit rows, each row's takedown matches set: MatchTakedown's index (once
    per worker process) and counters, on a table at a time."""

    def process(self, table: pa.Table):
        table, hits = match_table(table, self._index_for(self._spec))
        self._rows_checked.inc(table.num_rows)
        self._rows_matched.inc(len(hits))
        for matches in hits:
            for match in matches:
                self._matches_of(match["kind"]).inc()
        yield table
