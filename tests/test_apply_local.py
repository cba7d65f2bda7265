"""`laion-audit apply` on a local run cleans in its own process, without Beam, and writes
what the Beam pipeline writes: the same files, rows, schema and counts, on parquet (plain,
dictionary-encoded and large_string URL columns), CSV, JSONL and gzipped TSV, with null,
blank and odd URLs, a file that loses no row and one that loses all.

The expected rows come from this file's own list of normalisation cases and hashlib, not
from the code under test."""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.apply import IN_PROCESS_RUNNERS, plan_apply, run_apply, runs_in_process
from pipelines.cli import _input_error_in, main
from pipelines.config import RunnerConfig
from transforms.dataset_files import DatasetError, DatasetSpec, match_local

ROOT = Path(__file__).resolve().parent.parent

# (as a dataset spells it, its one spelling): what the published hash is taken of. A
# string that is no URL is hashed as given, stripped.
CASES = [
    ("https://img.example.com/a/1.jpg", "https://img.example.com/a/1.jpg"),
    ("https://IMG.Example.COM/a/2.jpg", "https://img.example.com/a/2.jpg"),
    ("https://img.example.com:443/a/3.jpg", "https://img.example.com/a/3.jpg"),
    ("http://img.example.com:80/a/4.jpg", "http://img.example.com/a/4.jpg"),
    ("https://img.example.com/a/5.jpg#top", "https://img.example.com/a/5.jpg"),
    ("HTTPS://img.example.com/a/6.jpg?x=1", "https://img.example.com/a/6.jpg?x=1"),
    ("https://img.example.com", "https://img.example.com/"),
    ("  https://img.example.com/a/7.jpg\t", "https://img.example.com/a/7.jpg"),
    ("https://img.example.com/a/8.jpg?", "https://img.example.com/a/8.jpg"),
    ("https://bücher.example/a/9.jpg", "https://xn--bcher-kva.example/a/9.jpg"),
    ("https://img.example.com/é/10.jpg", "https://img.example.com/é/10.jpg"),
    ("https://img.example.com:8443/a/11.jpg", "https://img.example.com:8443/a/11.jpg"),
    ("not a url", "not a url"),
]
BLANK = [None, "", "   "]  # never dropped, whatever the list holds
KEPT_CASES = {1, 4, 7, 11}  # indexes of CASES whose URL is not on the list


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _removed_urls() -> set[str]:
    return {spelled for i, (spelled, _) in enumerate(CASES) if i not in KEPT_CASES}


def _kept(url) -> bool:
    return url not in _removed_urls()


def _published(folder: Path) -> Path:
    published = folder / "published"
    published.mkdir(parents=True)
    hashes = [_digest(normal) for i, (_, normal) in enumerate(CASES) if i not in KEPT_CASES]
    hashes[0] = hashes[0].upper()  # a list published in uppercase hex still matches
    hashes += [_digest(""), _digest("   ".strip()), "not a hash", _digest("https://elsewhere.example/x.jpg")]
    pq.write_table(pa.table({"url_sha256": hashes, "row_key": [f"k{i}" for i in range(len(hashes))]}),
                   published / "part-00000.parquet")
    return published


def _urls(n: int) -> list:
    """n URLs cycling through the cases and blanks, the first removed one late (row 9),
    so the first batches scanned drop nothing."""
    pool = [spelled for spelled, _ in CASES] + BLANK
    head = [f"https://ok.example/{i}.jpg" for i in range(9)]
    return (head + [pool[(i * 7) % len(pool)] for i in range(n)])[:n]


def _table(urls: list, url_type=pa.string()) -> pa.Table:
    n = len(urls)
    table = pa.table({
        "URL": pa.array(urls, pa.string()).cast(url_type) if not pa.types.is_dictionary(url_type)
        else pa.array(urls, pa.string()).dictionary_encode(),
        "TEXT": pa.array([f"t{i}" for i in range(n)], pa.string()),
        "WIDTH": pa.array(range(n), pa.int32()),
        "similarity": pa.array([i / 10 for i in range(n)], pa.float64()),
        "tags": pa.array([[f"x{i}"] * (i % 3) for i in range(n)], pa.list_(pa.string())),
    })
    return table.replace_schema_metadata({"made_by": "a dataset maintainer"})


