"""Reading takedown list files: each format's rows as chunks of Arrow columns.

The readers of ``list_loader``: parquet a record batch at a time (``pyarrow.parquet``),
csv and jsonl parsed into chunks of rows (cells as parsed, types inferred by Arrow), and
a ``.txt`` list of PDQ hashes read in blocks of bytes, its lines found and its hex
decoded with numpy and ``binascii`` (a line that is not exactly one hash, such as a
comment, is read as before, one line at a time). A reader's own error (bad JSON, a
row without a column, bytes that are not UTF-8) comes after the rows read before it,
so the loader still names the first error of the file.
"""
from __future__ import annotations

import binascii
import csv
import json
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from transforms.takedown.entry_table import EntryTable, KindValues, stored_concat
from transforms.takedown.kinds import kind_of
from transforms.takedown.lists import (
    LIST_COLUMNS,
    REQUIRED_COLUMNS,
    TXT_KIND,
    TakedownListError,
    _entry_of,
    _list_stem,
    _missing_columns,
    _redacted,
    _text,
)

CHUNK_ROWS = 1 << 17  # rows per checked chunk (parquet batch, csv / jsonl rows)
TXT_BLOCK = 8 << 20  # bytes of a .txt list read at a time
_BOM = "\ufeff".encode()
_HEX_BYTE = np.zeros(256, dtype=bool)
_HEX_BYTE[np.frombuffer(b"0123456789abcdefABCDEF", dtype=np.uint8)] = True


class _Chunk(NamedTuple):
    """Rows as read: the list columns present (any Arrow type); ``stop``: the reader's
    error just after these rows (raised unless one of them is bad first)."""

    columns: dict[str, pa.Array]
    rows: int
    where: Callable[[int], str]
    stop: TakedownListError | None = None

    def fields(self, row: int) -> dict[str, Any]:
        return {name: column[row].as_py() for name, column in self.columns.items()}

    def head(self, rows: int) -> _Chunk:
        return _Chunk({n: c.slice(0, rows) for n, c in self.columns.items()}, rows, self.where)


class _Codes:
    """A hex kind's packed codes, chunk after chunk, copied into one array made for the
    file's most entries (a bound from its size or row count: pages never written take no
    memory), so the codes are never held twice."""

    def __init__(self, capacity: int | None, nbytes: int) -> None:
        self.capacity = capacity
        self.nbytes = nbytes
        self.count = 0
        self.pieces: list[np.ndarray] = []
        self.buffer = np.empty((capacity, nbytes), dtype=np.uint8) if capacity else None

    def add(self, codes: np.ndarray) -> None:
        if self.buffer is not None and self.count + len(codes) <= self.capacity:
            self.buffer[self.count:self.count + len(codes)] = codes
        else:
            if self.buffer is not None:  # the bound was wrong: collect pieces from here on
                self.pieces.append(self.buffer[:self.count].copy())
                self.buffer = None
            self.pieces.append(codes)
        self.count += len(codes)

    def array(self) -> np.ndarray:
        if self.buffer is not None:
            if self.count < self.capacity // 2:  # a kind with few of the entries: not the whole reservation
                return self.buffer[:self.count].copy()
            return self.buffer[:self.count]
        if not self.pieces:
            return np.zeros((0, self.nbytes), dtype=np.uint8)
        return stored_concat(self.pieces)


# -------------------------------------------------------------------- the formats


def _lines(fh) -> Iterator[str]:
    """Decoded text lines of a binary file object (any FileSystems file)."""
    first = True
    for raw in iter(fh.readline, b""):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("not UTF-8 text") from None
        if first:
            line = line.lstrip("\ufeff")
            first = False
        yield line


# The Python types of a jsonl column (None aside) that Arrow's inference gives back as
# parsed, when a column holds only one of them.
_INFERRED_TYPES = frozenset({str, int, float, bool})


def _columns_of(cells: dict[str, list], typed: bool = True) -> dict[str, Any]:
    """Parsed cells as Arrow columns, types inferred (``typed``: jsonl cells; csv cells
    are all text). A column Arrow would not give back cell for cell stays Python cells
    (``_PyCells``), each checked alone as it was parsed: one mixing Python types (ints
    with floats would become floats, 1 read as "1.0"), nested values (a struct fills in
    missing keys), an int over 64 bits, a lone surrogate (a JSON ``\\ud800`` escape,
    which UTF-8 text cannot hold)."""
    columns: dict[str, Any] = {}
    for name, values in cells.items():
        if typed:
            types = set(map(type, values))
            types.discard(type(None))
            if len(types) > 1 or not types <= _INFERRED_TYPES:
                columns[name] = _PyCells(values)
                continue
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowException, OverflowError, TypeError, UnicodeEncodeError):
            columns[name] = _PyCells(values)
    return columns


