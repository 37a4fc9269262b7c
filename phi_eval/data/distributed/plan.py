"""A recipe's `data.stages` as a list of datatrove phases, each one executor run.

Stage i (NN = i, two digits) writes its documents to OUT/NN-STAGE/NNNNN.jsonl (one shard per
task), its side files and decisions to OUT/work/NN-STAGE/, and each of its phases logs, stats
and completion markers to OUT/logs/NN-STAGE-PHASE/. Per stage:

    source         one phase: the input files dealt to the tasks
    annotate       heuristic: one phase (sampled: hashes -> global sample cut -> grade);
                   file: one phase (recorded grades); llm: run whole (one task: its request
                   loop resumes itself)
    classify       embed -> train one forest (graded documents, in corpus order) -> score
    filter         scores -> global cut -> keep
    synthesize     run whole (one task)
    append         one phase: the shards, then a share of the files' documents each
    dedup          signatures -> decide (in corpus order) -> drop
    decontaminate  load the benchmark items -> check (n-gram candidates confirmed by similarity)
and a last phase merges the final corpus into OUT/corpus.jsonl, in corpus order (shards.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from phi_eval.data.distributed import blocks, reduce
from phi_eval.data.distributed.shards import ShardReader, shard_writer
from phi_eval.data.stage import label

WHOLE = {"synthesize"}


@dataclass
class Phase:
    name: str  # NN-STAGE-PHASE, its logging folder's name
    tasks: int
    pipeline: list


def check(stages: list[tuple[str, dict]]) -> None:
    """What a split run cannot do the way a single process does."""
    from phi_eval.errors import UsageError

    for i, (name, settings) in enumerate(stages):
        if name == "decontaminate":  # found now, not after the stages before it ran
            from phi_eval.data.decontaminate import checked_data_dir

            checked_data_dir(settings)
        for field, path in side_inputs(name, settings):
            if not Path(path).is_file():
                raise UsageError(f"{label(f'data.stages[{i}]', field)}: {path} is not a file; fix the path (relative "
                                 "paths start from the folder you run in)")
        for cap in ("max_docs", "max_bytes"):
            if name == "source" and settings.get(cap) is not None:
                raise UsageError(f"{label(f'data.stages[{i}]', cap)}: not supported by `phi-eval data run` (a cap "
                                 "on the total depends on how the inputs are split); limit the inputs instead")


def side_inputs(name: str, settings: dict) -> list[tuple[str, str]]:
    """(setting, path) of the files a stage reads besides the stage before it."""
    if name == "append":
        return [("files", f) for f in settings["files"]]
    if name == "annotate" and settings["annotator"] == "file":
        return [("grades_file", settings["grades_file"])]
    return []


def plan(stages: list[tuple[str, dict]], out: Path, tasks: int, output_format: str = "jsonl",
         threads: int = 1) -> tuple[list[Phase], dict]:
    """The phases, and the summary skeleton MergeCorpus fills in (OUT/pipeline.json); `threads`: the
    cores a global step in the driver may use (classify's forest)."""
    phases, summary, previous = [], {"tasks": tasks, "stages": []}, None
    for i, (name, settings) in enumerate(stages):
        tag = f"{i:02d}-{name}"
        output, work = out / tag, out / "work" / tag
        fix = f"remove {output} and {out / 'logs'}/{tag}-* to recompute that stage, or use a new --out"
        mine = stage_phases(i, name, settings, previous, output, work, tasks, fix, threads)
        phases += [Phase(f"{tag}-{phase}", n, pipeline) for phase, n, pipeline in mine]
        summary["stages"].append({"stage": name, "settings": settings, "output": str(output),
                                  "reports": {r: str(work / f"{r}.json") for r in REPORTS.get(name, ())},
                                  "logs": {f"{tag}-{p}": str(out / "logs" / f"{tag}-{p}") for p, _, _ in mine}})
        previous = output
    phases.append(Phase(f"{len(stages):02d}-merge", 1, [reduce.MergeCorpus(previous, out, summary, output_format)]))
    return phases, summary


REPORTS = {"annotate": ("sample-cut",), "filter": ("cut",), "dedup": ("report",), "classify": ("report",),
           "synthesize": ("report",)}


def stage_phases(index: int, name: str, settings: dict, previous: Path | None, output: Path, work: Path,
                 tasks: int, fix: str, threads: int = 1) -> list[tuple[str, int, list]]:
    def read():
        return ShardReader(previous, fix)

    if name == "source":
        return [("read", tasks, [blocks.SourceFiles(settings), shard_writer(output)])]
    if name in WHOLE or (name == "annotate" and settings["annotator"] == "llm"):
        return [("whole", 1, [reduce.WholeStage(name, index, settings, previous, output, work, tasks)])]
    if name == "annotate" and settings["annotator"] == "file":
        return [("grade", tasks, [read(), blocks.ReplayGrades(settings["grades_file"]), shard_writer(output)])]
    if name == "append":
        return [("append", tasks, [read(), blocks.AppendFiles(index, settings["files"]), shard_writer(output)])]
    if name == "annotate":
        sampled = settings["sample_size"] is not None or settings["sample_fraction"] is not None
        grade = ("grade", tasks, [read(), blocks.Annotate(settings, work / "sample-cut.json" if sampled else None),
                                  shard_writer(output)])
        if not sampled:
            return [grade]
        return [("sample", tasks, [read(), blocks.CollectSampleKeys(work / "sample")]),
                ("sample-cut", 1, [reduce.SampleCut(settings, work / "sample", work / "sample-cut.json")]), grade]
    if name == "classify":
        return [("embed", tasks, [read(), blocks.Embed(settings, work / "embeddings")]),
                ("train", 1, [reduce.TrainForest(settings, work / "embeddings", work / "forest.pkl",
                                                 work / "report.json", threads)]),
                ("score", tasks, [read(), blocks.Score(work / "embeddings", work / "forest.pkl"),
                                  shard_writer(output)])]
    if name == "filter":
        field = settings["score_field"]
        return [("scores", tasks, [read(), blocks.CollectScores(field, work / "scores")]),
                ("cut", 1, [reduce.FilterCut(settings, work / "scores", work / "cut.json")]),
                ("keep", tasks, [read(), blocks.ApplyCut(field, work / "cut.json"), shard_writer(output)])]
    if name == "dedup":
        return [("signatures", tasks, [read(), blocks.Signatures(settings, work / "signatures")]),
                ("decide", 1, [reduce.DedupDecide(settings, work / "signatures", work / "drops.json",
                                                  work / "report.json")]),
                ("drop", tasks, [read(), blocks.DropKeys(work / "drops.json"), shard_writer(output)])]
    if name == "decontaminate":  # the items loaded once; every task then reads one small file
        items = work / "benchmarks.json"
        return [("items", 1, [reduce.LoadItems(settings, items)]),
                ("check", tasks, [read(), blocks.Decontaminate(settings, items, work / "dropped"),
                                  shard_writer(output)])]
    raise AssertionError(f"no phases for stage {name}")
