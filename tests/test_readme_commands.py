"""Every command README.md shows works, or is checked to be valid:

- `laion-audit run ...` runs with `--dry-run` (placeholders such as ROWS.parquet and OUT
  made real in a temporary folder); a `$ laion-audit ...` line prints what README says;
- `laion-audit request ...` runs, on a photo made for it;
- `laion-audit apply / rematch / report ...` need an audit's outputs: their arguments are
  parsed by the CLI's own parser, and every config file they name exists;
- `make TARGET` is a target (`make -n` succeeds);
- `python scripts/X.py ...` names a script that compiles and knows every flag given
  (scripts are not run: benchmarks take minutes);
- a command named inline in the prose names a real subcommand, target or script.
"""
from __future__ import annotations

import os
import py_compile
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipelines.cli import build_parser

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")
STARTS = ("laion-audit ", "$ laion-audit ", "make ", "python ", ".venv/bin/python ", "scripts/sandbox.sh ")


def block_commands(text: str) -> list[tuple[str, str | None]]:
    """(command, the line after it) for each command line of an indented code block;
    lines ending in a backslash are joined with the next."""
    lines = text.splitlines()
    found, i = [], 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        indented = line.startswith("    ") and (i == 0 or not lines[i - 1].strip() or lines[i - 1].startswith("    "))
        if indented and stripped.startswith(STARTS):
            command = stripped
            while command.endswith("\\") and i + 1 < len(lines):
                i += 1
                command = command[:-1].rstrip() + " " + lines[i].strip()
            after = lines[i + 1].strip() if i + 1 < len(lines) else None
            found.append((command, after))
        i += 1
    return found


def inline_commands(text: str) -> list[str]:
    spans = re.findall(r"`([^`\n]+)`", text)
    return [s for s in spans if s.startswith(STARTS) and " / " not in s]


BLOCKS = block_commands(README)
INLINE = inline_commands(README)


def test_readme_first_lines_are_the_two_setup_commands():
    first = [line.strip() for line in README.splitlines()[1:6] if line.strip()]
    assert first[0].startswith("make demo") and first[1].startswith("make test")


def test_readme_first_screen_goes_demo_test_audit_request_apply():
    screen = README[: README.index("\n## ")]
    steps = ["make demo", "make test", "laion-audit run", "laion-audit request", "laion-audit apply"]
    places = [screen.index(step) for step in steps]
    assert places == sorted(places)


def test_readme_shows_commands_of_every_kind():
    kinds = {shlex.split(c.lstrip("$ "), comments=True)[0] for c, _ in BLOCKS}
    assert {"laion-audit", "make", ".venv/bin/python"} <= kinds
    assert len(BLOCKS) >= 12


def _words(command: str) -> list[str]:
    command = re.sub(r"\[[^\]]*\]", "", command)  # [--set KEY=VALUE ...]: optional, left out
    return shlex.split(command.lstrip("$ "), comments=True)


@pytest.fixture(scope="module")
def placeholders(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("readme")
    rows = tmp / "ROWS.parquet"
    pq.write_table(pa.table({"URL": ["http://a.example/1.jpg"], "TEXT": ["a caption"]}), rows)
    Image.effect_noise((96, 96), 50).convert("RGB").save(tmp / "my_photo.jpg")
    return {"tmp": tmp, "ROWS.parquet": str(rows), "OUT": str(tmp / "OUT")}


def _real(word: str, places: dict) -> str:
    for name in ("ROWS.parquet", "OUT"):
        word = re.sub(rf"(?<![\w/]){re.escape(name)}(?![\w.])", places[name], word)
    return word


def _cli(words: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "LAION_AUDIT_LOG_DIR": str(cwd / "logs") if cwd != REPO else os.environ.get(
        "LAION_AUDIT_LOG_DIR", "")}
    env = {k: v for k, v in env.items() if v}
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *words], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env=env)


@pytest.mark.parametrize("command, after", [b for b in BLOCKS if b[0].lstrip("$ ").startswith("laion-audit")],
                         ids=lambda v: (v or "")[:60])
def test_laion_audit_commands(command, after, placeholders):
    words = _words(command)[1:]
    parsed = build_parser().parse_args(words)  # SystemExit (a bad flag) fails the test
    for word in words:
        if word.startswith("configs/"):
            assert (REPO / word).is_file(), word
    if command.startswith("$ "):  # a shown session: the next line is what it prints
        proc = _cli(words)
        assert proc.stderr.strip() == after and proc.returncode == 2
    elif parsed.command == "run":
        real = [_real(w, placeholders) for w in words]
        if "--dry-run" not in real:
            real.append("--dry-run")
        proc = _cli(real)
        assert proc.returncode == 0, proc.stderr
    elif parsed.command == "request":
        out = placeholders["tmp"] / "request"
        out.mkdir(exist_ok=True)
        (out / "my_photo.jpg").write_bytes((placeholders["tmp"] / "my_photo.jpg").read_bytes())
        proc = _cli(words, cwd=out)
        assert proc.returncode == 0, proc.stderr
        assert (out / parsed.out).is_file()


def _targets() -> set[str]:
    return set(re.findall(r"^([a-z][\w-]*):", (REPO / "Makefile").read_text(), re.M))


@pytest.mark.parametrize("command", sorted({c for c, _ in BLOCKS if c.startswith("make ")} |
                                           {c for c in INLINE if c.startswith("make ")}))
def test_make_commands(command):
    target = _words(command)[1]
    assert target in _targets()
    assert subprocess.run(["make", "-n", target], cwd=REPO, capture_output=True).returncode == 0


def _script_commands() -> list[str]:
    shown = [c for c, _ in BLOCKS] + INLINE
    return sorted({c for c in shown if c.startswith(("python ", ".venv/bin/python ", "scripts/sandbox.sh "))})


@pytest.mark.parametrize("command", _script_commands())
def test_script_commands(command):
    words = _words(command)
    if words[0] == "scripts/sandbox.sh":
        assert (REPO / "scripts/sandbox.sh").is_file()
        words = words[1:]
        assert words[0] == ".venv/bin/python"
    args = words[1:]
    if args[:2] == ["-m", "pytest"]:
        for path in (a for a in args if a.startswith("tests/")):
            assert (REPO / path).is_file(), path
        return
    script = REPO / args[0]
    assert script.is_file(), args[0]
    py_compile.compile(str(script), doraise=True)
    source = script.read_text()
    for flag in (a.split("=", 1)[0] for a in args[1:] if a.startswith("--")):
        assert f'"{flag}"' in source or f"'{flag}'" in source, (args[0], flag)


def test_inline_laion_audit_commands_name_real_subcommands():
    commands = set(build_parser()._subparsers._group_actions[0].choices)
    named = [_words(c)[1] for c in INLINE if c.startswith("laion-audit ")]
    assert named and set(named) <= commands | {"--help"}
