"""The global steps between map phases, each a one-task datatrove block (so Slurm runs them too).

They read the small side files every task of the previous phase wrote and decide for the whole
corpus, in the order of the documents' keys (corpus order, text hash; shards.py), so that the
decision does not depend on how the corpus was split and equals the single-process stages': the annotation sample, classify's forest, the filter's cut
at the global quantile (phi-1's "top 20%" of everything, not of each shard), the dedup's
survivors. Stages without a per-document form (synthesize, LLM annotation: their own resumable
request loops) run whole on the merged corpus and deal their output back to shards.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
from datatrove.data import DocumentsPipeline

from phi_eval.data.distributed.blocks import Block
from phi_eval.data.distributed.shards import (ORDER, bucket, key, order_of, read_shards, read_side_files, record,
                                             shard_files, text_hash, write_json)
from phi_eval.errors import UsageError

FIX = "delete that stage's folder (or pass a new --out) and rerun"


class SampleCut(Block):
    """The annotation sample, `phi-eval data annotate`'s (phi_eval.data.annotate.sampled): the documents,
    in corpus order, whose seeded hashes of id and position are the `sample_size` (or fraction) lowest."""

    name = "annotate: sample cut"

    def __init__(self, settings: dict, side_dir: Path, cut_file: Path):
        super().__init__()
        self.settings, self.side_dir, self.cut_file = settings, Path(side_dir), Path(cut_file)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from phi_eval.data.annotate import sampled

        documents = sorted(read_side_files(self.side_dir))  # [order, text hash, id], in corpus order
        chosen = sorted(sampled([d[2] for d in documents], self.settings))
        write_json(self.cut_file.with_suffix(".keys.json"), [documents[i][:2] for i in chosen])
        write_json(self.cut_file, {"documents": len(documents), "sampled": len(chosen)})
        yield from ()


class FilterCut(Block):
    """The filter's global cut: rank every scored document by (-score, key), keep the top fraction."""

    name = "filter: global cut"

    def __init__(self, settings: dict, side_dir: Path, cut_file: Path):
        super().__init__()
        self.settings, self.side_dir, self.cut_file = settings, Path(side_dir), Path(cut_file)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        rows = list(read_side_files(self.side_dir))
        ranked = sorted([-score, order, digest] for score, order, digest, _ in rows if score is not None)
        field = self.settings["score_field"]
        if not ranked:
            raise UsageError(f"no document has a numeric {field!r}; run classify (or annotate) first, or set "
                             "score_field")
        keep = ranked[:math.ceil(self.settings["keep_fraction"] * len(ranked))]
        if self.settings["min_score"] is not None:
            keep = [k for k in keep if -k[0] >= self.settings["min_score"]]
        kept = {tuple(k[1:]) for k in keep}
        total_bytes = sum(size for *_, size in rows)
        kept_bytes = sum(size for _, order, digest, size in rows if (order, digest) in kept)
        write_json(self.cut_file, {
            "last_kept": keep[-1] if keep else None, "threshold": -keep[-1][0] if keep else None,
            "counts": {"read": len(rows), "scored": len(ranked), "unscored": len(rows) - len(ranked),
                       "kept": len(keep), "dropped": len(rows) - len(keep)},
            "kept_fraction_of_scored": round(len(keep) / len(ranked), 6),
            "kept_fraction_of_bytes": round(kept_bytes / total_bytes, 6) if total_bytes else None})
        yield from ()


class LoadItems(Block):
    """Decontaminate's first step: the benchmark items, from local files, into one JSON file."""

    name = "decontaminate: load items"

    def __init__(self, settings: dict, items_file: Path):
        super().__init__()
        self.settings, self.items_file = settings, Path(items_file)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from phi_eval.data.decontaminate import load_benchmarks

        write_json(self.items_file, load_benchmarks(self.settings))
        yield from ()


