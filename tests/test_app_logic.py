"""The app's logic without a server: repetition, word diff, settings, Pareto frontier, the leaderboard and
samples views, the shared model pool and the side-by-side comparison (with stand-in models)."""
import json
import threading
import time

import pytest

from app_support import write_leaderboard, write_run
from phi_eval.app import leaderboard_plots, leaderboard_view
from phi_eval.app.comparison import RENDER_INTERVAL_S, Comparison
from phi_eval.app.diff import word_diff
from phi_eval.app.pool import ModelPool
from phi_eval.app.repetition import repetition
from phi_eval.app.samples_view import RunSamples, load_run
from phi_eval.app.settings import format_stops, generation_config, parse_stops
from phi_eval.errors import UsageError
from phi_eval.models import Completion, GenerationConfig
from phi_eval.zoo import parse_model_spec


# ------------------------------------------------------------------------------------- repetition

def test_repetition_scores_and_marks_the_repeats_not_the_first_occurrence():
    text = "I would like to be free. I would like to be free. I would like to be free."
    rep = repetition(text, n=4)
    # 18 words -> 15 four-grams; the text cycles every 6 words, so only the first 6 four-grams are new.
    assert rep.score == pytest.approx(9 / 15)
    assert [text[s:e] for s, e in rep.spans] == ["I would like to be free. I would like to be free."]
    assert rep.spans[0][0] == text.index("I would", 1)  # the first sentence stays unmarked


def test_repetition_of_text_without_repeats_or_too_short_is_zero():
    assert repetition("the quick brown fox jumps over the lazy dog", 3).score == 0.0
    assert repetition("two words", 4) == repetition("two words", 4) and repetition("two words", 4).score == 0.0
    assert repetition("", 4).spans == ()


def test_repetition_compares_words_case_insensitively_and_marks_separate_runs():
    text = "Go home now. stop. go HOME now!"
    assert [text[s:e] for s, e in repetition(text, n=2).spans] == ["go HOME"]
    text = "a b x A b y a b"
    assert [text[s:e] for s, e in repetition(text, n=2).spans] == ["A b", "a b"]
    with pytest.raises(ValueError):
        repetition(text, 0)


# ------------------------------------------------------------------------------------------- diff

def test_word_diff_marks_removed_and_added_words_and_rebuilds_both_texts():
    a, b = "the cat sat on the mat", "the dog sat on  the mat today"
    diff = word_diff(a, b)
    assert ("removed", "cat ") in diff.ops and ("added", "dog ") in diff.ops and ("added", "today") in diff.ops
    assert "".join(t for kind, t in diff.ops if kind != "added").split() == a.split()
    assert "".join(t for kind, t in diff.ops if kind != "removed") == b
    assert 0.5 < diff.similarity < 1.0


def test_word_diff_of_equal_and_empty_texts():
    assert word_diff("same  words\n", "same words").ops == (("same", "same words"),)
    assert word_diff("", "").similarity == 1.0
    assert word_diff("", "new").ops == (("added", "new"),)


# --------------------------------------------------------------------------------------- settings

def test_stop_sequences_are_one_per_line_with_escapes():
    assert parse_stops("\\ndef\n\\n#\n\nQuestion:\n\\ndef") == ("\ndef", "\n#", "Question:")
    assert parse_stops(format_stops(("\nclass", "a\\b", "\t"))) == ("\nclass", "a\\b", "\t")
    assert parse_stops(None) == ()


def test_generation_config_checks_each_field_with_a_clear_message():
    config = generation_config(0.7, 0.9, 32, 7, "\\n\\n")
    assert config == GenerationConfig(max_new_tokens=32, temperature=0.7, top_p=0.9, stop=("\n\n",), seed=7)
    for args, message in [((-1, 1, 8, 1, ""), "temperature must be between 0"),
                          ((0, 0, 8, 1, ""), "top-p must be above 0"),
                          ((0, 1, 0, 1, ""), "max tokens must be a whole number from 1"),
                          ((0, 1, 2.5, 1, ""), "max tokens must be a whole number"),
                          ((0, 1, None, 1, ""), "max tokens must be a number, not None"),
                          ((0, 1, 8, -3, ""), "seed must be a whole number")]:
        with pytest.raises(UsageError, match=message):
            generation_config(*args)
    with pytest.raises(UsageError, match="^side B: temperature"):
        generation_config("hot", 1, 8, 1, "", where="side B: ")


