"""Phone numbers in captions: national shapes of the covered countries, international
"+" numbers, and numbers after a word such as "Tel" or "WhatsApp".

Candidates come from fast patterns; those found by shape alone are then checked with
`phonenumbers` (Google's libphonenumber metadata) for the countries whose shape they
have, so "(555) 123-4567" (an unassigned US area code) or a product code that happens to
look like a number is not a phone. Parsing costs tens of microseconds, but only captions
that hold a candidate pay it. A number after a phone word is taken on its shape: the word
already says what it is, and the number may be from a country the shapes do not cover.
"""
from __future__ import annotations

import re

import phonenumbers

from transforms.caption_terms import CaptionTerms
from transforms.captions.patterns import NUMBER_END, term_regex

_AMOUNT = re.compile(r"\+?\d{1,3}(?:[.,\s]\d{3})+")
_SPACE_GROUPS = re.compile(r"\+\d{1,3}(?: \d{3})+")
_DOUBLE_SEPARATOR = re.compile(r"[\s.\-/]{2,}")
# ddd ddd ddd (one separator throughout), not ending in round thousands ("289 000 000").
_NINE_DIGITS_IN_THREES = re.compile(r"\d{3}([\s.])\d{3}\1(?!000$)\d{3}")

# Each national shape and the regions whose numbers it may be (by the named group).
_NATIONAL_SHAPES: dict[str, tuple[tuple[str, ...], str]] = {
    # US: (212) 555-0134, 212-555-0134, 212.555.0134
    "us": (("US", "CA"), r"\([2-9]\d\d\)\s?\d{3}[\-.\s]\d{4}|[2-9]\d\d([\-.])\d{3}(?P=us_sep)\d{4}"),
    # UK: 07700 900123, 020 7946 0958, 0161 496 0000, 01632 960123
    "gb": (("GB",), r"07\d{3}\s?\d{6}|0[12]\d\s\d{4}\s\d{4}|01\d{2}\s\d{3}\s\d{4}|01\d{3}\s\d{5,6}"),
    # DE: 0151 23456789, 030 12345678, 089/1234567, 030-1234567
    "de": (("DE", "AT"), r"0\d{2,4}[\s/\-]\d{5,8}"),
    # FR: 06 12 34 56 78, 06.12.34.56.78, 0612345678 (one separator throughout)
    "fr": (("FR",), r"0[1-9]([\s.\-]?)\d\d(?:(?P=fr_sep)\d\d){3}"),
    # ES and PT: 612 34 56 78. (912 345 678 and the Lisbon landline 213 456 789 are grouped
    # like an amount, "Preço: 213 456 789 Kz": they count only after a phone word.)
    "es_pt": (("ES", "PT"), r"[6789]\d\d([\s.])\d\d(?P=es_pt_sep)\d\d(?P=es_pt_sep)\d\d"),
    # BR: (11) 91234-5678, (21) 3456-7890, 11 91234-5678
    "br": (("BR",), r"\(\d\d\)\s?9?\d{4}-?\d{4}|\d\d\s9\d{4}-\d{4}"),
}


def _named_separators(name: str, body: str) -> str:
    """Name each separator group after its shape, so back-references stay apart."""
    count = 0

    def name_group(match: re.Match) -> str:
        nonlocal count
        count += 1
        suffix = "" if count == 1 else str(count)
        return f"(?P<{name}_sep{suffix}>"

    return re.sub(r"(?<!\\)\((?!\?)", name_group, body)


def plausible_phone(candidate: str, international: bool) -> bool:
    """Digit count and punctuation of a phone number, not an amount or a range."""
    digits = sum(c.isdigit() for c in candidate)
    if international:
        if not 8 <= digits <= 15:
            return False
    elif not 7 <= digits <= 15:
        return False
    # "+12.000.000" and "1,299,000" are amounts, not numbers to call; "+351 213 456 789"
    # is how an international number is written (E.123), and is then checked as one.
    if _AMOUNT.fullmatch(candidate) and not (international and _SPACE_GROUPS.fullmatch(candidate)):
        return False
    if candidate.count("(") != candidate.count(")"):
        return False
    return _DOUBLE_SEPARATOR.search(candidate.replace(") ", ")").replace(" (", "(")) is None


def valid_phone(candidate: str, regions: tuple[str, ...] | None) -> bool:
    """``candidate`` is a valid number of one of ``regions`` (None: it starts with "+")."""
    for region in regions or (None,):
        try:
            number = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return True
    return False


class PhoneScanner:
    """The phone patterns of one set of terms."""

    def __init__(self, terms: CaptionTerms):
        before = r"(?<![\w+.,\-/])"
        self._regions = {name: regions for name, (regions, _) in _NATIONAL_SHAPES.items()}
        self._all_regions = tuple(dict.fromkeys(r for rs in self._regions.values() for r in rs))
        shapes = "|".join(
            f"(?P<{name}>{_named_separators(name, body)})"
            for name, (_, body) in _NATIONAL_SHAPES.items()
        )
        self._national = re.compile(before + "(?:" + shapes + ")" + NUMBER_END)
        self._international = re.compile(before + r"\+\d[\d\s().\-/]{6,22}\d" + NUMBER_END)
        self._context = re.compile(
            rf"(?<!\w)(?:{term_regex(terms.contexts['phone'])})\.?\s*[:.]?\s*"
            r"(?P<number>\+?\d[\d\s().\-/]{5,20}\d)" + NUMBER_END
        )

    def has_phone(self, folded: str) -> bool:
        """A phone number in ``folded`` (folded caption text; folding keeps digits)."""
        for match in self._national.finditer(folded):
            shape = match.lastgroup
            if shape is not None and valid_phone(match.group(), self._regions[shape]):
                return True
        if "+" in folded:
            for match in self._international.finditer(folded):
                candidate = match.group()
                if plausible_phone(candidate, international=True) and valid_phone(candidate, None):
                    return True
        for match in self._context.finditer(folded):
            candidate = match.group("number")
            if plausible_phone(candidate, international=False):
                return True
            # "Telefone: 213 456 789" (ES, PT) is grouped like an amount; after a phone word
            # that one grouping counts if it is a valid number somewhere. "Tel: 12.000.000"
            # does not: other groupings, and round thousands, are amounts.
            if _NINE_DIGITS_IN_THREES.fullmatch(candidate) \
                    and valid_phone(candidate, self._all_regions):
                return True
        return False
