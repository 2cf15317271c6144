"""A successful `cgd` command prints only what a person should read (issue "Noise").

The real commands run in a subprocess with a user's environment (no TF_CPP_MIN_LOG_LEVEL,
no PYTHONWARNINGS), and their stderr is checked line by line: none of the libraries'
import-time noise (TensorFlow's cuFFT/cuDNN/cuBLAS registration errors, Google's
Python-version FutureWarnings, Beam's "Using Any for unsupported type", absl INFO), one
warning per skipped file, one summary line.
"""
from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tests.support.paths import REPO_ROOT

ROOT = REPO_ROOT
CGD_MAIN = "import sys; from cli.main import main; sys.exit(main())"
MODEL = "cgd"
# What no successful command may print.
NOISE = re.compile(r"Unable to register cu(FFT|DNN|BLAS) factory|FutureWarning|"
                   r"non-supported Python version|Using Any for unsupported type|"
                   r"is not available|INFO absl:|Traceback")
LOG_LINE = r"\d\d:\d\d:\d\d (INFO|WARNING) "
# The registration lines exactly as TensorFlow 2.16 prints them.
TF_REGISTRATION_LINES = [
    "2026-11-23 02:51:38.288251: E external/local_xla/xla/stream_executor/cuda/cuda_fft.cc:479]"
    " Unable to register cuFFT factory: Attempting to register factory for plugin cuFFT when "
    "one has already been registered",
    "2026-11-23 02:51:38.321455: E external/local_xla/xla/stream_executor/cuda/cuda_dnn.cc:10575]"
    " Unable to register cuDNN factory: Attempting to register factory for plugin cuDNN when "
    "one has already been registered",
    "2026-11-23 02:51:38.321529: E external/local_xla/xla/stream_executor/cuda/cuda_blas.cc:1442]"
    " Unable to register cuBLAS factory: Attempting to register factory for plugin cuBLAS when "
    "one has already been registered",
]


def user_env(**extra) -> dict:
    """The environment of a user's shell: without the test session's TF_CPP_MIN_LOG_LEVEL."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "PYTHONWARNINGS")}
    env.update({"TF_USE_LEGACY_KERAS": "1", "PYTHONPATH": str(ROOT), **extra})
    return env


def cgd(*args: str, timeout: float = 120, env: dict | None = None):
    proc = subprocess.run([sys.executable, "-c", CGD_MAIN, *args], cwd=ROOT,
                          env=env or user_env(), capture_output=True, text=True,
                          timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr.splitlines()


def assert_quiet(lines: list[str]) -> None:
    noisy = [line for line in lines if NOISE.search(line)]
    assert noisy == [], "\n".join(lines)


# --------------------------------------------------------------------------- light commands


@pytest.mark.slow
def test_help_prints_usage_and_nothing_on_stderr():
    code, out, err = cgd("--help", timeout=60)
    assert code == 0 and out.startswith("usage: cgd") and err == []


@pytest.mark.slow
def test_sample_data_small_job_prints_one_line(tmp_path):
    code, out, err = cgd("sample-data", "--out", str(tmp_path / "data"), "--classes", "4",
                         "--images-per-class", "2", timeout=60)
    assert code == 0 and out == ""
    assert len(err) == 1, "\n".join(err)
    out_dir = re.escape(str(tmp_path / "data"))
    assert re.fullmatch(rf"{LOG_LINE}cgd: sample-data: wrote cars196 sample data to {out_dir}: "
                        rf"8 valid images \(0 corrupt\); run the pipeline with data.dataset: "
                        rf"cars196 and data.source_dir: {out_dir}", err[0]), err[0]


def test_sample_data_progress_only_for_a_long_job(caplog):
    from cli.pipeline_commands import progress_logger
    caplog.set_level(logging.INFO, logger="cgd")
    now = [0.0]

    def run(total: int, step_s: float) -> list[str]:
        caplog.clear()
        now[0] = 0.0
        progress = progress_logger("sample-data", "classes drawn", clock=lambda: now[0])
        for done in range(1, total + 1):
            now[0] += step_s
            progress(done, total)
        return [r.getMessage() for r in caplog.records]

    assert run(196, 0.01) == []   # ~2 s in all: nothing but the caller's summary
    # 20 s: the first line after 2 s, then one every 5 s, never the last step.
    assert run(40, 0.5) == ["sample-data: 4/40 classes drawn", "sample-data: 14/40 classes drawn",
                            "sample-data: 24/40 classes drawn", "sample-data: 34/40 classes drawn"]


def test_index_progress_printer_is_silent_for_a_quick_job():
    import io

    from serving.index import progress_printer
    now = [100.0]

    def run(total: int, step_s: float) -> list[str]:
        stream = io.StringIO()
        show = progress_printer("index build", stream=stream, clock=lambda: now[0])
        for done in range(8, total + 8, 8):
            now[0] += step_s
            show(min(done, total), total)
        return stream.getvalue().splitlines()

    assert run(21, 0.01) == []
    lines = run(400, 0.5)  # 25 s: first after 2 s, every 5 s, and the final count
    assert [line.split(" (")[0] for line in lines] == [
        "index build: 32/400 images", "index build: 112/400 images", "index build: 192/400 images",
        "index build: 272/400 images", "index build: 352/400 images", "index build: 400/400 images"]


# --------------------------------------------------------------------------- TF import filter

FAKE_TENSORFLOW = """
import os, sys
for line in {lines!r}:
    os.write(2, line.encode() + b"\\n")
