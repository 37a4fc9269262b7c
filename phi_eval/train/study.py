"""The numbers of a seeded comparison of two recipes: mean ± std over seeds per arm, a test of the
difference, the table (Markdown) and one plot. phi_eval.train.compare measures; this module sums up.

Tests between the arms use each seed's value as one observation: Welch's t-test (unequal
variances) and an exact permutation test of the difference in means (every way of splitting the
pooled values into two groups of the arms' sizes). With 3 seeds per arm there are only 20 splits,
so the permutation p-value cannot go below 0.1: a "significant" verdict needs more seeds, and the
table says so rather than leaning on the t-test's normality assumption.
"""
from __future__ import annotations

import itertools
import math
import statistics

ALPHA = 0.05
# (key in each run, label, lower is better)
MEASURES = [
    ("humaneval_bits_per_byte", "HumanEval canonical solutions, bits/byte", True),
    ("mbpp_bits_per_byte", "MBPP reference code, bits/byte", True),
    ("humaneval_clean_bits_per_byte", "HumanEval clean subset, bits/byte", True),
    ("mbpp_clean_bits_per_byte", "MBPP clean subset, bits/byte", True),
    ("pass@1", "HumanEval pass@1", False),
    ("pass@10", "HumanEval pass@10", False),
    ("humaneval_clean_pass@1", "HumanEval clean subset pass@1", False),
]


