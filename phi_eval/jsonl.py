"""JSON Lines files whose bad lines must be named: one reader for samples, runs and corpora."""
from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Iterator

from phi_eval.errors import UsageError
from phi_eval.textfiles import decode


def json_objects(path: Path) -> Iterator[tuple[str, dict | None]]:
    """("FILE:LINE", the line's JSON object) for every non-blank line, None where the line is not
    a JSON object (so the caller can say what it expected). Files ending in .gz are decompressed."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            line = decode(raw, path, number)
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            yield f"{path}:{number}", record if isinstance(record, dict) else None


def read_json_objects(path: Path) -> list[dict]:
    """Every object of a release file; a line that is not a JSON object is a usage error naming it."""
    objects = []
    for where, record in json_objects(path):
        if record is None:
            raise UsageError(f"{where} is not a JSON object; give the benchmark's original release file")
        objects.append(record)
    return objects
