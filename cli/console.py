"""What a person sees of a pipeline run: our progress lines, the failing component's error.

The orchestrator's full output (absl, Beam, TensorFlow) goes to a log file; the console
gets the stages' progress (component states, our own log messages, per-epoch training
lines) through ``progress_lines``, and a failure ends with ``failure_summary``: the
failing component's own exception and the log path. Used by `cgd demo` and
`cgd pipeline run`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

from core.errors import CliError

INDENT = "    "
# Our top-level packages; records of their loggers (and of "cgd.*") are ours to show.
OUR_PACKAGES = ("components", "trainer", "pipeline", "serving", "core", "kubeflow")
OUR_LOGGERS = OUR_PACKAGES + ("cgd",)


class Record(NamedTuple):
    """One line of output without its log prefix."""
    level: str | None    # INFO, WARNING, ...; None: not a log record
    logger: str | None   # the logger's name, if the format has it
    message: str


_LEVEL_NAMES = r"DEBUG|INFO|WARNING|ERROR|CRITICAL"
_PREFIXES = (
    # Python's default format, as in the pipeline process: "INFO:absl:...", "INFO:trainer.task:..."
    re.compile(rf"^(?P<level>{_LEVEL_NAMES}):(?P<logger>[\w.]+):(?P<message>.*)$"),
    # absl / glog: "I1123 02:09:10.905123 140 task.py:168] ...",
    # also TensorFlow's "W0000 00:00:1795400311.043539 18728 op_level_cost_estimator.cc:699] ..."
    re.compile(r"^(?P<level>[DIWEF])\d{4} [\d:.]+\s+\d+ [^\s:\]]+:\d+\] (?P<message>.*)$"),
    # TensorFlow's C++ log: "2026-11-23 02:15:55.970013: E external/.../cuda_fft.cc:479] ..."
    re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?: (?P<level>[DIWEF]) "
               r"[^\s:\]]+:\d+\] (?P<message>.*)$"),
    # cgd's own format (cli/main.py): "02:15:53 INFO cgd.demo: ..."
    re.compile(rf"^\d\d:\d\d:\d\d (?P<level>{_LEVEL_NAMES}) (?P<logger>[\w.]+): (?P<message>.*)$"),
)
_LEVELS = {"D": "DEBUG", "I": "INFO", "W": "WARNING", "WARN": "WARNING", "E": "ERROR",
           "F": "CRITICAL"}

# A Beam worker's log record, relayed by the local job service as one line of proto text.
_BEAM_WORKER = re.compile(
    r'^Worker: severity: (?P<level>\w+) .*?message: "(?P<message>(?:[^"\\]|\\.)*)"'
    r'.*? log_location: "(?P<location>[^"]*)"')
# TFX's local orchestrator (tfx/orchestration/local/local_dag_runner.py, portable/launcher.py).
_COMPONENT = re.compile(r"^Component (?P<name>\S+) is (?P<state>running|finished)\.$")
_EXECUTION_STATES = (
    (re.compile(r"^Going to run a new execution \d+$"), "running"),
    (re.compile(r"^A cached execution \d+ is used\.$"), "cached"),
    (re.compile(r"^Skipping execution for "), "skipped"),
    (re.compile(r"^Execution \d+ failed\.$"), "failed"),
)
# The tfx CLI's own result line.
_PIPELINE_SAVED = re.compile(r'^Pipeline "[^"]+" (created|updated) successfully\.$')
# Our messages, for log formats that give a file name instead of a logger name (absl's).
_OUR_MESSAGES = re.compile(
    r"^(epoch \d+/\d+: loss |validation Recall@1 before training|early stopping: |"
    r"restored the best epoch |resum(ed|ing) |training on \d+ images|exported SavedModel to |"
    r"skipping corrupt image |(RetrievalExampleGen|RecallEvaluator): )")


def _logged(lines, log_file, output: list[str]):
    """``lines`` as they come, each also appended to ``log_file`` and to ``output``."""
    for line in lines:
        log_file.write(line)
        output.append(line)
        yield line


def parse_line(line: str) -> Record:
    """A line of output as (level, logger, message), its log prefix removed."""
    text = line.rstrip()
    for prefix in _PREFIXES:
        m = prefix.match(text)
        if m:
            fields = m.groupdict()
            return Record(_LEVELS.get(fields["level"], fields["level"]), fields.get("logger"),
                          fields["message"])
    return Record(None, None, text)


def _ours(logger: str | None, message: str) -> bool:
    if logger is not None:
        return logger.split(".")[0] in OUR_LOGGERS
    return bool(_OUR_MESSAGES.match(message))


def _our_source(location: str) -> bool:
    """A source location ("/path/to/file.py:102") in our packages, not an installed library's."""
    parts = Path(location.rsplit(":", 1)[0]).parts
    return ("site-packages" not in parts and "dist-packages" not in parts
            and any(part in OUR_PACKAGES for part in parts[:-1]))