class _PyCells:
    """A column of Python cells not held as Arrow (``_columns_of``): the few operations
    the checks use, so that every such cell goes to ``_entry_of`` as it was parsed. Not
    an Arrow array: the bulk checks leave it alone."""

    def __init__(self, values: list) -> None:
        self._values = values

    def __len__(self) -> int:
        return len(self._values)

    def __getitem__(self, i: int):
        return _PyScalar(self._values[i])

    def slice(self, start: int, length: int) -> _PyCells:
        return _PyCells(self._values[start:start + length])

    def take(self, rows: pa.Array) -> _PyCells:
        return _PyCells([self._values[i] for i in rows.to_pylist()])

    def to_pylist(self) -> list:
        return list(self._values)

    def is_null(self) -> pa.Array:
        return pa.array([v is None for v in self._values])


class _PyScalar(NamedTuple):
    value: Any

    def as_py(self) -> Any:
        return self.value


def _chunks_csv(path: str, fh) -> Iterator[_Chunk]:
    reader = csv.reader(_lines(fh))
    header = next(reader, None)
    if header is None:
        return
    header = [name.strip().lower() for name in header]
    missing = _missing_columns(header)
    if missing:
        raise TakedownListError(f"{path} line 1 (header): missing column {missing[0]!r}")
    position = {name: i for i, name in enumerate(header) if name in LIST_COLUMNS}
    line = reader.line_num
    while True:
        cells: dict[str, list] = {name: [] for name in position}
        lines: list[int] = []
        stop = None
        try:
            for row in reader:
                start, line = line + 1, reader.line_num
                if not any(cell.strip() for cell in row):
                    continue
                for name, i in position.items():
                    cells[name].append(row[i] if i < len(row) else None)
                lines.append(start)
                if len(lines) == CHUNK_ROWS:
                    break
        except (ValueError, csv.Error) as err:
            stop = TakedownListError(f"{path}: {_redacted(str(err))}")
        if lines or stop:
            numbers = np.asarray(lines, dtype=np.int64)
            yield _Chunk(_columns_of(cells, typed=False), len(lines),
                         lambda i, numbers=numbers: f"{path} line {numbers[i]}", stop)
        if stop or len(lines) < CHUNK_ROWS:
            return


def _chunks_jsonl(path: str, fh) -> Iterator[_Chunk]:
    lines = enumerate(_lines(fh), start=1)
    while True:
        cells: dict[str, list] = {name: [] for name in LIST_COLUMNS}
        numbers: list[int] = []
        stop = None
        try:
            for number, line in lines:
                if not line.strip():
                    continue
                where = f"{path} line {number}"
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise TakedownListError(f"{where}: not a JSON object ({err.msg})") from None
                if not isinstance(row, dict):
                    raise TakedownListError(f"{where}: not a JSON object")
                missing = _missing_columns(row)
                if missing:
                    entry_id = _text(row.get("entry_id"))
                    at = f"{where} (entry {entry_id})" if entry_id else where
                    raise TakedownListError(f"{at}: missing column {missing[0]!r}")
                for name in LIST_COLUMNS:
                    cells[name].append(row.get(name))
                numbers.append(number)
                if len(numbers) == CHUNK_ROWS:
                    break
        except TakedownListError as err:
            stop = err
        except ValueError as err:
            stop = TakedownListError(f"{path}: {_redacted(str(err))}")
        if numbers or stop:
            at = np.asarray(numbers, dtype=np.int64)
            present = {name: values for name, values in cells.items()
                       if name in REQUIRED_COLUMNS or any(v is not None for v in values)}
            yield _Chunk(_columns_of(present), len(numbers),
                         lambda i, at=at: f"{path} line {at[i]}", stop)
        if stop or len(numbers) < CHUNK_ROWS:
            return


def _unreadable(path: str, err: Exception) -> TakedownListError:
    return TakedownListError(f"{path}: not a readable parquet file ({type(err).__name__})")


def _chunks_parquet(path: str, parquet: pq.ParquetFile) -> Iterator[_Chunk]:
    names = parquet.schema_arrow.names
    lowered = [name.lower() for name in names]
    missing = _missing_columns(lowered)
    if missing:
        raise TakedownListError(f"{path}: missing column {missing[0]!r}")
    chosen = {low: i for i, low in enumerate(lowered) if low in LIST_COLUMNS}  # the last of a name wins
    start = 0
    try:
        for batch in parquet.iter_batches(batch_size=CHUNK_ROWS, columns=[names[i] for i in chosen.values()]):
            columns = {low: batch.column(j) for j, low in enumerate(chosen)}
            yield _Chunk(columns, batch.num_rows, lambda i, start=start: f"{path} row {start + i + 1}")
            start += batch.num_rows
    except (pa.ArrowException, OSError) as err:
        raise _unreadable(path, err) from None


