"""Contamination checks on a corpus with HumanEval items planted verbatim, reformatted and renamed.

What each method should do with each variant:

    variant                                   n-gram   AST (tau 0.95)
    verbatim                                  flags    flags
    reformatted (indentation, blank lines,    flags    flags (rate 1.0)
      trailing comments; docstring kept)
    renamed identifiers, docstring dropped    misses   flags (rate 1.0)
    (re-printed by ast.unparse)
    the clean corpus (stdlib modules)         nothing  nothing
"""
import ast
import builtins
import json
import shutil
import sysconfig
from pathlib import Path

import pytest

from phi_eval.cli import main
from phi_eval.contamination.check import CheckOptions, check
from phi_eval.contamination.corpus import iter_documents, source_identity
from phi_eval.contamination.decontaminate import decontaminate
from phi_eval.contamination.items import Item, load_items
from phi_eval.contamination.ngram_index import NgramIndex, build_index, merge_indexes, open_or_build
from phi_eval.contamination.normalize import WordUnits, words
from phi_eval.contamination.report import load_report, to_markdown
from phi_eval.contamination.subsets import contamination_scores
from phi_eval.errors import UsageError
from phi_eval.tasks import TASKS

VERBATIM = ("HumanEval/0", "HumanEval/12")
REFORMATTED = ("HumanEval/5", "HumanEval/8")
RENAMED = ("HumanEval/9", "HumanEval/11")
PLANTED = VERBATIM + REFORMATTED + RENAMED
STDLIB = Path(sysconfig.get_paths()["stdlib"])


