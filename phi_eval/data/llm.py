"""Requests to an OpenAI-compatible endpoint for the annotate and synthesize stages.

One `LLM` is shared by a thread pool (`concurrency` requests in flight): it spaces request
starts to `requests_per_minute`, retries connection errors, timeouts, 408/409/429 and 5xx
answers with exponential backoff and jitter (honouring Retry-After), caches every answer in
phi-eval's SQLite cache (so a rerun or another stage with the same request pays nothing),
and returns the usage tokens of each call for the manifest's cost accounting. The API key
is read from the environment variable `api_key_env` and is never stored or logged.
"""
from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass, field

from phi_eval.cache import Cache, make_key
from phi_eval.data.stage import Field
from phi_eval.errors import UsageError
from phi_eval.paths import cache_path

FIELDS = {
    "model": Field("str", help="model name at the endpoint, e.g. gpt-4o-mini or the name `phi-eval serve` shows"),
    "base_url": Field("str", help="OpenAI-compatible base URL ending in /v1 (default: OpenAI's)"),
    "stands_in_for": Field("str", affects_output=False, help="the model this one stands in for, recorded in the "
                           "manifest (e.g. GPT-4, phi-1's annotator, for a small local teacher)"),
    "api_key_env": Field("str", "OPENAI_API_KEY", affects_output=False,
                         help="environment variable holding the API key (a local server needs none)"),
    "api": Field("choice", "chat", choices=("chat", "completions"), help="chat or plain completions"),
    "concurrency": Field("int", 8, minimum=1, affects_output=False, help="requests in flight"),
    "requests_per_minute": Field("number", 0, minimum=0, affects_output=False, help="client-side limit (0: none)"),
    "max_retries": Field("int", 5, minimum=0, affects_output=False, help="retries of a failed request"),
    "backoff_seconds": Field("number", 1.0, minimum=0, affects_output=False, help="first retry delay (doubles)"),
    "timeout_seconds": Field("number", 120.0, minimum=1, affects_output=False, help="per request"),
    "price_per_1k_input": Field("number", minimum=0, affects_output=False, help="USD per 1k prompt tokens"),
    "price_per_1k_output": Field("number", minimum=0, affects_output=False, help="USD per 1k completion tokens"),
    "cache": Field("bool", True, affects_output=False, help="reuse answers from phi-eval's SQLite cache"),
}

RETRY_STATUS = {408, 409, 429}


@dataclass
class Answer:
    text: str | None  # None: the request failed (error says why)
    usage: dict = field(default_factory=dict)  # prompt_tokens, completion_tokens, requests, retries, cached
    error: str | None = None
    retryable: bool = False  # the failure may pass on a rerun
    logprobs: dict | None = None  # with top_logprobs: {"tokens": [...], "top": [{token: logprob}, ...]} per token


class RateLimiter:
    """Spaces request starts evenly: at most `per_minute` a minute across all threads."""

    def __init__(self, per_minute: float):
        self.interval = 60.0 / per_minute if per_minute else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        time.sleep(max(0.0, start - now))


