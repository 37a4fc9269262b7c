"""What every model backend offers: batched generation and log-likelihoods."""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Iterable, Iterator, Protocol


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings shared by all requests of one task. temperature 0 means greedy."""

    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int = 1234

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "stop": list(self.stop)}


@dataclass(frozen=True)
class GenerationRequest:
    """One completion to produce. `sample_index` tells apart the n samples of one prompt."""

    prompt: str
    config: GenerationConfig
    sample_index: int = 0
    doc_id: str = ""

    def sampling_seed(self) -> int:
        """A per-request seed, so a sampled output does not depend on which batch it ran in."""
        key = f"{self.config.seed}\0{self.sample_index}\0{self.prompt}".encode()
        return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & (2**63 - 1)

    def cache_key(self) -> dict:
        return {"prompt": self.prompt, "config": self.config.to_dict(), "sample_index": self.sample_index}


@dataclass
class Completion:
    text: str
    finish_reason: str  # "stop" (a stop sequence or end of text) or "length"
    n_tokens: int = 0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class Model(Protocol):
    """A loaded model. `identity` is what makes two runs comparable (and cache keys valid)."""

    identity: dict

    def generate(self, requests: list[GenerationRequest], progress: bool = True) -> Iterator[tuple[int, Completion]]:
        """Yield (index into requests, completion) as soon as each one is finished."""
        ...

    def loglikelihood(self, pairs: list[tuple[str, str]], progress: bool = True) -> list[tuple[float, bool]]:
        """For each (context, continuation): summed log-probability of the continuation and whether
        greedy decoding would have produced it exactly."""
        ...


def truncate_at_stop(text: str, stop: Iterable[str]) -> tuple[str, bool]:
    """Cut `text` at the earliest stop sequence; report whether one was found."""
    cut = min((i for s in stop if s and (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def unsettled_tail(text: str, stops: Iterable[str]) -> int:
    """How many characters at the end of a completion so far the next tokens may still change: the start
    of a stop sequence (the text would be cut there) or an unfinished multi-byte character (U+FFFD).
    A stream holds them back until they are settled."""
    tail = max((k for s in stops for k in range(len(s) - 1, 0, -1) if text.endswith(s[:k])), default=0)
    unfinished = len(text) - len(text.rstrip("\ufffd"))
    return max(tail, unfinished)
