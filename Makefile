# Two commands: `make lab` opens the course, `make test` runs every test. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Jupyter refuses to run as root (containers, some lab machines) unless told it may.
LAB_FLAGS ?= $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: install lab test lint unit notebooks results book clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

lab: install
	$(BIN)/jupyter lab $(LAB_FLAGS) notebooks/00_welcome.ipynb

# lint, unit tests (including "notebooks are committed without outputs"), then every notebook in quick mode
test: lint unit notebooks

lint: install
	$(BIN)/ruff check course_utils tests notebooks

unit: install
	$(BIN)/python -m pytest -q tests

notebooks: install
	COURSE_QUICK=1 $(BIN)/python -m pytest -q --nbmake --nbmake-timeout=900 notebooks

# measure every headline claim and every notebook's time and memory (quick and default mode)
results: install
	$(BIN)/python -m course_utils.results

# an executed HTML rendering of the course in build/book (not committed)
book: install
	$(BIN)/python -m course_utils.results --book

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache
