"""The gallery the user names (``gallery_index.gallery``), read into rows, plus the catalogue.

- "eval": the eval split of the examples, with the evaluator's roles (all-vs-all, or
  In-shop's query/gallery; components/recall_evaluator/embedding.py reads it);
- a folder of images: one sub-folder per class (its name is the class), every image a
  query and a gallery item; images directly in the folder have no class;
- a CSV file with a header naming at least ``path`` and ``id`` (paths relative to the
  file); every other column is stored metadata, and a ``class_name`` column gives labels.

The living catalogue's current items (search/catalogue.py, at
``<serving_model_dir>/catalogue``) are folded in as gallery items with no class: they are
served, so they are distractors to every query. Paths are read with ``tf.io.gfile``
(local or gs://).
"""

from __future__ import annotations

import csv
import io
import os
from typing import NamedTuple, Optional

import numpy as np
import tensorflow as tf

from components.recall_evaluator import embedding
from core.names import CATALOGUE_DIR, CLASS_NAME_KEY, EVAL_GALLERY, LABEL_KEY

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
QUERY, GALLERY, BOTH = "query", "gallery", ""
CSV_REQUIRED = ("path", "id")


class Gallery(NamedTuple):
    """Rows to embed. ``labels`` are class ids, a distinct negative id for a row without
    a class (it never matches); ``roles`` as the evaluator's (""/"query"/"gallery"):
    the index holds the rows whose role is not "query"."""
    images: list
    ids: list
    labels: np.ndarray
    roles: np.ndarray
    metadata: list
    catalogue_seq: int = 0     # the catalogue's last op folded in (the manifest records it)
    catalogue_items: int = 0   # the last rows: the catalogue's current items

    @property
    def indexed(self) -> np.ndarray:
        return np.flatnonzero(self.roles != QUERY)


def _no_class(count: int, start: int = 0) -> np.ndarray:
    return -1 - np.arange(start, start + count, dtype=np.int64)


def from_eval_split(examples_uri: str, split: str) -> Gallery:
    images, labels, ids, roles = embedding.read_eval_images(examples_uri, split)
    names = embedding.read_class_names(examples_uri, split)
    metadata = [{LABEL_KEY: int(label), "split": split} for label in labels.tolist()]
    if names is not None:
        for row, name in zip(metadata, names):
            row[CLASS_NAME_KEY] = name
    roles = np.full(len(ids), BOTH, dtype=object) if roles is None else roles.astype(object)
    return Gallery(images, ids, labels, roles, metadata)


def _read(path: str) -> bytes:
    with tf.io.gfile.GFile(path, "rb") as f:
        return f.read()


def from_folder(root: str, key: str = "gallery_index.gallery") -> Gallery:
    images, ids, labels, metadata, unlabelled = [], [], [], [], 0
    classes = sorted(n.rstrip("/") for n in tf.io.gfile.listdir(root)
                     if tf.io.gfile.isdir(os.path.join(root, n)))
    for name in sorted(tf.io.gfile.listdir(root)):
        if name.lower().endswith(IMAGE_SUFFIXES):
            images.append(_read(os.path.join(root, name)))
            ids.append(name)
            unlabelled += 1
            labels.append(-unlabelled)
            metadata.append({"path": name})
    for label, cls in enumerate(classes):
        for name in sorted(tf.io.gfile.listdir(os.path.join(root, cls))):
            if name.lower().endswith(IMAGE_SUFFIXES):
                rel = f"{cls}/{name}"
                images.append(_read(os.path.join(root, cls, name)))
                ids.append(rel)
                labels.append(label)
                metadata.append({"path": rel, CLASS_NAME_KEY: cls})
    if not images:
        raise ValueError(f"{key}: no images ({', '.join(IMAGE_SUFFIXES)}) in the folder {root} "
                         "or its class sub-folders")
    return Gallery(images, ids, np.asarray(labels, np.int64),
                   np.full(len(ids), BOTH, dtype=object), metadata)


