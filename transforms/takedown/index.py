"""TakedownIndex: every entry of the takedown lists, searchable a batch of rows at a time.

The index is a map from kind to that kind's own index, built by the kind
(``Kind.build``) from its entries' values and thresholds, taken from an ``EntryTable``
(columns: a 10 M-entry PDQ list is its packed codes, not 10 M objects). The index keeps
the table's metadata columns only; a hit's list, entry id, kind and reason are looked up
from them by entry position when a batch is matched. Matching asks each kind to
read its values from the batch's columns (``Kind.rows``) and its index to search them
(``query``), once per kind per batch. Which columns and which index each kind uses, and
what its distance and threshold mean, is in ``transforms.takedown.kinds``.

A match is ``{"list_id", "entry_id", "kind", "distance", "reason"}``; ``distance`` is
smaller-is-closer for every kind (0.0 exact, bits for pdq / phash, ``1 - cosine`` for
clip). An entry's own ``max_distance`` overrides the kind's threshold for that entry,
larger or smaller: each kind is searched once at the loosest threshold of its entries,
then every hit is held to its own entry's threshold. A hash exactly at the threshold
matches. Entries and rows of too low quality for their kind take no part.

Thread safety: an index is immutable once built. faiss searches are const and safe for
concurrent readers, and the multi-index search reads shared arrays only, so one index
serves every thread of a worker process. ``MatchTakedown`` builds it once per process
(``apache_beam.utils.shared.Shared``) from list paths read on the worker; the list is
never broadcast per element nor rebuilt per bundle.

Hash-list values are sensitive: nothing here logs a value or puts one in an error.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from transforms.takedown.entry_table import EntryTable, stored_for_build, stored_take
from transforms.takedown.hamming import HAMMING_STRATEGIES
from transforms.takedown.kinds import KINDS, Kind, Thresholds
from transforms.takedown.list_loader import load_lists
from transforms.takedown.lists import TakedownEntry
from transforms.takedown.search import BadEntryValue, KindIndex

_LOG = logging.getLogger(__name__)


class _Part(NamedTuple):
    kind: Kind
    index: KindIndex
    entries: np.ndarray | None  # position in the kind's index -> entry; None: the same position
    count: int  # entries in the index


def _column_list(values: Any) -> Any:
    """Arrow columns as Python lists; lists and numpy arrays as they are."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values.to_pylist()
    return values


class _AsLists(Mapping[str, Any]):
    """A batch's columns for the kinds that read lists: each Arrow column made a Python
    list when first read, once for all of them."""

    def __init__(self, columns: Mapping[str, Any]) -> None:
        self._columns = columns
        self._lists: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._lists:
            self._lists[name] = _column_list(self._columns[name])
        return self._lists[name]

    def __iter__(self):
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)


