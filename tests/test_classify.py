"""Classify stage: zero-shot arithmetic, heads, the categories file, Beam, the eval script."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from scripts.eval_classifier import main as eval_main
from scripts.eval_classifier import precision_recall, threshold_for_precision
from scripts.sample_images import make_photo_jpeg
from tests.conftest import run_transform
from transforms.classify import (
    CategoryError,
    CategorySpec,
    ClassifyImages,
    EmbeddingDimensionError,
    HeadError,
    MlpHead,
    ZeroShotClassifier,
    build_zero_shot,
    classify_batch,
    labels_of,
    load_categories,
    load_head,
    save_head_npz,
)
from transforms.embed import OpenClipImageHandler
from transforms.records import new_record

SMALL_MODEL = "ViT-S-32"
DIM = 8
SCALE = 100.0


def basis(*indices: int) -> np.ndarray:
    vector = np.zeros(DIM, np.float32)
    vector[list(indices)] = 1.0
    return vector / np.linalg.norm(vector)


def specs(*names: str, threshold: float = 0.5) -> list[CategorySpec]:
    return [CategorySpec(name, (f"a photo of {name}",), threshold, negatives=("n",)) for name in names]


@pytest.fixture
def classifier() -> ZeroShotClassifier:
    """Categories a, b, c along e0, e1, e2; neutral prompts along e3, e4, e5."""
    return ZeroShotClassifier(np.stack([basis(0), basis(1), basis(2)]),
                              np.stack([basis(3), basis(4), basis(5)]), SCALE, names=["a", "b", "c"])


def expected_score(category_cos: float, neutral_cos: list[float], scale: float = SCALE) -> float:
    """The documented formula, written out term by term."""
    own = math.exp(scale * category_cos)
    return own / (own + sum(math.exp(scale * c) for c in neutral_cos))


# ----------------------------------------------------------------- zero-shot scores


def test_an_image_along_a_category_scores_and_is_labelled_for_it(classifier):
    scores = classifier.scores(basis(1)[None])[0]
    assert scores.argmax() == 1
    assert scores[1] == pytest.approx(expected_score(1.0, [0, 0, 0]), rel=1e-6)
    assert scores[0] == pytest.approx(expected_score(0.0, [0, 0, 0]), rel=1e-6)
    assert labels_of(scores, specs("a", "b", "c")) == ["b"]


def test_an_image_along_a_neutral_prompt_gets_no_label(classifier):
    scores = classifier.scores(basis(4)[None])[0]
    assert expected_score(0.0, [0, 1, 0]) < 1e-40
    assert scores.max() < 1e-6
    assert labels_of(scores, specs("a", "b", "c")) == []


def test_categories_are_not_exclusive(classifier):
    scores = classifier.scores(basis(0, 2)[None])[0]
    assert labels_of(scores, specs("a", "b", "c")) == ["a", "c"]


def test_thresholds_are_per_category(classifier):
    scores = classifier.scores(basis(1)[None])[0]  # a and c at 0.25, b near 1
    categories = [CategorySpec("a", ("x",), 0.2), CategorySpec("b", ("x",), 0.5), CategorySpec("c", ("x",), 0.3)]
    assert labels_of(scores, categories) == ["a", "b"]


def test_a_batch_is_one_matrix_product_and_rows_match_single_scoring(classifier):
    calls = []

    class CountingClassifier(ZeroShotClassifier):
        def logits(self, image_embeddings):
            calls.append(np.shape(image_embeddings))
            return super().logits(image_embeddings)

    counting = CountingClassifier(np.stack([basis(0), basis(1), basis(2)]),
                                  np.stack([basis(3), basis(4), basis(5)]), SCALE)
    rng = np.random.default_rng(1)
    batch = rng.standard_normal((100, DIM)).astype(np.float32)
    batch /= np.linalg.norm(batch, axis=1, keepdims=True)

    scores = counting.scores(batch)

    assert calls == [(100, DIM)]
    assert scores.shape == (100, 3) and scores.dtype == np.float32
    assert np.all((scores >= 0) & (scores <= 1))
    one_by_one = np.concatenate([classifier.scores(row[None]) for row in batch])
    np.testing.assert_allclose(scores, one_by_one, rtol=1e-5)
    # And each row is the documented formula: category k along e_k, neutrals e3..e5.
    formula = [[expected_score(float(x[k]), [float(c) for c in x[3:6]]) for k in range(3)] for x in batch]
    np.testing.assert_allclose(scores, formula, rtol=1e-4, atol=1e-7)
    assert classifier.logits(batch).shape == (100, 6)


def test_a_category_competes_only_with_its_own_negatives():
    mask = np.array([[True, False, False], [True, True, True]])
    masked = ZeroShotClassifier(np.stack([basis(0), basis(1)]), np.stack([basis(3), basis(4), basis(5)]),
                                SCALE, negative_mask=mask)
    scores = masked.scores(basis(0, 4)[None])[0]  # equally close to category a and neutral e4
    cos = 1 / math.sqrt(2)
    assert scores[0] == pytest.approx(expected_score(cos, [0.0]), rel=1e-5)  # e4 is not a's rival
    assert scores[1] == pytest.approx(expected_score(0.0, [0.0, cos, 0.0]), rel=1e-4)


def test_embeddings_of_the_wrong_width_are_refused(classifier):
    with pytest.raises(EmbeddingDimensionError, match="8-d embeddings, got an array of shape \\(2, 5\\)"):
        classifier.scores(np.zeros((2, 5), np.float32))


def test_classify_batch_scores_embedded_records_and_passes_the_rest(classifier):
    embedded = new_record("r:0", "http://x/0.jpg", None)
    embedded["_embedding"] = basis(2)
    failed = new_record("r:1", "http://x/1.jpg", None)
    failed["status"] = "timeout"

    out = classify_batch([embedded, failed], classifier, specs("a", "b", "c"))

    assert set(out[0]["scores"]) == {"a", "b", "c"}
    assert out[0]["scores"]["c"] == pytest.approx(expected_score(1.0, [0, 0, 0]), rel=1e-6)
    assert out[0]["labels"] == ["c"]
    assert out[1]["scores"] is None and out[1]["labels"] == []
    assert embedded.get("scores") is None  # inputs are not modified


# ----------------------------------------------------------------------------- heads


def _two_layer_head() -> list[tuple[np.ndarray, np.ndarray]]:
    """Hidden units read e0 and e1 (x10); the output is unit0 - unit1."""
    w1 = np.zeros((DIM, 2), np.float32)
    w1[0, 0] = w1[1, 1] = 10.0
    return [(w1, np.zeros(2, np.float32)), (np.array([[1.0], [-1.0]], np.float32), np.zeros(1, np.float32))]


def test_npz_head_is_a_relu_stack_with_a_sigmoid_at_the_end(tmp_path):
    save_head_npz(tmp_path / "head.npz", _two_layer_head())
    head = load_head(tmp_path / "head.npz")
    scores = head.scores(np.stack([basis(0), basis(1), -basis(0)]))
    assert scores[0] == pytest.approx(1 / (1 + math.exp(-10)))
    assert scores[1] == pytest.approx(1 / (1 + math.exp(10)))
    # -e0 drives hidden unit 0 negative: ReLU cuts it to 0, the logit is 0.
    assert scores[2] == pytest.approx(0.5)


def test_npz_head_standardises_its_input_like_keras_normalization(tmp_path):
    mean = np.zeros(DIM, np.float32)
    mean[0] = 0.5
    variance = np.full(DIM, 0.25, np.float32)  # std 0.5
    save_head_npz(tmp_path / "head.npz", _two_layer_head(), mean, variance)
    head = load_head(tmp_path / "head.npz")
    # e0 -> (1 - 0.5) / 0.5 = 1 on unit 0: the same as the raw head on e0.
    assert head.scores(basis(0)[None])[0] == pytest.approx(1 / (1 + math.exp(-10)))
    assert head.scores(np.full((1, DIM), 0.0, np.float32) + mean)[0] == pytest.approx(0.5)


def test_torch_state_dict_head_matches_torch(tmp_path):
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Linear(DIM, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    torch.save(net.state_dict(), tmp_path / "head.pt")
    x = np.random.default_rng(2).standard_normal((5, DIM)).astype(np.float32)

    ours = load_head(tmp_path / "head.pt").scores(x)

    with torch.no_grad():
        theirs = torch.sigmoid(net(torch.from_numpy(x)))[:, 0].numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)


def test_a_head_replaces_its_category_score(tmp_path, classifier):
    head = MlpHead(_two_layer_head())
    with_head = ZeroShotClassifier(np.stack([basis(0), basis(1), basis(2)]),
                                   np.stack([basis(3), basis(4), basis(5)]), SCALE, heads={2: head})
    batch = np.stack([basis(0), basis(2)])
    scores = with_head.scores(batch)
    # Head: hidden units relu(10 x0), relu(10 x1), output unit0 - unit1, then sigmoid.
    np.testing.assert_allclose(scores[:, 2], [1 / (1 + math.exp(-10)), 0.5], rtol=1e-6)
    # The other categories keep the zero-shot formula: e0 is along a, e2 along neither.
    np.testing.assert_allclose(scores[:, :2], [[expected_score(1, [0, 0, 0]), expected_score(0, [0, 0, 0])],
                                               [expected_score(0, [0, 0, 0]), expected_score(0, [0, 0, 0])]],
                               rtol=1e-6)


def test_bad_head_files_are_refused(tmp_path):
    w1, b1 = _two_layer_head()[0]
    np.savez(tmp_path / "two_outputs.npz", W1=w1, b1=b1)
    with pytest.raises(HeadError, match="last layer has 2 outputs"):
        load_head(tmp_path / "two_outputs.npz")
    np.savez(tmp_path / "gap.npz", W1=w1, b1=b1, W3=w1)
    with pytest.raises(HeadError, match="expected arrays W1, b1"):
        load_head(tmp_path / "gap.npz")


def test_head_width_mismatch_is_an_error_at_setup(tmp_path):
    wide = [(np.zeros((768, 1), np.float32), np.zeros(1, np.float32))]
    save_head_npz(tmp_path / "safety.npz", wide)
    with pytest.raises(HeadError, match="category 'nudity': head safety.npz expects 768-d embeddings, the model gives 8-d"):
        ZeroShotClassifier(np.stack([basis(0), basis(1)]), np.stack([basis(3)]), SCALE,
                           names=["face", "nudity"], heads={1: load_head(tmp_path / "safety.npz")})

    (tmp_path / "cats.yaml").write_text(
        "neutral_prompts: [a photo of a landscape]\n"
        "categories:\n"
        "  nudity: {threshold: 0.5, head: safety.npz}\n")
    with pytest.raises(HeadError, match="category 'nudity': head safety.npz expects 768-d embeddings, ViT-B-32 gives 512-d"):
        ClassifyImages(tmp_path / "cats.yaml", model_name="ViT-B-32")


# ------------------------------------------------------------------ categories file


def test_default_categories_cover_the_sensitive_kinds():
    categories = load_categories(None)
    assert [c.name for c in categories] == [
        "medical_clinical", "medical_scan", "nudity", "face", "child", "id_document"]
    for spec in categories:
        assert len(spec.prompts) >= 3 and 0 < spec.threshold < 1
        assert "a photo of a landscape" in spec.negatives
        assert not set(spec.prompts) & set(spec.negatives)


@pytest.mark.parametrize("body, message", [
    ("neutral_prompts: [n]\ncategories:\n  face: {prompts: [a face]}\n",
     "categories.face.threshold: required key is missing"),
    ("neutral_prompts: [n]\ncategories:\n  face: {threshold: 1.5, prompts: [a face]}\n",
     "categories.face.threshold: Input should be less than or equal to 1"),
    ("neutral_prompts: [n]\ncategories:\n  face: {threshold: yes, prompts: [a face]}\n",
     "categories.face.threshold: Input should be a valid number"),
    ("neutral_prompts: [n]\ncategories:\n  face: {threshold: 0.5, prompts: []}\n",
     "categories.face: prompts: must be a non-empty list"),
    ("neutral_prompts: [n]\ncategories:\n  face: {threshold: 0.5, prompts: [a face], colour: red}\n",
     "categories.face.colour: unknown key"),
    ("neutral_prompts: [n]\ncategories:\n  Face-2: {threshold: 0.5, prompts: [a face]}\n",
     "categories: category names are lowercase letters, digits and '_', got 'Face-2'"),
    ("categories:\n  face: {threshold: 0.5, prompts: [a face]}\n",
     "categories.face: needs neutral_prompts or negative_prompts"),
    ("neutral_prompts: [n]\ncategoriez: {}\n", "categoriez: unknown key"),
    ("- just\n- a list\n", "the top level must be a mapping"),
    ("neutral_prompts: [n]\ncategories:\n  face: {threshold: 0.5, prompts: [a face, '']}\n",
     "categories.face.prompts.1: every prompt must be a non-empty string"),
    ("categories: {face: {threshold: 0.5, prompts: [a, b}\n", "not valid YAML"),
])
def test_categories_file_errors_name_the_category_and_key(tmp_path, body, message):
    path = tmp_path / "categories.yaml"
    path.write_text(body)
    with pytest.raises(CategoryError) as caught:
        load_categories(path)
    # One line, naming the file and then the key, as config errors do.
    text = str(caught.value)
    assert text.startswith("categories.yaml: ") and message in text and "\n" not in text


def test_own_negatives_extend_the_shared_ones_and_heads_are_relative(tmp_path):
    path = tmp_path / "cats.yaml"
    path.write_text(
        "neutral_prompts: [a landscape]\n"
        "categories:\n"
        "  child: {threshold: 0.4, prompts: [a child], negative_prompts: [an adult]}\n"
        "  nudity: {threshold: 0.5, head: heads/safety.npz}\n")
    child, nudity = load_categories(path)
    assert child.negatives == ("a landscape", "an adult") and child.threshold == 0.4
    assert nudity.prompts == () and nudity.head_path == str(tmp_path / "heads" / "safety.npz")


# -------------------------------------------------------------- with a real model


@pytest.fixture(scope="module")
def clip():
    return OpenClipImageHandler(SMALL_MODEL, None, device="cpu").load_model()


@pytest.fixture(scope="module")
def small_categories(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("categories") / "categories.yaml"
    path.write_text(
        "neutral_prompts: [a photo of a landscape, a product photo]\n"
        "categories:\n"
        "  medical_scan: {threshold: 0.5, prompts: [an X-ray image, a CT scan]}\n"
        "  face: {threshold: 0.5, prompts: [a portrait photo], negative_prompts: [a drawing of a face]}\n")
    return path


def test_build_zero_shot_encodes_the_default_prompts_once(clip):
    categories = load_categories(None)
    built = build_zero_shot(categories, clip.model, clip.tokenizer, clip.device)
    assert built.num_categories == 6 and built.dim == 384
    assert built.logit_scale == pytest.approx(clip.logit_scale())
    # Category vectors are unit means of their prompts, in the model's text space.
    prompt_vectors = clip.embed_texts(list(categories[3].prompts))
    mean = prompt_vectors.mean(axis=0)
    text_matrix = built.logits(np.eye(384, dtype=np.float32)) / built.logit_scale  # [d, k + m]
    np.testing.assert_allclose(text_matrix[:, 3], mean / np.linalg.norm(mean), atol=1e-5)
    image_vectors = np.random.default_rng(0).standard_normal((4, 384)).astype(np.float32)
    assert built.scores(image_vectors).shape == (4, 6)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _zero_shot_score(x: np.ndarray, prompts: np.ndarray, negatives: np.ndarray, scale: float) -> float:
    """classify.py's documented score in plain numpy (float64): the category vector is
    the renormalised mean of its unit prompt vectors, each negative is its own class,
    and the score is the category's softmax probability among them."""
    category = _unit(_unit(prompts).mean(axis=0))
    logits = scale * np.concatenate([[x @ category], _unit(negatives) @ x])
    e = np.exp(logits - logits.max())
    return float(e[0] / e.sum())


