"""`cgd demo`: the whole product on generated data, end to end.

1. sample Cars196 archives (if the source directory lacks them),
2. the full pipeline through the tfx CLI on the local orchestrator,
3. the embedded TF-Serving-compatible server on the pushed model,
4. gRPC embedding requests and a gallery search,
5. a summary: Recall@K table, blessing verdict, served version, ranking picture.

The console shows what a person should read; everything the tfx CLI and the
pipeline print goes to the log file (``<work>/logs/tfx.log``). Two pure
functions over output lines choose: ``progress_lines`` (what to show while the
pipeline runs) and ``failure_summary`` (the failing component's own error when
a command fails); they are tested without a pipeline (tests/test_demo_output.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

from pipeline.artifacts import newest_numbered_dir, newest_output
from core.config import Config, load_config
from core.errors import CliError
from core.names import CARS196_FILES

LOCAL_RUNNER = Path(__file__).with_name("local_runner.py")
INDENT = "    "

# ------------------------------------------------------------------ what to show

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
    # cgd's own format (pipeline/cli.py): "02:15:53 INFO cgd.demo: ..."
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
    r"skipping corrupt image |(Cars196ExampleGen|RecallEvaluator): )")


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
    """"Cars196SourceError" of ["components.cars196.tfds_source.Cars196SourceError: ..."]."""
    return error[0].split(":", 1)[0].rsplit(".", 1)[-1] if error else ""


# ------------------------------------------------------------------ tfx CLI


def tfx_command(*args: str) -> list[str]:
    """The tfx CLI of this environment (the one installed beside this Python)."""
    tfx = Path(sys.executable).with_name("tfx")
    return [str(tfx) if tfx.exists() else "tfx", *args]


def tfx_home(cfg: Config) -> str:
    return os.path.join(os.path.dirname(cfg.pipeline.root), "tfx_home")


def run_tfx_cli(cfg: Config, config_path: str, log_path: str) -> None:
    """`tfx pipeline create|update` then `tfx run create`, local engine, progress shown.

    All they print is appended to ``log_path``; the console gets its
    ``progress_lines`` and, if a command fails, its ``failure_summary``; then
    CliError.
    """
    env = dict(os.environ, CGD_CONFIG=os.path.abspath(config_path), LOCAL_HOME=tfx_home(cfg),
               TF_USE_LEGACY_KERAS="1")
    exists = os.path.exists(os.path.join(tfx_home(cfg), cfg.pipeline.name))
    steps = [
        ("pipeline", "update" if exists else "create", "--engine", "local",
         "--pipeline_path", str(LOCAL_RUNNER)),
        ("run", "create", "--engine", "local", "--pipeline_name", cfg.pipeline.name),
    ]
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "a") as log_file:
        for args in steps:
            command = tfx_command(*args)
            print(f"{INDENT}$ tfx {' '.join(args)}", flush=True)
            log_file.write(f"===== cgd demo {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                           f"{' '.join(command)}\n")
            log_file.flush()
            output: list[str] = []

            def logged(lines):
                for line in lines:
                    log_file.write(line)
                    output.append(line)
                    yield line

            proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, bufsize=1)
            for line in progress_lines(logged(proc.stdout)):
                print(INDENT + line, flush=True)
            if proc.wait() != 0:
                log_file.flush()
                print(failure_summary(output, log_path), flush=True)
                failure = find_failure(output)
                raise CliError(
                    f"`tfx {' '.join(args[:2])}` failed (exit {proc.returncode})"
                    + (f" in component {failure.component}" if failure.component else "")
                    + (f": {exception_name(failure.error)}" if failure.error else "")
                    + f"; full log: {log_path}")


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


def ensure_sample_data(cfg: Config) -> None:
    source = cfg.data.source_dir
    if all(os.path.exists(os.path.join(source, f)) for f in CARS196_FILES):
        print(f"{INDENT}using the Cars196 files in {source}", flush=True)
        return
    from components.cars196.sample_data import make_sample_data
    classes = max(cfg.data.train_classes[1], cfg.data.eval_classes[1])
    print(f"{INDENT}writing sample Cars196 archives ({classes} classes) to {source}", flush=True)
    make_sample_data(source, num_classes=classes, images_per_class=10, seed=0, corrupt=2)


def gallery_and_queries(cfg: Config, work: str) -> tuple[str, list[tuple[str, int]]]:
    """Gallery = TFDS-test images of the eval classes; queries = TFDS-train images of them."""
    from components.cars196 import tfds_source
    gallery = os.path.join(work, "gallery")
    shutil.rmtree(gallery, ignore_errors=True)
    os.makedirs(gallery)
    queries = []
    for record in tfds_source.iter_records(cfg.data.source_dir, os.path.join(work, "parse")):
        if cfg.data.split_of_class(record["class_id"] + 1) != "eval":
            continue
        name = f"class{record['class_id'] + 1:03d}_{os.path.basename(record['image_path'])}"
        if record["tfds_split"] == "test":
            shutil.copy(record["image_path"], os.path.join(gallery, name))
        elif len(queries) < 3 and all(c != record["class_id"] + 1 for _, c in queries):
            queries.append((record["image_path"], record["class_id"] + 1))
    return gallery, queries


def run_demo(config_path: str) -> int:
    started = time.monotonic()
    cfg = load_config(config_path)
    log_path = os.path.join(os.path.dirname(cfg.pipeline.root), "logs", "tfx.log")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with log_records_to(log_path):
        return _run_demo(cfg, config_path, log_path, started)


def _run_demo(cfg: Config, config_path: str, log_path: str, started: float) -> int:
    work = os.path.dirname(cfg.pipeline.root)
    print(f"==> 1/5 data: {cfg.data.source_dir}", flush=True)
    ensure_sample_data(cfg)

    print(f"==> 2/5 pipeline {cfg.pipeline.name} through the tfx CLI (local orchestrator); "
          f"full log: {log_path}", flush=True)
    run_tfx_cli(cfg, config_path, log_path)

    evaluation = newest_output(cfg, "RecallEvaluator", "evaluation")
    metrics = json.load(open(os.path.join(evaluation, "metrics.json"))) if evaluation else {}
    model_dir = os.path.join(cfg.pipeline.serving_dir, cfg.serving.model_name)
    if not newest_numbered_dir(model_dir):
        raise CliError(f"no model has been pushed to {model_dir}: {metrics.get('reason', '?')}")

    print(f"==> 3/5 serving {model_dir} (embedded TF-Serving-compatible server)", flush=True)
    import_tensorflow_quietly(log_path)
    from serving.client import EmbeddingClient
    from serving.index import build_index
    from serving.model_server import ModelServer
    with ModelServer(cfg.pipeline.serving_dir, cfg.serving.model_name, host="127.0.0.1",
                     grpc_port=0, rest_port=0, poll_seconds=1.0) as server:
        print(f"    gRPC {server.grpc_target}, REST {server.rest_url}", flush=True)
        with EmbeddingClient(server.grpc_target, cfg.serving.model_name, timeout_s=60) as client:
            status = client.model_status()
            gallery, queries = gallery_and_queries(cfg, work)
            print(f"==> 4/5 gRPC embedding requests for {len(queries)} query images", flush=True)
            embeddings = client.embed_files([path for path, _ in queries])
            for (path, class_id), e in zip(queries, embeddings):
                print(f"    {os.path.basename(path)} (class {class_id}): embedding dim "
                      f"{e.shape[0]}, norm {float((e ** 2).sum()) ** 0.5:.4f}, "
                      f"served by version {client.last_model_version}")
            print(f"==> 5/5 gallery index of {gallery} and a search", flush=True)
            report = build_index(client, gallery)
            report.index.save(os.path.join(work, "gallery.index.npz"))
            query_path, query_class = queries[0]
            hits = report.index.search(embeddings[0], k=8)
            print(f"    query {os.path.basename(query_path)} (class {query_class}); top 8 of "
                  f"{len(report.index)} gallery images ({len(report.skipped)} unreadable skipped):")
            for rank, (_, distance, path) in enumerate(hits, 1):
                same = os.path.basename(path).startswith(f"class{query_class:03d}_")
                print(f"    {rank}. {distance:.4f}  {os.path.basename(path)}"
                      f"{'  <- same class' if same else ''}")

    candidate = metrics.get("candidate", {})
    print("\n==> summary")
    print("    " + "  ".join(f"{k:>9}" for k in candidate if k.startswith("recall@"))
          + f"  {'MAP@R':>7}  {'NMI':>6}")
    print("    " + "  ".join(f"{v:9.4f}" for k, v in candidate.items() if k.startswith("recall@"))
          + f"  {candidate.get('map@r', float('nan')):7.4f}  {candidate.get('nmi', float('nan')):6.4f}")
    print(f"    verdict: {metrics.get('reason')}")
    print(f"    served: model '{cfg.serving.model_name}' version "
          f"{status[0]['version'] if status else '?'} from {model_dir}")
    print(f"    ranking picture: {os.path.join(evaluation, 'rankings.png')} "
          f"(and rankings.html)")
    print(f"    finished in {time.monotonic() - started:.0f} s")
    return 0
