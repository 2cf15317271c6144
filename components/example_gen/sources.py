"""A dataset's source by its ``data.dataset`` name, and the retrieval split of its records.

A source (``components/datasets/<name>/source.py``, found by that convention) parses its
dataset's original files into records (``components/datasets/records.py``); which images
go to train, valid and eval is decided here, in one place for every dataset, from its
spec (``components/datasets/<name>/spec.py``):

* class-range datasets (cars196, cub200): the configured 1-based class ranges
  (``core.config.retrieval_split``), the last ``validation_classes`` training classes
  held out as 'valid';
* protocol datasets (sop, inshop, folder): the record's ``protocol_split``; the training
  classes are numbered 0..T-1, so the last ``validation_classes`` of them are held out.

A class needs two images to be retrieved: a class with a single image in its split is
skipped and counted (for In-shop, a query whose item has no gallery image), never silently
scored as a miss.

A split too small to train or judge on fails the run here, once the files are parsed and
before any image is read (``check_split_sizes``): an empty or one-class 'eval' or 'valid'
split would otherwise reach Transform and the Trainer, or bless any model.
"""

from __future__ import annotations

import collections
import importlib
from typing import Iterable, Iterator

from components.datasets import records as R
from components.datasets.records import DatasetSourceError
from core.config import MIN_TRAIN_CLASSES, retrieval_split
from core.dataset_spec import dataset_module, spec_for


def iter_records(dataset: str, source_dir: str, work_dir: str,
                 options: dict | None = None) -> Iterator[dict]:
    """The records of ``dataset``'s files in ``source_dir`` (archives extracted to work_dir),
    parsed by its ``components/datasets/<dataset>/source.py``.

    A source whose spec says ``images_in_archive`` leaves the images inside the inflated
    archives (``archive.member_path``) instead of writing a file per image: Beam reads
    them there.
    """
    source = importlib.import_module(dataset_module(dataset, "source"))
    options = dict(options or {})
    if spec_for(dataset).images_in_archive:
        options["images_in_archive"] = True
    return source.iter_records(source_dir, work_dir, **options)


def restore_options(dataset: str, options: dict) -> dict:
    """The source's options after a protobuf Struct round trip (every number a double)."""
    spec = spec_for(dataset)
    return {name: spec.option(name).restore(value) for name, value in options.items()}


# Images outside the configured class ranges; classes skipped for having a single image in
# their split (one image each); In-shop queries skipped for having no gallery image.
SplitCounts = collections.namedtuple(
    "SplitCounts", "outside_classes single_image_classes queries_without_gallery")


def assign_splits(records: Iterable[dict], rule: dict) -> tuple[list[tuple[str, dict]],
                                                              SplitCounts]:
    """(split, record) for every record that is retrieved, and what was left out.

    ``rule`` is ``DataConfig.split_rule(evaluator)``. Raises DatasetSourceError when the held-out
    validation classes would leave no training class.
    """
    records = list(records)
    keyed, outside = [], 0
    if rule["train_classes"] is not None:  # class ranges
        for record in records:
            split = retrieval_split(record[R.CLASS_ID] + 1, rule["train_classes"],
                                    rule["eval_classes"], rule["validation_classes"])
            if split is None:
                outside += 1
            else:
                keyed.append((split, record))
    else:
        train_classes = {r[R.CLASS_ID] for r in records if r[R.PROTOCOL_SPLIT] == "train"}
        held_out = int(rule["validation_classes"])
        if train_classes and held_out >= len(train_classes):
            raise DatasetSourceError(
                f"data.validation_classes is {held_out} but the {rule['dataset']} source has "
                f"only {len(train_classes)} training classes: at least one must stay for "
                f"training")
        first_valid = len(train_classes) - held_out
        for record in records:
            if record[R.PROTOCOL_SPLIT] == "eval":
                keyed.append(("eval", record))
            elif record[R.PROTOCOL_SPLIT] == "train":
                keyed.append(("valid" if record[R.CLASS_ID] >= first_valid else "train", record))
            else:
                raise DatasetSourceError(
                    f"{rule['dataset']} record {record[R.IMAGE_ID]!r} has no protocol split")
    return _retrievable(keyed, outside)


def _retrievable(keyed: list[tuple[str, dict]], outside: int):
    """Drop what cannot be retrieved: single-image classes, queries without a gallery."""
    per_class = collections.Counter((split, r[R.CLASS_ID]) for split, r in keyed
                                    if r[R.EVAL_ROLE] == "")
    gallery = {r[R.CLASS_ID] for split, r in keyed if r[R.EVAL_ROLE] == "gallery"}
    singles = {key for key, n in per_class.items() if n < 2}
    kept, no_gallery = [], 0
    for split, record in keyed:
        role = record[R.EVAL_ROLE]
        if role == "" and (split, record[R.CLASS_ID]) in singles:
            continue
        if role == "query" and record[R.CLASS_ID] not in gallery:
            no_gallery += 1
            continue
        kept.append((split, record))
    return kept, SplitCounts(outside, len(singles), no_gallery)


