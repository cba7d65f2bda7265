"""Measure the classify stage on a labelled sample: precision / recall per category.

    python scripts/eval_classifier.py SAMPLE.parquet [--config configs/local.yaml]
        [--model ViT-B-32] [--pretrained laion2b_s34b_b79k] [--categories FILE]
        [--target-precision 0.9]

The sample is a parquet file with either a ``path`` column (local image files) or a
``url`` column (fetched with the audit's own fetcher), and the truth either as one
boolean column per category or as a ``labels`` column (list of category names).
Images go through the audit's own path: decode + downscale (transforms.hashing),
embedding (OpenClipImageHandler), scores (transforms.classify). For each category it
prints precision and recall at the configured threshold, and the lowest threshold whose
precision reaches ``--target-precision`` (the one with the best recall), with its
recall. Model, pretrained weights, device and categories file come from the config's
``embedding`` / ``classify`` sections; flags override them.
"""
from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from transforms.classify import CategorySpec, build_zero_shot, load_categories  # noqa: E402
from transforms.embed import OpenClipImageHandler  # noqa: E402
from transforms.hashing import ImageError, hash_image  # noqa: E402


def precision_recall(y_true: Sequence[bool], scores: Sequence[float], threshold: float) -> tuple[float, float]:
    """(precision, recall) of predicting ``score >= threshold``.

    Precision is NaN when nothing is predicted positive, recall NaN when there is no
    true positive in the sample: undefined, not zero.
    """
    truth = np.asarray(y_true, bool)
    predicted = np.asarray(scores, np.float64) >= threshold
    true_pos = int(np.sum(truth & predicted))
    precision = true_pos / int(predicted.sum()) if predicted.any() else math.nan
    recall = true_pos / int(truth.sum()) if truth.any() else math.nan
    return precision, recall


def threshold_for_precision(y_true: Sequence[bool], scores: Sequence[float],
                            target: float) -> tuple[float, float, float] | None:
    """The lowest threshold whose precision is >= target: (threshold, precision, recall).

    Candidates are the observed scores; the lowest qualifying one keeps the most
    recall. None when no threshold reaches the target.
    """
    truth = np.asarray(y_true, bool)
    values = np.asarray(scores, np.float64)
    if not truth.any() or values.size == 0:
        return None
    order = np.argsort(-values, kind="stable")
    sorted_scores, sorted_truth = values[order], truth[order]
    true_pos = np.cumsum(sorted_truth)
    predicted = np.arange(1, len(values) + 1)
    # Ties share one threshold: only the last index of each run of equal scores counts.
    last_of_tie = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    precision = true_pos / predicted
    qualifying = np.flatnonzero(last_of_tie & (precision >= target))
    if qualifying.size == 0:
        return None
    best = qualifying[-1]
    return float(sorted_scores[best]), float(precision[best]), float(true_pos[best] / truth.sum())


def truth_table(table, categories: Sequence[CategorySpec]) -> np.ndarray:
    """[rows, categories] booleans from per-category columns or a ``labels`` list column."""
    names = [spec.name for spec in categories]
    columns = set(table.column_names)
    if set(names) & columns:
        missing = [name for name in names if name not in columns]
        if missing:
            raise SystemExit(f"sample: no truth column for {', '.join(missing)}")
        return np.stack([np.asarray(table.column(name).fill_null(False).to_pylist(), bool)
                         for name in names], axis=1)
    if "labels" in columns:
        rows = table.column("labels").to_pylist()
        truth = np.array([[name in (labels or []) for name in names] for labels in rows], bool)
        return truth.reshape(len(rows), len(names))
    raise SystemExit(f"sample: needs a 'labels' column or one boolean column per category ({', '.join(names)})")


