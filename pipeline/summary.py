"""One line that says what a pipeline run did: trained or cached, the verdict, what is served.

    pipeline cgd-demo: trained; Recall@1 0.6167 vs production 0.5500 (+0.0667 [95% CI ...]):
    BLESSED; pushed version 1795398959; serving version 1795398959

Read from the outputs a run leaves on disk (the newest Trainer model and RecallEvaluator
evaluation artifacts, the serving directory), so the same line ends `cgd pipeline run`,
each run of `cgd retrain`, and `tfx run create` (pipeline/local_runner.py).
"""

from __future__ import annotations

import dataclasses
import json
import os

from core.config import Config
from pipeline.artifacts import newest_numbered_dir, newest_output


@dataclasses.dataclass(frozen=True)
class RunState:
    """What a run may change: the newest model, evaluation and served version."""
    model: str | None
    evaluation: str | None
    served: str | None

    @classmethod
    def now(cls, cfg: Config) -> "RunState":
        serving = os.path.join(cfg.pipeline.serving_dir, cfg.serving.model_name)
        return cls(newest_output(cfg, "Trainer", "model"),
                   newest_output(cfg, "RecallEvaluator", "evaluation"),
                   newest_numbered_dir(serving))


def run_summary(cfg: Config, before: RunState) -> str:
    """The one-line summary of the run that went from ``before`` to now."""
    after = RunState.now(cfg)
    parts = ["trained" if after.model != before.model else "Trainer cached (no training)"]
    if after.evaluation and after.evaluation != before.evaluation:
        parts.append(_verdict(os.path.join(after.evaluation, "metrics.json")))
    else:
        parts.append("evaluator cached (production unchanged)")
    served = os.path.basename(after.served) if after.served else None
    if after.served != before.served:
        parts.append(f"pushed version {served}")
    else:
        parts.append("nothing pushed")
    parts.append(f"serving version {served}" if served else "nothing served yet")
    return f"pipeline {cfg.pipeline.name}: " + "; ".join(parts)


def _verdict(metrics_path: str) -> str:
    with open(metrics_path) as f:
        metrics = json.load(f)
    r1 = metrics["candidate"]["recall@1"]
    verdict = metrics["reason"].split(":", 1)[0]  # BLESSED / NOT BLESSED / ALREADY SERVING
    if metrics.get("baseline"):
        base = metrics["baseline"]["recall@1"]
        interval = metrics.get("difference", {}).get("intervals", {}).get("recall@1")
        ci = f" [{interval[0]:+.4f}, {interval[1]:+.4f}]" if interval else ""
        return (f"Recall@1 {r1:.4f} vs production {base:.4f} "
                f"({r1 - base:+.4f}{ci}): {verdict}")
    return f"Recall@1 {r1:.4f}: {verdict}"
