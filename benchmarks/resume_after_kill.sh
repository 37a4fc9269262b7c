#!/bin/bash
# PIQA (first 192 items = 384 requests) with smollm2-135m-instruct: an uninterrupted run, then one killed (-9)
# once >= 256 requests are committed (67%), then the same command again; times and identity of the results.
cd "$(dirname "$0")/.."  # the repository root; PHI_EVAL_HOME etc. below are per run
export PYTHONPATH=$PWD OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
M=${WORK:-/tmp/phi-eval-resume-bench}
mkdir -p $M
ARGS="run --models smollm2-135m-instruct --tasks piqa --data-dir ../shared/benchmarks --limit 192 --device cpu"
rm -rf $M/hf $M/hk $M/fresh $M/killed
echo "start $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)"
s=$(date +%s.%N); PHI_EVAL_HOME=$M/hf nice -n 10 .venv/bin/python -m phi_eval.cli $ARGS --out $M/fresh --no-cache > $M/fresh.log 2>&1; e=$(date +%s.%N)
echo "fresh: $(echo "$e - $s" | bc) s, load $(cut -d' ' -f1-3 /proc/loadavg)"
s=$(date +%s.%N); PHI_EVAL_HOME=$M/hk nice -n 10 .venv/bin/python -m phi_eval.cli $ARGS --out $M/killed > $M/victim.log 2>&1 &
pid=$!
while kill -0 $pid 2>/dev/null; do
  n=$(sqlite3 $M/hk/cache.sqlite "select count(*) from entries where namespace='loglikelihood'" 2>/dev/null || echo 0)
  if [ "${n:-0}" -ge 256 ]; then kill -9 $pid; break; fi
  sleep 0.2
done
wait $pid 2>/dev/null; e=$(date +%s.%N)
echo "killed after $(echo "$e - $s" | bc) s with $(sqlite3 $M/hk/cache.sqlite "select count(*) from entries where namespace='loglikelihood'") of 384 committed"
s=$(date +%s.%N); PHI_EVAL_HOME=$M/hk nice -n 10 .venv/bin/python -m phi_eval.cli $ARGS --out $M/killed > $M/rerun.log 2>&1; e=$(date +%s.%N)
echo "rerun: $(echo "$e - $s" | bc) s, load $(cut -d' ' -f1-3 /proc/loadavg)"
tr '\r' '\n' < $M/rerun.log | grep -E "resuming|loglikelihood: 100" | tail -2
tr '\r' '\n' < $M/fresh.log | grep -E "loglikelihood: 100" | tail -1
.venv/bin/python - <<'PY'
import json, os, pathlib
M = pathlib.Path(os.environ.get("WORK", "/tmp/phi-eval-resume-bench"))
def load(run):
    d = M / run / "smollm2-135m-instruct"
    r = json.loads((d / "results.json").read_text())["results"]
    s = [json.loads(l) for l in (d / "samples_piqa.jsonl").open()]
    return r, s
(a, sa), (b, sb) = load("fresh"), load("killed")
print("results identical:", a == b, a["piqa"]["acc,none"], a["piqa"]["acc_norm,none"])
print("samples identical:", sa == sb, len(sa))
PY
echo "end $(date -u +%T)"
