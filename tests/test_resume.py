"""Local audits run group by group (pipelines/local_driver.py): a run killed part-way
and started again finishes only the groups left (fetch off, and fetch on against a real
local image host that counts what it serves), and the outputs hold every input row
exactly once; `--fresh` starts over; a changed config replaces the old outputs; a group
whose input file was edited in place is run again."""
from __future__ import annotations

import collections
import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from pipelines.cli import main
from pipelines.config import RunnerConfig, parse_config
from pipelines.local_driver import is_local_runner, plan_groups, split_files
from pipelines.manifest import config_sha256, read_manifest
from scripts.bench_resume import write_config
from scripts.sample_images import make_photo_jpeg
from tests.conftest import laion_table
from tests.hostile_server import HostileServer
from transforms.read import DatasetSpec
from transforms.takedown import TakedownEntry, write_list

ROOT = Path(__file__).resolve().parents[1]
FILES = 8
ROWS = 30  # per file: one group each (local_group_rows below)


def _dataset(tmp_path: Path) -> list[str]:
    folder = tmp_path / "data"
    folder.mkdir()
    for f in range(FILES):
        urls = [f"http://img.example/{f}/{i}.jpg" for i in range(ROWS)]
        pq.write_table(laion_table(urls), folder / f"part-{f:02d}.parquet", row_group_size=10)
    return [f"part-{f:02d}.parquet:{i}" for f in range(FILES) for i in range(ROWS)]


def _config(tmp_path: Path, **runner) -> str:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "dataset": {"input": str(tmp_path / "data" / "*.parquet")},
        "output": {"path": str(tmp_path / "out")},
        "fetch": {"enabled": False},
        "runner": {"name": "FnApiRunner", "local_group_rows": ROWS, **runner},
    }))
    return str(config)


def _done_groups(out: Path) -> dict[str, int]:
    """Group files recorded done, by name, with their modification times."""
    folder = out / "report" / "groups"
    if not folder.is_dir():
        return {}
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()
            if p.name.endswith(".json") and not p.name.endswith(".counts.json")}


def _audited_ids(out: Path) -> collections.Counter:
    return collections.Counter(
        row_id for f in glob.glob(f"{out}/audit/*.parquet") for row_id in pq.read_table(f).column("row_id").to_pylist()
    )


def _summary(out: Path) -> dict:
    return json.loads((out / "report" / "summary.json").read_text())


def _kill_part_way(config: str, out: Path, at_least: int) -> dict[str, int]:
    """Run the CLI as a subprocess, SIGKILL it once `at_least` groups are done; return
    the groups done when it died."""
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run", config], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while len(_done_groups(out)) < at_least:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no group finished in time"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    return _done_groups(out)


def test_a_killed_run_resumes_with_every_row_once(tmp_path):
    expected = _dataset(tmp_path)
    config = _config(tmp_path)
    out = tmp_path / "out"

    done = _kill_part_way(config, out, at_least=2)
    assert 2 <= len(done) < FILES, done  # the premise: killed part-way

    assert main(["run", config]) == 0
    summary = _summary(out)
    # Only the unfinished groups ran again; the finished ones' records are untouched.
    assert (summary["groups"], summary["groups_reused"], summary["groups_run"]) == (FILES, len(done), FILES - len(done))
    after = _done_groups(out)
    assert len(after) == FILES
    assert {name: after[name] for name in done} == done
    # Every input row exactly once, and accounted by every count.
    ids = _audited_ids(out)
    assert set(ids) == set(expected) and set(ids.values()) == {1}
    assert summary["rows_in"] == summary["rows_audited"] == len(expected)
    assert summary["metrics"] == {"rows_in": len(expected), "rows_audited": len(expected)}
    assert summary["all_rows_accounted"] is True and summary["count_mismatch"] is None
    # Nothing of the killed group is left: every part belongs to a group, no temp folder.
    for folder in ("audit", "review", "removals", "published"):
        for entry in os.listdir(out / folder) if (out / folder).is_dir() else ():
            assert entry[:7].startswith("g") and entry[6] == "-" and not (out / folder / entry).is_dir(), entry
    assert sorted(os.listdir(out / "clean")) == [f"part-{f:02d}.parquet" for f in range(FILES)]

    # Started again on finished outputs: nothing to run.
    assert main(["run", config]) == 0
    assert (_summary(out)["groups_reused"], _summary(out)["groups_run"]) == (FILES, 0)
    assert _audited_ids(out) == ids

    # --fresh starts over.
    assert main(["run", config, "--fresh"]) == 0
    summary = _summary(out)
    assert (summary["groups_reused"], summary["groups_run"]) == (0, FILES)
    assert all(_done_groups(out)[name] > done[name] for name in done)
    assert _audited_ids(out) == ids


