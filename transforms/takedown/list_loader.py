"""Loading takedown list files into columns (``EntryTable``), validated, all or nothing.

The rules for one entry are those of ``transforms.takedown.lists`` (``_entry_of``); this
module applies them a column at a time, so a 10 million entry list never becomes 10
million Python objects:

* ``list_formats`` reads each format into chunks of Arrow columns (a ``.txt`` list of
  PDQ hashes straight into packed codes);
* a chunk's cells are checked in bulk (text needing no strip, known kinds, values by
  their kind's ``parse_values``, max_distance / quality per distinct value); any row
  the bulk checks cannot vouch for is checked alone by ``_entry_of``, which raises the
  same one-line error as ever for the first bad row (or, if that row is fine after
  all, the chunk is taken row by row);
* duplicate (list_id, entry_id) pairs are found with Arrow's hash table and one sort of
  integer keys, at the end of a file or just before a row error is raised, so the
  error named is the first one in file order, as it was when rows were checked one by
  one.
"""
from __future__ import annotations

import bisect
import csv
import ctypes
import posixpath
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from transforms.takedown.entry_table import (
    EntryTable,
    KindValues,
    ids_as_strings,
    smallest_code_type,
    stored_concat,
)
from transforms.takedown.kinds import kind_of
from transforms.takedown.list_formats import (
    _Chunk,
    _chunks_csv,
    _chunks_jsonl,
    _chunks_parquet,
    _Codes,
    _load_txt,
    _PyCells,
    _unreadable,
)
from transforms.takedown.lists import (
    _COMPRESSION_SUFFIXES,
    TakedownListError,
    _entry_of,
    _max_distance,
    _quality,
    _redacted,
    expand_list_paths,
    list_format_of,
)

# What str.strip() strips (every character str.isspace() accepts; a test checks the set):
# a cell that starts or ends with one of these is stripped cell by cell.
PYTHON_SPACES = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
                 "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
_SPACE_CLASS = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in PYTHON_SPACES) + "]"
_NEEDS_STRIP = f"^{_SPACE_CLASS}|{_SPACE_CLASS}$"


class _RowError(Exception):
    """The first bad row of a chunk and its error."""

    def __init__(self, row: int, error: TakedownListError) -> None:
        super().__init__(str(error))
        self.row = row
        self.error = error


class _Parsed(NamedTuple):
    """A chunk's checked columns."""

    list_ids: pa.Array
    entry_ids: pa.Array
    kinds: list[str]  # kind_code -> kind name
    kind_code: np.ndarray
    values: dict[str, tuple[np.ndarray, Any]]  # kind -> (chunk rows, stored values)
    max_distance: np.ndarray | None
    quality: np.ndarray | None
    reason: pa.Array | None


# --------------------------------------------------------------- checking a chunk


def _as_strings(column: pa.Array) -> pa.Array | None:
    if isinstance(column, _PyCells):
        return None
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return column.cast(pa.string())
    if pa.types.is_integer(column.type):
        return pc.cast(column, pa.string())  # str() of an int, as a cell read one by one
    if pa.types.is_null(column.type):
        return column.cast(pa.string())
    return None


def _clean_text(column: pa.Array | None, rows: int) -> tuple[pa.Array, np.ndarray]:
    """A column as ``_text`` makes its cells (blank: null), and where that is certain."""
    if column is None:
        return pa.nulls(rows, pa.string()), np.ones(rows, dtype=bool)
    text = _as_strings(column)
    if text is None:  # floats, nested values: left to _text, cell by cell
        return pa.nulls(rows, pa.string()), column.is_null().to_numpy(zero_copy_only=False)
    clean = ~pc.match_substring_regex(text, _NEEDS_STRIP).fill_null(False).to_numpy(zero_copy_only=False)
    blank = pc.equal(text, "").fill_null(False)
    if pc.any(blank).as_py():
        text = pc.if_else(blank, pa.scalar(None, pa.string()), text)
    return text, clean


