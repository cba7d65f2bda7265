"""The clean stage on Beam: each worker cleans whole files with transforms/clean.py."""
from __future__ import annotations

from typing import Iterable

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms.clean import DropRule, clean_file, drop_by_row_id, drop_by_url_sha256
from transforms.dataset_files import DatasetSpec
from transforms.write import output_dir


class _CleanFiles(beam.DoFn):
    def __init__(self, spec: DatasetSpec, sources: dict[str, str], out_dir: str, by: str):
        self._spec, self._sources, self._out_dir, self._by = spec, sources, out_dir, by
        self._kept = Metrics.counter("clean", "rows_kept")
        self._dropped = Metrics.counter("clean", "rows_dropped")
        # The removed keys as a set, built once per side-input object rather than per file.
        self._removed_source: Iterable[str] | None = None
        self._rule: DropRule | None = None

    def process(self, path: str, removed: Iterable[str]):
        if removed is not self._removed_source:
            keys = set(removed)
            self._rule = drop_by_row_id(keys) if self._by == "row_id" else drop_by_url_sha256(keys)
            self._removed_source = removed
        source = self._sources[path]
        out_path = output_dir(self._out_dir, source)  # FileSystems.create makes local folders
        kept, dropped = clean_file(path, source, out_path, self._spec, self._rule)
        self._kept.inc(kept)
        self._dropped.inc(dropped)
        yield {"file": out_path, "kept": kept, "dropped": dropped}


class WriteCleanDataset(beam.PTransform):
    """Input files + removed keys (row ids or url_sha256s, a PCollection of str) ->
    cleaned files under `out_dir`, one per input file.

    The removed keys reach each worker as a side input: a removal list is small next to
    the dataset (thousands to millions of keys against billions of rows)."""

    def __init__(self, paths: list[str], sources: dict[str, str], spec: DatasetSpec, out_dir: str, by: str = "row_id"):
        super().__init__()
        if by not in ("row_id", "url_sha256"):
            raise ValueError(f"by must be row_id or url_sha256, not {by!r}")
        self._paths, self._sources, self._spec, self._out_dir, self._by = paths, sources, spec, out_dir, by

    def expand(self, removed_keys):
        return (
            removed_keys.pipeline
            | "CleanFiles" >> beam.Create(self._paths)
            | "SpreadFiles" >> beam.Reshuffle()
            | "Filter"
            >> beam.ParDo(
                _CleanFiles(self._spec, self._sources, self._out_dir, self._by),
                beam.pvalue.AsList(removed_keys),
            )
        )
