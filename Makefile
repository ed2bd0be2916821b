# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export FLASK_APP := wsgi

.PHONY: run test test-pg install dev-install migrate seed migration-regenerate clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed-runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.installed-runtime

install: $(VENV)/.installed-runtime
dev-install: $(VENV)/.installed-dev

migrate: install
	$(BIN)/flask db upgrade

seed: migrate
	$(BIN)/flask seed

## Serve the shop on SQLite with the built-in test gateway at http://127.0.0.1:$PORT (5000);
## in development also seed the demo shopper and print its sign-in.
run: migrate
	@export TIFFIN_ENV=$${TIFFIN_ENV:-development}; \
	if [ "$$TIFFIN_ENV" = development ]; then $(BIN)/flask seed --demo; else $(BIN)/flask seed; fi && \
	echo "Tiffin is serving http://127.0.0.1:$${PORT:-5000}/  (Ctrl-C to stop)" && \
	exec $(BIN)/flask run --host 127.0.0.1 --port $${PORT:-5000}

## The whole test suite (SQLite unless DATABASE_URL points at PostgreSQL)
test: dev-install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## The suite against the local PostgreSQL (fresh schema in database `test`)
test-pg: dev-install
	DATABASE_URL=$${DATABASE_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/test} REQUIRE_POSTGRES=1 \
		$(BIN)/python -m pytest $(PYTEST_ARGS)

## Rewrite migrations/versions/0001 from the models (only before the first deploy)
migration-regenerate: dev-install
	$(BIN)/python migrations/regenerate_initial.py

## Remove the virtualenv, the development database (instance/) and test caches
clean:
	rm -rf $(VENV) instance .pytest_cache