class TakedownIndex:
    """All entries of the takedown lists, searchable a batch of rows at a time.

    Built once, read-only afterwards (safe for concurrent readers: see module docstring).
    ``thresholds`` per kind are the defaults for entries without their own ``max_distance``.
    """

    def __init__(
        self,
        entries: EntryTable | Iterable[TakedownEntry],
        *,
        thresholds: Thresholds | None = None,
        hamming_strategy: str = "auto",
    ) -> None:
        """``entries``: an ``EntryTable`` (``load_lists``; its values go into the kinds'
        indexes, only its metadata columns are kept) or entry objects."""
        if hamming_strategy not in HAMMING_STRATEGIES:
            raise ValueError(f"hamming_strategy must be one of {', '.join(HAMMING_STRATEGIES)}")
        started = time.perf_counter()
        table = entries if isinstance(entries, EntryTable) else EntryTable.from_entries(entries)
        self.thresholds = thresholds if thresholds is not None else Thresholds()
        self._parts: dict[str, _Part] = {}
        self.low_quality_entries = 0
        for name in table.kind_names:
            kind = KINDS[name]
            rows = table.values[name].rows
            values = table.values[name].values
            if table.quality is not None:
                quality = table.quality if rows is None else table.quality[rows]
                low = np.asarray(kind.low_quality(quality), dtype=bool)
                if low.any():  # too poor to match safely (see transforms.takedown.kinds)
                    self.low_quality_entries += int(low.sum())
                    keep = np.flatnonzero(~low)
                    rows = keep if rows is None else rows[keep]
                    values = stored_take(values, keep)
            if len(values):
                self._parts[name] = self._build(table, kind, rows, values, hamming_strategy=hamming_strategy)
        self._entries = table.without_values()  # what a match reports: lists, ids, kinds, reasons
        self.kinds: tuple[str, ...] = tuple(k for k in KINDS if k in self._parts)
        self.build_seconds = time.perf_counter() - started
        _LOG.info(
            "takedown index: %d entries (%s), %d low-quality entries, built in %.2f s",
            len(self._entries),
            ", ".join(f"{k}={self._parts[k].count}" + (f"/{s}" if (s := self.strategy(k)) else "")
                      for k in self.kinds),
            self.low_quality_entries,
            self.build_seconds,
        )

    def _build(self, table: EntryTable, kind: Kind, rows: np.ndarray | None, values: Any, **options: Any) -> _Part:
        default = self.thresholds.get(kind.name, kind.default_threshold)
        default = 0.0 if default is None else float(default)
        count = len(values)
        if table.max_distance is None:
            # One threshold for all: a read-only broadcast, not 8 bytes per entry.
            thresholds = np.broadcast_to(np.float64(default), (count,))
        else:
            own = table.max_distance if rows is None else table.max_distance[rows]
            thresholds = np.where(np.isnan(own), default, own)
        try:
            index = kind.build(stored_for_build(values), thresholds, **options)
        except BadEntryValue as err:
            list_id, entry_id = table.label(err.position if rows is None else int(rows[err.position]))
            raise ValueError(f"entry {entry_id!r} of list {list_id!r}: {err}") from None
        return _Part(kind, index, rows, count)

    # -- facts

    def __len__(self) -> int:
        return len(self._entries)

    def index_of(self, kind: str) -> KindIndex | None:
        """The index that serves ``kind`` here, None when no entry of it takes part."""
        part = self._parts.get(kind)
        return part.index if part else None

    def strategy(self, kind: str) -> str | None:
        """The Hamming search used for ``kind`` ("flat" or "mih"), None for other kinds."""
        return getattr(self.index_of(kind), "strategy", None)

    @property
    def rows_per_batch(self) -> int:
        """The rows a batch should hold for its search to cost about the least per row: a
        Hamming search turns round for a batch much longer than its list (hamming.py).
        0 where the length of a batch makes no difference."""
        return max((getattr(part.index, "rows_per_batch", 0) for part in self._parts.values()), default=0)

    @property
    def columns(self) -> tuple[str, ...]:
        """The row columns ``match_columns`` reads for the kinds this index holds."""
        parts = [self._parts[k].kind.columns for k in self.kinds]
        return tuple(dict.fromkeys([c[0] for c in parts] + [name for c in parts for name in c[1:]]))

    @classmethod
    def from_lists(cls, paths: Iterable[str], list_format: str | None = None, **options: Any) -> TakedownIndex:
        """Load list files (``load_lists``) and index them."""
        return cls(load_lists(paths, list_format), **options)  # the table's values live on in the index only

    # -- matching

    def match_batch(self, records: Sequence[Mapping[str, Any]]) -> list[list[dict]]:
        """For each record, the entries it matches (see ``match_columns``)."""
        columns = {name: [r.get(name) for r in records] for name in self.columns}
        return self.match_columns(columns, rows=len(records))

    def match_columns(self, columns: Mapping[str, Any], rows: int | None = None) -> list[list[dict]]:
        """Column-oriented matching: per row, its matches sorted by (list_id, entry_id).

        ``columns`` maps audit column names (``url``, ``url_sha256``, ``content_md5``,
        ``content_sha256``, ``pdq``, ``pdq_quality``, ``phash``, ``_embedding``, or any a
        registered kind reads) to equal-length lists, numpy arrays or Arrow arrays;
        absent columns and None / malformed cells are skipped for their kind. One search
        per kind per call.
        """
        rows, hit_rows, hit_matches = self._match(columns, rows)
        out: list[list[dict]] = [[] for _ in range(rows)]
        for row, matches in zip(hit_rows.tolist(), hit_matches):
            out[row] = matches
        return out

    def match_hits(self, columns: Mapping[str, Any], rows: int | None = None) -> tuple[np.ndarray, list[list[dict]]]:
        """``match_columns`` for the rows that match only: (their batch rows, ascending;
        each one's matches). What a caller building a column of millions of mostly empty
        rows wants (``rematch``)."""
        _, hit_rows, hit_matches = self._match(columns, rows)
        return hit_rows, hit_matches

    def _match(self, columns: Mapping[str, Any], rows: int | None) -> tuple[int, np.ndarray, list[list[dict]]]:
        """(rows, the rows that hit ascending, each one's matches)."""
        data = {name: values for name, values in columns.items() if values is not None}
        lengths = {len(values) for values in data.values()}
        if rows is None:
            if len(lengths) > 1:
                raise ValueError(f"columns have different lengths: {sorted(lengths)}")
            rows = lengths.pop() if lengths else 0
        elif lengths - {rows}:
            raise ValueError(f"columns must all have {rows} rows, got {sorted(lengths)}")
        found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        if rows and len(self._entries):
            as_lists = _AsLists(data)
            for name in self.kinds:
                kind, index, entries, _ = self._parts[name]
                found_rows, found_entries, distances = index.query(kind.rows(data if kind.arrow_rows else as_lists, rows))
                if not len(found_rows):
                    continue
                found_entries = np.asarray(found_entries, dtype=np.int64)
                found.append((np.asarray(found_rows, dtype=np.int64),
                              found_entries if entries is None else entries[found_entries],
                              np.asarray(distances, dtype=np.float64)))
        if not found:
            return rows, np.zeros(0, dtype=np.int64), []
        hit_rows = np.concatenate([f[0] for f in found])
        hit_entries = np.concatenate([f[1] for f in found])
        distances = np.concatenate([f[2] for f in found])
        order = np.argsort(hit_rows, kind="stable")  # by row; within a row, kind by kind as found
        hit_rows, hit_entries, distances = hit_rows[order], hit_entries[order], distances[order].tolist()
        list_ids, entry_ids, kinds, reasons = self._entries.metadata(hit_entries)  # looked up at hit time
        starts = np.flatnonzero(np.r_[True, hit_rows[1:] != hit_rows[:-1]])
        bounds = np.r_[starts, len(hit_rows)].tolist()
        out = []
        for begin, end in zip(bounds[:-1], bounds[1:]):
            matches = [{"list_id": list_ids[j], "entry_id": entry_ids[j], "kind": kinds[j],
                        "distance": distances[j], "reason": reasons[j]} for j in range(begin, end)]
            matches.sort(key=lambda m: (m["list_id"], m["entry_id"]))
            out.append(matches)
        return rows, hit_rows[starts], out


__all__ = ["TakedownIndex"]
