"""Running the pipeline on the local orchestrator: once, or on a schedule."""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

from core.config import Config

log = logging.getLogger("cgd")
LOCAL_RUNNER = Path(__file__).with_name("local_runner.py")


def run_local(cfg: Config, wait: bool = False) -> str:
    """One LocalDagRunner run of the whole pipeline (ML Metadata on SQLite); its summary line.

    Holds the pipeline's run lock (pipeline/run_lock.py): another run of it in progress
    raises PipelineRunning, or with ``wait`` is waited for.
    """
    from absl import logging as absl_logging
    from tfx import v1 as tfx

    from pipeline import run_lock
    from pipeline.definition import create_pipeline
    from pipeline.summary import RunState, run_summary
    absl_logging.set_verbosity(absl_logging.INFO)
    log.info("pipeline %s: root %s, metadata %s", cfg.pipeline.name, cfg.pipeline.root,
             cfg.pipeline.metadata_path)
    with run_lock.acquire(cfg, wait=wait):
        before = RunState.now(cfg)
        tfx.orchestration.LocalDagRunner().run(create_pipeline(cfg))
        summary = run_summary(cfg, before)
    log.info("%s", summary)
    return summary


def pipeline_log_path(cfg: Config) -> str:
    """Where `cgd pipeline run` and `cgd retrain` append the orchestrator's full output."""
    return os.path.join(os.path.dirname(cfg.pipeline.root), "logs", f"{cfg.pipeline.name}.log")


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
    next slot; so is a run skipped because another run of the pipeline held its lock
    (pipeline/run_lock.py: a manual run, a cron entry). Returns the number of runs that
    succeeded.

    A run that took longer than the interval is said so in one line, and the next one starts
    at once: runs never overlap (one loop, and the lock), and waiting for the next slot of
    the grid would only leave the newest span longer untrained.
    """
    from pipeline.run_lock import PipelineRunning
    done = ok = 0
    while max_runs is None or done < max_runs:
        start = clock()
        try:
            summary = run(cfg)
            ok += 1
            outcome = f"run {done + 1} finished: {summary}" if summary else \
                f"run {done + 1} finished"
        except PipelineRunning as e:
            outcome = f"run {done + 1} skipped: {e}"
        except Exception as e:  # keep the schedule alive; the traceback goes to the log
            log.debug("retrain: run %d failed", done + 1, exc_info=True)
            outcome = f"run {done + 1} FAILED: {type(e).__name__}: {e}"
        done += 1
        if max_runs is not None and done >= max_runs:
            log.info("retrain: %s", outcome)
            break
        took = clock() - start
        wait = max(0.0, every_s - took)
        log.info("retrain: %s; next run in %.0f s", outcome, wait)
        if took > every_s:
            log.warning("retrain: run %d took %s, longer than the interval (%s): the next run "
                        "starts now (runs never overlap; a longer --every avoids this)",
                        done, _duration(took), _duration(every_s))
        sleep(wait)
    return ok


def _duration(seconds: float) -> str:
    """'95 s', '25 min', '1.5 h', '2.0 d'."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
