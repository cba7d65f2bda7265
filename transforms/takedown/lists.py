"""Takedown list files: the format, reading (validated, all or nothing) and writing.

A takedown list is one file of entries ``list_id, entry_id, kind, value`` plus optional
``max_distance``, ``reason`` and ``quality`` columns, as parquet, csv or jsonl; or a
plain ``.txt`` file of PDQ hashes, one per line (``#`` comments and blank lines ignored;
list_id is the file's stem, entry_id the line number). Kinds, value formats and what
``max_distance`` means per kind are those of ``transforms.takedown.kinds``: each kind
validates its own values. ``load_list`` validates a whole file and raises
``TakedownListError`` naming file, line (row for parquet) and entry id for the first bad
entry, so nothing is ever half-loaded; messages give a value's length, never the value.
Entries their kind finds of too low quality (PDQ ``quality`` below 50) are kept and
flagged (``TakedownEntry.low_quality``); matching leaves them out.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import posixpath
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from transforms.takedown.kinds import KINDS, Kind, kind_of

LIST_FORMATS = ("parquet", "csv", "jsonl", "txt")
REQUIRED_COLUMNS = ("list_id", "entry_id", "kind", "value")
LIST_COLUMNS = REQUIRED_COLUMNS + ("max_distance", "reason", "quality")
TXT_KIND = "pdq"  # the one kind a .txt list holds

_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".deflate", ".lz4", ".xz")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


class TakedownListError(ValueError):
    """A takedown list file that cannot be used as it is (nothing of it is loaded)."""


@dataclasses.dataclass(frozen=True, slots=True)
class TakedownEntry:
    """One list entry. ``value`` is normalised (by its kind) and left out of repr()."""

    list_id: str
    entry_id: str
    kind: str
    value: str = dataclasses.field(repr=False)
    max_distance: float | None = None
    reason: str | None = None
    quality: int | None = None  # PDQ quality (0..100) when the list gives it

    @property
    def low_quality(self) -> bool:
        """Its kind finds its quality too low to match safely (a PDQ entry from a flat,
        featureless image matches far too easily); such entries take no part in matching."""
        kind = KINDS.get(self.kind)
        return kind is not None and bool(kind.low_quality(self.quality))


# --------------------------------------------------------------------- reading lists


def list_format_of(path: str, list_format: str | None = None) -> str:
    """The list format: ``list_format`` if given, else from the extension (.csv.gz too)."""
    if list_format is not None:
        fmt = list_format.strip().lower().lstrip(".")
        if fmt not in LIST_FORMATS:
            raise TakedownListError(f"{path}: unknown list format {list_format!r}; "
                                    f"known: {', '.join(LIST_FORMATS)}")
        return fmt
    name = posixpath.basename(path).lower()
    for suffix in _COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    ext = posixpath.splitext(name)[1].lstrip(".")
    if ext == "json":
        ext = "jsonl"
    if ext not in LIST_FORMATS:
        raise TakedownListError(f"{path}: cannot tell the list format from the extension; "
                                f"use one of .{', .'.join(LIST_FORMATS)} or name the format")
    return ext


def _list_stem(path: str) -> str:
    name = posixpath.basename(path.rstrip("/"))
    for suffix in _COMPRESSION_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return posixpath.splitext(name)[0]


def _text(value: Any) -> str | None:
    """A cell as stripped text; None, NaN and blank cells are None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = value.strip() if isinstance(value, str) else str(value).strip()
    return text or None


def _redacted(message: str) -> str:
    # Validation messages may quote part of a value (urlsplit quotes a bad port).
    return _QUOTED.sub("'...'", message)


def _value_error(kind: str, err: ValueError) -> str:
    message = _redacted(str(err))
    return message if message.startswith(f"{kind} value") else f"{kind} value: {message}"


def _optional_number(raw: Any, column: str) -> float | None:
    """A list cell as a finite number; None when the cell is empty."""
    text = _text(raw)
    if text is None:
        return None
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"{column} must be a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{column} must be a finite number")
    return number


