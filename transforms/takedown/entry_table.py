"""Takedown list entries as columns: what ``load_lists`` returns and ``TakedownIndex`` indexes.

A list of 10 million PDQ hashes must load in a worker's memory budget, so entries are
never kept as one Python object each. ``EntryTable`` holds them as columns:

* ``list_code`` (into ``list_names``) and ``kind_code`` (into ``kind_names``), one small
  integer per entry;
* ``entry_ids``: Arrow strings (the chunks as read), or a ``.txt`` list's line numbers;
* per kind, its values in the form the kind's index is built from (``Kind.parse_values``:
  packed ``(n, bytes)`` uint8 codes for the hex kinds, normalised strings otherwise) and
  which entries they belong to;
* ``max_distance`` and ``quality`` (float64, NaN: none given) and ``reason`` (Arrow
  strings), or None when no entry has one.

It is also a read-only sequence of ``TakedownEntry``: ``table[i]`` makes entry i's object
on demand (what tests and small callers use); matching looks entries' metadata up from
the columns at hit time (``metadata``).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.takedown.kinds import kind_of

Stored = Any  # a kind's values: (n, bytes) uint8 codes, Arrow strings, or (entry objects') a list


# ----------------------------------------------------------------- stored values


def stored_take(values: Stored, positions: np.ndarray) -> Stored:
    if isinstance(values, np.ndarray):
        return values[positions]
    if isinstance(values, list):
        return [values[i] for i in positions.tolist()]
    return values.take(pa.array(np.asarray(positions, dtype=np.int64)))


def stored_concat(pieces: Sequence[Stored]) -> Stored:
    """One kind's values, piece after piece: packed codes stay codes; codes among texts
    (a loaded table with one of entry objects) become hex texts, as the objects hold them."""
    if len(pieces) == 1:
        return pieces[0]
    if all(isinstance(p, np.ndarray) for p in pieces):
        return np.concatenate(pieces)
    return pa.concat_arrays([_stored_strings(p) for p in pieces])


def _stored_strings(values: Stored) -> pa.Array:
    if isinstance(values, np.ndarray):
        return pa.array([stored_text(values, i) for i in range(len(values))], pa.string())
    if isinstance(values, list):
        return pa.array(values, pa.string())
    return values.cast(pa.string())


def stored_text(values: Stored, position: int) -> str:
    """Value ``position`` as its list text (hex codes as lowercase hex)."""
    if isinstance(values, np.ndarray):
        return values[position].tobytes().hex()
    if isinstance(values, list):
        return values[position]
    return values[position].as_py()


def stored_for_build(values: Stored) -> Any:
    """What ``Kind.build`` takes: codes as they are, strings as a list."""
    if isinstance(values, (np.ndarray, list)):
        return values
    return values.to_pylist()


def smallest_code_type(count: int) -> type:
    return np.uint8 if count <= 1 << 8 else np.uint16 if count <= 1 << 16 else np.int32


class KindValues(NamedTuple):
    """One kind's values: ``rows`` the (ascending) entries they belong to, None when
    every entry of the table is of this kind; ``values`` as ``Kind.parse_values`` makes
    them."""

    rows: np.ndarray | None
    values: Stored


def id_texts(ids: pa.Array | np.ndarray, positions: np.ndarray | Sequence[int]) -> list[str]:
    """Entry ids at these positions as text (line numbers of a .txt list as decimals)."""
    if isinstance(ids, np.ndarray):
        return [str(v) for v in ids[np.asarray(positions, dtype=np.int64)].tolist()]
    return ids.take(pa.array(np.asarray(positions, dtype=np.int64))).to_pylist()


def ids_as_strings(ids: pa.Array | pa.ChunkedArray | np.ndarray) -> pa.Array | pa.ChunkedArray:
    if isinstance(ids, np.ndarray):
        return pc.cast(pa.array(ids), pa.string())
    return ids


def _chunks(column: pa.Array | pa.ChunkedArray) -> list[pa.Array]:
    return column.chunks if isinstance(column, pa.ChunkedArray) else [column]


def _kind_names_of(table: EntryTable) -> pa.Array:
    """Each entry's kind name, as text (a table without ``kind_text`` gave no other)."""
    return pa.DictionaryArray.from_arrays(pa.array(table.kind_code), pa.array(table.kind_names, pa.string())) \
        .dictionary_decode()


# ----------------------------------------------------------------------- the table


