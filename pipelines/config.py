"""Run configuration: YAML files validated into typed settings.

Every run is driven by one YAML file plus ``--set KEY=VALUE`` overrides. A bad config
never reaches Beam: it becomes a ``ConfigError`` whose message is one line naming the key,
and the CLI turns that into exit code 2.
"""
from __future__ import annotations

import glob as _glob
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

# The fetch section is the fetch stage's own settings (keys, defaults, checks): a light
# module, so loading a config imports neither aiohttp nor Beam.
from transforms.data_file import one_line
from transforms.fetch_settings import FetchSettings
from transforms.paths import is_remote

class ConfigError(ValueError):
    """A config problem, stated in one line that names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _as_list(value: Any) -> Any:
    """A YAML key that takes a list also takes one string (or null for an empty list)."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else value


class DatasetConfig(_Section):
    input: list[str] = Field(min_length=1)
    format: Literal["parquet", "csv", "tsv", "jsonl"] | None = None
    url_col: str = "URL"
    caption_col: str = "TEXT"
    id_col: str | None = None
    # The dataset's own hashes of the image bytes (img2dataset writes `md5`): read into
    # content_md5 / content_sha256, so exact-hash takedown entries match with fetch off.
    md5_col: str | None = None
    sha256_col: str | None = None
    # Parquet files are read in units of whole row groups of about this many rows (a
    # row group is never split), and every file in Arrow batches of this size.
    read_batch_rows: int = Field(default=65_536, gt=0)
    # Earlier audits' output paths (or their audit/*.parquet): rows whose URL one of them
    # audited are reused, not fetched (transforms/reuse.py; fetch.refetch_* refetch some).
    previous_audit: list[str] = Field(default_factory=list)

    _input_as_list = field_validator("input", mode="before")(_as_list)
    _previous_as_list = field_validator("previous_audit", mode="before")(_as_list)


class OutputConfig(_Section):
    path: str
    write_embeddings: bool = False
    num_shards: int = Field(default=0, ge=0)  # 0: let the runner decide


class TakedownConfig(_Section):
    lists: list[str] = Field(default_factory=list)
    pdq_max_distance: int = Field(default=31, ge=0, le=256)
    phash_max_distance: int = Field(default=8, ge=0, le=64)
    clip_min_cosine: float = Field(default=0.9, ge=-1, le=1)

    _lists_as_list = field_validator("lists", mode="before")(_as_list)

    def thresholds(self):
        """The three keys as the one value matching takes (transforms.takedown.kinds.Thresholds)."""
        from transforms.takedown.kinds import Thresholds  # imported here: loading a config needs no faiss

        return Thresholds(pdq=self.pdq_max_distance, phash=self.phash_max_distance, clip=self.clip_min_cosine)


class EmbeddingConfig(_Section):
    enabled: bool = False
    model: str = "ViT-B-32"
    pretrained: str | None = None  # open_clip tag, local or gs:// checkpoint; null: random weights
    # LAION-layout directories (img_emb/ + metadata/), one string or a list; []: none
    precomputed: list[str] = Field(default_factory=list)
    batch_size: int = Field(default=64, gt=0)
    device: str = "auto"  # auto: cuda when present
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    num_threads: int | None = Field(default=None, gt=0)
    large_model: bool = False  # one model per machine, shared by its worker processes
    model_copies: int | None = Field(default=None, gt=0)
    # Beam resource hints for the embedding steps only, e.g.
    # {accelerator: "type:nvidia-l4;count:1;install-nvidia-driver"} on Dataflow.
    resource_hints: dict[str, str] = Field(default_factory=dict)

    _precomputed_as_list = field_validator("precomputed", mode="before")(_as_list)

    def handler_options(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "num_threads": self.num_threads,
            "large_model": self.large_model,
            "model_copies": self.model_copies,
            "resource_hints": self.resource_hints,
        }


class ClassifyConfig(_Section):
    # null: the default categories (transforms/data/categories.yaml)
    categories: str | None = None
    batch_size: int = Field(default=256, gt=0)


