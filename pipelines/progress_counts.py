"""The Beam half of pipelines/progress.py: each worker's count of the records it saw."""
from __future__ import annotations

import os
import time
import uuid

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.progress import FLUSH_S


class CountProgress(beam.DoFn):
    """Counts the records passing by (and those with status ok) into a file of its own
    under `folder`; emits nothing."""

    def __init__(self, folder: str):
        self._folder = folder

    def setup(self):
        self._path = os.path.join(self._folder, f"{os.getpid()}-{uuid.uuid4().hex[:12]}.txt")
        self._rows = self._ok = 0
        self._written = 0.0

    def process(self, record: dict):
        self._add(1, int(record.get("status") == "ok"))
        return ()

    def _add(self, rows: int, ok: int) -> None:
        self._rows += rows
        self._ok += ok
        now = time.monotonic()
        if now - self._written >= FLUSH_S:
            self._flush(now)

    def finish_bundle(self):
        # No flush at teardown: a worker torn down after its group finished would write
        # that group's count again (its folder is gone by then, but not always yet).
        self._flush(time.monotonic())

    def _flush(self, now: float) -> None:
        self._written = now
        tmp = f"{self._path}.tmp"
        try:
            with open(tmp, "w", encoding="ascii") as handle:
                handle.write(f"{self._rows} {self._ok}\n")
            os.replace(tmp, self._path)
        except OSError:  # the run already ended and its folder is gone: nothing to show
            pass


class CountProgressTables(CountProgress):
    """CountProgress on tables of audit rows."""

    def process(self, table: pa.Table):
        self._add(table.num_rows, pc.sum(pc.equal(table.column("status"), "ok")).as_py() or 0)
        return ()
