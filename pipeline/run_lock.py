"""One run of a pipeline at a time on the local orchestrator: a lock file per pipeline.

Two runs of one pipeline at once (a cron entry overlapping a manual run) would both train
and both push, on the same ML Metadata and pipeline root. `cgd pipeline run`, each run of
`cgd retrain`, `tfx run create` (pipeline/local_runner.py) and ``run.run_local`` hold an
exclusive ``fcntl.flock`` on ``<pipeline root>/.cgd-run.lock`` while they run; a second run
of the same pipeline refuses in one line naming the running one (or, with ``wait=True``,
waits for it). `tfx pipeline create/update` only record the pipeline and take no lock.

Why flock: the kernel releases it when its holder dies, SIGKILL and OOM kill included, so a
lock left by a killed run is never obeyed: the next run takes it over and says so (the file
still holds the dead run's description, which a clean release clears). The file stays in
place; deleting it while another process waits on it would let two runs hold two different
files.

`cgd pipeline run` and `cgd retrain` take the lock in the `cgd` process (a refusal costs no
TensorFlow import) and hand the open descriptor to their pipeline/local_runner.py child
(``LOCK_FD_ENV``): one lock, held until both have exited, so a run whose `cgd` parent was
killed still holds it.

Where the lock lives, and what it covers:
- a local pipeline root: in the root, so every run that writes there is serialised;
- a gs:// (or other URL) root: flock cannot lock an object store, so the lock file goes
  next to the ML Metadata SQLite file (``pipeline.metadata_path``, local for the local
  orchestrator) and serialises runs on this machine only; runs from several machines into
  one bucket are for Kubeflow, whose recurring runs have ``max_concurrency=1``;
- NFS: Linux emulates flock with NFS byte-range locks, which the server enforces across
  clients (NFSv4; NFSv3 through lockd), except on mounts with ``nolock`` or ``local_lock``,
  where only processes on the same client are serialised. A client that crashes keeps its
  lock until the server's lease runs out (NFSv4: 90 s by default). FUSE filesystems (e.g.
  gcsfuse) may accept flock without enforcing it across machines.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shlex
import socket
import sys
import time

from core.config import Config
from core.errors import CliError

log = logging.getLogger("cgd")

# The descriptor number of the lock a `cgd` parent already holds for its runner child.
LOCK_FD_ENV = "CGD_RUN_LOCK_FD"
LOCK_FILE = ".cgd-run.lock"


class PipelineRunning(CliError):
    """Another run of the same pipeline holds its lock."""


def _is_url(path: str) -> bool:
    return "://" in path


def lock_path(cfg: Config) -> str:
    """The lock file of ``cfg``'s pipeline (see the module docstring for URL roots)."""
    # The pipeline root as pipeline/definition.py's pipeline_root builds it; not imported
    # from there because that module imports TFX, and a refusal should not wait for it.
    root = os.path.join(cfg.pipeline.root, cfg.pipeline.name)
    if not _is_url(root):
        return os.path.join(root, LOCK_FILE)
    metadata_dir = os.path.dirname(cfg.pipeline.metadata_path)
    if not _is_url(metadata_dir):
        return os.path.join(metadata_dir, f".cgd-run-{cfg.pipeline.name}.lock")
    return os.path.join(os.path.expanduser("~"), ".cache", "cgd", "locks",
                        f"{cfg.pipeline.name}.lock")


def command_line(argv: list[str] | None = None) -> str:
    """This process's command as a person typed it: `cgd pipeline run --config x.yaml`."""
    argv = list(sys.argv if argv is None else argv)
    if argv:
        argv[0] = os.path.basename(argv[0])
    return shlex.join(argv)


def describe(holder: dict | None) -> str:
    """'pid 123 on host h, started 2026-01-02 03:04:05, `cgd pipeline run ...`'."""
    if not holder:
        return "a process that has not described itself yet (it is just starting)"
    text = f"pid {holder.get('pid')} on host {holder.get('host')}, started " \
           f"{holder.get('started')}, `{holder.get('command')}`"
    if holder.get("runner_pid") and holder.get("runner_pid") != holder.get("pid"):
        text += f" (its runner: pid {holder['runner_pid']})"
    return text


class RunLock:
    """A held lock; ``release()`` (or the holder's death) frees it."""

    def __init__(self, path: str, fd: int, inherited: bool):
        self.path, self.fd, self.inherited = path, fd, inherited

    def release(self) -> None:
        if self.fd < 0:
            return
        if not self.inherited:  # an inherited lock is the parent's to release
            # Cleared first, so the next holder knows this run ended cleanly.
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
        self.fd = -1

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> dict | None:
    try:
        text = os.pread(fd, 65536, 0).decode("utf-8", "replace").strip()
        return json.loads(text) if text else None
    except (OSError, ValueError):
        return None


def _write_holder(fd: int, holder: dict) -> None:
    data = json.dumps(holder).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise


def _inherited(path: str) -> RunLock | None:
    """The lock a `cgd` parent holds for this runner (``LOCK_FD_ENV``), if it is this one."""
    value = os.environ.pop(LOCK_FD_ENV, None)  # popped: not for this process's children
    if not value or not value.isdigit():
        return None
    fd = int(value)
    try:
        same_file = os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:
        return None
    # The same open file description as the parent's: flock succeeds on it (and on a
    # stray descriptor of the same file only when no one else holds the lock).
    if not same_file or not _try_flock(fd):
        return None
    holder = _read_holder(fd) or {}
    _write_holder(fd, dict(holder, runner_pid=os.getpid()))
    return RunLock(path, fd, inherited=True)


def acquire(cfg: Config, wait: bool = False, command: str | None = None,
            hint: str = "try again when it has finished") -> RunLock:
    """Hold the lock of ``cfg``'s pipeline, or raise PipelineRunning in one line naming the
    running one (pid, host, start time, command) and ``hint``; ``wait``: block until free."""
    path = lock_path(cfg)
    inherited = _inherited(path)
    if inherited:
        return inherited
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise CliError(f"cannot create the run lock {path} of pipeline {cfg.pipeline.name}: "
                       f"{e.strerror}") from None
    try:
        if not _try_flock(fd):
            holder = _read_holder(fd)
            if not wait:
                raise PipelineRunning(
                    f"pipeline {cfg.pipeline.name} is already running: {describe(holder)}; "
                    f"not started ({hint}); lock file {path}")
            log.info("pipeline %s is already running: %s; waiting for it to finish",
                     cfg.pipeline.name, describe(holder))
            fcntl.flock(fd, fcntl.LOCK_EX)  # Ctrl-C interrupts the wait
        left = _read_holder(fd)
        if left:  # a clean release clears the file: its holder died holding it
            log.warning("pipeline %s: the previous run (%s) ended without releasing its lock "
                        "(killed?); the kernel freed it and this run takes it over",
                        cfg.pipeline.name, describe(left))
        _write_holder(fd, {"pid": os.getpid(), "host": socket.gethostname(),
                           "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                           "command": command or command_line()})
    except BaseException:
        os.close(fd)
        raise
    return RunLock(path, fd, inherited=False)
