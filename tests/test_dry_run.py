"""`laion-audit run CONFIG --dry-run`: every config in configs/ builds its whole pipeline
in a network namespace with no interface at all (not even lo up), prints its stages,
exits 0 and writes nothing; bad keys, malformed remote paths and missing local inputs
are one-line config errors, exit 2."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import laion_table

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.name for p in (REPO / "configs").glob("*.yaml"))
TIMEOUT_S = 240  # a GCS call without a network retries for about 120 s: a hang shows as a timeout

# What each config implies of the graph (top-level stages, in order).
EXPECTED = {
    "dataflow-laion5b.yaml": ["Read", "Reshuffle", "Fetch", "DecodeAndHash", "FlagCaptions",
                              "MatchTakedown", "Decide", "WriteOutputs"],
    "flink.yaml": ["Read", "Reshuffle", "Fetch", "DecodeAndHash", "FlagCaptions", "Decide", "WriteOutputs"],
    "laion5b-embeddings.yaml": ["Read", "AttachPrecomputed", "Reshuffle", "NotFetched", "Classify",
                                "FlagCaptions", "MatchTakedown", "Decide", "WriteOutputs"],
    "local.yaml": ["Read", "Reshuffle", "Fetch", "DecodeAndHash", "FlagCaptions", "Decide", "WriteOutputs"],
    "demo.yaml": ["Read", "Reshuffle", "Fetch", "DecodeAndHash", "FlagCaptions", "Decide", "WriteOutputs"],
}


def _no_network_prefix() -> list[str]:
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed: cannot run the CLI without a network")
    for prefix in (["unshare", "-n"], ["unshare", "-rn"]):
        try:
            probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return prefix
    pytest.skip("unshare -n (or -rn) is not permitted here: cannot make a network namespace")


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _start(prefix: list[str], config: str, cwd: Path, *overrides: str) -> subprocess.Popen:
    command = [*prefix, sys.executable, "-m", "pipelines.cli", "run", str(REPO / "configs" / config), "--dry-run"]
    for override in overrides:
        command += ["--set", override]
    return subprocess.Popen(command, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the dry run hung (a network call?): {err[-2000:]}")
    return proc.returncode, out, err


def _config_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("laion-audit:")]


def _stages(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("stages ("))
    stages = []
    for line in lines[start + 1:]:
        number, dot, rest = line.strip().partition(". ")
        if not dot or not number.isdigit():
            break
        stages.append(rest.split("  ")[0])
    return stages


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A working directory holding the local configs' inputs (their paths are relative)."""
    root = tmp_path_factory.mktemp("dry_run_cwd")
    for relative in ("data/part-00000.parquet", "demo-out/data/rows.parquet"):
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(laion_table(["http://example.com/a.jpg", "http://example.com/b.jpg"]), path)
    return root


@pytest.fixture(scope="module")
def dry_runs(workdir):
    """Every config's dry run, started at once (each takes ~10-25 s) and awaited."""
    prefix = _no_network_prefix()
    before = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*"))
    procs = {config: _start(prefix, config, workdir) for config in CONFIGS}
    results = {config: _finish(proc) for config, proc in procs.items()}
    after = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*"))
    return results, before, after


def test_every_config_is_covered():
    assert set(CONFIGS) == set(EXPECTED), "a config in configs/ has no expected stages here"


@pytest.mark.parametrize("config", CONFIGS)
def test_dry_run_builds_every_config_offline(config, dry_runs):
    results, _, _ = dry_runs
    rc, out, err = results[config]
    assert rc == 0, err[-3000:]
    assert "dry run OK" in out
    stages = _stages(out)
    expected = EXPECTED[config]
    assert [s for s in stages if s in expected] == expected, stages
    if config == "laion5b-embeddings.yaml":
        assert "Fetch" not in stages and "Embed" not in stages
        assert "remote layout not listed" in out
    if config in ("dataflow-laion5b.yaml", "flink.yaml", "laion5b-embeddings.yaml"):
        assert "remote: syntax checked, not listed or opened" in out


def test_dry_run_writes_nothing(dry_runs, workdir):
    _, before, after = dry_runs
    assert after == before  # no out/local, no demo-out/audit, no manifest, no temp files
    assert not (workdir / "out").exists() and not (workdir / "demo-out" / "audit").exists()


def test_embedding_resource_hints_are_printed(workdir):
    prefix = _no_network_prefix()
    rc, out, err = _finish(_start(
        prefix, "dataflow-laion5b.yaml", workdir, "embedding.enabled=true",
        'embedding.resource_hints={accelerator: "type:nvidia-l4;count:1;install-nvidia-driver"}'))
    assert rc == 0, err[-3000:]
    embed = [line for line in out.splitlines() if line.strip().split(". ", 1)[-1].startswith("Embed")]
    assert embed and "accelerator=type:nvidia-l4;count:1;install-nvidia-driver" in embed[0]
    assert "Classify" in _stages(out)


@pytest.mark.parametrize("override, key", [
    ("dataset.nope=1", "dataset.nope: unknown key"),
    ("output.path=gs://", "output.path: 'gs://' names no bucket"),
    ("dataset.input=gs:///laion/*.parquet", "dataset.input: 'gs:///laion/*.parquet' names no bucket"),
    ("takedown.lists=[gs://]", "takedown.lists: 'gs://' names no bucket"),
    ("runner.options.project=Not A Project", "runner.options: Invalid Project ID"),
])
def test_bad_config_is_one_line_exit_2(override, key, workdir):
    prefix = _no_network_prefix()
    rc, out, err = _finish(_start(prefix, "dataflow-laion5b.yaml", workdir, override))
    assert rc == 2, (out, err[-2000:])
    errors = _config_errors(err)
    assert len(errors) == 1 and key in errors[0], err[-2000:]
    assert "Traceback" not in err


def test_missing_local_input_is_exit_2(workdir, tmp_path):
    prefix = _no_network_prefix()
    missing = tmp_path / "nowhere" / "*.parquet"
    rc, _, err = _finish(_start(prefix, "local.yaml", workdir, f"dataset.input={missing}",
                                f"output.path={tmp_path / 'out'}"))
    assert rc == 2
    errors = _config_errors(err)
    assert len(errors) == 1 and errors[0].startswith("laion-audit: config error: dataset.input: no file matches")
    assert not (tmp_path / "out").exists()


def test_local_input_columns_are_checked(workdir, tmp_path):
    """A local input is checked as a real run checks it: a missing URL column fails."""
    prefix = _no_network_prefix()
    rc, _, err = _finish(_start(prefix, "local.yaml", workdir, "dataset.url_col=NO_SUCH_COLUMN",
                                f"output.path={tmp_path / 'out'}"))
    assert rc == 2
    errors = _config_errors(err)
    assert len(errors) == 1 and "dataset.url_col" in errors[0], err[-2000:]
    assert not (tmp_path / "out").exists()
