"""Classify stage: sensitive-content scores and labels from image embeddings.

Each category (``transforms/data/categories.yaml``, or a file the config names) is
scored on its own: categories are not exclusive (a clinical photo can show a face and a
child). The score is CLIP's zero-shot probability of the category against a set of
neutral classes:

    score_k(x) = exp(s * x.c_k) / (exp(s * x.c_k) + sum_{n in N_k} exp(s * x.n))
               = sigmoid(s * x.c_k - logsumexp_{n in N_k}(s * x.n))

with ``x`` the unit image embedding, ``c_k`` the category's prompt ensemble (mean of
its unit prompt embeddings, renormalised), ``N_k`` the unit embeddings of the shared
neutral prompts plus the category's own negative prompts, each its own class, and ``s``
the model's logit scale (exp(logit_scale), capped at 100 as in CLIP's training). All
categories of a batch come from ONE matrix product, embeddings [n, d] x prompts [d, k+m].

A category may instead name a ``head``: a small classifier trained on embeddings (e.g.
LAION's safety MLP), whose output then is that category's score. Head files:

- ``.npz``: arrays ``W1, b1, W2, b2, ... Wn, bn``; layer i computes ``x @ Wi + bi``
  (``Wi`` shaped [in, out], Keras' kernel layout), ReLU between layers, sigmoid after
  the last, whose output width must be 1. Optional ``mean`` and ``variance`` ([d])
  first standardise the input like a Keras Normalization layer:
  ``(x - mean) / max(sqrt(variance), 1e-7)``. A single layer is a linear probe.
- ``.pt`` / ``.pth``: a torch state dict of an ``nn.Sequential`` of ``Linear`` layers
  (``"<i>.weight"`` [out, in], ``"<i>.bias"``), same activations, same optional
  ``mean`` / ``variance`` entries.

A record is labelled with every category whose score is >= the category's threshold.
"""
from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from transforms.categories import DEFAULT_CATEGORIES, CategoryError, CategorySpec, load_categories
from transforms.clip_model import ClipSpec, LoadedClip, encode_texts, logit_scale_of, shared_clip


_KERAS_EPSILON = 1e-7


class HeadError(ValueError):
    """A head file that cannot be used, or one that does not fit the embeddings."""


class EmbeddingDimensionError(ValueError):
    """Embeddings whose width differs from the classifier's."""


# ------------------------------------------------------------------------------ heads


class MlpHead:
    """A Dense stack on embeddings: ReLU between layers, sigmoid at the end (width 1)."""

    def __init__(self, layers: Sequence[tuple[np.ndarray, np.ndarray]],
                 mean: np.ndarray | None = None, variance: np.ndarray | None = None,
                 source: str = "head") -> None:
        if not layers:
            raise HeadError(f"{source}: no layers")
        self.source = source
        self.layers = [(np.asarray(w, np.float32), np.asarray(b, np.float32).reshape(-1)) for w, b in layers]
        width = self.layers[0][0].shape[0]
        for index, (w, b) in enumerate(self.layers, start=1):
            if w.ndim != 2 or w.shape[0] != width or b.shape != (w.shape[1],):
                raise HeadError(
                    f"{source}: layer {index} has W {w.shape} and b {b.shape}, expected W [{width}, out], b [out]")
            width = w.shape[1]
        if width != 1:
            raise HeadError(f"{source}: the last layer has {width} outputs, expected 1")
        self.input_dim = self.layers[0][0].shape[0]
        self.mean = self.scale = None
        if mean is not None or variance is not None:
            if mean is None or variance is None:
                raise HeadError(f"{source}: 'mean' and 'variance' come together")
            self.mean = np.asarray(mean, np.float32).reshape(-1)
            self.scale = np.maximum(np.sqrt(np.asarray(variance, np.float32).reshape(-1)), _KERAS_EPSILON)
            if self.mean.shape != (self.input_dim,) or self.scale.shape != (self.input_dim,):
                raise HeadError(f"{source}: mean/variance must have {self.input_dim} values")

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        """One probability per row of ``embeddings`` [n, input_dim], computed batched."""
        x = np.asarray(embeddings, np.float32)
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise EmbeddingDimensionError(
                f"{self.source} expects {self.input_dim}-d embeddings, got shape {x.shape}")
        if self.mean is not None:
            x = (x - self.mean) / self.scale
        for index, (w, b) in enumerate(self.layers):
            x = x @ w + b
            if index < len(self.layers) - 1:
                x = np.maximum(x, 0.0)
        return _sigmoid(x[:, 0])


