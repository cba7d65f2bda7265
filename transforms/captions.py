"""Personal data and medical context in captions: caption text in, sorted flag names out.

The flags (``CAPTION_FLAGS``) say what a caption gives away about a person: contact
details (``email``, ``phone``, ``street_address``), identity numbers (``national_id``),
account pages (``personal_handle_url``), medical context (``medical_term``) and, the case
that matters most, a person's name next to medical context (``name_with_medical_term``).

Vocabulary lives in ``transforms/data/caption_terms.yaml`` (read and checked by
transforms/caption_terms.py); the pattern shapes live here. This runs on billions of
captions, so every pattern is compiled once, each word list is one alternation folded
into a prefix tree (hundreds of terms cost little more than a few), cheap gates skip the
patterns a caption cannot match (no digit: no phone), and the per-word name analysis
runs only on the few captions that already carry a medical term.
Only the first ``MAX_CAPTION_CHARS`` characters of a caption are scanned, so one huge
scraped "caption" (a whole page of text) costs no more than a long real one.
"""
from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms.caption_terms import CaptionTerms, fold_text, load_caption_terms

CAPTION_FLAGS: tuple[str, ...] = (
    "email",
    "medical_term",
    "name_with_medical_term",
    "national_id",
    "personal_handle_url",
    "phone",
    "street_address",
)

# A name counts as "next to" a medical term when their word positions differ by at most
# this much, i.e. at most NAME_TERM_WINDOW - 1 words lie between.
NAME_TERM_WINDOW = 6

# Characters of a caption that are scanned. LAION captions are short (a few hundred
# characters at most); the rare multi-kilobyte one is scraped page text, and scanning
# all of it would let one row cost as much as thousands of ordinary ones.
MAX_CAPTION_CHARS = 2000


# --------------------------------------------------------------------------- regex building

_SEPARATOR = "\x00"  # stands for "space, hyphen or nothing" inside a term


def _term_regex(words: Iterable[str], flexible_separators: bool = True) -> str:
    """One alternation for many literal words, factored as a prefix tree.

    Python's regex engine tries alternatives one by one; sharing prefixes makes a failed
    position cost one branch per distinct first character instead of one per word.
    """
    root: dict = {}
    for word in words:
        if flexible_separators:
            word = re.sub(r"[\s\-]+", _SEPARATOR, word)
        node = root
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}
    return _trie_node_regex(root)


def _trie_node_regex(node: dict) -> str:
    branches = []
    for char in sorted(key for key in node if key):
        head = r"[\s\-]*" if char == _SEPARATOR else re.escape(char)
        branches.append(head + _trie_node_regex(node[char]))
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    if "" in node:
        return "(?:" + body + ")?"
    return body


_UPPER = "A-ZÀ-ÖØ-ÞĀ-Ž"  # capital letters a street or person name may start with
_YEAR = r"(?:19|20)\d\d(?!\d)"  # a year is not a house number
_NUMBER_END = r"(?![\w]|[.,/]\d)"  # the number ends here, not inside 12.5 or 1/2
_FILE_EXTENSIONS = r"(?:png|jpe?g|gif|webp|svg|bmp|tiff?|ico|avif|heic)"


@dataclass(frozen=True)
class _NameToken:
    text: str
    folded: str
    sentence_start: bool


_TOKEN = re.compile(r"[^\W\d_]+(?:['’\-][^\W\d_]+)*|\d+|[.!?;:|•·\n]")
_SENTENCE_BREAKS = frozenset(".!?;:|•·\n")
_HAS_DIGIT = re.compile(r"\d")
_NUMBERISH = re.compile(r"\d[\d\s().\-/]{4,}\d")
_ID_CARD_LETTERS = frozenset("CFGHJKLMNPRTVWXYZ0123456789")
_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"
_NON_DIGITS = re.compile(r"\D")
_SPACES = re.compile(r"\s")
_AMOUNT = re.compile(r"\+?\d{1,3}(?:[.,\s]\d{3})+")
_DOUBLE_SEPARATOR = re.compile(r"[\s.\-/]{2,}")


def _cpf_valid(digits: str) -> bool:
    """Brazilian CPF: two mod-11 check digits; repeated digits are not issued."""
    if len(digits) != 11 or len(set(digits)) == 1:
        return False
    for size in (9, 10):
        total = sum(int(d) * w for d, w in zip(digits[:size], range(size + 1, 1, -1)))
        if (total * 10) % 11 % 10 != int(digits[size]):
            return False
    return True


