"""P x K batches from the transformed examples (no TFX imports).

Batch-hard and HAP2S losses need every class in a batch to have positives:
each batch holds P distinct classes x K images. Class-balanced sampling is an
index operation (``pk_index_batches``) over one of two image stores:

- in memory (``ImageSet``): the training split held as uint8 (S*S*3 bytes per
  image: 1.2 GB for Cars196's 8k training images at 224 px), the fast path;
- streamed (``DiskImageSet``): when the split does not fit in
  ``trainer.sampler_memory_budget_mb`` (Stanford Online Products: 59,551 images,
  10.6 GiB at the stored 252 px), one pass over the transformed TFRecords writes the images
  as fixed-size uncompressed records into a local file, and each batch reads its
  P*K images at their offsets (gzip TFRecords cannot be read at an offset). Only
  the labels (8 bytes per image) and a few batches are in memory.

Both give the same batches for a seed: the same index stream picks the same
images. Augmentation (``trainer.augmentation``: random crop, flip, class hue
rotation) runs in tf.data with stateless ops seeded by (seed, batch number), so a
run is reproducible and a resumed run continues the stream at ``start_step``.
``open_training_set`` chooses the store.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import itertools
import json
import logging
import os
import shutil
import tempfile
import time
import weakref

import numpy as np
import tensorflow as tf

from components.preprocessing import image_ops
from core.names import LABEL_KEY, TRANSFORMED_IMAGE_KEY
from trainer.augmentation import augment, class_hue_rotation

log = logging.getLogger(__name__)


# The streaming path's tf.data bounds: batches read at the same time (I/O: their reads
# overlap), augmented at the same time (each augmentation op already uses every core),
# and prefetched. Its memory is these few batches, whatever the split's size.
STREAM_READ_BATCHES = 4
STREAM_AUGMENT_BATCHES = 2
STREAM_PREFETCH_BATCHES = 2
# Examples per batch when a pass reads the transformed TFRecords.
READ_BATCH = 64

_IMAGES_FILE, _LABELS_FILE, _META_FILE = "images.u8", "labels.npy", "meta.json"


@dataclasses.dataclass
class ImageSet:
    """images uint8 [N, S, S, 3], labels int64 [N] (the examples' 0-based class ids)."""
    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def release(self) -> None:
        """Nothing to clean up (DiskImageSet removes its file)."""


class DiskImageSet:
    """The training images in one uncompressed local file, labels int64 [N] in memory.

    Image ``i`` is the uint8 [S, S, 3] record at byte ``i * S*S*3`` of ``path``
    (written by ``write_disk_image_set``); ``read`` gathers any index batch with
    one positional read per image, so memory holds a batch, never the split. The
    file descriptor is opened once: another process replacing or removing the
    file does not disturb a reader.
    """

    def __init__(self, path: str, labels: np.ndarray, image_size: int):
        self.path = path
        self.labels = np.asarray(labels, np.int64)
        self.image_size = image_size
        self.image_bytes = image_size * image_size * 3
        self.reused = False  # write_disk_image_set: found complete, not written
        self._fd = os.open(path, os.O_RDONLY)
        self._close = weakref.finalize(self, os.close, self._fd)
        if os.fstat(self._fd).st_size != len(self.labels) * self.image_bytes:
            self._close()
            raise ValueError(f"{path} does not hold {len(self.labels)} images of "
                             f"{image_size}x{image_size}x3 bytes")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, 3)

    def read(self, index) -> np.ndarray:
        """uint8 [len(index), S, S, 3]: the images at ``index``, in that order."""
        index = np.asarray(index, np.int64).reshape(-1)
        out = np.empty((len(index), *self.image_shape), np.uint8)
        for row in np.argsort(index, kind="stable"):  # ascending offsets: sequential-ish reads
            got = os.preadv(self._fd, [out[row]], int(index[row]) * self.image_bytes)
            if got != self.image_bytes:
                raise OSError(f"short read of image {index[row]} in {self.path}")
        return out

    def release(self) -> None:
        """Close the file and remove its directory (the cache is single-use)."""
        self._close()
        shutil.rmtree(os.path.dirname(self.path), ignore_errors=True)