class TrainForest(Block):
    """Classify's global step: phi-1's random forest on the graded documents' embeddings, in key order
    (so the train/held-out split does not depend on the sharding), with classify's agreement report."""

    name = "classify: train"

    def __init__(self, settings: dict, side_dir: Path, forest_file: Path, report_file: Path, threads: int = 1):
        super().__init__()
        self.settings, self.side_dir, self.threads = settings, Path(side_dir), threads
        self.forest_file, self.report_file = Path(forest_file), Path(report_file)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        import pickle

        from sklearn.ensemble import RandomForestClassifier
        from sklearn.model_selection import train_test_split

        from phi_eval.data.classify import agreement, graded

        s = self.settings
        rows, vectors = [], []
        for path in sorted(self.side_dir.glob("*.jsonl")):
            mine = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
            chosen = [i for i, row in enumerate(mine) if row[2] is not None]
            rows += [mine[i] for i in chosen]
            if chosen:
                vectors.append(np.load(path.with_suffix(".npy"))[chosen])
        order = sorted(range(len(rows)), key=lambda i: rows[i][:2])
        grades = [rows[i][2] for i in order]
        graded([{"edu_score": g} for g in grades], s["label_threshold"])  # too few, or one class: UsageError
        x = np.concatenate(vectors)[order]
        labels = np.array([int(g >= s["label_threshold"]) for g in grades])
        stratify = labels if min(labels.sum(), len(labels) - labels.sum()) >= 2 else None
        train, test = train_test_split(np.arange(len(labels)), test_size=s["test_fraction"], random_state=s["seed"],
                                       stratify=stratify)
        forest = RandomForestClassifier(n_estimators=s["n_estimators"], max_depth=s["max_depth"],
                                        class_weight="balanced", random_state=s["seed"], n_jobs=self.threads)
        forest.fit(x[train], labels[train])  # the same trees for any n_jobs: each tree's seed is drawn first
        forest.set_params(n_jobs=1)  # predictions sum the trees in one order (threads would add them as they end)
        held_out = forest.predict_proba(x[test])[:, list(forest.classes_).index(1)]
        report = agreement(labels[test].tolist(), (held_out >= 0.5).astype(int).tolist(), held_out.tolist(),
                           [grades[t] for t in test])
        partial = self.forest_file.with_name(self.forest_file.name + ".writing")
        with open(partial, "wb") as f:
            pickle.dump(forest, f)
        partial.replace(self.forest_file)
        write_json(self.report_file, {
            "counts": {"graded": len(labels), "train": len(train), "held_out": len(test),
                       "high_value_graded": int(labels.sum())},
            "embedding": {"model": s["embed_model"], "dimensions": int(x.shape[1])},
            "classifier": f"sklearn RandomForestClassifier(n_estimators={s['n_estimators']}, "
                          f"max_depth={s['max_depth']}, class_weight=balanced)", "agreement": report})
        yield from ()


class DedupDecide(Block):
    """Dedup over the whole corpus in key order, from the signatures the tasks computed."""

    name = "dedup: decide"

    def __init__(self, settings: dict, side_dir: Path, drops_file: Path, report_file: Path):
        super().__init__()
        self.settings, self.side_dir = settings, Path(side_dir)
        self.drops_file, self.report_file = Path(drops_file), Path(report_file)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from datasketch import MinHash

        from phi_eval.data.dedup import Deduplicator

        rows, signatures = [], []
        for path in sorted(self.side_dir.glob("*.jsonl")):
            rows += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
            if self.settings["near"]:
                signatures.append(np.load(path.with_suffix(".npy")))
        matrix = np.concatenate(signatures) if signatures else None
        template = MinHash(num_perm=self.settings["num_perm"])  # datasketch 2 asks for the hash scheme used
        scheme = {"scheme": template.scheme} if hasattr(template, "scheme") else {}
        scheme["permutations"] = template.permutations  # shared: drawing them again costs more than the insert
        dedup, drops = Deduplicator(self.settings), []
        for i in sorted(range(len(rows)), key=lambda i: rows[i][:2]):
            doc_id, digest, normalised = rows[i]
            minhash = MinHash(num_perm=self.settings["num_perm"], hashvalues=matrix[i], **scheme) if matrix is not None else None
            if not dedup.keep({"id": doc_id, "text": ""}, minhash=minhash, digest=normalised):
                drops.append([doc_id, digest])
        write_json(self.report_file, dedup.report())
        write_json(self.drops_file, {"drop": drops})
        yield from ()


