"""Embed stage: the open_clip handler, EmbedImages on Beam, checkpoints, LAION's layout."""
from __future__ import annotations

import logging
import uuid

import apache_beam as beam
import numpy as np
import pytest
import torch
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from scripts.sample_images import make_photo_jpeg
from tests.conftest import laion_table
from tests.laion_layout import write_laion_layout
from transforms.clip_model import load_clip
from transforms.embed import EmbedImages, OpenClipImageHandler
from transforms.hashing import hash_record
from transforms.precomputed import (
    AttachPrecomputedEmbeddings,
    NpyRows,
    PrecomputedLayoutError,
    attach_precomputed,
    precomputed_shards,
)
from transforms.read import DatasetSpec, ReadDataset
from transforms.records import embedding_row, new_record

# The smallest stock open_clip config; weights are random (no model hub here).
SMALL_MODEL = "ViT-S-32"

_OUTPUTS: dict[str, list] = {}


class _Collect(beam.DoFn):
    def __init__(self, token: str) -> None:
        self._token = token

    def process(self, element):
        _OUTPUTS[self._token].append(element)


def run_with_metrics(transform: beam.PTransform, inputs: list | None = None) -> tuple[list, dict]:
    """Run on the in-memory FnApiRunner; return outputs and {(namespace, name): count}."""
    token = uuid.uuid4().hex
    _OUTPUTS[token] = []
    pipeline = beam.Pipeline(runner=FnApiRunner())
    source = pipeline | beam.Create(inputs) if inputs is not None else pipeline
    _ = source | transform | beam.ParDo(_Collect(token))
    result = pipeline.run()
    result.wait_until_finish()
    counters = {
        (c.key.metric.namespace, c.key.metric.name): c.committed
        for c in result.metrics().query(MetricsFilter())["counters"]
    }
    return _OUTPUTS.pop(token), counters


def fetched_record(index: int, width: int = 640, height: int = 480) -> dict:
    """A record as the hash stage leaves it: hashed, with its downscaled `_image`."""
    record = new_record(f"part-0.parquet:{index}", f"http://images.test/{index}.jpg", f"photo {index}")
    record["status"] = "ok"
    record["_body"] = make_photo_jpeg(index, width, height)
    return hash_record(record, keep_image=True)


@pytest.fixture(scope="module")
def handler() -> OpenClipImageHandler:
    return OpenClipImageHandler(SMALL_MODEL, None, device="cpu", min_batch_size=1, max_batch_size=8)


@pytest.fixture(scope="module")
def clip(handler):
    # Held for the whole module: pipelines in this process reuse this very model.
    return handler.load_model()


@pytest.fixture
def forward_calls(clip):
    """Batch sizes of every forward pass through the image tower."""
    sizes: list[int] = []
    hook = clip.model.visual.register_forward_hook(lambda module, args, out: sizes.append(args[0].shape[0]))
    yield sizes
    hook.remove()


def direct_embedding(clip, image) -> np.ndarray:
    """open_clip's own path: its preprocess, encode_image, L2 normalisation."""
    with torch.inference_mode():
        pixels = clip.preprocess(image).unsqueeze(0)
        return torch.nn.functional.normalize(clip.model.encode_image(pixels), dim=-1)[0].numpy()


# ---------------------------------------------------------------------------- handler


def test_handler_gives_one_unit_vector_per_image_in_one_forward_pass(handler, clip, forward_calls):
    images = [fetched_record(i)["_image"] for i in range(5)]
    vectors = handler.run_inference(images, clip)

    assert forward_calls == [5]
    assert len(vectors) == 5
    for vector in vectors:
        assert isinstance(vector, np.ndarray)
        assert vector.dtype == np.float32 and vector.shape == (384,)
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    assert len({v.tobytes() for v in vectors}) == 5
    for image, vector in zip(images, vectors):
        np.testing.assert_allclose(vector, direct_embedding(clip, image), atol=1e-5)


