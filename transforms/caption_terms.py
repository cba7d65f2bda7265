"""The caption-terms data file: the vocabulary behind the caption flags, validated.

Everything that is vocabulary (medical terms in five languages, titles and given names,
street words, the words that announce a phone or an ID number, the sites whose paths are
account names) lives in ``transforms/data/caption_terms.yaml``; transforms/captions.py
builds its patterns from the `CaptionTerms` read here. A bad file fails at load with one
message naming the list, never as a pattern that silently stops matching: YAML reads a
bare ``no`` or ``on`` as a boolean, and a dropped section would just flag nothing. Words
that are matched case- and accent-insensitively are stored folded (`fold_text`), so the
scanner compares like with like. The packaged file is read once per process.
"""
from __future__ import annotations

import functools
import importlib.resources
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# Languages the medical terms must cover.
REQUIRED_LANGUAGES: tuple[str, ...] = ("en", "de", "fr", "es", "pt")

_TERMS_PACKAGE = "transforms"
_TERMS_RESOURCE = "data/caption_terms.yaml"


class CaptionTermsError(ValueError):
    """The caption-terms data file is malformed."""


# --------------------------------------------------------------------------- folding

_COMBINING_MARKS = re.compile(r"[\u0300-\u036f]+")
# Letters that NFKD leaves alone but that readers treat as accented forms.
_LETTER_FOLDS = str.maketrans(
    {"ø": "o", "Ø": "O", "œ": "oe", "Œ": "OE", "æ": "ae", "Æ": "AE", "ł": "l", "Ł": "L",
     "đ": "d", "Đ": "D", "ı": "i"}
)
_SPECIAL_LETTERS = re.compile("[øØœŒæÆłŁđĐı]")


def fold_text(text: str) -> str:
    """Lower-case, accent-free form of ``text`` ("Pós-Operatório" -> "pos-operatorio")."""
    if text.isascii():
        return text.lower()
    if _SPECIAL_LETTERS.search(text):  # str.translate is slow on non-ASCII text: only if needed
        text = text.translate(_LETTER_FOLDS)
    decomposed = unicodedata.normalize("NFKD", text)
    return _COMBINING_MARKS.sub("", decomposed).casefold()


# --------------------------------------------------------------------------- data file

@dataclass(frozen=True)
class SocialProfileHost:
    """A site whose first path segment is an account name (instagram.com/<name>)."""

    host: str
    reserved: frozenset[str] = frozenset()
    handle_prefix: str = ""  # "@" where the site writes profiles as /@name
    path_prefix: str = ""  # "in/" where profiles live under a fixed folder


@dataclass(frozen=True)
class CaptionTerms:
    """The validated contents of the caption-terms data file, folded where it matches."""

    medical_terms: dict[str, tuple[str, ...]]
    titles: frozenset[str]
    particles: frozenset[str]
    patient_words: frozenset[str]
    given_names: frozenset[str]
    not_names: frozenset[str]
    en_street_suffixes: tuple[str, ...]
    en_street_not_names: frozenset[str]
    de_street_suffixes: tuple[str, ...]
    de_street_words: tuple[str, ...]
    fr_street_prefixes: tuple[str, ...]
    es_pt_street_prefixes: tuple[str, ...]
    contexts: dict[str, tuple[str, ...]]
    social_profiles: tuple[SocialProfileHost, ...]


_NAMES_KEYS = ("titles", "particles", "patient_words", "given_names", "not_names")
_STREETS_KEYS = (
    "en_suffixes", "en_not_names", "de_suffixes", "de_words", "fr_prefixes", "es_pt_prefixes"
)
_CONTEXT_KEYS = ("phone", "passport", "id_card", "ssn", "cpf", "insee", "handle")
_PROFILE_KEYS = ("host", "reserved", "handle_prefix", "path_prefix")
_HOST_SHAPE = re.compile(r"^[a-z0-9-]+(?:\.[a-z0-9-]+)+$")


def _mapping(source: str, where: str, value: Any, required: Sequence[str]) -> dict:
    if not isinstance(value, dict):
        raise CaptionTermsError(f"{source}: {where} must be a mapping")
    missing = [key for key in required if key not in value]
    if missing:
        raise CaptionTermsError(f"{source}: {where} is missing {', '.join(missing)}")
    return value


