"""The OpenAI API's request bodies (as pydantic models, so a bad field is a 400 naming it), its error body,
and the chat prompt a conversation becomes."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_STOPS = 4  # as the OpenAI API
MAX_LOGPROBS = 20  # OpenAI allows 5 (completions) and 20 (chat); vLLM 20
PLAIN_ROLES = {"system": "System", "developer": "System", "user": "User", "assistant": "Assistant", "tool": "Tool"}


class APIError(Exception):
    """An error the client caused (or a server fault), answered as OpenAI does:
    {"error": {"message", "type", "param", "code"}} with the HTTP status."""

    def __init__(self, message: str, *, status: int = 400, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.param, self.code, self.kind = status, param, code, kind

    def body(self) -> dict:
        return {"error": {"message": str(self), "type": self.kind, "param": self.param, "code": self.code}}


class StreamOptions(BaseModel):
    include_usage: bool = False


class Sampling(BaseModel):
    """The fields completions and chat share. Unknown fields are ignored (clients send many)."""

    model_config = ConfigDict(extra="ignore")

    model: str
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=128)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = 0.0
    frequency_penalty: float | None = 0.0
    logit_bias: dict | None = None

    def stops(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_STOPS:
            raise APIError(f"stop takes at most {MAX_STOPS} sequences, got {len(stops)}", param="stop")
        return tuple(s for s in stops if s)

    def check_unsupported(self) -> None:
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                raise APIError(f"{name} is not supported by phi-eval serve; leave it at 0", param=name)
        if self.logit_bias:
            raise APIError("logit_bias is not supported by phi-eval serve", param="logit_bias")


class CompletionBody(Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(16, ge=0)
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    best_of: int | None = None
    suffix: str | None = None

    def prompts(self) -> list[str | list[int]]:
        """Each prompt as text or as token ids."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        if not self.prompt:
            raise APIError("prompt must not be empty", param="prompt")
        if all(isinstance(p, int) for p in self.prompt):
            return [list(self.prompt)]  # type: ignore[arg-type]
        return list(self.prompt)  # type: ignore[arg-type]

    def check_unsupported(self) -> None:
        super().check_unsupported()
        if self.best_of not in (None, self.n):
            raise APIError("best_of is not supported by phi-eval serve; use n", param="best_of")
        if self.suffix:
            raise APIError("suffix (fill-in-the-middle) is not supported by phi-eval serve", param="suffix")


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class ChatBody(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


def chat_prompt(tokenizer, messages: list[Message]) -> tuple[str, tuple[str, ...]]:
    """The prompt a conversation becomes, and stops that end the assistant's turn.

    With a chat template (the tokenizer's `chat_template`), the template with the generation prompt added.
    Without one (base models such as phi-1 and phi-1.5), a plain transcript: one "Role: text" line per
    message, then "Assistant:", stopping where the model starts a "User:" or "System:" turn itself."""
    turns = [{"role": m.role, "content": m.text()} for m in messages]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True), ()
    lines = [f"{PLAIN_ROLES[t['role']]}: {t['content']}" for t in turns]
    return "\n".join(lines) + "\nAssistant:", ("\nUser:", "\nSystem:")
