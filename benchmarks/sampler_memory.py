"""Peak memory and throughput of the Trainer's data path: in memory vs streaming.

The Trainer (``trainer.task.train``) opens the transformed training split with
``sampler.open_training_set``: in memory (``ImageSet``, the fast path) when
examples x S x S x 3 bytes fit in ``trainer.sampler_memory_budget_mb``, otherwise
streamed (``DiskImageSet``: one pass writes the images to a local uncompressed
file, each batch reads its P*K images at their offsets). This script runs both
paths on the same generated transformed data, each in a fresh subprocess, and
measures:

  setup     ``open_training_set``: the counting pass, then the load into memory
            or the cache write (seconds; the counting pass also on its own)
  peak      the process's peak RSS (``VmHWM``) above its RSS after TensorFlow's
            warm-up, over setup and the batches (MiB)
  gather    ms per P x K batch of the raw uint8 gather, the one step where the paths
            differ: ``images[index]`` in memory, ``DiskImageSet.read(index)`` streamed
            (30 index batches of ``pk_index_batches``)
  batches/s ``sampler.pk_dataset`` with the production arguments (P x K, random
            crop of trainer.input_size from the stored transform.image_size, flip),
            iterated without a model after 3 warm-up batches, for at least
            ``--batches`` batches and ``--seconds`` seconds.

The streaming path's gather and batches/s are measured twice: with its file in the
page cache (as right after the write), and evicted (its pages dropped with
posix_fadvise(DONTNEED), which touches no other file), so that the reads go to the
disk. Each path runs ``--repeats`` times, interleaved, so that load from other jobs
hits both. Ratios are against the in-memory path measured in the same run
(streaming / in memory). Data: SOP-like classes (2 to 12 images, mean about 5, as
Stanford Online Products' 59,551 training images in 11,318 classes), images drawn by
``components.datasets.synthetic`` (a pool of 512, JPEG-encoded and decoded, padded
and resized like Transform does), written as Transform writes them
(``sampler.write_examples``: gzip TFRecords of serialized uint8 tensors), in shards
of 1,000.

    TF_USE_LEGACY_KERAS=1 python benchmarks/sampler_memory.py          # 3,000 and 12,000 images
    TF_USE_LEGACY_KERAS=1 python benchmarks/sampler_memory.py --full   # + 59,551 (SOP), ~20 GB disk
    TF_USE_LEGACY_KERAS=1 python benchmarks/sampler_memory.py --sizes 2000 --image-size 64

Prints the machine, one line per measurement and a Markdown table for
docs/benchmarks.md. Generated data stays in ``--workdir`` for reruns
(``--clean`` removes it at the end).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SOP_TRAIN_IMAGES = 59_551
SHARD = 1000
POOL = 512


# ------------------------------------------------------------------ data

def sop_like_labels(n: int, seed: int = 0):
    """n labels in classes of 2..12 images (mean about 5), shuffled, 0-based contiguous."""
    import numpy as np
    rng = np.random.default_rng(seed)
    sizes = []
    while sum(sizes) < n:
        sizes.append(int(min(12, 2 + rng.geometric(1 / 4.3) - 1)))
    sizes[-1] -= sum(sizes) - n
    if sizes[-1] < 2:
        sizes[-2] += sizes.pop()
    labels = np.repeat(np.arange(len(sizes)), sizes)
    return rng.permutation(labels)


def image_pool(size: int, pad_value, seed: int = 0):
    """POOL uint8 [S, S, 3] images: synthetic objects, JPEG round trip, pad + resize."""
    import io

    import numpy as np
    import tensorflow as tf
    from PIL import Image

    from components.datasets import synthetic
    from components.preprocessing import image_ops
    rng = np.random.default_rng(seed)
    pool = []
    for j in range(POOL):
        look = synthetic.class_look(j + 1, POOL, rng)
        width, height = synthetic.image_size(rng)
        image, _ = synthetic.draw_object(look, rng, width * 2, height * 2)
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=90)
        pixels = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        pool.append(image_ops.preprocess_pixels(tf.constant(pixels), size, pad_value)
                    .numpy())
    return np.stack(pool)


def make_data(directory: Path, n: int, size: int, pad_value) -> str:
    """Transformed examples of n SOP-like images in shards; reused when already there."""
    import numpy as np

    from trainer import sampler
    pattern = str(directory / "*.gz")
    meta = directory / "meta.json"
    if meta.exists() and json.loads(meta.read_text()) == {"n": n, "size": size}:
        return pattern
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    labels = sop_like_labels(n)
    pool = image_pool(size, pad_value)
    start = time.perf_counter()
    shards = (n + SHARD - 1) // SHARD
    for shard in range(shards):
        part = np.arange(shard * SHARD, min(n, (shard + 1) * SHARD))
        # A different pool image per example (and a flipped copy for half), no two
        # consecutive records alike: gzip sees no cross-record repetition.
        images = pool[(part * 37) % POOL].copy()
        images[part % 2 == 1] = images[part % 2 == 1, :, ::-1]
        sampler.write_examples(str(directory / f"data_tfrecord-{shard:05d}-of-{shards:05d}.gz"),
                               images, labels[part])
    meta.write_text(json.dumps({"n": n, "size": size}))
    print(f"   generated {n} images ({len(np.unique(labels))} classes) in "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    return pattern


# ------------------------------------------------------------------ one measurement (subprocess)

def status(key: str) -> int:
    """Bytes of a /proc/self/status counter (this process's own; ru_maxrss would include
    the parent's RSS at fork)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))


def time_batches(dataset, min_batches: int, min_seconds: float) -> tuple[int, float]:
    iterator = iter(dataset)
    for _ in range(3):
        next(iterator)
    batches, start = 0, time.perf_counter()
    while batches < min_batches or time.perf_counter() - start < min_seconds:
        next(iterator)
        batches += 1
    return batches, time.perf_counter() - start


def worker(args) -> None:
    """Prints one JSON line: the measurements of one path on one data size."""
    import numpy as np
    import tensorflow as tf

    from core.config import load_config
    from trainer import augmentation, sampler
    t = load_config(None).trainer
    size = args.image_size
    crop = t.input_size if t.input_size and t.input_size < size else 0
    # Warm the runtime (thread pools, kernels) so the baseline includes it.
    augmentation.augment(tf.zeros((2, size, size, 3), tf.uint8), tf.constant([0, 1], tf.int64),
                    True, True, crop).numpy()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
    except OSError:
        pass
    baseline = status("VmRSS")
    counting = {}
    count_examples = sampler.count_examples

    def timed_count(patterns):  # open_training_set's counting pass, timed on its own
        begin = time.perf_counter()
        counting["n"] = count_examples(patterns)
        counting["s"] = time.perf_counter() - begin
        return counting["n"]

    sampler.count_examples = timed_count
    start = time.perf_counter()
    data = sampler.open_training_set(args.worker, size, args.budget_mb, args.cache)
    setup_s = time.perf_counter() - start

    def dataset():
        return sampler.pk_dataset(data, args.p, args.k, t.seed, t.random_crop, t.random_flip,
                                  crop_size=crop, classes=np.unique(data.labels))

    out = {"kind": type(data).__name__, "n": counting["n"], "count_s": counting["s"],
           "setup_s": setup_s, "setup_peak": status("VmHWM") - baseline}
    streaming = isinstance(data, sampler.DiskImageSet)
    gather = data.read if streaming else (lambda index: data.images[index])
    out["gather_ms"] = time_gather(gather, data.labels, args, start_step=0)
    out["warm"] = time_batches(dataset(), args.batches, args.seconds)
    if streaming:
        drop_page_cache(data.path)
        out["gather_cold_ms"] = time_gather(gather, data.labels, args, start_step=10_000)
        drop_page_cache(data.path)
        out["cold"] = time_batches(dataset(), args.batches, args.seconds)
    out["peak"] = status("VmHWM") - baseline
    out["baseline"] = baseline
    data.release()
    print(json.dumps(out), flush=True)


def time_gather(gather, labels, args, start_step: int, batches: int = 30) -> float:
    """ms per P x K batch of the raw uint8 gather: the only step the two paths differ in."""
    from trainer import sampler
    indices = list(itertools.islice(
        sampler.pk_index_batches(labels, args.p, args.k, 0, start_step), batches))
    start = time.perf_counter()
    for index in indices:
        gather(index)
    return (time.perf_counter() - start) / batches * 1000


def drop_page_cache(path: str) -> None:
    """Evict this one file's pages (posix_fadvise DONTNEED): its next reads go to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def measure(pattern: str, budget_mb: float, args) -> dict:
    command = [sys.executable, __file__, "--worker", pattern, "--budget-mb", str(budget_mb),
               "--cache", str(args.workdir / "cache"), "--image-size", str(args.image_size),
               "--pk", f"{args.p}x{args.k}", "--batches", str(args.batches),
               "--seconds", str(args.seconds)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode:
        raise RuntimeError(f"worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ report

def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    mem = next(int(line.split()[1]) for line in open("/proc/meminfo")
               if line.startswith("MemTotal"))
    import tensorflow as tf
    return (f"nproc {os.cpu_count()}, {cpu}, MemTotal {mem / 2**20:.1f} GiB, "
            f"Python {platform.python_version()}, TensorFlow {tf.__version__}, "
            f"load average {os.getloadavg()[0]:.1f}")


def rate(r: dict, phase: str = "warm") -> float:
    batches, seconds = r[phase]
    return batches / seconds


def rows(n: int, size: int, mem: list[dict], stream: list[dict]) -> list[str]:
    """Table rows of one size: per path the mean over the repeats (each repeat listed)."""
    import numpy as np
    data_mib = n * size * size * 3 / 2**20
    base_rate = np.mean([rate(r) for r in mem])
    base_peak = max(r["peak"] for r in mem)
    base_gather = np.mean([r["gather_ms"] for r in mem])
    out = []
    for label, runs, phase, gather_key in (
            ("in memory", mem, "warm", "gather_ms"),
            ("streaming, file in page cache", stream, "warm", "gather_ms"),
            ("streaming, file evicted", stream, "cold", "gather_cold_ms")):
        rates = [rate(r, phase) for r in runs]
        gathers = [r[gather_key] for r in runs]
        peak = max(r["peak"] for r in runs)
        out.append(
            f"| {n:,} | {data_mib:,.0f} | {label} | {np.mean([r['count_s'] for r in runs]):.1f} | "
            f"{np.mean([r['setup_s'] for r in runs]):.1f} | {peak / 2**20:,.0f} | "
            f"{peak / base_peak:.2f} | {np.mean(gathers):.1f} | "
            f"{np.mean(gathers) / base_gather:.1f} | "
            f"{' / '.join(f'{x:.2f}' for x in rates)} | {np.mean(rates) / base_rate:.2f} |")
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3000, 12000],
                        help="numbers of training images (default 3000 12000)")
    parser.add_argument("--full", action="store_true",
                        help=f"add the SOP size, {SOP_TRAIN_IMAGES} images")
    parser.add_argument("--image-size", type=int, default=0,
                        help="stored S (default: transform.image_size of core/config.yaml)")
    parser.add_argument("--pk", default="", help="P x K (default: the production config)")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=2,
                        help="runs of each path, interleaved (default 2)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cgd-sampler-benchmark"))
    parser.add_argument("--clean", action="store_true", help="remove --workdir at the end")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--budget-mb", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    from core.config import load_config
    cfg = load_config(None)
    args.image_size = args.image_size or cfg.transform.image_size
    args.p, args.k = (map(int, args.pk.split("x")) if args.pk else
                      (cfg.trainer.classes_per_batch, cfg.trainer.images_per_class))
    if args.worker:
        return worker(args)
    sizes = sorted(set(args.sizes + ([SOP_TRAIN_IMAGES] if args.full else [])))
    need = max(sizes) * args.image_size ** 2 * 3
    free = shutil.disk_usage(args.workdir.parent).free
    if 2.2 * need > free:
        raise SystemExit(f"{max(sizes)} images need about {2.2 * need / 2**30:.0f} GiB of disk "
                         f"(data + cache), {free / 2**30:.0f} GiB free")
    print(f"machine: {machine()}; disk free {free / 2**30:.0f} GiB")
    crop = cfg.trainer.input_size if 0 < cfg.trainer.input_size < args.image_size else "none"
    print(f"S = {args.image_size} stored, random crop {crop}, P x K = "
          f"{args.p}x{args.k}, budget for in memory: unlimited, for streaming: 1 MiB", flush=True)
    lines = []
    for n in sizes:
        print(f"== {n} images", flush=True)
        pattern = make_data(args.workdir / f"data-{n}-{args.image_size}", n, args.image_size,
                            cfg.transform.pad_value)
        mem, stream = [], []
        for repeat in range(args.repeats):  # interleaved: load from other jobs hits both
            mem.append(measure(pattern, 1e9, args))
            print(f"   in memory: {json.dumps(mem[-1])}", flush=True)
            stream.append(measure(pattern, 1, args))
            print(f"   streaming: {json.dumps(stream[-1])}", flush=True)
        lines += rows(n, args.image_size, mem, stream)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}\n")
    print("| images | uint8 MiB | path | count s | setup s | peak MiB | peak ratio | "
          "gather ms/batch | gather ratio | batches/s (each run) | batches/s ratio |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(lines))
    if args.clean:
        shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
