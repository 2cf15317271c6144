"""File descriptor 2 through a filter process that drops lines of known noise.

Some libraries write straight to fd 2 from C or C++ (TensorFlow's start-up lines,
libjpeg's messages about a corrupt file), where neither Python's logging nor an
environment variable reaches them. ``stderr_without(pattern)`` pipes fd 2 through a
small separate process for the duration: the lines matching ``pattern`` are dropped,
everything else goes on to the real stderr in order and at once. A process, not a
thread, so that what is written just before a crash (an abort's message) still gets out.
Used by cli.noise (the TensorFlow import) and serving.stderr_filter (libjpeg).
Imports nothing of ours.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys

# Copies stdin to stdout line by line as it arrives, except lines matching argv[1]. Ignores
# Ctrl-C (it ends when the pipe closes); a closed stdout ends it quietly.
_FILTER_PROGRAM = (
    "import re, signal, sys\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "noise = re.compile(sys.argv[1].encode())\n"
    "try:\n"
    "    for line in sys.stdin.buffer:\n"
    "        if not noise.match(line):\n"
    "            sys.stdout.buffer.write(line)\n"
    "            sys.stdout.buffer.flush()\n"
    "except OSError:\n"
    "    pass\n")


@contextlib.contextmanager
def stderr_without(noise: re.Pattern):
    """File descriptor 2 (C++ and Python stderr) through a filter process that drops the
    lines matching ``noise`` (a bytes pattern) for the duration; everything else goes on to
    the real stderr in order and at once. Without a usable stderr, a no-op."""
    saved = proc = None
    try:
        if sys.stderr is not None:
            sys.stderr.flush()
        saved = os.dup(2)
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _FILTER_PROGRAM, noise.pattern.decode()],
            stdin=subprocess.PIPE, stdout=saved, stderr=saved)
        os.dup2(proc.stdin.fileno(), 2)
        proc.stdin.close()
    except (OSError, ValueError):  # no fd 2, no interpreter to run: leave stderr alone
        if proc is not None:
            proc.kill()
            proc.wait()
        if saved is not None:
            os.dup2(saved, 2)
            os.close(saved)
        saved = None
    if saved is None:
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(saved, 2)  # closes our end of the pipe: the filter reads EOF and exits
        os.close(saved)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # a child we started holds the pipe open
            proc.kill()
            proc.wait()
