"""The Dataflow and Flink configs build a valid, fully serialisable pipeline graph.

Nothing is submitted: no cloud is reachable here. The graph is built with the config's
own pipeline options, turned into the runner API protos that Dataflow and Flink receive
(pickling every DoFn on the way) and read back."""
from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import GoogleCloudOptions, PortableOptions, WorkerOptions

from pipelines.audit import build_audit
from pipelines.config import load_config
from pipelines.runners import make_options
from tests.conftest import laion_table


@pytest.fixture
def local_dataset(tmp_path):
    import pyarrow.parquet as pq

    path = tmp_path / "part-00000.parquet"
    pq.write_table(laion_table(["http://example.com/a.jpg"]), path)
    return str(path)


def _graph(config_path: str, dataset: str, tmp_path, overrides=()):
    # gs:// and s3:// are swapped for local paths: without a network, GCS calls hang.
    config = load_config(config_path, [f"dataset.input={dataset}", f"output.path={tmp_path / 'out'}",
                                       "takedown.lists=[]", *overrides])
    options = make_options(config.runner.options)
    pipeline = beam.Pipeline(options=options)
    build_audit(pipeline, config)
    proto = pipeline.to_runner_api()
    beam.Pipeline.from_runner_api(proto, pipeline.runner, options)
    names = {t.unique_name for t in proto.components.transforms.values()}
    return config, options, names


def test_dataflow_config_builds_a_serialisable_graph(local_dataset, tmp_path):
    config, options, names = _graph("configs/dataflow-laion5b.yaml", local_dataset, tmp_path)
    assert config.runner.name == "DataflowRunner"
    gcp = options.view_as(GoogleCloudOptions)
    assert gcp.project and gcp.region and gcp.temp_location.startswith("gs://")
    assert options.view_as(WorkerOptions).sdk_container_image.endswith("worker:0.1.0")
    for stage in ("Read", "Reshuffle", "Fetch", "DecodeAndHash", "FlagCaptions", "Decide",
                  "WriteOutputs/WriteAudit", "WriteOutputs/WriteRemovals", "WriteOutputs/WriteClean",
                  "WriteOutputs/WriteSummary"):
        assert stage in names, stage


def test_dataflow_graph_with_takedown_lists(local_dataset, tmp_path):
    lists = tmp_path / "list.csv"
    lists.write_text("list_id,entry_id,kind,value\nl,e1,md5,0123456789abcdef0123456789abcdef\n")
    _, _, names = _graph("configs/dataflow-laion5b.yaml", local_dataset, tmp_path,
                         [f"takedown.lists=[{lists}]"])
    assert "MatchTakedown" in names


def test_flink_config_names_its_job_server_and_environment(local_dataset, tmp_path):
    config, options, names = _graph("configs/flink.yaml", local_dataset, tmp_path)
    assert config.runner.name == "FlinkRunner"
    all_options = options.get_all_options()
    assert all_options["flink_master"] and all_options["flink_job_server_jar"].endswith(".jar")
    assert options.view_as(PortableOptions).environment_type == "DOCKER"
    assert "Fetch" in names