def from_csv(path: str, key: str = "gallery_index.gallery") -> Gallery:
    with tf.io.gfile.GFile(path) as f:
        rows = list(csv.DictReader(io.StringIO(f.read())))
    header = list(rows[0]) if rows else []
    missing = [c for c in CSV_REQUIRED if c not in header]
    if missing:
        raise ValueError(f"{key}: the CSV {path} has no column(s) {missing} in its header "
                         f"(it needs {', '.join(CSV_REQUIRED)}[, metadata columns]); "
                         f"got {header}")
    base = os.path.dirname(path)
    classes = sorted({r[CLASS_NAME_KEY] for r in rows if r.get(CLASS_NAME_KEY)})
    label_of = {name: i for i, name in enumerate(classes)}
    images, ids, labels, metadata = [], [], [], []
    for line, row in enumerate(rows, start=2):
        image_path = row["path"] if "://" in row["path"] or os.path.isabs(row["path"]) \
            else os.path.join(base, row["path"])
        if not tf.io.gfile.exists(image_path):
            raise FileNotFoundError(f"{key}: {path} line {line}: no image at {image_path}")
        images.append(_read(image_path))
        ids.append(row["id"])
        cls = row.get(CLASS_NAME_KEY)
        labels.append(label_of[cls] if cls else -1 - line)
        metadata.append({k: v for k, v in row.items() if k != "id"})
    return Gallery(images, ids, np.asarray(labels, np.int64),
                   np.full(len(ids), BOTH, dtype=object), metadata)


def read(gallery: str, examples_uri: Optional[str], split: str) -> Gallery:
    """The gallery ``gallery_index.gallery`` names; a clear error naming the key if absent."""
    if gallery == EVAL_GALLERY:
        if examples_uri is None:
            raise ValueError("gallery_index.gallery is 'eval' but the GalleryIndexer was given "
                             "no examples")
        rows, where = from_eval_split(examples_uri, split), f"split '{split}' of {examples_uri}"
    elif tf.io.gfile.isdir(gallery):
        rows, where = from_folder(gallery), gallery
    elif tf.io.gfile.exists(gallery):
        rows, where = from_csv(gallery), gallery
    else:
        raise FileNotFoundError(f"gallery_index.gallery: {gallery} is neither 'eval', a folder "
                                "of images nor a CSV file")
    seen, twice = set(), []
    for image_id in rows.ids:
        if image_id in seen:
            twice.append(image_id)
        seen.add(image_id)
    if twice:
        raise ValueError(f"gallery_index.gallery: the gallery ({where}) holds {len(twice)} "
                         f"repeated id(s), first {twice[:5]}: every gallery item needs its own id")
    return rows


def _without(gallery: Gallery, removed: set) -> Gallery:
    """``gallery`` without the items the catalogue removed: they leave the index; an
    all-vs-all image still queries it (it is still a picture of its class), an In-shop
    gallery image is dropped."""
    roles = gallery.roles.copy()
    keep = []
    for row, image_id in enumerate(gallery.ids):
        if image_id in removed and roles[row] == GALLERY:
            continue
        if image_id in removed:
            roles[row] = QUERY
        keep.append(row)
    return Gallery([gallery.images[i] for i in keep], [gallery.ids[i] for i in keep],
                   gallery.labels[keep], roles[keep], [gallery.metadata[i] for i in keep])


def with_catalogue(gallery: Gallery, serving_model_dir: str) -> Gallery:
    """``gallery`` with the catalogue's removals applied and its current items added
    (unchanged when there is no catalogue)."""
    directory = os.path.join(serving_model_dir, CATALOGUE_DIR)
    if not tf.io.gfile.isdir(directory):
        return gallery
    from search.catalogue import Catalogue

    # One read of the journal: the items and the sequence number the manifest records must
    # agree, or the service would replay an op the index already holds (or skip one it
    # lacks) when an add lands while the pipeline runs. Folded as Catalogue folds them.
    ops = Catalogue(directory).ops_after(0)
    seq = ops[-1].seq if ops else 0
    current, removed = {}, set()
    for op in ops:
        if op.kind == "add":
            current[op.id] = op
            removed.discard(op.id)
        else:
            current.pop(op.id, None)
            removed.add(op.id)
    items = list(current.values())
    gallery = _without(gallery, removed)
    served = {gallery.ids[i] for i in gallery.indexed}
    clash = sorted(served & set(current))
    if clash:
        raise ValueError(f"the catalogue {directory} adds id(s) the gallery already holds: "
                         f"{clash[:5]}{' ...' if len(clash) > 5 else ''}; remove them from the "
                         "catalogue (or rename them in the gallery)")
    low = int(min(gallery.labels.min(), 0))
    return Gallery(
        gallery.images + [_read(op.image_path) for op in items],
        gallery.ids + [op.id for op in items],
        np.concatenate([gallery.labels, _no_class(len(items), -low)]),
        np.concatenate([gallery.roles, np.full(len(items), GALLERY, dtype=object)]),
        gallery.metadata + [dict(op.metadata or {}) for op in items],
        catalogue_seq=seq, catalogue_items=len(items))
