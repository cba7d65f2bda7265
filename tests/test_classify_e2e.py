"""End to end: embedding + classification in the audit pipeline, with a real open_clip
model (random weights: no hub is reachable) and with LAION's published-embedding layout."""
from __future__ import annotations

import glob

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.audit import run_audit
from pipelines.config import ConfigError, parse_config
from scripts.sample_images import make_photo_jpeg
from tests.conftest import laion_table
from tests.hostile_server import HostileServer
from tests.laion_layout import write_laion_layout
from transforms.classify import load_categories

DEFAULT_CATEGORIES = {"medical_clinical", "medical_scan", "nudity", "face", "child", "id_document"}
def _audit_rows(output: str) -> list[dict]:
    return [r for f in sorted(glob.glob(f"{output}/audit/*.parquet")) for r in pq.read_table(f).to_pylist()]


def test_default_categories_are_the_six_named_ones():
    assert {c.name for c in load_categories(None)} == DEFAULT_CATEGORIES


def test_fetched_rows_get_all_six_scores(tmp_path):
    with HostileServer() as server:
        urls = [server.url(server.add_image(f"p{i}.jpg", make_photo_jpeg(50 + i, 320 + 40 * i, 240))) for i in range(5)]
        urls += [server.url("/404"), None]
        captions = ["post-op photo, mail jane@example.org"] + ["a photo"] * 6
        dataset = tmp_path / "rows.parquet"
        pq.write_table(laion_table(urls, captions), dataset)
        config = parse_config({
            "dataset": {"input": str(dataset)},
            "output": {"path": str(tmp_path / "out"), "write_embeddings": True},
            "fetch": {"allowed_private_hosts": ["127.0.0.1"], "retries": 0},
            "embedding": {"enabled": True, "model": "ViT-B-32", "pretrained": None, "batch_size": 4},
            "policy": {"review_if": ["medical_term and email"]},
        })
        run = run_audit(config)

    rows = {r["url"]: r for r in _audit_rows(config.output.path)}
    assert len(rows) == len(urls) == run.rows_audited
    for url in urls[:5]:
        row = rows[url]
        assert row["status"] == "ok"
        assert {k for k, _ in row["scores"]} == DEFAULT_CATEGORIES
        assert all(0.0 <= v <= 1.0 for _, v in row["scores"])
        assert row["model"] == "ViT-B-32/random-init"
    for url in urls[5:]:
        assert rows[url]["scores"] is None and rows[url]["model"] is None
    assert rows[urls[0]]["caption_flags"] == ["email", "medical_term"]
    assert rows[urls[0]]["action"] == "review"
    assert run.summary["model_warning"].startswith("random weights")

    review = pq.read_table(tmp_path / "out" / "review").to_pylist()
    assert [r["url"] for r in review] == [urls[0]]
    embeddings = pq.read_table(tmp_path / "out" / "embeddings")
    assert embeddings.num_rows == 5
    assert embeddings.schema.field("embedding").type == pa.list_(pa.float16())
    vectors = np.array(embeddings.column("embedding").to_pylist(), dtype=np.float32)
    assert vectors.shape == (5, 512)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-2)


def test_laion_layout_is_classified_without_fetching(tmp_path, network_off):
    rng = np.random.default_rng(0)
    shards = []
    for shard, n in enumerate((6, 4)):
        table = laion_table([f"http://img.example/{shard}/{i}.jpg" for i in range(n)])
        vectors = rng.normal(size=(n, 512)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        shards.append((table, vectors.astype(np.float16)))
    write_laion_layout(tmp_path / "laion", shards)
    config = parse_config({
        "dataset": {"input": str(tmp_path / "laion" / "metadata" / "*.parquet")},
        "output": {"path": str(tmp_path / "out")},
        "fetch": {"enabled": False},
        "embedding": {"precomputed": str(tmp_path / "laion"), "model": "ViT-B-32", "pretrained": None},
    })
    run = run_audit(config)
    rows = _audit_rows(config.output.path)
    assert len(rows) == 10 == run.rows_in
    assert {r["status"] for r in rows} == {"not_fetched"}
    assert all({k for k, _ in r["scores"]} == DEFAULT_CATEGORIES for r in rows)
    assert {r["model"] for r in rows} == {"precomputed:ViT-B-32"}


def test_misaligned_layout_fails_before_the_run(tmp_path):
    table = laion_table([f"http://img.example/{i}.jpg" for i in range(5)])
    write_laion_layout(tmp_path / "laion", [(table, np.zeros((4, 512), np.float16))])
    config = parse_config({
        "dataset": {"input": str(tmp_path / "laion" / "metadata" / "*.parquet")},
        "output": {"path": str(tmp_path / "out")},
        "fetch": {"enabled": False},
        "embedding": {"precomputed": str(tmp_path / "laion"), "model": "ViT-B-32"},
    })
    with pytest.raises(ConfigError, match="metadata_0"):
        run_audit(config)


def test_request_embedding_matches_the_audit_embedding_of_the_same_photo(tmp_path):
    from pipelines.cli import main as cli_main

    photo = make_photo_jpeg(4242, 700, 500)
    (tmp_path / "mine.jpg").write_bytes(photo)
    request = tmp_path / "request.jsonl"
    assert cli_main(["request", str(tmp_path / "mine.jpg"), "--out", str(request), "--with-embedding",
                     "--model", "ViT-B-32"]) == 0
    with HostileServer() as server:
        urls = [server.url(server.add_image("copy.jpg", photo)),
                server.url(server.add_image("other.jpg", make_photo_jpeg(9, 700, 500)))]
        dataset = tmp_path / "rows.parquet"
        pq.write_table(laion_table(urls), dataset)
        config = parse_config({
            "dataset": {"input": str(dataset)},
            "output": {"path": str(tmp_path / "out")},
            "fetch": {"allowed_private_hosts": ["127.0.0.1"]},
            "embedding": {"enabled": True, "model": "ViT-B-32"},
            # Random weights map many images close together: only the same pixels match here.
            "takedown": {"lists": [str(request)], "clip_min_cosine": 0.9999},
        })
        run_audit(config)
    rows = {r["url"]: r for r in _audit_rows(config.output.path)}
    clip_hits = [m for m in rows[urls[0]]["matches"] if m["kind"] == "clip"]
    assert len(clip_hits) == 1 and clip_hits[0]["distance"] < 1e-4
    assert not [m for m in rows[urls[1]]["matches"] if m["kind"] == "clip"]
