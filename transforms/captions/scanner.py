"""The caption scanner: caption text in, sorted flag names out.

Vocabulary lives in ``transforms/data/caption_terms.yaml`` (read and checked by
transforms/caption_terms.py); the pattern shapes live in this package, one module per
kind of detail. This runs on billions of captions, so every pattern is compiled once,
cheap gates skip the patterns a caption cannot match (no digit: no phone, no ID, no
date), and the per-word name analysis runs only on the few captions that already carry a
medical term or a marked date. Only the first ``MAX_CAPTION_CHARS`` characters of a
caption are scanned, so one huge scraped "caption" costs no more than a long real one.
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.caption_terms import _LETTER_FOLDS, CaptionTerms, fold_text
from transforms.captions.addresses import AddressScanner
from transforms.captions.dates import BirthDateScanner
from transforms.captions.identifiers import IDENTIFIER_FLAGS, IdentifierScanner
from transforms.captions.names import NameFinder
from transforms.captions.patterns import (
    FILE_EXTENSIONS,
    HAS_DIGIT,
    MAX_CAPTION_CHARS,
    NUMBERISH,
    capped,
    term_regex,
)
from transforms.captions.phones import PhoneScanner

CAPTION_FLAGS: tuple[str, ...] = tuple(sorted((
    "date_of_birth",
    "email",
    "medical_term",
    "name_with_medical_term",
    "personal_handle_url",
    "phone",
    "street_address",
    *IDENTIFIER_FLAGS,
)))

_HANDLE = re.compile(r"[a-z0-9_][a-z0-9_.\-]{1,63}")
# The characters outside the medical terms that `flags` needs to find anything else: a
# digit (phones, IDs, dates, addresses), "@" or "/" (e-mail, handles) or an e-mail's
# "at]" / "at)". RE2 syntax (Arrow's), for ASCII text folded to lower case.
_OTHER_FLAG_GATES = r"[0-9@/]|at[\])]"
# fold_text's steps, in RE2: the marks it drops, the letters it translates first, and
# the letters whose NFKD form has been fixed since Unicode 3 (so Arrow's and Python's agree).
_COMBINING_MARKS_RE2 = r"[\x{300}-\x{36f}]+"
_TRANSLATED_LETTERS = "[" + "".join(sorted(chr(c) for c in _LETTER_FOLDS)) + "]"
_LATIN_ONLY = r"^[\x{00}-\x{24f}\x{300}-\x{36f}]*$"
# Python's \s on ASCII text, as an RE2 class body: \t \n \v \f \r, \x1c-\x1f and space.
_ASCII_SPACE = r"\t-\r\x1c-\x20"


class CaptionScanner:
    """All caption patterns, compiled once from one set of terms."""

    def __init__(self, terms: CaptionTerms):
        self.terms = terms
        all_medical = [t for terms_ in terms.medical_terms.values() for t in terms_]
        # Every term starts and ends with a letter, so \b is the word boundary on both sides.
        self._medical = re.compile(rf"\b(?:{term_regex(all_medical)})s?\b")
        self._medical_re2 = _ascii_re2(self._medical.pattern)
        self._names = NameFinder(terms, self._medical)
        self._identifiers = IdentifierScanner(terms)
        self._phones = PhoneScanner(terms)
        self._addresses = AddressScanner(terms)
        self._birth_dates = BirthDateScanner(terms, self._names)

        # ----- email (on folded text): plain, or written as "name [at] host [dot] com"
        at = r"(?:@|\s*[\[(]\s*at\s*[\])]\s*)"
        dot = r"(?:\.|\s*[\[(]\s*dot\s*[\])]\s*)"
        self._email = re.compile(
            rf"(?<![\w.+\-])[a-z0-9][a-z0-9._%+\-]{{0,63}}{at}"
            rf"[a-z0-9\-]+(?:{dot}[a-z0-9\-]+)*{dot}"
            rf"(?!{FILE_EXTENSIONS}(?![a-z]))[a-z]{{2,24}}(?![\w\-])"
        )

        # ----- profile URLs and "@handle" after an account word (on folded text)
        self._profiles = {profile.host: profile for profile in terms.social_profiles}
        hosts = "|".join(re.escape(h) for h in sorted(self._profiles, key=len, reverse=True))
        # Anchored on the host: "www." or "https://" before it may be there or not, and a
        # letter before it ("box.com") means another site.
        self._profile_url = re.compile(
            rf"(?<![\w\-])(?P<host>{hosts})(?::\d+)?/(?P<path>[^\s?#\"'<>()\[\]]+)"
        )
        self._handle_mention = re.compile(
            rf"(?<!\w)(?:{term_regex(terms.contexts['handle'])})\s*[:\-–]?\s*"
            r"(?:on\s+|at\s+|me\s+)?@[a-z0-9_][a-z0-9_.]{1,29}"
        )

    def may_flag(self, captions: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Per caption of an Arrow string column, column-wise: False where `flags` is
        certainly [] (null or empty; or, on its folded text, no medical term and none of
        the characters the other detectors start from), True for the rest."""
        return self.gates(captions)[0]

    def gates(self, captions: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
        """(may_flag, medical) per caption of an Arrow string column, column-wise.
        `medical` is 1 where the caption holds a medical term, 0 where it holds none, -1
        where that is not known here (`flags` searches it then).

        Kept next to `flags`: every gate here is one of its gates, on the same folded
        text. That text is made here (NFKD, marks dropped, lower case) only where it is
        sure to be `fold_text`'s: ASCII captions and those whose other letters are Latin
        with diacritics (U+00A0-U+024F, U+0300-U+036F, none of the letters fold_text
        translates) that fold to ASCII; other captions, and any over MAX_CAPTION_CHARS,
        are passed, their medical terms unknown."""
        if isinstance(captions, pa.ChunkedArray):
            captions = captions.combine_chunks()
        if not pa.types.is_string(captions.type):
            captions = captions.cast(pa.string())
        texts = pc.fill_null(captions, "")
        unsure = pc.greater(pc.binary_length(texts), MAX_CAPTION_CHARS).to_numpy(zero_copy_only=False)
        other = np.flatnonzero(~pc.string_is_ascii(texts).to_numpy(zero_copy_only=False))
        folded = pc.ascii_lower(texts)
        if other.size:
            texts_other = texts.take(pa.array(other))
            folded_other = pc.replace_substring_regex(pc.utf8_normalize(texts_other, form="NFKD"),
                                                      _COMBINING_MARKS_RE2, "")
            sure = pc.and_(pc.and_(pc.match_substring_regex(texts_other, _LATIN_ONLY),
                                   pc.invert(pc.match_substring_regex(texts_other, _TRANSLATED_LETTERS))),
                           pc.string_is_ascii(folded_other)).to_numpy(zero_copy_only=False)
            unsure[other[~sure]] = True
            # The sure ones' folded text in their place; the others are passed already.
            keep = np.arange(len(texts), dtype=np.int64)
            keep[other] = len(texts) + np.arange(other.size, dtype=np.int64)
            folded = pa.concat_arrays([folded, pc.ascii_lower(folded_other)]).take(pa.array(keep))
        found = pc.match_substring_regex(folded, _OTHER_FLAG_GATES).to_numpy(zero_copy_only=False)
        if self._medical_re2 is None:
            medical = np.full(len(texts), -1, dtype=np.int8)
            found[:] = True
        else:
            term = pc.match_substring_regex(folded, self._medical_re2).to_numpy(zero_copy_only=False)
            found |= term
            medical = np.where(unsure, -1, term).astype(np.int8)
        non_empty = pc.binary_length(texts).to_numpy(zero_copy_only=False) > 0
        return (unsure | found) & non_empty, medical

    def flags(self, text: Any, medical: bool | None = None) -> list[str]:
        """Sorted, unique flag names for one caption; [] for anything but a string.
        `medical`: whether the caption holds a medical term, when known already
        (`gates`); None: searched here."""
        if not isinstance(text, str) or not text:
            return []
        text = capped(text)
        folded = fold_text(text)
        found: list[str] = []
        if ("@" in folded or "at]" in folded or "at)" in folded) and self._email.search(folded):
            found.append("email")
        if medical if medical is not None else self._medical.search(folded):
            found.append("medical_term")
            if self._names.near_medical_term(text):
                found.append("name_with_medical_term")
        if ("/" in folded or "@" in folded) and self._has_personal_handle(folded):
            found.append("personal_handle_url")
        # Phones, identity numbers, dates and addresses all need a digit, and most
        # captions have none; phones and most numbers need a run of 6+ digits.
        if HAS_DIGIT.search(folded) is not None:
            numberish = NUMBERISH.search(folded) is not None
            found.extend(self._identifiers.kinds(text, folded, numberish))
            if self._birth_dates.has_date_of_birth(text, folded):
                found.append("date_of_birth")
            if numberish and self._phones.has_phone(folded):
                found.append("phone")
            if self._addresses.has_address(text, folded):
                found.append("street_address")
            found.sort()
        return found

    def _has_personal_handle(self, folded: str) -> bool:
        for match in self._profile_url.finditer(folded):
            profile = self._profiles[match.group("host")]
            path = match.group("path").rstrip(".,;:!")  # the sentence's, not the URL's
            if profile.path_prefix:
                if not path.startswith(profile.path_prefix):
                    continue
                path = path[len(profile.path_prefix):]
            segment = path.split("/", 1)[0]
            if profile.handle_prefix:
                if not segment.startswith(profile.handle_prefix):
                    continue
                segment = segment[len(profile.handle_prefix):]
            if segment in profile.reserved or not _HANDLE.fullmatch(segment):
                continue
            return True
        return "@" in folded and self._handle_mention.search(folded) is not None


def _ascii_re2(pattern: str) -> str | None:
    """The medical-term pattern as RE2 (Arrow) reads it on ASCII text; None when it holds
    a construct whose meaning may differ there (then `may_flag` passes every caption)."""
    body = pattern.replace(r"[\s\-]", f"[{_ASCII_SPACE}\\-]")
    if "\\s" in body or "(?<" in body or "(?=" in body or "(?!" in body:
        return None
    try:
        pc.match_substring_regex(pa.array(["x"]), body)
    except pa.ArrowInvalid:
        return None
    return body
