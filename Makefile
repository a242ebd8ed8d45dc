VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
INSTALL_STAMP := $(VENV)/.install.stamp
SERVE_STAMP := $(VENV)/.serve.stamp
TEST_STAMP := $(VENV)/.test.stamp
DOCS_STAMP := $(VENV)/.docs.stamp
POSTGRESQL_STAMP := $(VENV)/.postgresql.stamp

.PHONY: serve serve-pg serve-metrics admin test docs fuzz lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(INSTALL_STAMP): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install -q -e .
	touch $@

# The clients of the documented examples, beside the server (curl and node are the system's).
$(SERVE_STAMP): $(INSTALL_STAMP)
	$(BIN)/pip install -q httpie requests tuspy
	touch $@

$(POSTGRESQL_STAMP): $(SERVE_STAMP)
	$(BIN)/pip install -q -e ".[postgresql]"
	touch $@

$(TEST_STAMP): $(INSTALL_STAMP)
	$(BIN)/pip install -q -e ".[test]"
	touch $@

$(DOCS_STAMP): $(INSTALL_STAMP)
	$(BIN)/pip install -q -e ".[docs]"
	touch $@

## Run Kinto with kinto_attachment on the embedded default at http://localhost:8888/v1
## (and install the documented examples' clients in .venv: HTTPie, requests, tuspy)
serve: $(SERVE_STAMP)
	mkdir -p var/attachments
	$(BIN)/pserve config/kinto.ini

## Run config/postgresql.ini at http://localhost:8888/v1 on the database PG_URL names (default:
## "kinto" on the local PostgreSQL, user postgres): created if missing, migrated, then served
PG_URL ?= postgresql://postgres@127.0.0.1:5432/kinto
serve-pg: export KINTO_STORAGE_URL = $(PG_URL)
serve-pg: export KINTO_CACHE_URL = $(PG_URL)
serve-pg: export KINTO_PERMISSION_URL = $(PG_URL)
serve-pg: $(POSTGRESQL_STAMP)
	mkdir -p var/attachments-pg
	$(BIN)/python config/createdb.py config/postgresql.ini
	$(BIN)/kinto migrate --ini config/postgresql.ini
	$(BIN)/pserve config/postgresql.ini

## The embedded default with Prometheus metrics at http://localhost:8888/v1/__metrics__
## (config/metrics.ini), for the Grafana dashboard config/grafana/kinto-attachment.json
serve-metrics: $(SERVE_STAMP)
	$(BIN)/pip install -q -e ".[metrics]"
	mkdir -p var/attachments
	$(BIN)/pserve config/metrics.ini

ADMIN_PORT ?= 8889
ADMIN_BUILD := admin/build/index.html

# npm's kinto-admin and esbuild as admin/package-lock.json pins them, bundled by admin/build.mjs
# (no install scripts: esbuild's binary comes as a dependency of its own).
$(ADMIN_BUILD): admin/package.json admin/package-lock.json admin/build.mjs admin/index.html \
		$(wildcard admin/src/*.js)
	cd admin && npm ci --no-audit --no-fund --ignore-scripts && node build.mjs

## Build Kinto Admin (admin/) and serve it at http://127.0.0.1:8889/ (ADMIN_PORT), beside
## `make serve`: sign in to http://localhost:8888/v1 with Basic Auth
admin: $(ADMIN_BUILD)
	$(PYTHON) -m http.server --bind 127.0.0.1 --directory admin/build $(ADMIN_PORT)

## Run the whole test suite (PostgreSQL at 127.0.0.1:5432, or $$KINTO_ATTACHMENT_TEST_PG),
## in TEST_WORKERS processes, each test module in one of them (TEST_WORKERS=0: in this one)
# Four on two cores: many tests wait on the servers and commands they start, and the other
# processes use the cores meanwhile (9 minutes with 3, 7 with 4, coverage on).
TEST_WORKERS ?= 4
test: $(TEST_STAMP)
	$(BIN)/ruff check kinto_attachment tests bench config
	$(BIN)/ruff format --check kinto_attachment tests bench config
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --cov --cov-report=term-missing $(PYTEST_ARGS)

## Build the documentation (docs/) into docs/_build/html, warnings as errors
docs: $(DOCS_STAMP)
	$(BIN)/sphinx-build -W --keep-going -b html docs docs/_build/html

## Long fuzzing run of every route on a live server (random seeds, many examples; minutes)
fuzz: $(TEST_STAMP)
	HYPOTHESIS_PROFILE=long $(BIN)/pytest tests/live/test_fuzz.py -p no:cacheprovider $(PYTEST_ARGS)

## Benchmarks side by side with a reference server and kinto-attachment 8.0.0 (several minutes)
bench: $(TEST_STAMP)
	$(BIN)/pip install -q matplotlib
	$(BIN)/python bench/run.py $(BENCH_ARGS)

lint: $(TEST_STAMP)
	$(BIN)/ruff check kinto_attachment tests bench config

format: $(TEST_STAMP)
	$(BIN)/ruff check --fix kinto_attachment tests bench config
	$(BIN)/ruff format kinto_attachment tests bench config

clean:
	rm -rf $(VENV) var .pytest_cache .coverage *.egg-info docs/_build admin/build admin/node_modules