class EntryTable(Sequence):
    """Takedown list entries as columns (see the module docstring); immutable."""

    def __init__(self, *, list_names: Sequence[str], list_code: np.ndarray, entry_ids: pa.Array | np.ndarray,
                 kind_names: Sequence[str], kind_code: np.ndarray, values: dict[str, KindValues],
                 max_distance: np.ndarray | None = None, quality: np.ndarray | None = None,
                 reason: pa.Array | None = None, kind_text: pa.Array | None = None) -> None:
        self.list_names = tuple(list_names)
        self.list_code = list_code
        self.entry_ids = entry_ids
        self.kind_names = tuple(kind_names)  # registered kind names
        self.kind_code = kind_code
        self.values = values  # by kind name
        self.max_distance = max_distance
        self.quality = quality
        self.reason = reason
        self.kind_text = kind_text  # the kind as an entry object gave it, when not its name

    # -- building

    @classmethod
    def empty(cls) -> EntryTable:
        return cls(list_names=(), list_code=np.zeros(0, np.uint8), entry_ids=pa.array([], pa.string()),
                   kind_names=(), kind_code=np.zeros(0, np.uint8), values={})

    @classmethod
    def from_entries(cls, entries: Iterable[Any]) -> EntryTable:
        """A table of entry objects as given (values are not validated again: an index
        that cannot take one says so). ValueError for the first entry of an unknown kind
        or a (list_id, entry_id) seen before, as TakedownIndex always did."""
        entries = list(entries)
        n = len(entries)
        list_ids = [e.list_id for e in entries]
        ids = [e.entry_id for e in entries]
        texts = [e.kind for e in entries]
        names: dict[str, str] = {}
        try:
            for text in dict.fromkeys(texts):
                names[text] = kind_of(text).name
            unique = len(set(zip(list_ids, ids))) == n
        except (ValueError, TypeError):
            unique = False
        if not unique:  # the first bad entry, in order, as one entry at a time finds it
            seen: set[tuple[str, str]] = set()
            for entry in entries:
                key = (entry.list_id, entry.entry_id)
                if key in seen:
                    raise ValueError(f"duplicate entry {entry.entry_id!r} in list {entry.list_id!r}")
                seen.add(key)
                kind_of(entry.kind)  # unknown kinds fail here, by name
        kind_names = list(dict.fromkeys(names.values()))
        code_of_text = {text: kind_names.index(name) for text, name in names.items()}
        kind_code = np.asarray([code_of_text[t] for t in texts], dtype=smallest_code_type(len(kind_names)))
        list_names = list(dict.fromkeys(list_ids))
        code_of_list = {name: i for i, name in enumerate(list_names)}
        list_code = np.asarray([code_of_list[name] for name in list_ids], dtype=smallest_code_type(len(list_names)))
        values = [e.value for e in entries]
        kind_values = {}
        for code, name in enumerate(kind_names):
            if len(kind_names) == 1:
                kind_values[name] = KindValues(None, values)
            else:
                rows = np.flatnonzero(kind_code == code)
                kind_values[name] = KindValues(rows, [values[i] for i in rows.tolist()])
        md = np.array([e.max_distance for e in entries], dtype=np.float64)  # None: NaN
        q = np.array([e.quality for e in entries], dtype=np.float64)
        reasons = [e.reason for e in entries]
        return cls(
            list_names=list_names, list_code=list_code, entry_ids=pa.array(ids, pa.string()),
            kind_names=kind_names, kind_code=kind_code, values=kind_values,
            max_distance=md if n and not np.isnan(md).all() else None,
            quality=q if n and not np.isnan(q).all() else None,
            reason=pa.array(reasons, pa.string()) if any(r is not None for r in reasons) else None,
            kind_text=pa.array(texts, pa.string()) if any(t != name for t, name in names.items()) else None,
        )

    @classmethod
    def concat(cls, tables: Sequence[EntryTable]) -> EntryTable:
        """The tables' entries one after the other."""
        tables = [t for t in tables if len(t)]
        if not tables:
            return cls.empty()
        if len(tables) == 1:
            return tables[0]
        list_names: dict[str, int] = {}
        kind_names: dict[str, int] = {}
        for t in tables:
            for name in t.list_names:
                list_names.setdefault(name, len(list_names))
            for name in t.kind_names:
                kind_names.setdefault(name, len(kind_names))
        list_type, kind_type = smallest_code_type(len(list_names)), smallest_code_type(len(kind_names))
        starts = np.cumsum([0] + [len(t) for t in tables])
        list_code = np.concatenate([np.asarray([list_names[n] for n in t.list_names], dtype=list_type)[t.list_code]
                                    for t in tables])
        kind_code = np.concatenate([np.asarray([kind_names[n] for n in t.kind_names], dtype=kind_type)[t.kind_code]
                                    for t in tables])
        if all(isinstance(t.entry_ids, np.ndarray) for t in tables):
            entry_ids: Any = np.concatenate([t.entry_ids.astype(np.int64) for t in tables])
        else:
            entry_ids = pa.chunked_array([chunk for t in tables for chunk in _chunks(ids_as_strings(t.entry_ids))],
                                         pa.string())
        values = {}
        for name in kind_names:
            rows, pieces = [], []
            for start, t in zip(starts, tables):
                kv = t.values.get(name)
                if kv is None:
                    continue
                rows.append(start + (np.arange(len(t), dtype=np.int64) if kv.rows is None else kv.rows))
                pieces.append(kv.values)
            all_rows = np.concatenate(rows)
            values[name] = KindValues(None if len(all_rows) == starts[-1] else all_rows, stored_concat(pieces))

        def numbers(attr: str) -> np.ndarray | None:
            if all(getattr(t, attr) is None for t in tables):
                return None
            return np.concatenate([np.full(len(t), np.nan) if getattr(t, attr) is None else getattr(t, attr)
                                   for t in tables])

        def strings(attr: str, missing: Any) -> pa.Array | None:
            if all(getattr(t, attr) is None for t in tables):
                return None
            return pa.concat_arrays([missing(t) if getattr(t, attr) is None else getattr(t, attr) for t in tables])

        return cls(list_names=list(list_names), list_code=list_code, entry_ids=entry_ids,
                   kind_names=list(kind_names), kind_code=kind_code, values=values,
                   max_distance=numbers("max_distance"), quality=numbers("quality"),
                   reason=strings("reason", lambda t: pa.nulls(len(t), pa.string())),
                   kind_text=strings("kind_text", _kind_names_of))

    def without_values(self) -> EntryTable:
        """The same entries' metadata only (what a match reports), values dropped."""
        return EntryTable(list_names=self.list_names, list_code=self.list_code, entry_ids=self.entry_ids,
                          kind_names=self.kind_names, kind_code=self.kind_code, values={},
                          reason=self.reason, kind_text=self.kind_text)

    # -- columns

    def kind_counts(self) -> dict[str, int]:
        """Entries per kind name."""
        counts = np.bincount(self.kind_code, minlength=len(self.kind_names))
        return {name: int(c) for name, c in zip(self.kind_names, counts) if c}

    def metadata(self, positions: np.ndarray) -> tuple[list[str], list[str], list[str], list[str | None]]:
        """(list ids, entry ids, kinds, reasons) of these entries, as lists."""
        positions = np.asarray(positions, dtype=np.int64)
        names = self.list_names
        list_ids = [names[c] for c in self.list_code[positions].tolist()]
        entry_ids = id_texts(self.entry_ids, positions)
        if self.kind_text is not None:
            kinds = self.kind_text.take(pa.array(positions)).to_pylist()
        else:
            kinds = [self.kind_names[c] for c in self.kind_code[positions].tolist()]
        if self.reason is None:
            reasons: list[str | None] = [None] * len(positions)
        else:
            reasons = self.reason.take(pa.array(positions)).to_pylist()
        return list_ids, entry_ids, kinds, reasons

    def label(self, position: int) -> tuple[str, str]:
        """(list_id, entry_id) of one entry."""
        return self.list_names[int(self.list_code[position])], id_texts(self.entry_ids, [position])[0]

    # -- the sequence of TakedownEntry

    def __len__(self) -> int:
        return len(self.kind_code)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError("entry index out of range")
        i %= n
        from transforms.takedown.lists import TakedownEntry  # the entry type lives with the file format

        list_ids, entry_ids, kinds, reasons = self.metadata(np.asarray([i]))
        kv = self.values.get(self.kind_names[int(self.kind_code[i])])
        if kv is None:
            value = None
        else:
            position = i if kv.rows is None else int(np.searchsorted(kv.rows, i))
            value = stored_text(kv.values, position)
        md = None if self.max_distance is None else float(self.max_distance[i])
        q = None if self.quality is None else float(self.quality[i])
        return TakedownEntry(list_id=list_ids[0], entry_id=entry_ids[0], kind=kinds[0], value=value,
                             max_distance=None if md is None or np.isnan(md) else md,
                             reason=reasons[0], quality=None if q is None or np.isnan(q) else int(q))

    def __iter__(self) -> Iterator[Any]:
        for i in range(len(self)):
            yield self[i]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        kinds = ", ".join(f"{k}={n}" for k, n in self.kind_counts().items())
        return f"EntryTable({len(self)} entries in {len(self.list_names)} lists: {kinds})"


__all__ = ["EntryTable", "KindValues"]
