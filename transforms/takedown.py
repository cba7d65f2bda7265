"""Takedown stage: match audit rows against takedown hash lists.

A takedown list is one file of entries ``list_id, entry_id, kind, value`` plus optional
``max_distance``, ``reason`` and ``quality`` columns, as parquet, csv or jsonl; or a
plain ``.txt`` file of PDQ hashes, one per line (``#`` comments and blank lines ignored;
list_id is the file's stem, entry_id the line number). Kinds and value formats are those
of ``transforms.signals``. ``load_list`` validates a whole file and raises
``TakedownListError`` naming file, line (row for parquet) and entry id for the first bad
entry, so nothing is ever half-loaded; messages give a value's length, never the value.
PDQ entries with ``quality`` below 50 are kept and flagged (``TakedownEntry.low_quality``),
but neither they nor rows whose own ``pdq_quality`` is below 50 take part in PDQ matching:
flat images share a few PDQ patterns, so such a hash would match unrelated blank images
(python-threatexchange drops them too). Their exact hashes and pHash still match.

``TakedownIndex`` answers, for a batch of rows, which entries each row matches:

========== ============================================ ==================================
kind       row column                                   index
========== ============================================ ==================================
url        ``url`` (normalised; ``url_sha256`` if none)  dict
url_sha256 ``url_sha256`` (from ``url`` if absent)       dict
md5        ``content_md5``                               dict
sha256     ``content_sha256``                            dict
pdq        ``pdq``                                       Hamming range search, 256 bits
phash      ``phash``                                     Hamming range search, 64 bits
clip       ``_embedding``                                faiss.IndexFlatIP range search
========== ============================================ ==================================

A match is ``{"list_id", "entry_id", "kind", "distance", "reason"}``. ``distance`` is 0.0
for exact kinds, the Hamming distance in bits for pdq / phash, and ``1 - cosine`` for
clip, so that smaller is closer for every kind. Thresholds: pdq <= 31 bits, phash <= 8
bits, clip cosine >= 0.9 by default; an entry's own ``max_distance`` overrides the
default for that entry (for clip it is the minimum cosine), larger or smaller: each
kind is searched once at the loosest threshold of its entries, then every hit is held
to its own entry's threshold. A hash exactly at the threshold matches.

Hamming search, and why. Both strategies are exact (no false negatives; the tests
check hashes at exactly the threshold, and agreement with a full scan):

* ``flat``: ``faiss.IndexBinaryFlat`` + one ``range_search`` per batch. Linear in the
  list: ~1.5 ns per (row, PDQ entry) pair on one core, so ~2 us/row at 1k entries but
  ~1.5 ms/row at 1M.
* ``mih``: multi-index hashing. The code is cut into m = bits/16 disjoint 16-bit
  substrings (16 for PDQ, 4 for pHash), each with a table substring -> entries (CSR
  arrays: 4 bytes per entry per table). If a row is within d bits of an entry, the m
  substring distances sum to at most d, so by pigeonhole at least one substring is
  within floor(d/m) bits. Probing, in every table, each key within floor(d/m) bit flips
  of the row's substring (1 + 16 probes per table for PDQ at 31, 1 + 16 + 120 for pHash
  at 8) reaches every entry within d; each candidate is then checked on its full code
  and held to its entry's own threshold. Candidates per row are ~ probes * n / 65536
  (~ n/241 for PDQ at 31), so the cost grows ~240x more slowly than the flat scan.

Measured with ``scripts/bench_match.py`` (one core, batches of 1024 rows, PDQ only,
us per row; the numpy peer is a plain XOR + popcount scan of the whole list):

    PDQ entries   flat (faiss)   mih     numpy scan
    1k                  ~2          ~6        ~35
    100k              ~150         ~45     ~3,000
    1M              ~1,500        ~330    ~36,000

faiss's own ``IndexBinaryMultiHash`` does the same lookup but was slower here (16 x 16
bits, nflip 1: ~1.5 ms/row at 1M; 11 x 23 bits, nflip 2: ~0.45 ms/row after a 15 s
build, ~0.1 ms/row even at 1k entries). No strategy is flat in list size at d = 31 of
256 bits (12% of the bits: a wide radius for any exact index); multi-index hashing is
the one whose cost grows slowly enough for million-entry lists.

``hamming_strategy="auto"`` (the default) picks, per kind, the strategy with the lower
``estimated_search_ns`` for that list size, code length and loosest threshold: flat
below a few thousand PDQ entries (or ~30k pHash entries), multi-index hashing above.
Real lists are less uniform than random hashes: many entries sharing one 16-bit
substring make that bucket a hot spot (slower, never a miss).

Thread safety: an index is immutable once built. faiss searches are const and safe for
concurrent readers, and the multi-index search reads shared arrays only, so one index
serves every thread of a worker process. ``MatchTakedown`` builds it once per process
(``apache_beam.utils.shared.Shared``) from list paths read on the worker; the list is
never broadcast per element nor rebuilt per bundle.

Hash-list values are sensitive: nothing here logs a value or puts one in an error.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import logging
import math
import posixpath
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import apache_beam as beam
import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from transforms import signals

_LOG = logging.getLogger(__name__)

LIST_FORMATS = ("parquet", "csv", "jsonl", "txt")
REQUIRED_COLUMNS = ("list_id", "entry_id", "kind", "value")
LIST_COLUMNS = REQUIRED_COLUMNS + ("max_distance", "reason", "quality")

HAMMING_STRATEGIES = ("auto", "flat", "mih")

# Cosines are computed in float32; a vector compared with itself can come out a few
# ulps under 1, so a cosine this close under an entry's threshold still matches.
_COSINE_TOLERANCE = 1e-6

# The audit-row column each kind is compared with.
RECORD_COLUMNS: dict[str, str] = {
    name: getattr(sig, "record_key", {"url": "url", "clip": "_embedding"}.get(name, name))
    for name, sig in signals.SIGNAL_TYPES.items()
}
_HAMMING_KINDS = tuple(
    name for name, sig in signals.SIGNAL_TYPES.items()
    if not sig.exact and not sig.higher_is_closer
)
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".deflate", ".lz4", ".xz")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


class TakedownListError(ValueError):
    """A takedown list file that cannot be used as it is (nothing of it is loaded)."""


@dataclasses.dataclass(frozen=True, slots=True)
class TakedownEntry:
    """One list entry. ``value`` is normalised (``signals``) and left out of repr()."""

    list_id: str
    entry_id: str
    kind: str
    value: str = dataclasses.field(repr=False)
    max_distance: float | None = None
    reason: str | None = None
    quality: int | None = None  # PDQ quality (0..100) when the list gives it

    @property
    def low_quality(self) -> bool:
        """A PDQ entry from a flat, featureless image: it matches far too easily."""
        return self.kind == "pdq" and self.quality is not None and self.quality < signals.PDQ_MIN_QUALITY


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


def _max_distance(kind: str, sig: signals.SignalType, raw: Any) -> float | None:
    number = _optional_number(raw, "max_distance")
    if number is None:
        return None
    if sig.exact:
        if number != 0:
            raise ValueError(f"max_distance does not apply to the exact kind {kind!r}")
        return None
    if sig.higher_is_closer:  # clip: a minimum cosine
        if not -1.0 <= number <= 1.0:
            raise ValueError(f"max_distance for {kind} is a minimum cosine in [-1, 1], got {number:g}")
        return number
    bits = sig.digits * 4
    if not 0 <= number <= bits:
        raise ValueError(f"max_distance for {kind} must be 0..{bits} bits, got {number:g}")
    return number


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
        sig = signals.signal_type(kind_text)
    except ValueError as err:
        raise fail(str(err)) from None
    raw_value = fields.get("value")
    if _text(raw_value) is None:
        raise fail(f"missing {sig.name} value")
    try:
        value = sig.validate(raw_value)
    except ValueError as err:
        raise fail(_value_error(sig.name, err)) from None
    try:
        max_distance = _max_distance(sig.name, sig, fields.get("max_distance"))
        quality = _quality(fields.get("quality"))
    except ValueError as err:
        raise fail(str(err)) from None
    return TakedownEntry(
        list_id=list_id,
        entry_id=entry_id,
        kind=sig.name,
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
            "list_id": list_id, "entry_id": str(number), "kind": "pdq", "value": text,
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
        other = sorted({row["kind"] for row in rows} - {"pdq"})
        if other:
            raise TakedownListError(f"{path}: a .txt list holds PDQ hashes only, not {', '.join(other)}")
        data = "".join(row["value"] + "\n" for row in rows).encode("ascii")
    with FileSystems.create(path) as fh:
        fh.write(data)


# ------------------------------------------------------------------ Hamming search


class _FlatHamming:
    """Exact scan: faiss.IndexBinaryFlat, one range_search per batch of queries."""

    name = "flat"

    def __init__(self, codes: np.ndarray, radius: int) -> None:
        self.radius = radius
        self._index = faiss.IndexBinaryFlat(codes.shape[1] * 8)
        self._index.add(codes)

    def search(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # faiss keeps distances strictly below the radius it is given.
        lims, dist, ids = self._index.range_search(queries, self.radius + 1)
        rows = np.repeat(np.arange(len(queries), dtype=np.int64), np.diff(lims.astype(np.int64)))
        return rows, ids.astype(np.int64), dist.astype(np.int64)


class _MultiIndexHamming:
    """Exact multi-index hashing over 16-bit substrings (see the module docstring)."""

    name = "mih"
    SUBSTRING_BITS = 16
    MAX_FLIPS = 3

    def __init__(self, codes: np.ndarray, radius: int) -> None:
        n, nbytes = codes.shape
        if nbytes % 2:
            raise ValueError("multi-index hashing needs codes of whole 16-bit substrings")
        self.radius = radius
        self._codes = np.ascontiguousarray(codes)
        self._nbytes = nbytes
        # One void scalar per code: gathering rows this way is ~8x faster than a 2-D take.
        self._rows = self._codes.view(np.dtype((np.void, nbytes))).reshape(n)
        substrings = self._codes.view(">u2")  # (n, m)
        self._m = substrings.shape[1]
        self.nflip = radius // self._m
        if self.nflip > self.MAX_FLIPS:
            raise ValueError(f"radius {radius} needs {self.nflip} flips per substring; use the flat scan")
        size = 1 << self.SUBSTRING_BITS
        self._ids = np.empty((self._m, n), dtype=np.int32)
        self._offsets = np.empty((self._m, size + 1), dtype=np.int64)
        for j in range(self._m):
            column = substrings[:, j]
            self._ids[j] = np.argsort(column, kind="stable")
            self._offsets[j, 0] = 0
            np.cumsum(np.bincount(column, minlength=size), out=self._offsets[j, 1:])
        self._flat_ids = self._ids.reshape(-1)
        self._flat_offsets = self._offsets.reshape(-1)
        flips = [0]
        for count in range(1, self.nflip + 1):
            for bits in itertools.combinations(range(self.SUBSTRING_BITS), count):
                flips.append(sum(1 << b for b in bits))
        self._flips = np.array(flips, dtype=np.int64)
        self._table_base = (np.arange(self._m, dtype=np.int64) * (size + 1))[None, :, None]
        self._id_base = (np.arange(self._m, dtype=np.int64) * n)[None, :, None]
        # Queries per chunk: keep the candidate arrays around 2^17 elements (cache-sized).
        probes = self._m * len(self._flips)
        expected = probes * (1 + n / size)
        self._chunk = int(min(1024, max(8, (1 << 17) // max(1, int(expected)))))

    def search(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries)
        query_rows = queries.view(np.dtype((np.void, self._nbytes))).reshape(len(queries))
        words = self._nbytes // 8 if self._nbytes % 8 == 0 else None
        per_query = self._m * len(self._flips)
        found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for start in range(0, len(queries), self._chunk):
            chunk = queries[start:start + self._chunk]
            keys = chunk.view(">u2").astype(np.int64)  # (c, m)
            probes = (keys[:, :, None] ^ self._flips) + self._table_base  # (c, m, P)
            begin = self._flat_offsets[probes]
            length = (self._flat_offsets[probes + 1] - begin).reshape(-1)
            begin = (begin + self._id_base).reshape(-1)
            hit = np.flatnonzero(length)
            if not len(hit):
                continue
            begin, length = begin[hit], length[hit]
            total = int(length.sum())
            ends = np.cumsum(length)
            # Positions of every candidate: each probe's [begin, begin + length) run.
            pos = np.arange(total, dtype=np.int64) + np.repeat(begin - (ends - length), length)
            cand = self._flat_ids[pos].astype(np.int64)
            qrow = np.repeat(hit // per_query + start, length)
            a, b = self._rows[cand], query_rows[qrow]
            if words:
                xor = a.view(np.uint64) ^ b.view(np.uint64)
                dist = np.bitwise_count(xor).reshape(total, words).sum(axis=1, dtype=np.int64)
            else:
                xor = a.view(np.uint8) ^ b.view(np.uint8)
                dist = np.bitwise_count(xor).reshape(total, self._nbytes).sum(axis=1, dtype=np.int64)
            keep = np.flatnonzero(dist <= self.radius)
            if len(keep):
                found.append((qrow[keep], cand[keep], dist[keep]))
        if not found:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty
        rows = np.concatenate([f[0] for f in found])
        ids = np.concatenate([f[1] for f in found])
        dist = np.concatenate([f[2] for f in found])
        # A near entry can be reached through several substrings: report it once.
        _, first = np.unique(rows * len(self._codes) + ids, return_index=True)
        return rows[first], ids[first], dist[first]


def estimated_search_ns(strategy: str, entries: int, nbytes: int, radius: int) -> float:
    """Rough cost of one row's search, in ns on one core (constants fitted on
    scripts/bench_match.py runs); only the comparison between strategies matters."""
    if strategy == "flat":
        return entries * (0.25 + 0.3 * nbytes / 8)
    m = nbytes // 2
    nflip = radius // m
    if nbytes % 2 or nflip > _MultiIndexHamming.MAX_FLIPS:
        return math.inf
    probes = m * sum(math.comb(_MultiIndexHamming.SUBSTRING_BITS, k) for k in range(nflip + 1))
    candidates = probes * entries / (1 << _MultiIndexHamming.SUBSTRING_BITS)
    return probes * 20.0 + candidates * (10.0 + 1.7 * nbytes)


def _hamming_index(codes: np.ndarray, radius: int, strategy: str):
    if strategy == "auto":
        n, nbytes = codes.shape
        mih = estimated_search_ns("mih", n, nbytes, radius)
        strategy = "mih" if mih < estimated_search_ns("flat", n, nbytes, radius) else "flat"
    return _MultiIndexHamming(codes, radius) if strategy == "mih" else _FlatHamming(codes, radius)


def _hex_codes(values: Sequence[Any], nbytes: int) -> tuple[np.ndarray, np.ndarray]:
    """(row positions, uint8 codes) of the values that are hashes of the right length."""
    width = 2 * nbytes
    if values and all(isinstance(v, str) and len(v) == width for v in values):
        try:  # the usual batch: every row hashed; one decode for all of them
            blob = bytes.fromhex("".join(values))
        except ValueError:
            blob = b""
        if len(blob) == nbytes * len(values):  # fromhex skips blanks: lengths must agree
            return (np.arange(len(values), dtype=np.int64),
                    np.frombuffer(blob, dtype=np.uint8).reshape(len(values), nbytes))
    rows: list[int] = []
    blobs: list[bytes] = []
    for i, value in enumerate(values):
        if not value or not isinstance(value, str):
            continue
        try:
            blob = bytes.fromhex(value)
        except ValueError:
            continue
        if len(blob) == nbytes:
            rows.append(i)
            blobs.append(blob)
    codes = np.frombuffer(b"".join(blobs), dtype=np.uint8).reshape(len(blobs), nbytes)
    return np.asarray(rows, dtype=np.int64), codes


def _unit_rows(values: Any) -> tuple[np.ndarray, np.ndarray]:
    """(row positions, float32 unit vectors) of the usable embeddings in a column."""
    if isinstance(values, np.ndarray) and values.ndim == 2:
        matrix = values.astype(np.float32, copy=False)
        rows = np.arange(len(matrix), dtype=np.int64)
    else:
        rows_list, vectors = [], []
        for i, value in enumerate(values):
            if value is None:
                continue
            vec = np.asarray(value, dtype=np.float32).reshape(-1)
            if vec.size:
                rows_list.append(i)
                vectors.append(vec)
        if not vectors:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        if len({v.size for v in vectors}) != 1:
            raise ValueError("embeddings in one batch have different dimensions")
        matrix = np.stack(vectors)
        rows = np.asarray(rows_list, dtype=np.int64)
    norms = np.linalg.norm(matrix, axis=1)
    usable = np.isfinite(norms) & (norms > 0)
    return rows[usable], np.ascontiguousarray(matrix[usable] / norms[usable, None], dtype=np.float32)


def _column_list(values: Any) -> Any:
    """Arrow columns as Python lists; lists and numpy arrays as they are."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values.to_pylist()
    return values


