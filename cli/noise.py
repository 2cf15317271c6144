"""Quiet third-party noise: what libraries print on every run of a healthy `cgd` command.

Each filter names exactly one kind of message; `cgd -v` installs none of them (and
leaves TensorFlow's C++ log level at its default), so it still shows everything.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import logging
import os
import re
import sys
import warnings

from core.stderr_filter import stderr_without

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
# TFX, TF Transform and TF Model Analysis log through absl, at INFO, what they do inside
# (every optional library that is not installed: "tensorflow_text is not available: No
# module named ..."; "Excluding no splits because exclude_splits is not set."; ...). In the
# cgd process absl is only ever these libraries (our code logs to "cgd" and module loggers;
# a pipeline run's own absl output goes to its log file from the subprocess), so absl
# records below WARNING are dropped. A filter, not a level: absl.logging.set_verbosity,
# which library code calls, resets the "absl" logger's level.
ABSL_LOGGER = "absl"


# `cgd kubeflow submit|schedule` (kfp.Client): kfp 2.5 warns on every client it makes that it
# "only works with Kubeflow Pipeline v2.0.0-beta.2 and later versions" (a FutureWarning;
# our stand-in and our docs are KFP 2.0.5), and urllib3 logs a WARNING for each retry of a
# failed connection ("Retrying (Retry(total=2, ...)) after connection broken by ..."): the
# command's own error line says what failed (kubeflow/client.py api_error).
KFP_CLIENT_WARNING = (FutureWarning, r"kfp\.client\.client",
                      r"This client only works with Kubeflow Pipeline v2")
URLLIB3_POOL_LOGGER = "urllib3.connectionpool"


def quiet_third_party_noise(verbose: bool) -> None:
    """Install the filters above (idempotent); with ``verbose``, none of them."""
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    quiet_google_version_warnings()
    quiet_library_logs()
    quiet_tensorflow_import()


def quiet_google_version_warnings() -> None:
    """Ignore exactly GOOGLE_VERSION_WARNINGS (a few warnings filters; cheap)."""
    for category, module, message in GOOGLE_VERSION_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


def quiet_library_logs() -> None:
    """Beam's type-hint INFO lines and absl records below WARNING (see above)."""
    logging.getLogger(BEAM_TYPEHINT_LOGGER).setLevel(logging.WARNING)
    absl = logging.getLogger(ABSL_LOGGER)
    if not any(isinstance(f, _DropBelowWarning) for f in absl.filters):
        absl.addFilter(_DropBelowWarning())


def quiet_tensorflow_import() -> None:
    """The first ``import tensorflow`` of this process runs without TF_IMPORT_NOISE."""
    if ("tensorflow" not in sys.modules and os.name == "posix"
            and not any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path)):
        sys.meta_path.insert(0, _QuietTensorFlowImport())


def quiet_kfp_client(verbose: bool) -> None:
    """KFP_CLIENT_WARNING and urllib3's "Retrying" records (see above); with ``verbose``,
    neither."""
    if verbose:
        return
    category, module, message = KFP_CLIENT_WARNING
    warnings.filterwarnings("ignore", message=message, category=category, module=module)
    pool = logging.getLogger(URLLIB3_POOL_LOGGER)
    if not any(isinstance(f, _DropRetrying) for f in pool.filters):
        pool.addFilter(_DropRetrying())


class _DropRetrying(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Retrying (")


class _DropBelowWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


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


