"""Dates of birth in captions: a date after a birth word ("born", "né(e)", "geboren",
"nacido/a", "nascido/a", "nato/a", "DOB", ...), or a date marked as a birth date right
after a person-like name ("Maria Silva (12.05.1985)", "Maria Silva * 12.05.1985").

Dates are the common written forms: numeric day, month and year in either order (12.05.1985,
05/12/85), year first (1985-05-12), and with the month written out in the covered
languages (12 May 1985, May 12th, 1985, 12. Mai 1985, 12 de mayo de 1985). A date must
exist in the calendar and not lie in the future. A year alone ("born in 1985") is not a
date of birth here.
"""
from __future__ import annotations

import datetime
import re

from transforms.caption_terms import CaptionTerms, fold_text
from transforms.captions.names import NameFinder
from transforms.captions.patterns import term_regex

_YEAR4 = r"(?:1[89]|20)\d\d"


def _date_regex(month_words: list[str]) -> str:
    months = term_regex(month_words, False)
    ordinal = r"(?:st|nd|rd|th|er|o|º|°)?\.?"
    return (
        "(?:"
        # 12.05.1985, 12/05/85, 05-12-1985: day and month in either order, one separator
        rf"(?P<n_a>\d{{1,2}})(?P<n_sep>[./\-])(?P<n_b>\d{{1,2}})(?P=n_sep)"
        rf"(?P<n_y>{_YEAR4}|\d\d)(?![\d]|[./\-]\d)"
        # 1985-05-12, 1985/5/12
        rf"|(?P<i_y>{_YEAR4})(?P<i_sep>[./\-])(?P<i_m>\d{{1,2}})(?P=i_sep)(?P<i_d>\d{{1,2}})(?![\d]|[./\-]\d)"
        # 12 May 1985, 12. Mai 1985, 1er mai 1985, 12 de mayo de 1985, 12th of May, 1985
        rf"|(?P<w_d>\d{{1,2}}){ordinal}\s*(?:(?:de|of)\s+)?(?P<w_m>{months})\.?,?\s*"
        rf"(?:(?:de|del)\s+)?(?P<w_y>{_YEAR4})(?!\d)"
        # May 12, 1985; May 12th 1985
        rf"|(?P<m_m>{months})\.?\s+(?P<m_d>\d{{1,2}}){ordinal},?\s+(?P<m_y>{_YEAR4})(?!\d)"
        ")"
    )


class BirthDateScanner:
    """The date-of-birth patterns of one set of terms."""

    def __init__(self, terms: CaptionTerms, names: NameFinder):
        self._names = names
        # Month spellings as written in lower case and folded ("märz", "marz"): 1 to 12.
        self._months = dict(terms.months)
        date = _date_regex(sorted(self._months))
        birth_words = [w for words in terms.birth_words.values() for w in words]
        # On folded text: "née le 12 mai 1985", "geboren am 12.05.1985", "DOB: 5/12/85".
        self._after_birth_word = re.compile(
            rf"(?<!\w)(?:{term_regex(birth_words)})(?!\w)[^\d\n]{{0,25}}?{date}"
        )
        # On the original text (a name needs its capitals): "(12.05.1985)",
        # "(12.05.1920 – 3.4.2001)", "* 12.05.1985".
        self._marked = re.compile(
            rf"(?P<mark>\(\s*\*?\s*|(?<![\w*])\*\s*){date}(?P<end>\s*[)\-–—])?",
            re.IGNORECASE,
        )

    def has_date_of_birth(self, text: str, folded: str) -> bool:
        """A date of birth in the caption (``folded`` is ``fold_text(text)``)."""
        for match in self._after_birth_word.finditer(folded):
            if self._real_date(match):
                return True
        if "(" not in text and "*" not in text:
            return False
        for match in self._marked.finditer(text):
            if match.group("mark").startswith("(") and match.group("end") is None:
                continue
            if self._real_date(match) and self._names.ends_with_name(text[:match.start()]):
                return True
        return False

    def _real_date(self, match: re.Match) -> bool:
        groups = match.groupdict()
        if groups["n_a"]:
            a, b = int(groups["n_a"]), int(groups["n_b"])
            year = _full_year(groups["n_y"])
            return _exists(year, b, a) or _exists(year, a, b)
        if groups["i_y"]:
            return _exists(int(groups["i_y"]), int(groups["i_m"]), int(groups["i_d"]))
        if groups["w_d"]:
            return _exists(int(groups["w_y"]), self._month(groups["w_m"]), int(groups["w_d"]))
        return _exists(int(groups["m_y"]), self._month(groups["m_m"]), int(groups["m_d"]))

    def _month(self, word: str) -> int:
        return self._months.get(word) or self._months.get(fold_text(word), 0)


def _full_year(text: str) -> int:
    if len(text) == 4:
        return int(text)
    year = int(text)
    this_century = datetime.date.today().year % 100
    return 2000 + year if year <= this_century else 1900 + year


def _exists(year: int, month: int, day: int) -> bool:
    """A calendar date, not in the future."""
    try:
        return datetime.date(year, month, day) <= datetime.date.today()
    except ValueError:
        return False
