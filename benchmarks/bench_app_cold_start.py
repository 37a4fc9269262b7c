"""Cold start of the app's default 3-model comparison (phi-tiny, SmolLM2, Gemma on the talk's prompt), with a
screenshot of the page at the end.

    .venv/bin/python benchmarks/bench_app_cold_start.py ROOT OUT.png PORT

ROOT is a checkout with .venv (this one, or an older commit's, for a before/after pair).
Starts `python ROOT/app.py --port PORT` (fresh process: nothing loaded), opens it in chromium, makes sure three
sides show the three models, presses Generate at once and waits until all three sides are done. Prints the seconds
from process start and from the click until all three completions were done."""
import os
import subprocess
import sys
import time
import urllib.request

from playwright.sync_api import sync_playwright

MODELS = ("phi-tiny", "smollm2-135m-instruct", "gemma-3-270m")
root, out, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
env = dict(os.environ, PYTHONPATH=root)
started = time.perf_counter()
server = subprocess.Popen([f"{root}/.venv/bin/python", f"{root}/app.py", "--port", str(port)], cwd=root, env=env,
                          stdout=open(out + ".log", "w"), stderr=subprocess.STDOUT)
try:
    url = f"http://127.0.0.1:{port}/"
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except OSError:
            time.sleep(0.5)
    print(f"page served after {time.perf_counter() - started:.1f} s", flush=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(900_000)
        page.goto(url)
        page.get_by_label("3", exact=True).check()
        for side, model in zip("ABC", MODELS):
            box = page.get_by_label(f"model {side}", exact=True)
            header = page.locator(f"#header-{side}")
            if model not in (header.inner_text() if header.count() else box.input_value()):
                box.fill(model)
                box.press("Enter")
        time.sleep(1)
        print("sides:", [page.get_by_label(f"model {s}", exact=True).input_value() for s in "ABC"], flush=True)
        print(f"clicking Generate {time.perf_counter() - started:.1f} s after process start", flush=True)
        clicked = time.perf_counter()
        page.locator("#generate").click()
        for side in "ABC":
            page.locator(f"#metrics-{side}", has_text="done").wait_for()
            print(f"side {side} done after {time.perf_counter() - clicked:.1f} s from the click", flush=True)
        done = time.perf_counter()
        print(f"COLD START: {done - started:.1f} s from process start, {done - clicked:.1f} s from the click")
        time.sleep(1)
        page.screenshot(path=out, full_page=True)
        for side in "ABC":
            print(side, page.locator(f"#metrics-{side}").inner_text().replace("\n", " | "))
        browser.close()
finally:
    server.terminate()
    server.wait(30)
