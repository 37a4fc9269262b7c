"""openai: a model behind an OpenAI-compatible endpoint, `openai:MODEL[@http://HOST:PORT/v1]` (phi-eval serve,
vLLM, llama.cpp's server, a hosted API).

Generation. Each completion is streamed; generate() runs requests on a pool of threads and yields each
completion as soon as it is finished, so the run's cache commits it at once. Stop sequences are applied
here as well as sent, so HumanEval's five stops work against servers that take at most four, and the
streamed text never shows what a stop cuts. Settings, from the environment:
  PHI_EVAL_OPENAI_CONCURRENCY  requests in flight at once (default 8)
  PHI_EVAL_OPENAI_RETRIES      retries of a failed request (default 3): the openai client's own, with
                               exponential backoff, on connection errors, 408, 409, 429 (honouring
                               Retry-After) and 5xx
  PHI_EVAL_OPENAI_ENDPOINT     completions or chat (default: chat for OpenAI's chat-only models on its own
                               endpoint, gpt-3.5-turbo, gpt-4*, gpt-5*, o1/o3/o4*, chatgpt-*; completions otherwise)
Through chat completions the prompt is sent as the one user message and the reply is the completion: a chat
model answers rather than continues, so its code-task numbers measure it under completion-style prompts.

Log-likelihoods come from the completions endpoint with echo=True and logprobs, as lm-eval's API models
score them: the server returns the log-probability of every prompt token and the continuation's tokens
are those at or after the context's end (its trailing whitespace moved to the continuation, as lm-eval
does). The first token of a text gets no log-probability from such a server, so a continuation without
context, and loglikelihood_rolling, leave that one token out (the hf: backend scores it after BOS). A
server without prompt log-probabilities (OpenAI's current models) is one clear error.

The API key comes from $OPENAI_API_KEY (local servers accept any) and is never part of the identity,
results or logs.
"""
from __future__ import annotations

import os
import re
import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Iterator

from tqdm.auto import tqdm

from phi_eval.errors import UsageError
from phi_eval.models.base import Completion, GenerationRequest, truncate_at_stop, unsettled_tail
from phi_eval.task_names import LOGLIKELIHOOD_TASKS

MAX_SERVER_STOPS = 4  # the OpenAI API's limit
TIMEOUT_S = 600.0
DEFAULT_CONCURRENCY = 8
DEFAULT_RETRIES = 3
SCORING_BATCH = 16  # prompts per echo request
CHAT_ONLY = re.compile(r"(gpt-3\.5-turbo(?!-instruct)|gpt-[45]|o[134]\b|o[134]-|chatgpt-)")