class LLM:
    def __init__(self, settings: dict, namespace: str):
        from openai import OpenAI

        if not settings.get("model"):
            raise UsageError("--model: required, expected the endpoint's model name")
        key = os.environ.get(settings["api_key_env"])
        if not key and not settings.get("base_url"):
            raise UsageError(f"${settings['api_key_env']} is not set; export the API key, or pass base_url for a "
                             "local server such as `phi-eval serve`")
        self.settings, self.namespace = settings, namespace
        self.client = OpenAI(base_url=settings.get("base_url"), api_key=key or "none",
                             timeout=settings["timeout_seconds"], max_retries=0)
        self.limiter = RateLimiter(settings["requests_per_minute"])
        self.cache = Cache(cache_path()) if settings["cache"] else None

    def identity(self) -> dict:
        return {"model": self.settings["model"], "base_url": self.settings.get("base_url"), "api": self.settings["api"]}

    def complete(self, prompt: str, *, max_tokens: int, temperature: float = 0.0, seed: int | None = None,
                 top_logprobs: int | None = None) -> Answer:
        key = make_key(self.namespace, self.identity(), prompt, max_tokens, temperature, seed,
                       *(() if top_logprobs is None else (top_logprobs,)))
        if self.cache is not None:
            hit = self.cache.get_many(f"data-{self.namespace}", [key]).get(key)
            if hit is not None:
                return Answer(hit["text"], {"cached": 1, "requests": 0, "retries": 0, "prompt_tokens": 0,
                                            "completion_tokens": 0}, logprobs=hit.get("logprobs"))
        usage = {"cached": 0, "requests": 0, "retries": 0, "prompt_tokens": 0, "completion_tokens": 0}
        for attempt in range(self.settings["max_retries"] + 1):
            if attempt:
                usage["retries"] += 1
            self.limiter.wait()
            usage["requests"] += 1
            try:
                text, tokens, logprobs = self._request(prompt, max_tokens, temperature, seed, top_logprobs)
            except Exception as e:  # classified below: retry, give up on this request, or stop the stage
                delay = self._retry_delay(e, attempt)
                if delay is None:
                    return Answer(None, usage, describe(e), retryable=False)
                if attempt == self.settings["max_retries"]:
                    return Answer(None, usage, describe(e), retryable=True)
                time.sleep(delay)
                continue
            usage["prompt_tokens"] += tokens.get("prompt_tokens", 0)
            usage["completion_tokens"] += tokens.get("completion_tokens", 0)
            if self.cache is not None:
                self.cache.put(f"data-{self.namespace}", key, {"text": text, "logprobs": logprobs})
            return Answer(text, usage, logprobs=logprobs)
        raise AssertionError("unreachable: the loop returns on its last attempt")

    def _request(self, prompt: str, max_tokens: int, temperature: float, seed: int | None,
                 top_logprobs: int | None = None) -> tuple[str, dict, dict | None]:
        extra = {} if seed is None else {"seed": seed}
        logprobs = None
        if self.settings["api"] == "chat":
            response = self.client.chat.completions.create(
                model=self.settings["model"], messages=[{"role": "user", "content": prompt}],
                max_tokens=max_tokens, temperature=temperature, **extra)
            text = response.choices[0].message.content or ""
        else:
            if top_logprobs is not None:
                extra["logprobs"] = top_logprobs
            response = self.client.completions.create(model=self.settings["model"], prompt=prompt,
                                                      max_tokens=max_tokens, temperature=temperature, **extra)
            text = response.choices[0].text or ""
            returned = response.choices[0].logprobs
            if top_logprobs is not None and returned is not None:
                logprobs = {"tokens": list(returned.tokens or []), "top": [dict(t or {}) for t in returned.top_logprobs or []]}
        usage = response.usage
        tokens = {"prompt_tokens": getattr(usage, "prompt_tokens", 0) or 0,
                  "completion_tokens": getattr(usage, "completion_tokens", 0) or 0} if usage else {}
        return text, tokens, logprobs

    def _retry_delay(self, error: Exception, attempt: int) -> float | None:
        """Seconds to wait before retrying, None when retrying cannot help; bad keys and models stop the stage."""
        import openai

        if isinstance(error, (openai.AuthenticationError, openai.PermissionDeniedError)):
            raise UsageError(f"the endpoint refused the key in ${self.settings['api_key_env']} "
                             f"({describe(error)}); set a valid key") from None
        if isinstance(error, openai.NotFoundError):
            raise UsageError(f"model {self.settings['model']!r} or base_url {self.settings.get('base_url')} not found "
                             f"at the endpoint ({describe(error)}); check both") from None
        if isinstance(error, openai.APIStatusError):
            if error.status_code not in RETRY_STATUS and error.status_code < 500:
                return None
        elif not isinstance(error, openai.APIConnectionError):  # includes timeouts
            raise error
        delay = self.settings["backoff_seconds"] * 2 ** attempt * (0.5 + random.random())
        retry_after = getattr(getattr(error, "response", None), "headers", {}).get("retry-after")
        try:
            delay = max(delay, float(retry_after)) if retry_after else delay
        except ValueError:
            pass
        return min(delay, 120.0)

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
        self.client.close()


def describe(error: Exception) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"


def usage_report(infos, settings: dict) -> dict:
    """Sum of the per-unit usage, with the cost when prices are given."""
    totals = {"requests": 0, "retries": 0, "cached": 0, "prompt_tokens": 0, "completion_tokens": 0}
    for info in infos:
        for name in totals:
            totals[name] += info.get("usage", {}).get(name, 0)
    prices = settings.get("price_per_1k_input"), settings.get("price_per_1k_output")
    totals["cost_usd"] = None if prices == (None, None) else round(
        totals["prompt_tokens"] / 1000 * (prices[0] or 0) + totals["completion_tokens"] / 1000 * (prices[1] or 0), 6)
    totals["model"], totals["base_url"], totals["api"] = settings["model"], settings.get("base_url"), settings["api"]
    totals["stands_in_for"] = settings.get("stands_in_for")
    return totals


def run_concurrently(llm_call, units, concurrency: int, on_done, bar=None) -> None:
    """Call `llm_call(payload)` for each (unit, payload) on `concurrency` threads; `on_done(unit, result)`
    runs on this thread as each finishes (so commits to SQLite stay on one thread)."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    with ThreadPoolExecutor(concurrency) as pool:
        pending = {}

        def drain(block_until_empty: bool) -> None:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    on_done(pending.pop(future), future.result())
                    if bar is not None:
                        bar.update(1)
                if not block_until_empty:
                    return

        for unit, payload in units:
            pending[pool.submit(llm_call, payload)] = unit
            if len(pending) >= 4 * concurrency:
                drain(False)
        drain(True)