def _layers_from_torch(state: dict, source: str) -> tuple[list, Any, Any]:
    indexed: dict[int, dict[str, np.ndarray]] = {}
    extras = {}
    for key, value in state.items():
        array = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        prefix, _, kind = key.rpartition(".")
        if key in ("mean", "variance"):
            extras[key] = array
        elif kind in ("weight", "bias") and prefix.split(".")[-1].isdigit():
            indexed.setdefault(int(prefix.split(".")[-1]), {})[kind] = array
        else:
            raise HeadError(f"{source}: unexpected state dict entry '{key}'")
    layers = []
    for index in sorted(indexed):
        entry = indexed[index]
        if set(entry) != {"weight", "bias"}:
            raise HeadError(f"{source}: layer {index} needs both weight and bias")
        layers.append((entry["weight"].T, entry["bias"]))  # torch Linear is [out, in]
    return layers, extras.get("mean"), extras.get("variance")


def load_head(path: str | Path) -> MlpHead:
    """An MlpHead from an .npz (W1, b1, ...) or a torch state dict (.pt / .pth)."""
    path = Path(path)
    source = path.name
    if not path.is_file():
        raise HeadError(f"{path}: no such head file")
    if path.suffix == ".npz":
        with np.load(path) as data:
            names = set(data.files)
            count = sum(1 for name in names if re.fullmatch(r"W\d+", name))
            expected = {f"W{i}" for i in range(1, count + 1)} | {f"b{i}" for i in range(1, count + 1)}
            unknown = names - expected - {"mean", "variance"}
            if count == 0 or not expected <= names or unknown:
                raise HeadError(
                    f"{source}: expected arrays W1, b1, ..., Wn, bn (+ optional mean, variance), "
                    f"got {sorted(names)}")
            layers = [(data[f"W{i}"], data[f"b{i}"]) for i in range(1, count + 1)]
            mean = data["mean"] if "mean" in names else None
            variance = data["variance"] if "variance" in names else None
        return MlpHead(layers, mean, variance, source=source)
    if path.suffix in (".pt", ".pth"):
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise HeadError(f"{source}: expected a state dict")
        layers, mean, variance = _layers_from_torch(state, source)
        return MlpHead(layers, mean, variance, source=source)
    raise HeadError(f"{source}: unknown head format (use .npz, .pt or .pth)")


def save_head_npz(path: str | Path, layers: Sequence[tuple[np.ndarray, np.ndarray]],
                  mean: np.ndarray | None = None, variance: np.ndarray | None = None) -> None:
    """Write a head in the npz layout above (an export of a Keras Dense stack)."""
    arrays = {}
    for index, (w, b) in enumerate(layers, start=1):
        arrays[f"W{index}"] = np.asarray(w, np.float32)
        arrays[f"b{index}"] = np.asarray(b, np.float32)
    if mean is not None:
        arrays["mean"] = np.asarray(mean, np.float32)
        arrays["variance"] = np.asarray(variance, np.float32)
    np.savez(path, **arrays)


# ------------------------------------------------------------------------- classifier


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # exp(-log(1 + exp(-z))): no overflow for large |z|.
    return np.exp(-np.logaddexp(0.0, -z))