class OpenAIModel:
    def __init__(self, model: str, *, name: str, base_url: str | None = None):
        from openai import OpenAI

        self.model = model
        self.base_url = base_url
        self.concurrency = _setting("PHI_EVAL_OPENAI_CONCURRENCY", DEFAULT_CONCURRENCY, minimum=1)
        retries = _setting("PHI_EVAL_OPENAI_RETRIES", DEFAULT_RETRIES, minimum=0)
        self.chat = _chat_endpoint(model, base_url)
        self.client = OpenAI(base_url=base_url, api_key=os.environ.get("OPENAI_API_KEY") or "none",
                             timeout=TIMEOUT_S, max_retries=retries)
        self.identity = {"name": name, "backend": "openai", "model": model, "base_url": base_url}
        if self.chat:  # a different prompt format: results (and cache keys) differ from completions
            self.identity["endpoint"] = "chat"

    # -- generation -------------------------------------------------------------------------------------

    def generate(self, requests: list[GenerationRequest], progress: bool = True) -> Iterator[tuple[int, Completion]]:
        bar = tqdm(total=len(requests), desc="generate", unit="req", disable=not progress)
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="phi-eval-openai")
        abandon = threading.Event()
        pending = {pool.submit(self._complete, request, abandon): i for i, request in enumerate(requests)}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    i = pending.pop(future)
                    completion = future.result()
                    bar.update(1)
                    yield i, completion
        finally:  # an error, Ctrl-C, or the caller stopped early: drop queued requests, end running streams
            abandon.set()
            pool.shutdown(wait=not pending, cancel_futures=True)
            bar.close()

    def _complete(self, request: GenerationRequest, abandon: threading.Event) -> Completion | None:
        pieces = self.stream(request)
        while not abandon.is_set():
            try:
                next(pieces)
            except StopIteration as end:
                return end.value
        pieces.close()
        return None

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        """Yield the completion's text as the server sends it; the generator's return value is the Completion.
        Its token count is the server's (usage), else the number of chunks that carried text."""
        import openai

        stops = [s for s in request.config.stop if s]
        text, sent, reason, tokens, chunks = "", "", "length", None, 0
        try:
            response = self._open_stream(request, stops[:MAX_SERVER_STOPS] or None)
            for chunk in response:
                if chunk.usage:
                    tokens = chunk.usage.completion_tokens
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                piece = choice.delta.content if self.chat else choice.text
                if piece:
                    text += piece
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

    def _open_stream(self, request: GenerationRequest, stop: list[str] | None):
        config = request.config
        common = dict(model=self.model, temperature=config.temperature, top_p=config.top_p, seed=config.seed,
                      stop=stop, stream=True, stream_options={"include_usage": True})
        if not self.chat:
            return self.client.completions.create(prompt=request.prompt, max_tokens=config.max_new_tokens, **common)
        # OpenAI's reasoning models take only max_completion_tokens; other servers know max_tokens.
        limit = {"max_completion_tokens" if self.base_url is None else "max_tokens": config.max_new_tokens}
        return self.client.chat.completions.create(messages=[{"role": "user", "content": request.prompt}],
                                                   **limit, **common)

    # -- log-likelihood ---------------------------------------------------------------------------------

    def loglikelihood(self, pairs: list[tuple[str, str]], progress: bool = True) -> list[tuple[float, bool]]:
        """(sum of the continuation's token log-probs, whether each was the most likely token) per pair."""
        spans = []
        for context, continuation in pairs:
            kept = context.rstrip()  # its trailing whitespace belongs to the continuation, as in lm-eval
            spans.append((context + continuation, len(kept), len(context + continuation)))
        return self._score_spans(spans, progress, "loglikelihood")

    def loglikelihood_rolling(self, texts: list[str], progress: bool = True) -> list[float]:
        """log P(text): every token the server scores (all but the first)."""
        return [total for total, _ in self._score_spans([(t, 0, len(t)) for t in texts], progress,
                                                        "loglikelihood_rolling")]

    def _score_spans(self, spans: list[tuple[str, int, int]], progress: bool, desc: str) -> list[tuple[float, bool]]:
        """For each (text, start, end): the summed log-probs of the text's tokens that begin in [start, end),
        and whether every one of them was the server's top token."""
        if self.chat:
            raise UsageError(self._cannot_score("it is used through the chat endpoint, which scores no prompt"))
        order = sorted(range(len(spans)), key=lambda i: -len(spans[i][0]))  # similar lengths pad little
        batches = [order[i:i + SCORING_BATCH] for i in range(0, len(order), SCORING_BATCH)]
        results: list[tuple[float, bool]] = [(0.0, True)] * len(spans)
        bar = tqdm(total=len(spans), desc=desc, unit="req", disable=not progress)
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="phi-eval-openai") as pool:
            futures = [pool.submit(self._score_batch, [spans[i] for i in batch]) for batch in batches]
            try:
                for batch, future in zip(batches, futures):
                    for i, score in zip(batch, future.result()):
                        results[i] = score
                    bar.update(len(batch))
            finally:
                for future in futures:
                    future.cancel()
                bar.close()
        return results

    def _score_batch(self, spans: list[tuple[str, int, int]]) -> list[tuple[float, bool]]:
        import openai

        try:
            # One generated token: some servers refuse max_tokens=0; it lies past `end` and is not counted.
            # The raw JSON: building the client's typed objects for every token costs ~15% of the time.
            response = self.client.completions.with_raw_response.create(
                model=self.model, prompt=[text for text, _, _ in spans], max_tokens=1, temperature=0, echo=True,
                logprobs=1).http_response.json()
        except (openai.BadRequestError, openai.NotFoundError, openai.UnprocessableEntityError) as e:
            if getattr(e, "code", None) == "context_length_exceeded":
                raise UsageError(f"{self._where()}: a scored text is longer than the model's context "
                                 f"({_one_line(e)[:200]}); the hf: backend truncates such texts as lm-eval does") from None
            raise UsageError(self._cannot_score(f"it refused echo with logprobs ({_one_line(e)[:160]})")) from None
        except openai.APIError as e:
            raise UsageError(self._explain(e)) from None
        choices = sorted(response.get("choices") or [], key=lambda c: c.get("index", 0))
        if len(choices) != len(spans):
            raise UsageError(self._cannot_score(f"it answered {len(choices)} choices for {len(spans)} prompts"))
        return [self._span_score(choice.get("logprobs") or {}, span) for choice, span in zip(choices, spans)]

    def _span_score(self, logprobs: dict, span: tuple[str, int, int]) -> tuple[float, bool]:
        _, start, end = span
        offsets, values = logprobs.get("text_offset"), logprobs.get("token_logprobs")
        if not offsets or not values or offsets[0] != 0:  # no echoed prompt
            raise UsageError(self._cannot_score("it returns no prompt log-probabilities"))
        tops = logprobs.get("top_logprobs") or [None] * len(values)
        total, greedy = 0.0, True
        for offset, value, top in zip(offsets, values, tops):
            if start <= offset < end and value is not None:
                total += value
                greedy = greedy and bool(top) and value >= max(top.values())
        return total, greedy

    # -- messages ---------------------------------------------------------------------------------------

    def _where(self) -> str:
        return f"the openai: endpoint {self.base_url or 'default'} (model {self.model})"

    def _cannot_score(self, why: str) -> str:
        scored = ", ".join(LOGLIKELIHOOD_TASKS)
        return (f"{self._where()} cannot score log-likelihood tasks: {why}; {scored} need prompt "
                "log-probabilities (completions with echo and logprobs): run them with an hf: model or against "
                "`phi-eval serve` or vLLM")

    def _explain(self, error) -> str:
        import openai

        detail = _one_line(error)
        if isinstance(error, openai.APIConnectionError):
            return f"cannot reach {self._where()}: {detail}; start the server or fix the URL in openai:MODEL@URL"
        if isinstance(error, openai.AuthenticationError):
            return f"{self._where()} refused the API key: set OPENAI_API_KEY"
        status = getattr(error, "status_code", None)
        return f"{self._where()} answered {status or 'an error'}: {detail}"


def _setting(variable: str, default: int, minimum: int) -> int:
    value = os.environ.get(variable, "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) < minimum:
        raise UsageError(f"{variable}={value!r} must be a whole number of at least {minimum}")
    return int(value)


def _chat_endpoint(model: str, base_url: str | None) -> bool:
    value = os.environ.get("PHI_EVAL_OPENAI_ENDPOINT", "").strip().lower()
    if value not in ("", "chat", "completions"):
        raise UsageError(f"PHI_EVAL_OPENAI_ENDPOINT={value!r} must be chat or completions")
    if value:
        return value == "chat"
    return base_url is None and CHAT_ONLY.match(model) is not None


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())
