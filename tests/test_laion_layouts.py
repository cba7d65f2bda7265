"""LAION's real layouts: the embedding metadata's lowercase columns, zero-padded shard
names, the three subsets as a list of directories, img2dataset's md5 column, and the two
LAION configs as shipped run (paths and runner overridden to local) on generated files
named as LAION's are."""
from __future__ import annotations

import glob

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.audit import run_audit
from pipelines.config import ConfigError, load_config
from tests.conftest import run_transform
from tests.laion_layout import (
    LAION5B_METADATA_COLUMNS,
    LAION_EMBEDDING_METADATA_COLUMNS,
    img2dataset_key,
    laion_embedding_metadata,
    write_laion_layout,
)
from transforms.hashing import hash_record
from transforms.precomputed import AttachPrecomputedEmbeddings, PrecomputedLayoutError, precomputed_shards
from transforms.read import POSITION_KEY, DatasetSpec, ReadDataset, check_dataset, hex_digest

EMBEDDINGS_CONFIG = "configs/laion5b-embeddings.yaml"
DATAFLOW_CONFIG = "configs/dataflow-laion5b.yaml"
SIX = {"medical_clinical", "medical_scan", "nudity", "face", "child", "id_document"}


def _unit(rows: np.ndarray) -> np.ndarray:
    rows = rows.astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _subset(root, name, sizes, dim=512, seed=0, md5s=None):
    """One subset directory in LAION's layout: zero-padded shards, LAION's columns."""
    rng = np.random.default_rng(seed)
    shards = []
    for number, rows in enumerate(sizes):
        urls = [f"http://img.example/{name}/{number}/{i}.jpg" for i in range(rows)]
        table = laion_embedding_metadata(urls, shard=number, md5s=md5s[number] if md5s else None)
        shards.append((table, rng.standard_normal((rows, dim)).astype(np.float16)))
    write_laion_layout(root / name, shards, zero_padded=True)
    return root / name, [e for _, e in shards]


def _rows(output) -> list[dict]:
    return [r for f in sorted(glob.glob(f"{output}/audit/*.parquet")) for r in pq.read_table(f).to_pylist()]


def _embeddings_config(tmp_path, dirs, extra=()):
    inputs = ",".join(f"'{d}/metadata/metadata_*.parquet'" for d in dirs)
    return load_config(EMBEDDINGS_CONFIG, [
        f"dataset.input=[{inputs}]",
        f"embedding.precomputed=[{','.join(repr(str(d)) for d in dirs)}]",
        f"output.path={tmp_path / 'out'}",
        "takedown.lists=[]",
        # Random ViT-B/32 text weights (no hub here); 512-d vectors to match.
        "embedding.model=ViT-B-32", "embedding.pretrained=",
        "runner.name=FnApiRunner", "runner.options={}",
        *extra,
    ])


# ------------------------------------------------------------------ the shipped configs


def test_the_shipped_configs_name_columns_laion_publishes():
    embeddings = load_config(EMBEDDINGS_CONFIG, check_files=False).dataset
    assert (embeddings.url_col, embeddings.caption_col, embeddings.md5_col) == ("url", "caption", "md5")
    assert embeddings.id_col is None  # keys repeat across subsets: see the config's comment
    for col in (embeddings.url_col, embeddings.caption_col, embeddings.md5_col, "key"):
        assert col in LAION_EMBEDDING_METADATA_COLUMNS
    five_b = load_config(DATAFLOW_CONFIG, check_files=False).dataset
    assert (five_b.url_col, five_b.caption_col, five_b.id_col, five_b.md5_col) == ("URL", "TEXT", None, None)
    assert {five_b.url_col, five_b.caption_col} <= set(LAION5B_METADATA_COLUMNS)
    subsets = load_config(EMBEDDINGS_CONFIG, check_files=False).embedding.precomputed
    assert [s.rsplit("/", 1)[1] for s in subsets] == ["laion2B-en", "laion2B-multi", "laion1B-nolang"]


