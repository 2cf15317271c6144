"""The locks (scripts/lock.py): the environment is exactly the locked set, and they are current."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys

import pytest
from tests.support.paths import REPO_ROOT

ROOT = str(REPO_ROOT)
PROJECT = "cgd-retrieval"  # the editable install of this checkout, not in the lock


def load_lock_module():
    spec = importlib.util.spec_from_file_location("lock", os.path.join(ROOT, "scripts/lock.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lock = load_lock_module()


def read(name: str) -> str:
    with open(os.path.join(ROOT, name)) as f:
        return f.read()


def test_the_environment_holds_exactly_the_locked_set():
    locked = lock.pins(read("requirements.lock"))
    installed = {lock.normalise(d.metadata["Name"]): d.version
                 for d in importlib.metadata.distributions()}
    installed.pop(PROJECT)
    missing = {n: v for n, v in locked.items() if installed.get(n) != v}
    extra = {n: v for n, v in installed.items() if n not in locked}
    assert (missing, extra) == ({}, {}), (
        "the venv differs from requirements.lock (recreate it: rm -rf .venv && make env)")


def test_every_locked_requirement_is_hashed_and_the_gpu_lock_extends_the_cpu_one():
    for name in lock.LOCKS:
        text = read(name)
        blocks = [b for b in re.split(r"\n(?=[A-Za-z0-9])", text) if lock.PIN.match(b)]
        assert len(blocks) == len(lock.pins(text)) > 200
        assert all("--hash=sha256:" in block for block in blocks), name
        assert "-e " not in text and PROJECT not in lock.pins(text)
    cpu, gpu = lock.pins(read("requirements.lock")), lock.pins(read("requirements-gpu.lock"))
    assert {n for n in gpu if n.startswith("nvidia-")} and not any(
        n.startswith("nvidia-") for n in cpu)
    # The image runs what CI tested: every package both have is at the same version.
    assert {n: v for n, v in gpu.items() if n in cpu and cpu[n] != v} == {}
    assert set(cpu) - set(gpu) <= {"pytest", "iniconfig", "pluggy", "exceptiongroup", "tomli",
                                   "pygments"}


def test_constraints_and_setup_py_agree_with_the_lock():
    locked = lock.pins(read("requirements.lock"))
    for line in read(lock.CONSTRAINTS).splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        name, op, version = re.match(r"([A-Za-z0-9._-]+)\s*(==|<|>=)\s*(\S+)", line).groups()
        have = locked[lock.normalise(name)]
        if op == "==":
            assert have == version, f"{name}: constraints.txt {version}, lock {have}"
        elif op == "<":
            assert tuple(map(int, have.split(".")[:1])) < tuple(map(int, version.split(".")[:1]))
    setup_py = read("setup.py")
    required = re.findall(r'^\s+"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?",', setup_py, re.M)
    assert len(required) > 15
    assert [r for r in required if lock.normalise(r) not in locked] == []


def test_the_locks_are_current():
    assert [lock.stale(name) for name in lock.LOCKS] == [None, None]


@pytest.mark.slow
def test_a_stale_lock_fails_in_one_line_naming_make_lock(tmp_path):
    copy = tmp_path / "repo"
    for name in ("setup.py", "constraints.txt", "requirements.lock", "requirements-gpu.lock",
                 "scripts/lock.py", "scripts/install-tools.in",
                 "kubeflow/image-requirements.in"):
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(os.path.join(ROOT, name), copy / name)
    check = [sys.executable, str(copy / "scripts/lock.py"), "check"]
    assert subprocess.run(check, capture_output=True).returncode == 0
    with open(copy / "constraints.txt", "a") as f:
        f.write("croniter==6.0.0\n")  # a pin changed, the lock not regenerated
    proc = subprocess.run(check, capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"error: {name} is stale ({changed}): run `make lock`" for name, changed in (
            ("requirements.lock", "constraints.txt, scripts/install-tools.in, setup.py "
                                  "changed since it was made"),
            ("requirements-gpu.lock", "constraints.txt, kubeflow/image-requirements.in, "
                                      "scripts/install-tools.in, setup.py changed since it was "
                                      "made"))]


def test_select_gives_the_hashed_lines_of_the_install_tools():
    text = lock.select("requirements.lock", ["pip", "setuptools", "wheel", "packaging"])
    assert set(lock.pins(text)) == {"pip", "setuptools", "wheel", "packaging"}
    assert text.count("--hash=sha256:") >= 4
    with pytest.raises(SystemExit, match="has no no-such-package: run `make lock`"):
        lock.select("requirements.lock", ["no-such-package"])


def test_the_makefile_and_the_image_install_from_the_locks_with_hashes_and_no_resolver():
    makefile, dockerfile = read("Makefile"), read("kubeflow/Dockerfile")
    assert "--require-hashes --no-deps --no-build-isolation -r requirements.lock" in makefile
    assert "scripts/lock.py check" in makefile
    assert "-c constraints.txt" not in makefile
    assert "--require-hashes --no-deps --no-build-isolation -r requirements-gpu.lock" in \
        dockerfile
    assert "pip install -c constraints.txt" not in dockerfile
    assert "pip install --no-deps --no-build-isolation --use-pep517 ." in dockerfile
