"""Data stages chained from a recipe's `data.stages`, and the `phi-eval data STAGE` commands.

A stage is a mapping {"stage": NAME, setting: value, ...}. Stage i reads the output of stage
i-1 and writes WORK_DIR/NN-NAME.jsonl with NN-NAME.manifest.json beside it (inputs and their
hashes, settings, counts, the output's hash, the phi-eval version); a rerun skips every stage
whose manifest still matches, and a killed stage resumes from its progress table.
`run_stages` returns the last output, the corpus to train on, and writes WORK_DIR/pipeline.json
listing the stage manifests. On the command line the same settings are flags
(`keep_fraction` is `--keep-fraction`; lists take several values; booleans have --no-X).

Settings (default in brackets; * marks settings that do not change the output, so changing
them does not rerun a finished stage):

source (first stage only)
  inputs          directories, files, *.jsonl[.gz], hf:NAME[:CONFIG][@SPLIT]     (required)
  include         file-name patterns read from directories                       [["*.py"]]
  exclude_dirs    folder names skipped in directories        [["__pycache__", "site-packages", "node_modules"]]
  text_field      JSONL/dataset text field                         [first of text, content, code]
  hub_data_dir    `data_dir` of a hub dataset (The Stack: data/python)                   [none]
  max_docs, max_bytes   stop after this many documents / bytes of text                   [none]
  max_file_bytes  skip documents larger than this                                    [1000000]
annotate
  annotator       llm | heuristic (the offline baseline, phi_eval.data.heuristic) | file [llm]
  grades_file     with annotator file: grades recorded earlier (phi_eval.data.teacher)   [none]
  sample_size | sample_fraction   grade a seeded sample of this size / fraction          [all]
  seed [0], max_chars [6000], max_tokens [16], temperature [0]
  + the endpoint settings below (model is required for llm)
classify
  embed_model     model embedding the documents      [hf:Salesforce/codegen-350M-mono]
  label_threshold edu_score at or above it is "high value"                                 [6]
  test_fraction   held out for the agreement report, in (0, 1)                           [0.2]
  n_estimators [200], max_depth [none], seed [0], max_tokens [512], batch_size* [16], device* [auto]
filter
  keep_fraction   top fraction kept, in (0, 1]                                           [0.2]
  score_field     quality_score (from classify) or edu_score               [quality_score]
  min_score       also drop scores below this                                           [none]
synthesize
  kind            textbook | exercises                                              [textbook]
  count           requests (documents before dedup)                                 (required)
  seed [0], topics [basic coding concepts], audiences [10 built in], function_names [verb_noun]
  keep_input      with an input, output it first                                        [true]
  near_threshold  MinHash Jaccard that makes two outputs duplicates                       [0.8]
  embed_model     model for the embedding-spread statistic                    [none: skipped]
  max_tokens [1024], temperature [0.8]
  + the endpoint settings below (model is required)
append
  files           JSONL files appended after the corpus so far                       (required)
dedup
  exact [true], near [true], threshold (Jaccard, (0, 1]) [0.8], num_perm [128], shingle_size [5]
decontaminate
  tasks [humaneval, mbpp, gsm8k, commonsense], data_dir (benchmark files) [none], n [10],
  threshold (similarity confirming an n-gram hit, (0, 1]) [0.5]
endpoint settings (annotate, synthesize)
  model           the endpoint's model name                                  (required for LLM)
  base_url        OpenAI-compatible URL ending in /v1, e.g. `phi-eval serve`'s    [OpenAI's]
  api_key_env*    environment variable holding the key (never stored)         [OPENAI_API_KEY]
  api             chat | completions                                                    [chat]
  concurrency* [8], requests_per_minute* [0: no limit], max_retries* [5], backoff_seconds* [1],
  timeout_seconds* [120], price_per_1k_input* / price_per_1k_output* (USD, for the cost) [none],
  cache* [true]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from phi_eval.data import annotate, append, classify, decontaminate, dedup, filter as filter_stage, source, synthesize
from phi_eval.data.stage import Field, label, manifest_path, validate
from phi_eval.errors import UsageError

STAGES = {
    "source": (source.FIELDS, "gather files, JSONL or a hub dataset into JSONL documents"),
    "annotate": (annotate.FIELDS, "grade educational value 0-10 (LLM, or the offline heuristic baseline)"),
    "classify": (classify.FIELDS, "random forest on embeddings mimicking the grades; scores every document"),
    "filter": (filter_stage.FIELDS, "keep the top fraction by score"),
    "synthesize": (synthesize.FIELDS, "LLM-written textbook sections or exercises"),
    "dedup": (dedup.FIELDS, "drop exact and MinHash near duplicates"),
    "decontaminate": (decontaminate.FIELDS, "drop documents containing a benchmark item (n-grams, then similarity)"),
    "append": (append.FIELDS, "append the documents of JSONL files (data made once and kept)"),
}
NEEDS_INPUT = {"annotate", "classify", "filter", "dedup", "decontaminate", "append"}


def check_stage(name: str, settings: dict, where: str) -> dict:
    """One stage's settings, defaults filled in; UsageError naming the field."""
    resolved = validate(STAGES[name][0], settings, where)
    if name == "annotate":
        annotate.check(resolved, where)
    if name == "synthesize" and not resolved["model"]:
        raise UsageError(f"{label(where, 'model')}: required, expected the endpoint's model name")
    return resolved


