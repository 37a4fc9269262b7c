"""Running one data stage so that a rerun skips it and a killed run resumes.

- `Field` / `validate`: the settings a stage takes, checked with errors that name the field
  (`data.stages[2].keep_fraction: expected a number in (0, 1]`, or `--keep-fraction: ...` on the
  command line).
- `Progress`: an SQLite table of finished work units (a document annotated, a textbook written),
  each committed with the records it produced, so `kill -9` loses at most the units in flight.
- `run_stage`: skips the stage when the manifest beside its output has the same identity (stage,
  output-changing settings, hashes of the inputs, phi-eval version) and the output still has the
  hash the manifest recorded; otherwise runs it and writes the output (atomically) and the manifest.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Callable, Iterable, Iterator

from phi_eval.errors import UsageError
from phi_eval.jsonl import json_objects


# ------------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class Field:
    kind: str  # int, number, fraction (0, 1], open_fraction (0, 1), bool, str, strs, choice
    default: object = None
    help: str = ""
    choices: tuple = ()
    minimum: float | None = None  # for int and number
    required: bool = False
    affects_output: bool = True  # False: concurrency, rate limits, retries... a change does not rerun the stage

    def expected(self) -> str:
        if self.kind == "int":
            return f"an integer >= {self.minimum:g}" if self.minimum is not None else "an integer"
        if self.kind == "number":
            return f"a number >= {self.minimum:g}" if self.minimum is not None else "a number"
        return {"fraction": "a number in (0, 1]", "open_fraction": "a number in (0, 1)", "bool": "true or false",
                "str": "a non-empty string", "strs": "a list of non-empty strings",
                "choice": "one of " + ", ".join(map(str, self.choices))}[self.kind]

    def accepts(self, value) -> bool:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if self.kind == "int":
            return isinstance(value, int) and not isinstance(value, bool) and (
                self.minimum is None or value >= self.minimum)
        if self.kind == "number":
            return number and (self.minimum is None or value >= self.minimum)
        if self.kind == "fraction":
            return number and 0 < value <= 1
        if self.kind == "open_fraction":
            return number and 0 < value < 1
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "str":
            return isinstance(value, str) and bool(value.strip())
        if self.kind == "strs":
            return isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value)
        return value in self.choices


def label(where: str, name: str) -> str:
    """`data.stages[2].keep_fraction` in a recipe, `--keep-fraction` on the command line (where="--")."""
    return f"--{name.replace('_', '-')}" if where == "--" else f"{where}.{name}"


def validate(fields: dict[str, Field], settings: dict, where: str) -> dict:
    """The settings with defaults filled in; UsageError naming the first bad or unknown field."""
    for name in settings:
        if name not in fields:
            raise UsageError(f"{label(where, name)}: unknown setting; known: {', '.join(sorted(fields))}")
    resolved = {}
    for name, spec in fields.items():
        value = settings.get(name)
        if value is None:
            if spec.required:
                raise UsageError(f"{label(where, name)}: required, expected {spec.expected()}")
            resolved[name] = spec.default
            continue
        if not spec.accepts(value):
            raise UsageError(f"{label(where, name)}: expected {spec.expected()} (got {value!r})")
        resolved[name] = value
    return resolved


# ------------------------------------------------------------------------------- documents

def read_documents(path: Path) -> Iterator[dict]:
    for where, record in json_objects(Path(path)):
        if record is None or not isinstance(record.get("text"), str):
            raise UsageError(f"{where} is not a JSON object with a string \"text\"; stage inputs are JSONL "
                             "documents such as `phi-eval data source` writes")
        yield record


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_path(output: Path) -> Path:
    return Path(output).with_suffix(".manifest.json")


def phi_eval_version() -> str:
    try:
        return version("phi-eval")
    except PackageNotFoundError:
        return "unknown"


# ------------------------------------------------------------------------------- progress

class Progress:
    """Finished units of a stage's work, committed as they finish (SQLite, WAL).

    Work done under another identity (other settings or inputs) is discarded on open. Cheap
    units are committed in groups of `flush_every` or every `flush_seconds`; a kill loses
    at most that group, which the rerun recomputes."""

    def __init__(self, path: Path, identity: str, flush_every: int = 1, flush_seconds: float = 2.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);"
                               "CREATE TABLE IF NOT EXISTS done (unit INTEGER PRIMARY KEY, records TEXT NOT NULL,"
                               " info TEXT);")
        row = self._db.execute("SELECT value FROM meta WHERE key = 'identity'").fetchone()
        with self._db:
            if row is None or row[0] != identity:
                self._db.execute("DELETE FROM done")
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('identity', ?)", (identity,))
        self.flush_every, self.flush_seconds = flush_every, flush_seconds
        self._buffer: list[tuple] = []
        self._last_flush = time.monotonic()
        self.resumed = len(self.units())

    def units(self) -> set[int]:
        return {unit for (unit,) in self._db.execute("SELECT unit FROM done")}

    def add(self, unit: int, records: list[dict], info: dict | None = None) -> None:
        self._buffer.append((unit, json.dumps(records, ensure_ascii=False),
                             None if info is None else json.dumps(info)))
        if len(self._buffer) >= self.flush_every or time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            with self._db:
                self._db.executemany("INSERT OR REPLACE INTO done VALUES (?, ?, ?)", self._buffer)
            self._buffer = []
        self._last_flush = time.monotonic()

    def records(self) -> Iterator[dict]:
        self.flush()
        for (records,) in self._db.execute("SELECT records FROM done ORDER BY unit"):
            yield from json.loads(records)

    def results(self) -> dict[int, list[dict]]:
        self.flush()
        return {unit: json.loads(records) for unit, records in self._db.execute("SELECT unit, records FROM done")}

    def infos(self) -> Iterator[dict]:
        self.flush()
        for (info,) in self._db.execute("SELECT info FROM done WHERE info IS NOT NULL ORDER BY unit"):
            yield json.loads(info)

    def remove(self) -> None:
        self._db.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)


# ------------------------------------------------------------------------------- one stage

@dataclass
class StageRun:
    """What a stage body gets: its output, its progress table, and whether to show bars."""
    output: Path
    progress: Progress
    show_progress: bool
    written: dict = field(default_factory=dict)

    def write(self, records: Iterable[dict]) -> None:
        """The stage's output, written atomically; counts and hash go into the manifest."""
        self.output.parent.mkdir(parents=True, exist_ok=True)
        partial = self.output.with_name(self.output.name + ".writing")
        digest, documents, size = hashlib.sha256(), 0, 0
        with open(partial, "wb") as f:
            for record in records:
                line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
                f.write(line)
                digest.update(line)
                documents += 1
                size += len(line)
        os.replace(partial, self.output)
        self.written = {"path": str(self.output), "sha256": digest.hexdigest(), "documents": documents,
                        "bytes": size}


