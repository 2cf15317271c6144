"""`cgd sample-data`, `cgd pipeline run`."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger("cgd")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sample-data", help="write small Cars196 archives in the original layout",
        description="Write cars_train.tgz, cars_test.tgz, car_devkit.tgz and "
                    "cars_test_annos_withlabels.mat with generated, class-structured JPEGs.")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--classes", type=int, default=18, help="number of classes (1..196)")
    p.add_argument("--images-per-class", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--corrupt", type=int, default=0,
                   help="add K truncated or non-image files (annotated like the others)")
    p.set_defaults(func=sample_data)

    p = subparsers.add_parser("pipeline", help="run the TFX pipeline")
    sub = p.add_subparsers(dest="pipeline_command", metavar="ACTION")
    run = sub.add_parser("run", help="run the whole pipeline once on the local orchestrator")
    run.add_argument("--config", help="YAML config (default: the packaged defaults)")
    run.set_defaults(func=pipeline_run)


def sample_data(args: argparse.Namespace) -> int:
    from components.cars196.sample_data import make_sample_data

    def progress(done, total):
        if done == total or done % max(1, total // 10) == 0:
            log.info("sample-data: %d/%d classes drawn", done, total)

    try:
        summary = make_sample_data(args.out, args.classes, args.images_per_class,
                                   args.seed, args.corrupt, progress=progress)
    except ValueError as e:
        from pipeline.cli import CliError
        raise CliError(str(e)) from None
    log.info("sample-data: wrote %s: %d train + %d test annotated images (%d corrupt)",
             summary.out_dir, len(summary.train), len(summary.test), len(summary.corrupt))
    return 0


def pipeline_run(args: argparse.Namespace) -> int:
    from absl import logging as absl_logging
    from tfx import v1 as tfx

    from pipeline.config import load_config
    from pipeline.pipeline import create_pipeline

    cfg = load_config(args.config)
    absl_logging.set_verbosity(absl_logging.INFO)
    log.info("pipeline %s: root %s, metadata %s", cfg.pipeline.name, cfg.pipeline.root,
             cfg.pipeline.metadata_path)
    tfx.orchestration.LocalDagRunner().run(create_pipeline(cfg))
    log.info("pipeline %s: finished", cfg.pipeline.name)
    return 0
