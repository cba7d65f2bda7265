"""Dates of birth in captions. Three forms count:

1. A date after a birth word ("born", "née le", "geboren am", "nacido el", "nascida em",
   "nato il", "DOB:"), directly or across at most three short words such as "in Paris on"
   ("He was born in Paris on 12 May 1985"). Birth words are matched as written, in any
   case but with their accents: "né" is a birth word, the French "ne" is not.
2. A life span in brackets right after a name: "Frida Kahlo (6 July 1907 – 13 July 1954)",
   also with a place before each date ("(Busseto, 10 ottobre 1813 – Milano, 27 gennaio
   1901)"). The second date must be at least a year after the first: an exhibition or a
   sale runs for days or months, a life longer.
3. A date marked with ``*`` or ``b.`` right after a name or an opening bracket: "Kate
   Middleton * 9.1.1982", "John Smith b. 1985-05-12", "Peter Krause (* 3. Mai 1950)".

A name here is two capitalised words, even at the start of the caption (the life span or
the mark already says a person is meant), or a name the `NameFinder` recognises ("Dr.
Krause"). A single date in brackets after a name, "Maria Silva (12.05.2019)", does not
count without a birth word: it is as often the photo's or the event's date as the
person's birth, and nothing in the caption tells which.

Dates are the common written forms: numeric day, month and year in either order (12.05.1985,
05/12/85), year first (1985-05-12), and with the month written out in the covered
languages (12 May 1985, May 12th, 1985, 12. Mai 1985, 12 de mayo de 1985). A date must
exist in the calendar, in the years 1800 to 2099 (a two-digit year in either century).
Nothing depends on the day the scan runs, so a rerun or a rematch flags the same captions.
A year alone ("born in 1985") is not a date of birth here.
"""
from __future__ import annotations

import datetime
import re
import unicodedata

from transforms.caption_terms import CaptionTerms, fold_text
from transforms.captions.names import NameFinder, is_capitalised
from transforms.captions.patterns import UPPER, term_regex

_YEAR4 = r"(?:1[89]|20)\d\d"
# A life span: the second date at least this many days after the first.
MIN_LIFE_SPAN_DAYS = 365
# Two capitalised words at the end of the text before a life span or a mark.
_CAPITALISED_PAIR = re.compile(
    rf"(?<![\w.])(?P<first>[{UPPER}][^\W\d_]+(?:['’\-][^\W\d_]+)*)\s+"
    rf"(?P<second>[{UPPER}][^\W\d_]+(?:['’\-][^\W\d_]+)*),?\s*$"
)
# What is read before a life span or a mark: enough for a title and a name.
_NAME_LOOKBACK = 80


def _date_regex(month_words: list[str], prefix: str = "") -> str:
    """One date; its groups are named with ``prefix`` so two dates fit in one pattern."""
    months = term_regex(month_words, False)
    ordinal = r"(?:st|nd|rd|th|er|o|º|°)?\.?"
    p = prefix
    return (
        "(?:"
        # 12.05.1985, 12/05/85, 05-12-1985: day and month in either order, one separator
        rf"(?P<{p}n_a>\d{{1,2}})(?P<{p}n_sep>[./\-])(?P<{p}n_b>\d{{1,2}})(?P={p}n_sep)"
        rf"(?P<{p}n_y>{_YEAR4}|\d\d)(?![\d]|[./\-]\d)"
        # 1985-05-12, 1985/5/12
        rf"|(?P<{p}i_y>{_YEAR4})(?P<{p}i_sep>[./\-])(?P<{p}i_m>\d{{1,2}})(?P={p}i_sep)"
        rf"(?P<{p}i_d>\d{{1,2}})(?![\d]|[./\-]\d)"
        # 12 May 1985, 12. Mai 1985, 1er mai 1985, 12 de mayo de 1985, 12th of May, 1985
        rf"|(?P<{p}w_d>\d{{1,2}}){ordinal}\s*(?:(?:de|of)\s+)?(?P<{p}w_m>{months})\.?,?\s*"
        rf"(?:(?:de|del)\s+)?(?P<{p}w_y>{_YEAR4})(?!\d)"
        # May 12, 1985; May 12th 1985
        rf"|(?P<{p}m_m>{months})\.?\s+(?P<{p}m_d>\d{{1,2}}){ordinal},?\s+(?P<{p}m_y>{_YEAR4})(?!\d)"
        ")"
    )