def test_a_run_killed_after_60_percent_of_its_fetches_refetches_only_the_rest(tmp_path):
    """Fetch on, 8 input files, a group per file: SIGKILL the run's process tree once the
    image host has served 60 % of the rows; the rerun fetches only the rows of the groups
    not recorded done (at most 75 % of all), and audit/ holds every row once, all ok."""
    per_file, kill_at = 40, 0.6
    rows = FILES * per_file
    with HostileServer(host="127.0.0.2") as host:
        for k in range(4):
            host.add_image(f"{k}.jpg", make_photo_jpeg(k, 48, 36))
        (tmp_path / "data").mkdir()
        for f in range(FILES):
            # Every row its own URL (the query string), so every row is one image request
            # (`host.requests`: robots.txt ones are not among them).
            urls = [host.url(f"/img/{i % 4}.jpg?f={f}&i={i}") for i in range(per_file)]
            pq.write_table(laion_table(urls), tmp_path / "data" / f"part-{f:02d}.parquet", row_group_size=10)
        config = write_config(tmp_path, host, group_rows=per_file)  # the benchmark's own config
        out = tmp_path / "out"
        proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run", str(config)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 240
            while len(host.requests) < kill_at * rows:
                assert proc.poll() is None, "the run ended before it could be killed"
                assert time.monotonic() < deadline, "the run fetched too slowly"
                time.sleep(0.005)
            os.killpg(proc.pid, signal.SIGKILL)  # the CLI and anything it started
        finally:
            proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        served_before, done = len(host.requests), _done_groups(out)
        assert kill_at * rows <= served_before < rows and 0 < len(done) < FILES, (served_before, done)

        host.clear_requests()
        assert main(["run", str(config)]) == 0
        refetched = len(host.requests)

    # Only the rows of the groups not recorded done are fetched again.
    assert refetched == (FILES - len(done)) * per_file
    assert refetched <= 0.75 * rows
    summary = _summary(out)
    assert (summary["groups_reused"], summary["groups_run"]) == (len(done), FILES - len(done))
    ids = _audited_ids(out)
    assert set(ids) == {f"part-{f:02d}.parquet:{i}" for f in range(FILES) for i in range(per_file)}
    assert set(ids.values()) == {1}
    assert summary["status"] == {"ok": rows} and summary["all_rows_accounted"] is True


def test_a_file_edited_in_place_is_audited_again(tmp_path):
    """Same size, same row groups, other URLs: only the group reading it runs again."""
    _dataset(tmp_path)
    config = _config(tmp_path)
    out = tmp_path / "out"
    assert main(["run", config]) == 0
    before = _done_groups(out)
    edited = tmp_path / "data" / "part-03.parquet"
    stat = edited.stat()
    urls = [f"http://img.example/3/{i}.png" for i in range(ROWS)]  # as long as the .jpg ones
    pq.write_table(laion_table(urls), edited, row_group_size=10)
    assert edited.stat().st_size == stat.st_size  # the premise: only its time tells
    os.utime(edited, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))

    assert main(["run", config]) == 0
    summary = _summary(out)
    assert (summary["groups_reused"], summary["groups_run"]) == (FILES - 1, 1)
    after = _done_groups(out)
    assert {n: t for n, t in after.items() if n != "g00003.json"} == {n: t for n, t in before.items()
                                                                        if n != "g00003.json"}
    assert after["g00003.json"] > before["g00003.json"]
    rows = [r for f in glob.glob(f"{out}/audit/*.parquet") for r in pq.read_table(f).to_pylist()]
    assert len(rows) == FILES * ROWS
    assert sorted(r["url"] for r in rows if r["row_id"].startswith("part-03")) == sorted(urls)
    # Untouched since: nothing runs.
    assert main(["run", config]) == 0
    assert _summary(out)["groups_run"] == 0


