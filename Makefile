# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CPU wheel by default (small, no CUDA download). For a GPU machine, e.g.:
#   make demo TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX_URL ?=
DAGSTER_HOME ?= $(CURDIR)
export DAGSTER_HOME
DAGSTER := $(BIN)/dagster
MODULE := -m recsys_dagster.definitions

.PHONY: venv demo warehouse rebuild refresh replay pools test check lint dev clean bench bench-mls bench-transfer tune scale-check serve bench-serving privacy-check

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

## The optional Ray extra (data-parallel training); `make test` installs it so CI runs those tests.
$(VENV)/.ray-installed: $(VENV)/.installed pyproject.toml
	$(BIN)/python -m pip install -q -e '.[dev,ray]'
	touch $@

## Materialize every asset on the default dataset (RECSYS_DATASET, RECSYS_DATA_DIR) and print a summary.
## The summary prints even when the run fails: when the quality gate refuses to publish
## (fused does not beat a required tuned peer), it shows the verdict and its numbers.
demo: venv pools
	@status=0; $(MAKE) --no-print-directory rebuild || status=$$?; \
	$(BIN)/python -m recsys_dagster.cli summary; \
	if [ $$status -ne 0 ]; then echo "full_rebuild failed (exit $$status): see the gate verdict above, or the run's log"; fi; \
	exit $$status

## The full_rebuild job over every partition, in one run (what the UI's job backfill does).
rebuild: venv pools
	$(DAGSTER) job execute $(MODULE) -j full_rebuild --tags "$$($(BIN)/python -m recsys_dagster.cli span --tags)"

## The daily_refresh job for one day: make refresh DAY=1998-04-22 (default: the last partition).
refresh: venv pools
	$(BIN)/python -m recsys_dagster.cli run-config daily_refresh > data/dagster/daily_refresh.json
	$(DAGSTER) job execute $(MODULE) -j daily_refresh -c data/dagster/daily_refresh.json \
		--tags "$$($(BIN)/python -m recsys_dagster.cli span --tags --day '$(DAY)')"

## Tune every model's hyperparameters on validation (~15 min on ML-100K, 2 cores); rebuilds and refreshes read the choices.
tune: venv pools
	$(DAGSTER) job execute $(MODULE) -j tune_hyperparameters

## Replay mode: drop the next DAYS event days of the dataset into data/landing/ (RECSYS_SOURCE=landing reads them).
DAYS ?= 1
replay: venv
	$(BIN)/python -m recsys_dagster.cli replay --days $(DAYS)

## Concurrency pools: `gpu` = number of visible GPUs (1 on CPU-only machines); others default to 1 (dagster.yaml).
pools: venv
	mkdir -p data/dagster
	$(DAGSTER) instance concurrency set gpu "$$($(BIN)/python -c 'import torch; print(max(1, torch.cuda.device_count()))')" >/dev/null

## Ingestion, knowledge graph and item text embeddings (what the benchmarks read).
warehouse: venv
	mkdir -p data/dagster
	$(DAGSTER) asset materialize $(MODULE) --select 'items,users'
	$(DAGSTER) asset materialize $(MODULE) --select 'raw_interactions,cleaned_interactions' \
		--partition-range "$$($(BIN)/python -m recsys_dagster.cli span)"
	$(DAGSTER) asset materialize $(MODULE) --select 'knowledge_graph,item_text_embeddings'

## Benchmarks: tables on stdout, JSON in benchmarks/results/, report in docs/BENCHMARKS.md (~95 min on 2 cores; the few-shot protocol ~20 min; the 10M growth point alone ~12 min).
bench: warehouse
	$(BIN)/python -m benchmarks.bench_load_time
	$(BIN)/python -m benchmarks.bench_text_encoder
	$(BIN)/python -m benchmarks.bench_training
	$(BIN)/python -m benchmarks.bench_ranking
	$(BIN)/python -m benchmarks.bench_accuracy --protocols A A_recbole cold_item --ablation-seeds 3
	$(BIN)/python -m benchmarks.bench_accuracy --protocols few_shot --ablation-seeds 5 --seeds 2020 2021 2022 2023 2024 \
		--name accuracy_few_shot
	$(BIN)/python -m benchmarks.bench_explanations
	$(BIN)/python -m benchmarks.bench_training_modes
	$(BIN)/python -m benchmarks.bench_e2e
	$(BIN)/python -m benchmarks.bench_growth
	$(BIN)/python -m benchmarks.bench_propagation
	$(BIN)/python -m benchmarks.bench_privacy
	$(BIN)/python -m benchmarks.bench_lightweight
	$(BIN)/python -m benchmarks.report

