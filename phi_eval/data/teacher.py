"""A teacher's grades, frozen for a study, and how well the teacher agrees with itself.

phi-1 graded ~100k samples with GPT-4; a study here grades a sample with a small local teacher
(`phi-eval serve`). Small teachers are noisy, so the same sample is graded twice (two
temperatures, or two models) and the agreement is reported: exact agreement, Spearman's rank
correlation, and Cohen's kappa on binned labels (low 0-3 / mid 4-6 / high 7-10, and the binary
"high value" label the classifier learns), with quadratic-weighted kappa on the integer grades.

    python -m phi_eval.data.teacher FIRST.jsonl SECOND.jsonl --out DIR [--threshold 7]

reads two `annotate` outputs of the same corpus and writes DIR/grades.jsonl (one line per graded
document: sha256 of its text, id, edu_score from FIRST, edu_score_second, edu_annotator; what
`annotate --annotator file` replays) and DIR/agreement.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from phi_eval.data.annotate import text_sha256
from phi_eval.data.stage import read_documents
from phi_eval.errors import UsageError

BINS = ((0, 3), (4, 6), (7, 10))


def binned(score: float) -> int:
    return next(i for i, (low, high) in enumerate(BINS) if round(score) <= high)


def agreement(first: list, second: list, threshold: float) -> dict:
    """Agreement of two gradings of the same documents (None: unparsable, left out of the pairs)."""
    from scipy.stats import spearmanr
    from sklearn.metrics import cohen_kappa_score

    pairs = [(a, b) for a, b in zip(first, second) if a is not None and b is not None]
    report = {"graded_twice": len(first), "both_parsed": len(pairs)}
    if len(pairs) < 2:
        return {**report, "note": "fewer than two documents graded twice"}
    a, b = [p[0] for p in pairs], [p[1] for p in pairs]

    def kappa(x, y, **kw):
        with warnings.catch_warnings():  # undefined (one label on both sides): reported as None
            warnings.simplefilter("ignore")
            value = cohen_kappa_score(x, y, **kw)
        return None if value != value else round(float(value), 4)  # NaN when a side is constant

    with warnings.catch_warnings():  # a constant side: no correlation, reported as None
        warnings.simplefilter("ignore")
        rho = spearmanr(a, b).statistic
    return {**report,
            "exact_agreement": round(sum(x == y for x, y in pairs) / len(pairs), 4),
            "within_one": round(sum(abs(x - y) <= 1 for x, y in pairs) / len(pairs), 4),
            "spearman": None if rho != rho else round(float(rho), 4),
            "kappa_quadratic_0_10": kappa([round(x) for x in a], [round(y) for y in b], weights="quadratic",
                                          labels=list(range(11))),
            "kappa_bins_low_mid_high": kappa([binned(x) for x in a], [binned(y) for y in b], labels=[0, 1, 2]),
            f"kappa_high_value_at_{threshold:g}": kappa([int(x >= threshold) for x in a],
                                                        [int(y >= threshold) for y in b], labels=[0, 1]),
            "mean_first": round(sum(a) / len(a), 4), "mean_second": round(sum(b) / len(b), 4),
            "histogram_first": [sum(1 for x in a if round(x) == g) for g in range(11)],
            "histogram_second": [sum(1 for y in b if round(y) == g) for g in range(11)]}


def graded(path: Path) -> dict[str, dict]:
    """sha256 of the text -> the document's grade fields, for the documents `annotate` graded."""
    return {text_sha256(d["text"]): {"id": d.get("id"), "edu_score": d.get("edu_score"),
                                     "edu_annotator": d.get("edu_annotator")}
            for d in read_documents(path) if "edu_annotator" in d}


def freeze(first_path: Path, second_path: Path, out: Path, threshold: float) -> dict:
    first, second = graded(first_path), graded(second_path)
    if not first:
        raise UsageError(f"{first_path} has no graded document; pass the output of `phi-eval data annotate`")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "grades.jsonl", "w", encoding="utf-8") as f:
        for sha, grade in first.items():
            again = second.get(sha, {})
            f.write(json.dumps({"sha256": sha, **grade, "edu_score_second": again.get("edu_score"),
                                "edu_annotator_second": again.get("edu_annotator")}) + "\n")
    both = [sha for sha in first if sha in second]
    report = {"first": {"path": str(first_path), "annotator": sorted({str(g["edu_annotator"]) for g in first.values()})},
              "second": {"path": str(second_path),
                         "annotator": sorted({str(g["edu_annotator"]) for g in second.values()})},
              "agreement": agreement([first[s]["edu_score"] for s in both], [second[s]["edu_score"] for s in both],
                                     threshold)}
    (out / "agreement.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m phi_eval.data.teacher", description=__doc__.split("\n\n")[0])
    parser.add_argument("first", type=Path, help="annotate output (the grades used)")
    parser.add_argument("second", type=Path, help="annotate output of the same corpus, graded again")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threshold", type=float, default=7.0, help="the classifier's label_threshold")
    args = parser.parse_args(argv)
    try:
        report = freeze(args.first, args.second, args.out, args.threshold)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report["agreement"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