# ------------------------------------------------------------------------- the index


class TakedownIndex:
    """All entries of the takedown lists, searchable a batch of rows at a time.

    Built once, read-only afterwards (safe for concurrent readers: see module docstring).
    ``thresholds`` per kind are the defaults for entries without their own ``max_distance``.
    """

    def __init__(
        self,
        entries: Iterable[TakedownEntry],
        *,
        thresholds: signals.Thresholds | None = None,
        hamming_strategy: str = "auto",
    ) -> None:
        if hamming_strategy not in HAMMING_STRATEGIES:
            raise ValueError(f"hamming_strategy must be one of {', '.join(HAMMING_STRATEGIES)}")
        started = time.perf_counter()
        self._entries: list[TakedownEntry] = list(entries)
        self.thresholds = thresholds if thresholds is not None else signals.Thresholds()
        by_kind: dict[str, list[int]] = {}
        seen: set[tuple[str, str]] = set()
        for i, entry in enumerate(self._entries):
            key = (entry.list_id, entry.entry_id)
            if key in seen:
                raise ValueError(f"duplicate entry {entry.entry_id!r} in list {entry.list_id!r}")
            seen.add(key)
            signals.signal_type(entry.kind)  # unknown kinds fail here, by name
            if entry.kind == "pdq" and entry.low_quality:
                continue  # too flat to match safely (see the module docstring)
            by_kind.setdefault(entry.kind, []).append(i)
        del seen

        self._exact: dict[str, dict[str, list[int]]] = {}
        self._url_by_sha: dict[str, list[int]] = {}
        self._hamming: dict[str, tuple[Any, np.ndarray, np.ndarray]] = {}
        self._clip: tuple[Any, np.ndarray, np.ndarray] | None = None
        for kind, idx in by_kind.items():
            sig = signals.SIGNAL_TYPES[kind]
            if sig.exact:
                self._build_exact(kind, idx)
            elif kind in _HAMMING_KINDS:
                self._build_hamming(kind, sig, idx, hamming_strategy)
            else:
                self._build_clip(idx)
        self.kinds: tuple[str, ...] = tuple(k for k in signals.KINDS if k in by_kind)
        self.low_quality_entries = sum(1 for e in self._entries if e.low_quality)
        self.build_seconds = time.perf_counter() - started
        _LOG.info(
            "takedown index: %d entries (%s), %d low-quality PDQ entries, built in %.2f s",
            len(self._entries),
            ", ".join(f"{k}={len(by_kind[k])}" + (f"/{self.strategy(k)}" if k in self._hamming else "")
                      for k in self.kinds),
            self.low_quality_entries,
            self.build_seconds,
        )

    # -- building

    def _threshold(self, entry: TakedownEntry) -> float:
        return self.thresholds[entry.kind] if entry.max_distance is None else float(entry.max_distance)

    def _build_exact(self, kind: str, idx: list[int]) -> None:
        table: dict[str, list[int]] = {}
        for i in idx:
            entry = self._entries[i]
            value = entry.value if kind == "url" else entry.value.strip().lower()
            if kind == "url":
                try:
                    value = signals.normalize_url(value)
                except ValueError:
                    raise ValueError(f"entry {entry.entry_id!r} of list {entry.list_id!r}: "
                                     "url value is not a valid URL") from None
                self._url_by_sha.setdefault(signals.url_sha256_of(value), []).append(i)
            table.setdefault(value, []).append(i)
        self._exact[kind] = table

    def _build_hamming(self, kind: str, sig: signals.SignalType, idx: list[int], strategy: str) -> None:
        nbytes = sig.digits // 2
        values = [self._entries[i].value for i in idx]
        positions, codes = _hex_codes(values, nbytes)
        if len(positions) != len(idx):
            bad = self._entries[idx[int(np.setdiff1d(np.arange(len(idx)), positions)[0])]]
            raise ValueError(f"entry {bad.entry_id!r} of list {bad.list_id!r}: {kind} value is not "
                             f"{sig.digits} hex digits")
        thresholds = np.array([self._threshold(self._entries[i]) for i in idx], dtype=np.float64)
        radius = int(math.floor(thresholds.max()))
        index = _hamming_index(codes, radius, strategy)
        self._hamming[kind] = (index, np.asarray(idx, dtype=np.int64), thresholds)

    def _build_clip(self, idx: list[int]) -> None:
        vectors = []
        for i in idx:
            entry = self._entries[i]
            try:
                vectors.append(signals.clip_from_value(entry.value))
            except ValueError:
                raise ValueError(f"entry {entry.entry_id!r} of list {entry.list_id!r}: "
                                 "clip value is not a valid embedding") from None
        if len({v.size for v in vectors}) != 1:
            raise ValueError("clip entries have different dimensions")
        matrix = np.ascontiguousarray(np.stack(vectors), dtype=np.float32)
        index = faiss.IndexFlatIP(matrix.shape[1])
        index.add(matrix)
        minimum = np.array([self._threshold(self._entries[i]) for i in idx], dtype=np.float32)
        self._clip = (index, np.asarray(idx, dtype=np.int64), minimum)

    # -- facts

    def __len__(self) -> int:
        return len(self._entries)

    def strategy(self, kind: str) -> str | None:
        """The Hamming search used for ``kind`` ("flat" or "mih"), None for other kinds."""
        found = self._hamming.get(kind)
        return found[0].name if found else None

    @property
    def columns(self) -> tuple[str, ...]:
        """The row columns ``match_columns`` reads for the kinds this index holds."""
        needed = [RECORD_COLUMNS[k] for k in self.kinds]
        if "url" in self.kinds:
            needed.append("url_sha256")
        if "url_sha256" in self.kinds:
            needed.append("url")
        if "pdq" in self.kinds:
            needed.append("pdq_quality")
        return tuple(dict.fromkeys(needed))

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
        ``content_sha256``, ``pdq``, ``phash``, ``_embedding``) to equal-length lists,
        numpy arrays or Arrow arrays; absent columns and None / malformed cells are
        skipped for their kind. One search per kind per call.
        """
        data = {name: _column_list(values) for name, values in columns.items() if values is not None}
        lengths = {len(values) for values in data.values()}
        if rows is None:
            if len(lengths) > 1:
                raise ValueError(f"columns have different lengths: {sorted(lengths)}")
            rows = lengths.pop() if lengths else 0
        elif lengths - {rows}:
            raise ValueError(f"columns must all have {rows} rows, got {sorted(lengths)}")
        hits: list[list[tuple[int, float]]] = [[] for _ in range(rows)]
        if not rows or not self._entries:
            return [[] for _ in range(rows)]
        for kind in self.kinds:
            if kind in self._exact:
                self._match_exact(kind, data, hits)
            elif kind in self._hamming:
                self._match_hamming(kind, data, hits)
            else:
                self._match_clip(data, hits)
        return [self._as_matches(row_hits) for row_hits in hits]

    def _match_exact(self, kind: str, data: Mapping[str, Any], hits: list) -> None:
        table = self._exact[kind]
        if kind == "url":
            urls, shas = data.get("url"), data.get("url_sha256")
            for i in range(len(hits)):
                found = None
                url = urls[i] if urls is not None else None
                if isinstance(url, str) and url:
                    try:
                        found = table.get(signals.normalize_url(url))
                    except ValueError:
                        found = None
                elif shas is not None and isinstance(shas[i], str):
                    found = self._url_by_sha.get(shas[i].strip().lower())
                if found:
                    hits[i].extend((e, 0.0) for e in found)
            return
        column = data.get(RECORD_COLUMNS[kind])
        if column is None and kind == "url_sha256" and data.get("url") is not None:
            column = [signals.url_sha256_of(u) if isinstance(u, str) and u else None for u in data["url"]]
        if column is None:
            return
        for i, value in enumerate(column):
            if isinstance(value, str) and value:
                found = table.get(value.strip().lower())
                if found:
                    hits[i].extend((e, 0.0) for e in found)

    def _match_hamming(self, kind: str, data: Mapping[str, Any], hits: list) -> None:
        column = data.get(RECORD_COLUMNS[kind])
        if column is None:
            return
        quality = data.get("pdq_quality") if kind == "pdq" else None
        if quality is not None:
            # A flat image's PDQ matches other flat images: such rows take no part.
            column = [None if q is not None and q < signals.PDQ_MIN_QUALITY else v for v, q in zip(column, quality)]
        index, entry_idx, thresholds = self._hamming[kind]
        nbytes = signals.SIGNAL_TYPES[kind].digits // 2
        positions, codes = _hex_codes(column, nbytes)
        if not len(positions):
            return
        qrows, ids, dist = index.search(codes)
        keep = dist <= thresholds[ids]
        for q, e, d in zip(positions[qrows[keep]].tolist(), entry_idx[ids[keep]].tolist(),
                           dist[keep].tolist()):
            hits[q].append((e, float(d)))

    def _match_clip(self, data: Mapping[str, Any], hits: list) -> None:
        column = data.get(RECORD_COLUMNS["clip"])
        if column is None or self._clip is None:
            return
        index, entry_idx, minimum = self._clip
        positions, queries = _unit_rows(column)
        if not len(positions):
            return
        if queries.shape[1] != index.d:
            raise ValueError(f"clip entries have {index.d} dimensions but the rows' embeddings have "
                             f"{queries.shape[1]}: the list was made with another embedding model")
        lims, sims, ids = index.range_search(queries, float(minimum.min()) - 2 * _COSINE_TOLERANCE)
        qrows = np.repeat(np.arange(len(queries)), np.diff(lims.astype(np.int64)))
        keep = sims >= minimum[ids] - _COSINE_TOLERANCE
        for q, e, s in zip(positions[qrows[keep]].tolist(), entry_idx[ids[keep]].tolist(),
                           sims[keep].tolist()):
            hits[q].append((e, round(max(0.0, 1.0 - s), 6)))

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


# ------------------------------------------------------------------------------ Beam


@dataclasses.dataclass(frozen=True)
class IndexSpec:
    """What a worker needs to build the index itself: list paths and thresholds."""

    paths: tuple[str, ...] = ()
    list_format: str | None = None
    thresholds: signals.Thresholds = dataclasses.field(default_factory=signals.Thresholds)
    hamming_strategy: str = "auto"

    def build(self) -> TakedownIndex:
        return TakedownIndex.from_lists(self.paths, self.list_format, thresholds=self.thresholds,
                                        hamming_strategy=self.hamming_strategy)


def add_matches(record: dict, matches: list[dict]) -> dict:
    """The record with ``matches`` appended to its existing ones (same entry kept once).

    Returns the record itself when there is nothing new, else a shallow copy: a DoFn must
    not modify its input element.
    """
    if not matches:
        return record
    existing = list(record.get("matches") or ())
    seen = {(m.get("list_id"), m.get("entry_id"), m.get("kind")) for m in existing}
    new = [m for m in matches if (m["list_id"], m["entry_id"], m["kind"]) not in seen]
    if not new:
        return record
    out = dict(record)
    out["matches"] = existing + new
    return out


class MatchTakedownBatches(beam.DoFn):
    """Batches of records in, each record out with its takedown matches appended.

    The index is built on the worker from ``IndexSpec`` (list paths from the constructor
    or from a side input of paths), once per process via ``Shared``, and reused by every
    thread and bundle while the paths stay the same.
    """

    def __init__(self, spec: IndexSpec, faiss_threads: int | None = 1) -> None:
        self._spec = spec
        self._faiss_threads = faiss_threads
        self._shared = shared.Shared()
        self._index: TakedownIndex | None = None
        self._index_spec: IndexSpec | None = None

    def setup(self) -> None:
        if self._faiss_threads:
            # faiss parallelises a search with OpenMP over all cores; a Beam worker
            # already runs one process (and thread) per core.
            faiss.omp_set_num_threads(int(self._faiss_threads))
        self._rows_checked = Metrics.counter("takedown", "rows_checked")
        self._rows_matched = Metrics.counter("takedown", "rows_matched")
        self._by_kind = {kind: Metrics.counter("takedown", f"matches_{kind}") for kind in signals.KINDS}
        self._builds = Metrics.counter("takedown", "index_builds")

    def _index_for(self, spec: IndexSpec) -> TakedownIndex:
        if self._index is None or spec != self._index_spec:
            def build() -> TakedownIndex:
                self._builds.inc()
                return spec.build()

            self._index = self._shared.acquire(build, tag=spec)
            self._index_spec = spec
        return self._index

    def process(self, batch: list[dict], list_paths: Sequence[str] | None = None) -> Iterator[dict]:
        spec = self._spec
        if list_paths is not None:
            spec = dataclasses.replace(spec, paths=spec.paths + tuple(list_paths))
        index = self._index_for(spec)
        results = index.match_batch(batch)
        self._rows_checked.inc(len(batch))
        for record, matches in zip(batch, results):
            out = add_matches(record, matches)
            if matches:
                self._rows_matched.inc()
                for match in matches:
                    self._by_kind[match["kind"]].inc()
            yield out


class MatchTakedown(beam.PTransform):
    """Records in, the same records out with takedown-list matches in ``matches``.

    ``lists`` is a sequence of list paths, or a PCollection of path strings (a side
    input, e.g. paths discovered at run time). The lists themselves are read on the
    workers. Counters: takedown/rows_checked, rows_matched, matches_<kind>, index_builds.
    """

    def __init__(
        self,
        lists: Sequence[str] | beam.pvalue.PCollection,
        *,
        list_format: str | None = None,
        thresholds: signals.Thresholds | None = None,
        hamming_strategy: str = "auto",
        min_batch_size: int = 64,
        max_batch_size: int = 1024,
        faiss_threads: int | None = 1,
        label: str | None = None,
    ) -> None:
        super().__init__(label)
        self._lists_pcoll = lists if isinstance(lists, beam.pvalue.PCollection) else None
        static = () if self._lists_pcoll is not None else tuple(str(p) for p in lists)
        if hamming_strategy not in HAMMING_STRATEGIES:
            raise ValueError(f"hamming_strategy must be one of {', '.join(HAMMING_STRATEGIES)}")
        if list_format is not None:
            list_format_of("list", list_format)
        self._spec = IndexSpec(
            paths=static,
            list_format=list_format,
            thresholds=thresholds if thresholds is not None else signals.Thresholds(),
            hamming_strategy=hamming_strategy,
        )
        self._min_batch_size = min_batch_size
        self._max_batch_size = max_batch_size
        self._faiss_threads = faiss_threads

    def expand(self, records):
        batches = records | "BatchRows" >> beam.BatchElements(
            min_batch_size=self._min_batch_size, max_batch_size=self._max_batch_size)
        fn = MatchTakedownBatches(self._spec, self._faiss_threads)
        if self._lists_pcoll is not None:
            return batches | "MatchLists" >> beam.ParDo(fn, beam.pvalue.AsList(self._lists_pcoll))
        return batches | "MatchLists" >> beam.ParDo(fn)


__all__ = [
    "HAMMING_STRATEGIES",
    "LIST_COLUMNS",
    "LIST_FORMATS",
    "RECORD_COLUMNS",
    "IndexSpec",
    "MatchTakedown",
    "MatchTakedownBatches",
    "TakedownEntry",
    "TakedownIndex",
    "TakedownListError",
    "add_matches",
    "estimated_search_ns",
    "list_format_of",
    "load_list",
    "load_lists",
    "write_list",
]
