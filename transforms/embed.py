"""Embed stage: one L2-normalised CLIP image embedding per decoded image.

Two sources of embeddings:

- ``EmbedImages`` runs open_clip on the downscaled RGB copy that the hash stage left in
  ``record["_image"]`` (no second download, no second decode), through Beam's
  ``RunInference``;
- ``AttachPrecomputedEmbeddings`` reuses a dataset's published embeddings in LAION's
  layout (``DIR/img_emb/img_emb_N.npy`` rows aligned with ``DIR/metadata/metadata_N.parquet``).

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

import dataclasses
import hashlib
import logging
import os
import posixpath
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, RunInference
from apache_beam.utils import shared
from PIL import Image

_LOG = logging.getLogger(__name__)

# Any model weights without a pretrained source are drawn from this seed, so a
# random-weights run (tests, demos, benchmarks) is reproducible across processes and
# reruns: every worker gets the same model and the same embeddings.
RANDOM_INIT_SEED = 0

PRECISIONS = ("fp32", "fp16", "bf16")
_AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
_SCHEMA_PREFIXES = ("hf-hub:", "local-dir:")
_REMOTE_PATH = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_TENSOR_TRANSFORMS = ("ToTensor", "MaybeToTensor")
_COPY_CHUNK = 16 * 1024 * 1024

_TO_EMBED = "to_embed"


# ---------------------------------------------------------------------- model loading


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; other names unchanged."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _is_remote(path: str) -> bool:
    return bool(_REMOTE_PATH.match(path)) and not path.startswith("file://")


def model_id_of(model_name: str, pretrained: str | None) -> str:
    """The ``model`` column: which architecture and which weights made the embeddings."""
    if pretrained is None:
        return f"{model_name}/random-init"
    return f"{model_name}/{pretrained}"


def local_checkpoint(path: str, cache_dir: str | None = None) -> str:
    """A local file holding the checkpoint at ``path`` (gs://, s3://, ... copied once).

    The copy goes through Beam's FileSystems (the worker's own credentials), lands under
    ``cache_dir`` (default: the temp dir) with the original suffix, which open_clip reads
    to pick the loader, and is reused by later loads in any process on the machine.
    """
    if not _is_remote(path):
        return path.removeprefix("file://")
    digest = hashlib.sha256(path.encode()).hexdigest()[:16]
    folder = Path(cache_dir or tempfile.gettempdir()) / "laion-audit-checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{digest}-{posixpath.basename(path)}"
    if target.exists():
        return str(target)
    partial = target.with_name(f"{target.name}.part-{os.getpid()}-{threading.get_ident()}")
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as src, \
                open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst, _COPY_CHUNK)
        os.replace(partial, target)  # atomic: a concurrent loader sees all or nothing
    finally:
        partial.unlink(missing_ok=True)
    return str(target)


def _cpu_threads(requested: int | None) -> int:
    # torch sizes its pool from the host's cores; a container pinned to fewer cores
    # (cpuset) would run oversubscribed, so the affinity mask is the upper bound.
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    return max(1, requested or min(torch.get_num_threads(), available))


def load_clip(
    model_name: str,
    pretrained: str | None,
    device: str = "auto",
    *,
    precision: str = "fp32",
    num_threads: int | None = None,
) -> tuple[torch.nn.Module, Callable[[Image.Image], torch.Tensor], Callable, str]:
    """Create an open_clip model in eval mode: ``(model, preprocess, tokenizer, model_id)``.

    ``pretrained`` is an open_clip tag (``laion2b_s34b_b79k``), a local checkpoint path, a
    remote path (gs://..., copied to a local file first), or None for random weights
    (seeded with RANDOM_INIT_SEED; loudly logged: scores from such a model mean nothing).
    ``precision`` is applied at inference time (autocast), not to the stored weights.
    On cpu, torch's thread pool is capped at the cores this process may run on.
    """
    import open_clip  # heavy import: only where a model is really built

    if precision not in PRECISIONS:
        raise ValueError(f"embedding precision must be one of {PRECISIONS}, got {precision!r}")
    device = resolve_device(device)
    if device == "cpu":
        threads = _cpu_threads(num_threads)
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
    source = local_checkpoint(pretrained) if pretrained is not None else None
    model_id = model_id_of(model_name, pretrained)
    if pretrained is None:
        _LOG.warning("%s: random weights: scores are meaningless", model_id)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=None)
    else:
        model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=source)
    model = model.to(device).eval().requires_grad_(False)
    tokenizer = open_clip.get_tokenizer(model_name)
    return model, preprocess, tokenizer, model_id


def encode_texts(model: torch.nn.Module, tokenizer: Callable, texts: Sequence[str],
                 device: str) -> np.ndarray:
    """Unit-length text embeddings [len(texts), d], float32, in one forward pass."""
    tokens = tokenizer(list(texts)).to(device)
    with torch.inference_mode():
        feats = model.encode_text(tokens)
        return F.normalize(feats.float(), dim=-1).cpu().numpy()


def logit_scale_of(model: torch.nn.Module) -> float:
    """CLIP's learned softmax temperature, exp(logit_scale), capped at 100 like in training."""
    return float(model.logit_scale.detach().exp().clamp(max=100.0).item())


@dataclass(frozen=True)
class ClipSpec:
    """Which model to load and how; equal specs share one loaded model per process."""

    model_name: str = "ViT-B-32"
    pretrained: str | None = None
    device: str = "auto"
    precision: str = "fp32"
    num_threads: int | None = None

    @property
    def model_id(self) -> str:
        return model_id_of(self.model_name, self.pretrained)

    def validate(self) -> "ClipSpec":
        """Cheap checks before anything is submitted: a typo fails here, not on a worker."""
        import open_clip

        if self.precision not in PRECISIONS:
            raise ValueError(f"embedding.precision: must be one of {PRECISIONS}, got {self.precision!r}")
        if self.model_name.startswith(_SCHEMA_PREFIXES):
            return self
        if self.model_name not in open_clip.list_models():
            raise ValueError(f"embedding.model: '{self.model_name}' is not an open_clip model config")
        pretrained = self.pretrained
        if pretrained is None or _is_remote(pretrained):
            return self
        if pretrained in open_clip.list_pretrained_tags_by_model(self.model_name):
            return self
        if not os.path.isfile(pretrained.removeprefix("file://")):
            tags = ", ".join(open_clip.list_pretrained_tags_by_model(self.model_name)) or "none"
            raise ValueError(
                f"embedding.pretrained: '{pretrained}' is neither a file nor an open_clip tag "
                f"for {self.model_name} (tags: {tags})"
            )
        return self


class LoadedClip:
    """One loaded model with what using it needs: the unit the workers share.

    Callers use methods only (no attribute access), so the same code works when the
    object is a ``MultiProcessShared`` proxy living in another process. Every forward
    pass runs on one inference thread owned by this object: a worker's bundle threads
    take turns on the model instead of each starting its own pool of torch (OpenMP)
    threads, which on cpu would fight over the same cores, and on gpu would hold a
    second set of activations.
    """

    def __init__(self, spec: ClipSpec) -> None:
        self.spec = spec
        self.device = resolve_device(spec.device)
        self.model, self.preprocess, self.tokenizer, self.model_id = load_clip(
            spec.model_name, spec.pretrained, self.device,
            precision=spec.precision, num_threads=spec.num_threads,
        )
        self._cfg = dict(self.model.visual.preprocess_cfg)
        mean = torch.tensor(self._cfg["mean"], dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self._cfg["std"], dtype=torch.float32).view(1, -1, 1, 1)
        self._mean, self._std = mean.to(self.device), std.to(self.device)
        self._inference = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clip-inference")
        self._dim: int | None = None

    @classmethod
    def load(cls, spec: ClipSpec) -> "LoadedClip":
        return cls(spec)

    def identity(self) -> str:
        return self.model_id

    def preprocess_cfg(self) -> dict:
        """open_clip's preprocessing settings for this model (size, mean, std, resize mode)."""
        return dict(self._cfg)

    def logit_scale(self) -> float:
        return logit_scale_of(self.model)

    def embedding_dim(self) -> int:
        if self._dim is None:
            self._dim = int(self.embed_texts(["a photo"]).shape[1])
        return self._dim

    def _autocast(self):
        dtype = _AUTOCAST_DTYPES.get(self.spec.precision)
        if dtype is None:
            return torch.autocast(device_type=self.device.split(":")[0], enabled=False)
        return torch.autocast(device_type=self.device.split(":")[0], dtype=dtype)

    def embed_pixels(self, pixels: np.ndarray | torch.Tensor) -> np.ndarray:
        """Unit-length image embeddings for one batch, in ONE forward pass.

        ``pixels`` is either prepared uint8 images [n, H, W, 3] (see ImagePreparer:
        normalised here, on the model's device) or float tensors [n, 3, H, W] already
        normalised like open_clip's own preprocess.
        """
        return self._inference.submit(self._embed_pixels, pixels).result()

    def _embed_pixels(self, pixels: np.ndarray | torch.Tensor) -> np.ndarray:
        x = torch.as_tensor(pixels)
        with torch.inference_mode():
            x = x.to(self.device, non_blocking=True)
            if x.dtype == torch.uint8:
                # Exactly ToTensor + Normalize, batched: same float ops, same values.
                x = x.permute(0, 3, 1, 2).to(torch.float32).div(255).sub(self._mean).div(self._std)
            else:
                x = x.to(torch.float32)
            with self._autocast():
                feats = self.model.encode_image(x)
            feats = F.normalize(feats.float(), dim=-1)
            return feats.cpu().numpy()

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self._inference.submit(encode_texts, self.model, self.tokenizer, texts, self.device).result()


_SHARED_LOCK = threading.Lock()
_SHARED_HANDLES: dict[ClipSpec, shared.Shared] = {}


def shared_clip(spec: ClipSpec) -> LoadedClip:
    """The process-wide LoadedClip for ``spec``: loaded once, shared by every thread and
    every stage (embedding and classification) that asks for the same spec.

    Held through ``apache_beam.utils.shared.Shared`` (a weak reference): the model lives
    as long as some DoFn holds it and is freed afterwards.
    """
    spec = dataclasses.replace(spec, device=resolve_device(spec.device))  # auto == cuda/cpu
    with _SHARED_LOCK:
        handle = _SHARED_HANDLES.get(spec)
        if handle is None:
            handle = _SHARED_HANDLES[spec] = shared.Shared()
    return handle.acquire(lambda: LoadedClip.load(spec), tag=spec)


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


# ------------------------------------------------------------- precomputed embeddings


class PrecomputedLayoutError(ValueError):
    """A precomputed-embeddings directory that does not line up with its metadata."""


class PrecomputedShard(NamedTuple):
    number: int
    npy_path: str
    parquet_path: str


_NPY_NAME = re.compile(r"^img_emb_(\d+)\.npy$")
_METADATA_NAME = re.compile(r"^metadata_(\d+)\.parquet$")


def _listing(pattern: str, name_re: re.Pattern) -> dict[str, str]:
    found: dict[str, str] = {}
    for match in FileSystems.match([pattern])[0].metadata_list:
        name = posixpath.basename(match.path)
        parsed = name_re.match(name)
        if parsed:
            found[parsed.group(1)] = match.path
    return found


def _open_raw(path: str):
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def npy_header(path: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) of a .npy file, reading only its header."""
    with _open_raw(path) as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        offset = handle.tell()
    if fortran or len(shape) != 2:
        raise PrecomputedLayoutError(f"{path}: expected a C-order [rows, dim] array, got shape {shape}")
    return tuple(shape), np.dtype(dtype), offset


def parquet_rows(path: str) -> int:
    with _open_raw(path) as handle:
        return pq.ParquetFile(handle).metadata.num_rows


def check_shard(shard: PrecomputedShard) -> int:
    """Rows of the shard; PrecomputedLayoutError when embeddings and metadata disagree."""
    (rows, _), _, _ = npy_header(shard.npy_path)
    meta_rows = parquet_rows(shard.parquet_path)
    if rows != meta_rows:
        raise PrecomputedLayoutError(
            f"shard {shard.number}: {posixpath.basename(shard.npy_path)} has {rows} rows but "
            f"{posixpath.basename(shard.parquet_path)} has {meta_rows}; the embeddings would "
            f"be attached to the wrong rows"
        )
    return rows


def precomputed_shards(directory: str, check_rows: bool = True) -> list[PrecomputedShard]:
    """The shards of a LAION-layout directory, sorted by number, each with both files.

    ``check_rows`` also compares each shard's row counts (two small header reads per
    shard); the attaching DoFn checks again whenever it opens a shard.
    """
    npys = _listing(FileSystems.join(directory, "img_emb", "img_emb_*.npy"), _NPY_NAME)
    metas = _listing(FileSystems.join(directory, "metadata", "metadata_*.parquet"), _METADATA_NAME)
    if not npys:
        raise PrecomputedLayoutError(f"{directory}: no img_emb/img_emb_N.npy files")
    for token in sorted(set(npys) ^ set(metas), key=int):
        if token in npys:
            raise PrecomputedLayoutError(
                f"shard {token}: img_emb/img_emb_{token}.npy has no metadata/metadata_{token}.parquet")
        raise PrecomputedLayoutError(
            f"shard {token}: metadata/metadata_{token}.parquet has no img_emb/img_emb_{token}.npy")
    numbers: dict[int, str] = {}
    for token in npys:
        if int(token) in numbers:
            raise PrecomputedLayoutError(f"shard {int(token)}: named twice ({numbers[int(token)]} and {token})")
        numbers[int(token)] = token
    shards = [PrecomputedShard(n, npys[numbers[n]], metas[numbers[n]]) for n in sorted(numbers)]
    if check_rows:
        for shard in shards:
            check_shard(shard)
    return shards


def shard_position(row_id: str) -> tuple[str, int]:
    """('N' as written in metadata_N.parquet, row position) from a read-stage row id."""
    source, sep, position = str(row_id).rpartition(":")
    parsed = _METADATA_NAME.match(posixpath.basename(source)) if sep else None
    if parsed is None or not position.isdigit():
        raise PrecomputedLayoutError(
            f"row id '{row_id}' is not '<metadata_N.parquet>:<position>'; precomputed "
            f"embeddings need the read stage's positional row ids (dataset.id_col: null)"
        )
    return parsed.group(1), int(position)


class NpyRows:
    """Row access to one img_emb_N.npy: a memmap for local files, ranged reads otherwise.

    Remote reads coalesce the requested positions into runs (gaps up to ``max_gap``
    rows are read through), so records that arrive in file order, as they do straight
    after the read stage, cost one request per run rather than one per row.
    """

    def __init__(self, path: str, max_gap: int = 256, memmap: bool | None = None) -> None:
        self.path = path
        self.shape, self.dtype, self._offset = npy_header(path)
        self._max_gap = max_gap
        if memmap is None:
            memmap = not _is_remote(path)
        self._memmap = np.load(path, mmap_mode="r") if memmap else None
        self._handle = None

    def __getitem__(self, positions: np.ndarray) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64)
        if self._memmap is not None:
            return np.asarray(self._memmap[positions])
        return self._read_remote(positions)

    def _read_remote(self, positions: np.ndarray) -> np.ndarray:
        if self._handle is None:
            self._handle = _open_raw(self.path)
        row_bytes = self.shape[1] * self.dtype.itemsize
        order = np.argsort(positions, kind="stable")
        sorted_pos = positions[order]
        out = np.empty((len(positions), self.shape[1]), dtype=self.dtype)
        start = 0
        while start < len(sorted_pos):
            end = start
            while end + 1 < len(sorted_pos) and sorted_pos[end + 1] - sorted_pos[end] <= self._max_gap:
                end += 1
            first, last = int(sorted_pos[start]), int(sorted_pos[end])
            self._handle.seek(self._offset + first * row_bytes)
            data = self._handle.read((last - first + 1) * row_bytes)
            block = np.frombuffer(data, dtype=self.dtype).reshape(-1, self.shape[1])
            out[order[start:end + 1]] = block[sorted_pos[start:end + 1] - first]
            start = end + 1
        return out

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        self._memmap = None


def attach_precomputed(records: Sequence[dict], embeddings: Any, model_id: str = "precomputed") -> list[dict]:
    """Copies of ``records`` (all from one metadata shard) with their published vectors.

    ``embeddings`` is that shard's img_emb array (a memmap, an array or NpyRows): the
    vector of row id ``metadata_N.parquet:P`` is its row P, read as float32 and
    normalised to unit length.
    """
    if not records:
        return []
    positions = np.array([shard_position(r["row_id"])[1] for r in records], dtype=np.int64)
    rows = embeddings.shape[0]
    if positions.max() >= rows:
        bad = records[int(np.argmax(positions))]["row_id"]
        raise PrecomputedLayoutError(f"row id '{bad}': the shard's embeddings have only {rows} rows")
    vectors = np.asarray(embeddings[positions], dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = vectors / np.where(norms > 0, norms, 1.0)
    out = []
    for record, vector in zip(records, vectors):
        item = dict(record)
        item.pop("_image", None)
        item["_embedding"] = vector
        item["model"] = model_id
        out.append(item)
    return out


class _AttachPrecomputed(beam.DoFn):
    def __init__(self, shards: dict[str, PrecomputedShard], model_id: str) -> None:
        self._shards = shards
        self._model_id = model_id
        self._attached = Metrics.counter("embed", "rows_precomputed")
        self._open: dict[str, NpyRows] = {}

    def setup(self) -> None:
        self._open = {}

    def _rows_of(self, token: str) -> NpyRows:
        rows = self._open.get(token)
        if rows is None:
            shard = self._shards.get(token)
            if shard is None:
                raise PrecomputedLayoutError(f"metadata_{token}.parquet has no shard in the embeddings directory")
            check_shard(shard)
            rows = self._open[token] = NpyRows(shard.npy_path)
        return rows

    def process(self, batch: Sequence[dict]) -> Iterator[dict]:
        by_shard: dict[str, list[dict]] = {}
        for record in batch:
            by_shard.setdefault(shard_position(record["row_id"])[0], []).append(record)
        for token, records in by_shard.items():
            for record in attach_precomputed(records, self._rows_of(token), self._model_id):
                self._attached.inc()
                yield record

    def teardown(self) -> None:
        for rows in self._open.values():
            rows.close()
        self._open = {}


class AttachPrecomputedEmbeddings(beam.PTransform):
    """Records read from ``DIR/metadata/*.parquet`` gain their published ``_embedding``.

    Every record of a listed shard gets its vector, whatever its fetch status: the
    embedding describes the image as the dataset captured it. For remote directories
    apply it straight after the read (before any Reshuffle), where records still come
    in file order and ranged reads stay sequential.
    """

    def __init__(self, directory: str, model_name: str = "ViT-L-14", check_rows: bool = True,
                 batch_size: int = 1024, label: str | None = None) -> None:
        super().__init__(label)
        shards = precomputed_shards(directory, check_rows=check_rows)
        # Keyed the way row ids spell the shard (padding included: metadata_0007.parquet).
        self._shards = {
            _METADATA_NAME.match(posixpath.basename(s.parquet_path)).group(1): s for s in shards
        }
        self._model_id = f"precomputed:{model_name}"
        self._batch_size = batch_size

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        return (
            records
            | "BatchRecords" >> beam.BatchElements(min_batch_size=1, max_batch_size=self._batch_size)
            | "AttachPrecomputed" >> beam.ParDo(_AttachPrecomputed(self._shards, self._model_id))
        )


def write_laion_layout(directory: str | Path, shards: Iterable[tuple[pa.Table, np.ndarray]]) -> list[PrecomputedShard]:
    """Write tables and embeddings as LAION publishes them (tests, demos)."""
    root = Path(directory)
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    (root / "img_emb").mkdir(parents=True, exist_ok=True)
    written = []
    for number, (table, embeddings) in enumerate(shards):
        parquet_path = root / "metadata" / f"metadata_{number}.parquet"
        npy_path = root / "img_emb" / f"img_emb_{number}.npy"
        pq.write_table(table, parquet_path)
        np.save(npy_path, np.ascontiguousarray(embeddings))
        written.append(PrecomputedShard(number, str(npy_path), str(parquet_path)))
    return written


__all__ = [
    "PRECISIONS",
    "RANDOM_INIT_SEED",
    "AttachPrecomputedEmbeddings",
    "ClipSpec",
    "EmbedImages",
    "ImagePreparer",
    "LoadedClip",
    "NpyRows",
    "OpenClipImageHandler",
    "PrecomputedLayoutError",
    "PrecomputedShard",
    "RecordKeyedHandler",
    "attach_embedding",
    "attach_precomputed",
    "check_shard",
    "encode_texts",
    "load_clip",
    "local_checkpoint",
    "logit_scale_of",
    "mark_embedding_failed",
    "model_id_of",
    "npy_header",
    "precomputed_shards",
    "resolve_device",
    "shard_position",
    "shared_clip",
    "stack_examples",
    "write_laion_layout",
]
