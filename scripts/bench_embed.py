"""Benchmark the embed stage against a plain open_clip loop, in one process.

    python scripts/bench_embed.py [--images 256] [--batch-sizes 32,64] [--devices cpu,cuda]
        [--model ViT-B-32] [--repeats 3] [--beam]

Generates photo-like JPEGs (500-1000 px), decodes and downscales them through the hash
stage (the `_image` the embed stage receives), then embeds them with random weights
(weights do not change speed) in batches:

- laion-audit: ``OpenClipImageHandler.run_inference`` on a ``LoadedClip``, the code
  RunInference calls (PIL resize/crop per image to uint8, one stacked batch,
  normalisation on the device, one forward pass, unit vectors as numpy);
- open_clip (the peer): the loop from open_clip's README: ``preprocess`` per image,
  ``torch.stack``, ``encode_image`` under ``no_grad``, normalise, to numpy;
- with ``--beam``: the whole ``EmbedImages`` transform on the in-memory FnApiRunner
  (records in, records with embeddings out), to show Beam's own overhead.

Prints rows/s (wall clock) and core-ms per row (process CPU time over rows: all torch
threads count) per device and batch size. Model loading is not timed; one warm-up batch
runs before each measurement.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from scripts.sample_images import make_photo_jpeg  # noqa: E402
from transforms.embed import EmbedImages, OpenClipImageHandler  # noqa: E402
from transforms.hashing import hash_image  # noqa: E402
from transforms.records import new_record  # noqa: E402


def make_images(count: int) -> list:
    rng = random.Random(0)
    images = []
    for i in range(count):
        width = rng.randint(500, 1000)
        height = int(width * rng.choice([0.66, 0.75, 1.0, 1.33]))
        images.append(hash_image(make_photo_jpeg(i, width, height, quality=90))[1])
    return images


def batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def timed(run, rows: int, device: str) -> tuple[float, float]:
    """(rows/s, core-ms/row) of ``run()``."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return rows / wall, 1000.0 * cpu / rows


def bench_project(images: list, model_name: str, device: str, batch_size: int) -> tuple[float, float]:
    handler = OpenClipImageHandler(model_name, None, device, max_batch_size=batch_size)
    clip = handler.load_model()
    handler.run_inference(images[:batch_size], clip)  # warm-up

    def run():
        for batch in batches(images, batch_size):
            handler.run_inference(batch, clip)

    return timed(run, len(images), device)


def bench_peer(images: list, peer, device: str, batch_size: int) -> tuple[float, float]:
    model, preprocess = peer

    def embed(batch):
        x = torch.stack([preprocess(image) for image in batch]).to(device)
        with torch.no_grad():
            feats = F.normalize(model.encode_image(x), dim=-1)
        return feats.cpu().numpy()

    embed(images[:batch_size])  # warm-up

    def run():
        for batch in batches(images, batch_size):
            embed(batch)

    return timed(run, len(images), device)


# The in-memory runner runs DoFns in this process: records pick their image up here
# instead of carrying pixels through beam.Create (which pickles and bz2-compresses its
# elements into the pipeline graph, a cost real pipelines never pay).
_BENCH_IMAGES: list = []


def _bench_record(index: int) -> dict:
    record = new_record(f"bench:{index}", f"http://bench.test/{index}.jpg", None)
    record.update(status="ok", _image=_BENCH_IMAGES[index])
    return record


def bench_beam(images: list, model_name: str, device: str, batch_size: int) -> tuple[float, float]:
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    handler = OpenClipImageHandler(model_name, None, device, min_batch_size=batch_size,
                                   max_batch_size=batch_size)
    clip = handler.load_model()  # held here: the pipeline reuses this model (Shared)
    handler.run_inference(images[:batch_size], clip)
    # Imported, not taken from __main__: cloudpickle would ship a __main__ function by
    # value, with the whole image list as one of its globals.
    from scripts import bench_embed

    bench_embed._BENCH_IMAGES[:] = images

    def run():
        with beam.Pipeline(runner=FnApiRunner()) as pipeline:
            _ = (pipeline
                 | beam.Create(range(len(images)))
                 | beam.Map(bench_embed._bench_record)
                 | EmbedImages(handler))

    return timed(run, len(images), device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-sizes", default="32,64")
    parser.add_argument("--devices", default=None, help="default: cpu, plus cuda when present")
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--beam", action="store_true", help="also time EmbedImages on FnApiRunner")
    args = parser.parse_args(argv)

    import open_clip

    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    print(f"generating {args.images} images ...", flush=True)
    images = make_images(args.images)
    print(f"model {args.model} (random weights)  torch {torch.__version__}  "
          f"threads {torch.get_num_threads()}  images {len(images)}  repeats {args.repeats} "
          f"(interleaved; median and best shown)")
    print(f"{'device':<8}{'batch':>6}  {'contender':<18}{'rows/s':>10}{'best':>8}{'core-ms/row':>13}{'best':>8}")
    for device in devices:
        # Held for the whole run so every measurement reuses one loaded model (Shared).
        keep = OpenClipImageHandler(args.model, None, device).load_model()
        peer_model, _, peer_preprocess = open_clip.create_model_and_transforms(args.model, pretrained=None)
        peer = (peer_model.to(device).eval(), peer_preprocess)
        contenders = [
            ("laion-audit", lambda size: bench_project(images, args.model, device, size)),
            ("open_clip", lambda size: bench_peer(images, peer, device, size)),
        ]
        if args.beam:
            contenders.append(("laion-audit+beam", lambda size: bench_beam(images, args.model, device, size)))
        for size in sizes:
            results: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in contenders}
            for _ in range(args.repeats):
                for name, bench in contenders:
                    results[name].append(bench(size))
            for name, runs in results.items():
                rates = [rate for rate, _ in runs]
                costs = [cost for _, cost in runs]
                print(f"{device:<8}{size:>6}  {name:<18}{np.median(rates):>10.1f}{max(rates):>8.1f}"
                      f"{np.median(costs):>13.1f}{min(costs):>8.1f}", flush=True)
        del keep
    return 0


if __name__ == "__main__":
    sys.exit(main())
