"""What every model backend offers (batched generation and log-likelihoods), and the capabilities only
some have, each a Protocol a caller checks with `require` (or isinstance) instead of probing internals."""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Iterable, Iterator, Protocol, runtime_checkable

from phi_eval.errors import UsageError


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


# -- capabilities: hf: and gguf: have them all; replay: and openai: (generation over the wire) do not -------

@runtime_checkable
class Streaming(Protocol):
    def stream(self, request: GenerationRequest) -> Iterator[str]:
        """Text pieces as tokens are decoded; returns (StopIteration.value) the finished Completion."""


@runtime_checkable
class RollingLoglikelihood(Protocol):
    def loglikelihood_rolling(self, texts: list[str], progress: bool = True) -> list[float]:
        """lm-eval's whole-text log-probability (disjoint windows of the model's context)."""


@runtime_checkable
class TokenLogprobs(Protocol):
    def token_logprobs(self, text: str | list[int], top: int = 1) -> dict:
        """Every token of a text with its log-probability and the top alternatives (OpenAI's echo+logprobs)."""

    def token_statistics(self, texts: list[str], *, batch_size: int = 8, max_tokens: int = 512,
                         progress: bool = True) -> list:
        """Per text and token: log p, and the mean and deviation of log p under the model at that step."""

    def continuation_nats(self, pairs: list[tuple[str, str]], progress: bool = True) -> list[float]:
        """-log P(continuation | context), a long continuation scored in windows of the model's context."""


@runtime_checkable
class TokenCounts(Protocol):
    def count_tokens(self, text: str) -> int:
        """Tokens of a text to this model, without special tokens."""


@runtime_checkable
class Embeddings(Protocol):
    def embed(self, texts: list[str], *, batch_size: int = 16, max_tokens: int = 512):
        """Mean-pooled, L2-normalised last hidden states: one row per text (a numpy array)."""


@runtime_checkable
class Replayed(Protocol):
    def samples_per_doc(self, doc_id: str) -> int:
        """How many completions the replayed file holds for a doc (0: the file does not cover it)."""


CAPABILITY_NAMES = {Streaming: "token streaming", RollingLoglikelihood: "rolling log-likelihoods",
                    TokenLogprobs: "per-token log-probabilities", TokenCounts: "the model's tokenizer",
                    Embeddings: "hidden-state embeddings", Replayed: "replayed samples"}


def require(model, capability: type, purpose: str):
    """`model`, if it has the capability; else a UsageError naming the model, what it lacks and the fix."""
    if not isinstance(model, capability):
        raise UsageError(f"{purpose} needs {CAPABILITY_NAMES[capability]}, which {model.identity.get('name')} "
                         f"(backend {model.identity.get('backend')}) lacks; use a local model: a zoo name, "
                         "hf:DIR or gguf:FILE")
    return model


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
