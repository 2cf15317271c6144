"""Beam settings of our Beam components (RetrievalExampleGen, Transform) on the local
DirectRunner.

* TFX builds a source package of itself for every Beam component (``--extra_package``,
  3-5 s per component) so that remote workers (Dataflow, Flink) can import TFX. The
  DirectRunner's workers are local processes or threads of this very environment: for
  it, the package is skipped.
* The running mode for the data size. The packaged mode is ``multi_threading`` with a
  worker thread per core (core/config.yaml says why). A multi-processing DirectRunner
  starts one Python process per worker for every Beam pipeline, each importing Beam,
  TensorFlow and our code (seconds each), and moves every element between processes.
  Any parallel mode costs a few seconds of start-up; below ``SMALL_INPUT_IMAGES``
  images that is more than the second core saves, so such inputs run on one thread
  (``in_memory``); larger ones keep the configured mode and worker count.
"""

from __future__ import annotations

import contextlib
import logging

log = logging.getLogger(__name__)

# Not yet measured on a quiet machine (docs/benchmarks.md, "Data path at Cars196 scale";
# data_path.py --small-input-images 0 runs small inputs on threads for the comparison).
SMALL_INPUT_IMAGES = 2000
_MODE_FLAGS = ("--direct_running_mode", "--direct_num_workers")


def _options(beam_args):
    from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, \
        StandardOptions
    options = PipelineOptions(list(beam_args or []))
    return options.view_as(StandardOptions), options.view_as(DirectOptions)


def is_direct_runner(beam_args) -> bool:
    """True for Beam's local runner (no --runner, DirectRunner or its variants)."""
    standard, _ = _options(beam_args)
    runner = standard.runner
    return runner is None or (isinstance(runner, str) and runner.endswith("DirectRunner"))


@contextlib.contextmanager
def no_tfx_package_for_direct_runner(context):
    """Within: constructing a TFX Beam executor builds no TFX source package when its
    Beam args name the DirectRunner (module doc)."""
    from tfx.utils import dependency_utils
    args = getattr(context, "beam_pipeline_args", None)
    if not args or not is_direct_runner(args):
        yield
        return
    original = dependency_utils.make_beam_dependency_flags
    dependency_utils.make_beam_dependency_flags = list
    try:
        yield
    finally:
        dependency_utils.make_beam_dependency_flags = original


def args_for_input_size(beam_args: list[str], num_images: int) -> list[str]:
    """``beam_args`` for a pipeline over ``num_images`` images: in-process (in_memory, one
    worker) when that is the faster choice on the DirectRunner (module doc), else as is."""
    if not is_direct_runner(beam_args) or num_images >= SMALL_INPUT_IMAGES:
        return list(beam_args)
    _, direct = _options(beam_args)
    if direct.direct_running_mode == "in_memory" and direct.direct_num_workers == 1:
        return list(beam_args)
    kept, skip_value = [], False
    for arg in beam_args:
        if skip_value:
            skip_value = False
        elif arg in _MODE_FLAGS:  # "--flag value"
            skip_value = True
        elif not arg.startswith(tuple(f + "=" for f in _MODE_FLAGS)):
            kept.append(arg)
    log.info("%d images: Beam runs on one thread (in_memory) instead of %s with %s "
             "worker(s): below %d images, starting workers costs more than it saves",
             num_images, direct.direct_running_mode, direct.direct_num_workers or "one per core",
             SMALL_INPUT_IMAGES)
    return kept + ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
