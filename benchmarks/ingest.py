"""Ingestion throughput: RetrievalExampleGen (TFDS parsing + Beam) vs a plain loop.

Both read the same generated Cars196 archives, real-photo sized (``cgd sample-data
--real-size``: long side 400-1,000 px, about 55 KB each; ``--small-images`` for the
small 96-240 px test images, on which fixed costs dominate). The baseline is the
simplest correct single-process loop: open the archives, PIL-decode every image
(the validity check ExampleGen makes), write gzip TFRecords of tf.Example.
ExampleGen runs through TFX's LocalDagRunner with the packaged Beam args
(DirectRunner, multi-threading, one worker per core; below 2,000 images
in-process), or in-memory, so its time includes orchestration and ML Metadata.
For Cars196's full scale and Transform see benchmarks/data_path.py.

    python benchmarks/ingest.py [--classes 60 --images-per-class 20] [--quick]

Prints a table and a Markdown row for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import sys
import tarfile
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import scipy.io  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402


def baseline_loop(source_dir: str, out_dir: str) -> int:
    """Single process: annotations from the .mat files, images from the tars."""
    annotations = {}
    with tarfile.open(os.path.join(source_dir, "car_devkit.tgz")) as tar:
        mat = scipy.io.loadmat(tar.extractfile("devkit/cars_train_annos.mat"))
    annotations["train"] = {r["fname"].item(): int(r["class"].item()) for r in mat["annotations"][0]}
    mat = scipy.io.loadmat(os.path.join(source_dir, "cars_test_annos_withlabels.mat"))
    annotations["test"] = {r["fname"].item(): int(r["class"].item()) for r in mat["annotations"][0]}
    written = 0
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    with tf.io.TFRecordWriter(os.path.join(out_dir, "baseline.gz"), options) as writer:
        for split in ("train", "test"):
            with tarfile.open(os.path.join(source_dir, f"cars_{split}.tgz")) as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    data = tar.extractfile(member).read()
                    try:
                        with Image.open(io.BytesIO(data)) as im:
                            im.load()
                    except Exception:
                        continue
                    label = annotations[split][os.path.basename(member.name)] - 1
                    example = tf.train.Example(features=tf.train.Features(feature={
                        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data])),
                        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
                    }))
                    writer.write(example.SerializeToString())
                    written += 1
    return written


def run_example_gen(source_dir: str, work: str, classes: int, beam_args) -> None:
    from tfx import v1 as tfx

    from core.config import load_config
    from pipeline.definition import create_components, create_pipeline
    if beam_args == "packaged":
        beam_args = list(load_config(None).pipeline.beam_args)
    train_last = max(1, classes // 2)
    cfg = load_config(None, {
        "pipeline": {"name": "bench-ingest", "root": f"{work}/root",
                     "metadata_path": f"{work}/metadata.sqlite", "enable_cache": False,
                     "beam_args": beam_args},
        "data": {"source_dir": source_dir, "train_classes": [1, train_last],
                 "eval_classes": [train_last + 1, classes], "validation_classes": 0},
    })
    pipeline = create_pipeline(cfg)
    pipeline.components = create_components(cfg)[:1]
    tfx.orchestration.LocalDagRunner().run(pipeline)


METHODS = {
    "plain loop (PIL + TFRecordWriter)": None,
    "ExampleGen, packaged Beam args": "packaged",
    "ExampleGen, Beam in-memory": ["--direct_running_mode=in_memory"],
}


def timed(method_args, source_dir: str, work: str, classes: int, expected: int) -> float:
    os.makedirs(work, exist_ok=True)
    start = time.perf_counter()
    if method_args is None:
        written = baseline_loop(source_dir, work)
        assert written == expected, (written, expected)
    else:
        run_example_gen(source_dir, work, classes, method_args)
    return time.perf_counter() - start


def main() -> None:
    import logging
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, nargs=2, default=[40, 160],
                        help="class counts of the small and the large run")
    parser.add_argument("--images-per-class", type=int, default=25)
    parser.add_argument("--quick", action="store_true", help="8 and 16 classes x 6 images")
    parser.add_argument("--small-images", action="store_true",
                        help="the small test images (96-240 px) instead of real-photo sizes")
    args = parser.parse_args()
    if args.quick:
        args.classes, args.images_per_class = [8, 16], 6
    from components.datasets.cars196.sample import make_sample_data
    rows = {}
    with tempfile.TemporaryDirectory() as work:
        # Untimed: the first TFX run in a process pays its imports and ML Metadata's and
        # Beam's first set-up (about 8 s), which would be charged to the smaller size.
        warm = f"{work}/warm"
        make_sample_data(warm, 4, 3, seed=1, real_size=not args.small_images)
        for i, beam_args in enumerate(a for a in METHODS.values() if a is not None):
            run_example_gen(warm, f"{work}/warm_run{i}", 4, beam_args)
        sizes = []
        for classes in args.classes:
            src = f"{work}/src{classes}"
            n = make_sample_data(src, classes, args.images_per_class, seed=0,
                                 real_size=not args.small_images).num_valid
            sizes.append(n)
            for i, (name, beam_args) in enumerate(METHODS.items()):
                seconds = timed(beam_args, src, f"{work}/run{classes}_{i}", classes, n)
                rows.setdefault(name, []).append(seconds)
                print(f"{name}: {n} images in {seconds:.2f} s", flush=True)
    n1, n2 = sizes
    print(f"\nmachine: {os.cpu_count()} cores, {platform.machine()}; "
          f"images: {n1} and {n2} ({args.images_per_class} per class)")
    print("| method | s @ %d | s @ %d | images/s @ %d | marginal images/s | fixed s |" % (n1, n2, n2))
    print("|---|---|---|---|---|---|")
    base_rate = None
    for name, (t1, t2) in rows.items():
        base_rate = base_rate or n2 / t2
        if t2 > t1:
            marginal = (n2 - n1) / (t2 - t1)
            split = f"{marginal:.0f} | {max(t1 - n1 / marginal, 0.0):.1f}"
        else:  # the larger run was not slower: run-to-run noise exceeds the difference
            split = "not resolvable | not resolvable"
        print(f"| {name} | {t1:.1f} | {t2:.1f} | {n2 / t2:.0f} ({n2 / t2 / base_rate:.2f}x) "
              f"| {split} |")


if __name__ == "__main__":
    main()
