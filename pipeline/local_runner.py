"""DSL file for the tfx CLI on the local orchestrator (ML Metadata on SQLite).

    export CGD_CONFIG=/abs/path/to/config.yaml     # both commands read it
    tfx pipeline create --engine local --pipeline_path pipeline/local_runner.py
    tfx run create --engine local --pipeline_name <pipeline.name>

`tfx pipeline create` runs this file as __main__ with LocalDagRunner.run
patched to record the pipeline; `tfx run create` runs it again for real.
Without CGD_CONFIG the packaged defaults (core/config.yaml) are used.
"""

import logging
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # before TensorFlow is imported

from absl import logging as absl_logging  # noqa: E402
from tfx import v1 as tfx  # noqa: E402

from core import config as config_lib  # noqa: E402
from pipeline.definition import create_pipeline  # noqa: E402


def run() -> None:
    from pipeline.summary import RunState, run_summary

    cfg = config_lib.load_config(os.environ.get("CGD_CONFIG"))
    # `tfx pipeline create` runs this file with LocalDagRunner.run wrapped (functools.wraps)
    # to record the pipeline without running it: only a real run gets a summary.
    recording_only = hasattr(tfx.orchestration.LocalDagRunner.run, "__wrapped__")
    before = RunState.now(cfg)
    tfx.orchestration.LocalDagRunner().run(create_pipeline(cfg))
    if not recording_only:
        print(run_summary(cfg, before), flush=True)


if __name__ == "__main__":
    absl_logging.set_verbosity(absl_logging.INFO)
    logging.getLogger().setLevel(logging.INFO)  # our components' progress reaches the log
    run()
