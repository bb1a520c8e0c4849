# pgwarden developer entry points. `make run` and `make test` each build .venv first.
PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || echo python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest bench clean wheel deb

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/pgwarden demo

lint: $(STAMP)
	$(BIN)/ruff check daemon tests benchmarks migrations
	$(BIN)/ruff format --check daemon tests benchmarks migrations
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy --strict daemon/pgwarden

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/backup.py
	$(BIN)/python benchmarks/retention.py
	$(BIN)/python benchmarks/verify.py

wheel: $(STAMP)
	$(BIN)/pip wheel --no-deps -w dist .

# dist/pgwarden_<version>_<arch>.deb: the app as a venv in /opt/pgwarden, the systemd unit, the
# conffile... (packaging/deb/build --help; DEB_ARGS="--version 0.2.0~rc1" for another version)
deb: $(STAMP)
	PIP=$(BIN)/pip packaging/deb/build $(DEB_ARGS)

clean:
	rm -rf $(VENV) dist build .mypy_cache .ruff_cache .pytest_cache
