"""The `classify` stage: learn to mimic the annotator and score every document (phi-1, Section 2.1).

As phi-1: a random forest on a pretrained code model's embeddings. Each document is embedded
by `embed_model` (any model phi-eval loads locally: zoo name, hf:DIR or hub id; the mean of the
last hidden state over the first `max_tokens` tokens, L2-normalised; phi-1 used a CodeGen model,
default hf:Salesforce/codegen-350M-mono). The graded documents (`edu_score` not null) are split
into train and held-out sets (`test_fraction`, stratified, seeded); the forest learns "high
value" = `edu_score >= label_threshold`. The manifest's agreement report compares its held-out
predictions with the annotator: accuracy, F1 and precision/recall of the high class, the
majority-class accuracy to beat, and Spearman's rank correlation between the predicted
probability and the grade. Every document gets `quality_score`, the forest's probability of
"high value". Embeddings are committed as they are computed, so a killed run resumes.
"""
from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from phi_eval.data.stage import Field, StageRun, jsonl_input, read_documents, run_stage
from phi_eval.errors import UsageError

FIELDS = {
    "embed_model": Field("str", "hf:Salesforce/codegen-350M-mono", help="model whose mean last hidden state embeds"),
    "label_threshold": Field("number", 6.0, help="edu_score at or above this is 'high value'"),
    "test_fraction": Field("open_fraction", 0.2, help="share of graded documents held out for the report"),
    "n_estimators": Field("int", 200, minimum=1, help="trees in the random forest"),
    "max_depth": Field("int", minimum=1, help="tree depth limit (default: none)"),
    "seed": Field("int", 0),
    "max_tokens": Field("int", 512, minimum=8, help="tokens per document embedded"),
    "batch_size": Field("int", 16, minimum=1, affects_output=False),
    "device": Field("str", "auto", affects_output=False, help="cpu, cuda, cuda:N or auto"),
}
MIN_GRADED = 10


def graded(documents: list[dict], threshold: float) -> tuple[list[int], list[float]]:
    rows = [(i, float(d["edu_score"])) for i, d in enumerate(documents)
            if isinstance(d.get("edu_score"), (int, float)) and not isinstance(d.get("edu_score"), bool)]
    if len(rows) < MIN_GRADED:
        raise UsageError(f"only {len(rows)} documents have an edu_score; classify needs at least {MIN_GRADED}: "
                         "annotate a larger sample first")
    high = sum(1 for _, s in rows if s >= threshold)
    if high in (0, len(rows)):
        raise UsageError(f"all {len(rows)} graded documents are {'at or above' if high else 'below'} "
                         f"label_threshold {threshold:g}; set a threshold between the grades")
    return [i for i, _ in rows], [s for _, s in rows]


def embed_all(run: StageRun, texts: list[str], settings: dict):
    import numpy as np

    done = run.progress.results()
    todo = [i for i in range(len(texts)) if i not in done]
    if todo:
        from phi_eval.contamination.similarity import Embedder

        embedder = Embedder(settings["embed_model"], device=settings["device"], batch_size=settings["batch_size"],
                            max_tokens=settings["max_tokens"])
        step = settings["batch_size"] * 4
        with tqdm(desc="classify: embed", total=len(texts), initial=len(done), unit="doc",
                  disable=not run.show_progress) as bar:
            for start in range(0, len(todo), step):
                rows = todo[start:start + step]
                vectors = embedder.embed([texts[i] for i in rows])
                for i, vector in zip(rows, vectors):
                    run.progress.add(i, [{"embedding": vector.tolist()}])
                run.progress.flush()  # one commit per batch
                bar.update(len(rows))
        done = run.progress.results()
    return np.array([done[i][0]["embedding"] for i in range(len(texts))], dtype=np.float32)


def agreement(labels, predicted, probabilities, grades) -> dict:
    from scipy.stats import spearmanr
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    rho = spearmanr(probabilities, grades).statistic
    majority = max(sum(labels), len(labels) - sum(labels)) / len(labels)
    return {"held_out": len(labels), "accuracy": round(float(accuracy_score(labels, predicted)), 4),
            "majority_class_accuracy": round(majority, 4),
            "f1": round(float(f1_score(labels, predicted, zero_division=0)), 4),
            "precision": round(float(precision_score(labels, predicted, zero_division=0)), 4),
            "recall": round(float(recall_score(labels, predicted, zero_division=0)), 4),
            "spearman": None if rho != rho else round(float(rho), 4)}  # NaN when one side is constant


def run_classify(settings: dict, input_path: Path, output: Path, *, show_progress: bool = True) -> dict:
    def body(run: StageRun) -> dict:
        import numpy as np
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.model_selection import train_test_split

        documents = list(read_documents(input_path))
        rows, grades = graded(documents, settings["label_threshold"])
        labels = np.array([int(g >= settings["label_threshold"]) for g in grades])
        vectors = embed_all(run, [d["text"] for d in documents], settings)
        stratify = labels if min(labels.sum(), len(labels) - labels.sum()) >= 2 else None
        train, test = train_test_split(np.arange(len(rows)), test_size=settings["test_fraction"],
                                       random_state=settings["seed"], stratify=stratify)
        forest = RandomForestClassifier(n_estimators=settings["n_estimators"], max_depth=settings["max_depth"],
                                        class_weight="balanced", random_state=settings["seed"], n_jobs=1)
        forest.fit(vectors[np.array(rows)[train]], labels[train])
        high = list(forest.classes_).index(1)
        held_out = forest.predict_proba(vectors[np.array(rows)[test]])[:, high]
        report = agreement(labels[test].tolist(), (held_out >= 0.5).astype(int).tolist(), held_out.tolist(),
                           [grades[t] for t in test])
        scores = forest.predict_proba(vectors)[:, high]
        run.write({**d, "quality_score": round(float(s), 6)} for d, s in zip(documents, scores))
        return {"counts": {"documents": len(documents), "graded": len(rows), "train": len(train),
                           "held_out": len(test), "high_value_graded": int(labels.sum())},
                "embedding": {"model": settings["embed_model"], "dimensions": int(vectors.shape[1])},
                "classifier": f"sklearn RandomForestClassifier(n_estimators={settings['n_estimators']}, "
                              f"max_depth={settings['max_depth']}, class_weight=balanced)",
                "agreement": report,
                "quality_score": {"mean": round(float(scores.mean()), 4),
                                  "at_least_0.5": int((scores >= 0.5).sum())}}

    return run_stage("classify", FIELDS, settings, [jsonl_input(input_path)], output, body,
                     show_progress=show_progress, flush_every=10**9)
