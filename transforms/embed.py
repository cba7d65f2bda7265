"""Embed stage: one L2-normalised CLIP image embedding per decoded image.

Two sources of embeddings:

- ``EmbedImages`` (here) runs open_clip on the downscaled RGB copy that the hash stage
  left in ``record["_image"]`` (no second download, no second decode), through Beam's
  ``RunInference``; the model comes from ``transforms.clip_model``;
- ``transforms.precomputed.AttachPrecomputedEmbeddings`` reuses a dataset's published
  embeddings in LAION's layout (``DIR/img_emb/img_emb_N.npy`` rows aligned with
  ``DIR/metadata/metadata_N.parquet``).

Either way a record leaves with ``_embedding`` (float32, unit length, in-flight only) and
``model`` (which model made it).

Why RunInference keyed by the record itself: ``KeyedModelHandler`` passes its keys
through untouched, so the key is the record (its image taken out) and the example is
the image. The record therefore crosses RunInference exactly once and meets its vector
in the same element: no CoGroupByKey, no shuffle of billions of records, no second
copy. RunInference brings what a hand-written batching DoFn would have to rebuild:
``BatchElements`` sizing, one model per process shared by all threads (``Shared``), or
one per machine across processes (``large_model`` / ``model_copies``), inference
metrics, and a dead-letter output. A failed batch is retried one record at a time, so
one bad image never costs its batch-mates their embeddings; a record that fails alone
becomes ``internal_error``.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import torch
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, RunInference
from PIL import Image

from transforms.clip_model import ClipSpec, LoadedClip, shared_clip

_LOG = logging.getLogger(__name__)

_TENSOR_TRANSFORMS = ("ToTensor", "MaybeToTensor")

_TO_EMBED = "to_embed"


# ------------------------------------------------------------------- image preparation


class ImagePreparer:
    """open_clip's inference preprocessing, split at ToTensor.

    The PIL part (resize, crop, mode) runs per image on the worker's CPU and yields a
    compact uint8 array [H, W, 3]; the float part (scale to 0..1, normalise) runs
    batched on the model's device inside ``LoadedClip.embed_pixels``. A transform of an
    unexpected shape falls back to open_clip's full preprocess (float [3, H, W]).
    """

    def __init__(self, preprocess_cfg: dict) -> None:
        from open_clip.transform import PreprocessCfg, image_transform_v2

        full = image_transform_v2(PreprocessCfg(**preprocess_cfg), is_train=False)
        steps = list(getattr(full, "transforms", []))
        names = [type(step).__name__ for step in steps]
        self._full = full
        self._pil_part = None
        for index, name in enumerate(names):
            if name in _TENSOR_TRANSFORMS and names[index + 1:] == ["Normalize"]:
                from torchvision.transforms import Compose

                self._pil_part = Compose(steps[:index])
                break

    def prepare(self, example: Any) -> np.ndarray | torch.Tensor:
        """One example as the model takes it; arrays and tensors are taken as prepared."""
        if isinstance(example, (np.ndarray, torch.Tensor)):
            return example
        if not isinstance(example, Image.Image):
            raise TypeError(f"cannot embed a {type(example).__name__}: expected a PIL image")
        if self._pil_part is None:
            return self._full(example)
        return np.asarray(self._pil_part(example), dtype=np.uint8)


def stack_examples(prepared: Sequence[np.ndarray | torch.Tensor]) -> np.ndarray | torch.Tensor:
    """One batch array from prepared examples (all must have the same kind and shape)."""
    if all(isinstance(item, np.ndarray) for item in prepared):
        return np.stack(prepared)
    return torch.stack([torch.as_tensor(item) for item in prepared])


def _example_bytes(example: Any) -> int:
    if isinstance(example, Image.Image):
        return example.width * example.height * len(example.getbands())
    if isinstance(example, np.ndarray):
        return int(example.nbytes)
    if isinstance(example, torch.Tensor):
        return int(example.element_size() * example.nelement())
    return 0


# ---------------------------------------------------------------------- model handler


class OpenClipImageHandler(ModelHandler[Any, np.ndarray, LoadedClip]):
    """RunInference handler: PIL images (or prepared pixels) in, unit float32 vectors out.

    ``run_inference`` prepares each example, stacks the batch into one array and runs
    one forward pass; it returns plain numpy vectors (no PredictionResult, no copy of
    the example). ``large_model`` / ``model_copies`` share one model across the worker
    processes of a machine (MultiProcessShared); otherwise each process loads one model
    shared by its threads. ``resource_hints`` (Beam's, e.g. ``accelerator``) are applied
    to the inference steps.
    """

    def __init__(
        self,
        model_name: str = "ViT-B-32",
        pretrained: str | None = None,
        device: str = "auto",
        *,
        precision: str = "fp32",
        num_threads: int | None = None,
        min_batch_size: int = 1,
        max_batch_size: int = 64,
        large_model: bool = False,
        model_copies: int | None = None,
        resource_hints: dict[str, str] | None = None,
        validate: bool = True,
    ) -> None:
        super().__init__(
            min_batch_size=min_batch_size,
            max_batch_size=max_batch_size,
            large_model=large_model,
            model_copies=model_copies,
        )
        self.spec = ClipSpec(model_name, pretrained, device, precision, num_threads)
        if validate:
            self.spec.validate()
        self._settings = dict(
            precision=precision, num_threads=num_threads, min_batch_size=min_batch_size,
            max_batch_size=max_batch_size, large_model=large_model, model_copies=model_copies,
            resource_hints=dict(resource_hints or {}),
        )
        self._preparers: dict[str, ImagePreparer] = {}

    @property
    def model_id(self) -> str:
        return self.spec.model_id

    def with_batch_size(self, min_batch_size: int, max_batch_size: int) -> "OpenClipImageHandler":
        """The same model and settings with other batch bounds (the one-by-one retry)."""
        settings = dict(self._settings, min_batch_size=min_batch_size, max_batch_size=max_batch_size)
        spec = self.spec
        return OpenClipImageHandler(spec.model_name, spec.pretrained, spec.device,
                                    validate=False, **settings)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_preparers"] = {}  # rebuilt on the worker from the model's own config
        return state

    def load_model(self) -> LoadedClip:
        return shared_clip(self.spec)

    def preparer_for(self, model: LoadedClip) -> ImagePreparer:
        key = model.identity()
        preparer = self._preparers.get(key)
        if preparer is None:
            preparer = self._preparers[key] = ImagePreparer(model.preprocess_cfg())
        return preparer

    def run_inference(
        self,
        batch: Sequence[Any],
        model: LoadedClip,
        inference_args: dict[str, Any] | None = None,
    ) -> list[np.ndarray]:
        preparer = self.preparer_for(model)
        pixels = stack_examples([preparer.prepare(example) for example in batch])
        return list(model.embed_pixels(pixels))

    def get_num_bytes(self, batch: Sequence[Any]) -> int:
        # The default pickles the whole batch just to measure it.
        return sum(_example_bytes(example) for example in batch)

    def get_resource_hints(self) -> dict[str, str]:
        # e.g. {"accelerator": "type:nvidia-l4;count:1;install-nvidia-driver"}: the GPU
        # goes to the inference steps only, not to the whole pipeline.
        return dict(self._settings["resource_hints"])

    def get_metrics_namespace(self) -> str:
        return "embed_inference"

    def validate_inference_args(self, inference_args: dict[str, Any] | None) -> None:
        if inference_args:
            raise ValueError("OpenClipImageHandler takes no inference_args")


class RecordKeyedHandler(KeyedModelHandler):
    """KeyedModelHandler whose keys are the records themselves (their image removed).

    Results come out as ``(record, vector)`` with nothing to join. Only the size
    metric differs from the base class, which would pickle every batch of records.
    """

    def __init__(self, unkeyed: OpenClipImageHandler) -> None:
        super().__init__(unkeyed)

    def get_num_bytes(self, batch: Sequence[tuple[dict, Any]]) -> int:
        return self._unkeyed.get_num_bytes([example for _, example in batch])


# ---------------------------------------------------------------------- record helpers


def attach_embedding(record: dict, vector: np.ndarray, model_id: str) -> dict:
    """A copy of ``record`` carrying its embedding and the model that made it."""
    out = dict(record)
    out.pop("_image", None)
    out["_embedding"] = np.asarray(vector, dtype=np.float32)
    out["model"] = model_id
    return out


def mark_embedding_failed(record: dict, error_class: str) -> dict:
    """A copy of ``record`` with status internal_error; the row stays in the audit."""
    out = dict(record)
    out.pop("_image", None)
    out.pop("_embedding", None)
    out["status"] = "internal_error"
    out["error"] = f"embedding failed: {error_class}"
    return out



def _error_class(exc_info: Any) -> str:
    exc_type = exc_info[0] if isinstance(exc_info, tuple) and exc_info else exc_info
    return getattr(exc_type, "__name__", type(exc_type).__name__)


class _SplitOnImage(beam.DoFn):
    """Records with an image go to inference as (record without image, image)."""

    def process(self, record: dict) -> Iterator:
        if record.get("_image") is None:
            if "_image" in record:
                record = dict(record)
                del record["_image"]
            yield record
            return
        out = dict(record)
        image = out.pop("_image")
        yield beam.pvalue.TaggedOutput(_TO_EMBED, (out, image))


class _AttachEmbeddings(beam.DoFn):
    def __init__(self, model_id: str) -> None:
        self._model_id = model_id
        self._embedded = Metrics.counter("embed", "rows_embedded")

    def process(self, element: tuple[dict, np.ndarray]) -> Iterator[dict]:
        record, vector = element
        self._embedded.inc()
        yield attach_embedding(record, vector, self._model_id)


class _RetryOneByOne(beam.DoFn):
    """A failed batch's (record, image) pairs, to be embedded again one at a time."""

    def __init__(self) -> None:
        self._retried = Metrics.counter("embed", "batches_retried")

    def process(self, failure: tuple[Sequence, Any]) -> Iterator:
        batch, exc_info = failure
        self._retried.inc()
        _LOG.warning("an embedding batch of %d failed (%s); retrying its records one at a time",
                     len(batch), _error_class(exc_info))
        yield from batch


class _MarkFailed(beam.DoFn):
    def __init__(self) -> None:
        self._failed = Metrics.counter("embed", "rows_failed")

    def process(self, failure: tuple[Sequence, Any]) -> Iterator[dict]:
        batch, exc_info = failure
        error_class = _error_class(exc_info)
        for record, _ in batch:
            self._failed.inc()
            yield mark_embedding_failed(record, error_class)


class EmbedImages(beam.PTransform):
    """Records in, same records out: those with ``_image`` gain ``_embedding`` + ``model``.

    Records without ``_image`` pass through untouched. A batch that fails is retried
    record by record; a record that still fails comes out with status
    ``internal_error`` and error ``embedding failed: <ExceptionClass>``. Counters:
    embed/rows_embedded, embed/rows_failed, embed/batches_retried.
    """

    def __init__(self, handler: OpenClipImageHandler, label: str | None = None) -> None:
        super().__init__(label)
        self._handler = handler

    @classmethod
    def from_config(cls, cfg: Any, **handler_options: Any) -> "EmbedImages":
        """From the config's ``embedding`` section (model, pretrained, device, batch_size)."""
        return cls(OpenClipImageHandler(
            cfg.model, cfg.pretrained, cfg.device,
            max_batch_size=cfg.batch_size, **handler_options,
        ))

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        handler = self._handler
        # One identifier for both passes: with large_model they share one loaded copy.
        # It names files (MultiProcessShared's address file): a digest, not the spec.
        digest = hashlib.sha256(repr(handler.spec).encode()).hexdigest()[:16]
        model_identifier = f"laion-audit-embed-{digest}"
        split = records | "SplitOnImage" >> beam.ParDo(_SplitOnImage()).with_outputs(
            _TO_EMBED, main="passthrough")

        embedded, dead = split[_TO_EMBED] | "RunInference" >> RunInference(
            RecordKeyedHandler(handler), model_identifier=model_identifier,
            metrics_namespace="embed_inference",
        ).with_exception_handling()
        retried, dead_again = (
            dead.failed_inferences
            | "RetryOneByOne" >> beam.ParDo(_RetryOneByOne())
            | "RunInferenceSingly" >> RunInference(
                RecordKeyedHandler(handler.with_batch_size(1, 1)),
                model_identifier=model_identifier,
                metrics_namespace="embed_inference_retry",
            ).with_exception_handling()
        )
        attached = (
            (embedded, retried)
            | "EmbeddedRecords" >> beam.Flatten()
            | "AttachEmbeddings" >> beam.ParDo(_AttachEmbeddings(handler.model_id))
        )
        failed = dead_again.failed_inferences | "MarkFailed" >> beam.ParDo(_MarkFailed())
        return (split["passthrough"], attached, failed) | "Records" >> beam.Flatten()


__all__ = [
    "EmbedImages",
    "ImagePreparer",
    "OpenClipImageHandler",
    "RecordKeyedHandler",
    "attach_embedding",
    "mark_embedding_failed",
    "stack_examples",
]