def load_images(table, allow_private_networks: bool = False) -> list:
    """The downscaled RGB image of each row (None where it cannot be had)."""
    if "path" in table.column_names:
        bodies = []
        for path in table.column("path").to_pylist():
            try:
                bodies.append(Path(path).read_bytes() if path else None)
            except OSError:
                bodies.append(None)
    elif "url" in table.column_names:
        from transforms.fetch import FetchSettings, fetch_batch

        settings = FetchSettings(allow_private_networks=allow_private_networks)
        results = fetch_batch(table.column("url").to_pylist(), settings)
        bodies = [r.body if r.status == "ok" else None for r in results]
    else:
        raise SystemExit("sample: needs a 'path' or a 'url' column")
    images = []
    for body in bodies:
        try:
            images.append(hash_image(body)[1] if body is not None else None)
        except ImageError:
            images.append(None)
    return images


def settings_from(args: argparse.Namespace) -> dict:
    """Model / pretrained / device / categories: the config file, then the flags."""
    settings = {"model": "ViT-B-32", "pretrained": None, "device": "auto", "categories": None}
    if args.config:
        data = yaml.safe_load(Path(args.config).read_text()) or {}
        embedding = data.get("embedding") or {}
        classify = data.get("classify") or {}
        for key in ("model", "pretrained", "device"):
            if key in embedding:
                settings[key] = embedding[key]
        settings["categories"] = classify.get("categories", embedding.get("categories"))
    for key in ("model", "pretrained", "device", "categories"):
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    return settings


def evaluate(truth: np.ndarray, scores: np.ndarray, categories: Sequence[CategorySpec],
             target_precision: float) -> list[dict]:
    report = []
    for index, spec in enumerate(categories):
        precision, recall = precision_recall(truth[:, index], scores[:, index], spec.threshold)
        found = threshold_for_precision(truth[:, index], scores[:, index], target_precision)
        report.append({
            "category": spec.name,
            "positives": int(truth[:, index].sum()),
            "threshold": spec.threshold,
            "precision": precision,
            "recall": recall,
            "threshold_at_target": None if found is None else found[0],
            "recall_at_target": None if found is None else found[2],
        })
    return report


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sample", help="labelled sample parquet (path or url + truth columns)")
    parser.add_argument("--config", help="run config YAML (embedding / classify sections)")
    parser.add_argument("--model")
    parser.add_argument("--pretrained")
    parser.add_argument("--device")
    parser.add_argument("--categories", help="categories YAML (default: the packaged one)")
    parser.add_argument("--target-precision", type=float, default=0.9)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--allow-private-networks", action="store_true",
                        help="let url rows reach 127.0.0.1 / private hosts (local test hosts)")
    args = parser.parse_args(argv)
    settings = settings_from(args)

    categories = load_categories(settings["categories"])
    table = pq.read_table(args.sample)
    truth = truth_table(table, categories)
    images = load_images(table, args.allow_private_networks)
    usable = [i for i, image in enumerate(images) if image is not None]
    if not usable:
        raise SystemExit("sample: no image could be read")

    handler = OpenClipImageHandler(settings["model"], settings["pretrained"], settings["device"])
    clip = handler.load_model()
    vectors = []
    for start in range(0, len(usable), args.batch_size):
        batch = [images[i] for i in usable[start:start + args.batch_size]]
        vectors.extend(handler.run_inference(batch, clip))
    classifier = build_zero_shot(categories, clip)
    scores = classifier.scores(np.stack(vectors))
    report = evaluate(truth[usable], scores, categories, args.target_precision)

    print(f"model {clip.identity()}  rows {len(images)}  evaluated {len(usable)}  "
          f"target precision {args.target_precision}")
    print(f"{'category':<18}{'pos':>6}{'thresh':>8}{'prec':>8}{'recall':>8}"
          f"{'thr@target':>12}{'rec@target':>12}")
    for row in report:
        print(f"{row['category']:<18}{row['positives']:>6}{row['threshold']:>8.3f}"
              f"{_fmt(row['precision']):>8}{_fmt(row['recall']):>8}"
              f"{_fmt(row['threshold_at_target']):>12}{_fmt(row['recall_at_target']):>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
