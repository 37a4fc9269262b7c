#!/usr/bin/env bash
# The main job, offline: set up, train the tiny phi model if it is missing, evaluate it on
# every code task whose data is here, and write the leaderboard (JSON, Markdown, plot).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 \
       HF_UPDATE_DOWNLOAD_COUNTS=0 GRADIO_ANALYTICS_ENABLED=False
PATH="$PWD/.venv/bin:$PATH"
home=${PHI_EVAL_HOME:-$HOME/.cache/phi-eval}
out=${OUT:-runs/demo}

if [ ! -f "$home/models/phi-tiny/training_summary.json" ]; then
    phi-eval train recipes/phi-tiny.yaml
fi

tasks=humaneval
data_args=()
data_dir=${DATA_DIR:-../shared/benchmarks}
if [ -f "$data_dir/mbpp/mbpp.jsonl" ]; then
    tasks=humaneval,mbpp
    data_args=(--data-dir "$data_dir")
fi

phi-eval run --models phi-tiny --tasks "$tasks" "${data_args[@]}" --out "$out"
phi-eval leaderboard "$out" -o "$out/leaderboard.json" --md "$out/leaderboard.md" --plot "$out/scores.png"
cat "$out/leaderboard.md"
