"""Takedown matching in Beam: records in, records out with their takedown ``matches``.

``MatchTakedown`` batches records and matches each batch against a ``TakedownIndex``
that every worker process builds once, itself, from an ``IndexSpec`` (list paths and
thresholds) through ``apache_beam.utils.shared.Shared``: the lists are read on the
workers, never broadcast per element nor rebuilt per bundle, and one index serves every
thread of a process (see ``transforms.takedown.index`` on thread safety).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import apache_beam as beam
import faiss
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from transforms.takedown.hamming import HAMMING_STRATEGIES
from transforms.takedown.index import TakedownIndex
from transforms.takedown.kinds import KINDS, Thresholds
from transforms.takedown.lists import list_format_of


@dataclasses.dataclass(frozen=True)
class IndexSpec:
    """What a worker needs to build the index itself: list paths and thresholds."""

    paths: tuple[str, ...] = ()
    list_format: str | None = None
    thresholds: Thresholds = dataclasses.field(default_factory=Thresholds)
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
        self._by_kind = {kind: Metrics.counter("takedown", f"matches_{kind}") for kind in KINDS}
        self._builds = Metrics.counter("takedown", "index_builds")

    def _matches_of(self, kind: str):
        counter = self._by_kind.get(kind)
        if counter is None:  # a kind registered after setup
            counter = self._by_kind[kind] = Metrics.counter("takedown", f"matches_{kind}")
        return counter

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
                    self._matches_of(match["kind"]).inc()
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
        thresholds: Thresholds | None = None,
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
            thresholds=thresholds if thresholds is not None else Thresholds(),
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



__all__ = ["IndexSpec", "MatchTakedown", "MatchTakedownBatches", "add_matches"]