def _labelled(level: str | None, message: str) -> str:
    return f"{level.lower()}: {message}" if level in ("WARNING", "ERROR", "CRITICAL") else message


def progress_line(line: str) -> str | None:
    """What to show of one line of output (stateless); None: nothing, it stays in the log.

    Whole lines only, without log prefixes: our own log records (by logger name,
    or by message where the format has none), our records relayed by Beam
    workers, and the tfx CLI's "Pipeline ... created/updated" line. Component
    events need to know the running component: see ``progress_lines``.
    """
    level, logger, message = parse_line(line)
    if level is None:
        return message if _PIPELINE_SAVED.match(message) else None
    relayed = _BEAM_WORKER.match(message)
    if relayed:
        if not _our_source(relayed["location"]):
            return None
        text = re.sub(r"\\(.)", lambda m: " " if m[1] == "n" else m[1], relayed["message"])
        return _labelled(_LEVELS.get(relayed["level"], relayed["level"]), text.strip())
    return _labelled(level, message) if _ours(logger, message) else None


def progress_lines(lines: Iterable[str]) -> Iterator[str]:
    """The lines to show of the tfx CLI's output, as they come.

    Each component appears as "Component X: running" when it really runs, then
    "finished" or "failed"; or once as "cached" (an earlier result reused) or
    "skipped".
    """
    component, done = None, False
    for line in lines:
        level, _, message = parse_line(line)
        if level is not None:
            m = _COMPONENT.match(message)
            if m and m["state"] == "running":
                component, done = m["name"], False
                continue
            if m:
                if not done:
                    yield f"Component {m['name']}: finished"
                component = None
                continue
            state = component and next(
                (s for pattern, s in _EXECUTION_STATES if pattern.match(message)), None)
            if state:
                yield f"Component {component}: {state}"
                done = state != "running"
                continue
        shown = progress_line(line)
        if shown is not None:
            yield shown


# ------------------------------------------------------------------ what failed

_TRACEBACK = "Traceback (most recent call last):"
# An exception line: "SomeError: ...", "KeyboardInterrupt", "pkg.module.Anything: ...".
_EXCEPTION = re.compile(
    r"^((?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt|Failure|Warning|"
    r"StopIteration)(?::.*)?|(?:[A-Za-z_]\w*\.)+[A-Za-z_]\w*: .*)$")
# Tracebacks that are not the failure: exceptions in __del__ at interpreter shutdown
# (TensorFlow's AtomicFunction), and in background threads.
_IGNORED_AFTER = ("Exception ignored in", "Exception in thread")
_CHAINED = ("During handling of the above exception", "The above exception was the direct cause")


class Failure(NamedTuple):
    component: str | None   # the component that was running, if any
    error: list[str]        # the last exception line(s) of its traceback; [] if none


def _exception_line(line: str) -> bool:
    return (not line[:1].isspace() and parse_line(line).level is None
            and bool(_EXCEPTION.match(line.rstrip())))


