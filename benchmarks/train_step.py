"""Training throughput vs input-pipeline throughput (images/s), in one run.

For each image size it measures, on the same random uint8 images held in a
``trainer.sampler.ImageSet`` (labels P x K class-structured like Cars196's
training split: every class has the same number of images):

  train     the CGD model compiled exactly as ``trainer.task.train`` compiles it
            (``task.set_precision``, ``task.choose_strategy``, ``build_model``,
            ``task.compile_for_training``: optimizer, ranking + classification
            losses, the config's loss weights), fitted with
            ``model.fit`` on ``sampler.pk_dataset``. The warm-up steps (the first one
            traces and compiles the train function) are excluded: the time runs from
            the end of the last warm-up step to the end of the last timed step.
  pipeline  ``sampler.pk_dataset`` alone (same data, same P x K sampling, same random
            crop + flip augmentation), iterated without the model, after a few
            warm-up batches.

and prints pipeline / train: how many times faster the input pipeline produces
batches than the train step consumes them. It must be well above 1, or the
model waits for its data. On a CPU both share the same cores during training,
so this ratio is also a measure of how much of the CPU the pipeline takes away.

Sizes: the demo size (``configs/demo.yaml``: the small backbone, 64 px, 6 x 4)
runs the demo config unchanged; any other size runs the production defaults
(``core/config.yaml``: CGD ResNet-50, descriptors SG, embedding 1536, no last
stride, random init since weights are never downloaded) at that size, with the
batch of ``--pk``. The production batch is 32 x 4 = 128; on two CPU cores a ResNet-50
train step at 224 px takes many seconds, so the default here is 8 x 4 = 32 and 3
timed steps (images/s hardly depends on the batch size on a CPU).

    TF_USE_LEGACY_KERAS=1 python benchmarks/train_step.py            # 224 px (ResNet-50, 8x4) and 64 px (demo)
    TF_USE_LEGACY_KERAS=1 python benchmarks/train_step.py --quick    # 1 timed step, 4x4 at 224 px
    TF_USE_LEGACY_KERAS=1 python benchmarks/train_step.py --sizes 64 --steps 50
    TF_USE_LEGACY_KERAS=1 python benchmarks/train_step.py --pk 32x4  # the production batch (GPU)

Prints the machine, one line per measurement and a Markdown table for
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

from core.config import DEMO_FILE, Config, load_config  # noqa: E402
from trainer import sampler, task  # noqa: E402
from trainer.model import build_model  # noqa: E402

IMAGES_PER_CLASS_IN_SET = 8   # images of each class in the random ImageSet (>= K)


@dataclasses.dataclass
class Result:
    size: int
    model: str
    batch: str
    train_steps: int
    train_seconds: float
    pipeline_batches: int
    pipeline_seconds: float
    batch_size: int

    @property
    def step_seconds(self) -> float:
        return self.train_seconds / self.train_steps

    @property
    def train_images_per_s(self) -> float:
        return self.train_steps * self.batch_size / self.train_seconds

    @property
    def pipeline_images_per_s(self) -> float:
        return self.pipeline_batches * self.batch_size / self.pipeline_seconds

    @property
    def ratio(self) -> float:
        return self.pipeline_images_per_s / self.train_images_per_s


# ------------------------------------------------------------------ machine

def _first(path: str, key: str) -> str:
    try:
        with open(path) as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith(key))
    except (OSError, StopIteration):
        return "unknown"


def load_average() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def machine() -> str:
    cores = len(os.sched_getaffinity(0))
    cpu = _first("/proc/cpuinfo", "model name")
    mem_kb = _first("/proc/meminfo", "MemTotal").split()[0]
    mem = f"{int(mem_kb) / 2**20:.0f} GiB" if mem_kb.isdigit() else "unknown"
    gpus = tf.config.list_physical_devices("GPU")
    gpu = ", ".join(tf.config.experimental.get_device_details(g).get("device_name", g.name)
                    for g in gpus) or "no GPU"
    return (f"{cores} cores (nproc; {os.cpu_count()} online), CPU {cpu}, {mem} RAM, {gpu}; "
            f"TensorFlow {tf.__version__}, tf_keras {tf_keras.__version__}")


# ------------------------------------------------------------------ setup

def config_for(size: int, p: int, k: int, jit_compile: bool = False,
               steps_per_execution: int = 1) -> Config:
    """The demo config at the demo size, else the production defaults at ``size``, P x K.

    The model input is ``size`` (no stored-image crop) and the weights random: the
    speed of a step does not depend on them, and a benchmark must not download.
    """
    switches = {"jit_compile": jit_compile, "steps_per_execution": steps_per_execution}
    demo = load_config(DEMO_FILE)
    if size == demo.transform.image_size:
        return demo.replace(trainer=switches)
    return load_config(None, {"transform": {"image_size": size},
                              "trainer": dict(switches, classes_per_batch=p, images_per_class=k,
                                              backbone_weights="none", input_size=0)})


def random_image_set(cfg: Config, seed: int = 0) -> sampler.ImageSet:
    """Random uint8 images, IMAGES_PER_CLASS_IN_SET per training class, Cars196 class ids."""
    rng = np.random.default_rng(seed)
    size = cfg.transform.image_size
    first_class = cfg.data.train_range[0] - 1          # 0-based, as in the examples
    labels = np.repeat(np.arange(cfg.data.num_train_classes) + first_class,
                       IMAGES_PER_CLASS_IN_SET).astype(np.int64)
    images = rng.integers(0, 256, (len(labels), size, size, 3), dtype=np.uint8)
    return sampler.ImageSet(images, labels)


def make_dataset(cfg: Config, data: sampler.ImageSet) -> tf.data.Dataset:
    """sampler.pk_dataset with the arguments trainer.task.train passes."""
    t = cfg.trainer
    return sampler.pk_dataset(data, t.classes_per_batch, t.images_per_class, t.seed,
                              t.random_crop, t.random_flip, cfg.data.train_range[0] - 1)


def compiled_model(cfg: Config) -> tf_keras.Model:
    """The model as trainer.task.train builds and compiles it (same calls, same order)."""
    tf_keras.utils.set_random_seed(cfg.trainer.seed)
    task.set_precision(cfg.trainer.mixed_precision)
    t = cfg.trainer
    num_classes = cfg.data.num_train_classes
    with task.choose_strategy().scope():
        model = build_model(t, num_classes, cfg.transform.image_size)
        task.compile_for_training(model, t, num_classes)
    return model


# ------------------------------------------------------------------ measurements

class StepEnds(tf_keras.callbacks.Callback):
    """perf_counter() at the end of every train batch (the logs are synced to NumPy first)."""

    def __init__(self):
        super().__init__()
        self.ends: list[float] = []
        self.losses: list[float] = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float((logs or {}).get("loss", float("nan"))))
        self.ends.append(time.perf_counter())


def time_training(cfg: Config, data: sampler.ImageSet, warmup: int, steps: int) -> list[float]:
    """Durations of ``steps`` train steps after ``warmup`` (compile) steps, via model.fit."""
    model = compiled_model(cfg)
    timer = StepEnds()
    model.fit(make_dataset(cfg, data), epochs=1, steps_per_epoch=warmup + steps,
              callbacks=[timer], verbose=0)
    if not np.all(np.isfinite(timer.losses)):
        raise RuntimeError(f"non-finite training loss: {timer.losses}")
    tf_keras.mixed_precision.set_global_policy("float32")   # as task.train does
    tf_keras.backend.clear_session()
    return list(np.diff(timer.ends[warmup - 1:]))


def time_pipeline(cfg: Config, data: sampler.ImageSet, warmup: int, min_batches: int,
                  min_seconds: float) -> tuple[int, float]:
    """(batches, seconds) drawn from pk_dataset after ``warmup`` batches.

    Draws at least ``min_batches`` and for at least ``min_seconds``, so the batches
    prefetched during the warm-up are a negligible part of the count.
    """
    iterator = iter(make_dataset(cfg, data))
    for _ in range(warmup):
        next(iterator)
    batches, start = 0, time.perf_counter()
    while batches < min_batches or time.perf_counter() - start < min_seconds:
        pixels, _ = next(iterator)
        batches += 1
    elapsed = time.perf_counter() - start
    assert pixels.dtype == tf.float32 and pixels.shape[0] == cfg.trainer.batch_size
    return batches, elapsed


def measure(size: int, args) -> Result:
    cfg = config_for(size, *args.pk, args.jit_compile, args.steps_per_execution)
    t = cfg.trainer
    steps = args.steps or (args.small_steps if t.backbone == "small" else args.resnet_steps)
    data = random_image_set(cfg)
    print(f"\n== {size} px: {t.model} {t.backbone} {t.descriptors}-{t.embedding_dim}, "
          f"batch {t.classes_per_batch}x{t.images_per_class} = {t.batch_size}, "
          f"{len(data)} random images of {cfg.data.num_train_classes} classes "
          f"({data.images.nbytes / 2**20:.0f} MiB)", flush=True)
    batches, pipeline_s = time_pipeline(cfg, data, args.pipeline_warmup,
                                        args.pipeline_batches, args.pipeline_seconds)
    print(f"   pipeline: {batches} batches in {pipeline_s:.2f} s", flush=True)
    durations = time_training(cfg, data, args.warmup, steps)
    print(f"   train:    {steps} steps in {sum(durations):.2f} s after {args.warmup} warm-up "
          f"(step min {min(durations):.3f} s, median {np.median(durations):.3f} s, "
          f"max {max(durations):.3f} s)", flush=True)
    return Result(size, f"{t.model} {t.backbone} {t.descriptors}-{t.embedding_dim}",
                  f"{t.classes_per_batch}x{t.images_per_class}", steps, sum(durations),
                  batches, pipeline_s, t.batch_size)


# ------------------------------------------------------------------ report

def _rate(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:.0f}"


def markdown_table(results: list[Result]) -> str:
    rows = ["| image px | model | batch P×K | timed steps | train s/step | train img/s "
            "| pipeline img/s | pipeline / train |",
            "|---:|---|---|---:|---:|---:|---:|---:|"]
    for r in results:
        rows.append(f"| {r.size} | {r.model} | {r.batch} = {r.batch_size} | {r.train_steps} "
                    f"| {r.step_seconds:.3f} | {_rate(r.train_images_per_s)} "
                    f"| {_rate(r.pipeline_images_per_s)} | {r.ratio:.1f}× |")
    return "\n".join(rows)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", dest="sizes", help="one image size (same as --sizes SIZE)")
    ap.add_argument("--jit-compile", action="store_true",
                    help="XLA-compile the train step (trainer.jit_compile)")
    ap.add_argument("--steps-per-execution", type=int, default=1,
                    help="train steps per tf.function call (trainer.steps_per_execution)")
    ap.add_argument("--sizes", default="224,64",
                    help="comma-separated image sizes; the demo's size runs configs/demo.yaml "
                         "(default 224,64)")
    ap.add_argument("--pk", default="8x4",
                    help="P x K batch at the non-demo sizes (default 8x4; production is 32x4)")
    ap.add_argument("--steps", type=int, default=None,
                    help="timed train steps at every size (default: 3 for ResNet-50, "
                         "30 for the demo's small backbone)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed first train steps (>= 1)")
    ap.add_argument("--pipeline-batches", type=int, default=20,
                    help="at least this many timed input-pipeline batches (default 20)")
    ap.add_argument("--pipeline-seconds", type=float, default=3.0,
                    help="and for at least this many seconds (default 3)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 4x4, 1 ResNet-50 step, 10 demo steps, pipeline >= 1 s")
    args = ap.parse_args(argv)
    args.sizes = [int(s) for s in str(args.sizes).split(",") if s.strip()]
    args.pk = tuple(int(v) for v in args.pk.lower().replace("×", "x").split("x"))
    args.resnet_steps, args.small_steps, args.pipeline_warmup = 3, 30, 3
    if args.quick:
        args.pk, args.resnet_steps, args.small_steps = (4, 4), 1, 10
        args.pipeline_batches, args.pipeline_seconds = 10, 1.0
    if len(args.pk) != 2 or min(args.pk) < 2 or args.warmup < 1:
        ap.error("--pk must be PxK with P, K >= 2, and --warmup >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    print(f"# machine: {machine()}")
    print(f"# load average before: {load_average()} (1, 5, 15 min)")
    print(f"# command: {' '.join([Path(sys.argv[0]).name] + sys.argv[1:])}", flush=True)
    started = time.perf_counter()
    results = [measure(size, args) for size in args.sizes]
    print(f"\n# load average after: {load_average()}; total {time.perf_counter() - started:.0f} s")
    print(f"# timed after {args.warmup} warm-up train step(s) and "
          f"{args.pipeline_warmup} warm-up pipeline batches\n")
    print(markdown_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
