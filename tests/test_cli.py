"""The command line explains itself: help with an example and exit codes for every
subcommand, help for every argument, --version, -v / --quiet anywhere, distinct exit
codes, one-line errors that name the file, and `request` checking its arguments before
it hashes anything."""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipelines.cli import build_parser
from pipelines.cli import main as cli_main
from pipelines.log_files import LOGS_KEPT

REPO = Path(__file__).resolve().parent.parent
SUBCOMMANDS = ("run", "request", "apply", "rematch", "report")


def _cli(*args: str, tmp: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if tmp is not None:
        env["LAION_AUDIT_LOG_DIR"] = str(tmp / "logs")
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=REPO, capture_output=True,
                          text=True, env=env, timeout=timeout)


def _one_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_every_subcommand_help_says_what_it_does_with_an_example_and_exit_codes():
    commands = _subparsers(build_parser())
    assert set(commands) == set(SUBCOMMANDS)
    for name, sub in commands.items():
        text = sub.format_help()
        assert len(sub.description or "") > 80, name
        example = text.split("example:\n", 1)[1].strip().splitlines()[0]
        assert example.startswith(f"laion-audit {name} "), (name, example)
        codes = text.split("exit codes:\n", 1)[1]
        for code in "0123":
            assert f"\n  {code}  " in "\n" + codes, (name, code)


def test_every_argument_has_help():
    parser = build_parser()
    for name, sub in [("laion-audit", parser), *_subparsers(parser).items()]:
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help and action.help != argparse.SUPPRESS, (name, action.dest)


def test_top_level_help_is_prose_for_a_new_user():
    proc = _cli("--help")
    assert proc.returncode == 0
    assert "`" not in proc.stdout
    steps = ["make demo", "make test", "laion-audit run", "laion-audit request", "laion-audit apply"]
    places = [proc.stdout.index(step) for step in steps]
    assert places == sorted(places)
    for name in SUBCOMMANDS:
        assert f"\n    {name} " in proc.stdout


def test_version():
    proc = _cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"laion-audit {importlib.metadata.version('laion-audit')}"


@pytest.mark.parametrize("argv", [
    ["run", "c.yaml"], ["request", "p.jpg", "--out", "r.csv"], ["report", "out"],
    ["apply", "--removals", "p", "--input", "x.parquet", "--out", "o"],
    ["rematch", "--audit", "a", "--lists", "l.csv", "--out", "o"],
])
def test_verbose_and_quiet_work_before_and_after_the_subcommand(argv):
    parser = build_parser()
    plain = parser.parse_args(argv)
    assert (plain.verbose, plain.quiet) == (False, False)
    after = parser.parse_args([*argv, "--quiet"])
    assert (after.verbose, after.quiet) == (False, True)
    before = parser.parse_args(["-v", *argv])
    assert (before.verbose, before.quiet) == (True, False)
    inside = parser.parse_args([*argv[:1], "--verbose", *argv[1:]])
    assert (inside.verbose, inside.quiet) == (True, False)


@pytest.mark.parametrize("where", [["-v", "-q", "report", "out"], ["report", "out", "-v", "-q"],
                                   ["-q", "report", "--verbose", "out"]])
def test_verbose_and_quiet_exclude_each_other(where, capsys):
    with pytest.raises(SystemExit) as stopped:
        cli_main(where)
    assert stopped.value.code == 2
    assert "-q/--quiet" in capsys.readouterr().err


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.effect_noise((96, 96), 60).convert("RGB").save(path)
    return path


@pytest.mark.parametrize("args, names", [
    (["--out", "{tmp}/r.txt"], "--out"),
    (["--out", "{tmp}/r"], "--out"),
    (["--out", "{tmp}/no-such-folder/r.parquet"], "no-such-folder"),
    (["--out", "{tmp}"], "is a folder"),
    (["--out", "{tmp}/r.parquet", "--list-id", ""], "--list-id"),
    (["--out", "{tmp}/r.parquet", "--list-id", "   "], "--list-id"),
])
def test_request_checks_its_arguments_before_hashing(tmp_path, photo, args, names):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    # --with-embedding of a model that does not exist: were the photo hashed (or the
    # model loaded) before the arguments are checked, this would fail otherwise.
    proc = _cli("request", str(photo), *args, "--with-embedding", "--model", "NoSuchModel", tmp=tmp_path)
    assert proc.returncode == 2
    line = _one_line(proc)
    assert line.startswith("laion-audit: request: ") and names in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs", "photo.jpg"] or \
        sorted(p.name for p in tmp_path.iterdir()) == ["photo.jpg"]


