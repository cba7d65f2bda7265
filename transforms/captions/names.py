"""Person-like names in a caption, and whether one sits next to a medical term.

The per-word analysis is the costly part of the caption scan, so it runs only on the few
captions that already carry a medical term or a marked date.
"""
from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from transforms.caption_terms import CaptionTerms, fold_text

# A name counts as "next to" a medical term when their word positions differ by at most
# this much, i.e. at most NAME_TERM_WINDOW - 1 words lie between.
NAME_TERM_WINDOW = 6


@dataclass(frozen=True)
class NameToken:
    """One word or number of a caption; ``sentence_start`` after a sentence break."""

    text: str
    folded: str
    sentence_start: bool


_TOKEN = re.compile(r"[^\W\d_]+(?:['’\-][^\W\d_]+)*|\d+|[.!?;:|•·\n]")
_SENTENCE_BREAKS = frozenset(".!?;:|•·\n")


def is_capitalised(word: str) -> bool:
    """A capital then some lower case: "Maria", "McDonald", "O'Brien"; not "MRI"."""
    return len(word) >= 2 and word[0].isupper() and any(c.islower() for c in word[1:])


def name_tokens(text: str) -> list[NameToken]:
    """The words and numbers of a caption, each marked when it starts a sentence."""
    tokens = []
    sentence_start = True
    for match in _TOKEN.finditer(text):
        piece = match.group()
        if piece in _SENTENCE_BREAKS:
            sentence_start = True
            continue
        tokens.append(NameToken(piece, fold_text(piece), sentence_start))
        sentence_start = False
    return tokens


class NameFinder:
    """Name spans over a caption's tokens, from the name vocabulary of the terms file."""

    def __init__(self, terms: CaptionTerms, medical: re.Pattern):
        self.terms = terms
        self._medical = medical

    def near_medical_term(self, text: str) -> bool:
        """A person-like name within NAME_TERM_WINDOW words of a medical term."""
        words = name_tokens(text)
        if len(words) < 2:
            return False
        # Find the terms again on the word sequence, so term positions are word indices.
        offsets, parts, position = [], [], 0
        for token in words:
            offsets.append(position)
            parts.append(token.folded)
            position += len(token.folded) + 1
        joined = " ".join(parts)
        term_firsts: list[int] = []
        term_lasts: list[int] = []
        term_words: set[int] = set()
        for match in self._medical.finditer(joined):
            first = bisect.bisect_right(offsets, match.start()) - 1
            last = bisect.bisect_right(offsets, match.end() - 1) - 1
            term_firsts.append(first)
            term_lasts.append(last)
            term_words.update(range(first, last + 1))
        if not term_firsts:
            return False
        # Matches do not overlap, so both lists are sorted: the first term ending at or
        # after first - window is the only candidate that can also start close enough.
        for first, last in self.spans(words, term_words):
            i = bisect.bisect_left(term_lasts, first - NAME_TERM_WINDOW)
            if i < len(term_firsts) and term_firsts[i] <= last + NAME_TERM_WINDOW:
                return True
        return False

    def ends_with_name(self, text: str) -> bool:
        """``text`` (what comes before a date) ends with a person-like name."""
        words = name_tokens(text)
        if len(words) < 2:
            return False
        return any(last == len(words) - 1 for _, last in self.spans(words, set()))

    def spans(self, words: list[NameToken], term_words: set[int]) -> list[tuple[int, int]]:
        """(first, last) word indices of each name-like run: a title, "patient" or a
        given name before a capitalised word, or two capitalised words mid-sentence."""
        terms = self.terms

        def name_like(i: int) -> bool:
            if i >= len(words) or i in term_words:
                return False
            token = words[i]
            return (
                is_capitalised(token.text)
                and token.folded not in terms.not_names
                and token.folded not in terms.titles
                and token.folded not in terms.patient_words
            )

        def extend(first: int, name_at: int) -> tuple[int, int]:
            last = name_at
            while name_like(last + 1) and last + 1 - name_at < 3:
                last += 1
            return first, last

        alpha = [t for t in words if len(t.text) >= 3 and not t.text.isdigit()]
        capitalised = sum(1 for t in alpha if is_capitalised(t.text))
        # In a title-cased caption every word is capitalised, so capitals say nothing.
        title_cased = len(alpha) >= 3 and capitalised >= 0.6 * len(alpha)

        spans = []
        for i, token in enumerate(words):
            folded = token.folded
            # "patient" is itself a medical term, so it is looked at before terms are skipped.
            if folded in terms.patient_words:
                if name_like(i + 1):
                    spans.append(extend(i, i + 1))
                continue
            if i in term_words:
                continue
            if folded in terms.titles:
                j = i + 1
                while j < len(words) and j - i <= 3 and (
                    words[j].folded in terms.titles or words[j].folded in terms.particles
                ):
                    j += 1
                if name_like(j):
                    spans.append(extend(i, j))
            elif folded in terms.given_names and is_capitalised(token.text):
                j = i + 1
                while j < len(words) and j - i <= 2 and words[j].folded in terms.particles \
                        and not is_capitalised(words[j].text):
                    j += 1
                if name_like(j):
                    spans.append(extend(i, j))
            elif not title_cased and not token.sentence_start and name_like(i) \
                    and name_like(i + 1):
                spans.append(extend(i, i + 1))
        return spans
