"""The output of `tfx run create` on the local engine: the digest `cgd pipeline run` shows.

The registry side (which pipeline the DSL file may run) is pipeline/tfx_registry.py.
"""

from __future__ import annotations

import os

from pipeline.tfx_registry import flag_value

# ------------------------------------------------------------------ the output of a run
#
# `tfx run create` runs the DSL file with the CLI's own stdout and stderr, and the DSL file
# logs at INFO (the run's log: pipeline/local_runner.py): 2,000+ lines of absl records, most
# of them protobuf dumps ("Running launcher for node_info {"), on the terminal. The venv's
# hook (cli/tfx_cli_quiet.py) calls start_run_digest in the CLI process before the CLI
# does anything: file descriptors 1 and 2 go into a pipe to a filter process
# (``python -m cli.console tfx-run``) that appends every line to the pipeline's log file
# (`cgd pipeline run`'s, pipeline/run.py pipeline_log_path) and shows what `cgd pipeline run`
# shows (console.digest_tfx_run). The DSL file and Beam's workers inherit the pipe. A separate
# process, so that a run killed or aborting loses nothing already written.


def run_digest_log(cmdline: list[str], environ=None) -> tuple[str, str] | None:
    """(pipeline name, log file) when ``cmdline`` is a `tfx run create` on the local engine
    of a pipeline that CGD_CONFIG (or the packaged defaults) describes, else None: other
    commands, other engines, and runs `cgd demo` already digests (console.SHOWN_ENV)."""
    from cli.console import SHOWN_ENV

    environ = os.environ if environ is None else environ
    args = cmdline[1:3]
    if args != ["run", "create"] or environ.get(SHOWN_ENV) or environ.get("CGD_VERBOSE"):
        return None
    if flag_value(cmdline, "--engine") not in ("local", "beam"):  # these two run the DSL file here
        return None
    name = flag_value(cmdline, "--pipeline_name")
    if not name:
        return None
    from core.config import ConfigError, load_config
    from pipeline.run import pipeline_log_path
    try:
        cfg = load_config(environ.get("CGD_CONFIG") or None)
    except ConfigError:  # the DSL file says what is wrong, in its own words
        return None
    if cfg.pipeline.name != name:  # another pipeline: the DSL file refuses it in one line
        return None
    return name, pipeline_log_path(cfg)


def start_run_digest(cmdline: list[str]) -> bool:
    """Send this process's output (and its children's) through the digest filter, if
    ``cmdline`` is a run to digest (run_digest_log). At exit, the pipe is closed and the
    filter waited for, so that the summary comes before the shell's prompt. False: nothing
    changed (not such a run, or no filter could be started)."""
    import atexit
    import subprocess
    import sys

    target = run_digest_log(cmdline)
    if target is None:
        return False
    name, log_path = target
    from cli.tfx_cli_quiet import QUIET_CHILD_ENV

    env = {k: v for k, v in os.environ.items() if k != QUIET_CHILD_ENV}  # a plain filter
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli.console", "tfx-run", name, log_path,
             "tfx", *cmdline[1:]], stdin=subprocess.PIPE, env=env)
    except OSError:
        return False
    os.dup2(proc.stdin.fileno(), 1)
    os.dup2(proc.stdin.fileno(), 2)
    proc.stdin.close()

    def finish() -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)  # our ends of the pipe: the filter reads EOF once the run's are
        os.dup2(devnull, 2)  # closed too
        os.close(devnull)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # a straggler holds the pipe: the filter goes on
            pass

    atexit.register(finish)
    return True
