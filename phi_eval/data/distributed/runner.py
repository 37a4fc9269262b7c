"""Run the planned phases with datatrove's local, Ray or Slurm executor; resume what a kill left.

Resume is datatrove's: a task that finished left OUT/logs/PHASE/completions/NNNNN and is not
run again. OUT/run.json records the task count and each stage's identity (its output-changing
settings, its inputs' fingerprints, the stages before it): a rerun with other settings recomputes
from the first changed stage; a rerun with another task count is refused (finished tasks hold
other shards). The local executor runs tasks on `workers` processes; Ray uses the cluster that
`ray.init()` finds (a local one when none is running); Slurm submits one job array per phase,
each depending on the one before, and returns.
"""
from __future__ import annotations

import json
import multiprocessing
import shutil
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from phi_eval.data.distributed.blocks import WORKER_CACHE, Block, Guard
from phi_eval.data.distributed.logs import quiet_console
from phi_eval.data.distributed.plan import Phase, check, plan, side_inputs
from phi_eval.data.distributed.shards import write_json
from phi_eval.data.stage import identity_of
from phi_eval.errors import UsageError


def stage_identities(stages: list[tuple[str, dict]]) -> list[str]:
    from phi_eval.data import source
    from phi_eval.data.pipeline import STAGES

    identities, previous = [], None
    for name, settings in stages:
        inputs = [source.fingerprint(s, settings) for s in settings["inputs"]] if name == "source" else [previous]
        # a changed appended file or grades file recomputes the stage
        inputs += [source.fingerprint(f, settings) for _, f in side_inputs(name, settings)]
        previous = identity_of(name, STAGES[name][0], settings, inputs)
        identities.append(previous)
    return identities


def prepare_out(out: Path, stages: list[tuple[str, dict]], tasks: int) -> None:
    """Check OUT/run.json against this run; drop the stages whose identity changed."""
    from phi_eval.data import source

    for name, settings in stages[:1]:
        if name == "source":
            source.check_inputs(settings["inputs"])
    identities = stage_identities(stages)
    state_path = out / "run.json"
    if state_path.is_file():
        state = json.loads(state_path.read_text())
        if state["tasks"] != tasks:
            raise UsageError(f"{out} holds a run split into --tasks {state['tasks']} (its finished tasks are kept); "
                             f"rerun with --tasks {state['tasks']}, or pass a new --out")
        old = state["stages"]
        changed = next((i for i, (a, b) in enumerate(zip(old, identities)) if a != b), min(len(old), len(identities)))
        if changed < max(len(old), len(identities)):
            for path in [*out.glob("[0-9][0-9]-*"), *(out / "work").glob("[0-9][0-9]-*"),
                         *(out / "logs").glob("[0-9][0-9]-*")]:
                if int(path.name[:2]) >= changed or path.name.endswith("-merge"):
                    shutil.rmtree(path) if path.is_dir() else path.unlink()  # a file: an older run's leftover
    write_json(state_path, {"tasks": tasks, "stages": identities,
                            "stage_names": [name for name, _ in stages]})


def check_endpoints(stages: list[tuple[str, dict]]) -> None:
    """A served model that cannot be reached fails now, in one line, not after every task's retries."""
    import urllib.error
    import urllib.request

    for i, (name, settings) in enumerate(stages):
        url = settings.get("base_url") if (name == "synthesize" or settings.get("annotator") == "llm") else None
        if not url:
            continue
        try:
            urllib.request.urlopen(url.rstrip("/") + "/models", timeout=10).close()
        except urllib.error.HTTPError:
            pass  # it answered (401, 404...): reachable; the stage reports what it says
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise UsageError(f"data.stages[{i}].base_url {url} is unreachable ({reason}); start the server "
                             "(e.g. `phi-eval serve MODEL --port P`) or fix base_url, then rerun") from None


