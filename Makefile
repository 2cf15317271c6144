# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create the Python 3.10 virtual environment first if it is missing or stale.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONDONTWRITEBYTECODE := 1
PYTEST_ARGS ?=

LOCK_TOOLS := .lock-tools
UV_VERSION := 0.13.10

.PHONY: env lock demo test test-fast bench bench-scale clean

env: $(STAMP)

# Everything from requirements.lock (exact versions, sha256 hashes, no resolver run: --no-deps),
# into a new venv whenever the lock or the package changes, so the venv holds exactly the
# locked set. pip, setuptools, wheel and packaging (wheel's own dependency) come first, from
# the lock too: its few sdists are then built with them (--no-build-isolation), not with
# whatever the index serves that day.
$(STAMP): requirements.lock constraints.txt setup.py scripts/lock.py
	@set -e; \
	PYTHON="$${PYTHON:-$$(scripts/find_python310.sh)}"; \
	"$$PYTHON" scripts/lock.py check; \
	echo "==> creating $(VENV) with $$PYTHON"; \
	rm -rf $(VENV); "$$PYTHON" -m venv $(VENV); \
	echo "==> installing requirements.lock (about 3 GB, a few minutes on a cold cache)"; \
	$(PY) -m pip install -q --require-hashes --no-deps \
	    -r <("$$PYTHON" scripts/lock.py select requirements.lock pip setuptools wheel packaging); \
	$(PY) -m pip install -q --require-hashes --no-deps --no-build-isolation -r requirements.lock; \
	$(PY) -m pip install -q --no-deps --no-build-isolation --use-pep517 -e .; \
	$(PY) -m pip check; \
	$(PY) -m cli.tfx_cli_quiet; \
	touch $(STAMP)

# Regenerate requirements.lock and requirements-gpu.lock after changing constraints.txt,
# setup.py's requirements or kubeflow/image-requirements.in (or scripts/lock.py's
# EXCLUDE_NEWER, to take newer releases). uv, pinned, in a venv of its own.
lock:
	@set -e; \
	PYTHON="$${PYTHON:-$$(scripts/find_python310.sh)}"; \
	[ -x $(LOCK_TOOLS)/bin/uv ] || { "$$PYTHON" -m venv $(LOCK_TOOLS); \
	    $(LOCK_TOOLS)/bin/pip install -q uv==$(UV_VERSION); }; \
	"$$PYTHON" scripts/lock.py compile --uv $(LOCK_TOOLS)/bin/uv

demo: $(STAMP)
	$(VENV)/bin/cgd demo --config configs/demo.yaml

test: $(STAMP)
	$(PY) -m pytest tests $(PYTEST_ARGS)

# Everything but the tests marked slow (pipelines, subprocesses, servers and stand-ins,
# generated sample archives: pytest.ini): for changes to math, config or a loss.
test-fast: $(STAMP)
	$(PY) -m pytest tests -m "not slow" $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/ingest.py
	$(PY) benchmarks/train_step.py --quick
	$(PY) benchmarks/serving.py --quick
	$(PY) benchmarks/recall.py --quick

# The data path at Cars196 scale (docs/benchmarks.md, "Data path at Cars196 scale"):
# real-size archives generated once into out/bench/; the whole pipeline with 2 Beam
# workers and RetrievalExampleGen with 1, against plain single-process loops and a plain
# model.fit; peak memory of every component.
bench-scale: $(STAMP)
	$(PY) benchmarks/data_path.py

clean:
	rm -rf $(VENV) $(LOCK_TOOLS) out
