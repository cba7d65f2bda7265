"""Identity, tax, health, bank and card numbers in captions, each validated by its check
digits before it counts.

Fast candidate patterns find the shapes (a dashed SSN, a punctuated CPF, an IBAN's
country and check digits); python-stdnum then checks each candidate, so a number that
looks right but fails its checksum is not flagged as that kind. Shapes common in ordinary
captions (a bare run of 9 to 16 digits) count only after a word that names the number
("NIF", "Steuer-ID", "NHS no", "NINO", "card").

Kinds, after the way python-stdnum describes each number:

- ``national_id``: US SSN, ES DNI / NIE, FR NIR, BR CPF, PT Cartão de Cidadão, UK
  National Insurance number (after its word: it has no check digit), passport and ID-card
  numbers after their document word;
- ``tax_id``: BR CNPJ, PT NIF / NIPC, DE Steuer-IdNr, IT codice fiscale;
- ``health_id``: GB NHS number;
- ``iban``: any country's IBAN (ISO 13616: country format and mod-97 check);
- ``payment_card``: 13 to 19 digits that pass the Luhn check (ISO/IEC 7812-1) and begin
  with a card network's issuer range for that length (``CARD_RANGES``).
"""
from __future__ import annotations

import re
from collections.abc import Callable

from stdnum import iban as std_iban
from stdnum import luhn
from stdnum.br import cnpj, cpf
from stdnum.de import idnr
from stdnum.es import dni, nie
from stdnum.fr import nir
from stdnum.gb import nhs
from stdnum.it import codicefiscale
from stdnum.pt import cc as citizen_card
from stdnum.pt import nif
from stdnum.us import ssn

from transforms.caption_terms import CaptionTerms
from transforms.captions.patterns import NON_ALNUM, NON_DIGITS, term_regex

IDENTIFIER_FLAGS: tuple[str, ...] = ("health_id", "iban", "national_id", "payment_card", "tax_id")

_ID_CARD_LETTERS = frozenset("CFGHJKLMNPRTVWXYZ0123456789")

# Issuer ranges of the card networks: (first prefix, last prefix, lengths). Prefixes of
# one range have the same number of digits. Sources: each network's published ranges as
# summarised in ISO/IEC 7812's register and https://en.wikipedia.org/wiki/Payment_card_number
# (Visa 4; Mastercard 51-55 and 2221-2720; American Express 34, 37; Discover 6011,
# 644-649, 65; JCB 3528-3589; Diners Club 300-305, 36, 38-39; UnionPay 62; Maestro 50,
# 56-58, 6304, 6759, 676; Mir 2200-2204; RuPay 60, 81-82; Verve 506099-506198).
CARD_RANGES: tuple[tuple[int, int, frozenset[int]], ...] = (
    (4, 4, frozenset({13, 16, 19})),
    (51, 55, frozenset({16})),
    (2221, 2720, frozenset({16})),
    (34, 34, frozenset({15})),
    (37, 37, frozenset({15})),
    (6011, 6011, frozenset(range(16, 20))),
    (644, 649, frozenset(range(16, 20))),
    (65, 65, frozenset(range(16, 20))),
    (3528, 3589, frozenset(range(16, 20))),
    (300, 305, frozenset(range(14, 20))),
    (36, 36, frozenset(range(14, 20))),
    (38, 39, frozenset(range(14, 20))),
    (62, 62, frozenset(range(16, 20))),
    (50, 50, frozenset(range(12, 20))),
    (56, 58, frozenset(range(12, 20))),
    (6304, 6304, frozenset(range(12, 20))),
    (6759, 6759, frozenset(range(12, 20))),
    (676, 676, frozenset(range(12, 20))),
    (2200, 2204, frozenset(range(16, 20))),
    (60, 60, frozenset(range(16, 20))),
    (81, 82, frozenset(range(16, 20))),
    (506099, 506198, frozenset(range(16, 20))),
)


def card_number_valid(digits: str) -> bool:
    """A payment card number: a network's issuer range and length, and the Luhn check."""
    if not digits.isdigit() or not 12 <= len(digits) <= 19:
        return False
    for low, high, lengths in CARD_RANGES:
        width = len(str(low))
        if low <= int(digits[:width]) <= high and len(digits) in lengths:
            return luhn.is_valid(digits)
    return False


# The identifiers that count only after their word; their words make the context gate.
_CONTEXT_GATED = ("ssn", "cpf", "insee", "cnpj", "nif", "steuer_id", "nhs", "nino", "payment_card")

# UK National Insurance number: two prefix letters (not D, F, I, Q, U, V; the second not O;
# not the unused pairs), six digits, a suffix A-D. It has no check digit, and product codes
# of that shape are common, so it counts only after its own word.
_NINO = re.compile(r"(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]\d{6}[A-D]")


def nino_valid(compact: str) -> bool:
    """A UK National Insurance number's letters and digits (it has no check digit)."""
    return _NINO.fullmatch(compact) is not None


class IdentifierScanner:
    """The identifier patterns of one set of terms; ``kinds`` names what a caption holds."""

    def __init__(self, terms: CaptionTerms):
        contexts = terms.contexts

        def after(key: str) -> str:
            return rf"(?<!\w)(?:{term_regex(contexts[key])})(?!\w)"

        number_words = r"(?:\s*(?:no\.?|nr\.?|number|nummer|numero|n[º°o]\.?|#))?"
        # The context words of every number read only after its word: one search says
        # whether any of them is worth looking for.
        self._context_gate = re.compile(
            rf"(?<!\w)(?:{term_regex(w for key in _CONTEXT_GATED for w in contexts[key])})"
        )
        self._document_gate = re.compile(
            rf"(?<!\w)(?:{term_regex((*contexts['passport'], *contexts['id_card']))})"
        )
        self._passport = re.compile(
            after("passport") + number_words
            + r"\s*[:#.\-]?\s*(?P<number>[a-z0-9]{6,9})(?!\w)"
        )
        self._id_card = re.compile(
            after("id_card") + number_words
            + r"\s*[:#.\-]?\s*(?P<number>[a-z0-9]{9,10})(?!\w)"
        )

        # ----- numbers recognised by their shape alone, anywhere. One pattern, one named
        # group per number (``_SHAPES`` says its kind and check), scanned once. Every
        # branch starts at a digit, taken before the branches, so the regex engine skips
        # to the digits of a caption instead of trying each branch at every character;
        # what comes before that first digit is checked by a look-behind ("." is the digit).
        omocodia = "0-9LMNP-V"  # a codice fiscale's later homonyms swap digits for letters
        shapes = {
            "ssn": r"(?<![\w\-].)\d\d-\d\d-\d{4}(?![\w\-])",
            "cpf": r"(?<![\w.\-].)\d\d\.\d{3}\.\d{3}-\d\d(?![\w\-]|\.\d)",
            "cnpj": r"(?<![\w.\-/].)\d\.\d{3}\.\d{3}/\d{4}-\d\d(?![\w\-]|\.\d)",
            "dni": r"(?<![\w\-.].)\d{7}-?[A-Z](?!\w)",
            # Cartão de Cidadão: civil number, its check digit, two letters, a check digit.
            "citizen_card": r"(?<![\w\-].)\d{7}[\s\-]?\d[\s\-]?[A-Z][A-Z0-9]\d(?!\w)",
            "nir": r"(?<=[12])(?<!\w.) \d\d (?:0[1-9]|1[0-2]|[2-9]\d) (?:\d\d|2[AB]) \d{3} \d{3} \d\d(?!\w)",
            # Grouped 4-4-4-4(-3), Amex 4-6-5, Diners 4-6-4.
            "card": r"(?<![\d\-.,/].)(?:\d{3}(?P<card_sep>[ \-])\d{4}(?P=card_sep)\d{4}(?P=card_sep)"
                    r"\d{4}(?:(?P=card_sep)\d{3})?|(?<=3)\d{3}(?P<amex_sep>[ \-])\d{6}(?P=amex_sep)\d{4,5})"
                    r"(?![\d]|[\-.,/]\d)",
            # IBAN: country, check digits, then the account in groups of four.
            "iban": r"(?<=(?<![A-Za-z0-9])[A-Za-z]{2}.)\d(?:[ ]?[A-Za-z0-9]{4}){2,7}"
                    r"(?:[ ]?[A-Za-z0-9]{1,3})?(?![A-Za-z0-9])",
            # Codice fiscale: surname and name letters, birth year, month letter, day (+40
            # for women), birthplace code, check letter.
            "codice_fiscale": rf"(?<=(?<![A-Za-z0-9])[A-Za-z]{{6}}.)[{omocodia}]"
                              rf"[A-EHLMPR-Ta-ehlmpr-t][{omocodia}]{{2}}[A-Za-z][{omocodia}]{{3}}"
                              r"[A-Za-z](?![A-Za-z0-9])",
        }
        self._shapes = re.compile(
            r"\d(?:" + "|".join(f"(?P<{name}>{body})" for name, body in shapes.items()) + ")"
        )
        # A codice fiscale alone, for captions without a run of digits (its digits are
        # too few and too spread out for one).
        self._codice_fiscale = re.compile(r"\d(?P<codice_fiscale>" + shapes["codice_fiscale"] + ")")
        # A NIE starts with a capital letter, taken first like the digit above.
        self._letter_shapes = re.compile(
            r"[A-Z](?:"
            r"(?P<nie>(?<=[XYZ])(?<![\w\-.].)-?\d{7}-?[A-Z](?!\w))"
            r")"
        )

        # ----- numbers read only after their word (on folded text)
        self._ssn_context = re.compile(
            after("ssn") + r"[^\d\n]{0,15}(?P<number>\d{3}[\s\-]?\d\d[\s\-]?\d{4})(?!\d)"
        )
        self._insee_context = re.compile(
            after("insee") + r"[^\d\n]{0,12}"
            r"(?P<number>[12]\s?\d\d\s?\d\d\s?(?:\d\d|2[ab])\s?\d{3}\s?\d{3}\s?\d\d)(?!\w)"
        )
        self._cpf_context = re.compile(
            after("cpf") + r"\s*(?:n[º°o]\.?)?\s*[:#]?\s*"
            r"(?P<number>\d{3}\.?\d{3}\.?\d{3}-?\d\d)(?!\d)"
        )
        self._cnpj_context = re.compile(
            after("cnpj") + r"\s*(?:n[º°o]\.?)?\s*[:#]?\s*"
            r"(?P<number>\d\d\.?\d{3}\.?\d{3}/?\d{4}-?\d\d)(?!\d)"
        )
        self._nif_context = re.compile(
            after("nif") + r"[^\d\n]{0,12}?(?:pt\s?)?(?P<number>\d{3}\s?\d{3}\s?\d{3})(?!\d)"
        )
        self._idnr_context = re.compile(
            after("steuer_id") + r"[^\d\n]{0,12}(?P<number>\d\d\s?\d{3}\s?\d{3}\s?\d{3})(?!\d)"
        )
        self._nhs_context = re.compile(
            after("nhs") + r"[^\d\n]{0,12}(?P<number>\d{3}[\s\-]?\d{3}[\s\-]?\d{4})(?!\d)"
        )
        self._nino_context = re.compile(
            after("nino") + r"[^\w\n]{0,5}(?P<number>[a-z]{2}\s?\d\d\s?\d\d\s?\d\d\s?[a-d])(?!\w)"
        )
        # A plain run of digits is a card number only after a card word.
        self._card_context = re.compile(
            after("payment_card") + r"[^\d\n]{0,20}(?P<number>\d{12,19})(?!\d)"
        )
        # (context pattern, kind, check, characters removed before the check)
        self._after_words = (
            (self._ssn_context, "national_id", ssn.is_valid, NON_DIGITS),
            (self._cpf_context, "national_id", cpf.is_valid, NON_DIGITS),
            (self._insee_context, "national_id", nir.is_valid, NON_ALNUM),  # Corsica: 2A, 2B
            (self._nino_context, "national_id", nino_valid, NON_ALNUM),
            (self._cnpj_context, "tax_id", cnpj.is_valid, NON_DIGITS),
            (self._nif_context, "tax_id", nif.is_valid, NON_DIGITS),
            (self._idnr_context, "tax_id", idnr.is_valid, NON_DIGITS),
            (self._nhs_context, "health_id", nhs.is_valid, NON_DIGITS),
            (self._card_context, "payment_card", card_number_valid, NON_DIGITS),
        )

    # ------------------------------------------------------------------ kinds

    def kinds(self, text: str, folded: str, numberish: bool) -> set[str]:
        """The identifier flags of one caption (``text`` capped, ``folded`` its folded
        form; ``numberish`` whether it holds a run of 6+ digits and separators)."""
        found: set[str] = set()
        if self._document_gate.search(folded) and self._has_document_number(folded):
            found.add("national_id")
        shapes = (self._shapes, self._letter_shapes) if numberish else (self._codice_fiscale,)
        for pattern in shapes:
            for match in pattern.finditer(text):
                kind, valid, drop, letters_before = _SHAPES[match.lastgroup]
                candidate = text[match.start() - letters_before:match.end()]
                if kind not in found and _passes(candidate, valid, drop):
                    found.add(kind)
        if numberish and self._context_gate.search(folded):
            for pattern, kind, valid, drop in self._after_words:
                if kind not in found and any(
                    _passes(match.group("number"), valid, drop)
                    for match in pattern.finditer(folded)
                ):
                    found.add(kind)
        return found

    def _has_document_number(self, folded: str) -> bool:
        for match in self._passport.finditer(folded):
            if any(c.isdigit() for c in match.group("number")):
                return True
        for match in self._id_card.finditer(folded):
            number = match.group("number").upper()
            if any(c.isdigit() for c in number) and set(number[:9]) <= _ID_CARD_LETTERS:
                return True
        return False



def _iban_valid(candidate: str) -> bool:
    """An IBAN at the start of ``candidate``: the pattern may have taken a word after it
    ("... 1332 bitte"), so space-separated pieces are dropped from the end until one fits."""
    pieces = candidate.upper().split(" ")
    for end in range(len(pieces), 0, -1):
        compact = "".join(pieces[:end])
        if len(compact) < 15:  # Norway's, the shortest IBAN
            break
        if std_iban.is_valid(compact):
            return True
    return False


_KEEP_AS_WRITTEN = re.compile(r"(?!)")  # removes nothing

# Shape group -> (kind, check, characters removed before the check, letters before
# the match that belong to the number: the look-behind's country or name letters).
_SHAPES: dict[str, tuple[str, Callable[[str], bool], re.Pattern, int]] = {
    "ssn": ("national_id", ssn.is_valid, NON_DIGITS, 0),
    "cpf": ("national_id", cpf.is_valid, NON_DIGITS, 0),
    "dni": ("national_id", dni.is_valid, NON_ALNUM, 0),
    "nie": ("national_id", nie.is_valid, NON_ALNUM, 0),
    "nir": ("national_id", nir.is_valid, NON_ALNUM, 0),
    "citizen_card": ("national_id", citizen_card.is_valid, NON_ALNUM, 0),
    "cnpj": ("tax_id", cnpj.is_valid, NON_DIGITS, 0),
    "codice_fiscale": ("tax_id", codicefiscale.is_valid, NON_ALNUM, 6),
    "iban": ("iban", _iban_valid, _KEEP_AS_WRITTEN, 2),
    "card": ("payment_card", card_number_valid, NON_DIGITS, 0),
}


def _passes(candidate: str, valid: Callable[[str], bool], drop: re.Pattern) -> bool:
    """``candidate``, less the characters ``drop`` matches and upper-cased, passes ``valid``."""
    candidate = drop.sub("", candidate).upper()
    # One digit repeated (111.111.111-11) passes several checksums but is never issued.
    return len(set(candidate)) > 1 and valid(candidate)