def _dni_valid(number: int, letter: str) -> bool:
    """Spanish DNI/NIE: the letter is fixed by the number modulo 23."""
    return _DNI_LETTERS[number % 23] == letter.upper()


def _insee_valid(text: str) -> bool:
    """French NIR (INSEE): 13 digits and a key of 97 - n mod 97; Corsica writes 2A/2B."""
    compact = _SPACES.sub("", text).upper()
    if len(compact) != 15:
        return False
    body, key = compact[:13], compact[13:]
    corsica = {"2A": "19", "2B": "18"}.get(body[5:7])
    if corsica:
        body = body[:5] + corsica + body[7:]
    if not (body.isdigit() and key.isdigit()):
        return False
    return 97 - int(body) % 97 == int(key)


_HANDLE = re.compile(r"[a-z0-9_][a-z0-9_.\-]{1,63}")


def _is_capitalised(word: str) -> bool:
    """A capital then some lower case: "Maria", "McDonald", "O'Brien"; not "MRI"."""
    return len(word) >= 2 and word[0].isupper() and any(c.islower() for c in word[1:])


def _name_tokens(text: str) -> list[_NameToken]:
    """The words and numbers of a caption, each marked when it starts a sentence."""
    tokens = []
    sentence_start = True
    for match in _TOKEN.finditer(text):
        piece = match.group()
        if piece in _SENTENCE_BREAKS:
            sentence_start = True
            continue
        tokens.append(_NameToken(piece, fold_text(piece), sentence_start))
        sentence_start = False
    return tokens


def _capped(text: str) -> str:
    """The first MAX_CAPTION_CHARS characters, ending on a whole word where possible
    (half a word could match as a different, shorter one)."""
    if len(text) <= MAX_CAPTION_CHARS:
        return text
    head = text[:MAX_CAPTION_CHARS]
    if text[MAX_CAPTION_CHARS].isspace():
        return head
    whole_words = head.rsplit(None, 1)
    return whole_words[0] if len(whole_words) == 2 else head


def _plausible_phone(candidate: str, international: bool) -> bool:
    digits = sum(c.isdigit() for c in candidate)
    if international:
        if not 8 <= digits <= 15:
            return False
    elif not 7 <= digits <= 15:
        return False
    # "+12.000.000" and "1,299,000" are amounts, not numbers to call.
    if _AMOUNT.fullmatch(candidate):
        return False
    if candidate.count("(") != candidate.count(")"):
        return False
    return _DOUBLE_SEPARATOR.search(candidate.replace(") ", ")").replace(" (", "(")) is None