## The accuracy benchmark on ml-latest-small (its own home under data/ml-latest-small; ~50 min per seed on one thread, ~1h45 on 2 cores).
MLS := RECSYS_DATASET=movielens-latest-small RECSYS_HOME=data/ml-latest-small RECSYS_PARTITION_GRAIN=month
# One process per seed, two at a time on one thread each; every trained model with the sampled
# softmax (the full softmax over 9.7k items takes 12-25 min per model on one thread).
MLS_SEED := OMP_NUM_THREADS=1 $(BIN)/python -m benchmarks.bench_accuracy --protocols A cold_item --ablation-seeds 1 \
	--loss sampled_softmax --num-negatives 1024 --seeds
bench-mls: venv
	mkdir -p data/ml-latest-small/dagster
	$(MLS) DAGSTER_HOME=$(CURDIR)/data/ml-latest-small/dagster $(MAKE) warehouse
	$(MLS) $(MLS_SEED) 2020 --name accuracy_mls_s2020 & \
	$(MLS) $(MLS_SEED) 2021 --name accuracy_mls_s2021; a=$$?; wait $$!; b=$$?; test $$a = 0 -a $$b = 0
	$(MLS) $(MLS_SEED) 2022 --name accuracy_mls_s2022
	$(BIN)/python -m benchmarks.bench_accuracy --merge accuracy_mls_s2020 accuracy_mls_s2021 accuracy_mls_s2022 \
		--name accuracy_ml_latest_small
	$(BIN)/python -m benchmarks.report

## Cross-domain transfer ML-100K <-> ml-latest-small, both directions, 5/25/100% target data, 3 seeds (~75 min on 2 cores).
bench-transfer: warehouse
	mkdir -p data/ml-latest-small/dagster
	$(MLS) DAGSTER_HOME=$(CURDIR)/data/ml-latest-small/dagster $(MAKE) warehouse
	$(BIN)/python -m benchmarks.bench_transfer
	$(BIN)/python -m benchmarks.report

## gnn_model as a Ray job (Pipes + Ray Train DDP) on a 2-node loopback Ray cluster, 2 workers vs 1 (~3 min; ML-100K).
scale-check: venv $(VENV)/.ray-installed
	$(BIN)/python -m benchmarks.scale_check

## A full rebuild with a pseudonymization key into data/private (key in data/private.key, outside that home), then
## every stored user id checked and the evaluation compared with the plain `make demo` build (~8 min; after `make demo`).
privacy-check: venv pools
	test -s data/private.key || $(BIN)/python -c "import secrets; print(secrets.token_hex(32))" > data/private.key
	RECSYS_HOME=data/private RECSYS_PSEUDONYMIZE_KEY_FILE=data/private.key $(DAGSTER) job execute $(MODULE) \
		-j full_rebuild --tags "$$($(BIN)/python -m recsys_dagster.cli span --tags)"
	$(BIN)/python -m benchmarks.privacy_check --plain data --private data/private

## The HTTP service (FastAPI) on 127.0.0.1, port PORT (default 8000), over the latest serving snapshot (after `make demo`); docs at /docs.
serve: venv
	$(BIN)/python -m recsys_dagster.serving

## Load test of the service: 60 s at concurrency 32 per phase, plus a hot reload mid-test (~3 min; after `make demo`).
bench-serving: venv
	$(BIN)/python -m benchmarks.bench_serving

## Run the test suite (tests read real data from RECSYS_DATA_DIR, default ../shared/data).
test: venv $(VENV)/.ray-installed
	$(BIN)/ruff check recsys_dagster tests benchmarks
	$(BIN)/python -m pytest -q

## The fast tier for the development loop: ruff + every test not marked slow.
check: venv
	$(BIN)/ruff check recsys_dagster tests benchmarks
	$(BIN)/python -m pytest -q -m "not slow"

lint: venv
	$(BIN)/ruff check recsys_dagster tests benchmarks

## Start the Dagster UI on http://127.0.0.1:3000
dev: venv pools
	$(DAGSTER) dev -w workspace.yaml -h 127.0.0.1 -p 3000

clean:
	rm -rf data/warehouse.duckdb* data/dagster
