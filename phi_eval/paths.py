"""Where phi-eval keeps what it makes outside a run directory (trained models, caches)."""
import os
import tempfile
from pathlib import Path

from phi_eval.errors import UsageError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def home() -> Path:
    """$PHI_EVAL_HOME, default ~/.cache/phi-eval."""
    return Path(os.environ.get("PHI_EVAL_HOME") or Path.home() / ".cache" / "phi-eval")


def models_dir() -> Path:
    return home() / "models"


def cache_path() -> Path:
    return home() / "cache.sqlite"


def writable_dir(path: Path, what: str, fix: str) -> None:
    """Create `path` if needed and prove it takes a file; else a UsageError naming it and the fix."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{what} {path} is a file, not a directory; {fix}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as e:
        raise UsageError(f"{what} {path} is not writable ({e.strerror or e}); {fix}") from None