def _expand(file_patterns) -> list[str]:
    if isinstance(file_patterns, str):
        file_patterns = [file_patterns]
    files = sorted(f for p in file_patterns for f in glob.glob(p) or tf.io.gfile.glob(p))
    if not files:
        raise FileNotFoundError(f"no transformed examples match {list(file_patterns)}")
    return files


def _example_batches(files: list[str], image_size: int, batch_size: int,
                     parallel_calls=tf.data.AUTOTUNE) -> tf.data.Dataset:
    """(uint8 [B, S, S, 3], int64 [B]) batches of the examples, in file order."""
    spec = {TRANSFORMED_IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
            LABEL_KEY: tf.io.FixedLenFeature([], tf.int64)}
    return (tf.data.TFRecordDataset(files, compression_type="GZIP")
            .batch(batch_size)
            .map(lambda s: tf.io.parse_example(s, spec), num_parallel_calls=parallel_calls)
            .map(lambda f: (image_ops.parse_images(f[TRANSFORMED_IMAGE_KEY], image_size),
                            f[LABEL_KEY]), num_parallel_calls=parallel_calls))


def load_image_set(file_patterns, image_size: int, batch_size: int = 256,
                   count: int | None = None) -> ImageSet:
    """Read transformed (gzip TFRecord) examples into memory.

    With ``count`` (the number of examples, from ``count_examples``) the images are
    written into one preallocated array: the peak is the split's size, not twice it.
    """
    dataset = _example_batches(_expand(file_patterns), image_size, batch_size)
    if count == 0:
        raise ValueError(f"transformed examples {list(file_patterns)} are empty")
    if count is not None:
        images = np.empty((count, image_size, image_size, 3), np.uint8)
        labels = np.empty(count, np.int64)
        filled = 0
        for x, y in dataset.as_numpy_iterator():
            if filled + len(y) > count:
                raise ValueError(f"transformed examples {list(file_patterns)} hold more than "
                                 f"the {count} examples counted")
            images[filled:filled + len(y)], labels[filled:filled + len(y)] = x, y
            filled += len(y)
        if filled != count:
            raise ValueError(f"transformed examples {list(file_patterns)} hold {filled} "
                             f"examples, {count} counted")
        return ImageSet(images, labels)
    images, labels = [], []
    for x, y in dataset.as_numpy_iterator():
        images.append(x)
        labels.append(y)
    if not labels:
        raise ValueError(f"transformed examples {list(file_patterns)} are empty")
    return ImageSet(np.concatenate(images), np.concatenate(labels).astype(np.int64))


def write_examples(path: str, images, labels) -> None:
    """Write uint8 [N, S, S, 3] images and labels as Transform's output: a gzip TFRecord
    of tf.Examples with the serialized image (``image_ops.serialize_images``) and the
    label (tests and benchmarks make transformed data with it)."""
    serialized = image_ops.serialize_images(tf.constant(images, tf.uint8)).numpy()
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for image, label in zip(serialized, np.asarray(labels, np.int64)):
            writer.write(tf.train.Example(features=tf.train.Features(feature={
                TRANSFORMED_IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[image])),
                LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(
                    value=[int(label)])),
            })).SerializeToString())


def count_examples(file_patterns) -> int:
    """Records in the (gzip TFRecord) files: one decompressing pass, nothing parsed."""
    files = _expand(file_patterns)
    # One record at a time (a batch of records would hold their images).
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP",
                                      num_parallel_reads=min(len(files), 2))
    return int(dataset.reduce(np.int64(0), lambda total, _: total + 1))


def image_set_bytes(count: int, image_size: int) -> int:
    """Memory of ``count`` uint8 images of S x S x 3: what the in-memory path holds."""
    return count * image_size * image_size * 3