os.write(2, b"2026-11-23 02:51:38.400000: E some/real/library.cc:12] a real import-time error\\n")
print("a Python warning while importing", file=sys.stderr)
mode = os.environ.get("FAKE_TF_MODE")
if mode == "raise":
    raise ImportError("fake tensorflow failed to load")
if mode == "abort":
    os.write(2, b"F fatal: the last words before abort()\\n")
    os.abort()
"""

IMPORT_IT = """
import sys
from cli.noise import quiet_third_party_noise
quiet_third_party_noise(verbose={verbose})
import tensorflow
print("after import", file=sys.stderr)
assert type(tensorflow.__loader__).__name__ == "SourceFileLoader", tensorflow.__loader__
assert tensorflow.__spec__.loader is tensorflow.__loader__
assert not any("Quiet" in type(f).__name__ for f in sys.meta_path), sys.meta_path
"""


@pytest.fixture
def fake_tensorflow(tmp_path):
    """A `tensorflow` package that prints the real registration lines and others at import."""
    package = tmp_path / "fake" / "tensorflow"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(FAKE_TENSORFLOW.format(lines=TF_REGISTRATION_LINES))

    def run(mode: str = "ok", verbose: bool = False):
        env = user_env(FAKE_TF_MODE=mode, PYTHONPATH=f"{package.parent}{os.pathsep}{ROOT}")
        proc = subprocess.run([sys.executable, "-c", IMPORT_IT.format(verbose=verbose)],
                              env=env, capture_output=True, text=True, timeout=30)
        return proc.returncode, proc.stderr.splitlines()
    return run


@pytest.mark.slow
def test_tensorflow_import_drops_exactly_the_registration_lines(fake_tensorflow):
    code, err = fake_tensorflow()
    assert code == 0, "\n".join(err)
    assert err == [
        "2026-11-23 02:51:38.400000: E some/real/library.cc:12] a real import-time error",
        "a Python warning while importing", "after import"]


@pytest.mark.slow
def test_a_failed_tensorflow_import_still_shows_everything_else(fake_tensorflow):
    code, err = fake_tensorflow("raise")
    text = "\n".join(err)
    assert code == 1 and "a real import-time error" in text and "Unable to register" not in text
    assert err[-1] == "ImportError: fake tensorflow failed to load"
    assert "During handling" not in text  # the traceback is TensorFlow's, not ours

    # Killed while loading (TensorFlow aborts on a CPU without AVX): its last words arrive.
    code, err = fake_tensorflow("abort")
    assert code != 0 and "F fatal: the last words before abort()" in err, err


@pytest.mark.slow
def test_verbose_filters_nothing(fake_tensorflow):
    code, err = fake_tensorflow(verbose=True)
    assert code == 0 and err[:3] == TF_REGISTRATION_LINES, err


# --------------------------------------------------------------------------- TensorFlow commands


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from serving import standin
    from serving.model_server import ModelServer
    base = tmp_path_factory.mktemp("noise_serving")
    standin.write_stand_in_model(str(base / MODEL / "1"), size=32, dim=16, seed=1)
    with ModelServer(str(base), MODEL, grpc_port=0, rest_port=None, poll_seconds=5) as srv:
        yield srv


@pytest.mark.slow
def test_index_build_one_warning_per_skipped_file_and_one_summary(server, tmp_path):
    from PIL import Image
    gallery = tmp_path / "gallery"
    rng = np.random.RandomState(0)
    for i in range(5):
        (gallery / f"class_{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.randint(0, 256, (40, 48, 3), dtype=np.uint8)).save(
            gallery / f"class_{i % 2}" / f"{i}.jpg")
    broken = gallery / "class_0" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 truncated")
    out = tmp_path / "gallery_index"
    code, stdout, err = cgd("index", "build", "--server", server.grpc_target, "--model-name",
                            MODEL, "--model-base-path", server.repository.base_path,
                            "--images", str(gallery), "--out", str(out), "--batch-size", "4")
    assert code == 0 and stdout == "" and out.is_dir(), "\n".join(err)
    assert_quiet(err)
    assert len(err) == 2, "\n".join(err)
    assert re.fullmatch(rf"{LOG_LINE}cgd\.serving\.index: skipped {re.escape(str(broken))}: .+",
                        err[0]), err[0]
    assert re.fullmatch(rf"{LOG_LINE}cgd: index build: indexed 5 of 6 images \(1 skipped\) -> "
                        rf"{re.escape(str(out))} \(exact index, model cgd version 1, dim 16\)", err[1]), err[1]


@pytest.mark.slow
def test_kubeflow_compile_imports_tfx_quietly(tmp_path):
    """TFX in the cgd process: 111 stderr lines before (68 Beam "Using Any", 16 Google
    FutureWarnings, 10 absl INFO, 3 TensorFlow registration errors); now only cgd's own."""
    config = tmp_path / "kubeflow.yaml"
    config.write_text("kubeflow:\n  pipeline_root: gs://bucket/cgd\n  image: registry/cgd:1\n")
    out = tmp_path / "pipeline.json"
    code, stdout, err = cgd("kubeflow", "compile", "--config", str(config), "--output", str(out))
    assert code == 0 and out.is_file(), "\n".join(err)
    assert_quiet(err)
    assert err and all(re.match(rf"{LOG_LINE}cgd: kubeflow compile: ", line) for line in err), \
        "\n".join(err)
