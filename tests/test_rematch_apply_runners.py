"""`rematch` and `apply` take a runner as `run` does (--config's runner section, --runner,
--set runner.*): their Dataflow and Flink graphs build and round-trip through the runner
API without submitting, remote datasets are not read on the launching machine, and both
run on the multi-process local runner with the in-memory run's outputs."""
from __future__ import annotations

import argparse
import gzip
import json
import shutil

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import DirectOptions, GoogleCloudOptions, PortableOptions

from pipelines.apply import build_apply, plan_apply
from pipelines.audit import run_audit
from pipelines.cli import build_parser, main, runner_config
from pipelines.config import RunnerConfig, parse_config
from pipelines.rematch import build_rematch, plan_rematch
from pipelines.runners import make_options
from tests.conftest import laion_table
from transforms.read import DatasetSpec
from transforms.takedown import TakedownEntry, write_list

N_ROWS = 12
AUDIT_LISTED = (2, 7)  # rows the audit's list names by URL
NEW_LISTED = (3, 5, 9)  # rows the rematch's list names
MULTI = ["--runner", "DirectRunner", "--set", "runner.options.direct_running_mode=multi_processing",
         "--set", "runner.options.direct_num_workers=2"]


def _url(i: int) -> str:
    return f"http://img.example/{i}.jpg"


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """A fetch-off audit of a parquet dataset that removes the rows its URL list names."""
    tmp = tmp_path_factory.mktemp("runners")
    dataset = tmp / "data" / "rows.parquet"
    dataset.parent.mkdir()
    pq.write_table(laion_table([_url(i) for i in range(N_ROWS)]), dataset, row_group_size=4)
    audit_list = tmp / "audit-list.csv"
    write_list([TakedownEntry("old", f"o{i}", "url", _url(i)) for i in AUDIT_LISTED], str(audit_list))
    new_list = tmp / "new-list.csv"
    write_list([TakedownEntry("new", f"n{i}", "url", _url(i)) for i in NEW_LISTED], str(new_list))
    config = parse_config({
        "dataset": {"input": str(dataset)},
        "output": {"path": str(tmp / "audit")},
        "fetch": {"enabled": False},
        "takedown": {"lists": [str(audit_list)]},
    })
    run = run_audit(config)
    assert run.summary["all_rows_accounted"] and run.summary["action"]["remove"] == len(AUDIT_LISTED)
    return {"tmp": tmp, "dataset": dataset, "audit": tmp / "audit", "new_list": new_list}


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def _rematch_args(audited, out, *extra: str) -> list[str]:
    return ["rematch", "--audit", str(audited["audit"]), "--lists", str(audited["new_list"]),
            "--out", str(out), *extra]


def _apply_args(audited, copy, out, *extra: str) -> list[str]:
    return ["apply", "--removals", str(audited["audit"] / "published"), "--input", str(copy),
            "--out", str(out), *extra]


def _round_trip(runner: RunnerConfig, build) -> tuple[object, set[str]]:
    """Build with the runner's own options, turn the graph into the runner API protos a
    Dataflow or Flink job receives (pickling every DoFn) and read them back."""
    options = make_options(runner.options)
    pipeline = beam.Pipeline(options=options)
    build(pipeline)
    proto = pipeline.to_runner_api()
    beam.Pipeline.from_runner_api(proto, pipeline.runner, options)
    return options, {t.unique_name for t in proto.components.transforms.values()}


@pytest.fixture
def no_remote_access(monkeypatch):
    """Every Beam filesystem call on a gs:// or s3:// path fails the test (without a
    network, GCS calls would hang): FileSystems resolves each path through here."""
    seen = []
    real = FileSystems.get_filesystem

    def guarded(path):
        if path.startswith(("gs://", "s3://")):
            seen.append(path)
            raise AssertionError(f"remote path touched on the launching machine: {path}")
        return real(path)

    monkeypatch.setattr(FileSystems, "get_filesystem", staticmethod(guarded))
    return seen


# --- the runner from the command line ------------------------------------------------

def test_the_runner_comes_from_config_then_runner_then_set(audited, tmp_path):
    base = _rematch_args(audited, tmp_path / "o")
    assert runner_config(_args(*base)) == RunnerConfig()  # in memory, as before
    local = runner_config(_args(*base, "--config", "configs/local.yaml"))
    assert local.name == "FnApiRunner" and local.options["direct_running_mode"] == "multi_processing"
    # --runner after --config, --set after --runner; the config's other options stay.
    flink = runner_config(_args(*base, "--config", "configs/local.yaml", "--runner", "FlinkRunner",
                                "--set", "runner.options.direct_num_workers=4",
                                "--set", "runner.options.flink_master=jm:8081"))
    assert flink.name == "FlinkRunner"
    assert flink.options == {"direct_running_mode": "multi_processing", "direct_num_workers": 4,
                             "flink_master": "jm:8081"}
    # A runner-only file is a config for rematch and apply.
    only = tmp_path / "runner.yaml"
    only.write_text("runner:\n  name: DirectRunner\n  options: {direct_num_workers: 3}\n")
    applied = runner_config(_args(*_apply_args(audited, audited["dataset"], tmp_path / "c"), "--config", str(only)))
    assert applied == RunnerConfig(name="DirectRunner", options={"direct_num_workers": 3})