def make_executor(kind: str, phase: Phase, logs: Path, workers: int, slurm: dict, depends=None):
    pipeline = [*phase.pipeline, Guard(logs / "errors")]
    if kind == "local":
        from datatrove.executor import LocalPipelineExecutor

        # fork: the workers start in milliseconds with what the driver built (Block.prepare: a model is
        # loaded once, not once per worker) and stay its children (their CPU time is counted). Safe
        # after the driver ran torch: a task sets torch to one thread before its first torch call
        # (blocks.Embed), as torch's DataLoader workers do.
        fork = "fork" in multiprocessing.get_all_start_methods()
        return LocalPipelineExecutor(pipeline, tasks=phase.tasks, workers=min(workers, phase.tasks),
                                     logging_dir=str(logs), start_method="fork" if fork else "spawn")
    if kind == "ray":
        from datatrove.executor.ray import RayPipelineExecutor

        workers = min(workers, phase.tasks)  # one actor per worker runs its share of the tasks: an actor
        return RayPipelineExecutor(pipeline, tasks=phase.tasks, workers=workers,  # is a new process
                                   tasks_per_job=-(-phase.tasks // workers), logging_dir=str(logs), cpus_per_task=1,
                                   mem_per_cpu_gb=slurm["mem_per_cpu_gb"])
    from datatrove.executor.slurm import SlurmPipelineExecutor

    return SlurmPipelineExecutor(pipeline, tasks=phase.tasks, time=slurm["time"], partition=slurm["partition"],
                                 workers=-1 if workers < 1 else workers, job_name=f"phi-eval-{phase.name}",
                                 logging_dir=str(logs), depends=depends, cpus_per_task=1,
                                 mem_per_cpu_gb=slurm["mem_per_cpu_gb"], env_command=slurm["env_command"])


def failed(phase: Phase, logs: Path, incomplete: list[int], error: BaseException | None) -> Exception:
    """The first task's UsageError as one line, or an internal error pointing at the task's log."""
    messages = [p.read_text() for p in sorted((logs / "errors").glob("*.txt"))]
    if messages:
        return UsageError(messages[0])
    where = f"{logs}/logs/task_{incomplete[0]:05d}.log" if incomplete else f"{logs}/logs/"
    return RuntimeError(f"phase {phase.name}: tasks {incomplete} did not finish ({error!r}); see {where}")


def run_phase(kind: str, phase: Phase, out: Path, workers: int, options: dict) -> bool:
    """Run what is left of the phase; False when every task had finished before."""
    if kind == "ray" and phase.tasks == 1:  # a global step reads small side files: the driver runs it, sparing
        kind = "local"                      # a Ray actor's start (a new process) per step
    logs = out / "logs" / phase.name
    shutil.rmtree(logs / "errors", ignore_errors=True)
    executor = make_executor(kind, phase, logs, workers, options)
    if not executor.get_incomplete_ranks():
        return False
    try:
        if kind == "local":
            for block in phase.pipeline:
                if isinstance(block, Block):
                    block.prepare()
        executor.run()
    except UsageError:
        raise
    except Exception as e:  # a task's failure: its own UsageError (errors/), or an internal error
        raise failed(phase, logs, executor.get_incomplete_ranks(), e) from None
    finally:
        WORKER_CACHE.clear()  # what tasks run in this process kept lives for one phase, as a worker does
    incomplete = executor.get_incomplete_ranks()
    if incomplete:  # Ray logs a failed task and goes on
        raise failed(phase, logs, incomplete, None)
    return True


def run_pipeline(stages: list[dict], out: Path, *, executor: str = "local", tasks: int = 1, workers: int = 1,
                 progress: bool = True, options: dict | None = None, output_format: str = "jsonl") -> dict | None:
    """Run the stages; the summary (OUT/pipeline.json), or None for Slurm (jobs submitted)."""
    from phi_eval.data.pipeline import resolve_stages

    options = {"partition": None, "time": "24:00:00", "mem_per_cpu_gb": 2, "env_command": None, **(options or {})}
    resolved = resolve_stages(stages, "data.stages")
    check(resolved)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    check_endpoints(resolved)
    prepare_out(out, resolved, tasks)
    phases, _ = plan(resolved, out, tasks, output_format,  # a Slurm global step is a 1-CPU job
                     threads=max(1, workers) if executor != "slurm" else 1)
    shutil.rmtree(out / "logs" / phases[-1].name, ignore_errors=True)  # the merge always runs: --format may differ
    quiet_console()
    if executor == "slurm":
        return submit_slurm(phases, out, workers, options, progress)
    if executor == "ray":
        import ray

        if not ray.is_initialized():
            ray.init(include_dashboard=False, log_to_driver=False)
    seconds, cpu, reused = {}, {}, []
    for phase in tqdm(phases, desc="data run", unit="phase", disable=not progress, file=sys.stderr):
        start, start_cpu = time.monotonic(), cpu_seconds()
        if not run_phase(executor, phase, out, workers, options):
            reused.append(phase.name)
        seconds[phase.name] = round(time.monotonic() - start, 3)  # ~0 for a phase finished before
        cpu[phase.name] = round(cpu_seconds() - start_cpu, 3)
    summary = {**json.loads((out / "pipeline.json").read_text()), "executor": executor, "workers": workers,
               "phase_seconds": seconds, "phases_reused": reused}  # reused: finished by an earlier run
    if executor == "local":  # its workers are this process's children, reaped when the phase ends
        summary["phase_cpu_seconds"] = cpu
    write_json(out / "pipeline.json", summary)
    return summary


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its children that ended."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def submit_slurm(phases: list[Phase], out: Path, workers: int, options: dict, progress: bool) -> None:
    if not options["partition"]:
        raise UsageError("--executor slurm needs --partition (the Slurm partition the jobs run on)")
    if not shutil.which("sbatch"):
        raise UsageError("--executor slurm needs `sbatch` on PATH; run on a Slurm login node, or use --executor local")
    if options["env_command"] is None:  # the jobs run `launch_pickled_pipeline` from this environment
        options = {**options, "env_command": f"source {Path(sys.prefix) / 'bin' / 'activate'}"}
    previous = None
    for phase in phases:
        previous = make_executor("slurm", phase, out / "logs" / phase.name, workers, options, depends=previous)
    previous.run()  # launches the chain: each phase's job array waits for the one before (afterok)
    if progress:
        print(f"submitted {len(phases)} Slurm job arrays; logs under {out / 'logs'}; the corpus will be "
              f"{out / 'corpus.jsonl'}", file=sys.stderr)
    return None
