"""Caption flags for validated numbers (national_id, tax_id, health_id, iban,
payment_card) and phone numbers checked with phonenumbers (dates of birth:
tests/test_caption_dates.py).

Valid numbers are built here from each number's published rule, independently of the
scanner and of python-stdnum, or are the issuers' own published examples; their
look-alikes change one check digit, and must not be flagged as that kind.
"""
from __future__ import annotations

import random

import pytest

from transforms.captions import caption_flags

RNG_SEED = 1313


def _has(flag: str, text: str) -> bool:
    return flag in caption_flags(text)


def _other_digits(digit: str) -> list[str]:
    return [d for d in "0123456789" if d != digit]


def _with_last_digit_changed(number: str) -> list[str]:
    """Every other value of the last digit of ``number`` (separators kept)."""
    i = max(i for i, c in enumerate(number) if c.isdigit())
    return [number[:i] + d + number[i + 1:] for d in _other_digits(number[i])]


# --------------------------------------------------------------------------- rules
# US SSN (Social Security Administration): area 001-899 but not 666, group 01-99, serial
#   0001-9999; 078-05-1120, 219-09-9999 and 457-55-5462 were printed in advertisements.
# CNPJ (Receita Federal): mod 11 with weights 5..2,9..2 then 6..2,9..2; r < 2 gives 0.
# NIF (Autoridade Tributária): weights 9..2 over 8 digits, mod 11, r < 2 gives 0.
# Cartão de Cidadão (Portaria 286/2007): letters A=10..Z=35, double every second from
#   the right (minus 9 above 9), total mod 10 = 0.
# Steuer-IdNr (BZSt): ISO 7064 MOD 11,10; in the first ten digits one digit appears two
#   or three times and no other repeats; the first is not 0.
# Codice fiscale (DM 23/12/1976): odd-position table, even-position values, mod 26.
# NHS number (NHS Digital): weights 10..2, 11 - (sum mod 11); 11 gives 0, 10 is unused.
# IBAN (ISO 13616): 98 - (BBAN + country digits + "00" mod 97).
# Cards: Luhn (ISO/IEC 7812-1) over the number, with the networks' issuer prefixes.


def _ssn_texts(rng: random.Random) -> list[str]:
    out = []
    while len(out) < 8:
        area = rng.randrange(1, 900)
        if area == 666:
            continue
        out.append(f"{area:03d}-{rng.randrange(1, 100):02d}-{rng.randrange(1, 10000):04d}")
    return out


def _mod11(digits: str, weights: list[int]) -> str:
    r = sum(int(d) * w for d, w in zip(digits, weights)) % 11
    return "0" if r < 2 else str(11 - r)


def _cnpj(first12: str) -> str:
    d1 = _mod11(first12, [5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2])
    d2 = _mod11(first12 + d1, [6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2])
    n = first12 + d1 + d2
    return f"{n[:2]}.{n[2:5]}.{n[5:8]}/{n[8:12]}-{n[12:]}"


def _nif(first8: str) -> str:
    return first8 + _mod11(first8, [9, 8, 7, 6, 5, 4, 3, 2])


def _cc_valid(text: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(text)):
        value = int(char, 36)
        if i % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _cc(civil8: str, check1: str, letters: str) -> str:
    last = next(d for d in "0123456789" if _cc_valid(civil8 + check1 + letters + d))
    return f"{civil8} {check1} {letters}{last}"


def _idnr_check(first10: str) -> str:
    product = 10
    for d in first10:
        total = (int(d) + product) % 10 or 10
        product = total * 2 % 11
    check = 11 - product
    return "0" if check == 10 else str(check)


def _idnr(rng: random.Random) -> str:
    digits = rng.sample("123456789", 9)  # nine distinct digits, the first not 0
    digits.insert(rng.randrange(1, 10), digits[rng.randrange(9)])  # one of them twice
    first10 = "".join(digits)
    return first10 + _idnr_check(first10)


_CF_ODD = dict(zip(
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    [1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20,
     11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23],
))


def _cf_check(first15: str) -> str:
    total = 0
    for i, char in enumerate(first15):
        if i % 2 == 0:
            total += _CF_ODD[char]
        else:
            total += int(char) if char.isdigit() else ord(char) - ord("A")
    return chr(ord("A") + total % 26)


def _nhs(first9: str) -> str | None:
    check = 11 - sum(int(d) * w for d, w in zip(first9, range(10, 1, -1))) % 11
    if check == 10:
        return None
    n = first9 + ("0" if check == 11 else str(check))
    return f"{n[:3]} {n[3:6]} {n[6:]}"


def _iban(country: str, bban: str) -> str:
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    compact = f"{country}{98 - int(numeric) % 97:02d}{bban}"
    return " ".join(compact[i:i + 4] for i in range(0, len(compact), 4))


def _luhn_check(body: str) -> str:
    total = 0
    for i, char in enumerate(reversed(body)):
        d = int(char)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str(-total % 10)


def _card(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
    return body + _luhn_check(body)


def _grouped(number: str, sizes: tuple[int, ...], sep: str = " ") -> str:
    parts, i = [], 0
    for size in sizes:
        parts.append(number[i:i + size])
        i += size
    return sep.join(parts)


# --------------------------------------------------------------------------- national_id

def test_valid_ssns_are_national_ids_and_advertised_or_unissued_ones_are_not():
    for ssn in _ssn_texts(random.Random(RNG_SEED)):
        assert _has("national_id", f"scan of my card, SSN {ssn}"), ssn
        assert _has("national_id", f"my social security number is {ssn.replace('-', ' ')}"), ssn
    for ssn in ("078-05-1120", "219-09-9999", "457-55-5462",  # advertised
                "000-12-3456", "666-12-3456", "912-34-5678", "123-00-4567", "123-45-0000"):
        assert not _has("national_id", f"SSN {ssn}"), ssn


@pytest.mark.parametrize("text", [
    "Cartão de Cidadão n.º " + _cc("00000000", "0", "ZZ"),  # "000000000ZZ4", the published example
    "CC " + _cc("12345678", "9", "ZX"),
    _cc("30987654", "1", "ZY").replace(" ", ""),
])
def test_portuguese_citizen_card_is_a_national_id(text):
    assert _has("national_id", text)


def test_citizen_card_with_a_changed_check_digit_is_not():
    valid = _cc("12345678", "9", "ZX")
    for text in _with_last_digit_changed(valid):
        assert not _has("national_id", f"CC {text}"), text


# --------------------------------------------------------------------------- tax_id

def test_cnpj_is_a_tax_id_and_a_changed_check_digit_is_not():
    rng = random.Random(RNG_SEED)
    numbers = ["11.222.333/0001-81"] + [_cnpj(f"{rng.randrange(10**8):08d}0001") for _ in range(5)]
    for number in numbers:
        assert _has("tax_id", f"Loja XYZ LTDA CNPJ {number}"), number
        assert _has("tax_id", f"empresa {number}"), number
        assert _has("tax_id", "cnpj: " + "".join(c for c in number if c.isdigit())), number
        for broken in _with_last_digit_changed(number):
            assert not _has("tax_id", f"CNPJ {broken}"), broken
    assert not _has("tax_id", "CNPJ 00.000.000/0000-00")


def test_portuguese_nif_is_a_tax_id_after_its_word_only():
    rng = random.Random(RNG_SEED)
    numbers = ["123456789"] + [_nif(f"{rng.choice('123')}{rng.randrange(10**7):07d}") for _ in range(5)]
    for nif in numbers:
        spaced = f"{nif[:3]} {nif[3:6]} {nif[6:]}"
        for text in (f"NIF {nif}", f"número de contribuinte: {spaced}", f"NIF: PT{nif}"):
            assert _has("tax_id", text), text
        assert not _has("tax_id", f"encomenda {nif}")  # nine digits alone: not a NIF
        for broken in _with_last_digit_changed(nif):
            assert not _has("tax_id", f"NIF {broken}"), broken


def test_german_tax_id_is_a_tax_id_and_a_changed_check_digit_is_not():
    rng = random.Random(RNG_SEED)
    numbers = ["36574261809"] + [_idnr(rng) for _ in range(6)]
    for idnr in numbers:
        spaced = f"{idnr[:2]} {idnr[2:5]} {idnr[5:8]} {idnr[8:]}"
        for text in (f"Steuer-ID: {idnr}", f"Steueridentifikationsnummer {spaced}", f"IdNr. {idnr}"):
            assert _has("tax_id", text), text
        assert not _has("tax_id", f"Bestellnummer {idnr}")
        for broken in _with_last_digit_changed(idnr):
            assert not _has("tax_id", f"Steuer-ID: {broken}"), broken
    # Right check digit, but no digit repeats: not a structure the BZSt issues.
    distinct = "1234567890"
    assert not _has("tax_id", f"Steuer-ID {distinct}{_idnr_check(distinct)}")


@pytest.mark.parametrize("first15", ["RSSMRA85T10A562", "RCCMNL83S18D969", "BNCGNN71E48F205"])
def test_codice_fiscale_is_a_tax_id_and_a_changed_check_letter_is_not(first15):
    valid = first15 + _cf_check(first15)
    assert _has("tax_id", f"codice fiscale {valid}")
    assert _has("tax_id", f"C.F.: {valid.lower()}")
    for letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
        if letter != valid[-1]:
            assert not _has("tax_id", f"codice fiscale {first15}{letter}"), letter


# --------------------------------------------------------------------------- health_id

def test_nhs_number_is_a_health_id_after_its_word_only():
    rng = random.Random(RNG_SEED)
    numbers = ["943 476 5919"]  # NHS Digital's example
    while len(numbers) < 6:
        number = _nhs(f"{rng.randrange(4 * 10**8, 10**9):09d}")
        if number:
            numbers.append(number)
    for number in numbers:
        for text in (f"NHS number {number}", f"NHS no: {number.replace(' ', '')}"):
            assert _has("health_id", text), text
        assert not _has("health_id", f"ref {number}")
        for broken in _with_last_digit_changed(number):
            assert not _has("health_id", f"NHS number {broken}"), broken


# --------------------------------------------------------------------------- iban

IBANS = [
    "DE89 3704 0044 0532 0130 00",  # published examples
    "GB82 WEST 1234 5698 7654 32",
    "FR14 2004 1010 0505 0001 3M02 606",
    _iban("ES", "21000418450200051332"),
    _iban("PT", "000201231234567890154"),
    _iban("BR", "00360305000010009795493P1"),
    _iban("IT", "X0542811101000000123456"),
]


@pytest.mark.parametrize("iban", IBANS)
def test_iban_of_each_country_is_flagged_spaced_or_not(iban):
    assert _has("iban", f"IBAN: {iban}")
    assert _has("iban", f"überweisen an {iban.replace(' ', '')} bitte")
    assert _has("iban", f"iban {iban.lower()}")


@pytest.mark.parametrize("iban", IBANS)
def test_iban_with_a_changed_check_digit_is_not(iban):
    for digit in _other_digits(iban[3]):
        broken = iban[:3] + digit + iban[4:]
        assert not _has("iban", f"IBAN {broken}"), broken


def test_iban_of_the_wrong_length_for_its_country_is_not():
    valid = IBANS[0].replace(" ", "")  # a German IBAN has 22 characters
    shorter = _iban("DE", valid[4:-1])
    assert not _has("iban", f"IBAN {shorter}")


# --------------------------------------------------------------------------- payment_card

def _cards() -> list[tuple[str, str]]:
    rng = random.Random(RNG_SEED)
    return [
        ("visa", _grouped(_card("4", 16, rng), (4, 4, 4, 4))),
        ("visa", "4111 1111 1111 1111"),  # the networks' published test number
        ("mastercard", _grouped(_card("5" + rng.choice("12345"), 16, rng), (4, 4, 4, 4), "-")),
        ("mastercard 2-series", _grouped(_card("2221", 16, rng), (4, 4, 4, 4))),
        ("amex", _grouped(_card("37", 15, rng), (4, 6, 5))),
        ("discover", _grouped(_card("6011", 16, rng), (4, 4, 4, 4))),
        ("diners", _grouped(_card("36", 14, rng), (4, 6, 4))),
        ("unionpay 19", _grouped(_card("62", 19, rng), (4, 4, 4, 4, 3))),
    ]


@pytest.mark.parametrize("network, number", _cards())
def test_card_numbers_are_flagged_and_a_changed_check_digit_is_not(network, number):
    assert _has("payment_card", f"my card {number} exp 12/27"), network
    assert _has("payment_card", number), network
    assert _has("payment_card", "Kreditkarte " + number.replace(" ", "").replace("-", ""))
    for broken in _with_last_digit_changed(number):
        assert not _has("payment_card", f"card {broken}"), broken


def test_luhn_valid_numbers_outside_card_ranges_or_without_a_card_word_are_not_cards():
    rng = random.Random(RNG_SEED)
    for prefix in ("1", "7", "8", "9", "00"):  # no network issues these
        number = _grouped(_card(prefix, 16, rng), (4, 4, 4, 4))
        assert not _has("payment_card", f"card {number}"), number
    plain = _card("4", 16, rng)
    assert not _has("payment_card", f"order {plain}")  # a bare run of digits needs a card word
    amex_long = _grouped(_card("37", 16, rng), (4, 4, 4, 4))  # Amex numbers have 15 digits
    assert not _has("payment_card", amex_long)


# --------------------------------------------------------------------------- phones

@pytest.mark.parametrize("text", [
    "Telefone: 213 456 789",  # Lisbon landline
    "Contacto 223 456 789 Porto",
    "ligue 912 345 678",
    "Call us (212) 736-5000",
    "office 212-736-5000",
    "+1 (212) 736-5000",
    "+351 213 456 789",
])
def test_phone_found_and_valid(text):
    assert _has("phone", text)


@pytest.mark.parametrize("text", [
    "(555) 123-4567",  # 555 is not an assigned area code: a film number
    "555-123-4567",
    "+1 (555) 123-4567",
    "area 200 300 400",  # shaped like a Portuguese number, none is
    "+99 1234 5678",  # no such country code
])
def test_phone_shape_that_is_no_valid_number_is_not_a_phone(text):
    assert not _has("phone", text)


def test_nine_digits_in_threes_are_a_phone_only_after_a_phone_word():
    # "213 456 789" is a Lisbon landline and also how a price or an article number is
    # grouped; only the word before it tells them apart.
    assert _has("phone", "Telefone: 213 456 789")
    assert _has("phone", "Tel. 213.456.789")
    assert not _has("phone", "Loja em Lisboa 213 456 789")
    assert not _has("phone", "Tel: 213 000 000")  # round thousands: an amount


# --------------------------------------------------------------------------- ordinary captions

@pytest.mark.parametrize("text", [
    "ISBN 978-3-16-148410-0",
    "EAN 4006381333931 Bosch drill",
    "order #123456789 shipped 2019-05-12",
    "SKU 40063813 size 42 EU",
    "Model XY12 ABCD EFGH 2020",
    "iPhone 12 Pro Max 256GB 2020-10-13",
    "Summer collection 2019 - 30% off",
    "1920x1080 HD wallpaper 4k 3840 2160",
    "Ref. 1234 5678 9012 3456 lamp",  # grouped like a card, fails the Luhn check
    "GPS 40.7128 -74.0060",
    "Canon EOS 5D Mark IV 24-105mm f/4",
    "Price: 1,299,000 VND",
    "Preço: 213 456 789 Kz",  # grouped like a Lisbon landline
    "Preis 289.000.000 VND",
    "Casa a venda 912.500.000",
    "Article 213 456 789",
    "Tel: 12.000.000",  # after a phone word, but an amount
    "Sneakers AB 12 34 56 C size",  # shaped like a National Insurance number
])
def test_ordinary_numbers_in_captions_are_not_identifiers(text):
    kinds = {"national_id", "tax_id", "health_id", "iban", "payment_card", "date_of_birth",
             "phone"}
    assert not kinds & set(caption_flags(text))