class BirthDateScanner:
    """The date-of-birth patterns of one set of terms."""

    def __init__(self, terms: CaptionTerms, names: NameFinder):
        self._names = names
        self._not_names = terms.not_names
        # Month spellings as written in lower case and folded ("märz", "marz"): 1 to 12.
        self._months = dict(terms.months)
        month_words = sorted(self._months)
        date = _date_regex(month_words)
        birth_words = [w for words in terms.birth_words.values() for w in words]
        # Between a birth word and its date: punctuation and up to three short words or
        # capitalised place names ("born in Paris on", "nata a Roma il").
        filler = rf"(?:{term_regex(terms.birth_gap_words)}|(?-i:[{UPPER}][^\W\d_]{{1,20}}))"
        self._after_birth_word = re.compile(
            rf"(?<!\w)(?:{term_regex(birth_words)})(?!\w)[\s:,]*(?:{filler}[\s,]+){{0,3}}{date}",
            re.IGNORECASE,
        )
        # "(6 July 1907 – 13 July 1954)", "(Busseto, 10 ottobre 1813 – Milano, 27 gennaio 1901)"
        place = r"(?:[^\W\d_][^\W\d_'’\- ]*(?:[ '’\-][^\W\d_]+){0,2},\s*)?"
        self._life_span = re.compile(
            rf"\(\s*{place}{_date_regex(month_words, 'a_')}\s*[\-–—]\s*{place}"
            rf"{_date_regex(month_words, 'b_')}\s*\)",
            re.IGNORECASE,
        )
        # "* 9.1.1982", "b. 1985-05-12", "(* 3. Mai 1950)", "(b. 12 May 1985)"
        self._marked = re.compile(
            rf"(?P<open>\(\s*)?(?<![\w*])(?:\*|(?-i:b)\.)\s*{date}", re.IGNORECASE
        )

    def has_date_of_birth(self, text: str, folded: str) -> bool:
        """A date of birth in the caption (``folded`` is ``fold_text(text)``)."""
        if not text.isascii():
            text = unicodedata.normalize("NFC", text)  # "né" written as e and a combining accent
        for match in self._after_birth_word.finditer(text):
            if self._date(match.groupdict()) is not None:
                return True
        if "(" in text:
            for match in self._life_span.finditer(text):
                groups = match.groupdict()
                born, died = self._date(groups, "a_"), self._date(groups, "b_")
                if born is not None and died is not None \
                        and (died - born).days >= MIN_LIFE_SPAN_DAYS \
                        and self._follows_name(text[:match.start()]):
                    return True
        if "*" in text or "b." in text:
            for match in self._marked.finditer(text):
                if self._date(match.groupdict()) is not None and (
                    match.group("open") is not None or self._follows_name(text[:match.start()])
                ):
                    return True
        return False

    def _follows_name(self, before: str) -> bool:
        """``before`` ends with two capitalised words or a name the NameFinder knows."""
        before = before[-_NAME_LOOKBACK:]
        pair = _CAPITALISED_PAIR.search(before)
        if pair is not None and all(
            is_capitalised(word) and fold_text(word) not in self._not_names
            for word in (pair.group("first"), pair.group("second"))
        ):
            return True
        return self._names.ends_with_name(before)

    def _date(self, groups: dict, prefix: str = "") -> datetime.date | None:
        """The date a match names, or None if there is no such day."""
        def group(name: str) -> str | None:
            return groups[prefix + name]

        if group("n_a"):
            a, b, year = int(group("n_a")), int(group("n_b")), group("n_y")
            return _calendar_date(year, b, a) or _calendar_date(year, a, b)
        if group("i_y"):
            return _calendar_date(group("i_y"), int(group("i_m")), int(group("i_d")))
        if group("w_d"):
            return _calendar_date(group("w_y"), self._month(group("w_m")), int(group("w_d")))
        return _calendar_date(group("m_y"), self._month(group("m_m")), int(group("m_d")))

    def _month(self, word: str) -> int:
        word = word.lower()
        return self._months.get(word) or self._months.get(fold_text(word), 0)


def _calendar_date(year: str, month: int, day: int) -> datetime.date | None:
    """The day, if it exists; a two-digit year is read as 19yy, else 20yy (29 Feb 00)."""
    years = (int(year),) if len(year) == 4 else (1900 + int(year), 2000 + int(year))
    for full_year in years:
        try:
            return datetime.date(full_year, month, day)
        except ValueError:
            continue
    return None
