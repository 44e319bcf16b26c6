# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CPU wheel by default (small, no CUDA download). For a GPU machine, e.g.:
#   make demo TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX_URL ?=
export DAGSTER_HOME := $(CURDIR)
DAGSTER := $(BIN)/dagster
MODULE := -m recsys_dagster.definitions

.PHONY: venv demo warehouse test lint dev clean bench

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

## Materialize every asset on the default dataset (RECSYS_DATASET, RECSYS_DATA_DIR) and print a summary.
demo: warehouse
	$(DAGSTER) asset materialize $(MODULE) --select 'user_behavior_embeddings,gnn_model,evaluation_metrics,fused_recommendations'
	$(BIN)/python -m recsys_dagster.cli summary

## Ingestion, knowledge graph and item text embeddings (what the benchmarks read).
warehouse: venv
	mkdir -p data/dagster
	$(DAGSTER) asset materialize $(MODULE) --select 'items,users'
	$(DAGSTER) asset materialize $(MODULE) --select 'raw_interactions,cleaned_interactions' \
		--partition-range "$$($(BIN)/python -m recsys_dagster.cli span)"
	$(DAGSTER) asset materialize $(MODULE) --select 'knowledge_graph,item_text_embeddings'

## Benchmarks (tables on stdout, JSON in benchmarks/results/).
bench: warehouse
	$(BIN)/python -m benchmarks.bench_text_encoder
	$(BIN)/python -m benchmarks.bench_training --full
	$(BIN)/python -m benchmarks.bench_ranking
	$(BIN)/python -m benchmarks.bench_accuracy

## Run the test suite (tests read real data from RECSYS_DATA_DIR, default ../shared/data).
test: venv
	$(BIN)/ruff check recsys_dagster tests benchmarks
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check recsys_dagster tests benchmarks

## Start the Dagster UI on http://127.0.0.1:3000
dev: venv
	mkdir -p data/dagster
	$(DAGSTER) dev -w workspace.yaml -h 127.0.0.1 -p 3000

clean:
	rm -rf data/warehouse.duckdb* data/dagster
