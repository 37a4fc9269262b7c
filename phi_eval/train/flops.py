"""Model FLOPs utilisation: the FLOPs a training step needs, against the machine's peak.

The peak is measured, not taken from a datasheet: the best FLOP/s of a square torch
matmul in the training dtype on the training device, cached per (device, dtype,
threads, torch version) in $PHI_EVAL_HOME/peak_flops.json; a refresh keeps the best of the
old and the new measurement, since load from other processes only lowers it. MFU is the
share of that peak the training step reaches; measured on a busy machine, the peak is too
low and MFU too high (benchmarks/bench_training.py refreshes it first).
"""
from __future__ import annotations

import json
import time

import torch

from phi_eval import paths

PEAK_FILE = "peak_flops.json"


def model_flops_per_token(config, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward) as in PaLM's MFU (Chowdhery et al. 2022,
    App. B): 6 x the parameters that multiply (all but the input embedding table, a lookup)
    plus 12 x layers x hidden x seq_len for the attention scores and their weighted sum."""
    embedding = config.vocab_size * config.hidden_size
    matmul_params = parameter_count(config) - embedding
    return 6 * matmul_params + 12 * config.num_hidden_layers * config.hidden_size * seq_len


def parameter_count(config) -> int:
    """PhiForCausalLM's parameters, counted without allocating the model (meta device)."""
    from transformers import PhiForCausalLM

    with torch.device("meta"):
        model = PhiForCausalLM(config)
    return sum(p.numel() for p in model.parameters())


def peak_flops(device: torch.device, dtype: torch.dtype, refresh: bool = False) -> float:
    """The measured matmul peak (FLOP/s) of one device, from the cache when it has it."""
    key = f"{device_name(device)}|{str(dtype).removeprefix('torch.')}|threads={torch.get_num_threads()}" \
          f"|torch={torch.__version__}"
    path = paths.home() / PEAK_FILE
    cache = {}
    if path.is_file():
        try:
            cache = json.loads(path.read_text())
        except json.JSONDecodeError:
            cache = {}  # a torn write; measure again
    if key not in cache or refresh:
        # Other work on the machine only ever lowers a measurement: keep the best one seen.
        cache[key] = max(cache.get(key, 0.0), measure_matmul_flops(device, dtype))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache, indent=2) + "\n")
        tmp.replace(path)
    return cache[key]


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"{device.type}:{platform_cpu()}"


def platform_cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def measure_matmul_flops(device: torch.device, dtype: torch.dtype, seconds: float = 2.0) -> float:
    """Best FLOP/s over repeated n x n matmuls (n = 8192 on GPU, 1024 on CPU), after a warmup."""
    n = 8192 if device.type == "cuda" else 1024
    # A private generator: measuring must not move the global RNG that training draws from.
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        sync()
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - start))
    return best
