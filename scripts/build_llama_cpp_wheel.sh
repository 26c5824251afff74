#!/usr/bin/env bash
# Build a CPU wheel of llama-cpp-python once and cache it; later runs only install the cached wheel.
#
# Usage: scripts/build_llama_cpp_wheel.sh [--install]
#
# Environment:
#   LLMBOOST_WHEEL_CACHE   folder for the wheel           (default: ~/.cache/llmboost/wheels)
#   LLAMA_CPP_VERSION      llama-cpp-python version       (default: 0.3.36)
#   PIP                    pip to build/install with      (default: .venv/bin/pip if present, else pip)
#   CMAKE_ARGS             extra CMake flags              (default: portable CPU build, see below)
#   BUILD_JOBS             parallel compile jobs          (default: number of CPUs)
#   NICE                   niceness of the compile        (default: 10)
#
# --install additionally installs the wheel with its [server] extra into the environment of $PIP.
# The compile takes about 9 minutes on 2 cores; the install from the cache takes seconds.
set -euo pipefail

VERSION="${LLAMA_CPP_VERSION:-0.3.36}"
CACHE="${LLMBOOST_WHEEL_CACHE:-$HOME/.cache/llmboost/wheels}"
if [[ -z "${PIP:-}" ]]; then
    if [[ -x .venv/bin/pip ]]; then PIP=.venv/bin/pip; else PIP=pip; fi
fi
JOBS="${BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}"
NICE_LEVEL="${NICE:-10}"
# Portable CPU build: no -march=native (AVX/AVX2/FMA/F16C stay on, AVX-512 off), no CUDA/Metal/BLAS,
# no tests, examples, tools or libcurl (the model is always a local file).
DEFAULT_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_BLAS=OFF \
-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF \
-DLLAMA_CURL=OFF"
export CMAKE_ARGS="${CMAKE_ARGS:-$DEFAULT_CMAKE_ARGS}"
export CMAKE_BUILD_PARALLEL_LEVEL="$JOBS"
export FORCE_CMAKE=1

mkdir -p "$CACHE"
shopt -s nullglob
wheels=("$CACHE"/llama_cpp_python-"$VERSION"-*.whl)
if (( ${#wheels[@]} == 0 )); then
    echo "building llama-cpp-python==$VERSION into $CACHE (CMAKE_ARGS=$CMAKE_ARGS, $JOBS jobs)" >&2
    start=$(date +%s)
    nice -n "$NICE_LEVEL" "$PIP" wheel --no-deps --no-cache-dir "llama-cpp-python==$VERSION" -w "$CACHE"
    echo "built in $(( $(date +%s) - start )) s" >&2
    wheels=("$CACHE"/llama_cpp_python-"$VERSION"-*.whl)
else
    echo "using cached wheel ${wheels[0]}" >&2
fi
if (( ${#wheels[@]} == 0 )); then
    echo "error: no wheel found in $CACHE after the build" >&2
    exit 1
fi
echo "${wheels[0]}"

if [[ "${1:-}" == "--install" ]]; then
    # The [server] extra pulls uvicorn, fastapi, sse-starlette, starlette-context, pydantic-settings; no torch.
    "$PIP" install "${wheels[0]}[server]"
fi