def _cache_key(files: list[str], image_size: int) -> str:
    stats = [(f, tf.io.gfile.stat(f).length, tf.io.gfile.stat(f).mtime_nsec) for f in files]
    key = json.dumps({"files": stats, "image_size": image_size}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def write_disk_image_set(file_patterns, image_size: int, cache_root: str | None = None,
                         count: int | None = None) -> DiskImageSet:
    """The examples as a DiskImageSet in ``<cache_root>/cgd-pk-stream-<key>/`` (one pass).

    ``cache_root`` defaults to the system temp dir (``TMPDIR``); it needs
    N*S*S*3 bytes free. The directory is keyed by the input files (paths, sizes,
    modification times) and the image size: a rerun after a crash or kill reuses a
    complete cache instead of writing it again. Writers write to a private partial
    file and rename it, so two processes on one host (workers of a multi-worker
    training) may build the same cache at once.
    """
    files = _expand(file_patterns)
    directory = os.path.join(cache_root or tempfile.gettempdir(),
                             f"cgd-pk-stream-{_cache_key(files, image_size)}")
    images_path = os.path.join(directory, _IMAGES_FILE)
    labels_path = os.path.join(directory, _LABELS_FILE)
    meta_path = os.path.join(directory, _META_FILE)
    meta = {"files": files, "image_size": image_size}
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            stored = json.load(f)
        if {k: stored.get(k) for k in meta} == meta:
            try:
                data = DiskImageSet(images_path, np.load(labels_path), image_size)
            except (OSError, ValueError) as error:
                log.warning("sampler: rewriting the incomplete cache %s (%s)", directory, error)
            else:
                data.reused = True
                return data
    os.makedirs(directory, exist_ok=True)
    if count is not None:
        need, free = image_set_bytes(count, image_size), shutil.disk_usage(directory).free
        if need > free:
            raise OSError(f"the streaming sampler needs {need / 2**20:.0f} MiB in {directory}, "
                          f"{free / 2**20:.0f} MiB are free: point TMPDIR at a larger disk or "
                          f"raise trainer.sampler_memory_budget_mb")
    suffix = f".{os.getpid()}.partial"
    labels = []
    try:
        with open(images_path + suffix, "wb") as out:
            # Fixed parallelism: the pass holds a few batches, whatever the split's size.
            for x, y in _example_batches(files, image_size, READ_BATCH, 2).as_numpy_iterator():
                out.write(np.ascontiguousarray(x).data)
                labels.append(y)
        if not labels:
            raise ValueError(f"transformed examples {files} are empty")
        with open(labels_path + suffix, "wb") as out:
            np.save(out, np.concatenate(labels).astype(np.int64))
        os.replace(images_path + suffix, images_path)
        os.replace(labels_path + suffix, labels_path)
        with open(meta_path + suffix, "w") as out:  # written last: marks the cache complete
            json.dump(meta, out)
        os.replace(meta_path + suffix, meta_path)
    finally:
        for partial in (images_path, labels_path, meta_path):
            if os.path.exists(partial + suffix):
                os.remove(partial + suffix)
    return DiskImageSet(images_path, np.load(labels_path), image_size)


def open_training_set(file_patterns, image_size: int, memory_budget_mb: float,
                      cache_root: str | None = None) -> ImageSet | DiskImageSet:
    """The training split in memory when it fits in ``memory_budget_mb``, else streamed.

    Size = examples x S x S x 3 bytes (``count_examples``: one pass over the
    files). Logs one line with the choice and why. Call ``release()`` on the
    result when training is done (it removes the streaming cache).
    """
    files = _expand(file_patterns)
    count = count_examples(files)
    need_mb = image_set_bytes(count, image_size) / 2**20
    why = (f"{count} images x {image_size}x{image_size}x3 uint8 = {need_mb:,.1f} MiB "
           f"{'<=' if need_mb <= memory_budget_mb else '>'} trainer.sampler_memory_budget_mb "
           f"{memory_budget_mb:g}")
    if need_mb <= memory_budget_mb:
        log.info("sampler: training split in memory: %s", why)
        return load_image_set(files, image_size, count=count)
    start = time.perf_counter()
    data = write_disk_image_set(files, image_size, cache_root, count)
    how = ("reused" if data.reused else
           f"written in {time.perf_counter() - start:.0f} s")
    log.info("sampler: streaming the training split from %s (%s): %s", data.path, how, why)
    return data


def pk_index_batches(labels: np.ndarray, p: int, k: int, seed: int, start_step: int = 0):
    """Endless index batches [P*K]: P distinct classes, K indices each, class-grouped.

    A class with fewer than K images is sampled with replacement; classes with
    a single image are never drawn (they give an anchor no positive). Batch ``s``
    depends only on (seed, s), so a resumed training continues the stream at
    ``start_step`` instead of replaying the first epoch.
    """
    labels = np.asarray(labels)
    # Indices of each class, ascending (one sort: SOP has 11k classes).
    order = np.argsort(labels, kind="stable")
    ids, starts = np.unique(labels[order], return_index=True)
    by_class = dict(zip(ids, np.split(order, starts[1:])))
    usable = np.array(sorted(c for c, idx in by_class.items() if len(idx) >= 2),
                      dtype=labels.dtype)
    if len(usable) < p:
        raise ValueError(
            f"P x K sampling needs {p} classes with at least 2 images, the data has "
            f"{len(usable)}: lower trainer.classes_per_batch")
    for step in itertools.count(start_step):
        rng = np.random.default_rng([seed, step])
        classes = rng.choice(usable, size=p, replace=False)
        yield np.concatenate([
            rng.choice(by_class[c], size=k, replace=len(by_class[c]) < k) for c in classes])


def pk_dataset(data: ImageSet | DiskImageSet, p: int, k: int, seed: int,
               random_crop: bool = True, random_flip: bool = True, label_offset: int = 0,
               crop_size: int = 0, start_step: int = 0, classes=None,
               hue_rotation: float = 0.0) -> tf.data.Dataset:
    """Endless dataset of (pixels float32 [P*K, S, S, 3], {"embedding": y, "logits": head}).

    The classification head's labels: with ``classes`` (the sorted distinct class
    ids of the training split), a label's position among them (0..n-1);
    otherwise ``y - label_offset``. ``hue_rotation`` > 0: class_hue_rotation of each
    batch, up to that fraction of a turn. An ``ImageSet`` gathers batches from memory, a
    ``DiskImageSet`` reads them from its file (the same batches for a seed) with
    fixed parallelism and prefetch, so its memory does not grow with the split.
    """
    shape = data.image_shape
    batch = p * k

    if isinstance(data, DiskImageSet):
        def index_batches():
            for index in pk_index_batches(data.labels, p, k, seed, start_step):
                yield index, data.labels[index]

        def read(index, labels):
            images = tf.numpy_function(data.read, [index], tf.uint8, stateful=False)
            return tf.ensure_shape(images, (batch, *shape)), labels

        dataset = tf.data.Dataset.from_generator(
            index_batches, output_signature=(tf.TensorSpec((batch,), tf.int64),
                                             tf.TensorSpec((batch,), tf.int64)))
        dataset = dataset.map(read, num_parallel_calls=STREAM_READ_BATCHES,
                              deterministic=True)
        parallel, prefetch = STREAM_AUGMENT_BATCHES, STREAM_PREFETCH_BATCHES
    else:
        def batches():
            for index in pk_index_batches(data.labels, p, k, seed, start_step):
                yield data.images[index], data.labels[index]

        dataset = tf.data.Dataset.from_generator(
            batches, output_signature=(tf.TensorSpec((batch, *shape), tf.uint8),
                                       tf.TensorSpec((batch,), tf.int64)))
        parallel, prefetch = tf.data.AUTOTUNE, tf.data.AUTOTUNE
    class_ids = None if classes is None else tf.constant(np.asarray(classes, np.int64))

    def prepare(step, batch):
        images, labels = batch
        batch_seed = tf.stack([tf.cast(seed, tf.int64), step])
        pixels = augment(images, batch_seed, random_crop, random_flip, crop_size)
        if hue_rotation:
            pixels = class_hue_rotation(
                pixels, labels, tf.random.experimental.stateless_fold_in(batch_seed, 2),
                hue_rotation)
        if class_ids is None:
            head = labels - label_offset
        else:
            head = tf.searchsorted(class_ids, labels, out_type=tf.int64)
        return pixels, {"embedding": labels, "logits": head}

    return (dataset.enumerate(start=start_step)
            .map(prepare, num_parallel_calls=parallel, deterministic=True)
            .prefetch(prefetch))
