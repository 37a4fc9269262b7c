#!/usr/bin/env bash
# What the browser test (tests/test_browser.py) needs: Debian's chromium and Playwright's Python client in
# .venv. Idempotent and quick when both are there. No browser is downloaded: the test points Playwright at
# /usr/bin/chromium. Run after scripts/setup.sh (it needs .venv); needs root (or sudo) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
fi
if ! .venv/bin/python -c "import playwright.sync_api" 2>/dev/null; then
    # pyee is named too: some playwright wheels leave it out of their requirements.
    .venv/bin/pip install -q -c scripts/constraints.txt "playwright>=1.50,<2" "pyee>=13,<14"
fi
