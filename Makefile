# The two commands of the quick start are `make demo` and `make test`; both set up first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# tfx 1.16.0 declares Requires-Python <3.11 but runs on 3.11 (see ../shared/STACK.md).
PIP_INSTALL := $(PY) -m pip install --ignore-requires-python --disable-pip-version-check -c constraints.txt

.PHONY: setup demo test lint clean

setup: $(STAMP)
	$(PY) -m pipeline.assets

$(STAMP): requirements.txt constraints.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "pip==25.2"
	$(PIP_INSTALL) --quiet -r requirements.txt
	$(PIP_INSTALL) --quiet --no-deps -e .
	touch $(STAMP)

demo: setup
	$(VENV)/bin/interest-graph demo --output runs/latest

test: setup
	$(PY) -m pytest tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf runs .pytest_cache
