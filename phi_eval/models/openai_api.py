"""openai: a model behind an OpenAI-compatible completions endpoint, `openai:MODEL[@http://HOST:PORT/v1]`
(vLLM, llama.cpp's server, a hosted API). Generation only: no log-likelihoods.

Completions are streamed; generate() is the stream read to its end. Stop sequences are applied here as
well as sent, so HumanEval's five stops work against servers that take at most four, and the streamed text
never shows what a stop cuts. The API key comes from $OPENAI_API_KEY (local servers accept any).
"""
from __future__ import annotations

import os
from typing import Iterator

from tqdm.auto import tqdm

from phi_eval.errors import UsageError
from phi_eval.models.base import Completion, GenerationRequest, truncate_at_stop, unsettled_tail

MAX_SERVER_STOPS = 4  # the OpenAI API's limit
TIMEOUT_S = 600.0


class OpenAIModel:
    def __init__(self, model: str, *, name: str, base_url: str | None = None):
        from openai import OpenAI

        self.model = model
        self.base_url = base_url
        self.client = OpenAI(base_url=base_url, api_key=os.environ.get("OPENAI_API_KEY") or "none",
                             timeout=TIMEOUT_S, max_retries=1)
        self.identity = {"name": name, "backend": "openai", "model": model, "base_url": base_url}

    def generate(self, requests: list[GenerationRequest], progress: bool = True) -> Iterator[tuple[int, Completion]]:
        for i, request in enumerate(tqdm(requests, desc="generate", unit="req", disable=not progress)):
            pieces = self.stream(request)
            while True:
                try:
                    next(pieces)
                except StopIteration as end:
                    yield i, end.value
                    break

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        """Yield the completion's text as the server sends it; the generator's return value is the Completion.
        Its token count is the server's (usage), else the number of chunks that carried text."""
        import openai

        config = request.config
        stops = [s for s in config.stop if s]
        text, sent, reason, tokens, chunks = "", "", "length", None, 0
        try:
            response = self.client.completions.create(
                model=self.model, prompt=request.prompt, max_tokens=config.max_new_tokens,
                temperature=config.temperature, top_p=config.top_p, seed=config.seed,
                stop=stops[:MAX_SERVER_STOPS] or None, stream=True, stream_options={"include_usage": True})
            for chunk in response:
                if chunk.usage:
                    tokens = chunk.usage.completion_tokens
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                if choice.text:
                    text += choice.text
                    chunks += 1
                if choice.finish_reason:
                    reason = "length" if choice.finish_reason == "length" else "stop"
                text, stopped = truncate_at_stop(text, stops)
                if stopped:
                    reason = "stop"
                    response.close()
                    break
                ready = text[:len(text) - unsettled_tail(text, stops)]
                if len(ready) > len(sent):
                    yield ready[len(sent):]
                    sent = ready
        except openai.APIError as e:
            raise UsageError(self._explain(e)) from None
        if len(text) > len(sent):
            yield text[len(sent):]
        return Completion(text=text, finish_reason=reason, n_tokens=tokens if tokens is not None else chunks)

    def _explain(self, error) -> str:
        import openai

        where = f"the openai: endpoint {self.base_url or 'default'} (model {self.model})"
        detail = " ".join(str(error).split())
        if isinstance(error, openai.APIConnectionError):
            return f"cannot reach {where}: {detail}; start the server or fix the URL in openai:MODEL@URL"
        if isinstance(error, openai.AuthenticationError):
            return f"{where} refused the API key: set OPENAI_API_KEY"
        status = getattr(error, "status_code", None)
        return f"{where} answered {status or 'an error'}: {detail}"
