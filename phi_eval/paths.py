"""Where phi-eval keeps what it makes outside a run directory (trained models, caches)."""
import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def home() -> Path:
    """$PHI_EVAL_HOME, default ~/.cache/phi-eval."""
    return Path(os.environ.get("PHI_EVAL_HOME") or Path.home() / ".cache" / "phi-eval")


def models_dir() -> Path:
    return home() / "models"


def cache_path() -> Path:
    return home() / "cache.sqlite"