def _logsumexp(values: np.ndarray, axis: int) -> np.ndarray:
    top = np.max(values, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    return np.squeeze(top, axis=axis) + np.log(np.sum(np.exp(values - top), axis=axis))


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


class ZeroShotClassifier:
    """Category scores for a batch of image embeddings in one matrix product.

    ``category_embeddings`` [k, d]: one ensembled text vector per category;
    ``neutral_embeddings`` [m, d]: the neutral/negative prompt vectors; ``logit_scale``:
    CLIP's s. ``negative_mask`` [k, m] (default: all True) says which neutral vectors
    each category competes with. ``heads`` (category index -> MlpHead) replace the
    zero-shot score of their category.
    """

    def __init__(self, category_embeddings: np.ndarray, neutral_embeddings: np.ndarray,
                 logit_scale: float, *, negative_mask: np.ndarray | None = None,
                 names: Sequence[str] | None = None, heads: dict[int, MlpHead] | None = None) -> None:
        categories = np.asarray(category_embeddings, np.float32)
        neutral = np.asarray(neutral_embeddings, np.float32)
        if categories.ndim != 2 or neutral.ndim != 2 or categories.shape[1] != neutral.shape[1]:
            raise EmbeddingDimensionError(
                f"category embeddings {categories.shape} and neutral embeddings {neutral.shape} "
                f"must be [k, d] and [m, d]")
        self.num_categories, self.dim = categories.shape
        self.num_neutral = neutral.shape[0]
        self.logit_scale = float(logit_scale)
        self.names = list(names) if names is not None else [str(i) for i in range(self.num_categories)]
        # [d, k + m]: categories first, then neutral prompts; one matmul gives all logits.
        self._text_t = np.ascontiguousarray(np.concatenate([categories, neutral]).T)
        if negative_mask is None:
            self._log_mask = None
        else:
            mask = np.asarray(negative_mask, bool)
            if mask.shape != (self.num_categories, self.num_neutral):
                raise ValueError(f"negative_mask must be [{self.num_categories}, {self.num_neutral}]")
            self._log_mask = np.where(mask, 0.0, -np.inf).astype(np.float32)
        self.heads = dict(heads or {})
        for index, head in self.heads.items():
            if head.input_dim != self.dim:
                raise HeadError(
                    f"category '{self.names[index]}': head {head.source} expects {head.input_dim}-d "
                    f"embeddings, the model gives {self.dim}-d")
        zero_shot = [i for i in range(self.num_categories) if i not in self.heads]
        if self._log_mask is not None and zero_shot and \
                not np.all(np.isfinite(self._log_mask[zero_shot]).any(axis=1)):
            raise ValueError("every zero-shot category needs at least one neutral prompt")

    def logits(self, image_embeddings: np.ndarray) -> np.ndarray:
        """s * cosine to every category vector and neutral vector: [n, k + m]."""
        x = np.asarray(image_embeddings, np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise EmbeddingDimensionError(
                f"the classifier takes {self.dim}-d embeddings, got an array of shape {x.shape}")
        return (x @ self._text_t) * self.logit_scale

    def scores(self, image_embeddings: np.ndarray) -> np.ndarray:
        """[n, k] scores in [0, 1] for n unit embeddings [n, d]."""
        x = np.asarray(image_embeddings, np.float32)
        if x.ndim == 2 and x.shape[0] == 0:
            return np.zeros((0, self.num_categories), np.float32)
        logits = self.logits(x).astype(np.float64)
        category_logits = logits[:, :self.num_categories]
        neutral_logits = logits[:, self.num_categories:]
        if self._log_mask is None:
            neutral_lse = _logsumexp(neutral_logits, axis=1)[:, None]
        else:
            neutral_lse = _logsumexp(neutral_logits[:, None, :] + self._log_mask[None], axis=2)
        scores = _sigmoid(category_logits - neutral_lse)
        for index, head in self.heads.items():
            scores[:, index] = head.scores(x)
        return scores.astype(np.float32)


def build_zero_shot(categories: Sequence[CategorySpec], model: Any, tokenizer: Any = None,
                    device: str | None = None, heads: dict[str, MlpHead] | None = None) -> ZeroShotClassifier:
    """Text embeddings of every prompt (one forward pass) -> a ZeroShotClassifier.

    ``model`` is an open_clip model (with its ``tokenizer`` and ``device``) or a
    ``LoadedClip``, whose own inference thread then encodes the prompts. ``heads`` (by
    category name) are used as given; other categories with a ``head_path`` load
    theirs here. A head whose width differs from the model's embeddings is a HeadError
    naming the category.
    """
    if isinstance(model, LoadedClip):
        encode, logit_scale = model.embed_texts, model.logit_scale()
    else:
        encode, logit_scale = (lambda texts: encode_texts(model, tokenizer, texts, device)), logit_scale_of(model)
    heads = dict(heads or {})
    for spec in categories:
        if spec.head_path and spec.name not in heads:
            heads[spec.name] = load_head(spec.head_path)
    positives = [p for spec in categories if spec.name not in heads for p in spec.prompts]
    neutral = list(dict.fromkeys(n for spec in categories if spec.name not in heads for n in spec.negatives))
    texts = list(dict.fromkeys(positives + neutral))
    encoded = encode(texts) if texts else None
    if encoded is None:  # only heads: no text needed, but the width still matters
        dim = next(iter(heads.values())).input_dim
        vectors: dict[str, np.ndarray] = {}
    else:
        dim = encoded.shape[1]
        vectors = dict(zip(texts, encoded))
    category_rows = []
    for spec in categories:
        if spec.name not in heads:
            category_rows.append(_unit_rows(np.mean([vectors[p] for p in spec.prompts], axis=0)[None])[0])
        else:
            category_rows.append(np.zeros(dim, np.float32))
    neutral_matrix = np.stack([vectors[n] for n in neutral]) if neutral else np.zeros((1, dim), np.float32)
    # A head's category competes with everything: its zero-shot column is replaced anyway.
    mask = np.array([[spec.name in heads or n in spec.negatives for n in neutral] for spec in categories],
                    bool) if neutral else np.ones((len(categories), 1), bool)
    by_index = {i: heads[spec.name] for i, spec in enumerate(categories) if spec.name in heads}
    return ZeroShotClassifier(
        np.stack(category_rows), neutral_matrix, logit_scale,
        negative_mask=None if mask.all() else mask,
        names=[spec.name for spec in categories], heads=by_index,
    )


def labels_of(scores_row: Sequence[float], categories: Sequence[CategorySpec]) -> list[str]:
    """Names of the categories whose score reaches their threshold, in file order."""
    return [spec.name for spec, score in zip(categories, scores_row) if score >= spec.threshold]


def classify_batch(records: Sequence[dict], classifier: ZeroShotClassifier,
                   categories: Sequence[CategorySpec]) -> list[dict]:
    """Copies of ``records``: scores (category -> float) and labels for those with an
    ``_embedding``, scores None for the others. One matrix product for the batch."""
    out = [dict(record) for record in records]
    embedded = [record for record in out if record.get("_embedding") is not None]
    for record in out:
        if record.get("_embedding") is None:
            record["scores"] = None
    if not embedded:
        return out
    matrix = classifier.scores(np.stack([np.asarray(r["_embedding"], np.float32) for r in embedded]))
    names = [spec.name for spec in categories]
    for record, row in zip(embedded, matrix):
        record["scores"] = {name: float(value) for name, value in zip(names, row)}
        record["labels"] = labels_of(row, categories)
    return out


# ------------------------------------------------------------------------------ Beam


class _ClassifyBatches(beam.DoFn):
    def __init__(self, categories: list[CategorySpec], heads: dict[str, MlpHead],
                 spec: ClipSpec | None, classifier: ZeroShotClassifier | None) -> None:
        self._categories = categories
        self._heads = heads
        self._spec = spec
        self._classifier = classifier
        self._scored = Metrics.counter("classify", "rows_scored")
        self._label_counters: dict[str, Any] = {}

    def setup(self) -> None:
        if self._classifier is None:
            # The same process-wide model the embedding stage uses, when specs match;
            # only the text embeddings are kept.
            self._classifier = build_zero_shot(self._categories, shared_clip(self._spec), heads=self._heads)
        self._label_counters = {
            spec.name: Metrics.counter("classify", f"label_{spec.name}") for spec in self._categories}

    def process(self, batch: Sequence[dict]) -> Iterator[dict]:
        for record in classify_batch(batch, self._classifier, self._categories):
            if record.get("scores") is not None:
                self._scored.inc()
                for label in record["labels"]:
                    counter = self._label_counters.get(label)
                    if counter is not None:
                        counter.inc()
            yield record


class ClassifyImages(beam.PTransform):
    """Records in, same records out with ``scores`` and ``labels`` (where embedded).

    Categories and heads are read here, at construction, so a bad file fails before the
    job starts and workers need no access to it. The text side is built once per worker
    from the same model as the embeddings (``shared_clip``), or passed in ready-made as
    ``classifier``.
    """

    def __init__(self, categories_path: str | Path | None = None, model_name: str = "ViT-B-32",
                 pretrained: str | None = None, device: str = "auto", *,
                 classifier: ZeroShotClassifier | None = None, batch_size: int = 256,
                 label: str | None = None) -> None:
        super().__init__(label)
        self._categories = load_categories(categories_path)
        self._heads = {s.name: load_head(s.head_path) for s in self._categories if s.head_path}
        self._spec = None
        if classifier is None:
            self._spec = ClipSpec(model_name, pretrained, device).validate()
            _check_head_widths(self._heads, model_name)
        elif classifier.num_categories != len(self._categories):
            raise ValueError(
                f"the classifier has {classifier.num_categories} categories, the file {len(self._categories)}")
        self._classifier = classifier
        self._batch_size = batch_size

    @classmethod
    def from_config(cls, embedding_cfg: Any, categories_path: str | Path | None = None,
                    **kwargs: Any) -> "ClassifyImages":
        return cls(categories_path, embedding_cfg.model, embedding_cfg.pretrained,
                   embedding_cfg.device, **kwargs)

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        return (
            records
            | "BatchRecords" >> beam.BatchElements(min_batch_size=1, max_batch_size=self._batch_size)
            | "Classify" >> beam.ParDo(
                _ClassifyBatches(self._categories, self._heads, self._spec, self._classifier))
        )


def _check_head_widths(heads: dict[str, MlpHead], model_name: str) -> None:
    """Head width against the model config's embed_dim, before any model is loaded."""
    import open_clip

    config = open_clip.get_model_config(model_name) or {}
    dim = config.get("embed_dim")
    for name, head in heads.items():
        if dim is not None and head.input_dim != dim:
            raise HeadError(
                f"category '{name}': head {head.source} expects {head.input_dim}-d embeddings, "
                f"{model_name} gives {dim}-d")


__all__ = [
    "DEFAULT_CATEGORIES",
    "CategoryError",
    "CategorySpec",
    "ClassifyImages",
    "EmbeddingDimensionError",
    "HeadError",
    "MlpHead",
    "ZeroShotClassifier",
    "build_zero_shot",
    "classify_batch",
    "labels_of",
    "load_categories",
    "load_head",
    "save_head_npz",
]