class _TxtCodes:
    """A .txt list's codes and line numbers, gathered block by block."""

    def __init__(self, nbytes: int, size: int | None) -> None:
        self.nbytes = nbytes
        self.codes = _Codes(None if size is None else size // (2 * nbytes + 1) + 1, nbytes)
        self.lines: list[np.ndarray] = []

    def add(self, lines: np.ndarray, codes: np.ndarray) -> None:
        if len(lines):
            self.lines.append(lines.astype(np.int32) if lines[-1] < 2**31 else lines)
            self.codes.add(codes)


def _txt_block(path: str, body: bytes, first_line: int, list_id: str, fast: bool, out: _TxtCodes) -> None:
    """One block of whole lines (each ending in a newline), starting at ``first_line``."""
    b = np.frombuffer(body, dtype=np.uint8)
    ends = np.flatnonzero(b == 10)
    if not len(ends):
        return
    digits = 2 * out.nbytes
    starts = np.empty(len(ends), dtype=np.int64)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    core = ends - starts
    core -= (core > 0) & (b[np.maximum(ends - 1, 0)] == 13)  # a CRLF line's CR
    if fast and len(b) == len(ends) * (digits + 1) and (core == digits).all():
        grid = b.reshape(len(ends), digits + 1)[:, :digits]  # every line one hash: the common block
        plain = _HEX_BYTE[grid].all(axis=1)
        hex_bytes = grid[plain].tobytes()
    elif fast:
        plain = core == digits
        if plain.any():
            bad = np.cumsum(~_HEX_BYTE[b], dtype=np.int32)
            s = starts[plain]
            before = np.where(s > 0, bad[np.maximum(s - 1, 0)], 0)
            plain[plain] = (bad[s + digits - 1] - before) == 0
        take = np.zeros(len(b) + 1, dtype=np.int8)
        np.add.at(take, starts[plain], 1)
        np.add.at(take, starts[plain] + digits, -1)
        hex_bytes = b[np.cumsum(take[:-1], dtype=np.int8) > 0].tobytes()
    else:
        plain = np.zeros(len(ends), dtype=bool)
        hex_bytes = b""
    lines = np.flatnonzero(plain) + first_line
    codes = np.frombuffer(binascii.unhexlify(hex_bytes), dtype=np.uint8).reshape(-1, out.nbytes)
    odd = np.flatnonzero(~plain & (core > 0))
    if not len(odd):
        out.add(lines, codes)
        return
    odd_lines, odd_codes = [], []
    for i in odd.tolist():
        number = first_line + i
        try:
            line = body[starts[i]:ends[i]].decode("utf-8")
        except UnicodeDecodeError:
            raise TakedownListError(f"{path}: not UTF-8 text") from None
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        entry = _entry_of({"list_id": list_id, "entry_id": str(number), "kind": TXT_KIND, "value": text},
                          f"{path} line {number}")
        odd_lines.append(number)
        odd_codes.append(bytes.fromhex(entry.value))
    if odd_lines:
        all_lines = np.concatenate([lines, np.asarray(odd_lines, dtype=np.int64)])
        order = np.argsort(all_lines, kind="stable")
        extra = np.frombuffer(b"".join(odd_codes), dtype=np.uint8).reshape(-1, out.nbytes)
        lines, codes = all_lines[order], np.concatenate([codes, extra])[order]
    out.add(lines, codes)


def _load_txt(path: str, fh, size: int | None) -> EntryTable:
    """A .txt list: one PDQ hash per line; list_id the file's stem, entry_id the line."""
    list_id = _list_stem(path)
    name = _text(list_id)
    kind = kind_of(TXT_KIND)
    out = _TxtCodes(kind.digits // 2, size)
    carry, line, first = b"", 1, True
    while True:
        data = fh.read(TXT_BLOCK)
        block = carry + data if carry else data
        if not data:
            if block:
                block += b"\n"  # the last line, without its newline
            else:
                break
        cut = block.rfind(b"\n")
        if cut < 0:
            carry = block
            continue
        body, carry = block[:cut + 1], block[cut + 1:]
        if first:
            while body.startswith(_BOM):
                body = body[len(_BOM):]
            first = False
        _txt_block(path, body, line, list_id, name is not None, out)
        line += body.count(b"\n")
        if not data:
            break
    if not out.lines:
        return EntryTable.empty()
    lines = np.concatenate(out.lines) if len(out.lines) > 1 else out.lines[0]
    codes = out.codes.array()
    return EntryTable(list_names=[name], list_code=np.zeros(len(lines), dtype=np.uint8),
                      entry_ids=lines,
                      kind_names=[kind.name], kind_code=np.zeros(len(lines), dtype=np.uint8),
                      values={kind.name: KindValues(None, codes)})
