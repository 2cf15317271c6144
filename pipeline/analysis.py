"""`cgd analyze`, `cgd visualize data`, `cgd visualize rankings`: tables and pictures.

They read the raw Examples the pipeline ingested (by default the newest
Cars196ExampleGen artifact under the config's pipeline root) and embed images
through a model's exported ``serving_default`` signature, reusing the
RecallEvaluator's own functions (``read_eval_images``, ``embed_with_signature``,
``write_rankings``, ``metrics.retrieval_metrics``), so the numbers and pictures
are the pipeline's own.

Heavy imports (TensorFlow, TFX) happen inside the command functions.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

GRID_COLUMNS = 8      # tiles per row of `cgd visualize data`
CAPTION_HEIGHT = 14   # pixels under each tile for its class id


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "analyze", help="Recall@K, MAP@R, R-precision and NMI of a model on a split",
        description="Embed a split of the ingested Examples through the model's "
                    "serving_default signature and print the RecallEvaluator's metrics "
                    "(Recall@K for K in evaluator.recall_ks, MAP@R, R-precision, NMI).")
    _common(p, split="eval")
    _model_arg(p)
    p.add_argument("--json", metavar="OUT", help="also write the metrics to this JSON file")
    p.set_defaults(func=analyze)

    p = subparsers.add_parser("visualize", help="PNG pictures of the data or of rankings")
    sub = p.add_subparsers(dest="visualize_command", metavar="WHAT")
    data = sub.add_parser(
        "data", help="grid of training images, padded and resized as Transform does",
        description="A PNG grid of images of a split, padded to square with "
                    "transform.pad_value and resized to transform.image_size exactly as the "
                    "Transform component does; each tile is captioned with its 1-based "
                    "Cars196 class id (the examples' 0-based label + 1).")
    _common(data, split="train")
    data.add_argument("--out", default="data_grid.png", help="output PNG (default: %(default)s)")
    data.add_argument("--count", type=int, default=32,
                      help="images in the grid, 8 per row (default: %(default)s)")
    data.set_defaults(func=visualize_data)

    rankings = sub.add_parser(
        "rankings", help="each row a query and its top 8, matches marked (PNG + HTML)",
        description="The RecallEvaluator's ranking picture for any model: each row a query "
                    "image of the split and its nearest neighbours among the others, "
                    "same-class neighbours framed green, others red.")
    _common(rankings, split="eval")
    _model_arg(rankings)
    rankings.add_argument("--out-dir", default="rankings",
                          help="directory for rankings.png and rankings.html "
                               "(default: %(default)s)")
    rankings.add_argument("--queries", type=int, default=8,
                          help="rows (queries) (default: %(default)s)")
    rankings.set_defaults(func=visualize_rankings)


def _common(p: argparse.ArgumentParser, split: str) -> None:
    p.add_argument("--config", help="YAML config (default: the packaged defaults)")
    p.add_argument("--examples", metavar="DIR",
                   help="raw Examples artifact dir holding Split-<split>/ (default: the newest "
                        "Cars196ExampleGen output under the config's pipeline root)")
    p.add_argument("--split", default=split, help="split to read (default: %(default)s)")


def _model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="DIR",
                   help="SavedModel dir (with serving_default), Pusher version dir, or TFX "
                        "Model artifact dir (holding Format-Serving/)")


def _error(message: str):
    from core.errors import CliError
    return CliError(message)


def resolve_model_dir(path: str) -> str:
    """The SavedModel directory behind a SavedModel, Pusher version or Model artifact dir.

    Like ``tfx.utils.path_utils.serving_model_path``: ``path`` itself when it holds
    ``saved_model.pb``, else its ``Format-Serving/`` (the Trainer's Model artifact layout).
    """
    if not os.path.isdir(path):
        raise _error(f"model directory {path} does not exist")
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    serving = os.path.join(path, "Format-Serving")
    if os.path.isfile(os.path.join(serving, "saved_model.pb")):
        return serving
    if os.path.isdir(serving):
        raise _error(f"{serving} holds no saved_model.pb (an incomplete Model artifact?)")
    raise _error(f"{path} holds no SavedModel: expected saved_model.pb in it (a SavedModel "
                 f"or Pusher version directory) or a Format-Serving/ subdirectory (a TFX "
                 f"Model artifact)")


def resolve_examples_dir(cfg, examples: str | None) -> str:
    """``examples`` if given, else the newest Cars196ExampleGen examples artifact."""
    if examples:
        if not os.path.isdir(examples):
            raise _error(f"examples directory {examples} does not exist")
        return examples
    from pipeline.artifacts import newest_output, output_parent
    newest = newest_output(cfg, "Cars196ExampleGen", "examples")
    if newest is None:
        raise _error(f"no ingested examples under "
                     f"{output_parent(cfg, 'Cars196ExampleGen', 'examples')}: run the pipeline "
                     f"first (cgd pipeline run) or pass --examples")
    return newest


def _load(args):
    """(config, examples dir, images, 0-based labels, ids) of the requested split."""
    from core.config import load_config
    cfg = load_config(args.config)
    examples = resolve_examples_dir(cfg, args.examples)
    from components.recall_evaluator.embedding import read_eval_images
    try:
        images, labels, ids = read_eval_images(examples, args.split)
    except FileNotFoundError as e:
        raise _error(str(e)) from None
    return cfg, examples, images, labels, ids


def _embed(model_dir: str, images) -> np.ndarray:
    from components.recall_evaluator.embedding import embed_with_signature
    try:
        return embed_with_signature(model_dir, images)
    except KeyError as e:
        raise _error(f"{model_dir}: the model has no serving_default signature taking "
                     f"'images' and returning 'embedding' (missing {e})") from None


def _positive(value: int, flag: str) -> int:
    if value < 1:
        raise _error(f"{flag} must be >= 1, got {value}")
    return value


def _parent_dir(path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)


def format_table(result: dict) -> str:
    """The metrics as an aligned two-column table (rates with 4 decimals)."""
    rows = [(key, f"{value:.4f}" if isinstance(value, float) else str(value))
            for key, value in result.items()]
    name_w = max(len("metric"), *(len(k) for k, _ in rows))
    value_w = max(len("value"), *(len(v) for _, v in rows))
    lines = [f"{'metric':<{name_w}}  {'value':>{value_w}}", f"{'-' * name_w}  {'-' * value_w}"]
    lines += [f"{key:<{name_w}}  {value:>{value_w}}" for key, value in rows]
    return "\n".join(lines)


def analyze(args: argparse.Namespace) -> int:
    from components.recall_evaluator.metrics import retrieval_metrics
    model_dir = resolve_model_dir(args.model)
    cfg, examples, images, labels, _ = _load(args)
    embeddings = _embed(model_dir, images)
    try:
        result = retrieval_metrics(embeddings, labels, ks=tuple(cfg.evaluator.recall_ks),
                                   block_size=cfg.evaluator.block_size)
    except ValueError as e:  # e.g. no class with two images in the split
        raise _error(f"split '{args.split}' of {examples}: {e}") from None
    print(f"model:    {model_dir}")
    print(f"examples: {examples} (split '{args.split}')")
    print(format_table(result))
    if args.json:
        _parent_dir(args.json)
        with open(args.json, "w") as f:
            json.dump(dict(result, model=model_dir, examples=examples, split=args.split),
                      f, indent=1)
        print(f"wrote {args.json}")
    return 0


def _caption(draw, class_id: int, width: int) -> str:
    text = f"class {class_id}"
    return text if draw.textlength(text) <= width - 2 else str(class_id)


def visualize_data(args: argparse.Namespace) -> int:
    import tensorflow as tf
    from PIL import Image, ImageDraw

    from components.preprocessing import image_ops
    _positive(args.count, "--count")
    cfg, examples, images, labels, _ = _load(args)
    count = min(args.count, len(images))
    chosen = np.sort(np.random.default_rng(0).choice(len(images), size=count, replace=False))
    size = cfg.transform.image_size
    # Exactly the Transform's preprocessing_fn on the raw bytes.
    squares = image_ops.preprocess_bytes(tf.constant([images[i] for i in chosen]), size,
                                         cfg.transform.pad_value).numpy()
    columns = min(GRID_COLUMNS, count)
    rows = -(-count // columns)
    cell_h = size + CAPTION_HEIGHT
    grid = Image.new("RGB", (columns * size, rows * cell_h), "white")
    draw = ImageDraw.Draw(grid)
    for n, (square, index) in enumerate(zip(squares, chosen)):
        x, y = (n % columns) * size, (n // columns) * cell_h
        grid.paste(Image.fromarray(square), (x, y))
        draw.text((x + 1, y + size + 1), _caption(draw, int(labels[index]) + 1, size),
                  fill="black")
    _parent_dir(args.out)
    grid.save(args.out, format="PNG")
    print(f"wrote {args.out}: {count} '{args.split}' images of {examples}, padded to square "
          f"and resized to {size}x{size} px as the Transform does, captioned with the "
          f"1-based class id")
    return 0


def visualize_rankings(args: argparse.Namespace) -> int:
    from components.recall_evaluator.ranking_picture import write_rankings
    _positive(args.queries, "--queries")
    model_dir = resolve_model_dir(args.model)
    _, examples, images, labels, ids = _load(args)
    if len(images) < 2:
        raise _error(f"split '{args.split}' of {examples} has {len(images)} image(s); "
                     f"rankings need at least 2")
    embeddings = _embed(model_dir, images)
    os.makedirs(args.out_dir, exist_ok=True)
    png, html = write_rankings(args.out_dir, embeddings, labels, images, ids, args.queries)
    print(f"wrote {png} and {html} ({min(args.queries, len(images))} queries of split "
          f"'{args.split}', model {model_dir})")
    return 0