@pytest.mark.parametrize("command", ["rematch", "apply"])
@pytest.mark.parametrize("extra, message", [
    (["--runner", "NoSuchRunner"], "runner.name: unknown runner 'NoSuchRunner'"),
    (["--set", "runner.options.no_such_option=1"], "runner.options.no_such_option: not a Beam pipeline option"),
    (["--set", "runner.options.direct_num_workers=many"], "runner.options: argument --direct_num_workers"),
    (["--set", "runner.options=[a]"], "runner.options: Input should be a valid dictionary"),
    (["--set", "runner.nmae=FnApiRunner"], "runner.nmae: unknown key"),
    (["--set", "takedown.pdq_max_distance=3"], "--set 'takedown.pdq_max_distance': {command} takes runner.* keys only"),
    (["--set", "runner.options"], "--set 'runner.options': expected KEY=VALUE"),
    (["--config", "configs/no-such.yaml"], "config: cannot read 'configs/no-such.yaml'"),
    (["--config", "CONFIG_WITH_TYPO"], "runer: unknown key"),
])
def test_a_bad_runner_is_a_one_line_config_error(audited, tmp_path, capsys, command, extra, message):
    typo = tmp_path / "typo.yaml"
    typo.write_text("runer:\n  name: DirectRunner\n")
    extra = [str(typo) if arg == "CONFIG_WITH_TYPO" else arg for arg in extra]
    out = tmp_path / "out"
    argv = (_rematch_args(audited, out) if command == "rematch"
            else _apply_args(audited, audited["dataset"], out))
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("laion-audit: config error: ") and "\n" not in err
    assert message.format(command=command) in err
    assert not out.exists()  # nothing ran


def test_the_audits_own_config_is_taken_for_its_runner_section(audited, tmp_path):
    # The dataflow config names gs:// datasets and lists: none of it is read or checked.
    runner = runner_config(_args(*_rematch_args(audited, tmp_path / "o"), "--config",
                                 "configs/dataflow-laion5b.yaml", "--set", "runner.options.project=p1"))
    assert runner.name == "DataflowRunner" and runner.options["project"] == "p1"
    assert runner.options["temp_location"] == "gs://MY_BUCKET/tmp"


# --- Dataflow and Flink graphs, built and round-tripped, never submitted ----------------

@pytest.mark.parametrize("config, runner_name", [("configs/dataflow-laion5b.yaml", "DataflowRunner"),
                                                 ("configs/flink.yaml", "FlinkRunner")])
def test_rematch_graph_round_trips_on_the_cloud_runners(audited, tmp_path, no_remote_access, config, runner_name):
    argv = _rematch_args(audited, tmp_path / "out", "--config", config)
    runner = runner_config(_args(*argv))
    assert runner.name == runner_name
    plan = plan_rematch(str(audited["audit"]), [str(audited["new_list"])], str(tmp_path / "out"))
    options, names = _round_trip(runner, lambda p: build_rematch(p, plan))
    for stage in ("ReadAudit", "Rematch", "RowsIn", "WriteOutputs/WriteAudit", "WriteOutputs/WriteReview",
                  "WriteOutputs/WriteRemovals", "WriteOutputs/WriteClean", "WriteOutputs/WriteSummary"):
        assert stage in names, stage
    _check_options(options, runner_name)
    assert not (tmp_path / "out").exists()  # built, not run


@pytest.mark.parametrize("config, runner_name", [("configs/dataflow-laion5b.yaml", "DataflowRunner"),
                                                 ("configs/flink.yaml", "FlinkRunner")])
def test_apply_graph_round_trips_on_the_cloud_runners(audited, tmp_path, no_remote_access, config, runner_name):
    runner = runner_config(_args(*_apply_args(audited, audited["dataset"], tmp_path / "c", "--config", config)))
    assert runner.name == runner_name
    plan = plan_apply(str(audited["audit"] / "published"), [str(audited["dataset"])], str(tmp_path / "c"),
                      DatasetSpec())
    options, names = _round_trip(runner, lambda p: build_apply(p, plan))
    for stage in ("ReadPublished", "UrlHashes", "Clean/CleanFiles", "Clean/Filter"):
        assert stage in names, stage
    _check_options(options, runner_name)