def test_a_changed_config_replaces_the_outputs(tmp_path):
    expected = _dataset(tmp_path)
    config = _config(tmp_path)
    out = tmp_path / "out"
    assert main(["run", config]) == 0
    first = read_manifest(str(out)).config_sha256
    stray = out / "audit" / "old-part-00000-of-00001.parquet"  # e.g. a shard of an older layout
    stray.write_bytes(b"")

    assert main(["run", config, "--set", "policy.review_if=[email]"]) == 0
    summary = _summary(out)
    assert (summary["groups_reused"], summary["groups_run"]) == (0, FILES)
    assert read_manifest(str(out)).config_sha256 != first
    assert not stray.exists()
    ids = _audited_ids(out)
    assert set(ids) == set(expected) and set(ids.values()) == {1}


def test_a_file_split_over_groups_is_cleaned_once_whole(tmp_path):
    """A file larger than a group is audited in several pipelines; clean/ still holds it
    whole, less the removed rows (cleaned after its last group)."""
    urls = [f"http://img.example/{i}.jpg" for i in range(100)]
    table = laion_table(urls)
    dataset = tmp_path / "big.parquet"
    pq.write_table(table, dataset, row_group_size=10)
    removed = {3, 47, 98}
    takedown = tmp_path / "takedown.csv"
    write_list([TakedownEntry("requests", f"e{i}", "url", urls[i]) for i in sorted(removed)], str(takedown))
    config = parse_config({
        "dataset": {"input": str(dataset)},
        "output": {"path": str(tmp_path / "out")},
        "fetch": {"enabled": False},
        "takedown": {"lists": [str(takedown)]},
        "runner": {"name": "FnApiRunner", "local_group_rows": 30},
    })
    groups = plan_groups([str(dataset)], DatasetSpec(), config.output.path, 30)
    assert [sum(u.count for u in g.units) for g in groups] == [30, 30, 30, 10]
    assert split_files(groups) == [str(dataset)]

    from pipelines.audit import run_audit

    run = run_audit(config)
    assert run.summary["all_rows_accounted"] is True and run.summary["groups"] == 4
    assert run.summary["action"] == {"remove": 3, "keep": 97}
    ids = _audited_ids(Path(config.output.path))
    assert set(ids) == {f"big.parquet:{i}" for i in range(100)} and set(ids.values()) == {1}
    cleaned = pq.read_table(Path(config.output.path, "clean", "big.parquet"))
    assert cleaned.schema == table.schema
    assert cleaned.to_pylist() == [row for i, row in enumerate(table.to_pylist()) if i not in removed]
    published = [r for f in glob.glob(f"{config.output.path}/published/*.parquet") for r in pq.read_table(f).to_pylist()]
    assert len(published) == 3


def test_small_files_share_a_group_and_large_ones_are_split(tmp_path):
    spec = DatasetSpec()
    paths = []
    for name, rows in (("a.parquet", 10), ("b.parquet", 10), ("c.parquet", 25), ("d.parquet", 10)):
        pq.write_table(laion_table([f"http://x.example/{i}" for i in range(rows)]), tmp_path / name,
                       row_group_size=5)
        paths.append(str(tmp_path / name))
    groups = plan_groups(paths, spec, str(tmp_path / "out"), 20)
    layout = [[(Path(u.path).name, u.start, u.count) for u in g.units] for g in groups]
    assert layout == [
        [("a.parquet", 0, 10), ("b.parquet", 0, 10)],
        [("c.parquet", 0, 20)],
        [("c.parquet", 20, 5), ("d.parquet", 0, 10)],
    ]
    assert [g.clean_files for g in groups] == [tuple(paths[:2]), (), (paths[3],)]
    assert split_files(groups) == [paths[2]]
    assert [g.prefix for g in groups] == ["g00000-", "g00001-", "g00002-"]


@pytest.mark.parametrize("runner, local", [
    ({"name": "FnApiRunner"}, True),
    ({"name": "DirectRunner", "options": {"direct_running_mode": "multi_processing"}}, True),
    ({"name": "PortableRunner", "options": {"job_endpoint": "embed"}}, True),
    ({"name": "PortableRunner", "options": {"job_endpoint": "localhost:8099"}}, False),
    ({"name": "DataflowRunner"}, False),
    ({"name": "FlinkRunner"}, False),
])
def test_which_runners_are_driven_by_group(runner, local):
    assert is_local_runner(RunnerConfig(**runner)) is local


def test_the_group_size_is_part_of_the_config_hash(tmp_path):
    base = {"dataset": {"input": "x.parquet"}, "output": {"path": str(tmp_path)}}
    a = parse_config(base, check_files=False)
    b = parse_config({**base, "runner": {"local_group_rows": 10}}, check_files=False)
    assert config_sha256(a) != config_sha256(b)
