"""`cgd analyze`, `cgd visualize data`, `cgd visualize rankings`: tables and pictures.

They read the raw Examples the pipeline ingested (by default the newest
Cars196ExampleGen artifact under the config's pipeline root) and embed images
through a model's exported ``serving_default`` signature, reusing the
RecallEvaluator's own functions, so the numbers match the pipeline's.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np


def register(subparsers) -> None:
    p = subparsers.add_parser("analyze", help="Recall@K, MAP@R, R-precision, NMI of a model")
    _common(p, split="eval")
    p.add_argument("--model", required=True,
                   help="SavedModel dir, Pusher version dir or TFX Model artifact dir")
    p.add_argument("--json", help="also write the metrics to this JSON file")
    p.set_defaults(func=analyze)

    p = subparsers.add_parser("visualize", help="PNG pictures of the data or of rankings")
    sub = p.add_subparsers(dest="visualize_command", metavar="WHAT")
    data = sub.add_parser("data", help="grid of padded and resized training images")
    _common(data, split="train")
    data.add_argument("--out", default="data_grid.png", help="output PNG")
    data.add_argument("--count", type=int, default=32, help="images in the grid")
    data.set_defaults(func=visualize_data)
    rankings = sub.add_parser("rankings", help="each row a query and its top 8, matches marked")
    _common(rankings, split="eval")
    rankings.add_argument("--model", required=True, help="as for `cgd analyze`")
    rankings.add_argument("--out-dir", default="rankings", help="output directory")
    rankings.add_argument("--queries", type=int, default=8, help="rows (queries)")
    rankings.set_defaults(func=visualize_rankings)


def _common(p: argparse.ArgumentParser, split: str) -> None:
    p.add_argument("--config", help="YAML config (default: the packaged defaults)")
    p.add_argument("--examples", help="raw Examples artifact dir (default: the newest "
                                      "Cars196ExampleGen output under the pipeline root)")
    p.add_argument("--split", default=split, help=f"split to read (default: {split})")


def _error(message: str):
    from pipeline.cli import CliError
    return CliError(message)


def resolve_model_dir(path: str) -> str:
    """The SavedModel inside a SavedModel, Pusher version or TFX Model artifact directory."""
    for candidate in (path, os.path.join(path, "Format-Serving")):
        if os.path.isfile(os.path.join(candidate, "saved_model.pb")):
            return candidate
    raise _error(f"{path} holds no SavedModel (expected saved_model.pb in it or in "
                 f"its Format-Serving/ subdirectory)")


def resolve_examples_dir(cfg, examples: str | None) -> str:
    if examples:
        if not os.path.isdir(examples):
            raise _error(f"examples directory {examples} does not exist")
        return examples
    parent = os.path.join(cfg.pipeline.root, cfg.pipeline.name, "Cars196ExampleGen", "examples")
    runs = [d for d in os.listdir(parent) if d.isdigit()] if os.path.isdir(parent) else []
    if not runs:
        raise _error(f"no ingested examples under {parent}: run the pipeline first or "
                     f"pass --examples")
    return os.path.join(parent, max(runs, key=int))


def _load(args):
    from pipeline.config import load_config
    cfg = load_config(args.config)
    from components.recall_evaluator.executor import read_eval_images
    examples = resolve_examples_dir(cfg, args.examples)
    try:
        images, labels, ids = read_eval_images(examples, args.split)
    except FileNotFoundError as e:
        raise _error(str(e)) from None
    return cfg, images, labels, ids


def analyze(args: argparse.Namespace) -> int:
    from components.recall_evaluator.executor import embed_with_signature
    from components.recall_evaluator.metrics import retrieval_metrics
    model_dir = resolve_model_dir(args.model)
    cfg, images, labels, _ = _load(args)
    embeddings = embed_with_signature(model_dir, images)
    result = retrieval_metrics(embeddings, labels, ks=tuple(cfg.evaluator.recall_ks),
                               block_size=cfg.evaluator.block_size)
    print(f"model {model_dir}, split '{args.split}': {result['num_images']} images, "
          f"{result['num_classes']} classes")
    for key, value in result.items():
        print(f"  {key:<12} {value:.4f}" if isinstance(value, float) else f"  {key:<12} {value}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(result, model=model_dir, split=args.split), f, indent=1)
        print(f"wrote {args.json}")
    return 0


def visualize_data(args: argparse.Namespace) -> int:
    import tensorflow as tf
    from PIL import Image, ImageDraw

    from components.transform import image_ops
    cfg, images, labels, _ = _load(args)
    count = min(args.count, len(images))
    chosen = np.random.default_rng(0).choice(len(images), size=count, replace=False)
    size = cfg.transform.image_size
    squares = image_ops.preprocess_bytes(tf.constant([images[i] for i in chosen]), size,
                                         cfg.transform.pad_value).numpy()
    columns = min(8, count)
    rows = -(-count // columns)
    caption = 14
    grid = Image.new("RGB", (columns * size, rows * (size + caption)), "white")
    draw = ImageDraw.Draw(grid)
    for n, (square, index) in enumerate(zip(squares, chosen)):
        x, y = (n % columns) * size, (n // columns) * (size + caption)
        grid.paste(Image.fromarray(square), (x, y))
        draw.text((x + 2, y + size + 1), f"class {labels[index] + 1}", fill="black")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    grid.save(args.out)
    print(f"wrote {args.out}: {count} {args.split} images, padded to square and resized to "
          f"{size} px as the Transform does")
    return 0


def visualize_rankings(args: argparse.Namespace) -> int:
    from components.recall_evaluator.executor import embed_with_signature, write_rankings
    model_dir = resolve_model_dir(args.model)
    _, images, labels, ids = _load(args)
    embeddings = embed_with_signature(model_dir, images)
    os.makedirs(args.out_dir, exist_ok=True)
    png, html = write_rankings(args.out_dir, embeddings, labels, images, ids, args.queries)
    print(f"wrote {png} and {html}")
    return 0
