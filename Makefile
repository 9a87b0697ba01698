# Two commands: `make lab` opens the course, `make test` runs every test. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install lab test unit notebooks lint clean-check clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

lab: install
	$(BIN)/jupyter lab --notebook-dir=notebooks 00_welcome.ipynb

test: install clean-check lint unit notebooks

clean-check: install
	$(BIN)/python -m pytest -q tests/test_repository.py

lint: install
	$(BIN)/ruff check course_utils tests notebooks

unit: install
	$(BIN)/python -m pytest -q tests

notebooks: install
	COURSE_QUICK=1 $(BIN)/python -m pytest -q --nbmake --nbmake-timeout=900 notebooks

clean:
	rm -rf $(VENV) build .pytest_cache