def test_embeddings_config_scores_every_row_of_two_subsets(tmp_path, network_off):
    en, en_vectors = _subset(tmp_path / "laion5b", "laion2B-en", (6, 4), seed=1)
    multi, multi_vectors = _subset(tmp_path / "laion5b", "laion2B-multi", (5,), seed=2)
    config = _embeddings_config(tmp_path, [en, multi])
    run = run_audit(config)

    rows = _rows(config.output.path)
    assert len(rows) == 15 == run.rows_in == run.rows_audited
    assert len({r["row_id"] for r in rows}) == 15  # though both subsets hold shard 0000 and key 000000000
    assert {r["status"] for r in rows} == {"not_fetched"}
    assert all({k for k, _ in r["scores"]} == SIX for r in rows)
    assert {r["model"] for r in rows} == {"precomputed:ViT-B-32"}
    by_url = {r["url"]: r for r in rows}
    assert by_url["http://img.example/laion2B-multi/0/3.jpg"]["row_id"] == "laion2B-multi/metadata/metadata_0000.parquet:3"
    assert by_url["http://img.example/laion2B-en/1/2.jpg"]["caption"] == "caption 1/2"
    assert all(len(r["content_md5"]) == 32 for r in rows)  # the md5 column, read


def test_each_row_gets_its_own_subsets_vector(tmp_path):
    en, en_vectors = _subset(tmp_path, "laion2B-en", (3, 2), dim=8, seed=1)
    multi, multi_vectors = _subset(tmp_path, "laion2B-multi", (4,), dim=8, seed=2)
    paths = sorted(glob.glob(f"{tmp_path}/*/metadata/*.parquet"))
    spec = DatasetSpec(url_col="url", caption_col="caption", id_col="key", positions=True)
    out = run_transform(ReadDataset(paths, spec)
                        | AttachPrecomputedEmbeddings([str(en), str(multi)], inputs=paths, batch_size=3))
    assert len(out) == 9
    vectors = {"laion2B-en": en_vectors, "laion2B-multi": multi_vectors}
    for record in out:
        _, _, subset, shard, index = record["url"].rsplit("/", 4)
        position = int(index.removesuffix(".jpg"))
        assert record["row_id"] == record["row_key"] == img2dataset_key(int(shard), position)  # LAION's key
        np.testing.assert_allclose(record["_embedding"], _unit(vectors[subset][int(shard)])[position], atol=1e-6)
        assert POSITION_KEY not in record


def test_one_subset_with_laions_key_as_row_id(tmp_path, network_off):
    en, _ = _subset(tmp_path / "laion5b", "laion2B-en", (3, 2), seed=1)
    config = _embeddings_config(tmp_path, [en], ["dataset.id_col=key"])
    run_audit(config)
    rows = _rows(config.output.path)
    assert sorted(r["row_id"] for r in rows) == sorted(img2dataset_key(s, i) for s, n in ((0, 3), (1, 2))
                                                          for i in range(n))
    assert all(r["row_key"] == r["row_id"] and r["scores"] for r in rows)


def test_a_precomputed_string_is_one_directory(tmp_path):
    en, _ = _subset(tmp_path, "laion2B-en", (2,), dim=8)
    config = _embeddings_config(tmp_path, [en], [f"embedding.precomputed={en}"])
    assert config.embedding.precomputed == [str(en)]


def test_an_input_outside_the_embedding_directories_fails_before_the_run(tmp_path):
    en, _ = _subset(tmp_path, "laion2B-en", (2,), seed=1)
    multi, _ = _subset(tmp_path, "laion2B-multi", (2,), seed=2)
    config = _embeddings_config(tmp_path, [en, multi], [f"embedding.precomputed=[{en}]"])
    with pytest.raises(ConfigError, match="laion2B-multi/metadata/metadata_0000.parquet is not a metadata"):
        run_audit(config)


def test_a_wrong_column_on_a_local_copy_fails_before_the_run(tmp_path):
    en, _ = _subset(tmp_path, "laion2B-en", (2,), dim=8)
    # LAION-5B's URL / TEXT are not the embedding metadata's names.
    config = _embeddings_config(tmp_path, [en], ["dataset.url_col=URL"])
    with pytest.raises(ConfigError, match=r"dataset.url_col: column 'URL' not in .*metadata_0000.parquet"):
        run_audit(config)
    config = _embeddings_config(tmp_path, [en], ["dataset.md5_col=MD5"])
    with pytest.raises(ConfigError, match="dataset.md5_col: column 'MD5'"):
        run_audit(config)
    assert not glob.glob(f"{tmp_path}/out/audit/*")


def test_dataflow_config_columns_on_a_local_laion5b_copy(tmp_path):
    n = 3
    table = pa.table({
        "URL": [f"http://img.example/{i}.jpg" for i in range(n)], "TEXT": ["t"] * n,
        "WIDTH": [640] * n, "HEIGHT": [480] * n, "similarity": [0.3] * n,
        "punsafe": [0.01] * n, "pwatermark": [0.1] * n,
    })
    assert tuple(table.column_names) == LAION5B_METADATA_COLUMNS
    path = tmp_path / "part-00000-5114fd87-297e-42b0-9d11-50f1df323dfa-c000.snappy.parquet"
    pq.write_table(table, path)
    config = load_config(DATAFLOW_CONFIG, [f"dataset.input={path}", f"output.path={tmp_path / 'out'}",
                                           "takedown.lists=[]"])
    check_dataset([str(path)], DatasetSpec.from_config(config.dataset))
    # The embedding metadata's names would be caught here, on this machine.
    pq.write_table(laion_embedding_metadata(["http://img.example/a.jpg"]), path)
    with pytest.raises(ValueError, match="dataset.url_col: column 'URL'"):
        check_dataset([str(path)], DatasetSpec.from_config(config.dataset))


# ------------------------------------------------------------------ shard names


def test_zero_padded_shards_pair_0000_with_0000(tmp_path):
    directory, _ = _subset(tmp_path, "laion2B-en", [1] * 12, dim=8)
    shards = precomputed_shards(str(directory))
    assert [s.number for s in shards] == list(range(12))
    assert shards[10].npy_path.endswith("img_emb/img_emb_0010.npy")
    assert shards[10].parquet_path.endswith("metadata/metadata_0010.parquet")
    assert shards[0].parquet_path.endswith("metadata_0000.parquet")


def test_a_number_spelled_differently_on_the_two_sides_is_refused(tmp_path):
    directory, _ = _subset(tmp_path, "laion2B-en", [1] * 11, dim=8)
    (directory / "metadata" / "metadata_0010.parquet").rename(directory / "metadata" / "metadata_10.parquet")
    with pytest.raises(PrecomputedLayoutError, match="shard 10: img_emb/img_emb_0010.npy and metadata/metadata_10.parquet"):
        precomputed_shards(str(directory))


def test_a_number_written_twice_on_one_side_is_refused(tmp_path):
    directory, _ = _subset(tmp_path, "laion2B-en", [1] * 2, dim=8)
    pq.write_table(pq.read_table(directory / "metadata" / "metadata_0001.parquet"), directory / "metadata" / "metadata_1.parquet")
    with pytest.raises(PrecomputedLayoutError, match=r"shard 1 named twice \(metadata_0001 and metadata_1\)"):
        precomputed_shards(str(directory))


def test_a_directory_listed_twice_is_refused(tmp_path):
    directory, _ = _subset(tmp_path, "laion2B-en", [2], dim=8)
    with pytest.raises(PrecomputedLayoutError, match="listed twice"):
        AttachPrecomputedEmbeddings([str(directory), f"{directory}/"])


