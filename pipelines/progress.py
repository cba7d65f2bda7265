"""Live progress of a local audit, and Beam's worker noise kept off the user's screen.

A local run goes group by group (pipelines/local_driver.py), and in multi-process mode
its rows are audited in worker processes. So progress is not counted in this process:
each worker's `CountProgress` (one per DoFn instance) rewrites a small file of its own,
`<dir>/<group>/<pid>-<id>.txt` holding "rows ok", at most twice a second and at the end
of each bundle; `Progress` here sums the running group's files, adds the exact counts of
the groups already finished, and draws

    audit: 12,288 / 50,000 rows (24.6%)  310 rows/s  ok 81.2%  ETA 2m02s

in place on a terminal (every 0.5 s), or as a plain line every `interval_s` elsewhere.
The total comes from the parquet files' metadata (a text file's rows are unknown until
read: then there is no total and no ETA). A retried bundle can count twice while it
runs; a finished group's exact count replaces its workers' files, and its folder goes
with them, so a worker of that group that writes late writes nowhere.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from typing import TextIO

from pipelines.log_files import open_private

FLUSH_S = 0.5  # how often a worker rewrites its count file (at most)
_ACTIVE: list["Progress"] = []  # the Progress drawing now, asked when a group is built


def active_folder() -> str | None:
    """Where the workers of the pipeline being built should count: the running group's
    own folder (None: no progress is drawn)."""
    return _ACTIVE[-1].group_folder() if _ACTIVE else None


def read_counts(folder: str) -> tuple[int, int]:
    """(rows, ok) summed over the count files under `folder`."""
    rows = ok = 0
    try:
        names = os.listdir(folder)
    except OSError:
        return 0, 0
    for name in names:
        if not name.endswith(".txt"):
            continue
        try:
            with open(os.path.join(folder, name), encoding="ascii") as handle:
                first, second = handle.read().split()
            rows, ok = rows + int(first), ok + int(second)
        except (OSError, ValueError):  # replaced or gone between listing and reading
            continue
    return rows, ok


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def progress_line(done: int, total: int | None, ok: int, elapsed_s: float, run_rows: int,
                  finished: bool = False) -> str:
    """One progress line: rows done (of the total), rows/s of this run, ok %, ETA.
    `run_rows`: rows done by this run (a resumed run's earlier groups excluded);
    `finished`: the run ended (else every row done means outputs are being written)."""
    rate = run_rows / elapsed_s if elapsed_s > 0 else 0.0
    parts = [f"audit: {done:,}" + (f" / {total:,} rows ({100.0 * done / total:.1f}%)" if total else " rows")]
    parts.append(f"{rate:,.0f} rows/s" if rate >= 10 else f"{rate:.1f} rows/s")
    parts.append(f"ok {100.0 * ok / done:.1f}%" if done else "ok -")
    if finished:
        parts.append(f"done in {_duration(elapsed_s)}")
    elif total and done >= total:
        parts.append("writing outputs")
    elif total and rate > 0:
        parts.append(f"ETA {_duration((total - done) / rate)}")
    return "  ".join(parts)


class Progress:
    """The driver's side: made before the run's pipelines are built (their CountProgress
    write under `folder`, made here on this machine), then `start(total, done, ok)`,
    `group_done(rows, ok)` per group and `finish()` (which removes the folder)."""

    def __init__(self, stream: TextIO | None = None, tty: bool | None = None, interval_s: float = 30.0,
                 refresh_s: float = 0.5):
        self._stream = stream if stream is not None else sys.stderr
        self._tty = self._stream.isatty() if tty is None else tty
        self._interval = refresh_s if self._tty else interval_s
        self.folder = tempfile.mkdtemp(prefix="laion-audit-progress-")
        _ACTIVE.append(self)
        self._group = 0  # the running group's folder is <folder>/group-<n>
        self._total: int | None = None
        self._base_rows = self._base_ok = 0  # finished groups, exact
        self._resumed = 0
        # Re-entrant: _draw holds it while it counts and writes (from the loop thread and
        # from group_done), so frames never interleave.
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.monotonic()
        self._last = ""

    def start(self, total: int | None, done: int = 0, ok: int = 0) -> None:
        """`done`, `ok`: rows of groups an earlier, killed run finished (not redone)."""
        self._total = total
        self._base_rows, self._base_ok, self._resumed = done, ok, done
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="laion-audit-progress", daemon=True)
        self._thread.start()

    def group_folder(self) -> str:
        """The running group's folder, made here (its workers count into it)."""
        with self._lock:
            path = os.path.join(self.folder, f"group-{self._group}")
            os.makedirs(path, exist_ok=True)
            return path

    def group_done(self, rows: int, ok: int) -> None:
        """A group finished: its exact counts replace its workers' files, and the next
        group counts into a folder of its own."""
        with self._lock:
            self._base_rows += rows
            self._base_ok += ok
            shutil.rmtree(os.path.join(self.folder, f"group-{self._group}"), ignore_errors=True)
            self._group += 1
            self._draw()

    def counts(self) -> tuple[int, int]:
        """(rows, ok) done so far: finished groups plus what the running group's workers
        counted (never past the total)."""
        with self._lock:
            rows, ok = read_counts(os.path.join(self.folder, f"group-{self._group}"))
            rows, ok = self._base_rows + rows, self._base_ok + ok
        if self._total is not None:
            rows = min(rows, self._total)
        return rows, min(ok, rows)

    def line(self, finished: bool = False) -> str:
        rows, ok = self.counts()
        return progress_line(rows, self._total, ok, time.monotonic() - self._started, rows - self._resumed,
                             finished)

    def _draw(self, final: bool = False) -> None:
        with self._lock:
            text = self.line(finished=final)
            if self._tty:
                end = "\n" if final else ""
                self._stream.write(f"\r\x1b[K{text}{end}")
            elif final or text != self._last:
                self._stream.write(text + "\n")
            self._last = text
            self._stream.flush()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._draw()

    def finish(self, last_line: bool = True) -> None:
        """Stop drawing (with a last line, when it started) and remove the counts folder.
        `last_line` False (the run failed): on a terminal the line is cleared instead."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            if last_line:
                self._draw(final=True)
            elif self._tty:
                self._stream.write("\r\x1b[K")
                self._stream.flush()
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        shutil.rmtree(self.folder, ignore_errors=True)


class NoProgress:
    """What the driver is given when nothing is to be shown (--quiet, a library call)."""

    folder = None

    def start(self, total: int | None, done: int = 0, ok: int = 0) -> None:
        pass

    def group_done(self, rows: int, ok: int) -> None:
        pass

    def finish(self, last_line: bool = True) -> None:
        pass


NO_PROGRESS = NoProgress()


def total_rows(groups) -> int | None:
    """Rows of a run's groups from the parquet metadata; None when a text file's rows
    are unknown until read."""
    counts = [unit.count for group in groups for unit in group.units]
    return None if any(count < 0 for count in counts) else sum(counts)


# ------------------------------------------------------------------ worker noise


class _TerminalHandler(logging.Handler):
    """Writes to whatever sys.stderr is when a record comes (the terminal, while the
    process's own fd 2 goes to the log file)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


OWN_LOGGERS = ("pipelines", "transforms", "scripts")
# Loggers whose INFO lines only bury the rest of a log (Beam's type hints write tens of
# thousands of "native_type_compatibility" lines a run).
HUSHED_LOGGERS = ("apache_beam.typehints",)
_SAVED_LEVELS: dict[str, int] = {}  # the levels setup_logging changed, for teardown_logging


class PrivateFileHandler(logging.FileHandler):
    """A log file handler whose file, when it makes it, is 0600."""

    def _open(self):
        return open_private(self.baseFilename)


def setup_logging(verbose: bool, log_path: str | None) -> None:
    """-v: every log line on the terminal. Otherwise everything at INFO and up goes to
    the log file, and only this project's warnings to the terminal. `teardown_logging`
    puts the root logger back as it was."""
    teardown_logging()  # an earlier call's (main() run twice in one process)
    root = logging.getLogger()
    _SAVED_LEVELS[""] = root.level
    for name in HUSHED_LOGGERS:
        _SAVED_LEVELS[name] = logging.getLogger(name).level
        logging.getLogger(name).setLevel(logging.WARNING)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    terminal = _TerminalHandler()
    terminal.setFormatter(formatter)
    root.setLevel(logging.INFO if verbose or log_path else logging.WARNING)
    if verbose:
        terminal.setLevel(logging.INFO)
    else:
        terminal.setLevel(logging.WARNING)
        terminal.addFilter(lambda record: record.name.split(".")[0] in OWN_LOGGERS)
    terminal.laion_audit = True
    root.addHandler(terminal)
    if log_path and not verbose:
        logfile = PrivateFileHandler(log_path, encoding="utf-8", delay=True)
        logfile.setFormatter(formatter)
        logfile.laion_audit = True
        root.addHandler(logfile)


def teardown_logging() -> None:
    """Remove setup_logging's handlers and restore the levels it changed."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "laion_audit", False):
            root.removeHandler(handler)
            handler.close()
    for name, level in _SAVED_LEVELS.items():
        (logging.getLogger(name) if name else root).setLevel(level)
    _SAVED_LEVELS.clear()


@contextlib.contextmanager
def workers_to_log(log_path: str):
    """While a pipeline runs: file descriptor 2, which Beam's worker processes inherit
    (their "No semi_persistent_directory found" and the like), goes to `log_path`; this
    process's sys.stderr keeps writing to the terminal."""
    sys.stderr.flush()
    try:
        own = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # a test's captured stream
        own = False
    saved = os.dup(2)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    previous = sys.stderr
    try:
        os.dup2(log_fd, 2)
        if own:
            sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding=previous.encoding or "utf-8",
                                   errors="backslashreplace")
        yield
    finally:
        if own:
            sys.stderr.flush()
            sys.stderr.close()
            sys.stderr = previous
        os.dup2(saved, 2)
        os.close(saved)
        os.close(log_fd)