def _check_options(options, runner_name: str) -> None:
    if runner_name == "DataflowRunner":
        gcp = options.view_as(GoogleCloudOptions)
        assert gcp.project and gcp.region and gcp.temp_location.startswith("gs://")
    else:
        assert options.get_all_options()["flink_master"]
        assert options.view_as(PortableOptions).environment_type == "DOCKER"


def test_rematch_of_a_remote_dataset_reads_only_the_audit_here(audited, tmp_path, no_remote_access):
    """An audit of gs:// shards: planning reads the audit's manifest and summary, and the
    shards reach clean/ through the graph, untouched on this machine."""
    audit = tmp_path / "audit"
    shutil.copytree(audited["audit"], audit)
    shards = [f"gs://MY_BUCKET/laion5b/part-{i:05d}.parquet" for i in range(3)]
    manifest = json.loads((audit / "report" / "manifest.json").read_text())
    manifest["inputs"] = shards
    (audit / "report" / "manifest.json").write_text(json.dumps(manifest))
    plan = plan_rematch(str(audit), [str(audited["new_list"])], str(tmp_path / "out"))
    assert plan.inputs == shards and plan.dataset == shards  # clean/ is written, by the workers
    runner = runner_config(_args(*_rematch_args(audited, tmp_path / "out", "--config", "configs/dataflow-laion5b.yaml")))
    _, names = _round_trip(runner, lambda p: build_rematch(p, plan))
    assert "WriteOutputs/WriteClean" in names
    assert no_remote_access == []


def test_rematch_with_a_local_dataset_gone_writes_no_clean(audited, tmp_path):
    audit = tmp_path / "audit"
    shutil.copytree(audited["audit"], audit)
    manifest = json.loads((audit / "report" / "manifest.json").read_text())
    manifest["inputs"] = [str(tmp_path / "moved" / "rows.parquet")]
    (audit / "report" / "manifest.json").write_text(json.dumps(manifest))
    assert plan_rematch(str(audit), [str(audited["new_list"])], str(tmp_path / "out")).inputs is None


def test_apply_of_a_remote_dataset_only_lists_it_here(audited, tmp_path, monkeypatch, no_remote_access):
    shards = [f"gs://MY_BUCKET/laion5b/part-{i:05d}.parquet" for i in range(3)]
    listed = []

    def listing(patterns):  # the glob listing the launcher does need (stubbed: no network)
        listed.append(list(patterns))
        return shards

    monkeypatch.setattr("pipelines.apply.match_inputs", listing)
    plan = plan_apply(str(audited["audit"] / "published"), ["gs://MY_BUCKET/laion5b/*.parquet"],
                      str(tmp_path / "clean"), DatasetSpec())
    assert plan.paths == shards and listed == [["gs://MY_BUCKET/laion5b/*.parquet"]]
    runner = runner_config(_args(*_apply_args(audited, audited["dataset"], tmp_path / "c",
                                              "--config", "configs/dataflow-laion5b.yaml")))
    _, names = _round_trip(runner, lambda p: build_apply(p, plan))
    assert "Clean/Filter" in names
    assert no_remote_access == []


# --- the multi-process local runner, end to end -----------------------------------------

@pytest.fixture
def runs(monkeypatch):
    """The runner and running mode of every pipeline run."""
    seen = []
    real = beam.Pipeline.run

    def spy(self, *args, **kwargs):
        direct = self.options.view_as(DirectOptions)
        seen.append((type(self.runner).__name__, direct.direct_running_mode, direct.direct_num_workers))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(beam.Pipeline, "run", spy)
    return seen


def _sorted(folder, key) -> list[dict]:
    return sorted(pq.read_table(folder).to_pylist(), key=key)


def test_rematch_on_the_multi_process_runner_gives_the_in_memory_outputs(audited, tmp_path, runs, capsys):
    memory, multi = tmp_path / "memory", tmp_path / "multi"
    assert main(_rematch_args(audited, memory)) == 0
    assert main(_rematch_args(audited, multi, *MULTI)) == 0
    assert runs == [("FnApiRunner", "in_memory", 1), ("FnApiRunner", "multi_processing", 2)]
    by_row = lambda r: r["row_id"]  # noqa: E731
    by_hit = lambda r: (r["row_id"], r["entry_id"])  # noqa: E731
    audit_rows = _sorted(multi / "audit", by_row)
    assert audit_rows == _sorted(memory / "audit", by_row)
    assert {r["row_id"] for r in audit_rows if r["action"] == "remove"} == {f"rows.parquet:{i}" for i in NEW_LISTED}
    assert _sorted(multi / "removals", by_hit) == _sorted(memory / "removals", by_hit)
    by_key = lambda r: r["row_key"]  # noqa: E731
    assert _sorted(multi / "published", by_key) == _sorted(memory / "published", by_key)
    clean = pq.read_table(multi / "clean" / "rows.parquet")
    assert clean.equals(pq.read_table(memory / "clean" / "rows.parquet"))
    assert clean.column("URL").to_pylist() == [_url(i) for i in range(N_ROWS) if i not in NEW_LISTED]
    summaries = [json.loads((out / "report" / "summary.json").read_text()) for out in (memory, multi)]
    for summary in summaries:
        for key in ("wall_s", "rows_per_s"):
            summary.pop(key)
    assert summaries[0] == summaries[1]
    assert summaries[1]["all_rows_accounted"] and summaries[1]["metrics"] == {"rows_in": N_ROWS, "rows_audited": N_ROWS}