def test_classify_images_on_beam_reuses_the_embedding_model(clip, tmp_path):
    # Thresholds differ per category and the head's category sits exactly on its
    # threshold for one row, so a swapped threshold or a strict '>' changes the labels.
    w1 = np.zeros((384, 1), np.float32)
    w1[0, 0] = 10.0
    np.savez(tmp_path / "linear.npz", W1=w1, b1=np.zeros(1, np.float32))  # score = sigmoid(10 * x[0])
    path = tmp_path / "categories.yaml"
    path.write_text(
        "neutral_prompts: [a photo of a landscape, a product photo]\n"
        "categories:\n"
        "  medical_scan: {threshold: 0.4, prompts: [an X-ray image, a CT scan]}\n"
        "  face: {threshold: 0.6, prompts: [a portrait photo], negative_prompts: [a drawing of a face]}\n"
        "  nudity: {threshold: 0.5, head: linear.npz}\n")
    thresholds = {"medical_scan": 0.4, "face": 0.6, "nudity": 0.5}

    # The model's text vectors, straight from the model the embedding stage shares.
    texts = ["an X-ray image", "a CT scan", "a portrait photo",
             "a photo of a landscape", "a product photo", "a drawing of a face"]
    text = dict(zip(texts, clip.embed_texts(texts).astype(np.float64)))
    scan_prompts = np.stack([text["an X-ray image"], text["a CT scan"]])
    face_prompts = np.stack([text["a portrait photo"]])
    shared = np.stack([text["a photo of a landscape"], text["a product photo"]])
    face_negatives = np.vstack([shared, text["a drawing of a face"]])
    scale = clip.logit_scale()

    c_scan, c_face = _unit(scan_prompts.mean(axis=0)), _unit(face_prompts[0])
    rng = np.random.default_rng(0)
    vectors = [c_scan, c_face, c_scan + c_face, shared[0], c_scan + c_face - 1.5 * shared.mean(axis=0),
               rng.standard_normal(384), rng.standard_normal(384)]
    on_threshold = rng.standard_normal(384)
    on_threshold[0] = 0.0  # the head's logit is exactly 0: score 0.5 == its threshold
    vectors.append(on_threshold)
    records = []
    for i, vector in enumerate(vectors):
        record = new_record(f"r:{i}", f"http://x/{i}.jpg", None)
        record["_embedding"] = _unit(vector).astype(np.float32)
        records.append(record)
    records.append(new_record("r:9", None, None))  # not embedded: no scores

    expected = {}
    for record in records[:-1]:
        x = record["_embedding"].astype(np.float64)
        scores = {
            "medical_scan": _zero_shot_score(x, scan_prompts, shared, scale),
            "face": _zero_shot_score(x, face_prompts, face_negatives, scale),
            "nudity": 1.0 / (1.0 + np.exp(-10.0 * x[0])),
        }
        labels = [name for name in ("medical_scan", "face", "nudity") if scores[name] >= thresholds[name]]
        expected[record["row_id"]] = (scores, labels)
    # The rows exercise what the labels depend on: a score between the two zero-shot
    # thresholds (swapping them matters), rows with and without each label.
    assert any(0.4 <= s["medical_scan"] < 0.6 or 0.4 <= s["face"] < 0.6 for s, _ in expected.values())
    for name in thresholds:
        assert {name in labels for _, labels in expected.values()} == {True, False}, name
    assert expected["r:7"][0]["nudity"] == 0.5 and "nudity" in expected["r:7"][1]

    out = run_transform(ClassifyImages(path, SMALL_MODEL, None, "cpu", batch_size=2), records)

    assert sorted(r["row_id"] for r in out) == sorted(r["row_id"] for r in records)
    for record in out:
        if record["row_id"] == "r:9":
            assert record["scores"] is None and record["labels"] == []
            continue
        want_scores, want_labels = expected[record["row_id"]]
        assert record["scores"].keys() == want_scores.keys()
        for name, value in want_scores.items():
            assert record["scores"][name] == pytest.approx(value, rel=1e-4, abs=1e-6), (record["row_id"], name)
        assert record["labels"] == want_labels, record["row_id"]


