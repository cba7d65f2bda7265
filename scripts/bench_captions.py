"""Benchmark the caption flags: microseconds of CPU per caption over a LAION-like mix.

    python scripts/bench_captions.py [--captions 50000] [--seed 0]

The mix is generated (no download) after what LAION captions look like: mostly ordinary
product, stock-photo and alt-text captions in the five covered languages, about a fifth
with numbers (sizes, prices, years, model and order numbers, dates), a few with medical
words and names, and about 2% with personal data (e-mail, phones, identity, tax, health,
bank and card numbers, dates of birth and life spans). Every caption is distinct, so no
scan is saved by `caption_flags_batch`'s de-duplication. Reports CPU µs per caption (user + sys of this
single-threaded process, robust to a shared machine) for the whole mix and for each part,
and, as the peer, the cost floor every caption pays anyway: folding the text once
(`fold_text`) and one pre-compiled search over it.
"""
from __future__ import annotations

import argparse
import random
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transforms.caption_terms import fold_text  # noqa: E402
from transforms.captions import default_scanner  # noqa: E402

ADJECTIVES = ["vintage", "modern", "rustic", "elegant", "cute", "minimalist", "luxury", "colorful",
              "handmade", "wooden", "floral", "abstract", "classic", "cozy", "bright", "schöne",
              "élégant", "moderno", "bonito", "clássico", "neue", "petite", "grande", "antiguo"]
NOUNS = ["living room", "wedding dress", "coffee table", "mountain landscape", "summer dress",
         "kitchen design", "garden party", "leather bag", "city skyline", "beach sunset",
         "birthday cake", "wall art", "running shoes", "oak bookshelf", "sofa bed", "t-shirt",
         "Hochzeitskleid", "Wohnzimmer", "robe de soirée", "cuisine moderne", "vestido de noche",
         "casa de campo", "sapatos femininos", "decoração de sala", "Küche", "jardin"]
PLACES = ["in Paris", "at the beach", "on white background", "for sale", "with flowers",
          "in the forest", "near the lake", "in Berlin", "à Lyon", "en Madrid", "em Lisboa",
          "stock photo", "illustration", "vector icon", "royalty free", "clipart", "HD wallpaper"]
BRANDS = ["Nike", "IKEA", "Samsung Galaxy", "Canon EOS", "Apple iPhone", "Zara", "H&M", "Bosch"]


def ordinary(rng: random.Random) -> str:
    parts = [rng.choice(ADJECTIVES), rng.choice(NOUNS), rng.choice(PLACES)]
    if rng.random() < 0.4:
        parts.append(f"- {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} ideas")
    if rng.random() < 0.3:
        parts.insert(0, rng.choice(BRANDS))
    text = " ".join(parts)
    return text.title() if rng.random() < 0.3 else text.capitalize()


def with_numbers(rng: random.Random) -> str:
    base = ordinary(rng)
    number = rng.choice([
        lambda: f"{rng.randrange(1990, 2025)}",
        lambda: f"{rng.choice([1920, 1280, 3840])}x{rng.choice([1080, 720, 2160])}",
        lambda: f"${rng.randrange(5, 999)}.{rng.randrange(100):02d}",
        lambda: f"{rng.randrange(10, 300)} x {rng.randrange(10, 300)} cm",
        lambda: f"size {rng.randrange(34, 48)}",
        lambda: f"SKU {rng.randrange(10**5, 10**8)}",
        lambda: f"order #{rng.randrange(10**6, 10**9)}",
        lambda: f"{rng.randrange(2000, 2025)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}",
        lambda: f"{rng.randrange(1, 29):02d}.{rng.randrange(1, 13):02d}.{rng.randrange(2000, 2025)}",
        lambda: f"{rng.randrange(1, 99)}% off",
        lambda: f"iPhone {rng.randrange(6, 16)} Pro {rng.choice([64, 128, 256])}GB",
        lambda: f"ISBN 978-{rng.randrange(10)}-{rng.randrange(100, 999)}-{rng.randrange(10**4, 10**5)}-{rng.randrange(10)}",
        lambda: f"{rng.randrange(1, 9)},{rng.randrange(100, 999)},{rng.randrange(100, 999)} views",
        lambda: f"Preis {rng.randrange(100, 999)}.{rng.randrange(100, 999)}.000 VND",
    ])()
    return f"{base} {number}" if rng.random() < 0.7 else f"{number} {base}"


def medical(rng: random.Random) -> str:
    term = rng.choice(["rhinoplasty before and after", "post-op scar", "chest x-ray",
                       "cicatriz después de la cirugía", "Narbe nach der OP", "pós-operatório",
                       "échographie", "tummy tuck results"])
    name = rng.choice(["", "Dr. Müller ", "Maria Silva ", "patient Anna ", ""])
    return f"{name}{term} {rng.choice(PLACES)}"


def personal(rng: random.Random) -> str:
    return rng.choice([
        lambda: f"contact maria.silva{rng.randrange(999)}@example.com for prints",
        lambda: f"Call (212) 736-{rng.randrange(1000, 9999)} today",
        lambda: f"Telefone: 21{rng.randrange(1, 9)} {rng.randrange(100, 999)} {rng.randrange(100, 999)}",
        lambda: f"+49 151 {rng.randrange(10**7, 10**8)}",
        lambda: f"SSN {rng.randrange(100, 665)}-{rng.randrange(10, 99)}-{rng.randrange(1000, 9999)}",
        lambda: "IBAN DE89 3704 0044 0532 0130 00",
        lambda: "card 4111 1111 1111 1111 exp 12/27",
        lambda: f"Maria Silva, born {rng.randrange(1, 28)} May {rng.randrange(1950, 2005)}",
        lambda: f"geboren am {rng.randrange(1, 28)}.{rng.randrange(1, 12)}.{rng.randrange(1950, 2005)}",
        lambda: f"Frida Kahlo ({rng.randrange(1, 28)} July {rng.randrange(1850, 1950)} – "
                f"{rng.randrange(1, 28)} July {rng.randrange(1960, 2020)})",
        lambda: f"Kate Middleton * {rng.randrange(1, 28)}.{rng.randrange(1, 12)}.{rng.randrange(1950, 2005)}",
        lambda: "NIF 123456789 fatura",
        lambda: "CPF 529.982.247-25",
        lambda: f"{rng.randrange(10, 999)} Baker Street, London",
    ])()


PARTS = (("ordinary", ordinary, 0.70), ("numbers", with_numbers, 0.20),
         ("medical", medical, 0.08), ("personal", personal, 0.02))


def make_mix(count: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out, seen = [], set()
    names, makers, weights = zip(*PARTS)
    while len(out) < count:
        i = rng.choices(range(len(PARTS)), weights)[0]
        text = makers[i](rng)
        if rng.random() < 0.5:  # distinct captions, as a row id or a word would make them
            text = f"{text} {rng.choice(NOUNS)} {len(out)}" if i == 1 else f"{text} #{rng.choice(NOUNS)}"
        if text in seen:
            continue
        seen.add(text)
        out.append((names[i], text))
    return out


def cpu_us(func, texts: list[str], repeats: int = 3) -> float:
    """Best of ``repeats`` CPU times (user + sys) per caption, in µs."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()  # user + sys CPU of this process
        for text in texts:
            func(text)
        best = min(best, (time.process_time() - start) / len(texts))
    return best * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    mix = make_mix(args.captions, args.seed)
    texts = [text for _, text in mix]
    scanner = default_scanner()
    for text in texts[:2000]:  # warm: patterns compiled, stdnum / phonenumbers metadata read
        scanner.flags(text)
    flagged = sum(1 for text in texts if scanner.flags(text))
    floor_pattern = re.compile(r"\d[\d\s().\-/]{4,}\d")

    def floor(text: str) -> None:
        floor_pattern.search(fold_text(text))

    total = cpu_us(scanner.flags, texts)
    peer = cpu_us(floor, texts)
    print(f"captions: {len(texts)} (distinct), flagged: {flagged} ({flagged / len(texts):.1%}); "
          "CPU time of this process, machine shared")
    print(f"flags, typical mix:        {total:7.2f} µs per caption")
    for name, _, share in PARTS:
        part = [text for kind, text in mix if kind == name]
        print(f"  {name:<10} ({share:4.0%}):     {cpu_us(scanner.flags, part):7.2f} µs per caption")
    print(f"peer, fold + one search:   {peer:7.2f} µs per caption  (flags / peer = {total / peer:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
