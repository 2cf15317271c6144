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

.PHONY: env demo test bench bench-scale clean

env: $(STAMP)

# Reinstall when the pins or the package definition change.
$(STAMP): constraints.txt setup.py
	@set -e; \
	PYTHON="$${PYTHON:-$$(scripts/find_python310.sh)}"; \
	echo "==> creating $(VENV) with $$PYTHON"; \
	[ -x $(PY) ] || "$$PYTHON" -m venv $(VENV); \
	$(PY) -m pip install -q -U "pip<25"; \
	echo "==> installing pinned stack (about 3 GB, a few minutes on a cold cache)"; \
	$(PY) -m pip install -c constraints.txt -e ".[test]"; \
	$(PY) -m pipeline.tfx_cli_quiet; \
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cgd demo --config configs/demo.yaml

test: $(STAMP)
	$(PY) -m pytest tests $(PYTEST_ARGS)

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
	rm -rf $(VENV) out