def test_apply_on_the_multi_process_runner_gives_the_in_memory_outputs(audited, tmp_path, runs, capsys):
    copy = tmp_path / "mirror" / "rows.parquet"
    copy.parent.mkdir()
    shutil.copy(audited["dataset"], copy)
    assert main(_apply_args(audited, copy, tmp_path / "memory")) == 0
    memory_said = capsys.readouterr().out
    assert main(_apply_args(audited, copy, tmp_path / "multi", *MULTI)) == 0
    assert capsys.readouterr().out == memory_said.replace("memory", "multi")  # the same counts (metrics)
    assert f"kept {N_ROWS - len(AUDIT_LISTED)} rows, dropped {len(AUDIT_LISTED)}" in memory_said
    # The default runner's apply runs in this process (no pipeline); worker processes asked
    # for run the Beam pipeline.
    assert runs == [("FnApiRunner", "multi_processing", 2)]
    cleaned = pq.read_table(tmp_path / "multi" / "rows.parquet")
    assert cleaned.equals(pq.read_table(tmp_path / "memory" / "rows.parquet"))
    assert cleaned.equals(pq.read_table(audited["audit"] / "clean" / "rows.parquet"))  # as the audit cleaned


# --- apply reads the audit's formats and layouts ------------------------------------------

def test_apply_cleans_gzipped_tsv_with_its_own_column_names_like_the_audit(tmp_path):
    """A TSV.gz dataset whose URL, caption and id columns are not LAION's names (`url`,
    `caption`, `key`): the audit and apply, with the same --url-col / --id-col, clean it
    to the same file. apply reads no caption, so needs no caption column name."""
    rows = [(f"k{i}", _url(i), f"a\tcap {i}" if i == 4 else f"cap {i}") for i in range(N_ROWS)]
    body = "key\turl\tcaption\textra\n" + "".join(f'{k}\t{u}\t"{c}"\tx\n' if "\t" in c else f"{k}\t{u}\t{c}\tx\n"
                                                   for k, u, c in rows)
    dataset = tmp_path / "data" / "rows.tsv.gz"
    dataset.parent.mkdir()
    dataset.write_bytes(gzip.compress(body.encode()))
    listed = tmp_path / "list.csv"
    write_list([TakedownEntry("l", f"e{i}", "url", _url(i)) for i in (1, 4, 10)], str(listed))
    run = run_audit(parse_config({
        "dataset": {"input": str(dataset), "url_col": "url", "caption_col": "caption", "id_col": "key"},
        "output": {"path": str(tmp_path / "audit")},
        "fetch": {"enabled": False},
        "takedown": {"lists": [str(listed)]},
    }))
    assert run.summary["action"] == {"keep": N_ROWS - 3, "remove": 3}
    copy = tmp_path / "mirror" / "rows.tsv.gz"
    copy.parent.mkdir()
    shutil.copy(dataset, copy)
    assert main(["apply", "--removals", str(tmp_path / "audit" / "published"), "--input", str(copy),
                 "--out", str(tmp_path / "clean"), "--url-col", "url", "--id-col", "key"]) == 0
    cleaned = gzip.decompress((tmp_path / "clean" / "rows.tsv.gz").read_bytes()).decode()
    assert cleaned == gzip.decompress((tmp_path / "audit" / "clean" / "rows.tsv.gz").read_bytes()).decode()
    lines = cleaned.splitlines()
    assert lines[0] == "key\turl\tcaption\textra" and len(lines) == 1 + N_ROWS - 3
    assert not any(f"/{i}.jpg" in line for line in lines for i in (1, 4, 10))


def test_apply_refuses_to_overwrite_its_input(audited, tmp_path, capsys):
    copy = tmp_path / "mirror" / "rows.parquet"
    copy.parent.mkdir()
    shutil.copy(audited["dataset"], copy)
    assert main(_apply_args(audited, copy, copy.parent)) == 2
    err = capsys.readouterr().err
    assert "--out: would overwrite the input" in err and err.count("\n") == 1
    assert pq.read_table(copy).num_rows == N_ROWS
