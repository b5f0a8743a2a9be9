# Two commands on a fresh machine (see README):  make book  ·  make test
# Both create or reuse .venv and install the pinned set (constraints.txt) into it.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: book test lint unit notebooks env clean

env: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	touch $@

book: $(STAMP)
	rm -rf _build/html
	$(BIN)/jupyter-book build . --builder html -W -n --keep-going
	@echo "The course is in _build/html/index.html"

lint: $(STAMP)
	$(BIN)/ruff check .

unit: $(STAMP)
	$(BIN)/python -m pytest tests

# One CPU thread: the chapters' models are small, a single thread is as fast, and it keeps the
# stored numbers independent of the machine's core count and of other load on it.
notebooks: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -p no:cacheprovider --nbval --nbval-current-env \
		--nbval-sanitize-with tests/nbval_sanitize.cfg chapters

test: lint unit notebooks

clean:
	rm -rf _build .pytest_cache .ruff_cache