def test_positional_row_ids_cannot_say_which_subset_a_shared_shard_is(tmp_path):
    en, _ = _subset(tmp_path, "laion2B-en", [2], dim=8, seed=1)
    multi, _ = _subset(tmp_path, "laion2B-multi", [2], dim=8, seed=2)
    paths = [f"{en}/metadata/metadata_0000.parquet"]
    with pytest.raises(Exception, match="more than one embeddings directory"):
        run_transform(ReadDataset(paths, DatasetSpec(url_col="url", caption_col="caption"))
                      | AttachPrecomputedEmbeddings([str(en), str(multi)]))


# ------------------------------------------------------------------ the dataset's md5


def test_md5_and_sha256_columns_are_read_lowercased_and_checked(tmp_path):
    good_md5, good_sha = "0123456789ABCDEF0123456789abcdef", "ab" * 32
    table = pa.table({
        "url": [f"http://img.example/{i}.jpg" for i in range(5)],
        "caption": ["c"] * 5,
        "md5": [good_md5, " 0123456789abcdef0123456789abcdef\n", "xyz", None, "0123"],
        "sha": [good_sha, "AB" * 32, "ab" * 31, "g" * 64, None],
    })
    path = tmp_path / "rows.parquet"
    pq.write_table(table, path)
    spec = DatasetSpec(url_col="url", caption_col="caption", md5_col="md5", sha256_col="sha")
    check_dataset([str(path)], spec)
    records = sorted(run_transform(ReadDataset([str(path)], spec)), key=lambda r: r["url"])
    assert [r["content_md5"] for r in records] == [good_md5.lower(), good_md5.lower(), None, None, None]
    assert [r["content_sha256"] for r in records] == [good_sha, good_sha, None, None, None]
    assert hex_digest(bytes(range(16)), 32) == bytes(range(16)).hex()
    with pytest.raises(ValueError, match="dataset.sha256_col: column 'sha256'"):
        check_dataset([str(path)], DatasetSpec(url_col="url", caption_col="caption", sha256_col="sha256"))


def test_a_fetched_image_replaces_the_datasets_hashes_with_its_own():
    from scripts.sample_images import make_photo_jpeg

    body = make_photo_jpeg(7, 64, 48)
    record = {"row_id": "r", "status": "ok", "_body": body, "content_md5": "0" * 32, "content_sha256": "0" * 64}
    out = hash_record(record)
    import hashlib

    assert out["content_md5"] == hashlib.md5(body).hexdigest()
    assert out["content_sha256"] == hashlib.sha256(body).hexdigest()
    # A failed fetch keeps what the dataset says of the image.
    failed = hash_record({"row_id": "r", "status": "http_error", "content_md5": "1" * 32})
    assert failed["content_md5"] == "1" * 32


def test_an_md5_takedown_entry_removes_a_row_with_fetch_off(tmp_path, network_off):
    target = "d41d8cd98f00b204e9800998ecf8427e"
    md5s = [["aa" * 16, target.upper(), "bb" * 16]]
    en, _ = _subset(tmp_path / "laion5b", "laion2B-en", (3,), seed=1, md5s=md5s)
    lists = tmp_path / "takedown.csv"
    lists.write_text(f"list_id,entry_id,kind,value\nreq-1,e1,md5,{target}\n")
    config = _embeddings_config(tmp_path, [en], [f"takedown.lists=[{lists}]"])
    run = run_audit(config)
    rows = {r["url"]: r for r in _rows(config.output.path)}
    assert len(rows) == 3 == run.rows_audited
    hit = rows["http://img.example/laion2B-en/0/1.jpg"]
    assert hit["status"] == "not_fetched" and hit["content_md5"] == target
    assert hit["action"] == "remove"
    assert [(m["list_id"], m["entry_id"], m["kind"]) for m in hit["matches"]] == [("req-1", "e1", "md5")]
    assert "takedown:req-1" in hit["reasons"]
    others = [r for url, r in rows.items() if url != hit["url"]]
    assert all(r["action"] != "remove" and not r["matches"] for r in others)
