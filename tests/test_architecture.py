"""The code's layers run one way and no module imports itself back, lazy imports included.

face (cli, app) -> harness (evaluate, train, contamination, data, serve, report) -> tasks -> steps, metrics
-> models, execution -> common (errors, paths, jsonl, cache, zoo, task names). A module may import its
own layer (without cycles) or any layer below it."""
import ast
from pathlib import Path

from phi_eval.paths import PROJECT_ROOT

LAYERS = {
    "common": ["errors", "paths", "textfiles", "jsonl", "cache", "schema", "zoo", "task_names", "distributed"],
    "backends": ["models", "execution"],
    "scoring": ["steps", "metrics"],
    "tasks": ["tasks"],
    "harness": ["evaluate", "train", "contamination", "data", "serve", "report"],
    "face": ["cli", "argtypes", "app"],
}
RANK = {unit: rank for rank, units in enumerate(LAYERS.values()) for unit in units}


def module_names() -> dict[str, Path]:
    names = {}
    for path in (PROJECT_ROOT / "phi_eval").rglob("*.py"):
        parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imports(module: str, path: Path, modules: dict) -> set[str]:
    """The phi_eval modules `module` imports anywhere in its body. `from pkg import sub` counts as sub
    only: importing a submodule needs its package, which is not a dependency of the importer's design."""
    found = set()
    for node in runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = module.split(".")[: None if path.name == "__init__.py" else -1]
            prefix = ".".join(base[: len(base) - node.level + 1] + [node.module or ""]) if node.level else node.module
            prefix = prefix.rstrip(".")
            subs = {f"{prefix}.{alias.name}" for alias in node.names} & modules.keys()
            found |= subs or {prefix}
    return {name for name in found if name in modules and name != module}


def runtime_nodes(tree):
    """Every node but those under `if TYPE_CHECKING:` (imports for annotations only never run)."""
    skipped = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
               and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
               for stmt in block.body for n in ast.walk(stmt)}
    return (node for node in ast.walk(tree) if id(node) not in skipped)


def graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imports(name, path, modules) for name, path in modules.items()}


def unit(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def test_no_import_cycles():
    edges, seen, done, cycles = graph(), set(), set(), []

    def visit(node, trail):
        seen.add(node)
        for target in edges[node]:
            if target in trail:
                cycles.append(trail[trail.index(target):] + [target])
            elif target not in done and target not in seen:
                visit(target, trail + [target])
        done.add(node)

    for node in edges:
        if node not in seen:
            visit(node, [node])
    assert not cycles, cycles


def test_layers_run_one_way():
    edges = graph()
    assert {unit(m) for m in edges if unit(m)} <= set(RANK), "give every phi_eval unit a layer"
    upward = [(source, target) for source, targets in edges.items() for target in targets
              if unit(source) and unit(target) and RANK[unit(target)] > RANK[unit(source)]]
    assert not upward, upward


def test_app_launcher_is_tiny_and_cli_does_not_import_it():
    launcher = (PROJECT_ROOT / "app.py").read_text()
    assert len(launcher.splitlines()) <= 20
    assert "import app" not in (PROJECT_ROOT / "phi_eval" / "cli.py").read_text()