def exceptions(lines: list[str]) -> Iterator[tuple[bool, list[str]]]:
    """(ignored, exception lines) of each Python traceback in ``lines``, in order.

    Beam nests a worker's traceback in the message ("RuntimeError: Traceback
    ..."): the nested one's exception is reported.
    """
    i = 0
    while i < len(lines):
        if not lines[i].rstrip().endswith(_TRACEBACK):
            i += 1
            continue
        ignored = i > 0 and lines[i - 1].startswith(_IGNORED_AFTER)
        while True:
            j = i + 1  # frames are indented; other processes' log lines may interleave
            while j < len(lines) and not _exception_line(lines[j]) \
                    and lines[j].rstrip() != _TRACEBACK:
                j += 1
            if j < len(lines) and _exception_line(lines[j]) \
                    and lines[j].rstrip().endswith(_TRACEBACK):
                i = j  # nested
                continue
            break
        if j >= len(lines) or not _exception_line(lines[j]):
            i = j  # an incomplete traceback; go on from the next one
            continue
        error, k = [lines[j].rstrip()], j + 1
        while (k < len(lines) and len(error) < 10 and lines[k].strip()
               and not lines[k].startswith(_CHAINED + _IGNORED_AFTER)
               and parse_line(lines[k]).level is None
               and not lines[k].rstrip().endswith(_TRACEBACK)
               and not lines[k].startswith("Error while running")):  # the tfx CLI's
            error.append(lines[k].rstrip())
            k += 1
        yield ignored, error
        i = k


def find_failure(log_lines: Iterable[str]) -> Failure:
    """The failing component (the last one started and not finished) and its own error."""
    lines = [line.rstrip("\n") for line in log_lines]
    component, start = None, 0
    for i, line in enumerate(lines):
        level, _, message = parse_line(line)
        m = _COMPONENT.match(message) if level else None
        if m:
            component, start = (m["name"], i) if m["state"] == "running" else (None, 0)
    errors = [error for ignored, error in exceptions(lines[start:]) if not ignored]
    return Failure(component, errors[-1] if errors else [])


def failure_summary(log_lines: Iterable[str], log_path: str) -> str:
    """What to show when a command failed: its component's own error (the last exception
    of its traceback, not TensorFlow's shutdown noise) and the full log's path."""
    lines = list(log_lines)
    component, error = find_failure(lines)
    where = f"component {component}" if component else "the tfx CLI"
    if not error:
        last = [line.strip() for line in lines if line.strip()][-1:] or ["(no output)"]
        error = [f"(no Python exception in the output; its last line: {last[0]})"]
    return "\n".join([f"{INDENT}error in {where}:", *(INDENT + "  " + e for e in error),
                      f"{INDENT}full log: {log_path}"])


def exception_name(error: list[str]) -> str:
    """"Cars196SourceError" of ["components.datasets.cars196.source.Cars196SourceError: ..."]."""
    return error[0].split(":", 1)[0].rsplit(".", 1)[-1] if error else ""


# ------------------------------------------------------------------ tfx CLI

# Set for the commands run_shown runs (`cgd demo`'s `tfx run create`): their output is shown
# as a digest here already, so `tfx run create` must not digest it itself (digest_tfx_run).
SHOWN_ENV = "CGD_OUTPUT_SHOWN"
# What the tfx CLI prints before it runs the DSL file (tfx/tools/cli/commands/run.py).
_RUN_STARTS = re.compile(r"^Creating a run for pipeline: \S+$")
# Our one-line refusals, printed by the DSL file (pipeline/local_runner.py): another
# pipeline than the registered one, another run holding the run lock.
_OUR_ERROR = "error: "