def identity_of(stage: str, fields: dict[str, Field], settings: dict, inputs: list) -> str:
    kept = {k: v for k, v in settings.items() if fields[k].affects_output}
    return hashlib.sha256(json.dumps([stage, kept, inputs, phi_eval_version()], sort_keys=True,
                                     default=str).encode()).hexdigest()


def finished_manifest(output: Path, identity: str) -> dict | None:
    path = manifest_path(output)
    if not (path.exists() and output.exists()):
        return None
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    if manifest.get("identity") != identity or manifest.get("output", {}).get("sha256") != file_sha256(output):
        return None
    return manifest


def run_stage(stage: str, fields: dict[str, Field], settings: dict, inputs: list[dict], output: Path,
              body: Callable[[StageRun], dict], *, show_progress: bool = True, flush_every: int = 1) -> dict:
    """Run `body` unless a finished manifest matches; `inputs` are [{"path", "sha256"|"fingerprint", ...}].

    Returns the manifest; `skipped` is true when the stage did not run."""
    output = Path(output)
    identity = identity_of(stage, fields, settings, inputs)
    done = finished_manifest(output, identity)
    if done is not None:
        if show_progress:
            print(f"{stage}: already done ({manifest_path(output)}), skipped", file=sys.stderr)
        return {**done, "skipped": True}
    progress = Progress(output.with_name(output.name + ".progress.sqlite"), identity, flush_every=flush_every)
    if progress.resumed and show_progress:
        print(f"{stage}: resuming, {progress.resumed:,} units already done", file=sys.stderr)
    start, started_at = time.monotonic(), datetime.now(timezone.utc)
    run = StageRun(output, progress, show_progress)
    try:
        report = body(run)
    except BaseException:
        progress.flush()
        if not progress.units():  # nothing to resume from: leave no clutter beside the output
            progress.remove()
        raise
    if not run.written:
        raise RuntimeError(f"stage {stage} finished without writing its output")
    manifest = {"stage": stage, "phi_eval_version": phi_eval_version(), "identity": identity,
                "started_at": started_at.isoformat(timespec="seconds"),
                "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "wall_seconds": round(time.monotonic() - start, 3), "settings": settings, "inputs": inputs,
                "output": run.written, "resumed_units": progress.resumed, **report}
    path = manifest_path(output)
    partial = path.with_name(path.name + ".writing")
    partial.write_text(json.dumps(manifest, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(partial, path)
    progress.remove()
    return {**manifest, "skipped": False}


def jsonl_input(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"input {path} does not exist; pass the JSONL output of an earlier stage")
    return {"path": str(path), "sha256": file_sha256(path)}