def mean_std(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def permutation_p(a: list[float], b: list[float]) -> float:
    """Two-sided exact permutation test of mean(b) - mean(a)."""
    pooled, observed = a + b, abs(statistics.fmean(b) - statistics.fmean(a))
    extreme = total = 0
    for chosen in itertools.combinations(range(len(pooled)), len(a)):
        first = [pooled[i] for i in chosen]
        second = [pooled[i] for i in range(len(pooled)) if i not in chosen]
        total += 1
        extreme += abs(statistics.fmean(second) - statistics.fmean(first)) >= observed - 1e-12
    return extreme / total


def welch_p(a: list[float], b: list[float]) -> float | None:
    from scipy.stats import ttest_ind

    if len(a) < 2 or len(b) < 2 or (statistics.pvariance(a) == 0 and statistics.pvariance(b) == 0):
        return None  # no spread on either side: the t statistic is undefined
    p = float(ttest_ind(b, a, equal_var=False).pvalue)
    return None if math.isnan(p) else p


def summarize(arms: list[dict]) -> dict:
    """Per measure: each arm's values over seeds, mean and std; the difference (B - A) and its tests."""
    out = {}
    for key, label, lower_better in MEASURES:
        values = [[run[key] for run in arm["runs"] if run.get(key) is not None] for arm in arms]
        if not all(values):
            continue
        (mean_a, std_a), (mean_b, std_b) = mean_std(values[0]), mean_std(values[1])
        row = {"label": label, "lower_is_better": lower_better, "values": values, "mean": [mean_a, mean_b],
               "std": [std_a, std_b], "difference": mean_b - mean_a, "welch_p": welch_p(*values),
               "permutation_p": permutation_p(*values) if min(map(len, values)) > 1 else None}
        row["smallest_permutation_p"] = (1 / math.comb(sum(map(len, values)), len(values[0])) * 2
                                         if row["permutation_p"] is not None else None)
        better = (mean_b < mean_a) == lower_better if mean_a != mean_b else None
        row["better"] = None if better is None else arms[1 if better else 0]["name"]
        row["significant"] = row["permutation_p"] is not None and row["permutation_p"] < ALPHA
        out[key] = row
    return out


def fmt(value, spec="{:.4f}") -> str:
    return "n/a" if value is None else spec.format(value)


def to_markdown(report: dict) -> str:
    a, b = report["arms"]
    s = report["settings"]
    seeds = f"{len(a['runs'])} + {len(b['runs'])} seeds"
    lines = [f"| measure ({seeds}; mean ± std over seeds) | {a['name']} | {b['name']} | {b['name']} − {a['name']} "
             "| Welch t p | permutation p |", "|---|---|---|---|---|---|"]
    for row in report["summary"].values():
        cells = [f"{m:.4f} ± {fmt(sd)}" for m, sd in zip(row["mean"], row["std"])]
        lines.append(f"| {row['label']}{' (lower is better)' if row['lower_is_better'] else ''} | {cells[0]} | "
                     f"{cells[1]} | {row['difference']:+.4f} | {fmt(row['welch_p'], '{:.3g}')} | "
                     f"{fmt(row['permutation_p'], '{:.3g}')} |")
    first = [a["runs"][0], b["runs"][0]]
    lines += ["", f"| equal compute | {a['name']} | {b['name']} |", "|---|---|---|",
              f"| parameters | {first[0]['parameters']:,} | {first[1]['parameters']:,} |",
              f"| training tokens seen per run | {first[0]['tokens_seen']:,} | {first[1]['tokens_seen']:,} |",
              f"| compute 6·N·D per run (FLOPs) | {first[0]['train_flops']:.3g} | {first[1]['train_flops']:.3g} |",
              f"| corpus documents / tokens | {first[0]['corpus_documents']:,} / {first[0]['corpus_tokens']:,} | "
              f"{first[1]['corpus_documents']:,} / {first[1]['corpus_tokens']:,} |",
              f"| epochs over the corpus | {first[0]['epochs']:.2f} | {first[1]['epochs']:.2f} |"]
    for arm_index, arm in enumerate((a, b)):
        synthetic = arm.get("data", {}).get("synthetic")
        if synthetic:
            lines.append(f"| synthetic tokens in {arm['name']}'s corpus (share) / passes over them | "
                         + " | " * arm_index + f"{synthetic['tokens']:,} ({synthetic['share_of_corpus']:.1%}) / "
                         f"{synthetic['passes']:.2f} |" + " |" * (1 - arm_index))
    lines.append(f"| training time per run (s, mean) | {statistics.fmean(r['train_time_s'] for r in a['runs']):.0f} | "
                 f"{statistics.fmean(r['train_time_s'] for r in b['runs']):.0f} |")
    lines += ["", "Per seed:", "", "| run | seed | HumanEval bits/byte | MBPP bits/byte | pass@1 | pass@10 |",
              "|---|---|---|---|---|---|"]
    for arm in (a, b):
        for run in arm["runs"]:
            lines.append(f"| {run['name']} | {run['seed']} | {fmt(run.get('humaneval_bits_per_byte'))} | "
                         f"{fmt(run.get('mbpp_bits_per_byte'))} | {fmt(run.get('pass@1'))} | "
                         f"{fmt(run.get('pass@10'))} |")
    lines.append(f"\npass@k: n={s['n_samples']} samples per HumanEval problem, T={s['temperature']}, "
                 f"top-p {s['top_p']}, {s['max_new_tokens']} new tokens. Permutation p-values are exact; with these "
                 f"seeds the smallest possible is {fmt(next(iter(report['summary'].values()), {}).get('smallest_permutation_p'), '{:.3g}')}.")
    if report.get("contamination"):
        c = report["contamination"]
        lines.append(f"\nClean subsets: items not flagged by {c['report']} ({', '.join(c['methods'])}): "
                     + ", ".join(f"{task} {n['clean']}/{n['items']}" for task, n in c["counts"].items()) + ".")
    for arm in (a, b):
        for note in {run.get("mbpp_note") for run in arm["runs"]} - {None}:
            lines.append(f"\nMBPP for {arm['name']}: {note}")
    for prompt in report["side_by_side"]:
        lines += ["", f"Side by side, greedy, {prompt['title']} (seed-0 models):", "", "```", prompt["prompt"].rstrip(),
                  "```"]
        for arm, text in zip((a, b), prompt["completions"]):
            lines += ["", f"{arm['name']}:", "", "```", text.rstrip() or "(empty)", "```"]
    if report.get("command"):
        lines += ["", f"Command: `{report['command']}`"]
    return "\n".join(lines) + "\n"


def plot(report: dict, path) -> None:
    """One figure: each measure's per-seed values for both arms, with mean ± std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for k, r in report["summary"].items() if "bits_per_byte" in k] or list(report["summary"].values())
    fig, axes = plt.subplots(1, len(rows), figsize=(3.2 * len(rows), 3.4), squeeze=False)
    names = [arm["name"] for arm in report["arms"]]
    for ax, row in zip(axes[0], rows):
        for x, (values, mean, std) in enumerate(zip(row["values"], row["mean"], row["std"])):
            ax.scatter([x] * len(values), values, s=18, alpha=0.7, color=f"C{x}")
            ax.errorbar([x + 0.15], [mean], yerr=[std or 0], fmt="o", color="black", capsize=4)
        ax.set_xticks(range(len(names)), names, fontsize=8)
        ax.set_xlim(-0.5, len(names) - 0.5)
        p = row["permutation_p"]
        ax.set_title(f"{row['label']}\np(perm) = {fmt(p, '{:.2g}')}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
