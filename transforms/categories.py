"""The sensitive-content categories: a YAML file of names, prompts and thresholds.

Kept apart from the classifier (and from torch) so that a config can be checked, and a
policy expression's names resolved, without loading a model. The file is validated by
pydantic models (`CategoriesFile`); a bad file is one line naming the file and the key,
as config errors are (``categories.yaml: categories.face.threshold: ...``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, field_validator, model_validator

from transforms.data_file import StrictModel, parse_yaml, validate_data
from transforms.paths import has_scheme

DEFAULT_CATEGORIES = Path(__file__).parent / "data" / "categories.yaml"

_NAME_PATTERN = r"^[a-z][a-z0-9_]*$"


class CategoryError(ValueError):
    """A categories file that cannot be used; the message names the category and key."""


@dataclass(frozen=True)
class CategorySpec:
    name: str
    prompts: tuple[str, ...]
    threshold: float
    head_path: str | None = None
    # The neutral prompts this category competes with: the file's shared
    # neutral_prompts, then its own negative_prompts.
    negatives: tuple[str, ...] = ()


# ------------------------------------------------------------------ categories file


def _prompt(value: Any) -> Any:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"every prompt must be a non-empty string, got {value!r}")
    return value.strip()


Prompt = Annotated[str, BeforeValidator(_prompt)]


class CategoryBody(StrictModel):
    """One category: a zero-shot choice (prompts) or a trained head, and its threshold."""

    threshold: Annotated[float, Field(ge=0.0, le=1.0)]
    prompts: list[Prompt] | None = None
    negative_prompts: list[Prompt] | None = None
    head: Annotated[str, Field(min_length=1, pattern=r"\S")] | None = None

    @model_validator(mode="after")
    def _prompts_unless_head(self) -> CategoryBody:
        if self.head is None and not self.prompts:
            raise ValueError("prompts: must be a non-empty list of strings (or give a head)")
        return self


class CategoriesFile(StrictModel):
    """The categories YAML file, as written."""

    neutral_prompts: list[Prompt] | None = None
    categories: Annotated[dict[str, CategoryBody], Field(min_length=1)]

    @field_validator("categories", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for name in value:
                if not isinstance(name, str) or not _matches_name(name):
                    raise ValueError(
                        f"category names are lowercase letters, digits and '_', got {name!r}"
                    )
        return value


def _matches_name(name: str) -> bool:
    return re.match(_NAME_PATTERN, name) is not None


def load_categories(path: str | Path | None = None) -> list[CategorySpec]:
    """The categories of a YAML file (None: the packaged default), validated.

    Relative ``head`` paths are relative to the categories file.
    """
    path = Path(path) if path is not None else DEFAULT_CATEGORIES
    where = path.name
    try:
        text = path.read_text()
    except OSError as err:
        raise CategoryError(f"{path}: cannot read ({err.strerror})") from None
    raw = validate_data(parse_yaml(text, where, CategoryError), CategoriesFile, where, CategoryError)
    neutral = tuple(raw.neutral_prompts or ())
    specs = []
    for name, body in raw.categories.items():
        head = body.head
        if head is not None and not Path(head).is_absolute() and not has_scheme(head):
            head = str(path.parent / head)
        negatives = tuple(dict.fromkeys(neutral + tuple(body.negative_prompts or ())))
        if head is None and not negatives:
            raise CategoryError(
                f"{where}: categories.{name}: needs neutral_prompts or negative_prompts "
                "to compete with"
            )
        specs.append(CategorySpec(name, tuple(body.prompts or ()), float(body.threshold),
                                  head, negatives))
    return specs
