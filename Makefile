# brainforge: two commands. `make demo` runs the main job, `make test` runs the suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test demo lint clean

install: $(STAMP)

# torch 2.14.1 + torchaudio 2.11.0 load together on CPU (braindecode imports torchaudio).
$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet 'torch==2.14.1' 'torchaudio==2.11.0'
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

DEMO := runs/demo
DEMO_INPUTS := tests/data/sample_audvis_5s_raw.fif tests/data/test.edf tests/data/test_subsecond.edf tests/data/bti

# The main job on bundled real recordings, one stage after another.
demo: install
	$(BIN)/python -m data prepare $(DEMO_INPUTS) --out $(DEMO)/shards --overwrite
	$(BIN)/python -m data inspect $(DEMO)/shards

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache
