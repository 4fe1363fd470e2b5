# Two commands a new user needs: `make demo` and `make test`. Both set up .venv on the way if it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint bench setup browser data postgres clean test-torch-lowest test-torch-newest

# The dev venv pins torch 2.14.1 (and its torchvision) because that is the release this project's machines hold on
# disk, capped there by pip's machine-wide constraint file: `make setup` needs no 900 MB download and CI tests the
# torch the developers test. pyproject.toml sets no upper bound; `make test-torch-newest` tries the newest release.
$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/pip install --quiet -e ".[test]"
	$(BIN)/pip check
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/deepscope demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench docs examples
	$(BIN)/ruff format --check src tests bench docs examples
	$(BIN)/mypy

# --dist loadgroup: the Python blocks of one docs page share a namespace, so each page stays on one worker
# (tests/test_docs.py); tests without a group are spread as with the default. --durations: the slowest tests named
# at the end of every run, so the suite's time (issue 18: under 5 minutes on 2 cores) is watched where it is spent.
test: lint browser data postgres
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q --durations=30

# A dev loop: everything but the tests marked slow (tests/conftest.py SLOW: Ray, Chromium, PostgreSQL, ...).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q -m "not slow"

# The browser test's browser: Debian's chromium (Playwright's own browser download is never used). Installed only
# when missing and we are root with apt-get (CI); elsewhere tests/test_board_browser.py skips, saying why.
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; fi

# The PostgreSQL store's tests start a throwaway server of Debian's postgresql package (tests/pg_cluster.py: initdb in
# a temporary directory, as the postgres user when we are root); installed when missing and we are root with apt-get
# (CI); elsewhere those tests skip, saying why. The package's own cluster is not used (nor started by us).
postgres:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; fi

# The FashionMNIST test's data, offline: Debian's dataset-fashion-mnist (IDX files in /usr/share/datasets), installed
# when missing and we are root with apt-get (CI); elsewhere that test fails, saying to install it.
data:
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; fi

# The fast tests (listed in tools/test_torch.sh) in a throwaway venv with the lowest torch pyproject.toml allows, or
# the newest on the package index; docs/install.md has the versions tested.
test-torch-lowest:
	PYTHON=$(PYTHON) tools/test_torch.sh lowest

test-torch-newest:
	PYTHON=$(PYTHON) tools/test_torch.sh newest

bench: $(STAMP)
	$(BIN)/pip install --quiet -e ".[test,bench]"
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info
