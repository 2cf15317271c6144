"""Run trainer.task.train outside TFX: one worker of a multi-worker job, or a plain run.

    TF_CONFIG='{"cluster": {"worker": ["localhost:12345", "localhost:12346"]},
                "task": {"type": "worker", "index": 0}}' \\
    python -m trainer.worker --config cfg.yaml --train 'data/Split-train/*' \\
        --valid 'data/Split-valid/*' --out run_dir

Writes ``<out>/validation.json`` (Recall@1 untrained, per epoch, best). Used to
check that MultiWorkerMirroredStrategy over local CPU processes trains as
well as one worker (tests/trainer/test_worker.py).
"""

from __future__ import annotations

import argparse
import logging
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument("--train", nargs="+", required=True, help="transformed train files")
    parser.add_argument("--valid", nargs="+", required=True, help="transformed valid files")
    parser.add_argument("--out", required=True, help="run directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from core.config import TrainerJob, load_config
    from trainer import task
    job = TrainerJob.of(load_config(args.config))
    _, validation = task.train(job, args.train, args.valid, args.out)
    if task.is_chief():
        task.write_validation_summary(validation, args.out)


if __name__ == "__main__":
    main()
