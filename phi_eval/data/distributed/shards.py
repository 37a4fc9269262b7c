"""Sharded JSONL between the blocks, the stable document key, and per-task side files.

A stage's output is a folder of `NNNNN.jsonl` shards, one per task, each line a phi-eval
document ({"id", "text", ...metadata}) as the single-process stages write them. Reading is
strict: a line that is not a JSON object with a string "text" stops the task with one line
naming the shard, the line and the fix (datatrove's own reader skips such lines with a warning,
which would lose documents silently).

Global decisions (the filter's cut and its ties, the dedup's survivors, classify's training order,
the annotation sample) are made on `key(document)` = (corpus order, text hash): unique, independent
of how the corpus was split, and in the order the single-process stages see the documents. The
corpus order is a field of every document in the shards, `_order` = "STAGE.UNIT.ROW" (zero-padded,
so it sorts as text): the stage that brought the document in (source, append, synthesize), the
input unit (a file, a hub stream) in the single-process stage's order, and the row within it.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterator

from datatrove.data import Document
from datatrove.pipeline.readers.jsonl import JsonlReader
from datatrove.pipeline.writers.jsonl import JsonlWriter

from phi_eval.errors import UsageError


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


ORDER = "_order"


def order_of(stage: int, unit: int, row: int) -> str:
    return f"{stage:03d}.{unit:010d}.{row:010d}"


def key(document: Document) -> tuple[str, str]:
    return str(document.metadata.get(ORDER, document.id)), text_hash(document.text)


def record(document: Document, order: bool = True) -> dict:
    """The phi-eval document; without `_order` for the final corpus (the single-process stages' form)."""
    metadata = document.metadata if order else {k: v for k, v in document.metadata.items() if k != ORDER}
    return {"id": document.id, "text": document.text, **metadata}


def bucket(doc_key: tuple[str, str], buckets: int) -> int:
    """The shard a document goes to when a whole-corpus step writes shards itself."""
    return int(hashlib.sha256("\t".join(doc_key).encode()).hexdigest()[:8], 16) % buckets


class ShardReader(JsonlReader):
    """The previous stage's shards; a bad line is a UsageError naming it."""

    name = "phi-eval shards"

    def __init__(self, folder: Path, fix: str):
        super().__init__(str(folder), compression=None, glob_pattern="*.jsonl", add_file_path=False, recursive=False)
        self.fix = fix

    def read_file(self, filepath: str) -> Iterator[Document]:
        import orjson

        with self.data_folder.open(filepath, "rb") as f:
            for number, line in enumerate(f, 1):
                where = f"{self.data_folder.resolve_paths(filepath)}:{number}"
                try:
                    data = orjson.loads(line)
                except orjson.JSONDecodeError:
                    raise UsageError(f"{where} is not valid JSON (a corrupt shard); {self.fix}") from None
                if not isinstance(data, dict) or not isinstance(data.get("text"), str):
                    raise UsageError(f"{where} has no string \"text\" field; {self.fix}")
                with self.track_time():
                    text, doc_id = data.pop("text"), str(data.pop("id", f"{filepath}/{number}"))
                yield Document(text=text, id=doc_id, metadata=data)


def shard_writer(folder: Path) -> JsonlWriter:
    """One plain `NNNNN.jsonl` per task; metadata written as top-level fields (phi-eval documents)."""
    return JsonlWriter(str(folder), output_filename="${rank}.jsonl", compression=None, expand_metadata=True)


def shard_files(folder: Path) -> list[Path]:
    return sorted(Path(folder).glob("*.jsonl"))


def read_shards(folder: Path, fix: str) -> Iterator[Document]:
    reader = ShardReader(folder, fix)
    for path in shard_files(folder):
        yield from reader.read_file(path.name)


# ------------------------------------------------------------------------------- side files

def side_file(folder: Path, rank: int, suffix: str = ".jsonl") -> Path:
    return Path(folder) / f"{rank:05d}{suffix}"


def write_atomically(path: Path, lines: list) -> None:
    """A task's side file appears whole or not at all (a killed task reruns and rewrites it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".writing")
    with open(partial, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    os.replace(partial, path)


def read_side_files(folder: Path, suffix: str = ".jsonl") -> Iterator[list]:
    for path in sorted(Path(folder).glob(f"*{suffix}")):
        with open(path, encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)


def write_json(path: Path, data: dict | list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".writing")
    partial.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(partial, path)