# ------------------------------------------------------------------------------------ leaderboard

def test_pareto_frontier_keeps_the_points_nothing_smaller_beats():
    points = [(1e9, 0.3), (1e8, 0.1), (5e9, 0.2), (1e10, 0.5), (1e8, 0.05), (2e10, 0.5)]
    assert leaderboard_plots.pareto_frontier(points) == [1, 0, 3]
    assert leaderboard_plots.pareto_frontier([]) == []


@pytest.fixture
def board_rows(tmp_path, phi_home):
    return leaderboard_view.load_leaderboards([write_leaderboard(tmp_path / "leaderboard.json")])


def test_leaderboard_filters_sort_and_contamination(board_rows):
    measured = leaderboard_view.filter_rows(board_rows, kind="measured")
    assert [r["model"] for r in leaderboard_view.sort_rows(measured, "measured")] == ["phi-1", "tiny"]
    assert [r["model"] for r in leaderboard_view.sort_rows(measured, "measured", descending=False)] == ["tiny", "phi-1"]
    reported = leaderboard_view.filter_rows(board_rows, kind="reported")
    assert reported and all(r["value"] is None and r["reported_value"] is not None for r in reported)
    [tiny] = leaderboard_view.filter_rows(board_rows, contamination="contaminated")
    assert tiny["model"] == "tiny" and leaderboard_view.contamination_label(tiny) == "yes (12 of 164)"
    assert leaderboard_view.filter_rows(board_rows, model="PHI-1") == \
        [r for r in board_rows if "phi-1" in r["model"]]
    header = list(leaderboard_view.COLUMNS)
    [row] = leaderboard_view.table([tiny])
    assert row[header.index("measured")] == 0.0366 and row[header.index("parameters")] == 1_843_200
    with pytest.raises(UsageError, match="cannot sort by"):
        leaderboard_view.sort_rows(board_rows, "speed")


def test_leaderboard_rows_shared_by_two_files_appear_once(tmp_path, board_rows):
    path = tmp_path / "leaderboard.json"
    copy = tmp_path / "copy.json"
    copy.write_text(path.read_text())
    assert leaderboard_view.load_leaderboards([path, copy]) == board_rows


@pytest.mark.parametrize("content, message", [
    ("{not json", "is not readable JSON"),
    ('{"schema_version": 1}', 'has no "rows" list'),
    ('{"schema_version": 2, "rows": []}', "schema_version 2"),
    ('{"schema_version": 1, "rows": [{"model": "x"}]}', "row 0 lacks leaderboard fields"),
])
def test_bad_leaderboard_files_are_usage_errors(tmp_path, content, message):
    path = tmp_path / "board.json"
    path.write_text(content)
    with pytest.raises(UsageError, match=message):
        leaderboard_view.load_leaderboards([path])
    with pytest.raises(UsageError, match="no leaderboard file"):
        leaderboard_view.load_leaderboards([])


def test_leaderboard_plot_panels_and_figure(board_rows):
    panels = leaderboard_plots.panels(board_rows)
    assert list(panels) == ["humaneval · pass@1"]
    rows = leaderboard_plots.panel_rows(board_rows, panels["humaneval · pass@1"])
    figure = leaderboard_plots.figure(rows, "humaneval · pass@1")
    axes = figure.get_axes()
    assert [ax.get_xlabel() for ax in axes] == ["parameters", "training tokens seen", "training compute 6·N·D (FLOPs)"]
    assert all(ax.get_lines() for ax in axes)  # a frontier on every panel


# ---------------------------------------------------------------------------------------- samples

def test_samples_view_filters_items_and_shows_every_model(tmp_path):
    run = RunSamples(write_run(tmp_path / "out"))
    assert list(run.tasks) == ["humaneval"] and run.models("humaneval") == ["model-one", "model-two"]
    assert run.items("humaneval", "passed") == ["HumanEval/0"]
    assert run.items("humaneval", "failed") == ["HumanEval/1"]
    assert run.items("humaneval", "differs") == ["HumanEval/2"]
    headers, rows = run.item_table("humaneval", "all")
    assert headers == ["item", "model-one", "model-two"]
    assert rows[2] == ["HumanEval/2", "passed", "failed"]
    records = run.records("humaneval", "HumanEval/2")
    assert records["model-two"][0]["reason"].startswith("NameError")
    with pytest.raises(UsageError, match="no item 'HumanEval/9'"):
        run.records("humaneval", "HumanEval/9")
    with pytest.raises(UsageError, match="has no samples of task 'mbpp'"):
        run.items("mbpp")


