#!/usr/bin/env bash
# phi-1's data-quality claim in miniature, offline, on this machine: train phi-tiny-web
# (the standard library as it comes) and phi-tiny-textbook (the same library annotated,
# classified, filtered to its top 20%, plus textbook sections written through `phi-eval
# serve`, deduplicated) with equal compute, then compare them with the harness. Writes
# runs/micro-repro/comparison.{md,json}. Models and data stages resume after a kill.
#
#   bash scripts/micro_repro.sh [key=value overrides for both recipes...]
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 \
       HF_UPDATE_DOWNLOAD_COUNTS=0 TOKENIZERS_PARALLELISM=false
PATH="$PWD/.venv/bin:$PATH"
port=${PORT:-8765}   # the port recipes/phi-tiny-textbook.yaml's synthesize stage calls
out=${OUT:-runs/micro-repro}
mkdir -p "$(dirname "$out")"
data_args=()
data_dir=${DATA_DIR:-../shared/benchmarks}
if [ -f "$data_dir/mbpp/mbpp.jsonl" ]; then data_args=(--data-dir "$data_dir"); fi

# 1. The unfiltered model first: the textbook pipeline embeds with it and it writes the textbooks.
phi-eval train recipes/phi-tiny-web.yaml "$@"

# 2. Serve it, OpenAI-compatible, for the synthesize stage.
phi-eval serve phi-tiny-web --port "$port" --device cpu > "$out.serve.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 120); do
    if python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/v1/models', timeout=1)" \
        2>/dev/null; then break; fi
    sleep 1
done

# 3. Train the textbook model (web is reused: already trained) and compare the two.
phi-eval train recipes/phi-tiny-web.yaml --compare recipes/phi-tiny-textbook.yaml --out "$out" \
    "${data_args[@]}" "$@"
cat "$out/comparison.md"
