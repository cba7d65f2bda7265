"""`laion-audit run CONFIG --dry-run`: everything a launch can check on this machine,
without running anything, writing anything or sending a packet.

    config (as `run` loads it: keys, local inputs globbed, policies, runner options known)
      -> remote paths: syntax only (a scheme Beam has a filesystem for, a bucket), never
         listed or opened (GCS calls without a network retry for minutes)
      -> runner options: Beam's own validator for the named runner (Dataflow's project,
         job name, GCS locations; portable environments), kept offline
      -> the whole audit graph built (build_audit on an offline plan), turned into the
         runner API protos a Dataflow / Flink job receives (every DoFn pickled) and back
      -> a report: the top-level stages in order and the embedding steps' resource hints

Errors are ConfigErrors (one line naming the key; exit 2 in the CLI). Values still
holding a configs/ placeholder (MY_PROJECT, MY_BUCKET) are reported as placeholders to
set, not as errors: the templates in configs/ dry-run cleanly as written.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam

from pipelines.config import AuditConfig, ConfigError
from transforms.paths import is_remote, local_only

# How configs/ spells a value you must fill in: MY_PROJECT, MY_BUCKET, ...
PLACEHOLDER = re.compile(r"\bMY_[A-Z0-9_]+\b")
# Schemes whose first path part is a bucket (container) that must be there.
_BUCKET_SCHEMES = {"gs", "s3", "az", "azfs"}
_HINT_URN = re.compile(r"^beam:resources:([a-z_]+):v\d+$")


def offline_inputs(patterns: Iterable[str]) -> list[str]:
    """The dataset's files as a dry run plans them: local patterns matched as a real run
    matches them (none found: an error naming the key), remote ones kept as written."""
    from transforms.read import match_inputs

    patterns = list(patterns)
    local = local_only(patterns)
    matched = match_inputs(local) if local else []
    return sorted(set(matched) | {p for p in patterns if is_remote(p)})


class NotListed(beam.PTransform):
    """Stands in, in a dry run only, for a stage whose construction lists or opens
    remote files (AttachPrecomputedEmbeddings on gs://): same label, same place in the
    graph, records passed through. Takes (and ignores) the real stage's arguments."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def expand(self, records):
        return records | "NotListed" >> beam.Map(_same)


def _same(record):
    return record


# ------------------------------------------------------------------ paths


def _walk(value: Any, key: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for name, child in value.items():
            yield from _walk(child, f"{key}.{name}" if key else str(name))
    elif isinstance(value, (list, tuple)):
        for index, child in enumerate(value):
            yield from _walk(child, f"{key}[{index}]" if len(value) > 1 else key)
    else:
        yield key, value


def remote_path_problem(path: str) -> str | None:
    """What is wrong with a remote path's syntax; None when nothing. Offline: the scheme
    must be one Beam has a filesystem for here, and gs:// / s3:// must name a bucket."""
    from apache_beam.io.filesystems import FileSystems

    scheme, _, rest = path.partition("://")
    bucket = rest.split("/", 1)[0]
    if scheme.lower() in _BUCKET_SCHEMES:
        if not bucket:
            return f"'{path}' names no bucket ({scheme}://BUCKET/PATH)"
        if any(c in bucket for c in "*?[]{} \t"):
            return f"'{path}': the bucket name '{bucket}' holds a glob or a space"
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            FileSystems.get_filesystem(path)
    except ValueError:
        return f"'{path}': no Beam filesystem for '{scheme}://' here (is its extra installed?)"
    return None


# Keys that name files or folders a run reads or writes (besides runner.options values).
_PATH_KEYS = ("dataset.input", "dataset.previous_audit", "output.path", "takedown.lists",
              "embedding.precomputed", "embedding.pretrained", "classify.categories")


def check_paths(config: AuditConfig) -> list[tuple[str, str, str]]:
    """(key, path, what the dry run did) for every path the config names; a malformed
    remote path or a local output that is not a folder is a ConfigError naming its key."""
    data = config.model_dump()
    seen: list[tuple[str, str, str]] = []
    for key, value in _walk(data, ""):
        if not isinstance(value, str):
            continue
        is_path_key = key.split("[")[0] in _PATH_KEYS
        if is_path_key and key != "output.path" and not is_remote(value) and value:
            if key != "embedding.pretrained" or os.path.exists(value.removeprefix("file://")):
                seen.append((key, value, "local: checked as a real run checks it"))
            continue
        if "://" not in value:
            continue
        if not (is_path_key or key.startswith("runner.options.")):
            continue
        scheme = value.partition("://")[0].lower()
        if key.startswith("runner.options.") and scheme not in _BUCKET_SCHEMES:
            continue  # an endpoint URL, not a path
        if not is_remote(value):
            continue
        problem = remote_path_problem(value)
        if problem:
            raise ConfigError(f"{key}: {problem}")
        seen.append((key, value, "remote: syntax checked, not listed or opened"))
    out = config.output.path
    if not is_remote(out):
        if os.path.exists(out) and not os.path.isdir(out):
            raise ConfigError(f"output.path: '{out}' is a file, not a folder")
        seen.append(("output.path", out, "local: not created (a dry run writes nothing)"))
    return seen


def placeholders(config: AuditConfig) -> list[tuple[str, str]]:
    """(key, placeholder) for every value that still holds one of configs/' MY_... names."""
    found = []
    for key, value in _walk(config.model_dump(), ""):
        if isinstance(value, str):
            for token in dict.fromkeys(PLACEHOLDER.findall(value)):
                found.append((key, token))
    return found


# ------------------------------------------------------------------ runner options


def _runner_object(name: str):
    from apache_beam.runners.runner import create_runner

    from pipelines.runners import make_runner

    made = make_runner(name)
    return made if not isinstance(made, str) else create_runner(made)  # created, never run


def check_runner_options(config: AuditConfig) -> list[str]:
    """Beam's own validation of the options for the named runner, kept offline; returns
    notes (placeholders and fallbacks); a real problem is a ConfigError."""
    from apache_beam.options.pipeline_options import GoogleCloudOptions, TestOptions
    from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator

    from pipelines.runners import make_options

    notes: list[str] = []
    options = make_options(config.runner.options)
    # Beam's own dry-run switch: no bucket soft-delete lookups while validating.
    options.view_as(TestOptions).dry_run = True
    try:
        runner = _runner_object(config.runner.name)
    except (ImportError, ValueError) as err:
        raise ConfigError(f"runner.name: cannot create '{config.runner.name}' here ({err})".splitlines()[0]) from None
    validator = PipelineOptionsValidator(options, runner)
    if validator.is_service_runner():
        gcp = options.view_as(GoogleCloudOptions)
        bad = {}
        for name in ("temp_location", "staging_location"):
            errors = validator.validate_gcs_path(gcp, name)
            if errors:
                bad[name] = errors[0]
        if len(bad) == 2:
            # Beam would look for (or create) a default bucket here: a network call.
            set_ = [n for n in bad if getattr(gcp, n)]
            if not set_:
                notes.append("runner.options.temp_location: not set; Dataflow picks a default bucket at launch")
            for name in set_:
                if not PLACEHOLDER.search(getattr(gcp, name)):
                    raise ConfigError(f"runner.options.{name}: {bad[name]}")
            for name in bad:
                setattr(gcp, name, "gs://dry-run-bucket/tmp")  # for the rest of the checks only
        for name, value in (("temp_location", config.runner.options.get("temp_location")),
                            ("staging_location", config.runner.options.get("staging_location"))):
            if name in bad and len(bad) == 1 and value:
                notes.append(f"runner.options.{name}: {bad[name]}; Beam uses the other location")
    with contextlib.redirect_stderr(io.StringIO()):
        errors = validator.validate()
    for error in errors:
        line = str(error).splitlines()[0]
        if PLACEHOLDER.search(line):
            continue  # listed with the placeholders
        raise ConfigError(f"runner.options: {line}")
    return notes


# ------------------------------------------------------------------ the graph


@dataclasses.dataclass
class Stage:
    name: str
    hints: dict[str, str]  # resource hints of the stage or any step inside it
    parts: list[str]  # direct sub-steps, reported for the output tail


@dataclasses.dataclass
class DryRunReport:
    config_path: str
    runner: str
    stages: list[Stage]
    paths: list[tuple[str, str, str]]
    inputs: list[str]  # the dataset as planned: local files matched, remote patterns as written
    placeholders: list[tuple[str, str]]
    notes: list[str]
    transforms: int

    def lines(self) -> list[str]:
        out = [f"dry run: {self.config_path}  (nothing run, nothing written, no network request)",
               f"runner: {self.runner}  (options checked by Beam's validator for this runner)"]
        local = local_only(self.inputs)
        remote = [p for p in self.inputs if is_remote(p)]
        described = []
        if local:
            described.append(f"{len(local)} local file(s) matched, columns checked")
        if remote:
            described.append(f"{len(remote)} remote pattern(s), not listed")
        out.append(f"dataset: {', '.join(described)}")
        out.append("paths:")
        for key, path, what in self.paths:
            out.append(f"  {key}: {path}  [{what}]")
        out.append(f"stages ({len(self.stages)} top-level, {self.transforms} transforms in all):")
        for number, stage in enumerate(self.stages, start=1):
            text = f"  {number:2d}. {stage.name}"
            if stage.parts:
                text += f"  ({', '.join(stage.parts)})"
            if stage.hints:
                text += "  resource hints: " + ", ".join(f"{k}={v}" for k, v in sorted(stage.hints.items()))
            out.append(text)
        by_token: dict[str, list[str]] = {}
        for key, token in self.placeholders:
            by_token.setdefault(token, [])
            if key.split("[")[0] not in by_token[token]:
                by_token[token].append(key.split("[")[0])
        for token, keys in by_token.items():
            out.append(f"placeholder {token} (set it with --set before a real run): {', '.join(keys)}")
        for note in self.notes:
            out.append(f"note: {note}")
        out.append("dry run OK: the pipeline builds and serialises; nothing was submitted")
        return out


def _hints_of(environment) -> dict[str, str]:
    hints = {}
    for urn, value in environment.resource_hints.items():
        match = _HINT_URN.match(urn)
        hints[match.group(1) if match else urn] = value.decode("utf-8", "replace")
    return hints


def graph_stages(proto) -> tuple[list[Stage], int]:
    """The top-level transforms of a runner API pipeline in order, each with the resource
    hints found on it or anywhere below it; and the count of all transforms."""
    transforms = proto.components.transforms
    environments = proto.components.environments
    roots = list(proto.root_transform_ids)
    if len(roots) == 1 and not transforms[roots[0]].spec.urn and transforms[roots[0]].subtransforms:
        roots = list(transforms[roots[0]].subtransforms)  # an unnamed root wrapping the pipeline

    def below(tid: str) -> Iterator:
        yield transforms[tid]
        for child in transforms[tid].subtransforms:
            yield from below(child)

    stages = []
    for tid in roots:
        top = transforms[tid]
        hints: dict[str, str] = {}
        for transform in below(tid):
            if transform.environment_id in environments:  # hints live on a step's environment
                hints.update(_hints_of(environments[transform.environment_id]))
        parts = []
        if top.unique_name == "WriteOutputs":
            parts = [transforms[c].unique_name.rsplit("/", 1)[-1] for c in top.subtransforms]
        stages.append(Stage(top.unique_name, hints, parts))
    return stages, len(transforms)


def dry_run(config: AuditConfig, config_path: str = "config") -> DryRunReport:
    """Check and build the audit `config` describes, offline; nothing is run or written."""
    from pipelines.audit import build_audit, plan_audit
    from pipelines.runners import make_options

    paths = check_paths(config)
    notes = check_runner_options(config)
    try:
        plan = plan_audit(config, offline=True)
        options = make_options(config.runner.options)
        # Built as test_cloud_configs builds it: Beam's default (local) runner object
        # holds the graph; the named runner was created above for the checks, never run.
        pipeline = beam.Pipeline(options=options)
        build_audit(pipeline, config, plan)
        proto = pipeline.to_runner_api()
        beam.Pipeline.from_runner_api(proto, pipeline.runner, options)
    except ValueError as err:  # dataset columns, layouts, categories, heads: the config's
        raise ConfigError(str(err).splitlines()[0]) from None
    stages, count = graph_stages(proto)
    if config.takedown.lists and any(is_remote(p) for p in config.takedown.lists):
        notes.append("takedown.lists: remote lists are neither hashed nor parsed in a dry run")
    if plan.offline and any(is_remote(p) for p in config.embedding.precomputed):
        notes.append("embedding.precomputed: remote layout not listed; AttachPrecomputed is a stand-in here")
    if config.runner.name == "FlinkRunner":
        jar = config.runner.options.get("flink_job_server_jar")
        if jar and not is_remote(jar) and not os.path.exists(jar):
            notes.append(f"runner.options.flink_job_server_jar: '{jar}' is not on this machine; "
                         f"a real run starts the job server from it")
    return DryRunReport(config_path, config.runner.name, stages, paths, plan.paths,
                        placeholders(config), notes, count)
