# Two commands a new user needs: `make demo` and `make test`. Both set up .venv on the way if it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench setup browser data clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/pip install --quiet -e ".[test]"
	# Lucent is the reference for the Fourier image test; its own requirements (coveralls, ipython, ...) are not used.
	$(BIN)/pip install --quiet --no-deps "torch-lucent==0.1.8"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/deepscope demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench docs
	$(BIN)/ruff format --check src tests bench docs
	$(BIN)/mypy

# --dist loadgroup: the Python blocks of one docs page share a namespace, so each page stays on one worker
# (tests/test_docs.py); tests without a group are spread as with the default.
test: lint browser data
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

# The browser test's browser: Debian's chromium (Playwright's own browser download is never used). Installed only
# when missing and we are root with apt-get (CI); elsewhere tests/test_board_browser.py skips, saying why.
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; fi

# The FashionMNIST test's data, offline: Debian's dataset-fashion-mnist (IDX files in /usr/share/datasets), installed
# when missing and we are root with apt-get (CI); elsewhere that test fails, saying to install it.
data:
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; fi

bench: $(STAMP)
	$(BIN)/pip install --quiet -e ".[test,bench]"
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info