def _max_distance(kind: Kind, raw: Any) -> float | None:
    number = _optional_number(raw, "max_distance")
    return None if number is None else kind.check_max_distance(number)


def _quality(raw: Any) -> int | None:
    number = _optional_number(raw, "quality")
    if number is None:
        return None
    if not (number == int(number) and 0 <= number <= 100):
        raise ValueError("quality must be a whole number 0..100")
    return int(number)


def _entry_of(fields: Mapping[str, Any], where: str) -> TakedownEntry:
    """A validated entry from one row's cells; TakedownListError naming ``where``."""
    entry_id = _text(fields.get("entry_id"))
    at = f"{where} (entry {entry_id})" if entry_id else where

    def fail(message: str) -> TakedownListError:
        return TakedownListError(f"{at}: {message}")

    list_id = _text(fields.get("list_id"))
    if list_id is None:
        raise fail("missing list_id")
    if entry_id is None:
        raise fail("missing entry_id")
    kind_text = _text(fields.get("kind"))
    if kind_text is None:
        raise fail("missing kind")
    try:
        kind = kind_of(kind_text)
    except ValueError as err:
        raise fail(str(err)) from None
    raw_value = fields.get("value")
    if _text(raw_value) is None:
        raise fail(f"missing {kind.name} value")
    try:
        value = kind.validate(raw_value)
    except ValueError as err:
        raise fail(_value_error(kind.name, err)) from None
    try:
        max_distance = _max_distance(kind, fields.get("max_distance"))
        quality = _quality(fields.get("quality"))
    except ValueError as err:
        raise fail(str(err)) from None
    return TakedownEntry(
        list_id=list_id,
        entry_id=entry_id,
        kind=kind.name,
        value=value,
        max_distance=max_distance,
        reason=_text(fields.get("reason")),
        quality=quality,
    )


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


def _missing_columns(have: Iterable[str]) -> list[str]:
    present = set(have)
    return [name for name in REQUIRED_COLUMNS if name not in present]


def _rows_csv(path: str, fh) -> Iterator[tuple[str, dict]]:
    reader = csv.reader(_lines(fh))
    header = next(reader, None)
    if header is None:
        return
    header = [name.strip().lower() for name in header]
    missing = _missing_columns(header)
    if missing:
        raise TakedownListError(f"{path} line 1 (header): missing column {missing[0]!r}")
    line = reader.line_num
    for cells in reader:
        start, line = line + 1, reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        yield f"{path} line {start}", dict(zip(header, cells))


def _rows_jsonl(path: str, fh) -> Iterator[tuple[str, dict]]:
    for number, line in enumerate(_lines(fh), start=1):
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
        yield where, row


def _rows_parquet(path: str, fh) -> Iterator[tuple[str, dict]]:
    try:
        table = pq.read_table(pa.BufferReader(fh.read()))
    except (pa.ArrowException, OSError) as err:
        raise TakedownListError(f"{path}: not a readable parquet file ({type(err).__name__})") from None
    names = [name.lower() for name in table.column_names]
    missing = _missing_columns(names)
    if missing:
        raise TakedownListError(f"{path}: missing column {missing[0]!r}")
    columns = {
        name: table.column(i).to_pylist()
        for i, name in enumerate(names) if name in LIST_COLUMNS
    }
    keys = list(columns)
    for number, cells in enumerate(zip(*columns.values()), start=1):
        yield f"{path} row {number}", dict(zip(keys, cells))


