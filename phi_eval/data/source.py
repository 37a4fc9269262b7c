"""The `source` stage: gather a corpus into JSONL documents, within size limits.

Inputs are directories (every file below matching `include`, in sorted order, skipping hidden
folders and `exclude_dirs`), single files, JSONL files (`*.jsonl`, `*.jsonl.gz`: one document
a line, text in `text_field`, default the first of text/content/code; the other fields are kept),
or hub datasets `hf:NAME[:CONFIG][@SPLIT]` streamed through `datasets` (e.g.
`hf:bigcode/the-stack-dedup` with `hub_data_dir: data/python`; every other column, license
included, is kept). Each output document is {"id", "text", "source", ...metadata}. Binary and
non-UTF-8 files, empty documents and documents over `max_file_bytes` are skipped and counted;
reading stops at `max_docs` documents or `max_bytes` bytes of text.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from pathlib import Path
from typing import Iterator

from tqdm.auto import tqdm

from phi_eval.data.stage import Field, StageRun, run_stage
from phi_eval.errors import UsageError
from phi_eval.jsonl import json_objects

TEXT_FIELDS = ("text", "content", "code")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")

FIELDS = {
    "inputs": Field("strs", required=True, help="directories, files, *.jsonl[.gz], or hf:NAME[:CONFIG][@SPLIT]"),
    "include": Field("strs", ["*.py"], help="file-name patterns read from directories (default: *.py)"),
    "exclude_dirs": Field("strs", ["__pycache__", "site-packages", "node_modules"],
                          help="folder names skipped inside directories (hidden folders always are)"),
    "text_field": Field("str", help="JSONL/dataset field with the text (default: text, content or code)"),
    "hub_data_dir": Field("str", help="`data_dir` of a hub dataset, e.g. data/python for The Stack"),
    "max_docs": Field("int", minimum=1, help="stop after this many documents"),
    "max_bytes": Field("int", minimum=1, help="stop after this many bytes of text"),
    "max_file_bytes": Field("int", 1_000_000, minimum=1, help="skip documents larger than this (default 1 MB)"),
}


def offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def check_inputs(inputs: list[str]) -> None:
    for source in inputs:
        if source.startswith("hf:"):
            if offline():
                raise UsageError(f"source {source} streams from the Hugging Face hub, but HF_HUB_OFFLINE/"
                                 "HF_DATASETS_OFFLINE is set; unset it, or source a local directory or JSONL file")
        elif not Path(source).exists():
            raise UsageError(f"source {source} does not exist; pass directories, files, JSONL or hf:DATASET")


def fingerprint(source: str, settings: dict) -> dict:
    """What a source was at run time: a hub name, or each file's path, size and mtime."""
    if source.startswith("hf:"):
        return {"path": source, "hub_data_dir": settings["hub_data_dir"]}
    files = [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in files_of(Path(source), settings)]
    digest = hashlib.sha256(json.dumps(files).encode()).hexdigest()
    return {"path": str(Path(source).resolve()), "files": len(files), "fingerprint": digest}


def files_of(root: Path, settings: dict) -> list[Path]:
    if root.is_file():
        return [root]
    found = []
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith(".") and d not in settings["exclude_dirs"])
        found += [Path(directory) / n for n in names
                  if any(fnmatch.fnmatch(n, pattern) for pattern in settings["include"])]
    return sorted(found)


def pick_field(record: dict, text_field: str | None, where: str) -> str:
    for name in (text_field,) if text_field else TEXT_FIELDS:
        if isinstance(record.get(name), str):
            return name
    raise UsageError(f"{where} has no string field {text_field or ' or '.join(TEXT_FIELDS)}; set text_field")


def candidates(source: str, settings: dict) -> Iterator[tuple[dict | None, str | None]]:
    """(document, None) or (None, why it was skipped) for each candidate of one source."""
    if source.startswith("hf:"):
        yield from hub_rows(source, settings)
        return
    for path in files_of(Path(source), settings):
        if path.name.endswith(JSONL_SUFFIXES):
            for where, record in json_objects(path):
                if record is None:
                    raise UsageError(f"{where} is not a JSON object; JSONL sources hold one object a line")
                name = pick_field(record, settings["text_field"], where)
                meta = {k: v for k, v in record.items() if k != name}
                yield {**meta, "id": str(record.get("id", where)), "text": record[name], "source": where}, None
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            yield None, "binary"
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            yield None, "not_utf8"
            continue
        yield {"id": str(path), "text": text, "source": str(path)}, None


def hub_rows(source: str, settings: dict) -> Iterator[tuple[dict | None, str | None]]:
    import datasets

    spec, _, split = source[3:].partition("@")
    name, _, config = spec.partition(":")
    split = split or "train"
    try:
        rows = datasets.load_dataset(name, config or None, split=split, streaming=True,
                                     data_dir=settings["hub_data_dir"])
    except Exception as e:  # datasets raises many types for no network, no such dataset, gated, no such split
        raise UsageError(f"cannot stream {source} ({type(e).__name__}: {' '.join(str(e).split())[:160]}); check "
                         "the name, config, split and network, or source a local directory") from None
    for number, row in enumerate(rows):
        where = f"{source}#{number}"
        field_name = pick_field(row, settings["text_field"], where)
        meta = json.loads(json.dumps({k: v for k, v in row.items() if k != field_name}, default=str))
        yield {**meta, "id": str(row.get("id", where)), "text": row[field_name], "source": where}, None


def run_source(settings: dict, output: Path, *, show_progress: bool = True) -> dict:
    check_inputs(settings["inputs"])
    inputs = [fingerprint(s, settings) for s in settings["inputs"]]

    def body(run: StageRun) -> dict:
        done = run.progress.units()
        documents = sum(1 for _ in run.progress.records())
        size = sum(len(r["text"].encode("utf-8")) for r in run.progress.records())
        skipped = {"binary": 0, "not_utf8": 0, "empty": 0, "too_large": 0}
        for info in run.progress.infos():
            skipped[info["skipped"]] += 1
        stopped_by = None
        unit = -1
        with tqdm(desc="source", unit="doc", initial=documents, disable=not run.show_progress) as bar:
            for source in settings["inputs"]:
                for document, why in candidates(source, settings):
                    unit += 1
                    if unit in done:
                        continue
                    if settings["max_docs"] is not None and documents >= settings["max_docs"]:
                        stopped_by = "max_docs"
                        break
                    if document is not None:
                        length = len(document["text"].encode("utf-8"))
                        why = "empty" if not document["text"].strip() else \
                            "too_large" if length > settings["max_file_bytes"] else None
                        if why is None and settings["max_bytes"] is not None and size + length > settings["max_bytes"]:
                            stopped_by = "max_bytes"
                            break
                    if why is not None:
                        skipped[why] += 1
                        run.progress.add(unit, [], {"skipped": why})
                        continue
                    documents += 1
                    size += length
                    run.progress.add(unit, [document])
                    bar.update(1)
                if stopped_by:
                    break
        run.write(run.progress.records())
        return {"counts": {"documents": documents, "text_bytes": size, "skipped": skipped},
                "stopped_by": stopped_by}

    return run_stage("source", FIELDS, settings, inputs, output, body, show_progress=show_progress, flush_every=256)
