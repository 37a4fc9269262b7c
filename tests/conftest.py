"""Test-wide settings: never touch the network, keep phi-eval's home inside the test session."""
import os

OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_UPDATE_DOWNLOAD_COUNTS": "0",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "TOKENIZERS_PARALLELISM": "false",
}
os.environ.update(OFFLINE)

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
SHARED_BENCHMARKS = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"


@pytest.fixture(scope="session")
def tiny_phi_dir(tmp_path_factory) -> Path:
    """A random-weight 2-layer Phi with its own BPE tokenizer, saved like any hub checkpoint."""
    from tiny import make_tiny_phi

    return make_tiny_phi(tmp_path_factory.mktemp("tiny-phi"))


@pytest.fixture
def phi_home(tmp_path, monkeypatch) -> Path:
    """A private $PHI_EVAL_HOME (cache, models) for one test."""
    home = tmp_path / "phi-home"
    monkeypatch.setenv("PHI_EVAL_HOME", str(home))
    return home


@pytest.fixture
def mbpp_dir(tmp_path) -> Path:
    """The real MBPP release from the shared benchmarks when present, else a small fixture in its layout."""
    if (SHARED_BENCHMARKS / "mbpp" / "mbpp.jsonl").exists():
        return SHARED_BENCHMARKS
    from tiny import write_mbpp_fixture

    return write_mbpp_fixture(tmp_path / "benchmarks")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from a second thread, and on a shared 2-core machine it spins waiting."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