def _per_distinct(column: pa.Array, groups: np.ndarray, check: Callable[[int, Any], float | None],
                  ok: np.ndarray) -> np.ndarray | None:
    """``check(group, cell)`` once per distinct (group, cell) pair; per row the number
    (NaN for None), rows whose check raised marked not ok. None when every row is None."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    try:
        encoded = pc.dictionary_encode(column)
    except (pa.ArrowException, TypeError):
        cells, index = column.to_pylist(), np.arange(len(column), dtype=np.int64) + 1
    else:
        cells = encoded.dictionary.to_pylist()
        index = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64) + 1
    width = len(cells) + 1
    pairs, inverse = np.unique(groups.astype(np.int64) * width + index, return_inverse=True)
    results = np.full(len(pairs), np.nan)
    bad = np.zeros(len(pairs), dtype=bool)
    for p, pair in enumerate(pairs.tolist()):
        group, cell = divmod(pair, width)
        try:
            number = check(group, None if cell == 0 else cells[cell - 1])
        except ValueError:
            bad[p] = True
            continue
        if number is not None:
            results[p] = number
    ok &= ~bad[inverse]
    out = results[inverse]
    return None if np.isnan(out).all() else out


def _parse_chunk(chunk: _Chunk) -> _Parsed:
    """The chunk's rows checked; _RowError for the first bad one."""
    n = chunk.rows
    ok = np.ones(n, dtype=bool)
    cols = chunk.columns
    list_ids, clean = _clean_text(cols.get("list_id"), n)
    ok &= clean & list_ids.is_valid().to_numpy(zero_copy_only=False)
    entry_ids, clean = _clean_text(cols.get("entry_id"), n)
    ok &= clean & entry_ids.is_valid().to_numpy(zero_copy_only=False)
    kind_texts, clean = _clean_text(cols.get("kind"), n)
    ok &= clean
    encoded = pc.dictionary_encode(kind_texts)
    kinds: list[str] = []
    lut = []
    for text in encoded.dictionary.to_pylist():
        try:
            name = kind_of(text).name
        except ValueError:
            lut.append(-1)
            continue
        if name not in kinds:
            kinds.append(name)
        lut.append(kinds.index(name))
    index = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)
    kind_code = np.asarray(lut + [-1], dtype=np.int64)[index]
    ok &= kind_code >= 0
    kind_code[kind_code < 0] = 0
    values: dict[str, tuple[np.ndarray, Any]] = {}
    for code, name in enumerate(kinds):
        rows = np.flatnonzero((kind_code == code) & ok)
        if isinstance(cols["value"], _PyCells):  # not Arrow (parse_values takes Arrow): each row alone
            ok[rows] = False
            continue
        good, stored = kind_of(name).parse_values(cols["value"].take(pa.array(rows)))
        ok[rows[~good]] = False
        values[name] = (rows[good], stored)
    max_distance = quality = None
    if "max_distance" in cols:
        max_distance = _per_distinct(cols["max_distance"], kind_code,
                                     lambda k, cell: _max_distance(kind_of(kinds[k]), cell) if kinds else None, ok)
    if "quality" in cols:
        quality = _per_distinct(cols["quality"], np.zeros(n, dtype=np.int64), lambda _, cell: _quality(cell), ok)
    reason, clean = _clean_text(cols.get("reason"), n)
    ok &= clean
    if not ok.all():
        first = int(np.flatnonzero(~ok)[0])
        try:
            _entry_of(chunk.fields(first), chunk.where(first))
        except TakedownListError as err:
            raise _RowError(first, err) from None
        return _parse_rows(chunk)  # a row fine after all that the bulk checks could not vouch for
    if "reason" not in cols or not reason.null_count < n:
        reason = None
    return _Parsed(list_ids, entry_ids, kinds, kind_code.astype(np.uint8), values, max_distance, quality, reason)