def test_samples_view_reads_a_model_directory_and_rereads_changed_files(tmp_path):
    out = write_run(tmp_path / "out")
    one = out / "hf__model-one"
    assert load_run(one).models("humaneval") == ["model-one"] and load_run(one) is load_run(one)
    path = one / "samples_humaneval.jsonl"
    path.write_text(path.read_text().replace('"passed": false', '"passed": true'))
    assert load_run(one).items("humaneval", "failed") == []


def test_samples_view_bad_input(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        load_run(tmp_path / "missing")
    with pytest.raises(UsageError, match="no samples_\\*.jsonl files"):
        RunSamples(tmp_path)
    (tmp_path / "samples_humaneval.jsonl").write_text('{"doc_id": 1}\nnot json\n')
    with pytest.raises(UsageError, match=":2 is not a sample record"):
        RunSamples(tmp_path)


# -------------------------------------------------------------------------- stand-in models, pool

class FakeModel:
    """Streams `text` one character every `delay` seconds."""

    def __init__(self, name, text="abcdefghij", delay=0.0):
        self.identity = {"name": name, "backend": "fake"}
        self.text, self.delay = text, delay

    def stream(self, request):
        for ch in self.text[:request.config.max_new_tokens]:
            time.sleep(self.delay)
            yield ch
        return Completion(self.text[:request.config.max_new_tokens], "length", len(self.text))


def fake_pool(models, **kwargs):
    loads = []

    def loader(spec):
        loads.append(spec.target)
        return models[spec.target.rsplit("/", 1)[-1]]

    pool = ModelPool(loader=loader, **kwargs)
    return pool, loads


@pytest.fixture
def model_dirs(tmp_path):
    for name in ("fast", "slow", "third"):
        (tmp_path / name).mkdir()
    return tmp_path


def test_pool_loads_each_model_once_and_shares_it(model_dirs):
    pool, loads = fake_pool({"fast": FakeModel("fast")})
    spec = parse_model_spec(f"hf:{model_dirs / 'fast'}")
    same_dir = parse_model_spec(f"hf:{model_dirs / 'fast'}/")
    results = []

    def use(s):
        with pool.use(s) as model:
            results.append(model)

    threads = [threading.Thread(target=use, args=(spec if i % 2 else same_dir,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1 and len({id(m) for m in results}) == 1 and pool.loaded() == ["fast"]


def test_pool_drops_the_least_recently_used_idle_model_and_waits_when_all_are_busy(model_dirs):
    models = {n: FakeModel(n) for n in ("fast", "slow", "third")}
    pool, loads = fake_pool(models, capacity=2)
    spec = {n: parse_model_spec(f"hf:{model_dirs / n}") for n in models}
    with pool.use(spec["fast"]), pool.use(spec["slow"]):
        got = []
        waiter = threading.Thread(target=lambda: got.append(pool.use(spec["third"]).__enter__()))
        waiter.start()
        time.sleep(0.2)
        assert not got  # both held models are busy: the third waits
        with pool.use(spec["fast"]):
            pass  # "fast" used again: "slow" becomes the least recently used
    waiter.join(5)
    assert got == [models["third"]] and sorted(pool.loaded()) == ["fast", "third"]


def test_pool_caps_concurrent_streams_and_a_stopped_wait_gives_up(model_dirs):
    pool, _ = fake_pool({}, max_streams=1)
    never = threading.Event()
    with pool.stream_slot(never) as first:
        stopped = threading.Event()
        stopped.set()
        with pool.stream_slot(stopped) as second:
            assert first is True and second is False
    with pool.stream_slot(never) as again:
        assert again is True
    with pytest.raises(UsageError, match="no model chosen"):
        pool.resolve("  ")


# ------------------------------------------------------------------------------------- comparison

def run_comparison(comparison, sides, prompt="Once upon a time"):
    runs = comparison.start(prompt, GenerationConfig(max_new_tokens=64), sides)
    updates = sum(1 for _ in comparison.watch(runs))
    return runs, updates


def test_each_side_streams_at_its_own_pace(model_dirs):
    pool, _ = fake_pool({"fast": FakeModel("fast", "x" * 20, 0.001), "slow": FakeModel("slow", "y" * 20, 0.1)})
    comparison = Comparison(pool)
    config = GenerationConfig(max_new_tokens=64)
    runs = comparison.start("prompt", config, {0: (f"hf:{model_dirs / 'fast'}", config, False),
                                               1: (f"hf:{model_dirs / 'slow'}", config, False)})
    fast, slow = runs
    assert fast.finished.wait(1.5) and not slow.finished.is_set()  # the slow side (2 s) holds nothing back
    slow.finished.wait(10)
    assert (fast.text, slow.text, fast.status, slow.status) == ("x" * 20, "y" * 20, "done", "done")
    assert fast.time_to_first_token_s < slow.time_to_first_token_s and fast.output_tokens == 20
    assert fast.tokens_per_s > slow.tokens_per_s


def test_a_side_can_be_stopped_and_retried_alone(model_dirs):
    pool, _ = fake_pool({"slow": FakeModel("slow", "z" * 200, 0.01), "fast": FakeModel("fast", "done!")})
    comparison = Comparison(pool)
    config = GenerationConfig(max_new_tokens=200)
    slow, fast = comparison.start("p", config, {0: (f"hf:{model_dirs / 'slow'}", config, False),
                                                1: (f"hf:{model_dirs / 'fast'}", config, False)})
    fast.finished.wait(5)
    deadline = time.monotonic() + 5
    while not slow.text and time.monotonic() < deadline:  # stop it part-way through
        time.sleep(0.01)
    comparison.stop(0)
    assert slow.finished.wait(5) and slow.status == "stopped" and slow.finish_reason == "stopped"
    assert 0 < len(slow.text) < 200 and fast.text == "done!"
    retried = comparison.run_side(0, f"hf:{model_dirs / 'fast'}", config, False)
    assert list(comparison.watch([retried])) and retried.text == "done!" and comparison.runs[1] is fast


def test_pieces_arriving_fast_are_rendered_together(model_dirs):
    """100 pieces 5 ms apart make a handful of updates, not one per piece: each update costs the server CPU
    the models need."""
    pool, _ = fake_pool({"fast": FakeModel("fast", "x" * 100, 0.005)})
    comparison = Comparison(pool)
    started = time.monotonic()
    runs, updates = run_comparison(comparison, {0: (f"hf:{model_dirs / 'fast'}", GenerationConfig(), False)},
                                   prompt="p")
    assert runs[0].text == "x" * 100
    assert 2 <= updates <= (time.monotonic() - started) / RENDER_INTERVAL_S + 2


def test_side_errors_stay_on_their_side_and_the_record_exports(model_dirs):
    pool, _ = fake_pool({"fast": FakeModel("fast", "one two three one two three")})
    comparison = Comparison(pool)
    config = GenerationConfig(max_new_tokens=64)
    override = GenerationConfig(max_new_tokens=7, temperature=0.5)
    runs, updates = run_comparison(comparison, {0: (f"hf:{model_dirs / 'fast'}", config, False),
                                                1: ("no-such-model", config, False),
                                                2: (f"hf:{model_dirs / 'fast'}", override, True)})
    assert updates >= 2
    assert runs[1].status == "error" and "unknown model 'no-such-model'" in runs[1].error
    record = json.loads(json.dumps(comparison.record(3, (0, 2))))  # plain JSON all the way down
    assert record["prompt"] == "Once upon a time" and record["settings"]["max_new_tokens"] == 64
    a, b, c = record["sides"]
    assert (a["side"], a["model"]["name"], a["completion"], a["override"]) == ("A", "fast", runs[0].text, False)
    assert a["repetition"] == {"n": 3, "score": pytest.approx(1 / 4)}
    assert a["metrics"]["output_tokens"] == 27 and a["metrics"]["time_to_first_token_s"] is not None
    assert b["status"] == "error" and b["model"] is None
    assert c["settings"]["max_new_tokens"] == 7 and c["override"] is True and c["completion"] == "one two"
    assert record["diff"]["sides"] == ["A", "C"] and record["diff"]["similarity"] < 1
    with pytest.raises(UsageError, match="prompt is empty"):
        comparison.start("  ", config, {})
    with pytest.raises(UsageError, match="press Generate first"):
        Comparison(pool).run_side(0, "x", config, False)


def test_plot_labels_do_not_overlap(board_rows, tmp_path):
    """Points at one size (a model's measured and reported scores, models of equal size) get labels that
    do not cover each other, in the app's plot and in `phi-eval leaderboard --plot`'s scores.png."""
    from matplotlib.figure import Figure

    from phi_eval.report.plots import laid_out, spread_labels

    def overlapping(fig) -> int:
        renderer = laid_out(fig)
        pairs = 0
        for ax in fig.axes:
            boxes = [t.get_window_extent(renderer) for t in ax.texts if hasattr(t, "xyann") and t.get_text()]
            assert all(b.width > 1 for b in boxes)  # drawn, so measured
            pairs += sum(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
        return pairs

    title, key = next(iter(leaderboard_plots.panels(board_rows).items()))
    assert overlapping(leaderboard_plots.figure(leaderboard_plots.panel_rows(board_rows, key), title)) == 0
    fig = Figure(figsize=(4, 3))
    ax = fig.subplots()
    ax.scatter([1e9, 1.3e9, 2e9], [0.4, 0.5, 0.6])
    for name in ("phi-1", "phi-1 (reported)", "same-size"):
        ax.annotate(name, (1.3e9, 0.5), xytext=(4, 3), textcoords="offset points", fontsize=7)
    ax.set_xscale("log")
    assert overlapping(fig) == 3
    spread_labels(fig)
    assert overlapping(fig) == 0


def test_app_preloads_the_default_comparison_unless_told_not_to(monkeypatch):
    from phi_eval.app import page
    from phi_eval.cli import main as cli_main

    asked = []
    monkeypatch.setattr(page, "main", lambda **options: asked.append(options["preload"]))
    assert cli_main(["app", "--no-preload"]) == 0 and cli_main(["app"]) == 0
    assert asked == [False, True]


def test_the_queue_polls_every_50_ms_not_every_1_ms():
    """gradio's idle queue polls every 1 ms (6% of a core on a 2-core machine) and its progress loop every
    10 ms while an event runs; a gradio without these settings fails here, so the app's cost is looked at again."""
    from phi_eval.app.page import PROGRESS_POLL_S, QUEUE_POLL_S, build, queued

    demo = queued(build(("", ""), pool=ModelPool()))
    assert demo._queue.sleep_when_free == QUEUE_POLL_S == 0.05
    assert demo._queue.progress_update_sleep_when_free == PROGRESS_POLL_S == 0.1


def test_pool_loads_in_parallel_only_while_memory_covers_them(model_dirs):
    """Two loads of 1 KiB weights run at once; with free memory for one load only, they run one at a time.
    A failed load leaves the held models alone."""
    class SlowLoads:
        def __init__(self):
            self.now = self.peak = 0
            self.lock = threading.Lock()

        def __call__(self, spec):
            with self.lock:
                self.now += 1
                self.peak = max(self.peak, self.now)
            time.sleep(0.3)
            with self.lock:
                self.now -= 1
            if spec.target.endswith("third"):
                raise UsageError("cannot load model 'third'")
            return FakeModel(spec.target)

    for name in ("fast", "slow"):
        (model_dirs / name / "model.safetensors").write_bytes(bytes(1024))
    specs = [parse_model_spec(f"hf:{model_dirs / name}") for name in ("fast", "slow")]
    for free, expected_peak in ((1e9, 2), (1024 * 5, 1)):  # a load's estimate: 1 KiB x 2 (peak) x 2 (bf16)
        loader = SlowLoads()
        pool = ModelPool(capacity=2, loader=loader, free_memory=lambda free=free: free)
        def use(spec):
            with pool.use(spec):
                pass

        threads = [threading.Thread(target=use, args=(s,)) for s in specs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert loader.peak == expected_peak and pool.loads == 2
    with pytest.raises(UsageError, match="cannot load model 'third'"):
        with pool.use(parse_model_spec(f"hf:{model_dirs / 'third'}")):
            pass
    assert sorted(pool.loaded()) == sorted(s.target for s in specs)
