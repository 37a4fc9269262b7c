"""Corpus sources, streamed one document at a time.

A source is a directory (every file below it, in sorted order), a file, or `hf:NAME[:CONFIG][@SPLIT]`
(a hub dataset streamed through `datasets`; NAME may be a local dataset folder). Files ending in
.jsonl or .jsonl.gz hold one document per line (the text in --text-field, default the
first of text/content/code); any other file is one document, skipped when it looks binary.
Documents are named so a report can point at them: `PATH` for a plain file, `PATH:LINE` for a JSONL
record, `hf:NAME@SPLIT#ROW` for a hub row.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from phi_eval.errors import UsageError
from phi_eval.jsonl import json_objects

TEXT_FIELDS = ("text", "content", "code")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")


@dataclass
class Document:
    name: str
    text: str
    record: dict | None = None  # the JSONL record or dataset row it came from
    field: str | None = None  # the record's text field


def parse_shard(value: str | None) -> tuple[int, int]:
    """"I/N" -> (I, N); keeps the documents whose running index is I mod N."""
    if not value:
        return 0, 1
    index, _, count = value.partition("/")
    if not (index.isdigit() and count.isdigit()) or not 0 <= int(index) < int(count):
        raise UsageError(f"--shard {value!r} must be I/N with 0 <= I < N, e.g. 0/4")
    return int(index), int(count)


def check_sources(sources: list[str]) -> None:
    if not sources:
        raise UsageError("no corpus given; pass --corpus FILE_OR_DIR [...] (text, JSONL, or hf:DATASET)")
    for source in sources:
        if not source.startswith("hf:") and not Path(source).exists():
            raise UsageError(f"corpus source {source} does not exist; pass files, folders, or hf:DATASET")


def source_identity(sources: list[str]) -> list:
    """What an index was built from: each file's path, size and mtime (a changed corpus gets a new index)."""
    identity = []
    for source in sources:
        if source.startswith("hf:"):
            identity.append(source)
            continue
        for path in files_of(Path(source)):
            stat = path.stat()
            identity.append([str(path.resolve()), stat.st_size, stat.st_mtime_ns])
    return identity


def files_of(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.is_file())


def iter_documents(sources: list[str], text_field: str | None = None, shard: tuple[int, int] = (0, 1)
                   ) -> Iterator[Document]:
    check_sources(sources)
    index, count = shard
    seen = 0
    for source in sources:
        documents = iter_hub(source[3:], text_field) if source.startswith("hf:") else iter_path(Path(source), text_field)
        for document in documents:
            if seen % count == index:
                yield document
            seen += 1


def iter_path(root: Path, text_field: str | None) -> Iterator[Document]:
    for path in files_of(root):
        if path.name.endswith(JSONL_SUFFIXES):
            yield from iter_jsonl(path, text_field)
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:  # binary: not text a model was trained on
            continue
        text = data.decode("utf-8", errors="replace")
        if text.strip():
            yield Document(str(path), text)


def iter_jsonl(path: Path, text_field: str | None) -> Iterator[Document]:
    for where, record in json_objects(path):
        if record is None:
            raise UsageError(f"{where} is not a JSON object; JSONL corpora hold one object per line")
        field = pick_field(record, text_field, where)
        yield Document(where, record[field], record, field)


def pick_field(record: dict, text_field: str | None, where: str) -> str:
    for field in (text_field,) if text_field else TEXT_FIELDS:
        if isinstance(record.get(field), str):
            return field
    wanted = text_field or " or ".join(TEXT_FIELDS)
    raise UsageError(f"{where} has no string field {wanted}; pass --text-field NAME")


def iter_hub(spec: str, text_field: str | None) -> Iterator[Document]:
    import datasets

    spec, _, split = spec.partition("@")
    name, _, config = spec.partition(":")
    split = split or "train"
    try:
        rows = datasets.load_dataset(name, config or None, split=split, streaming=True)
    except Exception as e:  # datasets raises many types for "no network", "no such dataset", "no such split"
        raise UsageError(f"cannot stream dataset hf:{spec}@{split} ({type(e).__name__}: "
                         f"{' '.join(str(e).split())[:160]}); check the name, config and split") from None
    for row_number, row in enumerate(rows):
        field = pick_field(row, text_field, f"hf:{spec}@{split}#{row_number}")
        yield Document(f"hf:{spec}@{split}#{row_number}", row[field], dict(row), field)
