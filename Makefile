# alignlab: every target installs what it needs into .venv first (idempotent).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Tests and the demo must never touch the network or the user's caches.
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export WANDB_MODE ?= offline
export TOKENIZERS_PARALLELISM ?= false
TEST_CACHE := $(CURDIR)/.cache/test
PYTEST_ARGS ?=

.PHONY: help install demo test test-fast bench reproduce clean clean-cache

help:  ## list every target
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-12s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv and install the pinned stack (torch first, then requirements.lock, then alignlab)

$(STAMP): pyproject.toml requirements.lock constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first: here it resolves to the local CPU wheel, on a GPU machine the same pin gets the CUDA build
	$(PY) -m pip install -q torch==2.13.0
	# keep the torch pin while installing the rest so nothing drags in another torch build
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(PY) -m pip install -q -r requirements.lock
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)  ## run the embedded mini-IMDb experiment offline (SFT -> pairs -> DPO -> eval)
	$(PY) -m alignlab

test: $(STAMP)  ## run the whole test suite (CPU only, offline)
	XDG_CACHE_HOME=$(TEST_CACHE) HF_HOME=$(TEST_CACHE)/hf MPLCONFIGDIR=$(TEST_CACHE)/mpl \
	TORCH_EXTENSIONS_DIR=$(TEST_CACHE)/torch_extensions TORCHINDUCTOR_CACHE_DIR=$(TEST_CACHE)/inductor \
	WANDB_DIR=$(TEST_CACHE)/wandb ALIGNLAB_CACHE=$(TEST_CACHE)/alignlab \
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP)  ## run the tests that train nothing end to end (skips -m slow)
	$(MAKE) test PYTEST_ARGS="-m 'not slow'"

bench: $(STAMP)  ## DPO step benchmark: alignlab vs TRL vs a bare PyTorch loop
	$(PY) experiments/bench/dpo_step.py

PROFILE ?= mini
reproduce: $(STAMP)  ## the seed papers' claims on the miniatures, one report (PROFILE=full: paper scale, GPU + hub)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH experiments/reproduce/run.sh $(PROFILE)

clean:  ## remove run outputs (keeps .venv and caches)
	rm -rf outputs multirun lightning_logs

clean-cache: $(STAMP)  ## remove cached stages (SFT models, pairs, tokenizers) where runs keep them, and the tests' cache
	@# the cache dir a run uses: paths.cache_dir ($$ALIGNLAB_CACHE, else $$XDG_CACHE_HOME/alignlab, else ~/.cache/alignlab)
	@dir="$$($(PY) -m alignlab --cfg job --resolve -p paths.cache_dir)" && \
	case "$$dir" in ""|/|"$$HOME"|"$$HOME/") echo "clean-cache: refusing to remove '$$dir'"; exit 1;; esac && \
	echo "rm -rf $$dir" && rm -rf "$$dir"
	rm -rf $(TEST_CACHE)
