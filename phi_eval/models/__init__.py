"""Backends behind model specs: hf:, gguf:, replay:, openai:."""
from __future__ import annotations

from pathlib import Path

from phi_eval.models.base import Completion, GenerationConfig, GenerationRequest, Model


def load_model(spec, *, device: str = "auto", dtype: str = "auto", batch_size: int | str = "auto") -> Model:
    """Build the backend a parsed ModelSpec (phi_eval.zoo.parse_model_spec) names."""
    if spec.kind == "replay":
        from phi_eval.models.replay import ReplayModel

        return ReplayModel(spec.target, name=spec.name)
    if spec.kind == "openai":
        from phi_eval.models.openai_api import OpenAIModel

        return OpenAIModel(spec.target, name=spec.name, base_url=spec.base_url)
    from phi_eval.models.hf import HFModel  # hf: and gguf: (parse_model_spec yields no other kind)

    if spec.kind == "gguf":
        path = Path(spec.target)
        return HFModel(str(path.parent), name=spec.name, device=device, dtype=dtype,
                       batch_size=batch_size, gguf_file=path.name)
    return HFModel(spec.target, name=spec.name, device=device, dtype=dtype, batch_size=batch_size)

__all__ = ["Completion", "GenerationConfig", "GenerationRequest", "Model", "load_model"]