def test_request_names_a_missing_photo(tmp_path, photo):
    proc = _cli("request", str(photo), str(tmp_path / "gone.jpg"), "--out", str(tmp_path / "r.csv"), tmp=tmp_path)
    assert proc.returncode == 2
    assert "gone.jpg" in _one_line(proc)
    assert not (tmp_path / "r.csv").exists()


def test_request_writes_with_good_arguments(tmp_path, photo):
    proc = _cli("request", str(photo), "--out", str(tmp_path / "r.csv"), "--list-id", "mine", tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "r.csv").read_text().count("\nmine,") >= 4


def _run_args(tmp_path: Path, dataset: str, *more: str) -> list[str]:
    return ["run", "configs/local.yaml", "--set", f"dataset.input={dataset}",
            "--set", f"output.path={tmp_path / 'out'}", "--set", "fetch.enabled=false",
            "--set", "runner.name=FnApiRunner", *more]


def test_a_truncated_parquet_is_one_line_naming_the_file(tmp_path):
    whole = tmp_path / "whole.parquet"
    pq.write_table(pa.table({"URL": ["http://a.example/x.jpg"] * 50, "TEXT": ["t"] * 50}), whole)
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(whole.read_bytes()[:300])
    proc = _cli(*_run_args(tmp_path, str(cut)), tmp=tmp_path)
    assert proc.returncode == 2
    line = _one_line(proc)
    assert line.startswith("laion-audit: ") and str(cut) in line and "parquet" in line


def test_a_non_utf8_csv_is_one_line_naming_the_file(tmp_path):
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("URL,TEXT\nhttp://a.example/x.jpg,caf\u00e9 cr\u00e8me\n".encode("latin-1"))
    proc = _cli(*_run_args(tmp_path, str(bad)), tmp=tmp_path)
    assert proc.returncode == 2
    line = _one_line(proc)
    assert str(bad) in line and "UTF-8" in line


def test_a_bad_file_read_on_a_worker_is_one_line_naming_the_file(tmp_path):
    # Only the first file of a format is checked at launch: the second is read on a worker.
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.csv").write_text("URL,TEXT\nhttp://a.example/1.jpg,fine\n")
    bad = tmp_path / "data" / "b.csv"
    bad.write_bytes(b"URL,TEXT\nhttp://a.example/2.jpg,\xff\xfe broken\n")
    proc = _cli(*_run_args(tmp_path, str(tmp_path / "data" / "*.csv"), "--quiet"), tmp=tmp_path)
    assert proc.returncode == 2, proc.stderr
    line = _one_line(proc)
    assert line.startswith("laion-audit: input error: ") and str(bad) in line and "UTF-8" in line


SUMMARY = {"rows_in": 2, "rows_audited": 2, "all_rows_accounted": True, "status": {"ok": 2},
           "action": {"keep": 2}, "report": {}}


def _blocked_report(tmp_path: Path) -> Path:
    """A good run summary whose report/index.html cannot be written (a folder is there)."""
    out = tmp_path / "out"
    (out / "report" / "index.html").mkdir(parents=True)
    (out / "report" / "summary.json").write_text(json.dumps(SUMMARY))
    return out


def _internal_error_log(proc: subprocess.CompletedProcess) -> Path:
    assert proc.returncode == 3, proc.stderr
    first, second = proc.stderr.strip().splitlines()
    assert first.startswith("laion-audit: internal error: ")
    assert second.startswith("laion-audit: the traceback is in ")
    log = Path(second.rsplit(" ", 1)[1])
    assert "Traceback (most recent call last)" in log.read_text()
    return log


def test_an_internal_error_is_exit_3_with_the_log_holding_the_traceback(tmp_path):
    log = _internal_error_log(_cli("report", str(_blocked_report(tmp_path)), tmp=tmp_path))
    assert log.parent == tmp_path / "logs"
    # Only its owner can read the log, or list the folder it is in.
    assert log.stat().st_mode & 0o777 == 0o600 and log.parent.stat().st_mode & 0o777 == 0o700


def test_a_default_log_folder_of_another_user_gives_way_to_a_private_one(tmp_path):
    shared = tmp_path / "laion-audit"  # <tmp>/laion-audit, made by someone else
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    if os.getuid() == 0:
        os.chown(shared, 54321, 54321)
    else:  # the folder is this user's: another user's cannot be made here
        pytest.skip("needs root to make a folder owned by another user")
    env = {k: v for k, v in os.environ.items() if k != "LAION_AUDIT_LOG_DIR"}
    env["TMPDIR"] = str(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "report", str(_blocked_report(tmp_path))],
                          cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    log = _internal_error_log(proc)
    assert log.parent.parent == tmp_path and log.parent != shared and not list(shared.iterdir())
    assert log.parent.stat().st_mode & 0o777 == 0o700 and log.stat().st_mode & 0o777 == 0o600


