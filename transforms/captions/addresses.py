"""Street addresses in captions: English, German, French, Spanish and Portuguese shapes.

Patterns run on the original text, since capitals tell street names from words; a gate
on the folded text skips them for captions that hold no street word at all.
"""
from __future__ import annotations

import re

from transforms.caption_terms import CaptionTerms, fold_text
from transforms.captions.patterns import NUMBER_END, UPPER, YEAR, term_regex


class AddressScanner:
    """The street-address patterns of one set of terms."""

    def __init__(self, terms: CaptionTerms):
        self._not_names = terms.en_street_not_names
        # German suffixes sit inside words ("Hauptstraße"), so they are matched anywhere.
        standalone = [fold_text(w) for w in (*terms.en_street_suffixes,
                                            *terms.fr_street_prefixes,
                                            *terms.es_pt_street_prefixes,
                                            *terms.de_street_words)]
        self._gate = re.compile(
            rf"(?<!\w)(?:{term_regex((w for w in standalone if w[-1].isalnum()), False)})(?!\w)"
            rf"|(?<!\w)(?:{term_regex((w for w in standalone if not w[-1].isalnum()), False)})"
            rf"|{term_regex((fold_text(w) for w in terms.de_street_suffixes), False)}"
        )
        en_suffixes = term_regex((s.lower() for s in terms.en_street_suffixes), False)
        self._en = re.compile(
            rf"(?<![\w.,\-/])(?!{YEAR})\d{{1,5}}[A-Za-z]?,?\s+"
            rf"(?P<name>(?:[{UPPER}][\w'’\-]*\.?\s+){{1,4}})"
            rf"(?i:{en_suffixes})\.?(?!\w)"
        )
        de_suffixes = term_regex((s.lower() for s in terms.de_street_suffixes), False)
        de_words = term_regex((s.lower() for s in terms.de_street_words), False)
        self._de = re.compile(
            rf"(?<!\w)(?:[{UPPER}][^\W\d_]+(?i:{de_suffixes})"
            rf"|[{UPPER}][^\W\d_]+[\s\-](?i:{de_words}))"
            rf"\s*(?!{YEAR})\d{{1,4}}(?:\s?[a-zA-Z])?" + NUMBER_END
        )
        fr_prefixes = term_regex((s.lower() for s in terms.fr_street_prefixes), False)
        self._fr = re.compile(
            rf"(?<![\w.,\-/])(?!{YEAR})\d{{1,4}}(?:\s?(?i:bis|ter))?,?\s+"
            rf"(?i:{fr_prefixes})\s+"
            rf"(?:(?i:de\s+la|de\s+l['’]|du|des|de|d['’])\s*[^\W\d_]|[{UPPER}])"
        )
        es_pt_prefixes = term_regex((s.lower() for s in terms.es_pt_street_prefixes), False)
        self._es_pt = re.compile(
            rf"(?<!\w)(?i:{es_pt_prefixes})(?:\s+|(?<=[./])\s*)"
            r"(?:(?i:de\s+la|de\s+los|de\s+las|del|de|da|do|dos|das)\s+)?"
            r"[^\W\d_][\w'’.\-]*(?:\s+[^\W\d_][\w'’.\-]*){0,4}?\s*,?\s*"
            r"(?:(?i:n[º°o]\.?|núm\.?|num\.?|nr\.?|número|numero)\s*)?"
            rf"(?!{YEAR})\d{{1,5}}" + NUMBER_END
        )

    def has_address(self, text: str, folded: str) -> bool:
        """A street address in the caption (``folded`` is ``fold_text(text)``)."""
        if not self._gate.search(folded):
            return False
        for match in self._en.finditer(text):
            words = {fold_text(w.rstrip(".")) for w in match.group("name").split()}
            if not words & self._not_names:
                return True
        return bool(self._de.search(text) or self._fr.search(text) or self._es_pt.search(text))
