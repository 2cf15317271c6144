"""Run trainer.task.train outside TFX: one worker of a multi-worker job, or a plain run.

    TF_CONFIG='{"cluster": {"worker": ["localhost:12345", "localhost:12346"]},
                "task": {"type": "worker", "index": 0}}' \\
    python -m trainer.worker --config cfg.yaml --train 'data/Split-train/*' \\
        --valid 'data/Split-valid/*' --out run_dir

Writes ``<out>/validation.json`` (Recall@1 untrained, per epoch, best). Used to
check that MultiWorkerMirroredStrategy over local CPU processes trains as
well as one worker (tests/test_multiworker.py).
"""

from __future__ import annotations

import argparse
import json
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
    from core.config import load_config
    from trainer import task
    cfg = load_config(args.config)
    _, validation = task.train(cfg, args.train, args.valid, args.out)
    if task.is_chief():
        with open(os.path.join(args.out, "validation.json"), "w") as f:
            json.dump({"untrained_recall@1": validation.untrained,
                       "recall@1_per_epoch": validation.history,
                       "best_recall@1": validation.best}, f, indent=1)


if __name__ == "__main__":
    main()