def digest_tfx_run(lines: Iterable[str], log_file, out, pipeline_name: str,
                   log_path: str) -> bool:
    """What `tfx run create` shows of its output ``lines``: the same digest as `cgd pipeline
    run` (run_shown). Every line goes to ``log_file``; ``out`` gets the tfx CLI's own lines as
    they are until it starts the DSL file, then the header with ``log_path``, the run's
    ``progress_lines`` (indented), our one-line errors and the summary line; a run that ends
    without its summary gets its ``failure_summary`` and one error line. True: a summary.
    """
    output: list[str] = []
    summary_prefix = f"pipeline {pipeline_name}: "
    said = {"summary": False, "error": False}

    def show(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    def run_lines(source):
        for line in source:  # the summary and our errors as they are, the rest digested
            text = line.rstrip("\n")
            if text.startswith(summary_prefix):
                said["summary"] = True
                show(text)
            elif text.startswith(_OUR_ERROR):
                said["error"] = True
                show(text)
            else:
                yield line

    source = _logged(lines, log_file, output)
    started = False
    for line in source:
        show(line.rstrip("\n"))
        if _RUN_STARTS.match(line.strip()):
            started = True
            break
    if not started:  # the CLI stopped before running the pipeline: all of it was shown
        return False
    show(f"==> pipeline {pipeline_name} (local orchestrator); full log: {log_path}")
    for line in progress_lines(run_lines(source)):
        show(INDENT + line)
    if not said["summary"] and not said["error"]:
        log_file.flush()
        show(failure_summary(output, log_path))
        failure = find_failure(output)
        show(f"error: tfx run create --pipeline_name {pipeline_name} failed"
             + (f" in component {failure.component}" if failure.component else "")
             + (f": {exception_name(failure.error)}" if failure.error else "")
             + f"; full log: {log_path}")
    return said["summary"]


def _digest_main(argv: list[str]) -> int:
    """The filter process of `tfx run create` (cli/tfx_cli.py start_run_digest):
    ``python -m cli.console tfx-run NAME LOG_PATH COMMAND...``, the run's output on stdin.

    Whatever happens here, stdin is read to its end: the run must never meet a closed pipe.
    """
    import io
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the run; its end comes here
    name, log_path, *command = argv
    lines = io.TextIOWrapper(sys.stdin.buffer, errors="replace")
    out = _Unbreakable(sys.stdout)
    try:
        os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
        with open(log_path, "a", buffering=1) as log_file:  # line by line: a kill loses none
            log_file.write(f"===== {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(command)}\n")
            digest_tfx_run(lines, log_file, out, name, log_path)
    except Exception as e:  # no log file, a bug here: the rest as it is, and why
        out.write(f"(cgd: cannot digest the output of tfx run create: {e!r})\n")
        for line in lines:
            out.write(line)
    return 0


class _Unbreakable:
    """A stream whose write errors (the terminal went away) are dropped, not raised."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        try:
            self.stream.write(text)
        except (OSError, ValueError):
            pass

    def flush(self) -> None:
        try:
            self.stream.flush()
        except (OSError, ValueError):
            pass


def run_shown(command: list[str], env: dict, log_path: str, label: str,
              pass_fds: tuple[int, ...] = ()) -> list[str]:
    """Run ``command``: all its output appended to ``log_path``, its progress to the console.

    Returns the output lines. A failure prints its ``failure_summary`` and raises
    CliError naming the failing component, its exception and the log.
    """
    os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
    output: list[str] = []
    with open(log_path, "a") as log_file:
        log_file.write(f"===== {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(command)}\n")
        log_file.flush()

        proc = subprocess.Popen(command, env=dict(env, **{SHOWN_ENV: "1"}),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1,
                                pass_fds=pass_fds)  # e.g. the run lock (pipeline/run_lock.py)
        for line in progress_lines(_logged(proc.stdout, log_file, output)):
            print(INDENT + line, flush=True)
        if proc.wait() != 0:
            log_file.flush()
            print(failure_summary(output, log_path), flush=True)
            failure = find_failure(output)
            raise CliError(
                f"{label} failed (exit {proc.returncode})"
                + (f" in component {failure.component}" if failure.component else "")
                + (f": {exception_name(failure.error)}" if failure.error else "")
                + f"; full log: {log_path}")
    return output


@contextlib.contextmanager
def stderr_to(path: str):
    """File descriptor 2 (C++ and Python stderr) appended to ``path`` for the duration."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "a") as target:
            os.dup2(target.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)


@contextlib.contextmanager
def log_records_to(path: str):
    """This process's log records (the model server's, the Cars196 parser's) appended to
    ``path``; the console keeps only warnings and errors. Unchanged with ``cgd -v``."""
    root = logging.getLogger()
    if root.getEffectiveLevel() <= logging.DEBUG:
        yield
        return
    to_file = logging.FileHandler(path)
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    levels = [(handler, handler.level) for handler in root.handlers]
    for handler, level in levels:
        handler.setLevel(max(level, logging.WARNING))
    root.addHandler(to_file)
    try:
        yield
    finally:
        root.removeHandler(to_file)
        to_file.close()
        for handler, level in levels:
            handler.setLevel(level)


def import_tensorflow_quietly(log_path: str) -> None:
    """Import TensorFlow with its import-time noise (CUDA plugin registration errors
    without a GPU, Google clients' FutureWarnings) going to the log, not the console."""
    if "tensorflow" not in sys.modules:
        with stderr_to(log_path):
            import tensorflow  # noqa: F401


if __name__ == "__main__" and sys.argv[1:2] == ["tfx-run"]:
    sys.exit(_digest_main(sys.argv[2:]))
