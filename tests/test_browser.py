"""A real browser: Debian's chromium, driven by Playwright, opens the app, compares two tiny models side by
side, reads the leaderboard plot and a run's samples, and saves screenshots (to $PHI_EVAL_SCREENSHOTS when
set). Every request the page makes goes to the app itself. scripts/install_browser.sh installs both.

The rest of the file is the app as a new user meets it (issue 15), on one app server shared by the module
whose models are stand-ins (words streamed at a set pace, loads that take a set time): the tests are about
the page, so they run in seconds."""
import json
import os
import re
import shutil
import time
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlparse

import pytest

from app_support import launched, write_leaderboard, write_run
from phi_eval.app.pool import ModelPool, load_for_app
from phi_eval.errors import UsageError
from phi_eval.models import Completion

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Debian's chromium as root in a sandbox-less container, with nothing that phones home.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 60_000

if not Path(CHROMIUM).exists():
    pytest.skip("no chromium (install it with scripts/install_browser.sh)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="no Playwright (install it with scripts/install_browser.sh)")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("profile")), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser):
    page = browser.new_page()
    try:
        yield page
    finally:
        page.close()


def test_side_by_side_leaderboard_and_samples_in_chromium(page, tiny_phi_dir, tmp_path, phi_home):
    from phi_eval.app import page as app
    from tiny import make_tiny_phi

    screenshots = Path(os.environ.get("PHI_EVAL_SCREENSHOTS") or tmp_path)
    screenshots.mkdir(parents=True, exist_ok=True)
    specs = [f"hf:{tiny_phi_dir}", f"hf:{make_tiny_phi(tmp_path / 'second', seed=1)}"]
    demo = app.build(specs, leaderboards=[write_leaderboard(tmp_path / "board" / "leaderboard.json")],
                     samples_dir=str(write_run(tmp_path / "out")))
    with launched(demo) as url:
        hosts = set()
        page.on("request", lambda request: hosts.add(urlparse(request.url).netloc or request.url.split(":")[0]))
        page.goto(url)
        page.get_by_label("max tokens").first.fill("120")
        page.locator("#generate").click()
        for side in "AB":
            page.locator(f"#metrics-{side}", has_text="done").wait_for()
        completion_a, completion_b = (page.locator(f"#completion-{s} .completion").inner_text() for s in "AB")
        assert completion_a.strip() and completion_b.strip() and completion_a != completion_b
        assert "120 output tokens" in page.locator("#metrics-A").inner_text()
        assert page.locator("#completion-A mark.repeat").count() > 0  # the seed-0 model repeats itself
        assert page.locator("#diff .removed").count() > 0 and page.locator("#diff .added").count() > 0
        page.screenshot(path=screenshots / "side_by_side.png", full_page=True)

        page.get_by_role("tab", name="Leaderboard").click()
        page.get_by_text("codegen-350M-mono").filter(visible=True).first.wait_for()
        page.locator("img[src^='data:image']").first.wait_for()  # the plot, rendered by the server
        page.screenshot(path=screenshots / "leaderboard.png", full_page=True)

        page.get_by_role("tab", name="Samples").click()
        page.get_by_role("button", name="Load").click()
        page.get_by_text("HumanEval/1").filter(visible=True).first.wait_for()  # the run's items are listed
        page.get_by_label("differs").check()
        page.locator("#samples-item", has_text="NameError").wait_for()
        assert page.locator("#samples-item .model-samples").count() == 2
        page.screenshot(path=screenshots / "samples.png", full_page=True)
    assert hosts <= {urlparse(url).netloc, "data", "blob"}, f"the page fetched from outside: {hosts}"
    assert (screenshots / "side_by_side.png").stat().st_size > 10_000


# ------------------------------------------------------------------------ the app as a new user meets it

LOAD_S = 3.0  # each stand-in model's load; three loaded one after another would take 9 s
WORDS = [f"word{i} " for i in range(200)]


class WordModel:
    """Streams words at a set pace; its count is the number of words."""

    def __init__(self, name: str, delay: float):
        self.identity = {"name": name, "backend": "stand-in"}
        self.delay = delay

    def stream(self, request):
        words = WORDS[:request.config.max_new_tokens]
        for word in words:
            time.sleep(self.delay)
            yield word
        return Completion("".join(words), "length", len(words))


PACES = {"fake-a": 0.01, "fake-b": 0.02, "fake-slow": 0.1, "fake-late": 0.01}


def stand_in_loader(spec):
    """Stand-ins for the fake-* folders; anything else goes through the app's real loader checks (a folder
    without config.json, an unreachable openai: endpoint), and `unloadable` fails as a hub model would."""
    name = Path(spec.target).name
    if name in PACES:
        time.sleep(LOAD_S)
        return WordModel(name, PACES[name])
    if name == "unloadable":
        raise UsageError(f"cannot load model '{spec.target}': it is not on the hub's cache (HF_HUB_OFFLINE=1 is set)")
    return load_for_app(spec)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One app for the module: three stand-in models preloaded at start (as `phi-eval app` does), room for
    three models, and a run directory."""
    from phi_eval.app import page as app

    root = tmp_path_factory.mktemp("new-user")
    for name in (*PACES, "not-a-model", "unloadable"):
        (root / name).mkdir()
    for name in PACES:  # weights of a known size: the pool may load them side by side
        (root / name / "model.safetensors").write_bytes(bytes(1024))
    specs = [f"hf:{root / name}" for name in ("fake-a", "fake-b", "fake-slow")]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PHI_EVAL_HOME", str(root / "home"))
        pool = ModelPool(capacity=3, loader=stand_in_loader)
        started = time.monotonic()
        preloads = pool.preload(specs)
        demo = app.build(specs, pool=pool, samples_dir=str(write_run(root / "run")))
        with launched(demo) as url:
            yield SimpleNamespace(url=url, pool=pool, specs=specs, root=root, started=started, preloads=preloads)


def open_app(page, served):
    for preload in served.preloads:  # the module's preloads are done before any page opens
        preload.join()
    served.preloaded_at = getattr(served, "preloaded_at", None) or time.monotonic()
    page.goto(served.url)
    page.locator("#generate").wait_for()


def metrics(page, side: str) -> str:
    return page.locator(f"#metrics-{side}").inner_text()


def test_1_models_preload_in_parallel_and_loading_shows_stage_and_time(page, served):
    open_app(page, served)
    assert served.pool.loads == 3 and served.pool.peak_parallel_loads == 3  # together, not one after another
    assert served.preloaded_at - served.started < 2 * LOAD_S
    choose(page, "A", f"hf:{served.root / 'fake-late'}")  # not preloaded: it loads when asked for
    page.locator("#generate").click()
    page.locator("#metrics-A", has_text="loading the model: loading the weights").wait_for()
    page.locator("#metrics-A", has_text=re.compile(r"loading the weights · [1-9] s so far")).wait_for()  # counts up
    for side in "ABC":
        page.locator(f"#metrics-{side}", has_text="done").wait_for()
    assert re.search(r"model ready after [3-9]\.\d s", metrics(page, "A")), metrics(page, "A")
    assert "model already loaded" in metrics(page, "B") and "model already loaded" in metrics(page, "C")
    assert served.pool.loads == 4


def test_2_enter_in_a_model_box_keeps_what_was_typed(page, served):
    open_app(page, served)
    box = page.get_by_label("model A", exact=True)
    for typed in ("phi", "hf:/some/where/else", ""):
        box.click()
        box.fill(typed)
        box.press("Enter")
        page.locator("#header-A", has_text=typed or "no model chosen").wait_for()
        assert box.input_value() == typed
    box.click()  # a choice reached with the arrow keys is still taken by Enter
    box.fill("smollm2")
    box.press("ArrowDown")
    box.press("Enter")
    page.locator("#header-A", has_text="smollm2-135m-instruct").wait_for()


def test_3_a_failed_load_never_evicts_a_loaded_model(page, served):
    open_app(page, served)
    held = served.pool.loaded()
    loads = served.pool.loads
    assert len(held) == served.pool.capacity  # the pool is full
    choose(page, "A", f"hf:{served.root / 'unloadable'}")
    choose(page, "B", "openai:gpt-x@http://127.0.0.1:9/v1")
    page.locator("#generate").click()
    page.locator("#metrics-A", has_text="Error").wait_for()
    page.locator("#metrics-B", has_text="cannot reach the openai: endpoint http://127.0.0.1:9/v1").wait_for()
    page.locator("#metrics-C", has_text="done").wait_for()
    assert sorted(served.pool.loaded()) == sorted(held) and served.pool.loads == loads
    assert "model already loaded" in metrics(page, "C")


def test_4_runnable_models_are_marked_and_listed_first(page, served):
    open_app(page, served)
    page.get_by_label("model A", exact=True).click()
    options = page.get_by_role("option").all_inner_texts()
    marks = [o.split()[0] for o in options]
    assert marks[:2] == ["✓", "✓"] and "✓" not in marks[marks.index("✗"):]
    assert any(o.startswith("✓ gemma-3-270m") and "installed package" in o for o in options)
    assert any(o.startswith("✗ phi-1 ") and "offline" in o for o in options)
    assert any(o.startswith("✗ phi-tiny") and "phi-eval train" in o for o in options)


def test_5_bad_input_gets_one_message_at_the_field_and_the_page_keeps_working(page, served, tmp_path):
    open_app(page, served)
    page.get_by_label("prompt", exact=True).fill("  ")
    page.get_by_label("seed", exact=True).first.fill("-1")
    page.locator("#generate").click()
    page.get_by_text("the prompt is empty").wait_for()
    page.get_by_text("seed must be a whole number, 0 or more").wait_for()
    assert no_error_badges(page)
    assert "not run" in metrics(page, "A")  # nothing ran

    page.get_by_role("tab", name="Leaderboard").click()
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    good = write_leaderboard(tmp_path / "board" / "leaderboard.json")
    upload = page.locator("input[type=file]").first
    upload.set_input_files(str(bad))
    page.locator("#leaderboard-problems", has_text='bad.json has no "rows" list').wait_for()
    upload.set_input_files(str(good))  # the next upload works, and the filters with it
    page.get_by_text("codegen-350M-mono").filter(visible=True).first.wait_for()
    assert page.locator("#leaderboard-problems").inner_text().strip() == ""
    assert no_error_badges(page)

    page.get_by_role("tab", name="Samples").click()
    page.get_by_label("run directory", exact=False).fill(str(tmp_path / "nowhere"))
    page.get_by_role("button", name="Load").click()
    page.get_by_text("does not exist; give the --out directory").wait_for()
    assert no_error_badges(page)


def test_6_messages_and_placeholders_render_as_text(page, served, tmp_path):
    open_app(page, served)
    choose(page, "A", f"hf:{served.root / 'unloadable'}")
    choose(page, "B", f"hf:{served.root / 'not-a-model'}")
    page.get_by_label("2", exact=True).check()
    page.locator("#generate").click()
    page.locator("#metrics-B", has_text="Error").wait_for()
    page.locator("#metrics-A", has_text="Error").wait_for()
    assert f"cannot load model '{served.root / 'unloadable'}'" in metrics(page, "A")
    assert "&#x27;" not in metrics(page, "A")
    assert f"no config.json in {served.root / 'not-a-model'}" in metrics(page, "B")


    page.get_by_label("3", exact=True).check()  # side C has no run: the diff from A to C has nothing to show
    pick(page, "#diff-right", "C")
    page.locator("#diff", has_text="run sides A and C to see their diff").wait_for()
    assert "*" not in page.locator("#diff").inner_text()

    run = tmp_path / "run" / "hf__only"
    run.mkdir(parents=True)
    (run / "samples_humaneval.jsonl").write_text(json.dumps(
        {"doc_id": "HumanEval/0", "completion": "    return *args", "passed": True, "status": "passed"}) + "\n")
    page.get_by_role("tab", name="Samples").click()
    page.get_by_label("run directory", exact=False).fill(str(run.parent))
    page.get_by_role("button", name="Load").click()
    page.locator("#samples-item", has_text="return *args").wait_for()  # model text shows as written
    page.get_by_label("failed", exact=True).check()  # no item failed
    page.locator("#samples-item", has_text="no item chosen").wait_for()
    assert "*" not in page.locator("#samples-item").inner_text()


def test_7_layout(page, served):
    open_app(page, served)
    long_spec = "hf:/" + "/".join(["a-rather-long-directory-name"] * 4)
    choose(page, "C", long_spec)
    header = page.locator("#header-C")
    assert long_spec in header.inner_text()  # the whole spec, wrapped
    assert header.locator(".side-header").evaluate(
        "e => e.scrollWidth <= e.clientWidth + 1 && e.scrollHeight <= e.clientHeight + 1")  # nothing cut off
    for side, spec in zip("AB", served.specs):
        assert spec in page.locator(f"#header-{side}").inner_text()

    heights = [page.locator(f"#side-{s}").bounding_box()["height"] for s in "ABC"]
    assert max(heights) - min(heights) < 2, heights  # equal columns, however long a spec
    page.get_by_text("override the shared settings for A").click()
    page.get_by_label("use these settings for A").wait_for()
    tops = [page.locator(f"#completion-{s}").bounding_box()["y"] for s in "ABC"]
    assert max(tops) - min(tops) < 2, tops  # opening A's override moves no output

    page.get_by_label("2", exact=True).check()
    page.locator("#diff-right input").click()
    page.get_by_role("option").first.wait_for()
    assert [o.split()[-1] for o in page.get_by_role("option").all_inner_texts()] == ["A", "B"]
    page.keyboard.press("Escape")

    page.get_by_role("tab", name="Leaderboard").click()
    board = write_leaderboard(served.root / "board7" / "leaderboard.json")
    page.locator("input[type=file]").first.set_input_files(str(board))
    page.get_by_text("codegen-350M-mono").filter(visible=True).first.wait_for()
    headers = page.locator("#leaderboard-table th")
    for i in range(headers.count()):
        if headers.nth(i).is_visible():
            assert headers.nth(i).bounding_box()["height"] < 60, headers.nth(i).inner_text()


def test_8_token_counts_and_rates_show_while_streaming_and_after_stop(page, served):
    open_app(page, served)
    page.get_by_label("max tokens", exact=True).first.fill("150")
    page.locator("#generate").click()
    page.locator("#metrics-C", has_text="streaming").wait_for()
    page.wait_for_timeout(800)
    live = metrics(page, "C")
    assert re.search(r"\d+ output tokens · [\d.]+ tokens/s", live), live
    page.get_by_role("button", name="Stop C").click()
    page.locator("#metrics-C", has_text="stopped").wait_for()
    stopped = metrics(page, "C")
    assert re.search(r"[1-9]\d* output tokens · [\d.]+ tokens/s", stopped), stopped
    assert "first token" in stopped and "model already loaded" in stopped


def choose(page, side: str, spec: str) -> None:
    box = page.get_by_label(f"model {side}", exact=True)
    box.click()
    box.fill(spec)
    box.press("Enter")
    page.locator(f"#header-{side}", has_text=spec).wait_for()


def pick(page, where: str, option: str) -> None:
    page.locator(f"{where} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def no_error_badges(page) -> bool:
    """No component shows gradio's red error status (the badges a raised gr.Error puts on every output)."""
    return page.locator("[data-testid=status-tracker].error, .error-badge, .status-tracker.error").count() == 0