# ---------------------------------------------------------------------- eval script


def test_precision_recall_arithmetic():
    y_true = [True, True, False, False, True]
    scores = [0.9, 0.4, 0.8, 0.1, 0.7]
    # At 0.5: predicted 0.9 (tp), 0.8 (fp), 0.7 (tp); 0.4 is a missed positive.
    assert precision_recall(y_true, scores, 0.5) == pytest.approx((2 / 3, 2 / 3))
    assert precision_recall(y_true, scores, 0.85) == pytest.approx((1.0, 1 / 3))
    precision, recall = precision_recall(y_true, scores, 0.95)
    assert math.isnan(precision) and recall == 0.0
    assert math.isnan(precision_recall([False, False], [0.9, 0.1], 0.5)[1])


def test_threshold_for_precision_keeps_the_most_recall():
    y_true = [True, True, False, False, True]
    scores = [0.9, 0.4, 0.8, 0.1, 0.7]
    # Precision by threshold: 0.9 -> 1/1, 0.8 -> 1/2, 0.7 -> 2/3, 0.4 -> 3/4, 0.1 -> 3/5.
    assert threshold_for_precision(y_true, scores, 1.0) == pytest.approx((0.9, 1.0, 1 / 3))
    assert threshold_for_precision(y_true, scores, 0.7) == pytest.approx((0.4, 0.75, 1.0))
    assert threshold_for_precision(y_true, scores, 0.6) == pytest.approx((0.1, 0.6, 1.0))
    # A tie cannot be split by a threshold: both tied rows count together.
    assert threshold_for_precision([True, False], [0.5, 0.5], 0.9) is None


def test_eval_script_prints_a_row_per_category(tmp_path, clip, small_categories, capsys):
    paths = []
    for i in range(6):
        path = tmp_path / f"img{i}.jpg"
        path.write_bytes(make_photo_jpeg(i, 320, 240))
        paths.append(str(path))
    labels = [["face"], [], ["medical_scan"], ["face", "medical_scan"], [], ["face"]]
    sample = tmp_path / "sample.parquet"
    pq.write_table(pa.table({"path": paths, "labels": labels}), sample)

    assert eval_main([str(sample), "--model", SMALL_MODEL, "--device", "cpu",
                      "--categories", str(small_categories), "--target-precision", "0.9"]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"model {SMALL_MODEL}/random-init  rows 6  evaluated 6")
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert rows.keys() == {"medical_scan", "face"}
    assert rows["face"][1] == "3" and rows["medical_scan"][1] == "2"
