"""A non-editable install (a built wheel in a fresh venv) has the zoo, the recipes and the app.

The fresh venv sees the project's dependencies through a .pth line naming .venv's site-packages (so
nothing is downloaded), but not the editable checkout: that venv's own .pth files are not processed."""
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from phi_eval.paths import PROJECT_ROOT

pytestmark = pytest.mark.slow


def run(args, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The bin/ folder of a fresh venv holding phi-eval installed from a wheel."""
    root = tmp_path_factory.mktemp("packaging")
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                 "-w", str(root / "dist"), str(PROJECT_ROOT)])
    assert built.returncode == 0, built.stderr
    wheel = next((root / "dist").glob("phi_eval-*.whl"))
    venv = root / "venv"
    assert run([sys.executable, "-m", "venv", "--without-pip", str(venv)]).returncode == 0
    site = next(venv.glob("lib/python*/site-packages"))
    (site / "project-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                     "--no-deps", "--no-index", "--ignore-installed", "-q", str(wheel)])
    assert installed.returncode == 0, installed.stderr
    return venv / "bin"


def isolated_env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return env | {"PHI_EVAL_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def test_wheel_imports_phi_eval_from_the_install_not_the_checkout(installed, tmp_path):
    where = run([str(installed / "python"), "-c", "import phi_eval; print(phi_eval.__file__)"],
                cwd=tmp_path, env=isolated_env(tmp_path))
    assert where.returncode == 0, where.stderr
    assert str(PROJECT_ROOT) not in where.stdout and "site-packages" in where.stdout


def test_installed_zoo_lists_every_card(installed, tmp_path):
    listed = run([str(installed / "phi-eval"), "zoo", "list", "--json"], cwd=tmp_path, env=isolated_env(tmp_path))
    assert listed.returncode == 0, listed.stderr
    names = {card["name"] for card in json.loads(listed.stdout)}
    shipped = {path.stem for path in (PROJECT_ROOT / "zoo").glob("*.yaml")}
    assert names == shipped and "phi-1" in names


def test_installed_builtin_recipe_resolves_from_any_directory(installed, tmp_path):
    code = "from phi_eval.train.recipe import load_recipe; print(load_recipe('recipes/phi-tiny.yaml').name)"
    loaded = run([str(installed / "python"), "-c", code], cwd=tmp_path, env=isolated_env(tmp_path))
    assert loaded.returncode == 0 and loaded.stdout.strip() == "phi-tiny", loaded.stderr


def test_installed_replay_run_scores(installed, tmp_path):
    from phi_eval.tasks import TASKS

    docs = TASKS["humaneval"].load_docs(None)[:3]
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"task_id": d["doc_id"], "completion": d["canonical_solution"]}) + "\n"
                               for d in docs))
    ran = run([str(installed / "phi-eval"), "run", "--models", f"replay:{samples}", "--tasks", "humaneval",
               "--limit", "3", "--workers", "1", "--out", str(tmp_path / "out")], cwd=tmp_path, env=isolated_env(tmp_path))
    assert ran.returncode == 0, ran.stderr
    results = json.loads(next((tmp_path / "out").glob("*/results.json")).read_text())
    assert results["results"]["humaneval"]["pass@1,none"] == 1.0


def test_installed_app_starts_and_serves_the_page(installed, tmp_path):
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = isolated_env(tmp_path) | {"GRADIO_ANALYTICS_ENABLED": "False"}
    app = subprocess.Popen([str(installed / "phi-eval"), "app", "--port", str(port)], cwd=tmp_path, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and app.poll() is None:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"the installed app did not serve: {app.stderr.read() if app.poll() is not None else 'timeout'}")
        assert "phi-eval" in page
    finally:
        app.terminate()
        app.wait(timeout=30)