def _parse_rows(chunk: _Chunk) -> _Parsed:
    """The chunk checked row by row (``_entry_of``), then as columns."""
    entries = []
    for row in range(chunk.rows):
        try:
            entries.append(_entry_of(chunk.fields(row), chunk.where(row)))
        except TakedownListError as err:
            raise _RowError(row, err) from None
    kinds = list(dict.fromkeys(e.kind for e in entries))
    kind_code = np.asarray([kinds.index(e.kind) for e in entries], dtype=np.uint8)
    values = {}
    for code, name in enumerate(kinds):
        rows = np.flatnonzero(kind_code == code)
        texts = _arrow_text([entries[i].value for i in rows.tolist()])
        good, stored = kind_of(name).parse_values(texts)
        if not good.all():  # a normalised value its kind's bulk parser refuses: its own error
            row = int(rows[np.flatnonzero(~good)[0]])
            raise _RowError(row, TakedownListError(f"{chunk.where(row)} (entry {entries[row].entry_id}): "
                                                   f"{name} value is not in its normal form"))
        values[name] = (rows, stored)
    md = np.asarray([np.nan if e.max_distance is None else e.max_distance for e in entries], dtype=np.float64)
    q = np.asarray([np.nan if e.quality is None else e.quality for e in entries], dtype=np.float64)
    reasons = [e.reason for e in entries]
    return _Parsed(_arrow_text([e.list_id for e in entries]),
                   _arrow_text([e.entry_id for e in entries]), kinds, kind_code, values,
                   None if np.isnan(md).all() else md, None if np.isnan(q).all() else q,
                   _arrow_text(reasons) if any(r is not None for r in reasons) else None)


def _arrow_text(texts: list[str | None]) -> pa.Array:
    """Checked texts as Arrow strings. A lone surrogate (a jsonl ``\\ud800`` escape),
    which UTF-8 cannot hold, is kept as that escape, so the entry still loads."""
    try:
        return pa.array(texts, pa.string())
    except UnicodeEncodeError:
        return pa.array([None if t is None else t.encode("utf-8", "backslashreplace").decode("utf-8")
                         for t in texts], pa.string())


# ------------------------------------------------------------ a file's columns


_HASH_FACTOR = np.uint64(0x100000001B3)
_LENGTH_FACTOR = np.uint64(0xC2B2AE3D27D4EB4F)


def _string_hashes(strings: pa.Array) -> np.ndarray:
    """A 64-bit polynomial hash of each (non-null, non-empty) string, computed in bulk.
    Equal strings hash alike; a rare collision only costs a comparison of the text."""
    n = len(strings)
    if not n:
        return np.zeros(0, dtype=np.uint64)
    strings = strings.cast(pa.string())
    _, offsets, data = strings.buffers()
    bounds = np.frombuffer(offsets, dtype=np.int32, count=n + 1, offset=strings.offset * 4).astype(np.int64)
    lengths = np.diff(bounds)
    chars = np.frombuffer(data, dtype=np.uint8)[bounds[0]:bounds[-1]].astype(np.uint64) + np.uint64(1)
    powers = np.full(int(lengths.max()), _HASH_FACTOR, dtype=np.uint64).cumprod()  # wraps mod 2^64
    chars *= powers[np.arange(len(chars)) - np.repeat(bounds[:-1] - bounds[0], lengths)]
    return np.add.reduceat(chars, bounds[:-1] - bounds[0]) ^ (lengths.astype(np.uint64) * _LENGTH_FACTOR)


