"""The data stages' per-document work as datatrove blocks (PipelineSteps), phi-eval's logic inside.

Each block handles the documents of one task: `source` reads its share of the input files,
`annotate` grades with the heuristic, the `Collect*`/`Signatures` blocks write the small
per-task side files a global step (reduce.py) decides on, and `ApplyCut`/`DropKeys` apply that
decision. Counts go to datatrove's per-block stats (OUT/logs/PHASE/stats.json).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from phi_eval.contamination.similarity import batched
from phi_eval.data import source
from phi_eval.data.distributed import logs  # noqa: F401  (task logs to files only, in every worker)
from phi_eval.data.distributed.shards import key, side_file, write_atomically
from phi_eval.errors import UsageError


class Block(PipelineStep):
    type = "phi-eval"

    def __repr__(self):
        return f"phi-eval: {self.name}"


class SourceFiles(Block):
    """The `source` stage: the input files are dealt to tasks round-robin, in sorted order."""

    name = "source"

    def __init__(self, settings: dict):
        super().__init__()
        self.settings = settings

    def candidates(self, rank: int, world_size: int):
        units = []
        for spec in self.settings["inputs"]:
            if spec.startswith("hf:"):
                units.append(spec)  # a hub stream is one unit: its rows are read by one task
            else:
                units += [str(p) for p in source.files_of(Path(spec), self.settings)]
        for unit in units[rank::world_size]:
            yield from source.candidates(unit, self.settings)

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


def sample_hash(seed: int, document: Document) -> str:
    return hashlib.sha256(json.dumps([seed, *key(document)]).encode()).hexdigest()


class CollectSampleHashes(Block):
    """First pass of a sampled annotation: each document's seeded hash (the lowest ones are graded)."""

    name = "annotate: sample hashes"

    def __init__(self, seed: int, side_dir: Path):
        super().__init__()
        self.seed, self.side_dir = seed, Path(side_dir)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        write_atomically(side_file(self.side_dir, rank), [sample_hash(self.seed, d) for d in data])
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
        cut = None if everything else json.loads(Path(self.cut_file).read_text())["last_hash"]
        for document in data:
            if everything or (cut is not None and sample_hash(self.settings["seed"], document) <= cut):
                with self.track_time():
                    document.metadata.update(edu_score=heuristic_score(document.text), edu_annotator=NAME)
                self.stat_update("annotated")
            yield document


def numeric(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


class Embed(Block):
    """First pass of classify: every document's embedding (the costly part), with its key and grade."""

    name = "classify: embed"

    def __init__(self, settings: dict, side_dir: Path, chunk: int = 256):
        super().__init__()
        self.settings, self.side_dir, self.chunk = settings, Path(side_dir), chunk

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from phi_eval.contamination.similarity import Embedder

        embedder, rows, vectors, batch = None, [], [], []

        def flush():
            with self.track_time("batch"):
                vectors.append(embedder.embed([d.text for d in batch]))
            self.stat_update("embedded", value=len(batch))
            batch.clear()

        for document in data:
            if embedder is None:  # loaded on the first document: a task with none loads no model
                embedder = Embedder(self.settings["embed_model"], device=self.settings["device"],
                                    batch_size=self.settings["batch_size"], max_tokens=self.settings["max_tokens"])
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
        yield from ()


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

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from phi_eval.data.decontaminate import Checker, batches

        checker = Checker(json.loads(self.items_file.read_text()), self.settings)
        dropped = []
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