class PolicyConfig(_Section):
    """Expressions over labels, scores, caption flags and matches (transforms/policy.py)."""

    remove_if: list[str] = Field(default_factory=list)
    review_if: list[str] = Field(default_factory=list)

    _exprs_as_list = field_validator("remove_if", "review_if", mode="before")(_as_list)


class RunnerConfig(_Section):
    name: str = "FnApiRunner"
    options: dict[str, Any] = Field(default_factory=dict)
    # A local runner (FnApiRunner, DirectRunner, PortableRunner on an embedded job server)
    # runs an audit as one pipeline per group of about this many input rows, so memory is
    # bounded and a killed run resumes (pipelines/local_driver.py); 0: one pipeline.
    local_group_rows: int = Field(default=50_000, ge=0)


class AuditConfig(_Section):
    dataset: DatasetConfig
    output: OutputConfig
    fetch: FetchSettings = Field(default_factory=FetchSettings)
    takedown: TakedownConfig = Field(default_factory=TakedownConfig)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    classify: ClassifyConfig = Field(default_factory=ClassifyConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    runner: RunnerConfig = Field(default_factory=RunnerConfig)


def _check_local_inputs(key: str, patterns: list[str]) -> None:
    """Missing local files are config errors; remote paths are checked by the runner."""
    for pattern in patterns:
        if is_remote(pattern):
            continue
        if not _glob.glob(pattern):
            raise ConfigError(f"{key}: no file matches '{pattern}'")


def apply_override(data: dict, assignment: str) -> None:
    """Apply one ``KEY=VALUE`` (dotted key, YAML value) to the raw config dict."""
    key, sep, raw = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set '{assignment}': expected KEY=VALUE")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"{key}: value is not valid YAML ({err.problem})") from None
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"{key}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def parse_config(data: Any, check_files: bool = True) -> AuditConfig:
    if not isinstance(data, dict):
        raise ConfigError("config: the top level must be a mapping of sections")
    try:
        config = AuditConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(one_line(err)) from None
    if check_files:
        _check_local_inputs("dataset.input", config.dataset.input)
        _check_local_inputs("takedown.lists", config.takedown.lists)
        _check_local_inputs("embedding.precomputed", config.embedding.precomputed)
    _check_policies(config)
    # Published embeddings are joined by metadata file and row position, whatever the row
    # ids (transforms.precomputed), so dataset.id_col may be set with embedding.precomputed.
    from pipelines.runners import check_runner

    problem = check_runner(config.runner.name, config.runner.options)
    if problem:
        raise ConfigError(problem)
    return config


def policy_names(config: AuditConfig) -> set[str]:
    """Names a policy expression may use: categories, caption flags, match kinds."""
    from transforms.captions import CAPTION_FLAGS
    from transforms.categories import load_categories
    from transforms.takedown.kinds import KINDS

    try:
        categories = load_categories(config.classify.categories)
    except (OSError, ValueError) as err:
        raise ConfigError(f"classify.categories: {err}".splitlines()[0]) from None
    return {c.name for c in categories} | set(CAPTION_FLAGS) | set(KINDS)


def _check_policies(config: AuditConfig) -> None:
    if not (config.policy.remove_if or config.policy.review_if):
        return
    from transforms.policy import PolicyError, compile_policies

    names = policy_names(config)
    for key in ("remove_if", "review_if"):
        try:
            compile_policies(getattr(config.policy, key), names, f"policy.{key}")
        except PolicyError as err:
            raise ConfigError(f"{err.where}: {err.one_line()}") from None


def read_config_file(path: str | Path) -> dict:
    """A config file's sections as plain data, unvalidated; one-line errors naming it."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"config: cannot read '{path}' ({err.strerror})") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config: '{path}' is not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config: '{path}' must hold a mapping of sections")
    return data


def load_config(path: str | Path, overrides: list[str] = (), check_files: bool = True) -> AuditConfig:
    data = read_config_file(path)
    for assignment in overrides:
        apply_override(data, assignment)
    # Relative paths in a config file are relative to the working directory, like the CLI.
    return parse_config(data, check_files=check_files)
