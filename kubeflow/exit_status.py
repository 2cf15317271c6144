"""A step's exit status is its work's status, whatever interpreter teardown does after.

On Kubeflow Pipelines, TFX's executor process sometimes aborts at interpreter
shutdown (``pure virtual method called`` from protobuf / ML Metadata C++
destructors), after it wrote ``output_metadata.json``: KFP then reports a
finished Trainer or Pusher as failed (sky-uk/kfp-operator#1286). So the step's
processes end with ``os._exit`` right after the work: no atexit hooks, no
module teardown, no C++ static destructors can change the status. A failure
still fails, with its traceback printed first.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import Callable


def status_of(main: Callable[[], object]) -> int:
    """Run ``main``: 0 when it returns, its code for ``sys.exit``, 1 (traceback printed) if it raises."""
    try:
        main()
        return 0
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    except BaseException:  # noqa: B036 - any failure of the work is the step's failure
        traceback.print_exc()
        return 1


def run_then_exit(main: Callable[[], object]) -> None:
    """``status_of(main)``, then end the process with it at once (never returns)."""
    status = status_of(main)
    logging.shutdown()  # flush log handlers: os._exit skips it
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)
