"""The data path at Cars196 scale: ExampleGen, Transform and Trainer against plain loops.

Real-photo-sized Cars196 archives (``cgd sample-data --real-size``; by default 196
classes x 83 images = 16,268 images, about 0.9 GB, like the real dataset), generated
once and cached under ``out/bench/`` by their parameters. Each case runs in its own
process, as `cgd pipeline run` runs the pipeline (TFX's LocalDagRunner in one
orchestrating process, Beam's DirectRunner with the packaged ``pipeline.beam_args``):

* ``whole pipeline, 2 workers``: every component through LocalDagRunner with ML
  Metadata, the packaged config with ``--direct_num_workers=2`` and caching off; the
  Trainer (``BENCH_TRAINER``) a small CGD model, one epoch of ``--trainer-steps`` steps,
  its whole training split in memory. Each component's time is from LocalDagRunner's
  own "Component X is running" to "is finished" log lines, so it includes TFX's driver,
  ML Metadata and Beam's start-up.
* ``RetrievalExampleGen, 1 worker``: ExampleGen alone, ``--direct_num_workers=1``.
* ``plain ExampleGen loop`` (the issue's baseline): the simplest correct single process
  over the same archives: annotations from the ``.mat`` files, every image read from the
  tar and fully decoded by PIL (the validity check), a ``tf.Example`` with the JPEG
  bytes, label and box, written with ``tf.io.TFRecordWriter(..., "GZIP")`` (level 6).
  ``... ExampleGen's per-image work``: the same loop with ExampleGen's own check (a
  1/8-scale JPEG decode) and the JPEG bytes stored (gzip level 0): what is left of the
  ratio is the runner's doing.
* ``plain Transform loop``: the simplest correct single process over ExampleGen's
  output: parse each raw example, PIL-decode (RGB), paste centred on a square of the pad
  colour, resize to ``transform.image_size`` (PIL bilinear, antialiased), write a
  ``tf.Example`` with the uint8 pixels and the label at the same gzip level as Transform.
* ``plain model.fit``: the Trainer's data, model and steps without the component
  (``plain_fit``): same reader, same build and compile, same P x K batches, the same
  model selection (Recall@1 on the 'valid' split before training and after each epoch,
  timed apart), then ``model.save``; no TensorBoard, checkpoints or export signatures.
  The Trainer's overhead is reported against it, and against the bare fit (the same
  run's seconds without its Recall@1 passes).

The baselines run right after the whole pipeline, in the same invocation, so the ratios
(baseline seconds / component seconds; > 1: the component is faster) compare like with
like under the same machine load. Memory: the parent samples, every 0.2 s, the resident
set (RSS) of the orchestrating process and the sum over its whole process tree (Beam
workers included), attributed to the component running at the time; peaks are reported.

    python benchmarks/data_path.py                 # Cars196 scale (make bench-scale)
    python benchmarks/data_path.py --quick         # 20 classes x 20 images, a smoke test
    python benchmarks/data_path.py --only RetrievalExampleGen ImportSchemaGen Transform \
        --workers 2                                # a diagnostic run, no baselines

Prints Markdown tables for docs/benchmarks.md and writes them as JSON next to the runs
(``out/bench/runs.json``).
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CACHE = ROOT / "out" / "bench"
ALL_COMPONENTS = ["RetrievalExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator",
                  "Transform", "Trainer", "RecallEvaluator", "Pusher"]
# The whole pipeline's Trainer: a small CGD model (the "small" backbone, SG descriptors)
# at 128 px, one epoch of TRAINER_STEPS P x K steps; it still loads the whole training
# split into memory (sampler_memory_budget_mb) and validates on the default held-out
# classes before and after the epoch. The smaller the model, the larger the Trainer
# component's fixed costs are against its steps: a conservative choice for the overhead.
TRAINER_STEPS = 400
BENCH_TRAINER = {"backbone": "small", "backbone_weights": "none", "embedding_dim": 256,
                 "freeze_batchnorm": False, "input_size": 128, "classes_per_batch": 8,
                 "images_per_class": 4, "epochs": 1, "steps_per_epoch": TRAINER_STEPS,
                 "early_stopping_patience": 0, "lr_schedule": "constant"}


# ----------------------------------------------------------------------------- data


def sample_dir(classes: int, images_per_class: int, seed: int) -> Path:
    """The cached real-size archives for these parameters, generated on first use."""
    out = CACHE / f"cars196-real-{classes}x{images_per_class}-s{seed}"
    done = out / "summary.json"
    if not done.exists():
        from components.datasets.cars196.sample import make_sample_data
        print(f"generating real-size Cars196 archives ({classes} classes x "
              f"{images_per_class} images) in {out} (once; a few minutes at full scale)",
              flush=True)
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        summary = make_sample_data(out / "data", classes, images_per_class, seed=seed,
                                   real_size=True)
        done.write_text(json.dumps({"num_valid": summary.num_valid,
                                    "seconds": round(time.perf_counter() - start, 1)}))
    return out


# ----------------------------------------------------------------------------- children


def plain_example_gen(source_dir: str, out_dir: str, like_for_like: bool = False) -> dict:
    """Single process: annotations from the .mat files, each image decoded from the tars.

    The issue's baseline: a full PIL decode as the validity check, gzip at zlib's default
    level (TFRecordWriter's "GZIP"). ``like_for_like``: ExampleGen's own per-image work
    instead, the same check (``examples._decode_check``, a 1/8-scale JPEG decode) and the
    JPEG bytes stored (gzip level 0), so that the ratio shows the runner's cost alone."""
    import numpy as np
    import scipy.io
    import tensorflow as tf
    from PIL import Image

    from components.example_gen.examples import _decode_check

    start = time.perf_counter()
    annotations = {}
    with tarfile.open(os.path.join(source_dir, "car_devkit.tgz")) as tar:
        mat = scipy.io.loadmat(tar.extractfile("devkit/cars_train_annos.mat"))
    annotations["train"] = mat["annotations"][0]
    annotations["test"] = scipy.io.loadmat(
        os.path.join(source_dir, "cars_test_annos_withlabels.mat"))["annotations"][0]
    written = corrupt = 0
    os.makedirs(out_dir, exist_ok=True)
    options = tf.io.TFRecordOptions(compression_type="GZIP",
                                    compression_level=0 if like_for_like else -1)

    def check(data: bytes):
        if like_for_like:
            reason, size = _decode_check(data)
            return size if reason is None else None
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                return im.size
        except Exception:
            return None

    with tf.io.TFRecordWriter(os.path.join(out_dir, "plain.gz"), options) as writer:
        for split in ("train", "test"):
            by_name = {r["fname"].item(): r for r in annotations[split]}
            with tarfile.open(os.path.join(source_dir, f"cars_{split}.tgz")) as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    data = tar.extractfile(member).read()
                    size = check(data)
                    if size is None:
                        corrupt += 1
                        continue
                    width, height = size
                    r = by_name[os.path.basename(member.name)]
                    x1, y1, x2, y2 = (float(np.asarray(r[k]).item())
                                      for k in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"))
                    box = [y1 / height, x1 / width, y2 / height, x2 / width]
                    feature = {
                        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data])),
                        "label": tf.train.Feature(int64_list=tf.train.Int64List(
                            value=[int(np.asarray(r["class"]).item()) - 1])),
                        "bbox": tf.train.Feature(float_list=tf.train.FloatList(value=box)),
                    }
                    writer.write(tf.train.Example(features=tf.train.Features(
                        feature=feature)).SerializeToString())
                    written += 1
    return {"seconds": time.perf_counter() - start, "images": written, "corrupt": corrupt}


