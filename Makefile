# Two commands: `make lab` opens the course, `make test` runs every test. Both set up .venv first.
# `make lab TORCH=cpu` (or `make install TORCH=cpu`) puts PyTorch's CPU-only build into .venv on Linux: far
# smaller than PyPI's default Linux build, which brings CUDA. To switch an existing .venv: `make clean` first.
PYTHON ?= python3
TORCH  ?= default
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(TORCH)
PIP_INSTALL ?= $(BIN)/python -m pip install --quiet
# PyTorch's CPU wheel index, and the two pins Binder uses (binder/requirements.txt is the one place for both).
CPU_INDEX ?= $(shell sed -n 's/^--extra-index-url //p' binder/requirements.txt)
CPU_PINS  := $(shell grep -E '^torch(vision)?==' binder/requirements.txt)
LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings
BROWSER := $(shell command -v chromium >/dev/null && command -v chromedriver >/dev/null && echo yes)
# Jupyter refuses to run as root (containers, some lab machines) unless told it may.
LAB_FLAGS ?= $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: install torch-cpu install-size lab test lint unit notebooks browser-test browser-test-if-installed \
	notebook-setup results book clean

install: $(STAMP)

$(STAMP): pyproject.toml binder/requirements.txt binder/overrides.json
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@if [ "$(TORCH)" = cpu ]; then $(MAKE) --no-print-directory torch-cpu; \
	elif [ "$(TORCH)" != default ]; then echo "TORCH is 'default' or 'cpu', not '$(TORCH)'"; exit 2; fi
	$(PIP_INSTALL) -e ".[dev]"
	@# JupyterLab's defaults for the course (binder/overrides.json): widget messages on the kernel's main thread
	mkdir -p $(LAB_SETTINGS) && cp binder/overrides.json $(LAB_SETTINGS)/overrides.json
	touch $(STAMP)

# PyTorch's CPU-only build into .venv (Linux). Where the index cannot be reached, say so and let the
# install that follows take PyPI's default build.
torch-cpu:
	@if [ "$$(uname -s)" != Linux ]; then \
		echo "TORCH=cpu: PyPI's PyTorch for $$(uname -s) is already CPU-only; installing the default build."; \
	elif ! $(BIN)/python -c "import urllib.request; urllib.request.urlopen('$(CPU_INDEX)/', timeout=15)" 2>/dev/null; then \
		echo "TORCH=cpu: PyTorch's CPU index $(CPU_INDEX) cannot be reached from here;"; \
		echo "           falling back to PyPI's default PyTorch build (on Linux it brings CUDA; README gives both sizes)."; \
	elif ! $(PIP_INSTALL) --extra-index-url $(CPU_INDEX) $(CPU_PINS); then \
		echo "TORCH=cpu: installing $(CPU_PINS) from $(CPU_INDEX) failed; falling back to PyPI's default build."; \
	else echo "TORCH=cpu: installed $(CPU_PINS) from $(CPU_INDEX)"; fi

# record the installed size of $(VENV) (du, MiB) under its PyTorch version in results/install_size.json (the README
# quotes it; a test checks). `make install-size VENV=path` measures another environment.
install-size:
	$(BIN)/python -c "import json, pathlib, subprocess, torch; path = pathlib.Path('results/install_size.json'); \
	sizes = json.loads(path.read_text()) if path.is_file() else {}; \
	sizes[torch.__version__] = int(subprocess.check_output(['du', '-sm', '$(VENV)']).split()[0]); \
	path.write_text(json.dumps(sizes, indent=1, sort_keys=True) + '\n'); print(sizes)"

lab: install
	$(BIN)/jupyter lab $(LAB_FLAGS) notebooks/00_welcome.ipynb

# lint, unit tests (including "notebooks are committed without outputs"), every notebook in quick mode, and
# the real-browser test of every notebook where Debian's chromium and chromium-driver are installed
test: lint unit notebooks browser-test-if-installed

lint: install
	$(BIN)/ruff check course_utils tests notebooks

unit: install
	$(BIN)/python -m pytest -q tests

notebooks: install
	COURSE_QUICK=1 $(BIN)/python -m pytest -q --nbmake --nbmake-timeout=900 notebooks

# JupyterLab in headless chromium: Run All in quick mode, no error, every widget rendered, every slider
# changes its output; screenshots in build/browser/. Needs `apt-get install chromium chromium-driver`.
browser-test: install
	@test -n "$(BROWSER)" || { echo "make browser-test needs Debian's chromium and chromium-driver:" \
		"apt-get install chromium chromium-driver"; exit 1; }
	$(BIN)/python -m pytest -v --durations=0 -p no:cacheprovider tests/browser

browser-test-if-installed:
ifeq ($(BROWSER),yes)
	@$(MAKE) --no-print-directory browser-test
else
	@echo "SKIPPED the browser test: chromium and chromedriver are not installed" \
		"(Debian: apt-get install chromium chromium-driver; then make browser-test)."
endif

# rewrite every notebook's Colab badge and setup cell from course_utils/colab.py (the repository's address)
notebook-setup: install
	$(BIN)/python -c "from course_utils import colab; print(*colab.sync_notebooks(write=True) or ['up to date'], sep='\n')"

# measure every headline claim and every notebook's time and memory (quick and default mode)
results: install
	$(BIN)/python -m course_utils.cli.results

# an executed HTML rendering of the course in build/book (not committed)
book: install
	$(BIN)/python -m course_utils.cli.results --book

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache
