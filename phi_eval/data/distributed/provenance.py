"""OUT/provenance.jsonl: every synthetic document (one with a "synthetic" field: synthesize's, or an
appended file's), from seed to shard. Its generation provenance, and the verdict of every stage after
the one that brought it in, up to the stage that dropped it (if one did); a survivor's entry names the
final shard and line it is in."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from phi_eval.data.distributed.shards import ORDER, shard_files, write_atomically


def write_provenance(last_dir: Path, path: Path, stages: list[dict]) -> dict:
    seen = [synthetic_documents(stage["output"]) for stage in stages]  # order -> (document, shard:line)
    final = synthetic_documents(last_dir)
    first: dict[str, int] = {}
    for i, documents in enumerate(seen):
        for order in documents:
            first.setdefault(order, i)
    decisions = [decision(stage) for stage in stages]
    lines, dropped = [], 0
    for order, entered in sorted(first.items()):
        document = seen[entered][order][0]
        verdicts, dropped_by = {}, None
        for i in range(entered + 1, len(stages)):
            stage, before = stages[i], seen[i - 1][order][0]
            score = {"score": before.get(stage["settings"]["score_field"])} if stage["stage"] == "filter" else {}
            name = f"{i:02d}-{stage['stage']}"
            kept = order in seen[i]
            verdicts[name] = {"verdict": "kept" if kept else "dropped", **decisions[i], **score}
            if not kept:
                dropped_by = name
                break
        dropped += dropped_by is not None
        lines.append({"id": document["id"], "text_sha256": hashlib.sha256(document["text"].encode("utf-8")).hexdigest(),
                      "synthetic": document["synthetic"], "shard": final[order][1] if order in final else None,
                      "dropped_by": dropped_by, "verdicts": verdicts})
    write_atomically(path, lines)
    return {"path": str(path), "synthetic_documents": len(lines), "dropped": dropped}


def synthetic_documents(folder: Path) -> dict[str, tuple[dict, str]]:
    found = {}
    for shard in shard_files(Path(folder)):
        with open(shard, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if '"synthetic"' not in line:  # most lines: no JSON parse
                    continue
                document = json.loads(line)
                if isinstance(document.get("synthetic"), dict):
                    found[document.get(ORDER, "0")] = (document, f"{shard}:{number}")
    return found


def decision(stage: dict) -> dict:
    """What a stage decided on."""
    settings = stage["settings"]
    if stage["stage"] == "filter":
        cut = Path(stage["reports"]["cut"])
        return {"threshold": json.loads(cut.read_text())["threshold"] if cut.is_file() else None}
    if stage["stage"] == "dedup":
        return {"exact": settings["exact"], "near": settings["near"], "jaccard_threshold": settings["threshold"]}
    if stage["stage"] == "decontaminate":
        return {"benchmarks": settings["tasks"], "n": settings["n"], "similarity_threshold": settings["threshold"]}
    return {}

