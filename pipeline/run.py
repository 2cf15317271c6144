"""Running the pipeline on the local orchestrator: once, or on a schedule."""

from __future__ import annotations

import logging
import re
import time

from core.config import Config

log = logging.getLogger("cgd")


def run_local(cfg: Config) -> str:
    """One LocalDagRunner run of the whole pipeline (ML Metadata on SQLite); its summary line."""
    from absl import logging as absl_logging
    from tfx import v1 as tfx

    from pipeline.definition import create_pipeline
    from pipeline.summary import RunState, run_summary
    absl_logging.set_verbosity(absl_logging.INFO)
    log.info("pipeline %s: root %s, metadata %s", cfg.pipeline.name, cfg.pipeline.root,
             cfg.pipeline.metadata_path)
    before = RunState.now(cfg)
    tfx.orchestration.LocalDagRunner().run(create_pipeline(cfg))
    summary = run_summary(cfg, before)
    log.info("%s", summary)
    return summary


def parse_interval(text: str) -> float:
    """'90s', '15m', '24h', '7d' -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if not match:
        raise ValueError(f"interval {text!r} must be a number with a unit s, m, h or d "
                         f"(e.g. 24h)")
    seconds = float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"interval {text!r} must be longer than zero (e.g. 24h)")
    return seconds


def retrain_every(cfg: Config, every_s: float, max_runs: int | None = None,
                  run=run_local, sleep=time.sleep, clock=time.monotonic) -> int:
    """Rerun the pipeline every ``every_s`` seconds (the newest span each time).

    The evaluator compares each new model with the one in production, so only a
    model that is not significantly worse is pushed. A failed run is logged and retried at the
    next slot. Returns the number of runs that succeeded.
    """
    done = ok = 0
    while max_runs is None or done < max_runs:
        start = clock()
        try:
            summary = run(cfg)
            ok += 1
            outcome = f"run {done + 1} finished: {summary}" if summary else \
                f"run {done + 1} finished"
        except Exception as e:  # keep the schedule alive; the traceback goes to the log
            log.debug("retrain: run %d failed", done + 1, exc_info=True)
            outcome = f"run {done + 1} FAILED: {type(e).__name__}: {e}"
        done += 1
        if max_runs is not None and done >= max_runs:
            log.info("retrain: %s", outcome)
            break
        wait = max(0.0, every_s - (clock() - start))
        log.info("retrain: %s; next run in %.0f s", outcome, wait)
        sleep(wait)
    return ok
