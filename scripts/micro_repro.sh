#!/usr/bin/env bash
# phi-1's "textbooks are all you need" claim in miniature, offline, on 2 CPU cores: train
# phi-tiny-web (the standard library as it comes) and phi-tiny-textbook (the same library graded
# by a real teacher, SmolLM2-135M-Instruct standing in for GPT-4, a random forest mimicking the
# grades, the top 20% kept, plus the teacher's textbook sections and exercises standing in for
# GPT-3.5's) at equal compute, SEEDS seeds each, then compare them: bits per byte on HumanEval's
# canonical solutions and MBPP's reference code, pass@k, on all items and on the items the
# synthetic data does not contaminate; mean ± std over seeds with Welch's t and an exact
# permutation test. Writes OUT/comparison.{md,json,png}, OUT/contamination.{json,md} and
# OUT/timings.tsv (seconds per stage). Every model and data stage resumes after a kill.
#
#   bash scripts/micro_repro.sh [key=value overrides for both recipes...]
#   (SEEDS=5, N_SAMPLES=10 per HumanEval problem, LIMIT=all problems, OUT=runs/micro-repro,
#    CONTAMINATION=ngram,embedding,ast; REGENERATE=1 remakes the teacher's data, committed in
#    recipes/teacher/, with scripts/teacher_data.sh: 43 minutes on 2 shared cores for
#    the committed 256 grades and 104 documents; see recipes/teacher/generation.json)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 \
       HF_UPDATE_DOWNLOAD_COUNTS=0 TOKENIZERS_PARALLELISM=false
PATH="$PWD/.venv/bin:$PATH"
out=${OUT:-runs/micro-repro}
teacher=recipes/teacher  # the textbook recipe reads its grades and synthetic data from here
mkdir -p "$out"
timings="$out/timings.tsv"
printf 'stage\tseconds\n' > "$timings"
timed() {  # timed NAME COMMAND...: run it and log its wall time
    local name=$1 start=$SECONDS
    shift
    "$@"
    printf '%s\t%s\n' "$name" "$((SECONDS - start))" | tee -a "$timings"
}
limit_args=()
if [ -n "${LIMIT:-}" ]; then limit_args=(--limit "$LIMIT"); fi
data_args=()
data_dir=${DATA_DIR:-../shared/benchmarks}
if [ -f "$data_dir/mbpp/mbpp.jsonl" ]; then data_args=(--data-dir "$data_dir"); fi

# 1. The teacher's data, made once (committed): grades, agreement, textbooks, exercises.
if [ "${REGENERATE:-0}" = 1 ] || [ ! -f "$teacher/grades.jsonl" ]; then
    timed teacher bash scripts/teacher_data.sh "$teacher"
fi

# 2. The unfiltered model (seed 0) first: the textbook pipeline's classifier embeds with it.
timed train-web-seed0 phi-eval train recipes/phi-tiny-web.yaml "$@"

# 3. phi-1 §5: is the synthetic data contaminated by HumanEval / MBPP? n-gram overlap, AST match
#    rate and embedding neighbours (SmolLM2's embeddings; phi-1 used CodeGen's and published no
#    threshold, so the embedding method lists neighbours and flags nothing).
timed contamination phi-eval contamination --corpus "$teacher/textbook.jsonl" "$teacher/exercises.jsonl" \
    --tasks humaneval,mbpp --methods "${CONTAMINATION:-ngram,embedding,ast}" --embed-model smollm2-135m-instruct \
    --device cpu -o "$out/contamination.json" --md "$out/contamination.md" "${data_args[@]}" "${limit_args[@]}"

# 4. Every seed of both arms (web first: the textbook pipeline needs phi-tiny-web), then the study.
timed compare phi-eval train recipes/phi-tiny-web.yaml "$@" --compare recipes/phi-tiny-textbook.yaml \
    --seeds "${SEEDS:-5}" --n-samples "${N_SAMPLES:-10}" "${limit_args[@]}" --contamination "$out/contamination.json" \
    --out "$out" "${data_args[@]}"
cat "$out/comparison.md"
