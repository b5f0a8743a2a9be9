# Two commands on a fresh machine (see README):  make book  ·  make test
# Both create or reuse .venv and install the pinned set (constraints.txt) into it; make test also
# installs Debian's chromium for the browser test when it is missing.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
JB_STRICT := -W -n --keep-going
# The same CPU kernels wherever chapters run (see the file): these override the caller's environment.
CPU_PINS := $(shell sed -n 's/^\([A-Z_]*\) = \(.*\)/\1="\2"/p' scripts/cpu.env)
# No progress bar in kernels that store or compare outputs (mtlcourse.training.fit reads it).
NO_BARS := MTLCOURSE_NO_PROGRESS=1

.PHONY: book test lint unit notebooks linkcheck browser execute colab gpu-check env clean

env: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	touch $@

$(CHROMIUM):
	@echo "Installing Debian's chromium for the browser test"
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null

book: $(STAMP)
	rm -rf _build/html
	$(BIN)/jupyter-book build . --builder html $(JB_STRICT)
	@echo "The course is in _build/html/index.html"

# The workflow files too. actionlint's shellcheck and pyflakes passes are off, so that the answer does
# not depend on what else is on PATH (GitHub's runners have shellcheck; a reader's machine may not).
ACTIONLINT := $(BIN)/actionlint -shellcheck= -pyflakes=

lint: $(STAMP)
	$(BIN)/ruff check .
	$(ACTIONLINT)

unit: $(STAMP)
	$(BIN)/python -m pytest tests --ignore=tests/browser

# One CPU thread and AVX2 kernels (scripts/cpu.env): the stored numbers must not depend on the
# machine's core count, its load or its CPU generation. The chapters, and the back matter's notebooks
# (book/own_problem.ipynb: every code block of that page runs here).
notebooks: $(STAMP)
	env $(CPU_PINS) $(NO_BARS) $(BIN)/python -m pytest -p no:cacheprovider --nbval --nbval-current-env \
		--nbval-sanitize-with tests/nbval_sanitize.cfg chapters $(wildcard book/*.ipynb)

# Every local link and cross-reference; external ones too with CHECK_EXTERNAL_LINKS=1 (needs a network).
linkcheck: $(STAMP)
	$(BIN)/jupyter-book build . --builder linkcheck $(JB_STRICT)

# The built site in headless chromium; screenshots land in _build/screenshots.
browser: book $(CHROMIUM)
	$(BIN)/python -m pytest -p no:cacheprovider tests/browser

test: lint unit notebooks linkcheck browser colab

# Re-run chapters and store their outputs, timings and versions: make execute [NB=chapters/0X_....ipynb]
# (a back-matter notebook only by name: make execute NB=book/own_problem.ipynb)
execute: $(STAMP)
	env $(CPU_PINS) $(NO_BARS) $(BIN)/python scripts/execute_chapters.py $(NB)

# Colab, simulated (scripts/colab_simulation.py): each chapter in a fresh environment holding only what
# Colab preinstalls (scripts/colab-constraints.txt), its own install cell taking the Colab branch and
# installing mtlcourse from this clone. Colab's progress bars stay. make colab [NB=chapters/0X_....ipynb]
colab: $(STAMP)
	$(BIN)/python scripts/colab_simulation.py --python $(PYTHON) $(NB)

# Every chapter on CUDA, its mean ± spread pairs checked against the stored CPU run's; skips (exit 0)
# without a GPU. GPU_PYTHON: an environment with a CUDA build of torch and the course installed.
GPU_PYTHON ?= $(BIN)/python
gpu-check: $(STAMP)
	env $(NO_BARS) $(BIN)/python scripts/gpu_check.py --python $(GPU_PYTHON) $(NB)

clean:
	rm -rf _build .pytest_cache .ruff_cache
