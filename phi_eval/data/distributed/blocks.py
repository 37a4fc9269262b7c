"""The data stages' per-document work as datatrove blocks (PipelineSteps), phi-eval's logic inside.

Each block handles the documents of one task: `source` reads its share of the input files,
`annotate` grades with the heuristic, the `Collect*`/`Signatures` blocks write the small
per-task side files a global step (reduce.py) decides on, and `ApplyCut`/`DropKeys` apply that
decision. Counts go to datatrove's per-block stats (OUT/logs/PHASE/stats.json).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from phi_eval.contamination.similarity import batched
from phi_eval.data import source
from phi_eval.data.distributed import logs  # noqa: F401  (task logs to files only, in every worker)
from phi_eval.data.distributed import ray_worker  # noqa: F401  (no forking from a Ray worker's threads)
from phi_eval.data.distributed.shards import ORDER, key, order_of, side_file, write_atomically
from phi_eval.errors import UsageError


class Block(PipelineStep):
    type = "phi-eval"

    def prepare(self) -> None:
        """Run by the local driver before it forks the workers: what every task needs (a model, an
        index) is then built once and inherited, not built again in each worker (see per_worker)."""

    def __repr__(self):
        return f"phi-eval: {self.name}"


class SourceFiles(Block):
    """The `source` stage: the input files are dealt to tasks round-robin, in sorted order."""

    name = "source"

    def __init__(self, settings: dict):
        super().__init__()
        self.settings = settings

    def candidates(self, rank: int, world_size: int):
        units = []  # in the order `phi-eval data source` reads them
        for spec in self.settings["inputs"]:
            if spec.startswith("hf:"):
                units.append(spec)  # a hub stream is one unit: its rows are read by one task
            else:
                units += [str(p) for p in source.files_of(Path(spec), self.settings)]
        for unit in range(rank, len(units), world_size):
            for row, (document, why) in enumerate(source.candidates(units[unit], self.settings)):
                if document is not None:
                    document[ORDER] = order_of(0, unit, row)
                yield document, why

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for document, why in self.candidates(rank, world_size):
            if document is not None:
                size = len(document["text"].encode("utf-8"))
                why = "empty" if not document["text"].strip() else \
                    "too_large" if size > self.settings["max_file_bytes"] else None
            if why is not None:
                self.stat_update(f"skipped_{why}")
                continue
            self.stat_update("documents")
            self.stat_update("text_bytes", value=size)
            text, doc_id = document.pop("text"), document.pop("id")
            yield Document(text=text, id=doc_id, metadata=document)


class CollectSampleKeys(Block):
    """First pass of a sampled annotation: each document's key and id (the global cut ranks them as
    `phi-eval data annotate` does, by corpus position)."""

    name = "annotate: sample keys"

    def __init__(self, side_dir: Path):
        super().__init__()
        self.side_dir = Path(side_dir)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        write_atomically(side_file(self.side_dir, rank), [[*key(d), str(d.id)] for d in data])
        yield from ()  # a generator, so that errors pass through Guard


class Annotate(Block):
    """The heuristic annotator on every document, or on the sample below the global cut."""

    name = "annotate (heuristic)"

    def __init__(self, settings: dict, cut_file: Path | None):
        super().__init__()
        self.settings, self.cut_file = settings, cut_file

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from phi_eval.data.heuristic import NAME, heuristic_score

        everything = self.cut_file is None
        chosen = set() if everything else \
            {tuple(k) for k in json.loads(Path(self.cut_file).with_suffix(".keys.json").read_text())}
        for document in data:
            if everything or key(document) in chosen:
                with self.track_time():
                    document.metadata.update(edu_score=heuristic_score(document.text), edu_annotator=NAME)
                self.stat_update("annotated")
            yield document


class ReplayGrades(Block):
    """`annotate` with `annotator: file`: every document whose text has a recorded grade gets it, as
    the single-process stage does (grades matched by the sha256 of the text; no sampling)."""

    name = "annotate (recorded grades)"

    def __init__(self, grades_file: str):
        super().__init__()
        self.grades_file = grades_file

    def prepare(self) -> None:
        self.grades()

    def grades(self) -> dict:
        from phi_eval.data.annotate import recorded_grades

        return per_worker(("grades", self.grades_file), lambda: recorded_grades(Path(self.grades_file)))

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from phi_eval.data.annotate import text_sha256

        grades = self.grades()
        for document in data:
            recorded = grades.get(text_sha256(document.text))
            if recorded is not None:
                document.metadata.update(recorded)
                self.stat_update("annotated")
            yield document


class AppendFiles(Block):
    """The `append` stage: the shard as it was, then this task's share of the files' documents
    (every world_size-th, dealt in file order); their corpus order puts them after everything before."""

    name = "append"

    def __init__(self, stage: int, files: list[str]):
        super().__init__()
        self.stage, self.files = stage, files

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from phi_eval.data.stage import read_documents

        for document in data:
            yield document
        dealt = 0
        for unit, path in enumerate(self.files):
            for row, document in enumerate(read_documents(Path(path))):
                dealt += 1
                if (dealt - 1) % world_size != rank:
                    continue
                self.stat_update("appended", f"appended from {Path(path).name}")
                text, doc_id = document.pop("text"), str(document.pop("id", f"{path}/{row + 1}"))
                yield Document(text=text, id=doc_id, metadata={**document, ORDER: order_of(self.stage, unit, row)})


def numeric(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


class Embed(Block):
    """First pass of classify: every document's embedding (the costly part), with its key and grade.

    A task computes on one core (torch set to one thread, as datatrove's `cpus_per_task=1`): `--workers`
    says how many cores a run uses. The model is loaded once per process: by the local driver before
    it forks (`prepare`), in each worker elsewhere (Ray, Slurm)."""

    name = "classify: embed"

    def __init__(self, settings: dict, side_dir: Path):
        super().__init__()
        self.settings, self.side_dir = settings, Path(side_dir)
        self.chunk = settings["batch_size"] * 4  # as the single-process stage: one task embeds the same batches

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # before any torch work: also what makes a forked worker safe (runner.py)
        try:
            self.embed_all(data, rank)
        finally:
            torch.set_num_threads(threads)  # a task run in the driver's process leaves it as it was
        yield from ()

    def prepare(self) -> None:
        self.embedder()

    def embedder(self):
        from phi_eval.contamination.similarity import Embedder

        s = self.settings
        return per_worker(("embedder", s["embed_model"], s["device"], s["batch_size"], s["max_tokens"]),
                          lambda: Embedder(s["embed_model"], device=s["device"], batch_size=s["batch_size"],
                                           max_tokens=s["max_tokens"]))

    def embed_all(self, data: DocumentsPipeline, rank: int) -> None:
        embedder, rows, vectors, batch = None, [], [], []

        def flush():
            with self.track_time("batch"):
                vectors.append(embedder.embed([d.text for d in batch]))
            self.stat_update("embedded", value=len(batch))
            batch.clear()

        for document in data:
            if embedder is None:  # loaded on the first document: a task with none loads no model
                embedder = self.embedder()
            grade = document.metadata.get("edu_score")
            rows.append([*key(document), grade if numeric(grade) else None])
            batch.append(document)
            if len(batch) == self.chunk:
                flush()
        if batch:
            flush()
        save_array(side_file(self.side_dir, rank, ".npy"),
                   np.concatenate(vectors) if vectors else np.zeros((0, 0), dtype=np.float32))
        write_atomically(side_file(self.side_dir, rank), rows)  # written last: it marks the pair complete


class Score(Block):
    """Last pass of classify: `quality_score`, the forest's probability of "high value"."""

    name = "classify: score"

    def __init__(self, side_dir: Path, forest_file: Path):
        super().__init__()
        self.side_dir, self.forest_file = Path(side_dir), Path(forest_file)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        import pickle

        with open(self.forest_file, "rb") as f:
            forest = pickle.load(f)
        high = list(forest.classes_).index(1)
        path = side_file(self.side_dir, rank)
        rows = {tuple(json.loads(line)[:2]): i for i, line in enumerate(path.read_text().splitlines())}
        vectors = np.load(path.with_suffix(".npy"))
        for chunk in batched(data, 1024):
            scores = forest.predict_proba(vectors[[rows[key(d)] for d in chunk]])[:, high]
            for document, score in zip(chunk, scores):
                document.metadata["quality_score"] = round(float(score), 6)
                self.stat_update("scored")
                yield document


def save_array(path: Path, array) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".writing")
    with open(partial, "wb") as f:
        np.save(f, array)
    partial.replace(path)


class CollectScores(Block):
    """First pass of the filter: (score, key) of every document."""

    name = "filter: scores"

    def __init__(self, field: str, side_dir: Path):
        super().__init__()
        self.field, self.side_dir = field, Path(side_dir)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        rows = []
        for document in data:
            score = document.metadata.get(self.field)
            rows.append([score if numeric(score) else None, *key(document), len(document.text.encode("utf-8"))])
        write_atomically(side_file(self.side_dir, rank), rows)
        yield from ()  # a generator, so that errors pass through Guard


class ApplyCut(Block):
    """Second pass of the filter: keep the documents ranked at or above the global cut."""

    name = "filter: keep top fraction"

    def __init__(self, field: str, cut_file: Path):
        super().__init__()
        self.field, self.cut_file = field, Path(cut_file)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        cut = json.loads(self.cut_file.read_text())["last_kept"]
        for document in data:
            score = document.metadata.get(self.field)
            if cut is not None and numeric(score) and [-score, *key(document)] <= cut:
                self.stat_update("kept")
                yield document
            else:
                self.stat_update("dropped")


class Signatures(Block):
    """First pass of dedup: each document's normalised hash and MinHash signature (the costly part)."""

    name = "dedup: signatures"

    def __init__(self, settings: dict, side_dir: Path):
        super().__init__()
        self.settings, self.side_dir = settings, Path(side_dir)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from phi_eval.data.dedup import minhash_of, normalised_hash

        rows, signatures = [], []
        for document in data:
            with self.track_time():
                rows.append([*key(document), normalised_hash(document.text)])
                if self.settings["near"]:
                    signatures.append(minhash_of(document.text, self.settings).hashvalues)
        matrix = np.array(signatures, dtype=np.uint64).reshape(len(signatures), self.settings["num_perm"])
        save_array(side_file(self.side_dir, rank, ".npy"), matrix)
        write_atomically(side_file(self.side_dir, rank), rows)  # written last: it marks the task's pair complete
        yield from ()  # a generator, so that errors pass through Guard