def _split_keys(rule: dict, movers: list[str]) -> dict[str, str]:
    """{split: the keys that move images into it} for the rule's dataset; ``movers``: its
    options that decide which classes go to eval."""
    if rule["train_classes"] is not None:  # class ranges
        return {"train": "data.train_classes / data.validation_classes",
                "valid": "data.validation_classes / data.train_classes",
                "eval": "data.eval_classes / data.train_classes"}
    if movers:  # a split made by the dataset's options (the folder's hash)
        first, others = f"data.{movers[0]}", " or ".join(f"data.{m}" for m in movers[1:])
        return {"train": f"data.validation_classes / {first}",
                "valid": f"data.validation_classes / {first}",
                "eval": f"{first} (or {others})" if others else first}
    return {"train": "data.validation_classes", "valid": "data.validation_classes",
            "eval": "the dataset's own test partition (more images)"}


def split_sizes(keyed: Iterable[tuple[str, dict]]) -> dict[str, tuple[int, int, int]]:
    """{split: (images, classes, matchable queries)} of ``assign_splits``' records.

    After ``assign_splits`` every query can be matched (single-image classes and queries
    without a gallery image are gone), so the matchable queries are the images that are
    not gallery-only; classes are counted over them.
    """
    images = collections.Counter(split for split, _ in keyed)
    queries = collections.Counter(split for split, r in keyed if r[R.EVAL_ROLE] != "gallery")
    classes = collections.defaultdict(set)
    for split, r in keyed:
        if r[R.EVAL_ROLE] != "gallery":
            classes[split].add(r[R.CLASS_ID])
    return {split: (images[split], len(classes[split]), queries[split]) for split in images}


def check_split_sizes(keyed: list[tuple[str, dict]], rule: dict,
                      source_classes: Iterable[int] = ()) -> None:
    """Raises DatasetSourceError, naming the keys to change and the counts per split, when
    a split is empty or too small: 'train' below ``MIN_TRAIN_CLASSES`` classes, 'valid'
    and 'eval' below ``rule["min_classes"]`` classes or ``rule["min_queries"]`` matchable
    queries (``evaluator.min_eval_classes`` / ``min_queries``: the least that can judge).

    ``source_classes``: the 0-based class ids the source holds, to say which ranges exist.
    """
    sizes = split_sizes(keyed)
    movers = [o.name for o in spec_for(rule["dataset"]).options if o.moves_classes]
    keys = _split_keys(rule, movers)
    problems = []
    for split in rule["output_splits"]:
        _, classes, queries = sizes.get(split, (0, 0, 0))
        if split == "train":
            if classes < MIN_TRAIN_CLASSES:
                problems.append(f"'train' has {classes} class(es), fewer than "
                                f"{MIN_TRAIN_CLASSES} (a ranking loss needs a negative class); "
                                f"change {keys['train']}")
        elif classes < rule["min_classes"]:
            problems.append(f"'{split}' has {classes} class(es), fewer than "
                            f"evaluator.min_eval_classes {rule['min_classes']}; change "
                            f"{keys[split]}")
        elif queries < rule["min_queries"]:
            problems.append(f"'{split}' has {queries} queries with a match, fewer than "
                            f"evaluator.min_queries {rule['min_queries']}; change "
                            f"{keys[split]} or evaluator.min_queries")
    if not problems:
        return
    counts = ", ".join(f"{split}={sizes.get(split, (0, 0, 0))[0]} images of "
                       f"{sizes.get(split, (0, 0, 0))[1]} classes"
                       for split in rule["output_splits"])
    ids = sorted({int(c) + 1 for c in source_classes})
    where = ""
    if rule["train_classes"] is not None:
        where = (f" (data.train_classes {rule['train_classes']}, data.eval_classes "
                 f"{rule['eval_classes']}, data.validation_classes "
                 f"{rule['validation_classes']}"
                 + (f"; the source's classes are {ids[0]}-{ids[-1]}, {len(ids)} in all"
                    if ids else "") + ")")
    elif movers:
        where = (f" (data.{movers[0]} {rule['source_options'].get(movers[0])}, "
                 f"data.validation_classes {rule['validation_classes']}"
                 + (f"; the source has {len(ids)} classes" if ids else "") + ")")
    else:
        where = f" (data.validation_classes {rule['validation_classes']})"
    raise DatasetSourceError(
        f"the {rule['dataset']} split cannot train or judge a model: {'; '.join(problems)}. "
        f"Splits: {counts}{where}")
