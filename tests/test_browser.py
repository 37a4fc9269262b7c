"""A real browser: Debian's chromium, driven by Playwright, opens the app, compares two tiny models side by
side, reads the leaderboard plot and a run's samples, and saves screenshots (to $PHI_EVAL_SCREENSHOTS when
set). Every request the page makes goes to the app itself. scripts/install_browser.sh installs both."""
import os
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest

from app_support import launched, write_leaderboard, write_run

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Debian's chromium as root in a sandbox-less container, with nothing that phones home.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 60_000

if not Path(CHROMIUM).exists():
    pytest.skip("no chromium (install it with scripts/install_browser.sh)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="no Playwright (install it with scripts/install_browser.sh)")


@pytest.fixture
def page(tmp_path):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000})
        browser.set_default_timeout(TIMEOUT_MS)
        try:
            yield browser.new_page()
        finally:
            browser.close()


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