class _FileColumns:
    """Checked chunks of one file, gathered into an EntryTable. ``max_rows`` (a parquet
    file's row count) or ``size`` (an uncompressed text file's bytes: a hex value takes
    at least its digits) bound the entries of one hex kind; None: unknown."""

    def __init__(self, path: str, max_rows: int | None = None, size: int | None = None) -> None:
        self.path = path
        self.max_rows = max_rows
        self.size = size
        self.rows = 0
        self.list_names: dict[str, int] = {}
        self.kind_names: dict[str, int] = {}
        self.list_code: list[np.ndarray] = []
        self.kind_code: list[np.ndarray] = []
        self.entry_ids: list[Any] = []
        self.id_hashes: list[np.ndarray] = []  # a 64-bit hash per entry id: duplicates are found by sorting these
        self.values: dict[str, tuple[list[np.ndarray | tuple[int, int]], Any]] = {}
        self.max_distance: list[tuple[int, np.ndarray]] = []
        self.quality: list[tuple[int, np.ndarray]] = []
        self.reason: list[tuple[int, pa.Array]] = []
        self.starts: list[int] = []
        self.wheres: list[Callable[[int], str]] = []

    def add(self, parsed: _Parsed, where: Callable[[int], str]) -> None:
        start, n = self.rows, len(parsed.kind_code)
        if not n:
            return
        encoded = pc.dictionary_encode(parsed.list_ids)
        lut = [self.list_names.setdefault(name, len(self.list_names)) for name in encoded.dictionary.to_pylist()]
        lut = np.asarray(lut, dtype=smallest_code_type(len(self.list_names)))
        self.list_code.append(lut[encoded.indices.to_numpy(zero_copy_only=False)])
        kinds = [self.kind_names.setdefault(name, len(self.kind_names)) for name in parsed.kinds]
        self.kind_code.append(np.asarray(kinds, dtype=smallest_code_type(len(self.kind_names)))[parsed.kind_code])
        self.entry_ids.append(parsed.entry_ids)
        self.id_hashes.append(_string_hashes(parsed.entry_ids))
        for name, (rows, stored) in parsed.values.items():
            if not len(rows):
                continue
            if name not in self.values:
                if isinstance(stored, np.ndarray):
                    gather: Any = _Codes(self.capacity(stored.shape[1]), stored.shape[1])
                else:
                    gather = []
                self.values[name] = ([], gather)
            all_rows, gather = self.values[name]
            # A run of every row of the chunk (a list of one kind) is kept as (start, count).
            all_rows.append((start, n) if len(rows) == n else rows + start)
            if isinstance(gather, _Codes):
                gather.add(stored)
            else:
                gather.append(stored)
        for attr in ("max_distance", "quality", "reason"):
            column = getattr(parsed, attr)
            if column is not None:
                getattr(self, attr).append((start, column))
        self.starts.append(start)
        self.wheres.append(where)
        self.rows += n

    def capacity(self, nbytes: int) -> int | None:
        bounds = [b for b in (self.max_rows, None if self.size is None else self.size // max(1, 2 * nbytes) + 1)
                  if b is not None]
        return min(bounds) if bounds else None

    def where(self, row: int) -> str:
        chunk = bisect.bisect_right(self.starts, row) - 1
        return self.wheres[chunk](row - self.starts[chunk])

    def check_duplicates(self) -> None:
        """TakedownListError for the first row whose (list_id, entry_id) came before.

        One sort of 64-bit keys (the id's hash mixed with its list) finds the few rows
        that may repeat an earlier one; only those are compared as text."""
        if self.rows < 2:
            return
        list_code = np.concatenate(self.list_code)
        keys = np.concatenate(self.id_hashes) ^ (list_code.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        same = np.flatnonzero(keys[1:] == keys[:-1])
        del keys
        if not len(same):
            return
        rows = np.unique(np.concatenate([order[same], order[same + 1]]))
        del order
        ids = pa.chunked_array([ids_as_strings(i) for i in self.entry_ids], pa.string())
        seen: set[tuple[int, str]] = set()
        for row, code, entry_id in zip(rows.tolist(), list_code[rows].tolist(), ids.take(pa.array(rows)).to_pylist()):
            if (code, entry_id) in seen:
                list_id = list(self.list_names)[code]
                raise TakedownListError(
                    f"{self.where(row)} (entry {entry_id}): duplicate entry id in list {list_id!r}")
            seen.add((code, entry_id))

    def table(self) -> EntryTable:
        if not self.rows:
            return EntryTable.empty()
        n = self.rows
        list_code = np.concatenate(self.list_code).astype(smallest_code_type(len(self.list_names)))
        kind_code = np.concatenate(self.kind_code).astype(smallest_code_type(len(self.kind_names)))
        entry_ids = pa.chunked_array(self.entry_ids, pa.string())  # chunks as read: no copy
        values = {}
        for name, (rows, gather) in self.values.items():
            count = sum(r[1] if isinstance(r, tuple) else len(r) for r in rows)
            if count == n:
                all_rows = None
            else:
                all_rows = np.concatenate([np.arange(r[0], r[0] + r[1]) if isinstance(r, tuple) else r
                                           for r in rows])
            values[name] = KindValues(all_rows, gather.array() if isinstance(gather, _Codes)
                                      else stored_concat(gather))
        self.values.clear()

        def numbers(pieces: list[tuple[int, np.ndarray]]) -> np.ndarray | None:
            if not pieces:
                return None
            out = np.full(n, np.nan)
            for start, column in pieces:
                out[start:start + len(column)] = column
            return out

        reason = None
        if self.reason:
            parts, at = [], 0
            for start, column in self.reason:
                if start > at:
                    parts.append(pa.nulls(start - at, pa.string()))
                parts.append(column)
                at = start + len(column)
            if at < n:
                parts.append(pa.nulls(n - at, pa.string()))
            reason = pa.concat_arrays(parts)
        return EntryTable(list_names=list(self.list_names), list_code=list_code, entry_ids=entry_ids,
                          kind_names=list(self.kind_names), kind_code=kind_code, values=values,
                          max_distance=numbers(self.max_distance), quality=numbers(self.quality), reason=reason)


def _load_chunks(path: str, chunks: Iterable[_Chunk], max_rows: int | None = None, size: int | None = None,
                 duplicates: bool = True) -> EntryTable:
    """Check and gather chunks; the first error in file order is raised."""
    gathered = _FileColumns(path, max_rows, size)
    for chunk in chunks:
        try:
            parsed = _parse_chunk(chunk)
        except _RowError as bad:
            if bad.row:
                gathered.add(_parse_chunk(chunk.head(bad.row)), chunk.where)
            if duplicates:
                gathered.check_duplicates()  # a duplicate before the bad row comes first
            raise bad.error from None
        gathered.add(parsed, chunk.where)
        del parsed
        pa.default_memory_pool().release_unused()  # the chunk's read buffers, back to the system
        if chunk.stop is not None:
            if duplicates:
                gathered.check_duplicates()
            raise chunk.stop
    if duplicates:
        gathered.check_duplicates()
    return gathered.table()


def _load_parquet(path: str, fh, size: int | None) -> EntryTable:
    try:
        source = fh if getattr(fh, "seekable", lambda: False)() else pa.BufferReader(fh.read())
        # pre_buffer would keep every row group read so far cached until the file is closed.
        parquet = pq.ParquetFile(source, pre_buffer=False)
        rows = parquet.metadata.num_rows
    except (pa.ArrowException, OSError) as err:
        raise _unreadable(path, err) from None
    return _load_chunks(path, _chunks_parquet(path, parquet), max_rows=rows)


def _load_csv(path: str, fh, size: int | None) -> EntryTable:
    return _load_chunks(path, _chunks_csv(path, fh), size=size)


def _load_jsonl(path: str, fh, size: int | None) -> EntryTable:
    return _load_chunks(path, _chunks_jsonl(path, fh), size=size)


def _give_back_memory() -> None:
    """Hand what reading freed back to the system: a worker holds the index next, for
    its whole life. Arrow's pool keeps freed pages, and glibc keeps freed small blocks
    in its heap (numpy's per-chunk arrays), unless asked."""
    pa.default_memory_pool().release_unused()
    try:
        _LIBC.malloc_trim(0)
    except (AttributeError, OSError):
        pass


try:
    _LIBC = ctypes.CDLL("libc.so.6")
except OSError:  # not glibc: nothing to trim
    _LIBC = None


def _size_of(path: str) -> int | None:
    """The file's bytes as read, when known (None for compressed files)."""
    if posixpath.basename(path).lower().endswith(_COMPRESSION_SUFFIXES):
        return None
    try:
        return int(FileSystems.match([path])[0].metadata_list[0].size_in_bytes)
    except (OSError, IndexError, ValueError, AttributeError, TypeError):
        return None


_LOADERS = {"csv": _load_csv, "jsonl": _load_jsonl, "parquet": _load_parquet, "txt": _load_txt}


def load_list(path: str, list_format: str | None = None) -> EntryTable:
    """Every entry of one list file (local or any Beam filesystem such as gs://), as
    columns (``EntryTable``, also a sequence of ``TakedownEntry``).

    Raises TakedownListError for the first bad entry, a missing column or a duplicate
    (list_id, entry_id), naming the file, the line (``row`` for parquet; csv counts
    the header as line 1) and the entry id.
    """
    fmt = list_format_of(path, list_format)
    try:
        size = _size_of(path)
        with FileSystems.open(path) as fh:
            table = _LOADERS[fmt](path, fh, size)
        _give_back_memory()
        return table
    except TakedownListError:
        raise
    except (ValueError, csv.Error) as err:
        raise TakedownListError(f"{path}: {_redacted(str(err))}") from None
    except OSError as err:
        raise TakedownListError(f"{path}: cannot read the list ({type(err).__name__}: "
                                f"{_redacted(str(err))})") from None


def _check_across_files(path: str, table: EntryTable, earlier: list[tuple[str, EntryTable]]) -> None:
    """TakedownListError for this file's first entry whose (list_id, entry_id) an
    earlier file has."""
    first: tuple[int, str] | None = None
    these: pa.Array | None = None  # this file's ids as text, made once if any list is shared
    for code, name in enumerate(table.list_names):
        others = [(p, t) for p, t in earlier if name in t.list_names]
        if not others:
            continue
        if these is None:
            these = ids_as_strings(table.entry_ids)
        rows = np.flatnonzero(table.list_code == code)
        ids = these.take(pa.array(rows))
        for other_path, other in others:
            other_rows = np.flatnonzero(other.list_code == other.list_names.index(name))
            other_ids = ids_as_strings(other.entry_ids).take(pa.array(other_rows))
            if isinstance(other_ids, pa.ChunkedArray):
                other_ids = other_ids.combine_chunks()
            found = np.flatnonzero(pc.is_in(ids, value_set=other_ids).fill_null(False).to_numpy(zero_copy_only=False))
            if len(found) and (first is None or rows[found[0]] < first[0]):
                first = (int(rows[found[0]]), other_path)
    if first is not None:
        row, origin = first
        list_id, entry_id = table.label(row)
        raise TakedownListError(f"{path} (entry {entry_id}): list {list_id!r} already has this "
                                f"entry id in {origin}")


def load_lists(paths: Iterable[str], list_format: str | None = None) -> EntryTable:
    """The entries of several list files (globs expanded), as one ``EntryTable``; the
    same (list_id, entry_id) twice is an error."""
    loaded: list[tuple[str, EntryTable]] = []
    for path in expand_list_paths(paths):
        table = load_list(path, list_format)
        _check_across_files(path, table, loaded)
        loaded.append((path, table))
    return EntryTable.concat([t for _, t in loaded])


__all__ = ["load_list", "load_lists"]
