"""`cgd analyze`, `cgd visualize data`, `cgd visualize rankings`: tables and pictures.

They read the raw Examples the pipeline ingested (by default the newest
RetrievalExampleGen artifact under the config's pipeline root) and embed images
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
GRID_GAP = 8          # pixels between tiles of `cgd visualize data`, and the outer margin
GRID_TITLE = 20       # the title line above the tiles
CAPTION_HEIGHT = 15   # pixels under each tile for its class id
GRID_BACKGROUND = (255, 255, 255)
DEMO_CONFIG = "configs/demo.yaml"  # what `make demo` runs with


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
                    "Transform component does, with a gap between tiles; each tile is "
                    "captioned with its 1-based class id (the examples' 0-based "
                    "label + 1).")
    _common(data, split="train")
    data.add_argument("--out", default="data_grid.png", help="output PNG (default: %(default)s)")
    data.add_argument("--count", type=int, default=32,
                      help="images in the grid, 8 per row (default: %(default)s)")
    data.set_defaults(func=visualize_data)

    rankings = sub.add_parser(
        "rankings", help="each row a query and its top 8, matches marked (PNG + HTML)",
        description="The RecallEvaluator's ranking picture for any model: each row a query "
                    "image of the split and its nearest neighbours among the others "
                    "(legend on top: query framed blue, same-class neighbours green, others "
                    "red; under each image its class id and, for a neighbour, its distance), "
                    "plus an HTML page with image ids and classes.")
    _common(rankings, split="eval")
    _model_arg(rankings)
    rankings.add_argument("--out-dir", default="rankings",
                          help="directory for rankings.png and rankings.html "
                               "(default: %(default)s)")
    rankings.add_argument("--queries", type=int, default=8,
                          help="rows (queries) (default: %(default)s)")
    rankings.set_defaults(func=visualize_rankings)


def _common(p: argparse.ArgumentParser, split: str) -> None:
    p.add_argument("--config",
                   help=f"YAML config the pipeline ran with, e.g. {DEMO_CONFIG} after "
                        f"`make demo` (default: the packaged defaults, pipeline root "
                        f"~/cgd/pipelines)")
    p.add_argument("--examples", metavar="DIR",
                   help="raw Examples artifact dir holding Split-<split>/ (default: the newest "
                        "RetrievalExampleGen output under the config's pipeline root)")
    p.add_argument("--split", default=split, help="split to read (default: %(default)s)")


def _model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="DIR",
                   help="a SavedModel version dir (<serving_dir>/cgd/<version>, or a Pusher "
                        "pushed_model/<id>), a model base dir (<serving_dir>/cgd: its newest "
                        "version, as `cgd serve` picks it), or a Trainer Model artifact dir "
                        "(Trainer/model/<id>, holding Format-Serving/)")


def _error(message: str):
    from core.errors import CliError
    return CliError(message)


def _has_saved_model(path: str) -> bool:
    return any(os.path.isfile(os.path.join(path, name))
               for name in ("saved_model.pb", "saved_model.pbtxt"))


def _numbered(path: str) -> list[str]:
    """Subdirectories of ``path`` named by an integer (versions, artifact ids), highest first."""
    names = [d for d in os.listdir(path) if d.isdigit() and os.path.isdir(os.path.join(path, d))]
    return [os.path.join(path, d) for d in sorted(names, key=int, reverse=True)]


MODEL_LAYOUTS = ("a SavedModel version dir (<serving_dir>/cgd/<version>, holding "
                 "saved_model.pb), a model base dir (<serving_dir>/cgd: its newest version) "
                 "or a Trainer Model artifact dir (Trainer/model/<id>, holding Format-Serving/)")


def model_layout(path: str) -> tuple[str, str]:
    """(SavedModel directory, which layout ``path`` is) for ``--model``.

    Accepted layouts:

    * a SavedModel version directory, ``path/saved_model.pb``: what the Pusher writes
      (``<serving_dir>/cgd/<version>``, ``Pusher/pushed_model/<id>``);
    * a model base directory, ``path/<version>/saved_model.pb``: its highest version, as
      TF Serving and ``cgd serve --model-base-path <serving_dir> --model-name cgd`` pick
      it (``<serving_dir>/cgd``);
    * a Trainer Model artifact directory, ``path/Format-Serving/saved_model.pb``
      (``Trainer/model/<id>``; as ``tfx.utils.path_utils.serving_model_path``).

    Anything else raises a CliError naming ``path`` and, where one is recognisable, the
    directory to pass instead.
    """
    if not os.path.isdir(path):
        raise _error(f"model directory {path} does not exist; --model takes {MODEL_LAYOUTS}")
    if _has_saved_model(path):
        return path, "SavedModel version directory"
    serving = os.path.join(path, "Format-Serving")
    if _has_saved_model(serving):
        return serving, f"Trainer Model artifact {path}"
    if os.path.isdir(serving):
        raise _error(f"{serving} holds no saved_model.pb (an incomplete Model artifact?)")
    numbered = _numbered(path)
    versions = [d for d in numbered if _has_saved_model(d)]
    if versions:
        return versions[0], (f"the newest of {len(versions)} version(s) in model base "
                             f"directory {path}")
    artifacts = [d for d in numbered if _has_saved_model(os.path.join(d, "Format-Serving"))]
    if artifacts:
        raise _error(f"{path} holds Trainer Model artifacts, not a model: pass one of them, "
                     f"e.g. --model {artifacts[0]} (the newest)")
    if numbered:
        raise _error(f"{path} looks like a model base directory but none of its versions "
                     f"holds saved_model.pb (newest: {numbered[0]})")
    bases = sorted(os.path.join(path, d) for d in os.listdir(path)
                   if os.path.isdir(os.path.join(path, d))
                   and any(_has_saved_model(v) for v in _numbered(os.path.join(path, d))))
    if bases:
        raise _error(f"{path} holds model base directories, not a model: pass "
                     f"--model {bases[0]} (its newest version) or a version in it")
    raise _error(f"{path} holds no SavedModel; --model takes {MODEL_LAYOUTS}")


def _config_hint(config_path: str | None) -> str:
    if config_path:
        return (f"run the pipeline with {config_path} first (cgd pipeline run --config "
                f"{config_path}), or pass the config it ran with, e.g. --config {DEMO_CONFIG} "
                f"after `make demo`")
    return (f"no --config given, so the packaged defaults' paths were used: pass "
            f"--config {DEMO_CONFIG} after `make demo` (or the config the pipeline ran with)")


def resolve_examples_dir(cfg, examples: str | None, config_path: str | None = None) -> str:
    """``examples`` if given, else the newest RetrievalExampleGen examples artifact."""
    if examples:
        if not os.path.isdir(examples):
            raise _error(f"examples directory {examples} does not exist")
        return examples
    from pipeline.artifacts import newest_output, output_parent
    newest = newest_output(cfg, "RetrievalExampleGen", "examples")
    if newest is None:
        raise _error(f"no ingested examples under "
                     f"{output_parent(cfg, 'RetrievalExampleGen', 'examples')}: "
                     f"{_config_hint(config_path)}; or pass --examples DIR")
    return newest


def _load(args):
    """(config, examples dir, images, 0-based labels, ids, roles) of the requested split
    (roles: query/gallery per image for In-shop's protocol, else None)."""
    from core.config import load_config
    cfg = load_config(args.config)
    examples = resolve_examples_dir(cfg, args.examples, args.config)
    from components.recall_evaluator.embedding import read_eval_images
    try:
        images, labels, ids, roles = read_eval_images(examples, args.split)
    except FileNotFoundError as e:
        splits = sorted(d[len("Split-"):] for d in os.listdir(examples)
                        if d.startswith("Split-"))
        there = (f"its splits: {', '.join(splits)}" if splits else
                 "it holds no Split-*/ directory (an Examples artifact dir is "
                 "<pipeline root>/<name>/RetrievalExampleGen/examples/<id>)")
        raise _error(f"{e}; {there}") from None
    return cfg, examples, images, labels, ids, roles


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
    model_dir, layout = model_layout(args.model)
    cfg, examples, images, labels, _, roles = _load(args)
    embeddings = _embed(model_dir, images)
    try:
        result = retrieval_metrics(embeddings, labels, ks=tuple(cfg.evaluator.recall_ks),
                                   block_size=cfg.evaluator.block_size, roles=roles)
    except ValueError as e:  # e.g. no class with two images in the split
        raise _error(f"split '{args.split}' of {examples}: {e}") from None
    print(f"model:    {model_dir} ({layout})")
    print(f"examples: {examples} (split '{args.split}', "
          f"{'all-vs-all' if roles is None else 'queries searched in the gallery'})")
    print(format_table(result))
    if args.json:
        _parent_dir(args.json)
        with open(args.json, "w") as f:
            json.dump(dict(result, model=model_dir, examples=examples, split=args.split),
                      f, indent=1)
        print(f"wrote {args.json}")
    return 0


def grid_layout(count: int, size: int, columns: int = GRID_COLUMNS,
                title_width: int = 0) -> dict:
    """Where `cgd visualize data` puts things: a title line, then ``count`` tiles of
    ``size`` px, ``columns`` per row, ``GRID_GAP`` px of background between tiles and
    around them, each tile with a ``CAPTION_HEIGHT`` px label box under it.

    Returns {"size": (width, height), "title": (x, y), "tiles": [(x, y)] top-left of each
    tile, "labels": [(left, top, right, bottom)] one label box per tile}. The canvas is
    widened to ``title_width`` (+ margins) when the title is wider than the tiles.
    """
    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    pitch_x, pitch_y = size + GRID_GAP, size + CAPTION_HEIGHT + GRID_GAP
    top = GRID_GAP + GRID_TITLE
    tiles = [(GRID_GAP + (n % columns) * pitch_x, top + (n // columns) * pitch_y)
             for n in range(count)]
    labels = [(x, y + size + 1, x + size, y + size + CAPTION_HEIGHT) for x, y in tiles]
    width = max(GRID_GAP + columns * pitch_x, title_width + 2 * GRID_GAP)
    return {"size": (width, top + rows * pitch_y), "title": (GRID_GAP, GRID_GAP - 2),
            "tiles": tiles, "labels": labels}


def draw_grid(squares, class_ids, title: str, columns: int = GRID_COLUMNS):
    """A PIL image of the ``squares`` (uint8 [N, S, S, 3]) laid out by ``grid_layout``,
    each labelled ``class <id>`` (shortened when the tile is narrow) under it."""
    from PIL import Image, ImageDraw

    from components.recall_evaluator.ranking_picture import (FONT_SIZE, LEGEND_FONT_SIZE,
                                                             TEXT_COLOUR, fit_text, font,
                                                             text_width)
    size = squares.shape[1]
    title_font, label_font = font(LEGEND_FONT_SIZE), font(FONT_SIZE)
    plan = grid_layout(len(squares), size, columns, text_width(title, title_font))
    grid = Image.new("RGB", plan["size"], GRID_BACKGROUND)
    draw = ImageDraw.Draw(grid)
    draw.text(plan["title"], title, fill=TEXT_COLOUR, font=title_font)
    for square, class_id, (x, y), (left, top, right, _) in zip(
            squares, class_ids, plan["tiles"], plan["labels"]):
        grid.paste(Image.fromarray(square), (x, y))
        # A label may use half the gap on each side of its tile.
        room = right - left + GRID_GAP - 2
        text = fit_text([f"class {class_id}", f"c{class_id}", str(class_id)], room, label_font)
        draw.text((left + (right - left - text_width(text, label_font)) // 2, top), text,
                  fill=TEXT_COLOUR, font=label_font)
    return grid


def visualize_data(args: argparse.Namespace) -> int:
    import tensorflow as tf

    from components.preprocessing import image_ops
    _positive(args.count, "--count")
    cfg, examples, images, labels, *_ = _load(args)
    count = min(args.count, len(images))
    chosen = np.sort(np.random.default_rng(0).choice(len(images), size=count, replace=False))
    size = cfg.transform.image_size
    # Exactly the Transform's preprocessing_fn on the raw bytes.
    squares = image_ops.preprocess_bytes(tf.constant([images[i] for i in chosen]), size,
                                         cfg.transform.pad_value).numpy()
    title = (f"{count} images of the {args.split} split as the Transform outputs them "
             f"({size}x{size} px); under each: its {cfg.data.dataset} class id")
    grid = draw_grid(squares, [int(labels[i]) + 1 for i in chosen], title)
    _parent_dir(args.out)
    grid.save(args.out, format="PNG")
    print(f"wrote {args.out}: {count} '{args.split}' images of {examples}, padded to square "
          f"and resized to {size}x{size} px as the Transform does, captioned with the "
          f"1-based class id")
    return 0


def visualize_rankings(args: argparse.Namespace) -> int:
    from components.recall_evaluator.ranking_picture import model_pad_value, write_rankings
    _positive(args.queries, "--queries")
    model_dir, layout = model_layout(args.model)
    _, examples, images, labels, ids, roles = _load(args)
    if len(images) < 2:
        raise _error(f"split '{args.split}' of {examples} has {len(images)} image(s); "
                     f"rankings need at least 2")
    embeddings = _embed(model_dir, images)
    os.makedirs(args.out_dir, exist_ok=True)
    # Tiles padded with the model's own pad colour: the images as the model saw them.
    png, html = write_rankings(args.out_dir, embeddings, labels, images, ids, args.queries,
                               split=args.split, roles=roles, pad_value=model_pad_value(model_dir))
    print(f"wrote {png} and {html} ({min(args.queries, len(images))} queries of split "
          f"'{args.split}', model {model_dir}: {layout})")
    return 0
