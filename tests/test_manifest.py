"""The run manifest (report/manifest.json): written with every audit and rematch, read
back as written, and what `rematch` takes the audit's settings from."""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from pipelines.cli import main
from pipelines.config import load_config
from pipelines.manifest import (
    MANIFEST_VERSION,
    DatasetInfo,
    ListFile,
    ManifestError,
    ModelInfo,
    PolicyInfo,
    RunManifest,
    config_sha256,
    list_files,
    package_version,
    read_manifest,
)
from pipelines.rematch import plan_rematch, run_rematch
from tests.conftest import laion_table
from transforms.takedown import TakedownEntry, TakedownListError, write_list

N_ROWS = 10
LISTED = {2, 7}  # rows whose URL the takedown list names


def _manifest(**changes) -> RunManifest:
    manifest = RunManifest(
        kind="audit", rematch_of=None, inputs=["/data/part-0.parquet", "gs://bucket/part-1.parquet"],
        dataset=DatasetInfo("URL", "TEXT", "SAMPLE_ID", "parquet"),
        thresholds={"pdq": 20.0, "phash": 8.0, "clip": 0.9},
        policy=PolicyInfo(["child and nudity"], ["email"], ["child", "email", "nudity"]),
        model=ModelInfo("ViT-B-32", "random weights", None),
        takedown_lists=[ListFile("/lists/a.csv", "ab" * 32)],
        config_sha256="cd" * 32, laion_audit_version="0.1.0", written_at="2025-01-01T00:00:00+00:00",
    )
    return dataclasses.replace(manifest, **changes)


def test_a_manifest_round_trips():
    manifest = _manifest()
    text = manifest.to_json()
    assert json.loads(text)["manifest_version"] == MANIFEST_VERSION
    assert RunManifest.from_json(text) == manifest
    rematch = _manifest(kind="rematch", rematch_of="/runs/audit", model=ModelInfo())
    assert RunManifest.from_json(rematch.to_json()) == rematch


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(extra=1), "unknown field 'extra'"),
    (lambda d: d["policy"].update(keep_if=[]), "unknown field 'policy.keep_if'"),
    (lambda d: d.pop("thresholds"), "field 'thresholds' is missing"),
    (lambda d: d["dataset"].pop("url_col"), "field 'dataset.url_col' is missing"),
    (lambda d: d.pop("manifest_version"), "manifest_version missing"),
    (lambda d: d.update(manifest_version=99), "manifest_version 99"),
    (lambda d: d.update(kind="apply"), "field 'kind' is 'apply'"),
    (lambda d: d["thresholds"].update(pdq="near"), "field 'thresholds.pdq' must be float"),
])
def test_an_unknown_or_missing_field_is_one_line_naming_the_file(change, message):
    data = json.loads(_manifest().to_json())
    change(data)
    with pytest.raises(ManifestError) as caught:
        RunManifest.from_json(json.dumps(data), source="/runs/a/report/manifest.json")
    text = str(caught.value)
    assert text.startswith("/runs/a/report/manifest.json: ") and message in text and "\n" not in text


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """Two fetch-off audits of one dataset whose configs differ by one --set override."""
    tmp = tmp_path_factory.mktemp("manifest")
    urls = [f"http://img.example/{i}.jpg" for i in range(N_ROWS)]
    captions = [f"write to ana{i}@example.com" if i % 3 == 0 else f"a beach {i}" for i in range(N_ROWS)]
    dataset = tmp / "rows.parquet"
    pq.write_table(laion_table(urls, captions), dataset)
    takedown = tmp / "takedown.csv"
    write_list([TakedownEntry("requests", f"e{i}", "url", urls[i]) for i in sorted(LISTED)], str(takedown))
    config = tmp / "config.yaml"
    config.write_text(yaml.safe_dump({
        "dataset": {"input": os.path.relpath(dataset), "id_col": "SAMPLE_ID"},
        "output": {"path": str(tmp / "out")},
        "fetch": {"enabled": False},
        "takedown": {"lists": [str(takedown)]},
        "runner": {"name": "FnApiRunner"},
    }))
    sets = {"a": ["--set", "policy.review_if=[email]", "--set", "takedown.pdq_max_distance=20"],
            "b": ["--set", "policy.review_if=[email]", "--set", "takedown.pdq_max_distance=21"]}
    outs = {}
    for name, overrides in sets.items():
        outs[name] = tmp / name
        assert main(["run", str(config), *overrides, "--set", f"output.path={outs[name]}"]) == 0
    return {"tmp": tmp, "config": config, "dataset": dataset, "takedown": takedown, "outs": outs, "sets": sets}


def _read(out: Path) -> dict:
    return json.loads((out / "report" / "manifest.json").read_text())


