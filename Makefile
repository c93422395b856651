# The two commands of the README: `make demo` and `make test`. Each does its own set-up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := build/demo

.PHONY: demo test lint bench system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

system-deps:
	@scripts/ensure-system-package.sh dot graphviz
	@scripts/ensure-system-package.sh chromium chromium

demo: $(STAMP) system-deps
	rm -rf $(DEMO)
	$(BIN)/jupyter-prov4ml run notebooks/quickstart.ipynb \
		-o $(DEMO)/quickstart.executed.ipynb --store $(DEMO)/prov4ml
	@run=$$($(BIN)/jupyter-prov4ml list --store $(DEMO)/prov4ml --kind provrun --last 1 --json \
		| $(BIN)/python -c 'import json,sys; print(json.load(sys.stdin)[0]["run_id"])') && \
	$(BIN)/jupyter-prov4ml export $$run --store $(DEMO)/prov4ml --format svg -o $(DEMO)/provrun-graph.svg \
		|| echo "(no SVG: Graphviz's dot is missing; see the note above)"
	@echo
	@echo "executed notebook: $(DEMO)/quickstart.executed.ipynb"
	@echo "PROV-JSON files:"
	@find $(DEMO)/prov4ml -name '*.prov.json' | sort | sed 's/^/  /'
	@echo "graph (SVG):       $(DEMO)/provrun-graph.svg"

test: $(STAMP) system-deps lint
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check jupyter_prov4ml tests benchmarks
	$(BIN)/ruff format --check jupyter_prov4ml tests benchmarks
	$(BIN)/mypy jupyter_prov4ml
	$(BIN)/lint-imports --no-cache

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache
