"""DSL file for the tfx CLI on the local orchestrator (ML Metadata on SQLite).

    export CGD_CONFIG=/abs/path/to/config.yaml     # both commands read it
    tfx pipeline create --engine local --pipeline_path pipeline/local_runner.py
    tfx run create --engine local --pipeline_name <pipeline.name>

`tfx pipeline create` runs this file as __main__ with LocalDagRunner.run
patched to record the pipeline; `tfx run create` runs it again for real, and
then refuses (one line, nothing written) to run a pipeline other than the one
created under that name, e.g. the packaged defaults in a shell without CGD_CONFIG,
and, in one line naming it, while another run of the pipeline holds its run lock.
Every real run ends with one summary line (pipeline/summary.py).
"""

import logging
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # before TensorFlow is imported
# Google's version warnings and TensorFlow's import noise are quieted by the venv's hook
# (cli/tfx_cli_quiet.py) in every process marked as a quiet child: the tfx CLI's children,
# and this file when `cgd pipeline run` starts it.

from absl import logging as absl_logging  # noqa: E402
from tfx import v1 as tfx  # noqa: E402

from core import config as config_lib  # noqa: E402
from pipeline.definition import create_pipeline  # noqa: E402


def run() -> None:
    from core.errors import CliError
    from pipeline import tfx_registry as tfx_cli
    from pipeline.definition import pipeline_root
    from pipeline.summary import RunState, run_summary

    config_path = os.environ.get("CGD_CONFIG")
    cfg = config_lib.load_config(config_path)
    # `tfx pipeline create` runs this file with LocalDagRunner.run wrapped (functools.wraps)
    # to record the pipeline without running it: only a real run gets a summary.
    recording_only = hasattr(tfx.orchestration.LocalDagRunner.run, "__wrapped__")
    name = None
    if not recording_only:
        name = tfx_cli.pipeline_name_from_cli()
        if name:
            try:
                tfx_cli.check_registered_pipeline(
                    cfg.pipeline.name, pipeline_root(cfg), tfx_cli.registered_pipeline_args(name),
                    f"CGD_CONFIG={config_path}" if config_path else
                    "the packaged defaults (CGD_CONFIG is not set)")
            except CliError as e:
                print(f"error: {e}", file=sys.stderr)
                sys.exit(1)
    # Only a real run holds the pipeline's run lock (pipeline/run_lock.py): recording a
    # pipeline runs nothing and may happen while it runs.
    lock = None if recording_only else _run_lock(cfg, name)
    try:
        before = RunState.now(cfg)
        tfx.orchestration.LocalDagRunner().run(create_pipeline(cfg))
        if not recording_only:
            print(run_summary(cfg, before), flush=True)
    finally:
        if lock:
            lock.release()


def _run_lock(cfg, tfx_pipeline_name):
    """The run lock (handed down by `cgd pipeline run`/`cgd retrain`, else taken here);
    another run of the pipeline in progress: one error line, exit 1, nothing run."""
    from core.errors import CliError
    from pipeline import run_lock
    command = (f"tfx run create --engine local --pipeline_name {tfx_pipeline_name}"
               if tfx_pipeline_name else None)
    try:
        return run_lock.acquire(cfg, command=command)
    except CliError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    absl_logging.set_verbosity(absl_logging.INFO)
    logging.getLogger().setLevel(logging.INFO)  # our components' progress reaches the log
    run()
