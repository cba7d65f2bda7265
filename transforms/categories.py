"""The sensitive-content categories: a YAML file of names, prompts and thresholds.

Kept apart from the classifier (and from torch) so that a config can be checked, and a
policy expression's names resolved, without loading a model.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from transforms.paths import has_scheme

DEFAULT_CATEGORIES = Path(__file__).parent / "data" / "categories.yaml"

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_TOP_KEYS = {"neutral_prompts", "categories"}
_CATEGORY_KEYS = {"threshold", "prompts", "negative_prompts", "head"}


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


def _prompt_list(value: Any, where: str, required: bool) -> tuple[str, ...]:
    if value is None and not required:
        return ()
    if not isinstance(value, list) or (required and not value):
        raise CategoryError(f"{where}: must be a non-empty list of strings")
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise CategoryError(f"{where}: every prompt must be a non-empty string, got {item!r}")
    return tuple(item.strip() for item in value)


def load_categories(path: str | Path | None = None) -> list[CategorySpec]:
    """The categories of a YAML file (None: the packaged default), validated.

    Relative ``head`` paths are relative to the categories file.
    """
    path = Path(path) if path is not None else DEFAULT_CATEGORIES
    where = path.name
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise CategoryError(f"{path}: cannot read ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise CategoryError(f"{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(data, dict):
        raise CategoryError(f"{where}: must be a mapping with 'neutral_prompts' and 'categories'")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise CategoryError(f"{where}: unknown key '{sorted(unknown)[0]}'")
    neutral = _prompt_list(data.get("neutral_prompts"), f"{where}: neutral_prompts", required=False)
    categories = data.get("categories")
    if not isinstance(categories, dict) or not categories:
        raise CategoryError(f"{where}: 'categories' must be a non-empty mapping of name -> settings")

    specs = []
    for name, body in categories.items():
        at = f"{where}: category '{name}'"
        if not isinstance(name, str) or not _NAME.match(name):
            raise CategoryError(f"{at}: names are lowercase letters, digits and '_'")
        if not isinstance(body, dict):
            raise CategoryError(f"{at}: must be a mapping with 'threshold' and 'prompts'")
        unknown = set(body) - _CATEGORY_KEYS
        if unknown:
            raise CategoryError(f"{at}: unknown key '{sorted(unknown)[0]}'")
        threshold = body.get("threshold")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) \
                or not 0.0 <= float(threshold) <= 1.0:
            raise CategoryError(f"{at}: threshold must be a number in [0, 1], got {threshold!r}")
        head = body.get("head")
        if head is not None and (not isinstance(head, str) or not head.strip()):
            raise CategoryError(f"{at}: head must be a file path, got {head!r}")
        if head is not None and not Path(head).is_absolute() and not has_scheme(head):
            head = str(path.parent / head)
        prompts = _prompt_list(body.get("prompts"), f"{at}: prompts", required=head is None)
        own_negatives = _prompt_list(body.get("negative_prompts"), f"{at}: negative_prompts", required=False)
        negatives = tuple(dict.fromkeys(neutral + own_negatives))
        if head is None and not negatives:
            raise CategoryError(f"{at}: needs neutral_prompts or negative_prompts to compete with")
        specs.append(CategorySpec(name, prompts, float(threshold), head, negatives))
    return specs
