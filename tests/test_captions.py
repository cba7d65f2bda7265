"""Caption flags: personal data and medical context, in English, German, French, Spanish
and Portuguese; the check digits that separate identity numbers from other numbers; and
the caption limits. (Tax, health, bank and card numbers and phone validation:
tests/test_caption_identifiers.py; dates of birth: tests/test_caption_dates.py; the terms
file: tests/test_caption_terms.py.)"""
from __future__ import annotations

import random

import pytest

from transforms.caption_terms import fold_text, load_caption_terms
from transforms.captions import (
    CAPTION_FLAGS,
    MAX_CAPTION_CHARS,
    NAME_TERM_WINDOW,
    caption_flags,
    caption_flags_batch,
)


def _has(flag: str, text: str) -> bool:
    return flag in caption_flags(text)


# --------------------------------------------------------------------------- contract

def test_flag_names_are_sorted_and_every_flag_can_fire():
    assert list(CAPTION_FLAGS) == sorted(set(CAPTION_FLAGS))
    everything = (
        "Dr. Müller rhinoplasty before and after, write to mueller@example.org or call "
        "(212) 736-5000, 221B Baker Street, SSN 123-45-6789, instagram.com/mueller.clinic, "
        "born 12 May 1985, NHS number 943 476 5919, IBAN DE89 3704 0044 0532 0130 00, "
        "card 4111 1111 1111 1111, NIF 123456789"
    )
    assert caption_flags(everything) == list(CAPTION_FLAGS)


@pytest.mark.parametrize("value", [None, "", 42, 3.5, b"post-op scar", ["post-op"]])
def test_non_text_and_empty_captions_have_no_flags(value):
    assert caption_flags(value) == []


def test_batch_matches_one_by_one_and_keeps_order():
    texts = ["post-op scar", None, "Summer 2019", "post-op scar", "mail: a.b@example.com", 7]
    batch = caption_flags_batch(texts)
    assert batch == [caption_flags(t) for t in texts]
    # Repeated captions share a scan, not a list: changing one result leaves the other.
    batch[0].append("x")
    assert batch[3] == ["medical_term"]


def test_fold_text_removes_case_and_accents():
    assert fold_text("Pós-Operatório") == "pos-operatorio"
    assert fold_text("HAUPTSTRASSE") == fold_text("Hauptstraße")
    assert fold_text("Cœur") == "coeur"


# --------------------------------------------------------------------------- email

@pytest.mark.parametrize("text", [
    "Contact: maria.silva+photos@example.com.br",
    "Kontakt: HANS.MUELLER@WEB.DE",
    "écrivez-moi à jean-pierre@orange.fr.",
    "escríbeme a ana (at) gmail (dot) com",
    "fale comigo: joao[at]uol.com.br",
])
def test_email_found(text):
    assert _has("email", text)


@pytest.mark.parametrize("text", [
    "logo@2x.png",
    "icon@3x.webp retina",
    "follow @maria.silva for more",
    "Sale @ 50% off",
    "what happened at the meeting (at) noon",
])
def test_email_not_found(text):
    assert not _has("email", text)


# --------------------------------------------------------------------------- phone

@pytest.mark.parametrize("text", [
    "Call us (212) 736-5000 today",
    "office 212-736-5000",
    "UK mobile 07700 900123",
    "London 020 7946 0958",
    "Handy 0151 23456789",
    "Praxis: 089/1234567",
    "appelez le 06 12 34 56 78",
    "tél. 06.12.34.56.78",
    "llámame 612 34 56 78",
    "fijo 912 345 678",
    "WhatsApp (11) 91234-5678",
    "ligue 11 91234-5678",
    "+49 151 23456789",
    "+1 (212) 736-5000",
    "+33 6 12 34 56 78",
    "Tel: 612345678",
])
def test_phone_found(text):
    assert _has("phone", text)


@pytest.mark.parametrize("text", [
    "1920x1080 wallpaper",
    "iPhone 12 case $19.99",
    "Summer 2019",
    "Born 12.05.1985 in Lyon",
    "Order 2019-05-12",
    "01.02.2019 10:30",
    "Price: 1,299,000 VND",
    "+12.000.000 views",
    "ISBN 978-3-16-148410-0",
    "Canon EOS 5D Mark IV 24-105mm f/4",
    "GPS 40.7128 -74.0060",
    "size 36-38 EU",
    "score +3.5%",
    "Call us (555) 123-4567 today",  # 555: no assigned area code, the films' numbers
])
def test_phone_not_found(text):
    assert not _has("phone", text)


