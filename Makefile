# capsearch: `make repro` runs the pipeline, `make test` runs the tests, `make demo` runs it all offline.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch and torchvision as requirements.lock pins them, both PyPI's own builds: PyPI's torchvision loads only beside
# PyPI's torch, so a local CPU wheel of the same version (torch==X+cpu, found by pip on some machines) is excluded.
TORCH ?= $(shell grep '^torch==' requirements.lock)
TORCHVISION ?= $(shell grep '^torchvision==' requirements.lock)
export PATH := $(abspath $(VENV))/bin:$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: venv repro test lint demo clean-demo bench browser java

venv: $(VENV)/.installed

# Exact versions from the lock files (pip resolves nothing); `pip check` proves they fit together and pyproject.toml.
$(VENV)/.installed: pyproject.toml requirements.lock requirements-dev.lock Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet '$(TORCH),!=$(patsubst torch==%,%,$(TORCH))+cpu' '$(TORCHVISION)'
	$(PY) -m pip install --quiet --no-deps -r requirements.lock -r requirements-dev.lock
	$(PY) -m pip install --quiet --no-deps -e .
	# clip_benchmark (below) lacks its dependencies on purpose: out of the check, also when the venv is refreshed
	$(PY) -m pip uninstall --quiet --yes clip_benchmark
	$(PY) -m pip check
	# LAION's Recall@K code, the reference the tests compare capsearch's with (that module needs torch alone).
	$(PY) -m pip install --quiet --no-deps 'clip_benchmark==1.6.2'
	touch $@

repro: venv
	dvc repro

lint: venv
	ruff check src stages tests bench
	ruff format --check src stages tests bench

test: venv lint
	$(PY) -m pytest

demo: venv
	capsearch demo --dir build/demo

# Stage code paths vs the naive way on random-weight base-size BLIP/CLIP; the local engine vs Ray Data on the same
# images; then each faiss index kind at 10^6 vectors.
bench: venv
	$(PY) bench/stages.py
	$(PY) bench/engine.py
	$(PY) bench/search.py

# Debian's chromium and its chromedriver, for the search page's browser test (needs root; CI runs as root).
browser:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null)

# Java 17 for pycocoevalcap's jars: METEOR in the evaluate and agreement stages, the PTB tokenizer's reference tests
# (needs root where it is missing; Debian's package).
java:
	command -v java >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null)

clean-demo:
	rm -rf build/demo
