"""Takedown list files: the format, the rules for one entry, and writing.

A takedown list is one file of entries ``list_id, entry_id, kind, value`` plus optional
``max_distance``, ``reason`` and ``quality`` columns, as parquet, csv or jsonl; or a
plain ``.txt`` file of PDQ hashes, one per line (``#`` comments and blank lines ignored;
list_id is the file's stem, entry_id the line number). Kinds, value formats and what
``max_distance`` means per kind are those of ``transforms.takedown.kinds``: each kind
validates its own values. ``load_list`` validates a whole file and raises
``TakedownListError`` naming file, line (row for parquet) and entry id for the first bad
entry, so nothing is ever half-loaded; messages give a value's length, never the value.
Reading is in ``list_loader`` (columns checked in bulk, into an ``EntryTable``); the
rules it applies are ``_entry_of`` here, which also words every error.
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
from collections.abc import Iterable, Mapping
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


def _missing_columns(have: Iterable[str]) -> list[str]:
    present = set(have)
    return [name for name in REQUIRED_COLUMNS if name not in present]


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



def load_list(path: str, list_format: str | None = None):
    """Every entry of one list file, as an ``EntryTable`` (``list_loader.load_list``:
    reading lives there, columns checked in bulk)."""
    from transforms.takedown.list_loader import load_list as load

    return load(path, list_format)


def load_lists(paths: Iterable[str], list_format: str | None = None):
    """The entries of several list files as one ``EntryTable`` (``list_loader.load_lists``)."""
    from transforms.takedown.list_loader import load_lists as load

    return load(paths, list_format)


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
