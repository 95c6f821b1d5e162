# Two commands a new machine needs: `make run` (the demo: the product on embedded PostgreSQL
# with a sample mailbox) and `make test`. Both create .venv and install the pinned
# dependencies on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run demo test lint format

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: demo

# Embedded PostgreSQL under var/demo, fake Gmail with demo/mailbox, pipeline, then the API
# on 127.0.0.1:8000 with development login. DEMO_ARGS="--port 8001", "--no-serve", "--reset".
demo: $(STAMP)
	$(BIN)/ticketing demo $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
