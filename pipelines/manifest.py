"""The run manifest: what a run was asked to do, written with every run as
`report/manifest.json` (audit and rematch alike), beside the counts of summary.json.

It names the inputs, how they were read, the match thresholds, the policies, the model,
each takedown list file with its sha256, the sha256 of the effective config and the
laion-audit version, so a run can be told apart from another and `rematch` decides as
the audit did. Written at launch, before any work: a run that fails still says what it
was asked to do.

    manifest = RunManifest.from_json(text, source=path)   # ManifestError: one line, names the file
    text = manifest.to_json()
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import importlib.metadata
import json
import types
import typing
from collections.abc import Iterable
from typing import Any, Literal

from transforms.paths import absolute

MANIFEST_VERSION = 1
KINDS = ("audit", "rematch")
_CHUNK = 1 << 20


class ManifestError(ValueError):
    """A manifest that cannot be read, in one line that names its file."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """How the dataset's files were read (transforms.read.DatasetSpec, less batch sizes)."""

    url_col: str = "URL"
    caption_col: str = "TEXT"
    id_col: str | None = None
    format: str | None = None


@dataclasses.dataclass(frozen=True)
class PolicyInfo:
    """The policy expressions a run decided with, and the names they may use."""

    remove_if: list[str] = dataclasses.field(default_factory=list)
    review_if: list[str] = dataclasses.field(default_factory=list)
    names: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """The embedding model the scores come from (id None: no embedding)."""

    id: str | None = None
    warning: str | None = None  # e.g. random weights: the scores mean nothing
    embeddings_from: str | None = None  # a LAION-layout directory, for precomputed embeddings


@dataclasses.dataclass(frozen=True)
class ListFile:
    path: str
    sha256: str


@dataclasses.dataclass(frozen=True)
class RunManifest:
    kind: Literal["audit", "rematch"]
    rematch_of: str | None  # the audit directory a rematch read; None for an audit
    inputs: list[str]  # the dataset's files, absolute (local) or URLs
    dataset: DatasetInfo
    thresholds: dict[str, float]  # match threshold by kind (transforms' Thresholds.to_dict())
    policy: PolicyInfo
    model: ModelInfo
    takedown_lists: list[ListFile]
    # sha256 of the effective audit config (after --set overrides); a rematch carries its
    # audit's (the config whose dataset, policies and model it decides with).
    config_sha256: str
    laion_audit_version: str
    written_at: str  # ISO 8601, UTC
    manifest_version: int = MANIFEST_VERSION

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "manifest") -> RunManifest:
        """Parse and check a manifest; any problem is a ManifestError naming `source`."""
        try:
            data = json.loads(text)
        except ValueError as err:
            raise ManifestError(f"{source}: not valid JSON ({err})".splitlines()[0]) from None
        if not isinstance(data, dict):
            raise ManifestError(f"{source}: a manifest is a JSON object")
        version = data.get("manifest_version")
        if version != MANIFEST_VERSION:
            found = "missing" if version is None else repr(version)
            raise ManifestError(f"{source}: manifest_version {found}; this laion-audit reads {MANIFEST_VERSION}")
        manifest = _parse(cls, data, "", source)
        if manifest.kind not in KINDS:
            raise ManifestError(f"{source}: field 'kind' is {manifest.kind!r}, not one of {', '.join(KINDS)}")
        return manifest


def _parse(cls, data: Any, where: str, source: str):
    if not isinstance(data, dict):
        raise ManifestError(f"{source}: field '{where}' must be an object")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ManifestError(f"{source}: unknown field '{where}{unknown[0]}'")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, field in fields.items():
        key = f"{where}{name}"
        if name not in data:
            raise ManifestError(f"{source}: field '{key}' is missing")
        values[name] = _value(data[name], hints[name], key, source)
    return cls(**values)


def _value(value: Any, tp, key: str, source: str):
    """`value` checked against the type `tp` (and numbers made float where one is due)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _parse(tp, value, f"{key}.", source)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _value(value, inner, key, source)
    if origin is Literal:
        if value not in args:
            raise ManifestError(f"{source}: field '{key}' is {value!r}, not one of {', '.join(map(str, args))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ManifestError(f"{source}: field '{key}' must be a list")
        return [_value(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ManifestError(f"{source}: field '{key}' must be an object")
        return {k: _value(v, args[1], f"{key}.{k}", source) for k, v in value.items()}
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    raise ManifestError(f"{source}: field '{key}' must be {tp.__name__}, not {type(value).__name__}")


# ------------------------------------------------------------------ what goes into one


def config_sha256(config) -> str:
    """sha256 of the effective config (a pydantic model, after --set overrides), as
    canonical JSON: sorted keys, no spaces."""
    canonical = json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def file_sha256(path: str) -> str:
    """sha256 of a file's bytes as stored (never decompressed), local or gs:// / s3://."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    digest = hashlib.sha256()
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def list_files(paths: Iterable[str]) -> list[ListFile]:
    """Each takedown list file (globs expanded as the lists are loaded) with its sha256.
    A list that cannot be read is a TakedownListError (a ValueError) naming it."""
    from transforms.takedown.lists import TakedownListError, expand_list_paths

    listed = []
    for path in expand_list_paths(paths):
        try:
            listed.append(ListFile(absolute(path), file_sha256(path)))
        except OSError as err:
            raise TakedownListError(f"{path}: cannot read the list ({err.strerror or type(err).__name__})") from None
    return listed


def package_version() -> str:
    try:
        return importlib.metadata.version("laion-audit")
    except importlib.metadata.PackageNotFoundError:  # a source tree that is not installed
        return "unknown"


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------ where one is


def manifest_path(output_path: str) -> str:
    from transforms.write import output_dir

    return output_dir(output_dir(output_path, "report"), "manifest.json")


def write_manifest(output_path: str, manifest: RunManifest) -> str:
    from apache_beam.io.filesystems import FileSystems

    path = manifest_path(output_path)
    with FileSystems.create(path, mime_type="application/json") as handle:
        handle.write(manifest.to_json().encode("utf-8"))
    return path


def read_manifest(output_path: str) -> RunManifest:
    """The manifest of the run whose outputs are under `output_path`."""
    from apache_beam.io.filesystems import FileSystems

    path = manifest_path(output_path)
    if not FileSystems.exists(path):
        raise ManifestError(f"no run manifest '{path}' (not a laion-audit output, or written before manifests)")
    with FileSystems.open(path) as handle:
        text = handle.read().decode("utf-8")
    return RunManifest.from_json(text, source=path)
