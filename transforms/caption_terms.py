"""The caption-terms data file: the vocabulary behind the caption flags, validated.

Everything that is vocabulary (medical terms in five languages, titles and given names,
street words, the words that announce a phone or an ID number, birth words and month
names, the sites whose paths are account names) lives in
``transforms/data/caption_terms.yaml``; transforms/captions/ builds its patterns from the
`CaptionTerms` read here. The file is validated by pydantic models (`CaptionTermsFile`):
a bad file fails at load with one line naming the key (``contexts.phone.3: ...``), never
as a pattern that silently stops matching: YAML reads a bare ``no`` or ``on`` as a
boolean, and a dropped section would just flag nothing. Words that are matched case- and
accent-insensitively are stored folded (`fold_text`), so the scanner compares like with
like. The packaged file is read once per process.
"""
from __future__ import annotations

import functools
import importlib.resources
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator

from transforms.data_file import StrictModel, parse_yaml, validate_data

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

def _word(value: Any) -> Any:
    # YAML reads a bare no/on/yes as a boolean: catch it here, not as a silent miss.
    if not isinstance(value, str) or not value.strip() or value != value.strip():
        raise ValueError(
            f"must be a non-empty string without surrounding spaces, got {value!r} "
            '(quote words like "no" and "on")'
        )
    return value


Word = Annotated[str, BeforeValidator(_word)]
WordList = Annotated[list[Word], Field(min_length=1)]


class _PerLanguage(StrictModel):
    """One word list per covered language."""

    en: WordList
    de: WordList
    fr: WordList
    es: WordList
    pt: WordList


# Languages the medical terms, birth words and month names must cover: the fields of
# `_PerLanguage`, which `MonthNames` repeats (its entries are lists of lists).
REQUIRED_LANGUAGES: tuple[str, ...] = tuple(_PerLanguage.model_fields)


class BirthWords(_PerLanguage):
    """Words after which a date is a date of birth ("born", "geboren", "née")."""

    it: WordList | None = None  # Italian: the codice fiscale's country


class MonthNames(StrictModel):
    """Twelve entries per language, January first; each the spellings of that month.
    The required languages are REQUIRED_LANGUAGES (a test holds the two together)."""

    en: list[WordList]
    de: list[WordList]
    fr: list[WordList]
    es: list[WordList]
    pt: list[WordList]
    it: list[WordList] | None = None

    @field_validator("*")
    @classmethod
    def _twelve(cls, value: list | None) -> list | None:
        if value is not None and len(value) != 12:
            raise ValueError(f"must list 12 months, got {len(value)}")
        return value


class NamesSection(StrictModel):
    titles: WordList
    particles: WordList
    patient_words: WordList
    given_names: WordList
    not_names: WordList


class StreetsSection(StrictModel):
    en_suffixes: WordList
    en_not_names: WordList
    de_suffixes: WordList
    de_words: WordList
    fr_prefixes: WordList
    es_pt_prefixes: WordList


class ContextsSection(StrictModel):
    """Words that announce a number: what follows them is read as that number."""

    phone: WordList
    passport: WordList
    id_card: WordList
    ssn: WordList
    cpf: WordList
    insee: WordList
    cnpj: WordList
    nif: WordList
    steuer_id: WordList
    nhs: WordList
    nino: WordList
    payment_card: WordList
    handle: WordList


class DatesSection(StrictModel):
    birth_words: BirthWords
    gap_words: WordList
    months: MonthNames


class SocialProfileEntry(StrictModel):
    host: Annotated[str, Field(pattern=r"^[a-z0-9-]+(?:\.[a-z0-9-]+)+$")]
    reserved: WordList | None = None
    handle_prefix: str = ""
    path_prefix: str = ""


class CaptionTermsFile(StrictModel):
    """The caption-terms YAML file, as written."""

    version: Literal[1]
    medical_terms: _PerLanguage
    names: NamesSection
    streets: StreetsSection
    contexts: ContextsSection
    dates: DatesSection
    social_profiles: Annotated[list[SocialProfileEntry], Field(min_length=1)]


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
    # Birth words per language, lower case with their accents ("né" is not "ne").
    birth_words: dict[str, tuple[str, ...]]
    # Words allowed between a birth word and its date ("on", "am", "le"), lower case.
    birth_gap_words: tuple[str, ...]
    # Month spellings, lower case as written and folded ("märz", "marz") -> 1..12.
    months: dict[str, int]


def _folded(words: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(fold_text(word) for word in words))


def _lowered(words: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(word.lower() for word in words))


def _languages(section: StrictModel) -> dict[str, Any]:
    return {lang: value for lang, value in section if value is not None}


def parse_caption_terms(data: Any, source: str = _TERMS_RESOURCE) -> CaptionTerms:
    """Validate the parsed YAML of a caption-terms file; raise CaptionTermsError if bad."""
    raw = validate_data(data, CaptionTermsFile, source, CaptionTermsError)
    months: dict[str, int] = {}
    for spellings in _languages(raw.dates.months).values():
        for number, words in enumerate(spellings, start=1):
            for word in words:
                for form in (word.lower(), fold_text(word)):
                    if months.setdefault(form, number) != number:
                        raise CaptionTermsError(
                            f"{source}: dates.months: {word!r} names two different months"
                        )
    return CaptionTerms(
        medical_terms={lang: _folded(words) for lang, words in _languages(raw.medical_terms).items()},
        titles=frozenset(_folded(raw.names.titles)),
        particles=frozenset(_folded(raw.names.particles)),
        patient_words=frozenset(_folded(raw.names.patient_words)),
        given_names=frozenset(_folded(raw.names.given_names)),
        not_names=frozenset(_folded(raw.names.not_names)),
        en_street_suffixes=tuple(dict.fromkeys(raw.streets.en_suffixes)),
        en_street_not_names=frozenset(_folded(raw.streets.en_not_names)),
        de_street_suffixes=tuple(dict.fromkeys(raw.streets.de_suffixes)),
        de_street_words=tuple(dict.fromkeys(raw.streets.de_words)),
        fr_street_prefixes=tuple(dict.fromkeys(raw.streets.fr_prefixes)),
        es_pt_street_prefixes=tuple(dict.fromkeys(raw.streets.es_pt_prefixes)),
        contexts={key: _folded(words) for key, words in raw.contexts},
        social_profiles=tuple(
            SocialProfileHost(
                host=entry.host,
                reserved=frozenset(w.lower() for w in entry.reserved or ()),
                handle_prefix=entry.handle_prefix,
                path_prefix=entry.path_prefix,
            )
            for entry in raw.social_profiles
        ),
        birth_words={
            lang: _lowered(words) for lang, words in _languages(raw.dates.birth_words).items()
        },
        birth_gap_words=_lowered(raw.dates.gap_words),
        months=months,
    )


@functools.cache
def load_caption_terms(path: str | None = None) -> CaptionTerms:
    """The caption terms from ``path``, or from the packaged data file; read once."""
    if path is None:
        resource = importlib.resources.files(_TERMS_PACKAGE).joinpath(_TERMS_RESOURCE)
        text, source = resource.read_text(encoding="utf-8"), _TERMS_RESOURCE
    else:
        try:
            text, source = Path(path).read_text(encoding="utf-8"), str(path)
        except OSError as err:
            raise CaptionTermsError(f"{path}: cannot read ({err.strerror})") from None
    return parse_caption_terms(parse_yaml(text, source, CaptionTermsError), source)
