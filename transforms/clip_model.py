"""Model loading: one open_clip model per process, shared by embedding and classification.

Both stages that use CLIP take it from here: ``transforms.embed`` embeds images with it,
``transforms.classify`` embeds the category prompts with the very same model. A
``ClipSpec`` names the model (architecture, weights, device, precision, cpu threads);
``shared_clip`` hands every thread and every stage of a process the one ``LoadedClip``
loaded for an equal spec, so a worker holds one copy of the weights however many stages
and threads use them, and text and image vectors come from the same weights.

Kept apart from the RunInference handler so that the classifier needs neither the
handler nor its image preparation, and apart from ``transforms.precomputed`` (LAION's
published embeddings), which needs no model at all and so does not import torch.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import posixpath
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.utils import shared
from PIL import Image

from transforms.paths import is_remote

_LOG = logging.getLogger(__name__)

# Any model weights without a pretrained source are drawn from this seed, so a
# random-weights run (tests, demos, benchmarks) is reproducible across processes and
# reruns: every worker gets the same model and the same embeddings.
RANDOM_INIT_SEED = 0

PRECISIONS = ("fp32", "fp16", "bf16")
_AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
_SCHEMA_PREFIXES = ("hf-hub:", "local-dir:")
_COPY_CHUNK = 16 * 1024 * 1024


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; other names unchanged."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


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
    if not is_remote(path):
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
        if pretrained is None or is_remote(pretrained):
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


__all__ = [
    "PRECISIONS",
    "RANDOM_INIT_SEED",
    "ClipSpec",
    "LoadedClip",
    "encode_texts",
    "load_clip",
    "local_checkpoint",
    "logit_scale_of",
    "model_id_of",
    "resolve_device",
    "shared_clip",
]