def _words(source: str, where: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise CaptionTermsError(f"{source}: {where} must be a non-empty list of strings")
    for i, word in enumerate(value):
        # YAML reads a bare no/on/yes as a boolean: catch it here, not as a silent miss.
        if not isinstance(word, str) or not word.strip() or word != word.strip():
            raise CaptionTermsError(
                f"{source}: {where}[{i}] must be a non-empty string without surrounding "
                f"spaces, got {word!r} (quote words like \"no\" and \"on\")"
            )
    return tuple(dict.fromkeys(value))


def _folded(words: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(fold_text(word) for word in words))


def parse_caption_terms(data: Any, source: str = _TERMS_RESOURCE) -> CaptionTerms:
    """Validate the parsed YAML of a caption-terms file; raise CaptionTermsError if bad."""
    top = _mapping(
        source, "the top level", data,
        ("version", "medical_terms", "names", "streets", "contexts", "social_profiles"),
    )
    unknown = sorted(set(top) - {"version", "medical_terms", "names", "streets", "contexts",
                                 "social_profiles"})
    if unknown:
        raise CaptionTermsError(f"{source}: unknown section(s) {', '.join(map(str, unknown))}")
    if top["version"] != 1:
        raise CaptionTermsError(f"{source}: version must be 1, got {top['version']!r}")

    medical = _mapping(source, "medical_terms", top["medical_terms"], REQUIRED_LANGUAGES)
    medical_terms = {
        str(lang): _folded(_words(source, f"medical_terms.{lang}", terms))
        for lang, terms in medical.items()
    }
    names = _mapping(source, "names", top["names"], _NAMES_KEYS)
    name_lists = {key: frozenset(_folded(_words(source, f"names.{key}", names[key])))
                  for key in _NAMES_KEYS}
    streets = _mapping(source, "streets", top["streets"], _STREETS_KEYS)
    street_lists = {key: _words(source, f"streets.{key}", streets[key])
                    for key in _STREETS_KEYS}
    contexts = _mapping(source, "contexts", top["contexts"], _CONTEXT_KEYS)
    context_lists = {key: _folded(_words(source, f"contexts.{key}", contexts[key]))
                     for key in _CONTEXT_KEYS}

    profiles_raw = top["social_profiles"]
    if not isinstance(profiles_raw, list) or not profiles_raw:
        raise CaptionTermsError(f"{source}: social_profiles must be a non-empty list")
    profiles = []
    for i, entry in enumerate(profiles_raw):
        where = f"social_profiles[{i}]"
        entry = _mapping(source, where, entry, ("host",))
        extra = sorted(set(entry) - set(_PROFILE_KEYS))
        if extra:
            raise CaptionTermsError(f"{source}: {where} has unknown key(s) {', '.join(extra)}")
        host = entry["host"]
        if not isinstance(host, str) or not _HOST_SHAPE.match(host):
            raise CaptionTermsError(f"{source}: {where}.host must be a lower-case host name, "
                                    f"got {host!r}")
        for key in ("handle_prefix", "path_prefix"):
            if not isinstance(entry.get(key, ""), str):
                raise CaptionTermsError(f"{source}: {where}.{key} must be a string")
        reserved = entry.get("reserved")
        profiles.append(
            SocialProfileHost(
                host=host,
                reserved=frozenset(
                    word.lower() for word in _words(source, f"{where}.reserved", reserved)
                ) if reserved is not None else frozenset(),
                handle_prefix=entry.get("handle_prefix", ""),
                path_prefix=entry.get("path_prefix", ""),
            )
        )

    return CaptionTerms(
        medical_terms=medical_terms,
        titles=name_lists["titles"],
        particles=name_lists["particles"],
        patient_words=name_lists["patient_words"],
        given_names=name_lists["given_names"],
        not_names=name_lists["not_names"],
        en_street_suffixes=street_lists["en_suffixes"],
        en_street_not_names=frozenset(_folded(street_lists["en_not_names"])),
        de_street_suffixes=street_lists["de_suffixes"],
        de_street_words=street_lists["de_words"],
        fr_street_prefixes=street_lists["fr_prefixes"],
        es_pt_street_prefixes=street_lists["es_pt_prefixes"],
        contexts=context_lists,
        social_profiles=tuple(profiles),
    )


@functools.cache
def load_caption_terms(path: str | None = None) -> CaptionTerms:
    """The caption terms from ``path``, or from the packaged data file; read once."""
    if path is None:
        resource = importlib.resources.files(_TERMS_PACKAGE).joinpath(_TERMS_RESOURCE)
        text, source = resource.read_text(encoding="utf-8"), _TERMS_RESOURCE
    else:
        text, source = Path(path).read_text(encoding="utf-8"), str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise CaptionTermsError(f"{source}: not valid YAML: {err}") from None
    return parse_caption_terms(data, source)
