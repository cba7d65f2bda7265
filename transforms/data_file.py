"""Packaged data files (YAML) validated by pydantic models, with one-line errors.

A bad data file fails at load with one line that names the file and the key, phrased as
config errors are (``key: unknown key``, ``key: required key is missing``,
``key: message``), never as a pattern or a category that silently stops working.
"""
from __future__ import annotations

from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

ModelT = TypeVar("ModelT", bound=BaseModel)


class StrictModel(BaseModel):
    """A data-file section: unknown keys refused, values not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def one_line(err: ValidationError) -> str:
    """The first problem of a validation error as ``key: message``, on one line."""
    errors = err.errors()
    # A misspelt key also leaves the right one missing: the unknown key is the news.
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    if first["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        return f"{key}: unknown key"
    if first["type"] == "missing":
        return f"{key}: required key is missing"
    message = first["msg"].removeprefix("Value error, ").replace("\n", " ")
    extra = f" ({len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{key}: {message}{extra}"


def parse_yaml(text: str, source: str, error: type[Exception]) -> Any:
    """YAML text as plain data; ``error`` naming ``source`` when it is not YAML."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        raise error(f"{source}: not valid YAML ({problem})") from None


def validate_data(data: Any, model: type[ModelT], source: str, error: type[Exception]) -> ModelT:
    """``data`` as ``model``; ``error("SOURCE: key: message")`` when it does not fit."""
    if not isinstance(data, dict):
        raise error(f"{source}: the top level must be a mapping")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise error(f"{source}: {one_line(err)}") from None