def _rows_txt(path: str, fh) -> Iterator[tuple[str, dict]]:
    list_id = _list_stem(path)
    for number, line in enumerate(_lines(fh), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        yield f"{path} line {number}", {
            "list_id": list_id, "entry_id": str(number), "kind": TXT_KIND, "value": text,
        }


_ROW_READERS = {"csv": _rows_csv, "jsonl": _rows_jsonl, "parquet": _rows_parquet, "txt": _rows_txt}


def load_list(path: str, list_format: str | None = None) -> list[TakedownEntry]:
    """Every entry of one list file (local or any Beam filesystem such as gs://).

    Raises TakedownListError for the first bad entry, a missing column or a duplicate
    (list_id, entry_id), naming the file, the line (``row`` for parquet; csv counts
    the header as line 1) and the entry id.
    """
    fmt = list_format_of(path, list_format)
    entries: list[TakedownEntry] = []
    seen: set[tuple[str, str]] = set()
    try:
        with FileSystems.open(path) as fh:
            for where, fields in _ROW_READERS[fmt](path, fh):
                entry = _entry_of(fields, where)
                key = (entry.list_id, entry.entry_id)
                if key in seen:
                    raise TakedownListError(
                        f"{where} (entry {entry.entry_id}): duplicate entry id in list {entry.list_id!r}")
                seen.add(key)
                entries.append(entry)
    except TakedownListError:
        raise
    except (ValueError, csv.Error) as err:
        raise TakedownListError(f"{path}: {_redacted(str(err))}") from None
    except OSError as err:
        raise TakedownListError(f"{path}: cannot read the list ({type(err).__name__}: "
                                f"{_redacted(str(err))})") from None
    return entries


def expand_list_paths(paths: Iterable[str]) -> list[str]:
    """List paths with globs (``gs://bucket/takedown/*.parquet``) expanded, sorted."""
    expanded: list[str] = []
    for path in paths:
        if not any(c in path for c in "*?["):
            expanded.append(path)
            continue
        found = sorted(m.path for m in FileSystems.match([path])[0].metadata_list)
        if not found:
            raise TakedownListError(f"{path}: no list file matches")
        expanded.extend(found)
    return expanded


def load_lists(paths: Iterable[str], list_format: str | None = None) -> list[TakedownEntry]:
    """The entries of several list files (globs expanded); the same (list_id, entry_id)
    twice is an error."""
    entries: list[TakedownEntry] = []
    origin: dict[tuple[str, str], str] = {}
    for path in expand_list_paths(paths):
        loaded = load_list(path, list_format)
        for entry in loaded:
            key = (entry.list_id, entry.entry_id)
            if key in origin:
                raise TakedownListError(
                    f"{path} (entry {entry.entry_id}): list {entry.list_id!r} already has this "
                    f"entry id in {origin[key]}")
            origin[key] = path
        entries.extend(loaded)
    return entries


# --------------------------------------------------------------------- writing lists


def _cells(entry: TakedownEntry) -> dict[str, Any]:
    return {
        "list_id": entry.list_id,
        "entry_id": entry.entry_id,
        "kind": entry.kind,
        "value": entry.value,
        "max_distance": entry.max_distance,
        "reason": entry.reason,
        "quality": entry.quality,
    }


_LIST_SCHEMA = pa.schema([
    ("list_id", pa.string()),
    ("entry_id", pa.string()),
    ("kind", pa.string()),
    ("value", pa.string()),
    ("max_distance", pa.float64()),
    ("reason", pa.string()),
    ("quality", pa.int32()),
])


def write_list(entries: Iterable[TakedownEntry], path: str, list_format: str | None = None) -> None:
    """Write entries as a list file that ``load_list`` reads back (format from extension).

    A ``.txt`` list holds PDQ values only (one per line); other kinds are an error there.
    """
    fmt = list_format_of(path, list_format)
    rows = [_cells(entry) for entry in entries]
    if fmt == "parquet":
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows, schema=_LIST_SCHEMA), buffer)
        data = buffer.getvalue()
    elif fmt == "csv":
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(LIST_COLUMNS), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        data = text.getvalue().encode("utf-8")
    elif fmt == "jsonl":
        data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")
    else:
        other = sorted({row["kind"] for row in rows} - {TXT_KIND})
        if other:
            raise TakedownListError(f"{path}: a .txt list holds PDQ hashes only, not {', '.join(other)}")
        data = "".join(row["value"] + "\n" for row in rows).encode("ascii")
    with FileSystems.create(path) as fh:
        fh.write(data)



__all__ = [
    "LIST_COLUMNS",
    "LIST_FORMATS",
    "REQUIRED_COLUMNS",
    "TakedownEntry",
    "TakedownListError",
    "expand_list_paths",
    "list_format_of",
    "load_list",
    "load_lists",
    "write_list",
]
