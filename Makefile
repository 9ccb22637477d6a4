# The two commands of the quick start are `make demo` and `make test`; both set up first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# tfx 1.16.0 declares Requires-Python <3.11 but runs on 3.11 (see ../shared/STACK.md).
PIP_INSTALL := $(PY) -m pip install --ignore-requires-python --disable-pip-version-check -c constraints.txt

# apt-get needs root: use sudo when not root.
SUDO := $(if $(filter 0,$(shell id -u 2>/dev/null)),,sudo)

.PHONY: setup redis demo test lint clean

setup: $(STAMP) redis
	$(PY) -m pipeline.assets

# The Redis-backed tests start their own redis-server (Debian's package) on a
# free port; install it when missing. Without it they are skipped locally and
# fail under CI=true, so a missing server never passes unnoticed.
redis:
	@if command -v redis-server >/dev/null 2>&1; then \
		:; \
	elif command -v apt-get >/dev/null 2>&1; then \
		echo "installing redis-server (Debian package) for the Redis-backed interest store tests"; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server \
		|| { $(SUDO) apt-get update -q \
			&& $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server; } \
		|| echo "could not install redis-server with apt-get: the Redis-backed tests will be skipped (failed under CI=true)"; \
	else \
		echo "redis-server is not on PATH and apt-get is not available: install Redis 7 (e.g. your system's"; \
		echo "redis package) to run the Redis-backed tests; they are skipped until then (failed under CI=true)"; \
	fi

$(STAMP): requirements.txt constraints.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "pip==25.2"
	$(PIP_INSTALL) --quiet -r requirements.txt
	$(PIP_INSTALL) --quiet --no-deps -e .
	touch $(STAMP)

demo: setup
	$(VENV)/bin/interest-graph demo --output runs/latest

# Two pytest workers: most test time is TensorFlow tracing and process
# start-up, single-threaded Python, so two workers use a 2-core machine's
# second core. Tests stay with their file's worker (shared module fixtures).
TEST_WORKERS ?= 2

test: setup
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf runs .pytest_cache