def _dataset(folder: Path) -> dict[str, list]:
    """Every input file, with the URLs of its rows in order."""
    data = folder / "data"
    data.mkdir(parents=True)
    files: dict[str, list] = {}
    urls = _urls(60)
    files["mixed.parquet"] = urls
    pq.write_table(_table(urls), data / "mixed.parquet", row_group_size=16)
    files["dict.parquet"] = urls[::-1]
    pq.write_table(_table(urls[::-1], pa.dictionary(pa.int32(), pa.string())), data / "dict.parquet")
    assert pa.types.is_dictionary(pq.read_schema(data / "dict.parquet").field("URL").type)
    files["large.parquet"] = urls[5:]
    pq.write_table(_table(urls[5:], pa.large_string()), data / "large.parquet")
    files["keep.parquet"] = [u for u in urls if _kept(u)]
    pq.write_table(_table(files["keep.parquet"]), data / "keep.parquet", row_group_size=7)
    files["gone.parquet"] = [u for u in urls if u is not None and not _kept(u)]
    pq.write_table(_table(files["gone.parquet"]), data / "gone.parquet")
    text_urls = [u for u in urls if u is not None and "\t" not in u]
    files["rows.csv"] = text_urls
    with open(data / "rows.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["URL", "TEXT"])
        writer.writerows([u, f"caption, {i}"] for i, u in enumerate(text_urls))
    files["rows.jsonl"] = urls
    (data / "rows.jsonl").write_text("".join(json.dumps({"URL": u, "TEXT": i}) + "\n" for i, u in enumerate(urls)),
                                     encoding="utf-8")
    files["rows.tsv.gz"] = text_urls
    with gzip.open(data / "rows.tsv.gz", "wt", encoding="utf-8", newline="") as handle:
        handle.write("URL\tTEXT\n" + "".join(f"{u}\tc{i}\n" for i, u in enumerate(text_urls)))
    return files


def _urls_of(path: Path) -> list:
    name = path.name
    if name.endswith(".parquet"):
        return pq.read_table(path).column("URL").to_pylist()
    if name.endswith(".jsonl"):
        return [json.loads(line)["URL"] for line in path.read_text(encoding="utf-8").splitlines()]
    raw = gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8")), delimiter="\t" if ".tsv" in name else ","))
    return [row[0] for row in rows[1:]]


def _content(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()


@pytest.fixture(scope="module")
def cleaned(tmp_path_factory):
    """The same dataset cleaned both ways: here, and by the Beam pipeline (FnApiRunner)."""
    tmp = tmp_path_factory.mktemp("apply_local")
    published = _published(tmp)
    files = _dataset(tmp)
    inputs = [str(tmp / "data" / "*")]
    spec = DatasetSpec(read_batch_rows=4)
    counts = {way: run_apply(str(published), inputs, str(tmp / way), spec, in_process=(way == "here"))
              for way in ("here", "beam")}
    return {"tmp": tmp, "files": files, "counts": counts}


def test_both_ways_keep_the_rows_whose_normalised_url_is_not_listed(cleaned):
    for way in ("here", "beam"):
        for name, urls in cleaned["files"].items():
            assert _urls_of(cleaned["tmp"] / way / name) == [u for u in urls if _kept(u)], (way, name)
    dropped = sum(len(urls) - sum(map(_kept, urls)) for urls in cleaned["files"].values())
    kept = sum(sum(map(_kept, urls)) for urls in cleaned["files"].values())
    assert dropped > 50 and kept > 50
    assert cleaned["counts"]["here"] == cleaned["counts"]["beam"] == {
        "files": len(cleaned["files"]), "rows_kept": kept, "rows_dropped": dropped}


def test_both_ways_write_the_same_bytes_rows_and_schema(cleaned):
    here, beam = cleaned["tmp"] / "here", cleaned["tmp"] / "beam"
    assert sorted(os.listdir(here)) == sorted(os.listdir(beam)) == sorted(cleaned["files"])
    for name in cleaned["files"]:
        assert _content(here / name) == _content(beam / name), name
        if name.endswith(".parquet"):
            source = pq.read_table(cleaned["tmp"] / "data" / name)
            out = pq.read_table(here / name)
            assert out.schema.equals(source.schema, check_metadata=True), name
            keep = [_kept(u) for u in source.column("URL").to_pylist()]
            assert out.equals(source.filter(pa.array(keep))), name


def test_a_parquet_file_that_loses_no_row_is_its_input_byte_for_byte(cleaned):
    source = (cleaned["tmp"] / "data" / "keep.parquet").read_bytes()
    assert (cleaned["tmp"] / "here" / "keep.parquet").read_bytes() == source
    # and a file that loses all its rows is still a parquet file of the same schema
    gone = pq.read_table(cleaned["tmp"] / "here" / "gone.parquet")
    assert gone.num_rows == 0 and gone.schema.equals(pq.read_schema(cleaned["tmp"] / "data" / "gone.parquet"))


def _cli_apply(tmp: Path, *extra: str) -> list[str]:
    return ["apply", "--removals", str(tmp / "published"), "--input", str(tmp / "data" / "*.parquet"),
            "--out", str(tmp / "cli"), *extra]


def test_the_cli_applies_a_local_run_without_importing_beam(cleaned):
    script = ("import sys\nfrom pipelines.cli import main\ncode = main(sys.argv[1:])\n"
              "print('beam imported' if any(m.split('.')[0] == 'apache_beam' for m in sys.modules) else 'no beam')\n"
              "sys.exit(code)\n")
    done = subprocess.run([sys.executable, "-c", script, *_cli_apply(cleaned["tmp"])], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    parquet = {n: u for n, u in cleaned["files"].items() if n.endswith(".parquet")}
    kept = sum(sum(map(_kept, urls)) for urls in parquet.values())
    dropped = sum(len(urls) for urls in parquet.values()) - kept
    assert lines == [f"cleaned {len(parquet)} file(s) into {cleaned['tmp'] / 'cli'}: kept {kept} rows, "
                     f"dropped {dropped}", "no beam"]


def test_a_url_column_that_is_not_text_is_one_line_naming_the_file(tmp_path, capsys):
    published = _published(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    bad = data / "numbers.parquet"
    pq.write_table(pa.table({"URL": pa.array([1, 2, 3], pa.int64()), "TEXT": ["a", "b", "c"]}), bad)
    code = main(["apply", "--removals", str(published), "--input", str(bad), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == f"laion-audit: input error: dataset.url_col: column 'URL' in {bad} holds int64, not text"
    # The Beam pipeline fails on the same line (the in-memory runner re-raises it, with
    # the step's name after it; a worker process's is read back from its traceback).
    with pytest.raises(Exception) as failure:
        run_apply(str(published), [str(bad)], str(tmp_path / "beam"), DatasetSpec(), in_process=False)
    said = _input_error_in(failure.value) or str(failure.value)
    assert said.startswith(err.removeprefix("laion-audit: input error: "))


def test_a_broken_parquet_file_or_published_list_is_one_line(tmp_path, capsys):
    published = _published(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    good = data / "a.parquet"
    pq.write_table(_table(_urls(20)), good)
    broken = data / "b.parquet"
    broken.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    args = ["apply", "--removals", str(published), "--input", str(good), str(broken), "--out", str(tmp_path / "o")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"laion-audit: input error: {broken}: not a readable parquet file")
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    pq.write_table(pa.table({"sha": ["0" * 64]}), wrong / "part-0.parquet")
    assert main(["apply", "--removals", str(wrong), "--input", str(good), "--out", str(tmp_path / "o2")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"laion-audit: config error: --removals: {wrong / 'part-0.parquet'} has no url_sha256 column (columns: sha)")


def test_only_a_local_runner_with_local_paths_runs_here(tmp_path):
    from pipelines.runners import LOCAL_RUNNERS

    assert IN_PROCESS_RUNNERS == LOCAL_RUNNERS
    published = _published(tmp_path)
    (tmp_path / "data").mkdir()
    pq.write_table(_table(_urls(5)), tmp_path / "data" / "a.parquet")
    plan = plan_apply(str(published), [str(tmp_path / "data" / "a.parquet")], str(tmp_path / "o"), DatasetSpec())
    assert runs_in_process(RunnerConfig(), plan)
    assert runs_in_process(RunnerConfig(name="DirectRunner", options={"direct_num_workers": 1}), plan)
    assert not runs_in_process(RunnerConfig(name="DataflowRunner"), plan)
    assert not runs_in_process(RunnerConfig(name="PortableRunner"), plan)
    multi = {"direct_running_mode": "multi_processing", "direct_num_workers": 2}
    assert not runs_in_process(RunnerConfig(options=multi), plan)
    import dataclasses

    assert not runs_in_process(RunnerConfig(), dataclasses.replace(plan, out_dir="gs://bucket/clean"))
    assert not runs_in_process(RunnerConfig(), dataclasses.replace(plan, paths=["s3://bucket/a.parquet"]))


PATTERNS = ["d/*.parquet", "d/*", "d/**", "d/**.csv", "d/sub/*", "d/?.csv", "d/[ab].csv", "d/[!a].csv", "d/",
            "d/a.csv", "d/none*", "d", "nowhere/*", "d/sub", "*.csv", "d/.hidden*", "d/[a"]


@pytest.mark.parametrize("absolute", [False, True])
def test_local_globs_match_what_beam_matches(tmp_path, monkeypatch, absolute):
    from apache_beam.io.filesystems import FileSystems

    for name in ("a.csv", "b.csv", "c.parquet", ".hidden.csv", "sub/x.csv", "sub/deeper/y.parquet", "[a"):
        (tmp_path / "d" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "d" / name).write_text("URL\n")
    (tmp_path / "top.csv").write_text("URL\n")
    monkeypatch.chdir(tmp_path)
    for pattern in PATTERNS:
        pattern = str(tmp_path / pattern) + ("/" if pattern.endswith("/") else "") if absolute else pattern
        beam = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
        assert sorted(match_local(pattern)) == beam, pattern


def test_dataset_error_is_the_read_stage_one():
    from transforms.read import DatasetError as ReadError

    assert ReadError is DatasetError


def test_no_cleaned_file_is_written_over_any_file_the_run_reads(tmp_path, capsys):
    from pipelines.config import ConfigError

    published = _published(tmp_path)
    first, second = tmp_path / "r" / "x.parquet", tmp_path / "r" / "o" / "x.parquet"
    second.parent.mkdir(parents=True)
    pq.write_table(_table(_urls(12)), first)
    pq.write_table(_table([f"https://ok.example/b{i}.jpg" for i in range(5)]), second)
    before = second.read_bytes()
    # The base names collide, so the files are named below r/: x.parquet and o/x.parquet,
    # and x.parquet's cleaned copy would be r/o/x.parquet, the second input.
    args = ["apply", "--removals", str(published), "--input", str(first), str(second), "--out", str(second.parent)]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == (
        f"laion-audit: config error: --out: the cleaned copy of '{first}' would overwrite the input '{second}'")
    for in_process in (True, False):  # the check is made before either way runs
        with pytest.raises(ConfigError, match="would overwrite the input"):
            run_apply(str(published), [str(first), str(second)], str(second.parent), DatasetSpec(),
                      in_process=in_process)
    assert second.read_bytes() == before and not (second.parent / "o").exists()
    # A hard link to another input, already where a cleaned copy goes.
    out = tmp_path / "out"
    out.mkdir()
    os.link(second, out / "y.parquet")
    other = tmp_path / "s" / "y.parquet"
    other.parent.mkdir()
    pq.write_table(_table(_urls(3)), other)
    with pytest.raises(ConfigError, match=re.escape(f"cleaned copy of '{other}' would overwrite the input '{second}'")):
        plan_apply(str(published), [str(second), str(other)], str(out), DatasetSpec())
    # Nor the published list: a data file named like its part, cleaned into its folder.
    part = tmp_path / "d" / "part-00000.parquet"
    part.parent.mkdir()
    pq.write_table(_table(_urls(3)), part)
    published_part = published / "part-00000.parquet"
    said = f"cleaned copy of '{part}' would overwrite the input '{published_part}'"
    with pytest.raises(ConfigError, match=re.escape(said)):
        plan_apply(str(published), [str(part)], str(published), DatasetSpec())
    plan = plan_apply(str(published), [str(first), str(second)], str(tmp_path / "clean"), DatasetSpec())
    assert sorted(plan.sources.values()) == ["o/x.parquet", "x.parquet"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (every write: no space left)")
def test_a_failed_write_of_a_copied_file_names_the_output(tmp_path):
    from transforms.clean import clean_file, drop_by_url_sha256

    source = tmp_path / "keep.parquet"
    pq.write_table(_table([f"https://ok.example/{i}.jpg" for i in range(50)]), source)
    out = tmp_path / "out" / "keep.parquet"
    out.parent.mkdir()
    out.symlink_to("/dev/full")  # opens, then refuses every write (ENOSPC)
    rule = drop_by_url_sha256([_digest("https://elsewhere.example/x.jpg")])  # no row dropped: a byte copy
    with pytest.raises(OSError) as failure:
        clean_file(str(source), "keep.parquet", str(out), DatasetSpec(), rule)
    assert str(failure.value) == f"{out}: cannot be written (No space left on device)"
    assert not isinstance(failure.value, DatasetError)  # not blamed on the input