class CaptionScanner:
    """All caption patterns, compiled once from one set of terms."""

    def __init__(self, terms: CaptionTerms):
        self.terms = terms
        all_medical = [t for terms_ in terms.medical_terms.values() for t in terms_]
        # Every term starts and ends with a letter, so \b is the word boundary on both sides.
        self._medical = re.compile(rf"\b(?:{_term_regex(all_medical)})s?\b")

        # ----- email (on folded text): plain, or written as "name [at] host [dot] com"
        at = r"(?:@|\s*[\[(]\s*at\s*[\])]\s*)"
        dot = r"(?:\.|\s*[\[(]\s*dot\s*[\])]\s*)"
        self._email = re.compile(
            rf"(?<![\w.+\-])[a-z0-9][a-z0-9._%+\-]{{0,63}}{at}"
            rf"[a-z0-9\-]+(?:{dot}[a-z0-9\-]+)*{dot}"
            rf"(?!{_FILE_EXTENSIONS}(?![a-z]))[a-z]{{2,24}}(?![\w\-])"
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
            rf"(?<!\w)(?:{_term_regex(terms.contexts['handle'])})\s*[:\-–]?\s*"
            r"(?:on\s+|at\s+|me\s+)?@[a-z0-9_][a-z0-9_.]{1,29}"
        )

        # ----- phone numbers (on folded text; digits are unchanged by folding)
        before = r"(?<![\w+.,\-/])"
        self._phone_national = re.compile(
            before + "(?:"
            # US: (555) 123-4567, 555-123-4567, 555.123.4567
            r"\([2-9]\d\d\)\s?\d{3}[\-.\s]\d{4}"
            r"|[2-9]\d\d([\-.])\d{3}\1\d{4}"
            # UK: 07700 900123, 020 7946 0958, 0161 496 0000, 01632 960123
            r"|07\d{3}\s?\d{6}"
            r"|0[12]\d\s\d{4}\s\d{4}"
            r"|01\d{2}\s\d{3}\s\d{4}"
            r"|01\d{3}\s\d{5,6}"
            # DE: 0151 23456789, 030 12345678, 089/1234567, 030-1234567
            r"|0\d{2,4}[\s/\-]\d{5,8}"
            # FR: 06 12 34 56 78, 06.12.34.56.78, 0612345678 (one separator throughout)
            r"|0[1-9]([\s.\-]?)\d\d(?:\2\d\d){3}"
            # ES: 612 34 56 78, 912 345 678
            r"|[6789]\d\d([\s.])\d\d\3\d\d\3\d\d"
            r"|[6789]\d\d([\s.])\d{3}\4\d{3}"
            # BR: (11) 91234-5678, (21) 3456-7890, 11 91234-5678
            r"|\(\d\d\)\s?9?\d{4}-?\d{4}"
            r"|\d\d\s9\d{4}-\d{4}"
            r")" + _NUMBER_END
        )
        self._phone_international = re.compile(
            before + r"\+\d[\d\s().\-/]{6,22}\d" + _NUMBER_END
        )
        self._phone_context = re.compile(
            rf"(?<!\w)(?:{_term_regex(terms.contexts['phone'])})\.?\s*[:.]?\s*"
            r"(?P<number>\+?\d[\d\s().\-/]{5,20}\d)" + _NUMBER_END
        )

        # ----- street addresses (on original text: capitals tell names from words)
        # The gate, on folded text, skips the four address patterns for captions that hold
        # no street word at all; German suffixes sit inside words ("Hauptstraße").
        standalone = [fold_text(w) for w in (*terms.en_street_suffixes,
                                            *terms.fr_street_prefixes,
                                            *terms.es_pt_street_prefixes,
                                            *terms.de_street_words)]
        self._street_gate = re.compile(
            rf"(?<!\w)(?:{_term_regex((w for w in standalone if w[-1].isalnum()), False)})(?!\w)"
            rf"|(?<!\w)(?:{_term_regex((w for w in standalone if not w[-1].isalnum()), False)})"
            rf"|{_term_regex((fold_text(w) for w in terms.de_street_suffixes), False)}"
        )
        en_suffixes = _term_regex((s.lower() for s in terms.en_street_suffixes), False)
        self._address_en = re.compile(
            rf"(?<![\w.,\-/])(?!{_YEAR})\d{{1,5}}[A-Za-z]?,?\s+"
            rf"(?P<name>(?:[{_UPPER}][\w'’\-]*\.?\s+){{1,4}})"
            rf"(?i:{en_suffixes})\.?(?!\w)"
        )
        de_suffixes = _term_regex((s.lower() for s in terms.de_street_suffixes), False)
        de_words = _term_regex((s.lower() for s in terms.de_street_words), False)
        self._address_de = re.compile(
            rf"(?<!\w)(?:[{_UPPER}][^\W\d_]+(?i:{de_suffixes})"
            rf"|[{_UPPER}][^\W\d_]+[\s\-](?i:{de_words}))"
            rf"\s*(?!{_YEAR})\d{{1,4}}(?:\s?[a-zA-Z])?" + _NUMBER_END
        )
        fr_prefixes = _term_regex((s.lower() for s in terms.fr_street_prefixes), False)
        self._address_fr = re.compile(
            rf"(?<![\w.,\-/])(?!{_YEAR})\d{{1,4}}(?:\s?(?i:bis|ter))?,?\s+"
            rf"(?i:{fr_prefixes})\s+"
            rf"(?:(?i:de\s+la|de\s+l['’]|du|des|de|d['’])\s*[^\W\d_]|[{_UPPER}])"
        )
        es_pt_prefixes = _term_regex((s.lower() for s in terms.es_pt_street_prefixes), False)
        self._address_es_pt = re.compile(
            rf"(?<!\w)(?i:{es_pt_prefixes})(?:\s+|(?<=[./])\s*)"
            r"(?:(?i:de\s+la|de\s+los|de\s+las|del|de|da|do|dos|das)\s+)?"
            r"[^\W\d_][\w'’.\-]*(?:\s+[^\W\d_][\w'’.\-]*){0,4}?\s*,?\s*"
            r"(?:(?i:n[º°o]\.?|núm\.?|num\.?|nr\.?|número|numero)\s*)?"
            rf"(?!{_YEAR})\d{{1,5}}" + _NUMBER_END
        )

        # ----- national identity numbers
        self._ssn = re.compile(
            r"(?<![\w\-])(?!000|666|9\d\d)\d{3}-(?!00)\d\d-(?!0000)\d{4}(?![\w\-])"
        )
        self._ssn_context = re.compile(
            rf"(?<!\w)(?:{_term_regex(terms.contexts['ssn'])})[^\d\n]{{0,15}}"
            r"(?!000|666|9\d\d)\d{3}[\s\-]?(?!00)\d\d[\s\-]?(?!0000)\d{4}(?!\d)"
        )
        number_words = r"(?:\s*(?:no\.?|nr\.?|number|nummer|numero|n[º°o]\.?|#))?"
        self._passport = re.compile(
            rf"(?<!\w)(?:{_term_regex(terms.contexts['passport'])}){number_words}"
            r"\s*[:#.\-]?\s*(?P<number>[a-z0-9]{6,9})(?!\w)"
        )
        self._id_card = re.compile(
            rf"(?<!\w)(?:{_term_regex(terms.contexts['id_card'])}){number_words}"
            r"\s*[:#.\-]?\s*(?P<number>[a-z0-9]{9,10})(?!\w)"
        )
        self._document_gate = re.compile(
            rf"(?<!\w)(?:{_term_regex((*terms.contexts['passport'], *terms.contexts['id_card']))})"
        )
        self._insee_spaced = re.compile(
            r"(?<![\w])[12] \d\d (?:0[1-9]|1[0-2]|[2-9]\d) (?:\d\d|2[AB]) \d{3} \d{3} \d\d(?!\w)"
        )
        self._insee_context = re.compile(
            rf"(?<!\w)(?:{_term_regex(terms.contexts['insee'])})[^\d\n]{{0,12}}"
            r"(?P<number>[12]\s?\d\d\s?\d\d\s?(?:\d\d|2[ab])\s?\d{3}\s?\d{3}\s?\d\d)(?!\w)"
        )
        self._dni = re.compile(r"(?<![\w\-.])(\d{8})-?([A-Z])(?!\w)")
        self._nie = re.compile(r"(?<![\w\-.])([XYZ])-?(\d{7})-?([A-Z])(?!\w)")
        self._cpf = re.compile(r"(?<![\w.\-])\d{3}\.\d{3}\.\d{3}-\d\d(?![\w\-]|\.\d)")
        self._cpf_context = re.compile(
            rf"(?<!\w)(?:{_term_regex(terms.contexts['cpf'])})\s*(?:n[º°o]\.?)?\s*[:#]?\s*"
            r"(?P<number>\d{3}\.?\d{3}\.?\d{3}-?\d\d)(?!\d)"
        )
        self._uk_nino = re.compile(
            r"(?<!\w)(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]"
            r"\s?\d\d\s?\d\d\s?\d\d\s?[A-D](?!\w)"
        )

    # ------------------------------------------------------------------ flags

    def flags(self, text: Any) -> list[str]:
        """Sorted, unique flag names for one caption; [] for anything but a string."""
        if not isinstance(text, str) or not text:
            return []
        text = _capped(text)
        folded = fold_text(text)
        found: list[str] = []
        if ("@" in folded or "at]" in folded or "at)" in folded) and self._email.search(folded):
            found.append("email")
        if self._medical.search(folded):
            found.append("medical_term")
            if self._name_near_medical_term(text):
                found.append("name_with_medical_term")
        # Phones and most identity numbers are runs of 6+ digits and separators; addresses
        # need a digit and a street word. Most captions fail these cheap gates.
        has_digit = _HAS_DIGIT.search(folded) is not None
        numberish = has_digit and _NUMBERISH.search(folded) is not None
        if has_digit and self._has_national_id(text, folded, numberish):
            found.append("national_id")
        if ("/" in folded or "@" in folded) and self._has_personal_handle(folded):
            found.append("personal_handle_url")
        if numberish and self._has_phone(folded):
            found.append("phone")
        if has_digit and self._street_gate.search(folded) and self._has_street_address(text):
            found.append("street_address")
        return found  # appended in CAPTION_FLAGS order, which is sorted

    def _has_phone(self, folded: str) -> bool:
        if self._phone_national.search(folded):
            return True
        if "+" in folded:
            for match in self._phone_international.finditer(folded):
                if _plausible_phone(match.group(), international=True):
                    return True
        for match in self._phone_context.finditer(folded):
            if _plausible_phone(match.group("number"), international=False):
                return True
        return False

    def _has_street_address(self, text: str) -> bool:
        for match in self._address_en.finditer(text):
            words = {fold_text(w.rstrip(".")) for w in match.group("name").split()}
            if not words & self.terms.en_street_not_names:
                return True
        return bool(
            self._address_de.search(text)
            or self._address_fr.search(text)
            or self._address_es_pt.search(text)
        )

    def _has_national_id(self, text: str, folded: str, numberish: bool) -> bool:
        if self._document_gate.search(folded) and self._has_document_number(folded):
            return True
        if not numberish:
            return False
        if self._ssn.search(text) or self._ssn_context.search(folded):
            return True
        if self._uk_nino.search(text):
            return True
        for match in self._cpf.finditer(text):
            if _cpf_valid(_NON_DIGITS.sub("", match.group())):
                return True
        for match in self._cpf_context.finditer(folded):
            if _cpf_valid(_NON_DIGITS.sub("", match.group("number"))):
                return True
        for match in self._dni.finditer(text):
            if _dni_valid(int(match.group(1)), match.group(2)):
                return True
        for match in self._nie.finditer(text):
            number = int("XYZ".index(match.group(1)) * 10**7 + int(match.group(2)))
            if _dni_valid(number, match.group(3)):
                return True
        for match in self._insee_spaced.finditer(text):
            if _insee_valid(match.group()):
                return True
        for match in self._insee_context.finditer(folded):
            if _insee_valid(match.group("number")):
                return True
        return False

    def _has_document_number(self, folded: str) -> bool:
        for match in self._passport.finditer(folded):
            if any(c.isdigit() for c in match.group("number")):
                return True
        for match in self._id_card.finditer(folded):
            number = match.group("number").upper()
            if any(c.isdigit() for c in number) and set(number[:9]) <= _ID_CARD_LETTERS:
                return True
        return False

    def _has_personal_handle(self, folded: str) -> bool:
        for match in self._profile_url.finditer(folded):
            profile = self._profiles[match.group("host")]
            path = match.group("path")
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

    # ------------------------------------------------------------------ names

    def _name_near_medical_term(self, text: str) -> bool:
        """A person-like name within NAME_TERM_WINDOW words of a medical term."""
        words = _name_tokens(text)
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
        for first, last in self._name_spans(words, term_words):
            i = bisect.bisect_left(term_lasts, first - NAME_TERM_WINDOW)
            if i < len(term_firsts) and term_firsts[i] <= last + NAME_TERM_WINDOW:
                return True
        return False

    def _name_spans(self, words: list[_NameToken], term_words: set[int]) -> list[tuple[int, int]]:
        terms = self.terms

        def name_like(i: int) -> bool:
            if i >= len(words) or i in term_words:
                return False
            token = words[i]
            return (
                _is_capitalised(token.text)
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
        capitalised = sum(1 for t in alpha if _is_capitalised(t.text))
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
            elif folded in terms.given_names and _is_capitalised(token.text):
                j = i + 1
                while j < len(words) and j - i <= 2 and words[j].folded in terms.particles \
                        and not _is_capitalised(words[j].text):
                    j += 1
                if name_like(j):
                    spans.append(extend(i, j))
            elif not title_cased and not token.sentence_start and name_like(i) \
                    and name_like(i + 1):
                spans.append(extend(i, i + 1))
        return spans


# --------------------------------------------------------------------------- entry points

@functools.cache
def default_scanner() -> CaptionScanner:
    """The scanner over the packaged terms, built once per process."""
    return CaptionScanner(load_caption_terms())


def caption_flags(text: Any) -> list[str]:
    """Sorted, unique flags (names from CAPTION_FLAGS) for one caption."""
    return default_scanner().flags(text)


def caption_flags_batch(texts: Sequence[Any]) -> list[list[str]]:
    """caption_flags for each caption; repeated captions (common in scraped data) scan once."""
    scanner = default_scanner()
    seen: dict[str, list[str]] = {}
    out = []
    for text in texts:
        if not isinstance(text, str):
            out.append([])
            continue
        flags = seen.get(text)
        if flags is None:
            flags = seen[text] = scanner.flags(text)
        out.append(list(flags))
    return out


class _FlagCaptions(beam.DoFn):
    def setup(self) -> None:
        self._scanner = default_scanner()
        self._flagged = Metrics.counter("captions", "rows_flagged")

    def process(self, record: dict):
        flags = self._scanner.flags(record.get("caption"))
        if flags:
            self._flagged.inc()
        # A new dict: Beam forbids changing an input element another consumer may see.
        yield {**record, "caption_flags": flags}


class FlagCaptions(beam.PTransform):
    """Fill each record's `caption_flags` from its caption."""

    def expand(self, records):
        return records | beam.ParDo(_FlagCaptions())
