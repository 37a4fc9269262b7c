#!/usr/bin/env bash
# The teacher's data for the micro-reproduction, made once and committed in recipes/teacher/
# (scripts/micro_repro.sh runs this only when that folder is empty, or with REGENERATE=1).
# SmolLM2-135M-Instruct, served offline by `phi-eval serve`, stands in for phi-1's GPT-4
# annotator and GPT-3.5 writer:
#   1. grade a seeded sample of the standard library 0-10 with phi-1's prompt (the expected
#      grade from the logprobs), and a subset of it again by a sampled answer at T=0.7:
#      python -m phi_eval.data.teacher reports the agreement and writes grades.jsonl, which
#      `annotate --annotator file` replays in the recipe;
#   2. write textbook sections (topic x audience) and HumanEval-style exercises (topic x
#      function name), deduplicated, with diversity statistics in their manifests.
# Every answer is cached and every stage resumes after a kill: rerun to continue.
#
#   bash scripts/teacher_data.sh [OUT_DIR]      (sizes: ANNOTATE, AGREEMENT, TEXTBOOKS, EXERCISES)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 \
       HF_UPDATE_DOWNLOAD_COUNTS=0 TOKENIZERS_PARALLELISM=false
PATH="$PWD/.venv/bin:$PATH"
teacher=${1:-recipes/teacher}
port=${PORT:-8765}  # part of the answers' cache key: keep it to reuse cached answers
work=${TEACHER_WORK:-runs/teacher-work}
mkdir -p "$teacher" "$work"

phi-eval serve smollm2-135m-instruct --port "$port" --device cpu > "$work/serve.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 300); do
    if python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/v1/models', timeout=1)" \
        2>/dev/null; then break; fi
    sleep 1
done

endpoint=(--model smollm2-135m-instruct --base-url "http://127.0.0.1:$port/v1" --api chat
          --timeout-seconds 3000)  # a CPU batch of 32 long replies takes minutes
stdlib=$(python -c "import sysconfig; print(sysconfig.get_paths()['stdlib'])")
phi-eval data source "$stdlib" --exclude-dirs __pycache__ site-packages test tests idle_test --out "$work/source.jsonl"

# SmolLM2's chat template with its answer begun: asked through chat, a 135M model writes prose, not a
# grade; asked this way its greedy answer is 10 for every file, so the grades used are the expected
# grade under its distribution over the first digits (--score expected). A sampled answer at T=0.7
# is the second grading, for the agreement report.
chatml=$'<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\nEducational value (0-10):'
grade=(--input "$work/source.jsonl" --seed 0 --max-chars 600 --concurrency 32
       --stands-in-for "GPT-4 (phi-1's annotator)" "${endpoint[@]}" --api completions)
# Grading and writing at once, so the writing's batches start at once. phi-eval serve decodes
# requests with logprobs (the expected grade) one at a time, not batched: grading costs ~3-10 s a
# file on 2 shared cores, and the writing (batched, 32 replies a batch) takes turns with it.
(
    phi-eval data annotate "${grade[@]}" --out "$work/annotated.jsonl" --sample-size "${ANNOTATE:-256}" \
        --temperature 0 --score expected --max-tokens 2 --completion-template "$chatml "
    phi-eval data annotate "${grade[@]}" --out "$work/annotated-t07.jsonl" --sample-size "${AGREEMENT:-64}" \
        --temperature 0.7 --max-tokens 4 --completion-template "$chatml"
) &
grading=$!

# Both kinds of writing with the same decoding settings, so the server batches them together
# (64 in flight keep the next batch full while one decodes).
write=(--seed 0 --temperature 0.8 --max-tokens 256 --concurrency 32 --stands-in-for "GPT-3.5 (phi-1's writer)"
       "${endpoint[@]}")
phi-eval data synthesize "${write[@]}" --kind textbook --count "${TEXTBOOKS:-56}" --out "$work/textbook.jsonl" &
textbooks=$!
phi-eval data synthesize "${write[@]}" --kind exercises --count "${EXERCISES:-48}" --out "$work/exercises.jsonl"
wait "$textbooks"
wait "$grading"
python -m phi_eval.data.teacher "$work/annotated.jsonl" "$work/annotated-t07.jsonl" --out "$teacher" --threshold 4.5
cp "$work/annotated.manifest.json" "$teacher/annotate.manifest.json"
cp "$work/annotated-t07.manifest.json" "$teacher/annotate-t07.manifest.json"
for kind in textbook exercises; do
    cp "$work/$kind.jsonl" "$teacher/$kind.jsonl"
    cp "$work/$kind.manifest.json" "$teacher/$kind.manifest.json"
done
echo "teacher data in $teacher"