# --------------------------------------------------------------------------- street address

@pytest.mark.parametrize("text", [
    "221B Baker Street, London",
    "our house at 42 Wallaby Way",
    "1600 Pennsylvania Avenue",
    "Hauptstraße 5, Berlin",
    "HAUPTSTRASSE 5",
    "Berliner Straße 12",
    "Hauptstr. 5a",
    "12 rue de la Paix",
    "5 Avenue Montaigne, Paris",
    "Calle Mayor 3, Madrid",
    "Calle de Alcalá, 42",
    "Rua Augusta 100, Lisboa",
    "Avenida Paulista, 1578",
    "Av. Paulista nº 1000",
])
def test_street_address_found(text):
    assert _has("street_address", text)


@pytest.mark.parametrize("text", [
    "Berlin Street Art",
    "Baker Street at night",
    "Avenida Paulista",
    "Top 10 Street Style looks",
    "10 Best Street Foods in Bangkok",
    "1969 Abbey Road vinyl",
    "Spring 2019 collection",
    "earring 2 pairs",
    "Platz 1 der Charts",
    "12 place settings",
    "3 square meters",
    "12 tips for street photography",
])
def test_street_address_not_found(text):
    assert not _has("street_address", text)


# --------------------------------------------------------------------------- national id

def _cpf_with_check_digits(first9: str) -> str:
    """Independent CPF check-digit computation, to build valid and invalid numbers."""
    digits = [int(d) for d in first9]
    for size in (9, 10):
        total = sum(d * w for d, w in zip(digits, range(size + 1, 1, -1)))
        digits.append((total * 10) % 11 % 10)
    s = "".join(map(str, digits))
    return f"{s[:3]}.{s[3:6]}.{s[6:9]}-{s[9:]}"


def _dni(number: int) -> str:
    return f"{number:08d}" + "TRWAGMYFPDXBNJZSQVHLCKE"[number % 23]


def _nir(body13: str) -> str:
    key = 97 - int(body13) % 97
    b = body13
    return f"{b[0]} {b[1:3]} {b[3:5]} {b[5:7]} {b[7:10]} {b[10:13]} {key:02d}"


@pytest.mark.parametrize("text", [
    "SSN 123-45-6789",
    "my social security number is 123 45 6789",
    "CPF 123.456.789-09",
    "cpf: " + _cpf_with_check_digits("529982247").replace(".", "").replace("-", ""),
    _cpf_with_check_digits("111444777"),
    "DNI " + _dni(12345678),
    "NIE X1234567L",
    "NI number AB123456C",
    "NINO: AB 12 34 56 C",
    "National Insurance No. AB 12 34 56 C",
    "Passport no. X1234567",
    "Reisepass C01X00T47",
    "numéro de passeport : 12AB34567",
    "pasaporte nº PAB123456",
    "Personalausweis L01X00T47",
    "INSEE " + _nir("1850578006084"),
    _nir("2690299341732"),
])
def test_national_id_found(text):
    assert _has("national_id", text)


def _broken_cpf() -> str:
    valid = _cpf_with_check_digits("123456789")
    return valid[:-1] + str((int(valid[-1]) + 1) % 10)


def _broken_dni() -> str:
    valid = _dni(12345678)
    letters = "TRWAGMYFPDXBNJZSQVHLCKE"
    return valid[:-1] + letters[(letters.index(valid[-1]) + 1) % 23]


def _broken_nir() -> str:
    valid = _nir("1850578006084")
    key = int(valid[-2:])
    return valid[:-2] + f"{(key % 97) + 1:02d}"


