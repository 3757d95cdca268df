# Every target sets up .venv itself, so a fresh clone needs only `make test` or `make demo`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup lint test test-redis7 test-pythons test-cluster test-slow test-image screenshots demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

LINTED := loom_redis tests examples $(wildcard bench)

lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy --strict loom_redis examples bench
	$(BIN)/lint-imports --no-cache
	$(BIN)/hadolint Dockerfile

# The dashboard's browser tests drive Debian's Chromium (installed here when missing and
# apt-get can; without it they skip, saying why).
CHROMIUM := /usr/bin/chromium

$(CHROMIUM):
	-(command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1

test: lint $(CHROMIUM)
	$(BIN)/pytest -q -n 2

# The dashboard's screenshots in docs/screenshots (the README shows them).
screenshots: $(STAMP) $(CHROMIUM)
	LOOM_SCREENSHOTS=docs/screenshots $(BIN)/pytest -q -p no:xdist tests/web/test_browser.py

# The same suite against Debian's redis-server (7.0), the second real target.
test-redis7: $(STAMP)
	LOOM_TEST_SERVER_BINARY=$$(command -v redis-server) $(BIN)/pytest -q -n 2

# The suite on the other supported Pythons (pyenv's), each in a venv of its own, against
# the embedded Valkey only (the Redis 7.0 run is the main Python's).
OTHER_PYTHONS ?= 3.12 3.13
test-pythons:
	set -e; for version in $(OTHER_PYTHONS); do \
	  venv=.venv-$$version; \
	  test -x $$venv/bin/python || "$$(pyenv prefix $$version)/bin/python" -m venv $$venv; \
	  $$venv/bin/python -m pip install --quiet --upgrade pip; \
	  $$venv/bin/python -m pip install --quiet -e '.[dev]'; \
	  echo "== Python $$($$venv/bin/python -V)"; \
	  $$venv/bin/pytest -q -n 2 -p no:cacheprovider; \
	done

# The suite on a real Redis Cluster (three masters on loopback, LocalCluster), the tests
# that need one standalone server skipped (marker `standalone`); `make test` runs the
# bounded part, tests/e2e/test_cluster.py.
test-cluster: $(STAMP) $(CHROMIUM)
	LOOM_TEST_CLUSTER=1 $(BIN)/pytest -q -n 2 tests/store tests/worker tests/client tests/web tests/e2e

# The long chaos and soak runs, excluded from `make test`.
test-slow: $(STAMP)
	$(BIN)/pytest -q -m slow

# Builds the Dockerfile with buildah on a debootstrap base and runs a worker from it
# (as root, with buildah and debootstrap installed); excluded from `make test`.
test-image: $(STAMP)
	$(BIN)/pytest -q -s -m image tests/image

demo: $(STAMP)
	$(BIN)/python -m examples.demo

# Benchmarks side by side with the peers (run by hand; peers get their own venvs in .bench/).
bench: $(STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .venv-3.* .loom .bench .cache .pytest_cache .mypy_cache .ruff_cache *.egg-info