def plain_transform(examples_uri: str, out_dir: str, size: int, pad_value,
                    compression_level: int | None) -> dict:
    """Single process: raw examples -> PIL decode, pad to square, resize -> uint8 examples
    (gzip at ``compression_level``; None: computed, not written)."""
    import numpy as np
    import tensorflow as tf
    from PIL import Image

    start = time.perf_counter()
    fill = tuple(int(v) for v in pad_value)
    written = 0
    os.makedirs(out_dir, exist_ok=True)
    options = tf.io.TFRecordOptions(compression_type="GZIP",
                                    compression_level=compression_level or 0)
    for split_dir in sorted(glob.glob(os.path.join(examples_uri, "Split-*"))):
        files = sorted(glob.glob(os.path.join(split_dir, "*.gz")))
        name = os.path.basename(split_dir)
        writer = (tf.io.TFRecordWriter(os.path.join(out_dir, f"{name}.gz"), options)
                  if compression_level is not None else None)
        for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
            feature = tf.train.Example.FromString(record.numpy()).features.feature
            with Image.open(io.BytesIO(feature["image"].bytes_list.value[0])) as im:
                rgb = im.convert("RGB")
            side = max(rgb.size)
            square = Image.new("RGB", (side, side), fill)
            square.paste(rgb, ((side - rgb.width) // 2, (side - rgb.height) // 2))
            pixels = np.asarray(square.resize((size, size), Image.BILINEAR))
            if writer is not None:
                out = {"image_u8": tf.train.Feature(bytes_list=tf.train.BytesList(
                           value=[pixels.tobytes()])),
                       "label": feature["label"]}
                writer.write(tf.train.Example(features=tf.train.Features(
                    feature=out)).SerializeToString())
            written += 1
        if writer is not None:
            writer.close()
    return {"seconds": time.perf_counter() - start, "images": written}


def plain_fit(transformed_uri: str, overrides: dict, out_dir: str) -> dict:
    """Single process: the Trainer's training without the Trainer component. The same
    transformed training split read the same way (``sampler.open_training_set``), the same
    model built and compiled with the same calls as ``trainer.task.train``, the same P x K
    batches (``sampler.pk_dataset``, same seed and augmentation), ``model.fit`` for the same
    epochs and steps, with the Trainer's model selection (``task.ValidationRecall`` on the
    same 'valid' split, before training and after each epoch; its seconds are timed apart
    so the bare fit is known too), then ``model.save``. No TensorBoard, no checkpoints, no
    export signatures, no TFX."""
    import numpy as np
    import tf_keras

    from core.config import load_config
    from trainer import sampler, task
    from trainer.model import build_model

    cfg = load_config(None, overrides)
    t = cfg.trainer
    stored = cfg.transform.image_size
    size = t.input_size or stored
    crop = size if size < stored else 0
    files = [os.path.join(transformed_uri, "Split-train", "*")]
    start = time.perf_counter()
    tf_keras.utils.set_random_seed(t.seed)
    train_set = sampler.open_training_set(files, stored, t.sampler_memory_budget_mb)
    valid_set = sampler.load_image_set([os.path.join(transformed_uri, "Split-valid", "*")],
                                       stored)
    loaded = time.perf_counter()
    classes = np.unique(train_set.labels)
    task.set_precision(t.mixed_precision)
    dataset = sampler.pk_dataset(train_set, t.classes_per_batch, t.images_per_class, t.seed,
                                 t.random_crop, t.random_flip, crop_size=crop, classes=classes,
                                 hue_rotation=t.class_hue_rotation)
    model = build_model(t, len(classes), size)
    task.compile_for_training(model, t, len(classes))

    class TimedValidation(task.ValidationRecall):
        """The Trainer's model selection, with the seconds spent measuring Recall@1."""
        seconds, passes = 0.0, 0

        def recall_at_1(self) -> float:
            begin = time.perf_counter()
            try:
                return super().recall_at_1()
            finally:
                self.seconds += time.perf_counter() - begin
                self.passes += 1

    validation = TimedValidation(valid_set, t.early_stopping_patience, input_size=crop,
                                 keep_last=t.model_selection == "last")
    fit_start = time.perf_counter()
    model.fit(dataset, epochs=t.epochs, steps_per_epoch=t.steps_per_epoch,
              callbacks=[validation], verbose=2)
    fitted = time.perf_counter()
    model.save(os.path.join(out_dir, "model"))
    end = time.perf_counter()
    return {"seconds": end - start, "load_s": loaded - start, "build_s": fit_start - loaded,
            "fit_s": fitted - fit_start, "save_s": end - fitted,
            "validation_s": validation.seconds, "validation_passes": validation.passes,
            "images": len(train_set), "steps": t.epochs * t.steps_per_epoch}


def _count_records(pattern: str) -> int:
    import tensorflow as tf
    files = sorted(glob.glob(pattern))
    return int(tf.data.TFRecordDataset(files, compression_type="GZIP", num_parallel_reads=4)
               .reduce(0, lambda n, _: n + 1).numpy()) if files else 0


def run_pipeline(spec: dict) -> dict:
    """LocalDagRunner over the named components, as pipeline/local_runner.py runs it."""
    from absl import logging as absl_logging
    from tfx import v1 as tfx

    from core.config import load_config
    from pipeline.artifacts import newest_output
    from pipeline.definition import create_components, create_pipeline

    cfg = load_config(None, spec["overrides"])
    if spec.get("small_input_images") is not None:  # a diagnostic: the in_memory threshold
        from components.example_gen import local_beam
        local_beam.SMALL_INPUT_IMAGES = spec["small_input_images"]
    absl_logging.set_verbosity(absl_logging.INFO)
    pipeline = create_pipeline(cfg)
    pipeline.components = [c for c in create_components(cfg) if c.id in spec["components"]]
    start = time.perf_counter()
    tfx.orchestration.LocalDagRunner().run(pipeline)
    result = {"seconds": time.perf_counter() - start}
    examples = newest_output(cfg, "RetrievalExampleGen", "examples")
    result["examples_uri"] = examples
    result["examples_bytes"] = sum(os.path.getsize(f) for f in
                                   glob.glob(os.path.join(examples, "Split-*", "*")))
    transformed = newest_output(cfg, "Transform", "transformed_examples")
    if transformed and spec.get("verify", True):
        result["transformed_bytes"] = sum(os.path.getsize(f) for f in glob.glob(
            os.path.join(transformed, "Split-*", "*")))
        result["transformed_counts"] = {
            os.path.basename(d): _count_records(os.path.join(d, "*"))
            for d in sorted(glob.glob(os.path.join(transformed, "Split-*")))}
        result["transformed_uri"] = transformed
    return result


def child_main(spec: dict) -> None:
    import logging
    logging.basicConfig(level=logging.WARNING)
    # The timeline in the case's log: our components' lines and Beam's stages.
    for name in ("components", "trainer",
                 "apache_beam.runners.portability.fn_api_runner.fn_runner"):
        logging.getLogger(name).setLevel(logging.INFO)
    # "Running bundle for stage ...": where each Beam stage starts, in the log's timeline.
    logging.getLogger("apache_beam.runners.portability.fn_api_runner.fn_runner.run_bundle"
                      ).setLevel(logging.DEBUG)
    mode = spec["mode"]
    if mode == "plain_example_gen":
        result = plain_example_gen(spec["source_dir"], spec["out_dir"],
                                   spec.get("like_for_like", False))
    elif mode == "plain_fit":
        result = plain_fit(spec["transformed_uri"], spec["overrides"], spec["out_dir"])
    elif mode == "plain_transform":
        result = plain_transform(spec["examples_uri"], spec["out_dir"], spec["size"],
                                 spec["pad_value"], spec["compression_level"])
    else:
        result = run_pipeline(spec)
    print("RESULT " + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------- parent


class TreeSampler(threading.Thread):
    """Peak RSS of a process and of its whole tree, attributed to the current phase."""

    def __init__(self, pid: int, interval: float = 0.2):
        super().__init__(daemon=True)
        import psutil
        self._psutil = psutil
        self._root = psutil.Process(pid)
        self._interval = interval
        self.phase = "start-up"
        self.peaks: dict[str, dict[str, int]] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        psutil = self._psutil
        while not self._halt.is_set():
            try:
                procs = [self._root] + self._root.children(recursive=True)
            except psutil.Error:
                break
            total = root = 0
            for p in procs:
                try:
                    rss = p.memory_info().rss
                except psutil.Error:
                    continue
                total += rss
                if p.pid == self._root.pid:
                    root = rss
            peak = self.peaks.setdefault(self.phase, {"main": 0, "tree": 0, "procs": 0})
            peak["main"] = max(peak["main"], root)
            peak["tree"] = max(peak["tree"], total)
            peak["procs"] = max(peak["procs"], len(procs))
            self._halt.wait(self._interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


# Log lines of the Trainer's run_fn (trainer/task.py, trainer/sampler.py) whose times
# split the Trainer component into its parts: the first time each appears.
TRAINER_MARKS = {"load": "sampler: training split", "built": "trainer.task:training on",
                 "untrained": "validation Recall@1 before training",
                 "fitted": "restored the best epoch", "exported": "exported SavedModel"}


def run_child(spec: dict, log_path: Path) -> dict:
    """Run one case in a fresh process; its result, component times, the Trainer's log
    marks (``TRAINER_MARKS``, seconds since the Trainer started) and memory peaks."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, cwd=ROOT)
    sampler = TreeSampler(proc.pid)
    sampler.start()
    times, result, started, marks = {}, None, {}, {}
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        for line in proc.stdout:
            now = time.perf_counter()
            log.write(f"{now - t0:8.2f} {line}")
            if "Component " in line and " is running." in line:
                name = line.split("Component ", 1)[1].split(" is running.")[0]
                started[name] = now
                sampler.phase = name
            elif "Component " in line and " is finished." in line:
                name = line.split("Component ", 1)[1].split(" is finished.")[0]
                times[name] = now - started.get(name, now)
                sampler.phase = "between"
            elif line.startswith("RESULT "):
                result = json.loads(line[len("RESULT "):])
            if "Trainer" in started:
                for mark, text in TRAINER_MARKS.items():
                    if mark not in marks and text in line:
                        marks[mark] = now - started["Trainer"]
                        if mark == "load" and " MiB" in line:  # "... = 1480.2 MiB <= ..."
                            marks["training_set_mib"] = float(
                                line.split(" MiB")[0].rsplit("= ", 1)[1].replace(",", ""))
    code = proc.wait()
    sampler.stop()
    if code != 0 or result is None:
        raise SystemExit(f"case {spec['mode']} failed (exit {code}); log: {log_path}")
    result["component_seconds"] = times
    result["trainer_marks"] = marks
    result["memory"] = sampler.peaks
    return result


def load_avg() -> str:
    return "%.1f %.1f %.1f" % os.getloadavg()


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                  if line.startswith("model name")), platform.machine())
    mem = next(int(line.split()[1]) for line in open("/proc/meminfo")
               if line.startswith("MemTotal")) / 2**20
    import apache_beam
    import tensorflow as tf
    import tensorflow_transform as tft
    import tfx
    return (f"{os.cpu_count()} CPU cores ({model}), {mem:.1f} GiB RAM, no GPU; Python "
            f"{platform.python_version()}, TFX {tfx.__version__}, TFT {tft.__version__}, "
            f"Beam {apache_beam.__version__}, TensorFlow {tf.__version__}")


def gib(n: int) -> str:
    return f"{n / 2**30:.2f}"


def main() -> None:
    global CACHE
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--classes", type=int, default=196)
    parser.add_argument("--images-per-class", type=int, default=83)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 1],
                        help="Beam worker counts (default 2 1): the first runs the whole "
                             "pipeline, the others RetrievalExampleGen alone")
    parser.add_argument("--running-mode", default=None,
                        help="override --direct_running_mode (default: the packaged config's)")
    parser.add_argument("--beam-arg", action="append", default=[],
                        help="a Beam arg replacing the packaged one of the same name, e.g. "
                             "--beam-arg=--pickle_library=dill (repeatable)")
    parser.add_argument("--transform-level", type=int, default=None,
                        help="transform.compression_level (default: the packaged config's)")
    parser.add_argument("--trainer-steps", type=int, default=TRAINER_STEPS,
                        help=f"the Trainer's steps (one epoch; default {TRAINER_STEPS})")
    parser.add_argument("--only", nargs="+", metavar="COMPONENT",
                        help="a diagnostic run: only these components (e.g. "
                             "RetrievalExampleGen ImportSchemaGen Transform) at each worker "
                             "count, no plain loops")
    parser.add_argument("--small-input-images", type=int, default=None,
                        help="a diagnostic: override local_beam.SMALL_INPUT_IMAGES (0: never "
                             "switch to in_memory)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="20 classes x 20 images")
    parser.add_argument("--keep", action="store_true", help="keep the pipeline outputs")
    parser.add_argument("--cache", default=str(CACHE),
                        help="where the generated archives are kept (default out/bench)")
    parser.add_argument("--work", help="where the runs write (default <cache>/runs; "
                                       "emptied first)")
    args = parser.parse_args()
    if args.child:
        child_main(json.loads(args.child))
        return
    if args.quick:
        args.classes, args.images_per_class = 20, 20
        args.trainer_steps = min(args.trainer_steps, 5)
    CACHE = Path(args.cache)
    wall_start = time.perf_counter()

    from core.config import load_config
    data = sample_dir(args.classes, args.images_per_class, args.seed)
    source = str(data / "data")
    generated = json.loads((data / "summary.json").read_text())
    num_valid = generated["num_valid"]
    archive_bytes = sum(p.stat().st_size for p in (data / "data").iterdir())
    defaults = load_config(None)
    work = Path(args.work) if args.work else CACHE / "runs"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    train_last = max(2, args.classes // 2)
    data_cfg = {"source_dir": source, "train_classes": [1, train_last],
                "eval_classes": [train_last + 1, args.classes],
                "validation_classes": min(defaults.data.validation_classes, train_last // 4)}
    trainer_cfg = dict(BENCH_TRAINER, steps_per_epoch=args.trainer_steps)

    def pipeline_spec(name: str, workers: int, components, trainer=None) -> dict:
        beam_args = [a for a in defaults.pipeline.beam_args
                     if not a.startswith("--direct_num_workers")]
        beam_args.append(f"--direct_num_workers={workers}")
        if args.running_mode:
            args.beam_arg.append(f"--direct_running_mode={args.running_mode}")
        for arg in args.beam_arg:
            beam_args = [a for a in beam_args if a.split("=")[0] != arg.split("=")[0]]
            beam_args.append(arg)
        overrides = {"pipeline": {"name": name, "root": str(work / name / "root"),
                                  "metadata_path": str(work / name / "metadata.sqlite"),
                                  "serving_dir": str(work / name / "serving"),
                                  "enable_cache": False, "beam_args": beam_args},
                     "data": data_cfg}
        if trainer:
            overrides["trainer"] = trainer
        if args.transform_level is not None:
            overrides["transform"] = {"compression_level": args.transform_level}
        return {"mode": "pipeline", "components": components, "overrides": overrides,
                "small_input_images": args.small_input_images}

    print(f"data: {num_valid} images, {archive_bytes / 1e9:.2f} GB of archives ({source}; "
          f"generated in {generated['seconds']:.0f} s); load average {load_avg()}", flush=True)
    # (An older config has no transform.compression_level: TFX's writer, level 6.)
    level = (getattr(defaults.transform, "compression_level", 6)
             if args.transform_level is None else args.transform_level)
    runs = []

    def case(label: str, spec: dict, log_name: str) -> dict:
        load = load_avg()
        print(f"[{time.strftime('%H:%M:%S')}] {label} (load {load})", flush=True)
        res = run_child(spec, work / f"{log_name}.log")
        res["load_before"], res["load_after"] = load, load_avg()
        return res

    for rep in range(args.repeat):
        for i, workers in enumerate(args.workers):
            name = f"w{workers}-r{rep}"
            # The first run of a repetition is the whole pipeline, as `cgd pipeline run`
            # runs it, for every component's time and memory; the others ExampleGen alone.
            whole = i == 0 and not args.only
            components = (args.only or ["RetrievalExampleGen"] if not whole
                          else ALL_COMPONENTS)
            spec = pipeline_spec(name, workers, components, trainer_cfg if whole else None)
            res = case(f"{'whole pipeline' if whole else ' '.join(components)}, "
                       f"{workers} worker(s)", spec, name)
            if whole:
                assert sum(res["transformed_counts"].values()) == num_valid, \
                    (res["transformed_counts"], num_valid)
            runs.append({"case": "full" if whole else "partial", "workers": workers,
                         "rep": rep, **res})
            times = res["component_seconds"]
            print("    " + ", ".join(f"{c} {s:.1f} s" for c, s in times.items()), flush=True)
            if whole:
                # The plain loops right after the whole pipeline (whose ExampleGen and
                # Transform outputs they read) and before the next run.
                plain = [
                    ("plain_example_gen", "plain ExampleGen loop (the issue's: full decode, "
                     "gzip level 6)", {"mode": "plain_example_gen", "source_dir": source}),
                    ("plain_example_gen_same", "plain ExampleGen loop (ExampleGen's per-image "
                     "work: 1/8 decode, stored)", {"mode": "plain_example_gen",
                                                   "source_dir": source,
                                                   "like_for_like": True}),
                    ("plain_transform", "plain Transform loop",
                     {"mode": "plain_transform", "compression_level": level,
                      "examples_uri": res["examples_uri"],
                      "size": defaults.transform.image_size,
                      "pad_value": list(defaults.transform.pad_value)}),
                    ("plain_fit", "plain model.fit",
                     {"mode": "plain_fit", "transformed_uri": res["transformed_uri"],
                      "overrides": {"data": data_cfg, "trainer": trainer_cfg}}),
                ]
                for kind, label, plain_spec in plain:
                    plain_spec["out_dir"] = str(work / f"{kind}-r{rep}")
                    got = case(label, plain_spec, f"{kind}-r{rep}")
                    if kind != "plain_fit":
                        assert got["images"] == num_valid, (got, num_valid)
                    runs.append({"case": kind, "rep": rep, **got})
                    print(f"    {got['seconds']:.1f} s", flush=True)
                    if not args.keep:
                        shutil.rmtree(plain_spec["out_dir"], ignore_errors=True)
            if not args.keep:  # Cars196 scale: about 5 GB per whole run
                shutil.rmtree(work / name, ignore_errors=True)
    report = {"machine": machine(), "load_after": load_avg(), "images": num_valid,
              "archive_bytes": archive_bytes, "generate_s": generated["seconds"],
              "image_size": defaults.transform.image_size,
              "beam_args": list(defaults.pipeline.beam_args),
              "transform_compression_level": level, "trainer": trainer_cfg,
              "wall_s": time.perf_counter() - wall_start, "runs": runs}
    (work.parent / f"{work.name}.json").write_text(json.dumps(report, indent=1))
    print_tables(report)
    if not args.keep:  # the cases' logs stay (<work>/*.log), their outputs go
        for child in work.iterdir():
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)


def print_tables(report: dict) -> None:
    runs = report["runs"]
    n = report["images"]
    print(f"\nmachine: {report['machine']}\nimages: {n} "
          f"({report['archive_bytes'] / 1e9:.2f} GB of archives, generated in "
          f"{report['generate_s']:.0f} s), stored size {report['image_size']} px, transformed "
          f"examples at gzip level {report['transform_compression_level']}; whole benchmark "
          f"{report['wall_s'] / 60:.1f} min; load average at the end {report['load_after']}\n")
    plain = {(r["case"], r["rep"]): r for r in runs if r["case"].startswith("plain")}

    def ratio(base, own):
        return f"{base / own:.2f}x" if base and own else "n/a"

    print("| rep | Beam workers | ExampleGen s | plain loop (issue's) s | ratio "
          "| plain loop, ExampleGen's per-image work s | ratio | load before / after |")
    print("|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in runs:
        if r["case"] not in ("full", "partial"):
            continue
        eg = r["component_seconds"].get("RetrievalExampleGen")
        if eg is None:
            continue
        base = plain.get(("plain_example_gen", r["rep"]), {}).get("seconds")
        same = plain.get(("plain_example_gen_same", r["rep"]), {}).get("seconds")
        print(f"| {r['rep']} | {r['workers']} | {eg:.1f} | {base or 0:.1f} | {ratio(base, eg)} "
              f"| {same or 0:.1f} | {ratio(same, eg)} | {r['load_before']} / "
              f"{r['load_after']} |")
    print("\n| rep | Beam workers | Transform s | plain loop s | ratio | transformed GB |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        if "Transform" not in r["component_seconds"]:
            continue
        t = r["component_seconds"]["Transform"]
        base = plain.get(("plain_transform", r["rep"]), {}).get("seconds")
        print(f"| {r['rep']} | {r['workers']} | {t:.1f} | {base or 0:.1f} | {ratio(base, t)} "
              f"| {r.get('transformed_bytes', 0) / 1e9:.2f} |")
    print("\nTrainer component against a plain model.fit (same data, model, steps and "
          "model selection), s; the bare fit is the plain run without its Recall@1 passes:\n")
    print("| rep | steps | Trainer component | its load / build+fit / export | plain total "
          "| plain load / build+fit / save | its Recall@1 passes | total ratio "
          "| ratio to the bare fit |")
    print("|---:|---:|---:|---|---:|---|---|---:|---:|")
    for r in runs:
        if r["case"] != "full" or "Trainer" not in r["component_seconds"]:
            continue
        m, total = r["trainer_marks"], r["component_seconds"]["Trainer"]
        fit = m.get("fitted", 0) - m.get("built", 0)
        p = plain.get(("plain_fit", r["rep"]), {})
        p_fit = p.get("build_s", 0) + p.get("fit_s", 0)
        validation = p.get("validation_s", 0)
        bare = p.get("seconds", 0) - validation
        print(f"| {r['rep']} | {p.get('steps')} | {total:.1f} | {m.get('built', 0):.1f} / "
              f"{fit:.1f} / {total - m.get('fitted', total):.1f} | {p.get('seconds', 0):.1f} | "
              f"{p.get('load_s', 0):.1f} / {p_fit:.1f} / {p.get('save_s', 0):.1f} | "
              f"{p.get('validation_passes', 0)} in {validation:.1f} s | "
              f"{total / p['seconds'] if p else float('nan'):.3f}x | "
              f"{total / bare if bare else float('nan'):.3f}x |")
    print("\nPeak resident memory, GiB (orchestrating process / whole process tree; "
          "beyond: the orchestrating process's peak minus the training set in memory):\n")
    print("| case | component | orchestrating process | tree | processes | beyond the "
          "training set |")
    print("|---|---|---:|---:|---:|---:|")
    for r in runs:
        train_gib = r.get("trainer_marks", {}).get("training_set_mib", 0) / 1024
        label = {"full": f"whole pipeline, {r.get('workers')} worker(s)",
                 "partial": f"{', '.join(r['component_seconds'])}, {r.get('workers')} "
                            f"worker(s)"}.get(r["case"], r["case"].replace("_", " "))
        for phase, peak in r["memory"].items():
            if phase in ("start-up", "between") and r["case"] in ("full", "partial"):
                continue
            if r["case"].startswith("plain"):
                phase = "(the whole loop)"
            beyond = (f"{peak['main'] / 2**30 - train_gib:.2f}" if r["case"] == "full"
                      else "")
            print(f"| {label} | {phase} | {gib(peak['main'])} | {gib(peak['tree'])} | "
                  f"{peak['procs']} | {beyond} |")
        if train_gib:
            print(f"| {label} | (training set in memory) | {train_gib:.2f} | | | |")


if __name__ == "__main__":
    main()