@pytest.mark.parametrize("text", [
    "CPF " + _broken_cpf(),
    "111.111.111-11",  # right check digits, but never issued
    "DNI " + _broken_dni(),
    _broken_nir(),
    "000-12-3456",  # SSN area 000 is not issued
    "666-12-3456",
    "NI number QQ123456C",  # Q is not an NI prefix letter
    "AB123456C",  # a National Insurance number has no check digit: only after its word
    "Sneakers AB 12 34 56 C size",
    "passport photo 35x45mm",
    "Passport to Pimlico 1949",
    "product code 12345678",
    "Summer 2019",
])
def test_national_id_not_found(text):
    assert not _has("national_id", text)


# ------------------------------------------------- check digits: any change is caught
#
# Valid numbers are built here from the official rules, independently of the scanner:
#   CPF (Receita Federal): weights 10..2 over the 9 digits, r = sum mod 11, first check
#     digit 0 if r < 2 else 11 - r; the second the same with weights 11..2 over the 10.
#   DNI / NIE (Ministerio del Interior): letter "TRWAGMYFPDXBNJZSQVHLCKE"[n mod 23]; an
#     NIE's X / Y / Z stands for a leading 0 / 1 / 2.
#   NIR (INSEE): key 97 - (13-digit number mod 97); Corsica's 2A / 2B count as 19 / 18.
# Then every other value of each check digit must stop the caption being a national id.

_DNI_TABLE = "TRWAGMYFPDXBNJZSQVHLCKE"
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _cpf_check_digit(digits: str) -> str:
    total = sum(int(d) * w for d, w in zip(digits, range(len(digits) + 1, 1, -1)))
    remainder = total % 11
    return "0" if remainder < 2 else str(11 - remainder)


def _official_cpf(first9: str) -> str:
    first = _cpf_check_digit(first9)
    return first9 + first + _cpf_check_digit(first9 + first)


def _cpf_texts(digits: str) -> list[str]:
    """The two forms the scanner reads: punctuated anywhere, plain after "CPF"."""
    return [f"recibo {digits[:3]}.{digits[3:6]}.{digits[6:9]}-{digits[9:]} pago", f"CPF: {digits}"]


def _cpf_bases() -> list[str]:
    rng = random.Random(1101)
    bases = ["529982247", "111444777"] + [f"{rng.randrange(10**9):09d}" for _ in range(6)]
    # And bases whose check digits come from the "r < 2" rule (0), for each digit.
    candidates = (f"{rng.randrange(10**9):09d}" for _ in range(100_000))
    bases.append(next(b for b in candidates if _official_cpf(b)[9] == "0"))
    bases.append(next(b for b in candidates if _official_cpf(b)[10] == "0"))
    return [b for b in bases if len(set(b)) > 1]


VALID_CPFS = [_official_cpf(b) for b in _cpf_bases()]


def _nir_key(body13: str) -> int:
    numeric = body13[:5] + {"2A": "19", "2B": "18"}.get(body13[5:7], body13[5:7]) + body13[7:]
    return 97 - int(numeric) % 97


def _nir_bodies() -> list[str]:
    rng = random.Random(1697)

    def body(dept: str | None = None) -> str:
        dept = dept or f"{rng.choice([d for d in range(1, 96) if d != 20]):02d}"
        return (f"{rng.choice('12')}{rng.randrange(100):02d}{rng.randrange(1, 13):02d}{dept}"
                f"{rng.randrange(1, 1000):03d}{rng.randrange(1, 1000):03d}")

    bodies = [body() for _ in range(4)] + [body("2A"), body("2B")]
    # Keys at both ends of the range: a one-digit key written 0X, and 97.
    candidates = (body() for _ in range(100_000))
    bodies.append(next(b for b in candidates if _nir_key(b) < 10))
    bodies.append(next(b for b in candidates if _nir_key(b) == 97))
    return bodies


VALID_NIRS = [(b, _nir_key(b)) for b in _nir_bodies()]


def _nir_texts(body13: str, key: int) -> list[str]:
    """Spaced anywhere, or unspaced after a context word."""
    b = body13
    return [f"carte vitale {b[0]} {b[1:3]} {b[3:5]} {b[5:7]} {b[7:10]} {b[10:13]} {key:02d}",
            f"numéro INSEE {b}{key:02d}"]


DNI_NUMBERS = [12345678, 50012345, 73180001, 4, 99999998]
NIE_NUMBERS = [("X", 1234567), ("Y", 7654321), ("Z", 1)]


def _nie_value(prefix: str, number: int) -> int:
    return "XYZ".index(prefix) * 10**7 + number


def test_valid_numbers_built_from_the_rules_are_flagged():
    for digits in VALID_CPFS:
        for text in _cpf_texts(digits):
            assert _has("national_id", text), text
    for number in DNI_NUMBERS:
        letter = _DNI_TABLE[number % 23]
        for text in (f"DNI {number:08d}{letter}", f"{number:08d}-{letter}"):
            assert _has("national_id", text), text
    for prefix, number in NIE_NUMBERS:
        letter = _DNI_TABLE[_nie_value(prefix, number) % 23]
        assert _has("national_id", f"NIE {prefix}{number:07d}{letter}")
    for body, key in VALID_NIRS:
        for text in _nir_texts(body, key):
            assert _has("national_id", text), text


@pytest.mark.parametrize("digits", VALID_CPFS)
def test_cpf_with_any_check_digit_changed_is_not_an_id(digits):
    for position in (9, 10):
        for value in "0123456789":
            if value == digits[position]:
                continue
            changed = digits[:position] + value + digits[position + 1:]
            for text in _cpf_texts(changed):
                assert not _has("national_id", text), text


@pytest.mark.parametrize("digits", VALID_CPFS)
def test_cpf_first_check_digit_is_checked_on_its_own(digits):
    # A wrong first check digit with a second one right for the digits as written: only
    # a check of the first digit itself refuses it.
    for value in "0123456789":
        if value == digits[9]:
            continue
        first10 = digits[:9] + value
        forged = first10 + _cpf_check_digit(first10)
        for text in _cpf_texts(forged):
            assert not _has("national_id", text), text


@pytest.mark.parametrize("number", DNI_NUMBERS)
def test_dni_with_any_other_letter_is_not_an_id(number):
    right = _DNI_TABLE[number % 23]
    for letter in _UPPER.replace(right, ""):
        for text in (f"DNI {number:08d}{letter}", f"{number:08d}-{letter}"):
            assert not _has("national_id", text), text


@pytest.mark.parametrize("prefix, number", NIE_NUMBERS)
def test_nie_with_any_other_letter_is_not_an_id(prefix, number):
    right = _DNI_TABLE[_nie_value(prefix, number) % 23]
    for letter in _UPPER.replace(right, ""):
        assert not _has("national_id", f"NIE {prefix}{number:07d}{letter}")


@pytest.mark.parametrize("body, key", VALID_NIRS)
def test_nir_with_any_other_key_is_not_an_id(body, key):
    for other in range(100):
        if other == key:
            continue
        for text in _nir_texts(body, other):
            assert not _has("national_id", text), text


# --------------------------------------------------------------------------- handles

@pytest.mark.parametrize("text", [
    "more on instagram.com/maria.silva",
    "https://www.instagram.com/maria_silva/",
    "https://m.facebook.com/hans.mueller",
    "twitter.com/jdoe",
    "https://x.com/jdoe/status/123",
    "tiktok.com/@maria",
    "vk.com/id12345",
    "linkedin.com/in/jane-doe",
    "IG: @maria.silva",
    "suivez-moi sur instagram @jean_pierre",
])
def test_personal_handle_found(text):
    assert _has("personal_handle_url", text)


@pytest.mark.parametrize("text", [
    "https://www.instagram.com/p/Bx1abc/",
    "instagram.com/explore/tags/food",
    "facebook.com/sharer.php?u=x",
    "https://twitter.com/intent/tweet",
    "tiktok.com/tag/food",
    "dropbox.com/files",
    "linkedin.com/company/acme",
    "Sale @ 50% off",
    "photo @ the beach",
])
def test_personal_handle_not_found(text):
    assert not _has("personal_handle_url", text)


# --------------------------------------------------------------------------- medical terms

@pytest.mark.parametrize("text", [
    "post-op day 3",
    "Post Op swelling",
    "postop photo",
    "rhinoplasty before and after",
    "#beforeandafter tummy tuck",
    "chest X-ray",
    "MRI of the knee",
    "melanoma on the back",
    "scars after surgery",
    "Narbe nach der OP",
    "Röntgenbild Hand",
    "RÖNTGEN Thorax",
    "cicatrice après une césarienne",
    "échographie du foie",
    "cicatriz después de la cirugía",
    "RADIOGRAFÍA de tórax",
    "pós-operatório",
    "pos operatorio",
    "Pós Operatório de abdominoplastia",
])
def test_medical_term_found(text):
    assert _has("medical_term", text)


@pytest.mark.parametrize("text", [
    "Summer 2019",
    "kitchen renovation",
    "scary movie night",  # "scar" inside a word
    "operator console",
    "the opera house",
    "Berlin Street Art",
    "Narbonne old town",
    "tumbler glass",
])
def test_medical_term_not_found(text):
    assert not _has("medical_term", text)


def test_every_listed_term_matches_itself_in_a_sentence():
    terms = load_caption_terms()
    for language, words in terms.medical_terms.items():
        for term in words:
            assert _has("medical_term", f"photo: {term} (2020)"), (language, term)


# --------------------------------------------------------------------------- names

@pytest.mark.parametrize("text", [
    "Dr. Müller rhinoplasty before and after",
    "Maria Silva pós-operatório",
    "patient John after surgery",
    "A photo of Anna Kowalski after her mastectomy",
    "Frau Schmidt: Narbe nach der OP",
    "Prof. Dr. med. Weber Brustvergrößerung",
    "Mme Dupont après rhinoplastie",
    "Sra. García antes y después de la cirugía",
    "paciente Ana Souza, cirurgia de catarata",
    "X-ray of the hand of Peter Krause",
])
def test_name_with_medical_term_found(text):
    flags = caption_flags(text)
    assert "name_with_medical_term" in flags and "medical_term" in flags


@pytest.mark.parametrize("text", [
    "Rhinoplasty before and after results",
    "Before And After Tummy Tuck Surgery Results",
    "Best plastic surgeon in Los Angeles",
    "Mayo Clinic cancer center",
    "post-op scar, 3 weeks",
    "MRI SCAN OF THE BRAIN",
    "Dr. Müller on holiday in Spain",  # a name but nothing medical
    "Maria Silva at the beach",
    "Maria Silva at the beach with her dog and two cats in the sun, next to the old "
    "hospital",  # too far apart
])
def test_name_with_medical_term_not_found(text):
    assert "name_with_medical_term" not in caption_flags(text)


def test_name_term_proximity_holds_among_many_names_and_terms():
    far_gap = " ".join(["and"] * (NAME_TERM_WINDOW + 1))
    far = " ".join(f"Maria Silva {far_gap} surgery {far_gap}" for _ in range(15))
    assert len(far) < MAX_CAPTION_CHARS
    assert caption_flags(far) == ["medical_term"]
    near_gap = " ".join(["and"] * (NAME_TERM_WINDOW - 1))
    assert "name_with_medical_term" in caption_flags(f"{far} John Smith {near_gap} surgery")
    assert "name_with_medical_term" in caption_flags(f"surgery {near_gap} John Smith {far}")


# --------------------------------------------------------------------------- long captions

def test_huge_caption_is_scanned_up_to_the_cap():
    # Scraped page text as a "caption": many names and terms, none near each other.
    gap = " ".join(["and"] * (NAME_TERM_WINDOW + 1))
    filler = f"Maria Silva {gap} surgery {gap} "
    text = "write to maria@example.com. " + filler * (100_000 // len(filler) + 1)
    assert len(text) > 100_000
    assert caption_flags(text) == ["email", "medical_term"]
    assert caption_flags_batch([text, text]) == [["email", "medical_term"]] * 2
    # What lies past the cap is not read.
    late = "a photo of a garden " * (MAX_CAPTION_CHARS // 10) + " write to maria@example.com"
    assert caption_flags(late) == []


def test_the_cap_does_not_cut_a_word_into_a_shorter_one():
    prefix = "and " * ((MAX_CAPTION_CHARS - 2) // 4)
    text = prefix + "scary movie night"  # the cap falls inside "scary": "scar" is medical
    assert len(prefix) < MAX_CAPTION_CHARS < len(prefix) + len("scary")
    assert caption_flags(text) == []
    assert caption_flags(prefix + "scar tissue") == ["medical_term"]