class WholeStage(Block):
    """A stage run whole by its single-process function on the merged corpus (in corpus order), its
    output dealt to `tasks` shards by key; the stage's own manifest and resume apply."""

    def __init__(self, stage: str, index: int, settings: dict, input_dir: Path | None, output_dir: Path,
                 work_dir: Path, tasks: int):
        super().__init__()
        self.name = f"{stage} (whole corpus, one task)"
        self.stage, self.index, self.settings, self.tasks = stage, index, settings, tasks
        self.input_dir, self.output_dir, self.work_dir = input_dir, Path(output_dir), Path(work_dir)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from phi_eval.data.pipeline import run_one

        merged = None
        if self.input_dir is not None:
            merged = self.work_dir / "input.jsonl"
            write_sorted(self.input_dir, merged)
        output = self.work_dir / "output.jsonl"
        manifest = run_one(self.stage, self.settings, merged, output, show_progress=False)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        files = [open(self.output_dir / f"{r:05d}.jsonl.writing", "w", encoding="utf-8") for r in range(self.tasks)]
        with open(output, encoding="utf-8") as f:
            for row, line in enumerate(f):
                document = json.loads(line)
                if ORDER not in document:  # written by this stage: after everything before it
                    document[ORDER] = order_of(self.index, 0, row)
                    line = json.dumps(document, ensure_ascii=False) + "\n"
                files[bucket((document[ORDER], text_hash(document["text"])), self.tasks)].write(line)
                self.stat_update("documents")
        for r, handle in enumerate(files):
            handle.close()
            Path(handle.name).replace(self.output_dir / f"{r:05d}.jsonl")
        write_json(self.work_dir / "report.json", {k: v for k, v in manifest.items() if k != "skipped"})
        yield from ()


def write_sorted(folder: Path, output: Path, order: bool = True) -> tuple[int, str]:
    """All shards of `folder` as one JSONL sorted by key (`_order` left out unless `order`); (documents, sha256)."""
    documents = sorted(read_shards(folder, FIX), key=key)
    digest = hashlib.sha256()
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".writing")
    with open(partial, "wb") as f:
        for document in documents:
            line = (json.dumps(record(document, order), ensure_ascii=False) + "\n").encode("utf-8")
            digest.update(line)
            f.write(line)
    partial.replace(output)
    return len(documents), digest.hexdigest()


class MergeCorpus(Block):
    """The last phase: the final corpus as one JSONL in corpus order (as the single-process stages write
    it, without `_order`), and OUT/pipeline.json."""

    name = "merge corpus"

    def __init__(self, last_dir: Path, out: Path, summary: dict, output_format: str = "jsonl"):
        super().__init__()
        self.last_dir, self.out, self.summary, self.format = Path(last_dir), Path(out), summary, output_format

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        corpus = self.out / "corpus.jsonl"
        documents, sha256 = write_sorted(self.last_dir, corpus, order=False)
        parquet = None
        if self.format == "parquet":
            from phi_eval.data.distributed.parquet import write_parquet_shards

            with open(corpus, encoding="utf-8") as f:
                parquet = write_parquet_shards([json.loads(line) for line in f], self.out / "corpus",
                                              self.summary["tasks"])
        from phi_eval.data.distributed.provenance import write_provenance

        provenance = write_provenance(self.last_dir, self.out / "provenance.jsonl", self.summary["stages"])
        stages = []
        for stage in self.summary["stages"]:
            shards = shard_files(stage["output"])
            reports = {name: json.loads(Path(path).read_text()) for name, path in stage["reports"].items()
                       if Path(path).is_file()}
            stages.append({**stage, "shards": len(shards), "documents": sum(count_lines(p) for p in shards),
                           "reports": reports, "stats": {p: phase_stats(Path(d)) for p, d in stage["logs"].items()}})
        write_json(self.out / "pipeline.json", {**self.summary, "stages": stages,
                                                "corpus": {"path": str(corpus), "documents": documents,
                                                           "sha256": sha256,
                                                           "order": "corpus order (as the single-process stages)",
                                                           **({"parquet": parquet} if parquet else {})},
                                                "provenance": provenance})
        yield from ()


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def phase_stats(logs: Path) -> list:
    """datatrove's per-block stats of a phase, summed over its tasks."""
    from datatrove.utils.stats import PipelineStats

    total = PipelineStats()
    for path in sorted((logs / "stats").glob("*.json")):
        total += PipelineStats.from_json(json.loads(path.read_text()))
    return json.loads(total.to_json())