def reformat(code: str) -> str:
    """Same program: 2-space indentation, a blank line after every line, comments after colons."""
    lines = []
    for line in code.splitlines():
        stripped = line.lstrip(" ")
        line = " " * ((len(line) - len(stripped)) // 2) + stripped
        if stripped.endswith(":") and not stripped.startswith(('"""', ">>>")):
            line += "  # next step"
        lines += [line, ""]
    return "\n".join(lines)


def rename(code: str) -> str:
    """Same program with every non-builtin name replaced and docstrings dropped."""
    tree = ast.parse(code)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    names: dict[str, str] = {}

    def new(name: str) -> str:
        return name if name in dir(builtins) else names.setdefault(name, f"q{len(names)}z")

    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            node.id = new(node.id)
        elif isinstance(node, ast.arg):
            node.arg = new(node.arg)
        elif isinstance(node, ast.FunctionDef):
            node.name = new(node.name)
    return ast.unparse(tree)


def humaneval_items() -> list[Item]:
    return load_items([TASKS["humaneval"]])


def write_corpus(root: Path, planted: bool) -> Path:
    """Stdlib modules as plain files; with `planted`, a JSONL of exercises holding the variants."""
    root.mkdir(parents=True)
    shutil.copytree(STDLIB / "json", root / "json", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("textwrap.py", "heapq.py", "bisect.py", "string.py", "fractions.py"):
        shutil.copy(STDLIB / name, root / name)
    if planted:
        code = {item.doc_id: item.code for item in humaneval_items()}
        records = [code[k] for k in VERBATIM[:1]]
        records.append("Exercise. Solve the following problem in Python.\n\n" + code[VERBATIM[1]] + "\nGood luck!")
        records += [reformat(code[k]) for k in REFORMATTED] + [rename(code[k]) for k in RENAMED]
        with open(root / "exercises.jsonl", "w") as f:
            for text in records:
                f.write(json.dumps({"text": text, "meta": "planted"}) + "\n")
    return root


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("corpora")
    return {"planted": write_corpus(root / "planted", True), "clean": write_corpus(root / "clean", False)}


@pytest.fixture(scope="module")
def reports(corpora, tmp_path_factory) -> dict[str, dict]:
    items = humaneval_items()
    options = dict(methods=("ngram", "ast"), workers=2, progress=False)
    index_root = tmp_path_factory.mktemp("indexes")
    return {name: check(items, CheckOptions(corpus=[str(path)], index_dir=index_root / name, **options))
            for name, path in corpora.items()}


def by_id(report: dict) -> dict[str, dict]:
    return {r["doc_id"]: r for r in report["tasks"]["humaneval"]["items"]}


# ---------------------------------------------------------------------------- normalisation

def test_word_ngrams_are_lm_evals():
    from lm_eval.decontamination.janitor import Janitor, word_ngrams

    text = "Hello, World!  It's (quite) a TEST:\n\tof the_janitor's rules; é stays — 12.5% off.\n" * 3
    janitor = Janitor()
    expected = list(word_ngrams(janitor.normalize_string(text), 5))
    assert words(text) == janitor.normalize_string(text).split()
    units = WordUnits()
    ours = units.grams([text], 5)
    # Each n-gram's hash is the hash of the same n-gram string lm-eval builds.
    assert ours.hashes.tolist() == units.grams(expected, 5).hashes.tolist()
    assert len(set(ours.hashes.tolist())) == len(set(expected))


def test_ngrams_stay_inside_documents():
    grams = WordUnits().grams(["a b c", "d e", "", "f g h i"], 3)
    assert grams.docs.tolist() == [0, 3, 3]
    assert grams.positions.tolist() == [0, 0, 1]
    assert grams.units.tolist() == [3, 2, 0, 4]


# ----------------------------------------------------------------------- the planted variants

def test_ngram_flags_verbatim_and_reformatted_and_misses_renamed(reports):
    items = by_id(reports["planted"])
    for doc_id in VERBATIM:
        ngram = items[doc_id]["ngram"]
        assert ngram["flagged"] and ngram["fraction"] == 1.0
        assert ngram["longest_span"] == ngram["ngrams"] + 12  # the whole item, in one document
        assert ngram["documents"][0]["document"].endswith("exercises.jsonl:" + str(VERBATIM.index(doc_id) + 1))
    for doc_id in REFORMATTED:
        ngram = items[doc_id]["ngram"]
        assert ngram["flagged"] and 0.3 < ngram["fraction"] < 1.0  # the comments break some n-grams
        assert "stays" not in ngram["longest_span_text"]
    for doc_id in RENAMED:
        assert items[doc_id]["ngram"]["matched"] == 0 and not items[doc_id]["ngram"]["flagged"]


def test_ast_flags_all_three_variants(reports):
    items = by_id(reports["planted"])
    for doc_id in PLANTED:
        tree = items[doc_id]["ast"]
        assert tree["match_rate"] == 1.0 and tree["flagged"], doc_id
        assert all(tree["similar_at"].values())
        assert tree["match"]["document"].endswith("exercises.jsonl:" + str(PLANTED.index(doc_id) + 1))


def test_clean_corpus_yields_no_flags(reports):
    summary = reports["clean"]["tasks"]["humaneval"]["summary"]
    assert summary["flagged"] == 0 and summary["clean"] == 164
    assert summary["by_method"] == {"ngram": 0, "ast@0.95": 0, "ast@0.9": 0, "ast@0.85": 0, "ast@0.8": 0}


def test_planted_corpus_flags_only_what_was_planted_at_strict_thresholds(reports):
    flagged = {doc_id for doc_id, r in by_id(reports["planted"]).items() if r["flagged"]}
    # HumanEval/0's solution loop also appears in HumanEval/20's (a true 13-gram overlap between
    # two benchmark items, like the false positives phi-1 reports), so 20 is flagged by n-grams.
    assert flagged - set(PLANTED) <= {"HumanEval/20"}
    assert set(PLANTED) <= flagged


def test_fractions_equal_a_plain_python_set_of_lm_eval_ngrams(corpora, reports):
    from lm_eval.decontamination.janitor import Janitor, word_ngrams

    janitor = Janitor()
    corpus = set()
    for document in iter_documents([str(corpora["planted"])]):
        corpus.update(word_ngrams(janitor.normalize_string(document.text), 13))
    for item in humaneval_items():
        grams = list(word_ngrams(janitor.normalize_string(item.text), 13))
        expected = sum(g in corpus for g in grams) / len(grams)
        assert by_id(reports["planted"])[item.doc_id]["ngram"]["fraction"] == pytest.approx(expected, abs=1e-6)


# ------------------------------------------------------------------------------- the index

def queries(index: NgramIndex) -> list[dict]:
    return index.query([item.text for item in humaneval_items()])


@pytest.mark.parametrize("unit", ["word", "token"])
def test_index_built_whole_equals_shards_merged(corpora, tmp_path, tiny_phi_dir, unit):
    tokenizer = str(tiny_phi_dir) if unit == "token" else None
    source = [str(corpora["planted"])]
    whole = build_index(iter_documents(source), tmp_path / "whole", n=13, unit=unit, tokenizer=tokenizer,
                        identity={}, progress=False)
    shards = [build_index(iter_documents(source, shard=(i, 3)), tmp_path / f"shard{i}", n=13, unit=unit,
                          tokenizer=tokenizer, identity={}, chunk_bytes=20_000, progress=False)  # several runs each
              for i in range(3)]
    merged = merge_indexes(shards, tmp_path / "merged", progress=False)
    a, b = NgramIndex(whole), NgramIndex(merged)
    assert a.meta["ngrams"] == b.meta["ngrams"] and a.meta["documents"] == b.meta["documents"]
    assert sorted(a.names) == sorted(b.names)
    assert queries(a) == queries(b)
    hashes = b.arrays["hashes"]
    assert (hashes[1:] >= hashes[:-1]).all()
    assert a.meta["bytes_per_unit"] <= 16.0
    found = {item.doc_id: r for item, r in zip(humaneval_items(), queries(a))}
    assert all(found[doc_id]["fraction"] == 1.0 for doc_id in VERBATIM)


def test_index_is_reused_and_guards_its_settings(corpora, tmp_path, capsys):
    source = [str(corpora["clean"])]
    args = dict(unit="word", tokenizer=None, text_field=None, default_root=tmp_path)

    def factory():
        return iter_documents(source)

    first = open_or_build(factory, source_identity(source), None, n=13, **args)
    assert "reusing" not in capsys.readouterr().out
    second = open_or_build(factory, source_identity(source), None, n=13, **args)
    assert second.directory == first.directory and "reusing" in capsys.readouterr().out
    with pytest.raises(UsageError, match="other sources or settings"):
        open_or_build(factory, source_identity(source), first.directory, n=8, **args)


def test_hub_dataset_source_streams_local_dataset_folder(tmp_path):
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "part.jsonl").write_text('{"content": "one"}\n{"content": "two"}\n')
    documents = list(iter_documents([f"hf:{tmp_path / 'dataset'}"]))
    assert [(d.name.rsplit("#", 1)[1], d.text) for d in documents] == [("0", "one"), ("1", "two")]


# ---------------------------------------------------------------------- report and subsets

def test_report_markdown_and_clean_subset_scores(reports, tmp_path):
    report = reports["planted"]
    markdown = to_markdown(report)
    assert "| HumanEval/0 | ngram, ast@0.95 | 1.000 |" in markdown
    assert report["methods"]["ngram"]["n"] == 13 and report["methods"]["ast"]["taus"] == [0.95, 0.9, 0.85, 0.8]
    records = [{"doc_id": f"HumanEval/{i}", "passed": i % 2 == 0} for i in range(164)]
    scores = contamination_scores(report, tmp_path / "r.json", "humaneval", records)
    flagged = [r["doc_id"] for r in report["tasks"]["humaneval"]["items"] if r["flagged"]]
    assert scores["flagged"] == len(flagged) and scores["clean"] == 164 - len(flagged)
    expected = sum(int(d.split("/")[1]) % 2 == 0 for d in flagged) / len(flagged)
    assert scores["metrics"]["flagged"]["pass@1,none"] == pytest.approx(expected)
    assert scores["subsets"]["ast@0.95"]["flagged"] == len(PLANTED)
    assert set(scores["subsets"]) == {"ngram", "ast@0.95", "ast@0.9", "ast@0.85", "ast@0.8"}
    with pytest.raises(UsageError, match="has no humaneval item HumanEval/999"):
        contamination_scores(report, tmp_path / "r.json", "humaneval", [{"doc_id": "HumanEval/999", "passed": 1}])


# --------------------------------------------------------------------------- decontaminate

def test_decontaminate_drops_documents_with_shared_ngrams(corpora, tmp_path):
    items = humaneval_items()
    manifest = decontaminate([str(corpora["planted"])], items, tmp_path / "clean.jsonl", tmp_path / "m.json",
                             progress=False)
    dropped = {entry["document"].rsplit(":", 1)[1]: entry for entry in manifest["touched"]}
    assert set(dropped) == {"1", "2", "3", "4"}  # verbatim and reformatted; the renamed ones share no 13-gram
    assert "humaneval:HumanEval/0" in dropped["1"]["items"]
    kept = [json.loads(line) for line in open(tmp_path / "clean.jsonl")]
    assert len(kept) == manifest["documents_written"] == manifest["documents_read"] - 4
    assert sum(r.get("meta") == "planted" for r in kept) == len(RENAMED)
    assert json.loads((tmp_path / "m.json").read_text())["documents_dropped"] == 4
    # What is left shares no n-gram with the benchmark.
    again = decontaminate([str(tmp_path / "clean.jsonl")], items, tmp_path / "again.jsonl", tmp_path / "m2.json",
                          progress=False)
    assert again["touched"] == []


def test_decontaminate_masks_only_the_overlapping_text(corpora, tmp_path):
    items = humaneval_items()
    manifest = decontaminate([str(corpora["planted"])], items, tmp_path / "masked.jsonl", tmp_path / "m.json",
                             mode="mask", mask_with="<MASKED>", progress=False)
    assert manifest["documents_masked"] == 4 and manifest["documents_dropped"] == 0
    records = {r["text"][:20]: r for r in map(json.loads, open(tmp_path / "masked.jsonl"))}
    exercise = next(r for key, r in records.items() if key.startswith("Exercise."))
    assert exercise["text"].startswith("Exercise. Solve the following problem in Python.")
    assert exercise["text"].endswith("Good luck!") and "<MASKED>" in exercise["text"]
    again = decontaminate([str(tmp_path / "masked.jsonl")], items, tmp_path / "again.jsonl", tmp_path / "m2.json",
                          progress=False)
    assert again["touched"] == []


# ------------------------------------------------------------------------------------- CLI

def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_end_to_end_with_shards_and_a_run(corpora, tmp_path, phi_home, capsys):
    corpus = corpora["planted"]
    code, out, err = cli(capsys, "contamination", "--corpus", corpus, "--tasks", "humaneval", "--methods",
                         "ngram,ast", "-o", tmp_path / "report.json", "--md", tmp_path / "report.md")
    assert code == 0, err
    assert "humaneval: 7 of 164 flagged (ngram 5, ast@0.95 6," in out
    assert (tmp_path / "report.md").read_text().startswith("# Contamination report")

    for i in range(2):
        code, out, err = cli(capsys, "index", "build", "--corpus", corpus, "--shard", f"{i}/2",
                             "--out", tmp_path / f"shard{i}")
        assert code == 0, err
    code, out, err = cli(capsys, "index", "merge", tmp_path / "shard0", tmp_path / "shard1", "--out", tmp_path / "all")
    assert code == 0, err
    code, out, err = cli(capsys, "contamination", "--index", tmp_path / "all", "--tasks", "humaneval",
                         "-o", tmp_path / "from_shards.json")
    assert code == 0, err
    whole = {r["doc_id"]: r["ngram"] for r in load_report(tmp_path / "report.json")["tasks"]["humaneval"]["items"]}
    sharded = {r["doc_id"]: r["ngram"] for r in load_report(tmp_path / "from_shards.json")["tasks"]["humaneval"]["items"]}
    assert whole == sharded

    docs = TASKS["humaneval"].load_docs(None)[:12]
    with open(tmp_path / "samples.jsonl", "w") as f:
        for doc in docs:
            f.write(json.dumps({"task_id": doc["doc_id"], "completion": doc["canonical_solution"]}) + "\n")
    code, out, err = cli(capsys, "run", "--models", f"replay:{tmp_path / 'samples.jsonl'}", "--tasks", "humaneval",
                         "--limit", "12", "--out", tmp_path / "out", "--workers", "2",
                         "--contamination", tmp_path / "report.json")
    assert code == 0, err
    assert "| humaneval | any | 5 | 7 | 1.000 | 1.000 |" in out  # 0, 5, 8, 9 and 11 are planted
    results = json.loads(next((tmp_path / "out").glob("*/results.json")).read_text())
    block = results["contamination"]["humaneval"]
    assert block["flagged"] + block["clean"] == 12
    assert block["metrics"]["clean"]["pass@1,none"] == 1.0
    assert block["thresholds"]["ngram"] == {"threshold": 0.0, "n": 13, "unit": "word"}

    code, out, err = cli(capsys, "leaderboard", tmp_path / "out", "-o", tmp_path / "board.json",
                         "--md", tmp_path / "board.md")
    assert code == 0, err
    assert "flagged of 12; clean 1.000" in (tmp_path / "board.md").read_text()


def test_cli_decontaminate(corpora, tmp_path, capsys):
    code, out, err = cli(capsys, "data", "decontaminate", "--corpus", corpora["planted"], "--tasks", "humaneval",
                         "--out", tmp_path / "clean.jsonl")
    assert code == 0, err
    assert "dropped 4" in out
    assert json.loads((tmp_path / "clean.manifest.json").read_text())["documents_dropped"] == 4


@pytest.mark.parametrize("argv, message", [
    (["contamination", "--tasks", "humaneval"], "needs --corpus"),
    (["contamination", "--corpus", "/nonexistent", "--tasks", "humaneval"], "does not exist"),
    (["contamination", "--index", "/tmp", "--methods", "embedding"], "read the corpus"),
    (["contamination", "--index", "/tmp", "--methods", "bogus"], "unknown method"),
    (["contamination", "--index", "/tmp"], "not an n-gram index"),
    (["index", "build", "--corpus", "/tmp", "--out", "/tmp/x", "--shard", "3/2"], "--shard"),
    (["data", "decontaminate", "--corpus", "/tmp", "--out", "/tmp/x.jsonl", "--tasks", "gsm8k"], "do not know the text"),
])
def test_cli_bad_input_is_one_line(capsys, phi_home, argv, message):
    code, out, err = cli(capsys, *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_mbpp_items_are_statement_and_code(mbpp_dir, tmp_path, capsys, phi_home):
    items = load_items([TASKS["mbpp"]], mbpp_dir, limit=3)
    doc = TASKS["mbpp"].load_docs(mbpp_dir)[0]
    assert items[0].text == doc["text"] + "\n" + doc["code"] and items[0].code == doc["code"]
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "notes.md").write_text("Seen in training:\n\n" + items[1].text + "\n")
    code, out, err = cli(capsys, "contamination", "--corpus", tmp_path / "corpus", "--tasks", "mbpp", "--data-dir",
                         mbpp_dir, "--limit", "3", "--methods", "ngram,ast", "-o", tmp_path / "r.json")
    assert code == 0, err
    flagged = [r["doc_id"] for r in load_report(tmp_path / "r.json")["tasks"]["mbpp"]["items"] if r["flagged"]]
    assert flagged == [items[1].doc_id]
