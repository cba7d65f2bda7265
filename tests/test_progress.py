"""Live progress of local runs: counted in the worker processes (files, not this
process's state), one line redrawn in place on a terminal, plain lines elsewhere,
nothing with --quiet; Beam's worker noise kept in the log unless -v."""
from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from pipelines.progress import Progress, progress_line, read_counts, total_rows
from pipelines.progress_counts import CountProgress

REPO = Path(__file__).resolve().parent.parent
NOISE = "semi_persistent_directory"  # what every Beam SDK worker process logs on start


def test_progress_line_says_rows_of_total_rate_ok_and_eta():
    assert progress_line(250, 1000, 200, 10.0, 250) == \
        "audit: 250 / 1,000 rows (25.0%)  25 rows/s  ok 80.0%  ETA 30s"
    # A resumed run: 400 rows were done before; this run did 100 in 50 s.
    assert progress_line(500, 100_000, 500, 50.0, 100) == \
        "audit: 500 / 100,000 rows (0.5%)  2.0 rows/s  ok 100.0%  ETA 13h49m"
    assert progress_line(0, None, 0, 1.0, 0) == "audit: 0 rows  0.0 rows/s  ok -"
    assert progress_line(1000, 1000, 10, 100.0, 1000) == \
        "audit: 1,000 / 1,000 rows (100.0%)  10 rows/s  ok 1.0%  writing outputs"
    assert progress_line(1000, 1000, 10, 125.0, 1000, finished=True).endswith("done in 2m05s")


def test_workers_in_other_processes_count_into_files(tmp_path):
    records = [{"status": "ok" if i % 3 else "timeout"} for i in range(900)]
    options = PipelineOptions(direct_running_mode="multi_processing", direct_num_workers=2)
    with beam.Pipeline(runner=FnApiRunner(), options=options) as pipeline:
        _ = pipeline | beam.Create(records) | beam.Reshuffle() | beam.ParDo(CountProgress(str(tmp_path)))
    assert read_counts(str(tmp_path)) == (900, 600)
    writers = {name.split("-")[0] for name in os.listdir(tmp_path)}
    assert writers and str(os.getpid()) not in writers  # counted in the worker processes


def test_finished_groups_replace_the_workers_counts(tmp_path):
    progress = Progress(stream=open(os.devnull, "w"), tty=False, interval_s=3600)
    try:
        progress.start(total=100, done=30, ok=20)
        first = Path(progress.group_folder())
        (first / "1-a.txt").write_text("15 5\n")
        (first / "2-b.txt").write_text("10 10\n")
        assert progress.counts() == (55, 35)
        progress.group_done(40, 30)  # the group's exact count, its files dropped
        assert progress.counts() == (70, 50) and not first.exists()
        second = Path(progress.group_folder())
        assert second != first
        (second / "3-c.txt").write_text("80 80\n")  # a retried bundle counted twice
        assert progress.counts() == (100, 100)  # never past the total
    finally:
        progress.finish()
    assert not Path(progress.folder).exists()


def _counted(fn: CountProgress, records: list[dict]) -> None:
    """One bundle through a CountProgress, as a worker runs it."""
    fn.start_bundle()
    for record in records:
        fn.process(record)
    fn.finish_bundle()


def test_a_worker_of_a_finished_group_counts_nothing_into_the_next(tmp_path):
    progress = Progress(stream=open(os.devnull, "w"), tty=False, interval_s=3600)
    try:
        progress.start(total=1000)
        late = CountProgress(progress.group_folder())
        late.setup()
        _counted(late, [{"status": "ok"}] * 40)
        assert progress.counts() == (40, 40)
        progress.group_done(40, 40)
        nxt = CountProgress(progress.group_folder())
        nxt.setup()
        _counted(nxt, [{"status": "timeout"}] * 7)
        # The first group's worker writes again (a last bundle, then its teardown): its
        # folder is gone, so the second group's count stays its own.
        _counted(late, [{"status": "ok"}] * 3)
        late.teardown()
        assert progress.counts() == (47, 40)
    finally:
        progress.finish()


