"""Entry points: the packaged scanner, per-caption, batch and Arrow-column calls, and
`FlagCaptions` (on records or on tables of audit rows)."""
from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics

from transforms.caption_terms import load_caption_terms
from transforms.captions.scanner import CaptionScanner


@functools.cache
def default_scanner() -> CaptionScanner:
    """The scanner over the packaged terms, built once per process."""
    return CaptionScanner(load_caption_terms())


def caption_flags(text: Any) -> list[str]:
    """Sorted, unique flags (names from CAPTION_FLAGS) for one caption."""
    return default_scanner().flags(text)


def caption_flags_batch(texts: Sequence[Any]) -> list[list[str]]:
    """caption_flags for each caption; repeated captions (common in scraped data) scan once."""
    scanner = default_scanner()
    seen: dict[str, list[str]] = {}
    out = []
    for text in texts:
        if not isinstance(text, str):
            out.append([])
            continue
        flags = seen.get(text)
        if flags is None:
            flags = seen[text] = scanner.flags(text)
        out.append(list(flags))
    return out


FLAGS_TYPE = pa.list_(pa.string())


def caption_flags_array(captions: pa.Array | pa.ChunkedArray,
                        scanner: CaptionScanner | None = None) -> pa.ListArray:
    """caption_flags for a whole Arrow string column, as a list<string> array (an empty
    list for a caption without flags, a null or empty one included).

    Only the captions that `CaptionScanner.gates` passes are scanned, each distinct one
    once and without searching again for medical terms where the gates know; the rest
    get [] without any Python work of their own."""
    scanner = scanner or default_scanner()
    if isinstance(captions, pa.ChunkedArray):
        captions = captions.combine_chunks()
    n = len(captions)
    counts = np.zeros(n, dtype=np.int32)
    values: list[str] = []
    maybe, medical = scanner.gates(captions)
    scan = np.flatnonzero(maybe)
    if scan.size:
        seen: dict[str, list[str]] = {}
        found = []
        known = medical[scan].tolist()
        for i, text, term in zip(scan.tolist(), captions.take(pa.array(scan)).to_pylist(), known):
            flags = seen.get(text)
            if flags is None:
                flags = seen[text] = scanner.flags(text, medical=None if term < 0 else bool(term))
            if flags:
                found.append((i, flags))
        for i, flags in found:
            counts[i] = len(flags)
            values.extend(flags)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.string()), type=FLAGS_TYPE)


def flag_caption_table(table: pa.Table, scanner: CaptionScanner | None = None) -> pa.Table:
    """A table of audit rows with `caption_flags` set from its `caption` column."""
    flags = caption_flags_array(table.column("caption"), scanner)
    return table.set_column(table.schema.get_field_index("caption_flags"), "caption_flags", flags)


@beam.typehints.with_output_types(pa.Table)
class _FlagCaptionTables(beam.DoFn):
    def setup(self) -> None:
        self._scanner = default_scanner()
        self._flagged = Metrics.counter("captions", "rows_flagged")

    def process(self, table: pa.Table):
        table = flag_caption_table(table, self._scanner)
        flagged = pc.sum(pc.greater(pc.list_value_length(table.column("caption_flags")), 0)).as_py()
        if flagged:
            self._flagged.inc(flagged)
        yield table


class _FlagCaptions(beam.DoFn):
    def setup(self) -> None:
        self._scanner = default_scanner()
        self._flagged = Metrics.counter("captions", "rows_flagged")

    def process(self, record: dict):
        flags = self._scanner.flags(record.get("caption"))
        if flags:
            self._flagged.inc()
        # A new dict: Beam forbids changing an input element another consumer may see.
        yield {**record, "caption_flags": flags}


class FlagCaptions(beam.PTransform):
    """Fill each record's `caption_flags` from its caption; with `tables`, each row's of
    tables of audit rows (AUDIT_SCHEMA), column-wise (`flag_caption_table`)."""

    def __init__(self, tables: bool = False):
        super().__init__()
        self._tables = tables

    def expand(self, records):
        return records | beam.ParDo(_FlagCaptionTables() if self._tables else _FlagCaptions())
