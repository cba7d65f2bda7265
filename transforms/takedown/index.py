"""TakedownIndex: every entry of the takedown lists, searchable a batch of rows at a time.

The index is a map from kind to that kind's own index, built by the kind
(``Kind.build``) from its entries' values and thresholds; matching asks each kind to
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

from transforms.takedown.hamming import HAMMING_STRATEGIES
from transforms.takedown.kinds import KINDS, Kind, Thresholds, kind_of
from transforms.takedown.lists import TakedownEntry, load_lists
from transforms.takedown.search import BadEntryValue, KindIndex

_LOG = logging.getLogger(__name__)


class _Part(NamedTuple):
    kind: Kind
    index: KindIndex
    entries: np.ndarray  # position in the kind's index -> position in TakedownIndex._entries


def _column_list(values: Any) -> Any:
    """Arrow columns as Python lists; lists and numpy arrays as they are."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values.to_pylist()
    return values


class TakedownIndex:
    """All entries of the takedown lists, searchable a batch of rows at a time.

    Built once, read-only afterwards (safe for concurrent readers: see module docstring).
    ``thresholds`` per kind are the defaults for entries without their own ``max_distance``.
    """

    def __init__(
        self,
        entries: Iterable[TakedownEntry],
        *,
        thresholds: Thresholds | None = None,
        hamming_strategy: str = "auto",
    ) -> None:
        if hamming_strategy not in HAMMING_STRATEGIES:
            raise ValueError(f"hamming_strategy must be one of {', '.join(HAMMING_STRATEGIES)}")
        started = time.perf_counter()
        self._entries: list[TakedownEntry] = list(entries)
        self.thresholds = thresholds if thresholds is not None else Thresholds()
        by_kind: dict[str, list[int]] = {}
        seen: set[tuple[str, str]] = set()
        for i, entry in enumerate(self._entries):
            key = (entry.list_id, entry.entry_id)
            if key in seen:
                raise ValueError(f"duplicate entry {entry.entry_id!r} in list {entry.list_id!r}")
            seen.add(key)
            by_kind.setdefault(kind_of(entry.kind).name, []).append(i)  # unknown kinds fail here, by name
        del seen

        self._parts: dict[str, _Part] = {}
        self.low_quality_entries = 0
        for name, idx in by_kind.items():
            kind = KINDS[name]
            low = kind.low_quality(np.array([self._entries[i].quality for i in idx], dtype=np.float64))
            if low.any():  # too poor to match safely (see transforms.takedown.kinds)
                self.low_quality_entries += int(low.sum())
                idx = [i for i, drop in zip(idx, low.tolist()) if not drop]
            if idx:
                self._parts[name] = self._build(kind, idx, hamming_strategy=hamming_strategy)
        self.kinds: tuple[str, ...] = tuple(k for k in KINDS if k in self._parts)
        self.build_seconds = time.perf_counter() - started
        _LOG.info(
            "takedown index: %d entries (%s), %d low-quality entries, built in %.2f s",
            len(self._entries),
            ", ".join(f"{k}={len(self._parts[k].entries)}" + (f"/{s}" if (s := self.strategy(k)) else "")
                      for k in self.kinds),
            self.low_quality_entries,
            self.build_seconds,
        )

    def _build(self, kind: Kind, idx: list[int], **options: Any) -> _Part:
        default = self.thresholds.get(kind.name, kind.default_threshold)
        default = 0.0 if default is None else float(default)
        entries = [self._entries[i] for i in idx]
        thresholds = np.array([default if e.max_distance is None else float(e.max_distance) for e in entries],
                              dtype=np.float64)
        try:
            index = kind.build([e.value for e in entries], thresholds, **options)
        except BadEntryValue as err:
            bad = entries[err.position]
            raise ValueError(f"entry {bad.entry_id!r} of list {bad.list_id!r}: {err}") from None
        return _Part(kind, index, np.asarray(idx, dtype=np.int64))

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
    def columns(self) -> tuple[str, ...]:
        """The row columns ``match_columns`` reads for the kinds this index holds."""
        parts = [self._parts[k].kind.columns for k in self.kinds]
        return tuple(dict.fromkeys([c[0] for c in parts] + [name for c in parts for name in c[1:]]))

    @classmethod
    def from_lists(cls, paths: Iterable[str], list_format: str | None = None, **options: Any) -> TakedownIndex:
        """Load list files (``load_lists``) and index them."""
        return cls(load_lists(paths, list_format), **options)

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
        data = {name: _column_list(values) for name, values in columns.items() if values is not None}
        lengths = {len(values) for values in data.values()}
        if rows is None:
            if len(lengths) > 1:
                raise ValueError(f"columns have different lengths: {sorted(lengths)}")
            rows = lengths.pop() if lengths else 0
        elif lengths - {rows}:
            raise ValueError(f"columns must all have {rows} rows, got {sorted(lengths)}")
        hits: dict[int, list[tuple[int, float]]] = {}
        if rows and self._entries:
            for name in self.kinds:
                kind, index, entries = self._parts[name]
                found_rows, found_entries, distances = index.query(kind.rows(data, rows))
                if not len(found_rows):
                    continue
                for q, e, d in zip(np.asarray(found_rows).tolist(), entries[found_entries].tolist(),
                                   np.asarray(distances, dtype=np.float64).tolist()):
                    hits.setdefault(q, []).append((e, d))
        order = sorted(hits)
        return rows, np.asarray(order, dtype=np.int64), [self._as_matches(hits[q]) for q in order]

    def _as_matches(self, row_hits: list[tuple[int, float]]) -> list[dict]:
        if not row_hits:
            return []
        out = []
        for i, distance in row_hits:
            entry = self._entries[i]
            out.append({"list_id": entry.list_id, "entry_id": entry.entry_id, "kind": entry.kind,
                        "distance": distance, "reason": entry.reason})
        out.sort(key=lambda m: (m["list_id"], m["entry_id"]))
        return out


__all__ = ["TakedownIndex"]
