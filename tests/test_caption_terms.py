"""The caption-terms data file: validation with one-line errors naming the key, the
languages every list covers, and a custom file driving its own scanner."""
from __future__ import annotations

import copy

import pytest
import yaml

from transforms.caption_terms import (
    REQUIRED_LANGUAGES,
    BirthWords,
    CaptionTermsError,
    MonthNames,
    load_caption_terms,
    parse_caption_terms,
)
from transforms.captions import CaptionScanner, caption_flags


def _required_fields(model) -> set[str]:
    return {name for name, field in model.model_fields.items() if field.is_required()}


def test_every_language_has_a_few_dozen_terms():
    terms = load_caption_terms()
    for language in REQUIRED_LANGUAGES:
        assert len(terms.medical_terms[language]) >= 30, language


def test_per_language_sections_require_the_same_languages():
    assert set(REQUIRED_LANGUAGES) == {"en", "de", "fr", "es", "pt"}
    assert _required_fields(BirthWords) == set(REQUIRED_LANGUAGES)
    assert _required_fields(MonthNames) == set(REQUIRED_LANGUAGES)


# --------------------------------------------------------------------------- data file

def _raw_terms() -> dict:
    from importlib.resources import files

    return yaml.safe_load(files("transforms").joinpath("data/caption_terms.yaml").read_text())


def test_packaged_terms_validate_and_load_once():
    assert load_caption_terms() is load_caption_terms()
    parse_caption_terms(_raw_terms())


@pytest.mark.parametrize("breakage, message", [
    (lambda d: d["medical_terms"].pop("pt"), "medical_terms.pt: required key is missing"),
    (lambda d: d["medical_terms"]["de"].append(False), r"medical_terms\.de\.\d+: must be a"),
    (lambda d: d["names"].update(titles=[]), "names.titles: List should have at least 1 item"),
    (lambda d: d["streets"].pop("de_suffixes"), "streets.de_suffixes: required key is missing"),
    (lambda d: d["contexts"]["phone"].append(" tel"), r"contexts\.phone\.\d+: must be a"),
    (lambda d: d["contexts"].pop("nhs"), "contexts.nhs: required key is missing"),
    (lambda d: d["contexts"].pop("nino"), "contexts.nino: required key is missing"),
    (lambda d: d["dates"].pop("gap_words"), "dates.gap_words: required key is missing"),
    (lambda d: d.update(medcial_terms={}), "medcial_terms: unknown key"),
    (lambda d: d.update(version=2), "version: Input should be 1"),
    (lambda d: d["social_profiles"].append({"host": "Example"}), r"social_profiles\.\d+\.host: "),
    (lambda d: d["social_profiles"].append({"host": "a.com", "reservd": []}),
     r"social_profiles\.\d+\.reservd: unknown key"),
    (lambda d: d["dates"]["birth_words"].pop("fr"), "dates.birth_words.fr: required key is missing"),
    (lambda d: d["dates"]["months"]["es"].pop(), "dates.months.es: must list 12 months, got 11"),
    (lambda d: d["dates"]["months"]["en"][4].append("june"), "'june' names two different months"),
    (lambda d: d.pop("dates"), "dates: required key is missing"),
])
def test_malformed_terms_are_rejected_in_one_line_naming_the_key(breakage, message):
    data = copy.deepcopy(_raw_terms())
    breakage(data)
    with pytest.raises(CaptionTermsError, match=message) as caught:
        parse_caption_terms(data)
    text = str(caught.value)
    assert "\n" not in text and text.startswith("data/caption_terms.yaml: ")


def test_a_bad_terms_file_names_the_file_and_key(tmp_path):
    raw = _raw_terms()
    raw["contexts"]["phone"] = "tel"
    path = tmp_path / "terms.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    with pytest.raises(CaptionTermsError) as caught:
        load_caption_terms(str(path))
    assert str(caught.value) == f"{path}: contexts.phone: Input should be a valid list"
    path.write_text("version: 1\nmedical_terms: [unclosed\n", encoding="utf-8")
    with pytest.raises(CaptionTermsError, match=f"^{path}: not valid YAML") as caught:
        load_caption_terms(str(path))
    assert "\n" not in str(caught.value)


def test_yaml_booleans_in_word_lists_are_caught(tmp_path):
    path = tmp_path / "terms.yaml"
    raw = _raw_terms()
    text = yaml.safe_dump(raw, allow_unicode=True).replace("- oder\n", "- no\n", 1)
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CaptionTermsError, match='quote words like "no"'):
        load_caption_terms(str(path))


def test_a_custom_terms_file_drives_its_own_scanner(tmp_path):
    raw = _raw_terms()
    raw["medical_terms"]["en"].append("frobnication")
    path = tmp_path / "terms.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    scanner = CaptionScanner(load_caption_terms(str(path)))
    assert scanner.flags("post frobnication photo") == ["medical_term"]
    assert caption_flags("post frobnication photo") == []
