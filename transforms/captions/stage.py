"""Entry points: the packaged scanner, per-caption and batch calls, and `FlagCaptions`."""
from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
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
    """Fill each record's `caption_flags` from its caption."""

    def expand(self, records):
        return records | beam.ParDo(_FlagCaptions())
