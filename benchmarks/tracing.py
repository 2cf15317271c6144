"""First-trace cost of a tf_keras model with and without tf_keras on AutoGraph's
do-not-convert list (``trainer/keras_autograph.py``), measured in one run.

Each variant runs in its own fresh Python process (AutoGraph caches conversions per
process): build the CGD model of a config, then time the first ``predict`` (the
predict function's trace), the first ``fit`` of 2 steps (the train function's trace)
and 30 more steps (no tracing: the same either way). Prints a table and the ratios.

    TF_USE_LEGACY_KERAS=1 python benchmarks/tracing.py [--config configs/demo.yaml]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
convert_tf_keras = sys.argv[3] == "convert"
import numpy as np, tensorflow as tf
if convert_tf_keras:  # undo the rule trainer.model adds on import: TF's own list
    from tensorflow.python.autograph.core import config as autograph_config
    rules = tuple(autograph_config.CONVERSION_RULES)
from core.config import TrainerJob, load_config
from trainer import sampler, task
from trainer.model import build_model
if convert_tf_keras:
    autograph_config.CONVERSION_RULES = rules
job = TrainerJob.of(load_config(sys.argv[2]))
t = job.trainer
size = t.input_size or job.transform.image_size
classes = 8
model = build_model(t, classes, size)
task.compile_for_training(model, t, classes)
rng = np.random.default_rng(0)
images = rng.integers(0, 255, (classes * 8, size, size, 3), dtype=np.uint8)
labels = np.repeat(np.arange(classes), 8)
data = sampler.pk_dataset(sampler.ImageSet(images, labels), min(t.classes_per_batch, classes),
                          t.images_per_class, 0, classes=np.arange(classes))
out = {}
start = time.perf_counter()
model.predict(images[:16].astype(np.float32), batch_size=16, verbose=0)
out["first_predict_s"] = time.perf_counter() - start
start = time.perf_counter()
model.fit(data, epochs=1, steps_per_epoch=2, verbose=0)
out["first_fit_2_steps_s"] = time.perf_counter() - start
start = time.perf_counter()
model.fit(data, epochs=1, steps_per_epoch=30, verbose=0)
out["next_30_steps_s"] = time.perf_counter() - start
print(json.dumps(out))
"""


def run(config: str, variant: str) -> dict:
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), config, variant], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"config {args.config}")
    results = {"convert": [], "skip": []}
    for _ in range(args.repeats):  # interleaved, so load changes hit both alike
        for variant in results:
            results[variant].append(run(args.config, variant))
    keys = list(results["skip"][0])
    print(f"{'':24} {'tf_keras converted':>19} {'tf_keras skipped':>17} {'ratio':>7}")
    for key in keys:
        converted = min(r[key] for r in results["convert"])
        skipped = min(r[key] for r in results["skip"])
        print(f"{key:24} {converted:18.1f}s {skipped:16.1f}s {converted / skipped:6.1f}x")


if __name__ == "__main__":
    main()
