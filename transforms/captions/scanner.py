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

from transforms.caption_terms import CaptionTerms, fold_text
from transforms.captions.addresses import AddressScanner
from transforms.captions.dates import BirthDateScanner
from transforms.captions.identifiers import IDENTIFIER_FLAGS, IdentifierScanner
from transforms.captions.names import NameFinder
from transforms.captions.patterns import FILE_EXTENSIONS, HAS_DIGIT, NUMBERISH, capped, term_regex
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


class CaptionScanner:
    """All caption patterns, compiled once from one set of terms."""

    def __init__(self, terms: CaptionTerms):
        self.terms = terms
        all_medical = [t for terms_ in terms.medical_terms.values() for t in terms_]
        # Every term starts and ends with a letter, so \b is the word boundary on both sides.
        self._medical = re.compile(rf"\b(?:{term_regex(all_medical)})s?\b")
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

    def flags(self, text: Any) -> list[str]:
        """Sorted, unique flag names for one caption; [] for anything but a string."""
        if not isinstance(text, str) or not text:
            return []
        text = capped(text)
        folded = fold_text(text)
        found: list[str] = []
        if ("@" in folded or "at]" in folded or "at)" in folded) and self._email.search(folded):
            found.append("email")
        if self._medical.search(folded):
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