def validate_stages(stages: list[dict], where: str) -> None:
    resolve_stages(stages, where)


def resolve_stages(stages: list[dict], where: str) -> list[tuple[str, dict]]:
    if not isinstance(stages, list) or not stages:
        raise UsageError(f"{where}: expected a non-empty list of stages, e.g. [{{stage: source, inputs: [src/]}}]")
    resolved = []
    for i, stage in enumerate(stages):
        at = f"{where}[{i}]"
        if not isinstance(stage, dict) or "stage" not in stage:
            raise UsageError(f"{at}: expected a mapping with a 'stage' key ({', '.join(STAGES)})")
        name = stage["stage"]
        if name not in STAGES:
            raise UsageError(f"{at}.stage: expected one of {', '.join(STAGES)} (got {name!r})")
        if name == "source" and i:
            raise UsageError(f"{at}.stage: source can only be the first stage")
        if name in NEEDS_INPUT and not i:
            raise UsageError(f"{at}.stage: {name} needs an earlier stage's output; start with source")
        resolved.append((name, check_stage(name, {k: v for k, v in stage.items() if k != "stage"}, at)))
    return resolved


def run_one(name: str, settings: dict, input_path: Path | None, output: Path, show_progress: bool) -> dict:
    if name == "source":
        return source.run_source(settings, output, show_progress=show_progress)
    runner = {"annotate": annotate.run_annotate, "classify": classify.run_classify, "filter": filter_stage.run_filter,
              "synthesize": synthesize.run_synthesize, "dedup": dedup.run_dedup,
              "decontaminate": decontaminate.run_decontaminate, "append": append.run_append}[name]
    return runner(settings, input_path, output, show_progress=show_progress)


def run_stages(stages: list[dict], work_dir: Path, progress: bool = True) -> Path:
    resolved = resolve_stages(stages, "data.stages")
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    work_dir = work_dir.resolve()  # a linked folder (seeds sharing one run, see train/compare.py) keeps its identities
    previous, summary = None, []
    for i, (name, settings) in enumerate(resolved):
        output = work_dir / f"{i:02d}-{name}.jsonl"
        manifest = run_one(name, settings, previous, output, progress)
        summary.append({"stage": name, "output": str(output), "manifest": str(manifest_path(output)),
                        "sha256": manifest["output"]["sha256"], "documents": manifest["output"]["documents"],
                        "skipped": manifest["skipped"]})
        if progress:
            print(summary_line(name, manifest), file=sys.stderr)
        previous = output
    (work_dir / "pipeline.json").write_text(json.dumps({"stages": summary, "corpus": str(previous)}, indent=2) + "\n")
    return previous


def summary_line(name: str, manifest: dict) -> str:
    state = "skipped (already done)" if manifest["skipped"] else f"{manifest['wall_seconds']:.1f} s"
    return f"{name}: {manifest['output']['documents']:,} documents -> {manifest['output']['path']} [{state}]"


# ------------------------------------------------------------------------------- command line

def add_parsers(commands) -> None:
    """`phi-eval data STAGE ...` beside `data decontaminate`; flags generated from the stages' fields."""
    for name, (fields, description) in STAGES.items():
        if name == "decontaminate":  # `data decontaminate` is the contamination package's command (drop or mask)
            continue
        parser = commands.add_parser(name, help=description, description=f"{description}. Settings: see "
                                     "phi_eval/data/pipeline.py or the README.")
        if name == "source":
            parser.add_argument("inputs", nargs="+", metavar="SRC", help=fields["inputs"].help)
        else:
            parser.add_argument("--input", type=Path, required=name in NEEDS_INPUT,
                                help="JSONL output of an earlier stage")
        parser.add_argument("--out", type=Path, required=True, help="output JSONL (manifest: OUT.manifest.json)")
        parser.add_argument("--quiet", action="store_true", help="no progress bars")
        for field, spec in fields.items():
            if field == "inputs":
                continue
            add_flag(parser, field, spec)


def add_flag(parser, field: str, spec: Field) -> None:
    flag = f"--{field.replace('_', '-')}"
    default = "" if spec.default is None else f" (default: {spec.default})"
    help_text = (spec.help + default).replace("%", "%%")
    if spec.kind == "bool":
        parser.add_argument(flag, dest=field, action=argparse.BooleanOptionalAction, default=None, help=help_text)
    elif spec.kind == "strs":
        parser.add_argument(flag, dest=field, nargs="+", default=None, help=help_text)
    else:
        kind = {"int": int, "number": float, "fraction": float, "open_fraction": float}.get(spec.kind, str)
        parser.add_argument(flag, dest=field, type=kind, default=None, help=help_text,
                            choices=spec.choices or None)


def run_command(args) -> None:
    name = args.data_command
    fields = STAGES[name][0]
    settings = {field: getattr(args, field) for field in fields if getattr(args, field, None) is not None}
    resolved = check_stage(name, settings, "--")
    input_path = getattr(args, "input", None)
    manifest = run_one(name, resolved, input_path, args.out, not args.quiet)
    print(summary_line(name, manifest))
    print(f"manifest: {manifest_path(args.out)}")
