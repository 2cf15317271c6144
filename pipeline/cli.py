"""`cgd`: one command line for the whole product.

Each package contributes its subcommands through a ``register(subparsers)``
function in its ``commands`` module; heavy imports (TensorFlow, TFX) happen
inside the command functions so that ``cgd --help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.abc
import logging
import os
import re
import subprocess
import sys
import warnings

from core.errors import CliError

COMMAND_MODULES = (
    "pipeline.commands",
    "pipeline.analysis",
    "serving.commands",
    "pipeline.kubeflow_commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cgd", description="CGD car retrieval: data, TFX pipeline, serving, Kubeflow.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # that package has no commands yet
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    # TFT 1.16 needs Keras 2; must be set before TensorFlow is first imported.
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    parser = build_parser()  # imports only our light command modules: no TensorFlow yet
    args = parser.parse_args(argv)
    quiet_third_party_noise(verbose=args.verbose)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CliError as e:  # ConfigError included
        print(f"{command_name(args)}: error: {e}", file=sys.stderr)
        return 1


# --------------------------------------------------------------------------- noise
#
# What the libraries print on every run of a healthy command and nobody can act on. Each
# filter below names exactly one kind of message; `cgd -v` installs none of them (and
# leaves TensorFlow's C++ log level at its default), so it still shows everything.

# TensorFlow 2.16 logs these three lines from C++ (TSL logging, ERROR level) while it loads,
# on every machine, GPU or not: XLA's CUDA plugins are linked into two of its libraries and
# the second registration fails harmlessly. Measured alternatives, and why not them:
#  * TF_CPP_MIN_LOG_LEVEL=3 before the import hides them, but also every C++ ERROR for the
#    rest of the process (op and runtime failures); TSL reads the level once, at its first
#    log line, so it cannot be lowered again after the import.
#  * absl::InitializeLog does not apply: TF 2.16 logs through TSL's own logger (this
#    "date time: E file:line]" format, configured by TF_CPP_* variables), not absl's.
#  * TF_CPP_VLOG_FILENAME sends every C++ line to a file, real errors included.
# So the first `import tensorflow` runs with file descriptor 2 piped through a small filter
# process that drops exactly these lines and passes everything else on as it comes (a
# separate process, so that nothing is lost if TensorFlow aborts while loading). C++ errors
# logged after the import reach stderr untouched (TF_CPP_MIN_LOG_LEVEL stays 2: INFO and
# WARNING lines off, as before).
TF_IMPORT_NOISE = re.compile(
    rb"^[\d-]+ [\d:.]+: E \S*cuda_(fft|dnn|blas)\.cc:\d+\] Unable to register cu(FFT|DNN|BLAS) "
    rb"factory: Attempting to register factory for plugin cu(FFT|DNN|BLAS) when one has "
    rb"already been registered\r?$")

# Google's client libraries (pulled in by TFX) warn at import, once per library (15-16
# FutureWarnings per process that imports TFX), that this Python version or a pinned
# dependency will stop getting updates: nothing a user of cgd can act on.
# (category, module, message): the same as `warnings.filterwarnings` arguments.
GOOGLE_VERSION_WARNINGS = (
    # google.api_core._python_version_support.check_python_version: "You are using a
    # non-supported Python version ...", "... a Python version (...) past its end of life",
    # "... a Python version (...) which Google will stop supporting ..."
    (FutureWarning, r"google\.api_core\._python_version_support",
     r"You are using a (non-supported )?Python version"),
    # google.api_core._python_package_support: "DEPRECATION: Package X depends on Y ..."
    (FutureWarning, r"google\.api_core\._python_package_support", r"DEPRECATION: Package "),
    # google-cloud-aiplatform on the google-cloud-storage 2.x that TFX 1.16 pins
    (FutureWarning, r"google\.cloud\.aiplatform\.",
     r"Support for google-cloud-storage < 3\.0\.0 will be removed"),
)

# Apache Beam logs, at INFO, each type hint it cannot convert ("Using Any for unsupported
# type: ...", 68 lines when TFX is imported; also "Converting string literal/NewType type
# hint to Any"). That logger logs nothing else below WARNING.
BEAM_TYPEHINT_LOGGER = "apache_beam.typehints.native_type_compatibility"
# TFX and TF Model Analysis log, at INFO on the "absl" logger, each optional library that
# is not installed ("tensorflow_text is not available: No module named ...", 7 lines).
ABSL_OPTIONAL_LIBRARY = re.compile(r"[\w.]+ is not available(\.$|: No module named )")


def quiet_third_party_noise(verbose: bool) -> None:
    """Install the filters above (idempotent); with ``verbose``, none of them."""
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for category, module, message in GOOGLE_VERSION_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    logging.getLogger(BEAM_TYPEHINT_LOGGER).setLevel(logging.WARNING)
    absl = logging.getLogger("absl")
    if not any(isinstance(f, _DropInfo) for f in absl.filters):
        absl.addFilter(_DropInfo(ABSL_OPTIONAL_LIBRARY))
    if ("tensorflow" not in sys.modules and os.name == "posix"
            and not any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path)):
        sys.meta_path.insert(0, _QuietTensorFlowImport())


class _DropInfo(logging.Filter):
    """Drops records below WARNING whose message matches ``pattern``."""

    def __init__(self, pattern: re.Pattern):
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not self.pattern.match(record.getMessage())


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: hands out the real spec of the top-level ``tensorflow`` package
    with its loader wrapped so that the package runs under ``stderr_without(TF_IMPORT_NOISE)``.
    Leaves no trace: the module gets its real loader, the finder removes itself."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "tensorflow":
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _FilteredStderrLoader(spec.loader, self)
        return spec


class _FilteredStderrLoader(importlib.abc.Loader):
    def __init__(self, loader, finder):
        self.loader, self.finder = loader, finder

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = module.__spec__.loader = self.loader
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self.finder)
        with stderr_without(TF_IMPORT_NOISE):
            self.loader.exec_module(module)


# Copies stdin to stdout line by line as it arrives, except lines matching argv[1]. Ignores
# Ctrl-C (it ends when cgd closes the pipe); a closed stdout ends it quietly.
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
        if saved is not None:
            os.close(saved)
        if proc is not None:
            proc.kill()
            proc.wait()
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


def command_name(args: argparse.Namespace) -> str:
    """'cgd kubeflow submit' for a nested action (its dest is '<command>_command')."""
    action = getattr(args, f"{args.command}_command", None)
    return " ".join(["cgd", args.command] + ([action] if isinstance(action, str) else []))


if __name__ == "__main__":
    sys.exit(main())