def test_prepared_pixels_match_open_clip_preprocess_exactly(handler, clip):
    image = fetched_record(7, 500, 900)["_image"]
    prepared = handler.preparer_for(clip).prepare(image)
    assert prepared.dtype == np.uint8 and prepared.shape == (224, 224, 3)

    reference = clip.preprocess(image)
    batched = torch.as_tensor(np.array(prepared[None])).permute(0, 3, 1, 2).float().div(255)
    mean = torch.tensor(clip.preprocess_cfg()["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(clip.preprocess_cfg()["std"]).view(1, 3, 1, 1)
    assert torch.equal(batched.sub(mean).div(std)[0], reference)


def test_random_init_is_the_same_model_in_every_load(clip):
    model, _, _, model_id = load_clip(SMALL_MODEL, None, "cpu")
    assert model_id == f"{SMALL_MODEL}/random-init"
    for (name, ours), theirs in zip(clip.model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(ours, theirs), name


def test_local_checkpoint_path_loads_those_weights(tmp_path, clip, caplog):
    # Flip the image projection: embeddings of the saved model are the negatives of
    # the random-init ones, so loading the wrong weights cannot pass.
    state = {name: value.clone() for name, value in clip.model.state_dict().items()}
    state["visual.proj"] = -state["visual.proj"]
    path = tmp_path / "flipped.pt"
    torch.save(state, path)

    with caplog.at_level(logging.WARNING, logger="transforms.clip_model"):
        model, preprocess, tokenizer, model_id = load_clip(SMALL_MODEL, str(path), "cpu")
    assert model_id == f"{SMALL_MODEL}/{path}"
    assert "random weights" not in caplog.text
    assert not model.training

    image = fetched_record(3)["_image"]
    with torch.inference_mode():
        loaded = torch.nn.functional.normalize(model.encode_image(preprocess(image)[None]), dim=-1)[0].numpy()
    np.testing.assert_allclose(loaded, -direct_embedding(clip, image), atol=1e-5)
    assert tokenizer(["a photo"]).shape == (1, 77)


def test_vit_b32_random_weights_warn_and_embed_512_d(caplog):
    # load_clip itself: the handler's model may already be loaded (and shared) by an
    # earlier test in this process, and a shared model is not loaded, nor announced, twice.
    with caplog.at_level(logging.WARNING, logger="transforms.clip_model"):
        _, _, _, model_id = load_clip("ViT-B-32", None, "cpu")
    assert "ViT-B-32/random-init: random weights: scores are meaningless" in caplog.text
    assert model_id == "ViT-B-32/random-init"
    b32 = OpenClipImageHandler("ViT-B-32", None, device="cpu")
    loaded = b32.load_model()
    vectors = b32.run_inference([fetched_record(i)["_image"] for i in range(2)], loaded)
    assert [v.shape for v in vectors] == [(512,), (512,)]
    assert b32.model_id == "ViT-B-32/random-init"


def test_handler_settings_reach_runinference():
    gpu = {"accelerator": "type:nvidia-l4;count:1;install-nvidia-driver"}
    h = OpenClipImageHandler(SMALL_MODEL, None, min_batch_size=4, max_batch_size=32,
                             large_model=True, model_copies=2, resource_hints=gpu)
    assert h.batch_elements_kwargs() == {"min_batch_size": 4, "max_batch_size": 32}
    assert h.share_model_across_processes() and h.model_copies() == 2
    assert h.get_resource_hints() == gpu
    single = h.with_batch_size(1, 1)
    assert single.batch_elements_kwargs() == {"min_batch_size": 1, "max_batch_size": 1}
    assert single.spec == h.spec and single.share_model_across_processes()
    assert single.get_resource_hints() == gpu


def test_an_accelerator_hint_lands_on_the_inference_steps_only():
    gpu = {"accelerator": "type:nvidia-l4;count:1;install-nvidia-driver"}
    pipeline = beam.Pipeline(runner=FnApiRunner())
    _ = (pipeline | beam.Create([{"row_id": "a"}])
         | "Embed" >> EmbedImages(OpenClipImageHandler(SMALL_MODEL, None, resource_hints=gpu)))
    proto = pipeline.to_runner_api()
    environments = proto.components.environments

    hinted = {
        t.unique_name for t in proto.components.transforms.values()
        if t.environment_id and "beam:resources:accelerator:v1" in environments[t.environment_id].resource_hints
    }
    assert {"Embed/RunInference/BeamML_RunInference",
            "Embed/RunInferenceSingly/BeamML_RunInference"} <= hinted
    assert all("/BeamML_RunInference" in name for name in hinted)


@pytest.mark.parametrize("model, pretrained, key", [
    ("ViT-Nope-99", None, "embedding.model"),
    (SMALL_MODEL, "/no/such/checkpoint.pt", "embedding.pretrained"),
])
def test_bad_model_settings_fail_before_any_load(model, pretrained, key):
    with pytest.raises(ValueError, match=key):
        OpenClipImageHandler(model, pretrained)


# ------------------------------------------------------------------------ EmbedImages


def test_embed_images_puts_each_vector_on_its_own_record(handler, clip, forward_calls):
    records = [fetched_record(i) for i in range(7)]
    images = {r["row_id"]: r["_image"] for r in records}
    unfetched = new_record("part-0.parquet:99", "http://images.test/gone.jpg", "gone")
    unfetched.update(status="http_error", http_status=404)
    batched = OpenClipImageHandler(SMALL_MODEL, None, device="cpu", min_batch_size=3, max_batch_size=3)

    out, counters = run_with_metrics(EmbedImages(batched), records + [unfetched])
    pipeline_passes = list(forward_calls)

    assert len(out) == 8
    by_id = {r["row_id"]: r for r in out}
    assert by_id.keys() == {r["row_id"] for r in records} | {unfetched["row_id"]}
    for row_id, image in images.items():
        record = by_id[row_id]
        assert "_image" not in record
        assert record["status"] == "ok" and record["model"] == f"{SMALL_MODEL}/random-init"
        np.testing.assert_allclose(record["_embedding"], direct_embedding(clip, image), atol=1e-5)
        assert record["pdq"] is not None  # the hash stage's columns ride along
    assert by_id[unfetched["row_id"]] == unfetched
    assert counters[("embed", "rows_embedded")] == 7
    assert counters.get(("embed", "rows_failed"), 0) == 0
    # Batched inference: never more than 3 per pass, never one pass per record.
    assert sum(pipeline_passes) == 7 and max(pipeline_passes) <= 3
    assert len(pipeline_passes) < 7


def test_a_failed_batch_is_retried_alone_and_only_bad_records_fail(clip):
    records = [fetched_record(i) for i in range(5)]
    not_an_image = new_record("part-0.parquet:50", "http://images.test/50.jpg", None)
    not_an_image.update(status="ok", _image="this is not an image")
    wrong_shape = new_record("part-0.parquet:51", "http://images.test/51.jpg", None)
    wrong_shape.update(status="ok", _image=np.zeros((10, 10, 3), np.uint8))
    one_batch = OpenClipImageHandler(SMALL_MODEL, None, device="cpu", min_batch_size=7, max_batch_size=7)

    out, counters = run_with_metrics(EmbedImages(one_batch), records + [not_an_image, wrong_shape])

    assert len(out) == 7
    by_id = {r["row_id"]: r for r in out}
    assert by_id[not_an_image["row_id"]]["status"] == "internal_error"
    assert by_id[not_an_image["row_id"]]["error"] == "embedding failed: TypeError"
    failed = by_id[wrong_shape["row_id"]]
    assert failed["status"] == "internal_error" and failed["error"].startswith("embedding failed: ")
    assert "_image" not in failed and "_embedding" not in failed
    for record in records:
        assert by_id[record["row_id"]]["status"] == "ok"
        np.testing.assert_allclose(by_id[record["row_id"]]["_embedding"],
                                   direct_embedding(clip, record["_image"]), atol=1e-5)
    assert counters[("embed", "batches_retried")] == 1
    assert counters[("embed", "rows_embedded")] == 5
    assert counters[("embed", "rows_failed")] == 2


def test_large_model_serves_the_same_embeddings_from_a_shared_process(clip):
    records = [fetched_record(i) for i in range(3)]
    shared_handler = OpenClipImageHandler(SMALL_MODEL, None, device="cpu", large_model=True)

    out, _ = run_with_metrics(EmbedImages(shared_handler), records)

    by_id = {r["row_id"]: r for r in out}
    for record in records:
        np.testing.assert_allclose(by_id[record["row_id"]]["_embedding"],
                                   direct_embedding(clip, record["_image"]), atol=1e-5)


def test_embedding_row_is_float16():
    record = {"row_id": "a:1", "_embedding": np.full(4, 0.5, np.float32)}
    row = embedding_row(record)
    assert row["row_id"] == "a:1" and row["embedding"].dtype == np.float16
    assert row["embedding"].tolist() == [0.5, 0.5, 0.5, 0.5]


# ------------------------------------------------------------- precomputed embeddings


def _laion_dir(tmp_path, sizes=(5, 3), dim=768):
    rng = np.random.default_rng(0)
    shards = []
    for number, rows in enumerate(sizes):
        table = laion_table([f"http://images.test/{number}/{i}.jpg" for i in range(rows)])
        shards.append((table, rng.standard_normal((rows, dim)).astype(np.float16)))
    write_laion_layout(tmp_path / "laion", shards)
    return tmp_path / "laion", [embeddings for _, embeddings in shards]


def _unit(rows: np.ndarray) -> np.ndarray:
    rows = rows.astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_precomputed_shards_pair_files_by_number(tmp_path):
    directory, _ = _laion_dir(tmp_path)
    shards = precomputed_shards(str(directory))
    assert [s.number for s in shards] == [0, 1]
    assert shards[1].npy_path.endswith("img_emb/img_emb_1.npy")
    assert shards[1].parquet_path.endswith("metadata/metadata_1.parquet")


def test_precomputed_embeddings_join_the_rows_they_were_computed_for(tmp_path):
    directory, embeddings = _laion_dir(tmp_path)
    paths = sorted(str(p) for p in (directory / "metadata").glob("*.parquet"))

    out, counters = run_with_metrics(
        ReadDataset(paths, DatasetSpec()) | AttachPrecomputedEmbeddings(str(directory), batch_size=4))

    assert len(out) == 8
    for record in out:
        source, position = record["row_id"].split(":")
        shard = int(source.removeprefix("metadata_").removesuffix(".parquet"))
        assert record["url"] == f"http://images.test/{shard}/{position}.jpg"
        np.testing.assert_allclose(record["_embedding"], _unit(embeddings[shard])[int(position)], atol=1e-6)
        assert record["_embedding"].dtype == np.float32
        assert record["model"] == "precomputed:ViT-L-14"
    assert counters[("embed", "rows_precomputed")] == 8


def test_ranged_reads_give_the_same_rows_as_the_memmap(tmp_path):
    directory, embeddings = _laion_dir(tmp_path, sizes=(600,), dim=8)
    shard = precomputed_shards(str(directory))[0]
    positions = np.array([599, 3, 4, 5, 300, 0, 4])
    ranged = NpyRows(shard.npy_path, max_gap=10, memmap=False)
    mapped = NpyRows(shard.npy_path)
    np.testing.assert_array_equal(ranged[positions], embeddings[0][positions])
    np.testing.assert_array_equal(mapped[positions], embeddings[0][positions])
    records = [{"row_id": f"metadata_0.parquet:{p}"} for p in positions]
    attached = attach_precomputed(records, ranged, "precomputed:test")
    np.testing.assert_allclose(np.stack([r["_embedding"] for r in attached]),
                               _unit(embeddings[0])[positions], atol=1e-6)


def test_a_misaligned_shard_is_an_error_not_a_shift(tmp_path):
    directory, _ = _laion_dir(tmp_path)
    np.save(directory / "img_emb" / "img_emb_0.npy", np.zeros((4, 768), np.float16))  # metadata has 5

    with pytest.raises(PrecomputedLayoutError, match=r"shard 0: img_emb_0.npy has 4 rows but metadata_0.parquet has 5"):
        precomputed_shards(str(directory))
    # Unchecked at construction, the worker still refuses when it opens the shard.
    paths = sorted(str(p) for p in (directory / "metadata").glob("*.parquet"))
    with pytest.raises(Exception, match="img_emb_0.npy has 4 rows"):
        run_with_metrics(ReadDataset(paths, DatasetSpec())
                         | AttachPrecomputedEmbeddings(str(directory), check_rows=False))


def test_a_missing_npy_names_its_shard(tmp_path):
    directory, _ = _laion_dir(tmp_path)
    (directory / "img_emb" / "img_emb_1.npy").unlink()
    with pytest.raises(PrecomputedLayoutError, match="shard 1: metadata/metadata_1.parquet has no img_emb/img_emb_1.npy"):
        precomputed_shards(str(directory))


def test_row_ids_that_are_not_positions_cannot_take_precomputed_vectors():
    with pytest.raises(PrecomputedLayoutError, match="dataset.id_col: null"):
        attach_precomputed([{"row_id": "SAMPLE-1234"}], np.zeros((3, 8), np.float16))
    with pytest.raises(PrecomputedLayoutError, match="only 3 rows"):
        attach_precomputed([{"row_id": "metadata_0.parquet:3"}], np.zeros((3, 8), np.float16))