def test_an_audit_writes_its_manifest(audited):
    out = audited["outs"]["a"]
    manifest = read_manifest(str(out))
    assert manifest.kind == "audit" and manifest.rematch_of is None
    assert manifest.inputs == [str(audited["dataset"].resolve())]  # the config names it relative
    assert manifest.dataset == DatasetInfo("URL", "TEXT", "SAMPLE_ID", None)
    assert manifest.thresholds["pdq"] == 20 and manifest.thresholds["phash"] == 8
    assert (manifest.policy.remove_if, manifest.policy.review_if) == ([], ["email"])
    assert "email" in manifest.policy.names
    assert manifest.model == ModelInfo(None, None, None)
    takedown = audited["takedown"]
    assert manifest.takedown_lists == [ListFile(str(takedown), hashlib.sha256(takedown.read_bytes()).hexdigest())]
    assert manifest.laion_audit_version == package_version() != "unknown"
    written = dt.datetime.fromisoformat(manifest.written_at)
    assert written.tzinfo is not None and abs(dt.datetime.now(dt.timezone.utc) - written) < dt.timedelta(hours=1)
    # The settings live in the manifest; the summary keeps the counts.
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["rows_audited"] == N_ROWS and summary["action"] == {"keep": 4, "review": 4, "remove": 2}
    assert not {"inputs", "dataset", "thresholds", "policy"} & set(summary)


def test_the_config_sha256_is_of_the_effective_config(audited):
    a, b = (_read(audited["outs"][name])["config_sha256"] for name in ("a", "b"))
    assert a != b  # one --set override apart
    effective = load_config(audited["config"], [*audited["sets"]["a"][1::2], f"output.path={audited['outs']['a']}"])
    assert a == config_sha256(effective)
    canonical = json.dumps(effective.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    assert a == hashlib.sha256(canonical.encode()).hexdigest()


def test_rematch_decides_with_the_audits_manifest(audited, tmp_path):
    audit = audited["outs"]["a"]
    manifest = read_manifest(str(audit))
    other = tmp_path / "other.csv"
    other.write_text("list_id,entry_id,kind,value\nother,o1,url,http://img.example/3.jpg\n")
    plan = plan_rematch(str(audit), [str(other)], str(tmp_path / "out"))
    assert plan.index.thresholds.to_dict() == manifest.thresholds  # pdq 20, as the audit ran
    assert plan.policy == manifest.policy
    assert plan.spec.id_col == "SAMPLE_ID" and plan.inputs == manifest.inputs
    # The manifest is what counts: a changed one changes the plan.
    tampered = json.loads((audit / "report" / "manifest.json").read_text())
    tampered["thresholds"]["pdq"] = 5
    tampered["policy"]["review_if"] = []
    copy = tmp_path / "copy"
    (copy / "report").mkdir(parents=True)
    (copy / "report" / "manifest.json").write_text(json.dumps(tampered))
    (copy / "report" / "summary.json").write_text((audit / "report" / "summary.json").read_text())
    changed = plan_rematch(str(copy), [str(other)], str(tmp_path / "out"))
    assert changed.index.thresholds["pdq"] == 5 and changed.policy.review_if == []

    summary = run_rematch(plan)
    assert summary["all_rows_accounted"]
    # Row 3 has an e-mail (review) and is now listed (remove); 2 and 7 are listed no more.
    assert summary["action"] == {"keep": 6, "review": 3, "remove": 1}
    again = read_manifest(str(tmp_path / "out"))
    assert again.kind == "rematch" and again.rematch_of == str(audit)
    assert again.thresholds == manifest.thresholds and again.policy == manifest.policy
    assert again.inputs == manifest.inputs and again.dataset == manifest.dataset
    assert again.config_sha256 == manifest.config_sha256
    assert again.takedown_lists == [ListFile(str(other), hashlib.sha256(other.read_bytes()).hexdigest())]


def test_rematch_without_a_manifest_is_a_config_error_naming_it(audited, tmp_path, capsys):
    audit = tmp_path / "old-audit"
    (audit / "report").mkdir(parents=True)
    (audit / "report" / "summary.json").write_text(json.dumps({"rows_audited": N_ROWS}))
    code = main(["rematch", "--audit", str(audit), "--lists", str(audited["takedown"]),
                 "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("laion-audit: config error: ") and "\n" not in err
    assert str(audit / "report" / "manifest.json") in err


def test_list_files_expands_globs_and_names_a_list_it_cannot_read(tmp_path):
    for name in ("b.csv", "a.csv"):
        write_list([TakedownEntry("l", "e", "md5", "0" * 32)], str(tmp_path / name))
    listed = list_files([str(tmp_path / "*.csv")])
    assert [Path(f.path).name for f in listed] == ["a.csv", "b.csv"]
    assert listed[0].sha256 == hashlib.sha256((tmp_path / "a.csv").read_bytes()).hexdigest()
    with pytest.raises(TakedownListError, match="no list file matches"):
        list_files([str(tmp_path / "*.parquet")])
    missing = tmp_path / "gone.csv"
    with pytest.raises(TakedownListError, match=f"{missing}: cannot read the list"):
        list_files([str(missing)])