def test_a_log_folder_that_cannot_be_made_is_one_line_exit_2(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {**os.environ, "LAION_AUDIT_LOG_DIR": str(blocker / "logs")}
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "report", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2
    line = _one_line(proc)
    assert line.startswith("laion-audit: LAION_AUDIT_LOG_DIR ") and str(blocker / "logs") in line


def test_a_log_folder_keeps_only_the_newest_logs(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    names = [f"laion-audit-20260101T0000{i // 60:02d}Z-{1000 + i}.log" for i in range(LOGS_KEPT + 10)]
    for i, name in enumerate(names):
        (logs / name).write_text("old\n")
        os.utime(logs / name, (1_700_000_000 + i, 1_700_000_000 + i))
    (logs / "notes.txt").write_text("not a log\n")
    _cli("report", str(tmp_path / "nothing-here"), tmp=tmp_path)
    left = sorted(p.name for p in logs.iterdir() if p.name in names)
    assert left == sorted(names[-(LOGS_KEPT - 1):])  # room for this run's own
    assert (logs / "notes.txt").exists()


def test_main_in_process_leaves_the_root_logger_as_it_was(tmp_path):
    import logging

    root = logging.getLogger()
    before = (root.level, list(root.handlers), logging.getLogger("apache_beam.typehints").level)
    assert cli_main(["report", str(tmp_path)]) == 2
    after = (root.level, list(root.handlers), logging.getLogger("apache_beam.typehints").level)
    assert after == before


@pytest.mark.parametrize("text", ["[1, 2, 3]\n", "{not json\n", '{"status": 3, "rows_in": 2}\n', "\xff\xfe"])
def test_a_broken_summary_is_an_input_error_naming_it(tmp_path, text):
    out = tmp_path / "out"
    (out / "report").mkdir(parents=True)
    summary = out / "report" / "summary.json"
    summary.write_bytes(text.encode("latin-1"))
    proc = _cli("report", str(out), tmp=tmp_path)
    assert proc.returncode == 2, proc.stderr
    line = _one_line(proc)
    assert line.startswith("laion-audit: input error: ") and str(summary) in line
    assert not (out / "report" / "index.html").exists()


def test_report_of_a_folder_without_a_summary_is_an_input_error(tmp_path):
    proc = _cli("report", str(tmp_path), tmp=tmp_path)
    assert proc.returncode == 2
    assert str(tmp_path / "report" / "summary.json") in _one_line(proc)


def test_usage_errors_exit_2():
    assert _cli("run").returncode == 2
    assert _cli("no-such-command").returncode == 2


def _broken_files(tmp: Path) -> dict[str, Path]:
    whole = tmp / "whole.parquet"
    pq.write_table(pa.table({"URL": ["http://a.example/x.jpg"] * 20, "TEXT": ["t"] * 20}), whole)
    files = {"parquet": tmp / "cut.parquet", "csv": tmp / "latin1.csv", "csv.gz": tmp / "broken.csv.gz",
             "jsonl": tmp / "latin1.jsonl"}
    files["parquet"].write_bytes(whole.read_bytes()[:-40])
    files["csv"].write_bytes("URL,TEXT\nhttp://a/x.jpg,caf\u00e9\n".encode("latin-1"))
    files["csv.gz"].write_bytes(b"\x1f\x8b\x08\x00" + b"not really gzip" * 4)
    files["jsonl"].write_bytes('{"URL": "http://a/x.jpg", "TEXT": "caf\u00e9"}\n'.encode("latin-1"))
    return files


@pytest.mark.parametrize("kind", ["parquet", "csv", "csv.gz", "jsonl"])
def test_every_read_error_names_the_file(tmp_path, kind):
    from transforms.read import DatasetError, DatasetSpec, ReadUnit, check_dataset, format_of, read_unit_columns

    path = _broken_files(tmp_path)[kind]
    with pytest.raises(DatasetError) as checked:
        check_dataset([str(path)], DatasetSpec())
        fmt = format_of(str(path), None)
        list(read_unit_columns(ReadUnit(str(path), path.name, fmt, row_groups=(0,)), DatasetSpec()))
    message = str(checked.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