class DropKeys(Block):
    """Second pass of dedup (or any global decision): drop the documents listed in `drops_file`."""

    name = "dedup: drop duplicates"

    def __init__(self, drops_file: Path):
        super().__init__()
        self.drops_file = Path(drops_file)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        drops = {tuple(k) for k in json.loads(self.drops_file.read_text())["drop"]}
        for document in data:
            if key(document) in drops:
                self.stat_update("dropped")
                continue
            self.stat_update("kept")
            yield document


class Decontaminate(Block):
    """The `decontaminate` stage: n-gram candidates confirmed by similarity; counts per benchmark."""

    name = "decontaminate"

    def __init__(self, settings: dict, items_file: Path, side_dir: Path):
        super().__init__()
        self.settings, self.items_file, self.side_dir = settings, Path(items_file), Path(side_dir)

    def prepare(self) -> None:
        self.checker()

    def checker(self):
        from phi_eval.data.decontaminate import Checker

        s = self.settings
        return per_worker(("checker", str(self.items_file), s["n"], s["threshold"]),
                          lambda: Checker(json.loads(self.items_file.read_text()), s))

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from phi_eval.data.decontaminate import batches

        checker, dropped = self.checker(), []
        for batch in batches(data, lambda d: d.text):
            with self.track_time("batch"):
                hits = checker.check([d.text for d in batch])
            for document, hit in zip(batch, hits):
                if hit is not None:
                    self.stat_update("candidates")
                if hit is not None and hit["confirmed"]:
                    self.stat_update("dropped", f"dropped_{hit['task']}")
                    dropped.append({"id": document.id, **hit})
                    continue
                self.stat_update("kept")
                yield document
        write_atomically(side_file(self.side_dir, rank), dropped)


WORKER_CACHE: dict = {}


def per_worker(cache_key: tuple, make):
    """Built once per process and kept for its next tasks (a model, an n-gram index), so a task's fixed
    cost is not paid per task; the runner clears it after each phase. Keys name what the object depends on."""
    if cache_key not in WORKER_CACHE:
        WORKER_CACHE[cache_key] = make()
    return WORKER_CACHE[cache_key]


class Guard(Block):
    """Last block of every phase: a UsageError in any block is written to ERRORS/RANK.txt, so the
    driver can show that one line for every executor (a Ray or Slurm task's exception stays remote)."""

    name = "errors"

    def __init__(self, errors_dir: Path):
        super().__init__()
        self.errors_dir = Path(errors_dir)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        try:
            yield from data or ()
        except UsageError as e:
            self.errors_dir.mkdir(parents=True, exist_ok=True)
            (self.errors_dir / f"{rank:05d}.txt").write_text(str(e))
            raise

