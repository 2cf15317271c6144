"""`cgd sample-data`, `cgd pipeline run`."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from core.dataset_spec import all_specs

log = logging.getLogger("cgd")

# Refusing is the default: an overlap (a cron entry during a manual run) is almost always a
# mistake, and a queued run would train again on the same data right after the first.
WAIT_HELP = ("when another run of this pipeline is in progress, wait for it to finish "
             "(default: refuse, in one line naming the running one)")


def register(subparsers) -> None:
    specs = all_specs()
    p = subparsers.add_parser(
        "sample-data", help="write small sample data in a dataset's original layout",
        description="Write a dataset's files exactly as downloaded ("
                    + "; ".join(f"{spec.name}: {spec.files}" for spec in specs)
                    + ") with generated, class-structured images.")
    p.add_argument("--dataset", default="cars196", choices=[spec.name for spec in specs],
                   help="whose original layout to write: "
                        + "; ".join(f"{spec.name}, {spec.description}" for spec in specs)
                        + ". Default cars196; then run the pipeline with data.dataset set "
                          "to it and data.source_dir to --out")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--classes", type=int, default=18,
                   help="number of classes (default 18). What each dataset makes of "
                        "--classes and --images-per-class: "
                        + "; ".join(f"{spec.name}: {spec.sample}" for spec in specs))
    p.add_argument("--images-per-class", type=int, default=10,
                   help="images per class (>= 2; default 10)")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed: the same seed writes byte-identical files (default 0)")
    p.add_argument("--corrupt", type=int, default=0,
                   help="add K truncated or non-image files (listed like the others)")
    p.add_argument("--real-size", action="store_true",
                   help=", ".join(spec.name for spec in specs if spec.real_size_sample)
                        + " only: real-photo sizes (long side 400-1,000 px, mostly 4:3 to "
                          "16:9 landscape, about 55 KB each) instead of small images "
                          "(96-240 px)")
    p.set_defaults(func=sample_data)

    p = subparsers.add_parser("pipeline", help="run the TFX pipeline")
    sub = p.add_subparsers(dest="pipeline_command", metavar="ACTION")
    run = sub.add_parser("run", help="run the whole pipeline once on the local orchestrator")
    run.add_argument("--config", help="YAML config (default: the packaged defaults)")
    run.add_argument("--wait", action="store_true", help=WAIT_HELP)
    run.set_defaults(func=pipeline_run)

    p = subparsers.add_parser(
        "demo", help="the whole product on sample data: pipeline via the tfx CLI, serving, search")
    p.add_argument("--config", default=None,
                   help="YAML config (default: configs/demo.yaml of the source tree)")
    p.set_defaults(func=demo)

    p = subparsers.add_parser(
        "retrain", help="rerun the pipeline on a schedule (newest data span each time)",
        description="Rerun the whole pipeline every INTERVAL. With data.file_pattern "
                    "'span-{SPAN}/*' each run ingests the newest span; the evaluator only "
                    "blesses (and the Pusher only pushes) a model that is not significantly "
                    "worse than the one in production (a paired bootstrap over the same eval "
                    "queries). For cron instead, see the README.")
    p.add_argument("--config", help="YAML config (default: the packaged defaults)")
    p.add_argument("--every", required=True, help="interval, e.g. 24h, 30m, 7d")
    p.add_argument("--max-runs", type=int, help="stop after N runs (default: forever)")
    p.add_argument("--wait", action="store_true",
                   help=WAIT_HELP.replace("refuse", "skip this run"))
    p.set_defaults(func=retrain)


def progress_logger(label: str, unit: str, first_after_s: float = 2.0, every_s: float = 5.0,
                    clock=None):
    """A ``progress(done, total)`` callback that logs "LABEL: done/total UNIT" only for a
    job long enough to wonder about: the first line after ``first_after_s`` seconds, then
    one every ``every_s``; never the last step (the caller's summary line ends the job)."""
    import time
    clock = clock or time.monotonic
    next_line = [clock() + first_after_s]

    def progress(done: int, total: int) -> None:
        now = clock()
        if done < total and now >= next_line[0]:
            next_line[0] = now + every_s
            log.info("%s: %d/%d %s", label, done, total, unit)

    return progress


def sample_data(args: argparse.Namespace) -> int:
    from components.datasets.samples import make_sample_data

    # The default 18 classes take about a second: no progress lines, only the summary.
    progress = progress_logger("sample-data", "classes drawn")
    try:
        summary = make_sample_data(args.dataset, args.out, args.classes, args.images_per_class,
                                   args.seed, args.corrupt, progress=progress,
                                   real_size=args.real_size)
    except ValueError as e:
        from core.errors import CliError
        raise CliError(str(e)) from None
    log.info("sample-data: wrote %s sample data to %s: %d valid images (%d corrupt); run the "
             "pipeline with data.dataset: %s and data.source_dir: %s", args.dataset,
             summary.out_dir, summary.num_valid, len(summary.corrupt), args.dataset,
             summary.out_dir)
    return 0


def pipeline_run(args: argparse.Namespace) -> int:
    from core.config import load_config
    print(run_pipeline_shown(load_config(args.config), args.config, wait=args.wait))
    return 0


def retrain(args: argparse.Namespace) -> int:
    from core.errors import CliError
    from core.config import load_config
    from pipeline.run import parse_interval, retrain_every
    try:
        every = parse_interval(args.every)
    except ValueError as e:
        raise CliError(f"--every: {e}") from None
    cfg = load_config(args.config)
    ok = retrain_every(cfg, every, args.max_runs,
                       run=lambda run_cfg: run_pipeline_shown(run_cfg, args.config, wait=args.wait))
    return 0 if args.max_runs is None or ok == args.max_runs else 1


def demo(args: argparse.Namespace) -> int:
    from core.config import DEMO_FILE
    from cli.demo import run_demo
    return run_demo(args.config or str(DEMO_FILE))


def run_pipeline_shown(cfg, config_path: str | None, wait: bool = False) -> str:
    """One run in a subprocess (pipeline/local_runner.py): progress on the console, the
    full log in ``pipeline_log_path``, a failure as one CliError line; the summary line.

    The run lock is taken here, before the subprocess imports TensorFlow (a refusal is
    PipelineRunning at once), and handed to the subprocess (``run_lock.LOCK_FD_ENV``).
    """
    from cli import console
    from cli.tfx_cli_quiet import QUIET_CHILD_ENV
    from pipeline import run_lock
    from pipeline.run import LOCAL_RUNNER, pipeline_log_path

    log_path = pipeline_log_path(cfg)
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
    env.pop("CGD_CONFIG", None)
    if config_path:
        env["CGD_CONFIG"] = os.path.abspath(config_path)
    if not os.environ.get("CGD_VERBOSE"):
        env[QUIET_CHILD_ENV] = "1"  # the venv's hook quiets the run's import noise
    with run_lock.acquire(cfg, wait=wait,
                          hint="add --wait to wait for it, or try again when it has finished"
                          ) as lock:
        env[run_lock.LOCK_FD_ENV] = str(lock.fd)
        print(f"==> pipeline {cfg.pipeline.name} (local orchestrator); full log: {log_path}",
              flush=True)
        output = console.run_shown([sys.executable, str(LOCAL_RUNNER)], env, log_path,
                                   f"pipeline {cfg.pipeline.name}", pass_fds=(lock.fd,))
    prefix = f"pipeline {cfg.pipeline.name}: "
    return next((line.strip() for line in reversed(output) if line.startswith(prefix)), "")