def test_total_rows_come_from_the_parquet_metadata(tmp_path):
    from pipelines.local_driver import plan_groups
    from transforms.read import DatasetSpec

    sizes = [(tmp_path / "a.parquet", 1234), (tmp_path / "b.parquet", 77)]
    for path, rows in sizes:
        pq.write_table(pa.table({"URL": ["u"] * rows, "TEXT": ["t"] * rows}), path, row_group_size=100)
    groups = plan_groups([str(p) for p, _ in sizes], DatasetSpec(), str(tmp_path / "out"), 500)
    assert len(groups) > 2 and total_rows(groups) == 1234 + 77
    (tmp_path / "c.csv").write_text("URL,TEXT\nu,t\n")
    with_text = plan_groups([str(sizes[0][0]), str(tmp_path / "c.csv")], DatasetSpec(), str(tmp_path / "o"), 500)
    assert total_rows(with_text) is None  # a text file's rows are unknown until read


def _dataset(tmp_path: Path, rows: int) -> Path:
    path = tmp_path / "rows.parquet"
    table = pa.table({"URL": [f"http://a.example/{i}.jpg" for i in range(rows)], "TEXT": ["t"] * rows})
    pq.write_table(table, path, row_group_size=100)
    return path


def _run_args(tmp_path: Path, dataset: Path, runner: str, group_rows: int, *more: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", "run", "configs/local.yaml", "--set", f"dataset.input={dataset}",
            "--set", f"output.path={tmp_path / 'out'}", "--set", "fetch.enabled=false",
            "--set", f"runner.name={runner}", "--set", f"runner.local_group_rows={group_rows}", *more]


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "LAION_AUDIT_LOG_DIR": str(tmp_path / "logs")}


def test_a_terminal_shows_one_line_redrawn_in_place(tmp_path):
    dataset = _dataset(tmp_path, 3000)
    args = _run_args(tmp_path, dataset, "FnApiRunner", 500, "--set", "runner.options={}")
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, cwd=REPO, stdin=slave, stdout=slave, stderr=slave, env=_env(tmp_path))
    os.close(slave)
    output = b""
    while True:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    assert proc.wait(timeout=600) == 0, output[-2000:]
    text = output.decode()
    progress, _, after = text.rpartition("done in")
    frames = [f for f in progress.split("\r\x1b[K") if f.strip()]
    counts = [int(m.group(1).replace(",", "")) for f in frames if (m := re.match(r"audit: ([\d,]+) / 3,000 rows", f))]
    assert len(counts) == len(frames) >= 4, frames  # redrawn, each frame the one line
    assert counts == sorted(counts) and counts[-1] == 3000 and len(set(counts)) >= 3
    assert "\n" not in progress.split("\r\x1b[K", 1)[1]  # no line break until the last frame ends
    assert "rows in: 3000  rows audited: 3000" in after


def _lines(stderr: str) -> list[int]:
    return [int(m.group(1).replace(",", "")) for m in re.finditer(r"^audit: ([\d,]+) / 600 rows", stderr, re.M)]


def test_multi_process_run_prints_plain_lines_and_keeps_worker_noise_in_the_log(tmp_path):
    dataset = _dataset(tmp_path, 600)
    args = _run_args(tmp_path, dataset, "DirectRunner", 300, "--progress-every", "0.5")
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, env=_env(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "\r" not in proc.stderr
    assert all(line.startswith("audit: ") for line in proc.stderr.splitlines()), proc.stderr
    counts = _lines(proc.stderr)
    assert counts == sorted(counts) and counts[-1] == 600 and len(set(counts)) >= 2
    assert proc.stderr.rstrip().endswith(re.search(r"done in \S+$", proc.stderr.rstrip()).group(0))
    assert NOISE not in proc.stderr and NOISE not in proc.stdout
    (log,) = (tmp_path / "logs").iterdir()
    text = log.read_text()
    assert NOISE in text  # the workers did say it: into the log
    assert "INFO apache_beam.typehints" not in text  # thousands of lines that bury the rest
    assert log.stat().st_mode & 0o777 == 0o600
    assert "rows in: 600  rows audited: 600  all accounted: yes" in proc.stdout


def test_verbose_shows_the_workers_lines(tmp_path):
    dataset = _dataset(tmp_path, 100)
    args = _run_args(tmp_path, dataset, "DirectRunner", 1000, "-v")
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, env=_env(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert NOISE in proc.stderr


@pytest.mark.parametrize("where", ["before", "after"])
def test_quiet_prints_nothing(tmp_path, where):
    dataset = _dataset(tmp_path, 200)
    args = _run_args(tmp_path, dataset, "FnApiRunner", 100, "--set", "runner.options={}", "--progress-every", "0.1")
    args = [*args[:3], "--quiet", *args[3:]] if where == "before" else [*args, "--quiet"]
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, env=_env(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (proc.stdout, proc.stderr) == ("", "")
    assert (tmp_path / "out" / "report" / "index.html").exists()
