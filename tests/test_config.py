import glob
import subprocess
import sys

import pytest

from pipelines.config import ConfigError, apply_override, load_config, parse_config
from transforms.fetch_settings import DEFAULT_USER_AGENT, FetchSettings


def _base(tmp_path):
    data = tmp_path / "rows.parquet"
    data.write_bytes(b"")
    return {"dataset": {"input": str(data)}, "output": {"path": str(tmp_path / "out")}}


def test_defaults_fill_unspecified_sections(tmp_path):
    config = parse_config(_base(tmp_path))
    assert config.dataset.url_col == "URL"
    assert config.dataset.caption_col == "TEXT"
    assert config.fetch.enabled is True
    assert config.fetch.allow_private_networks is False
    assert config.fetch.respect_opt_out is True
    assert config.takedown.lists == []
    assert config.embedding.enabled is False
    assert config.dataset.input == [str(tmp_path / "rows.parquet")]


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"fetch": {"concurency": 4}}, "fetch.concurency: unknown key"),
        ({"fetch": {"timeout_s": "soon"}}, "fetch.timeout_s:"),
        ({"fetch": {"concurrency": 0}}, "fetch.concurrency:"),
        ({"dataset": {"format": "xls"}}, "dataset.format:"),
        ({"surprise": {}}, "surprise: unknown key"),
        ({"output": {}}, "output.path: required key is missing"),
    ],
)
def test_bad_values_name_the_key(tmp_path, patch, message):
    data = _base(tmp_path)
    for section, values in patch.items():
        if values:
            data.setdefault(section, {}).update(values)
        else:
            data[section] = values
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_fetch_section_is_the_fetch_stage_settings(tmp_path):
    config = parse_config(_base(tmp_path))
    assert type(config.fetch) is FetchSettings
    assert config.fetch == FetchSettings()
    # Beam batches: at most batch_size URLs, at least 16 (or batch_size when smaller).
    assert (config.fetch.min_batch_size, config.fetch.max_batch_size) == (16, 128)
    data = _base(tmp_path)
    data["fetch"] = {"batch_size": 8, "user_agent": None, "allowed_private_hosts": "mirror:8080"}
    fetch = parse_config(data).fetch
    assert (fetch.min_batch_size, fetch.max_batch_size) == (8, 8)
    assert fetch.user_agent == DEFAULT_USER_AGENT
    assert fetch.allowed_private_hosts == ("mirror:8080",)


def test_fetch_settings_built_directly_are_checked_like_the_config():
    with pytest.raises(ValueError, match="concurrency"):
        FetchSettings(concurrency=0)
    with pytest.raises(ValueError, match="timout_s"):
        FetchSettings(timout_s=3)
    settings = FetchSettings()
    settings.enabled = False
    with pytest.raises(ValueError, match="retries"):
        settings.retries = -1


def test_missing_input_file_is_a_config_error(tmp_path):
    data = _base(tmp_path)
    data["dataset"]["input"] = str(tmp_path / "nope-*.parquet")
    with pytest.raises(ConfigError, match="dataset.input: no file matches"):
        parse_config(data)


def test_remote_inputs_are_not_checked_locally(tmp_path):
    data = _base(tmp_path)
    data["dataset"]["input"] = ["gs://bucket/laion/*.parquet", "s3://b/x.parquet"]
    assert parse_config(data).dataset.input[0].startswith("gs://")


def test_overrides_are_dotted_and_yaml_typed(tmp_path):
    data = _base(tmp_path)
    apply_override(data, "fetch.concurrency=12")
    apply_override(data, "fetch.allow_private_networks=true")
    apply_override(data, "runner.options.direct_num_workers=2")
    apply_override(data, "takedown.lists=[]")
    config = parse_config(data)
    assert config.fetch.concurrency == 12
    assert config.fetch.allow_private_networks is True
    assert config.runner.options == {"direct_num_workers": 2}


def test_override_without_equals_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_override({}, "fetch.concurrency")


def test_shipped_configs_validate():
    names = sorted(glob.glob("configs/*.yaml"))
    assert len(names) >= 5
    for name in names:
        config = load_config(name, check_files=False)
        assert config.runner.name


def test_cli_bad_key_exits_2_with_one_line(tmp_path):
    data = tmp_path / "rows.parquet"
    data.write_bytes(b"")
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "run", "configs/local.yaml",
         "--set", f"dataset.input={data}", "--set", "fetch.timout_s=3"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "laion-audit: config error: fetch.timout_s: unknown key"
    assert "Traceback" not in proc.stderr


def test_policy_expressions_are_checked_at_load(tmp_path):
    data = _base(tmp_path)
    data["policy"] = {"remove_if": ["child and nudity", "medical_clinical and face"],
                      "review_if": "scores.nudity > 0.9"}
    config = parse_config(data)
    assert config.policy.review_if == ["scores.nudity > 0.9"]

    data["policy"]["remove_if"].append("child and nuditty")
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    message = str(err.value)
    assert message.startswith("policy.remove_if[2]: child and nuditty: unknown name 'nuditty'")
    assert "at column 11" in message and "\n" not in message


@pytest.mark.parametrize(
    "runner, message",
    [
        ({"name": "DataflowRuner"}, "runner.name: unknown runner 'DataflowRuner'"),
        ({"name": "FnApiRunner", "options": {"direct_num_worker": 2}},
         "runner.options.direct_num_worker: not a Beam pipeline option"),
        ({"name": "FnApiRunner", "options": {"direct_running_mode": "multiprocess"}},
         "runner.options: argument --direct_running_mode: invalid choice: 'multiprocess'"),
    ],
)
def test_runner_mistakes_are_config_errors(tmp_path, runner, message):
    data = _base(tmp_path)
    data["runner"] = runner
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_published_embeddings_take_an_id_column_and_a_list_of_directories(tmp_path):
    # Vectors are found by metadata file and row position (transforms/precomputed.py).
    data = _base(tmp_path)
    data["dataset"]["id_col"] = "SAMPLE_ID"
    data["embedding"] = {"precomputed": str(tmp_path)}
    assert parse_config(data).embedding.precomputed == [str(tmp_path)]
    data["embedding"] = {"precomputed": [str(tmp_path), str(tmp_path / "missing")]}
    with pytest.raises(ConfigError, match="embedding.precomputed: no file matches"):
        parse_config(data)


def test_cli_wrong_column_is_a_one_line_error_before_launch(tmp_path):
    rows = tmp_path / "rows.csv"
    rows.write_text("URL,TEXT\nhttp://example.com/a.jpg,a\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "run", "configs/demo.yaml", "--set", f"dataset.input={rows}",
         "--set", "dataset.url_col=url", "--set", f"output.path={tmp_path / 'out'}"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("laion-audit: config error: dataset.url_col: column 'url' not in")
    assert not (tmp_path / "out").exists()
