"""The HTTP side of `phi-eval serve`: OpenAI's /v1/models, /v1/completions and /v1/chat/completions over
one local model, answered in OpenAI's shapes (streams as server-sent events ending in `data: [DONE]`).

Every model call goes through the ModelWorker (one thread); the handlers only validate, wait and format.
"""
from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from phi_eval.errors import UsageError
from phi_eval.models.base import Completion, GenerationConfig, GenerationRequest
from phi_eval.serve.protocol import APIError, ChatBody, CompletionBody, Sampling, chat_prompt
from phi_eval.serve.worker import ModelWorker


@dataclass(frozen=True)
class Prompt:
    text: str
    ids: list[int]
    given_as_text: bool  # else as token ids: scored as sent; generation continues their decoded text


@dataclass
class Served:
    model: object  # an HFModel
    name: str
    worker: ModelWorker
    created: int

    @property
    def max_length(self) -> int:
        return self.model.max_length

    def encode(self, prompt: str | list[int]) -> Prompt:
        tokenizer = self.model.tokenizer
        if isinstance(prompt, str):
            return Prompt(prompt, tokenizer(prompt, add_special_tokens=False)["input_ids"], True)
        vocabulary = len(tokenizer)
        if (bad := next((i for i in prompt if not 0 <= i < vocabulary), None)) is not None:
            raise APIError(f"token id {bad} is outside the vocabulary (0 to {vocabulary - 1})", param="prompt")
        return Prompt(tokenizer.decode(prompt, skip_special_tokens=False), prompt, False)

    def check_model(self, body: Sampling) -> None:
        if body.model != self.name:
            raise APIError(f"The model `{body.model}` does not exist; this server serves `{self.name}`",
                           status=404, param="model", code="model_not_found")

    def check_length(self, prompt_ids: list[int], max_tokens: int, param: str) -> None:
        if len(prompt_ids) + max_tokens > self.max_length:
            raise APIError(f"This model's maximum context length is {self.max_length} tokens; the request needs "
                           f"{len(prompt_ids) + max_tokens} ({len(prompt_ids)} in the {param}, {max_tokens} for the "
                           "completion): shorten it or lower max_tokens", param=param, code="context_length_exceeded")


def generation_config(body: Sampling, max_tokens: int, extra_stops: tuple[str, ...] = ()) -> GenerationConfig:
    temperature = 1.0 if body.temperature is None else body.temperature
    # No seed: a sampled request draws a fresh one, as the OpenAI API samples anew each call.
    seed = body.seed if body.seed is not None else (0 if temperature == 0 else secrets.randbits(31))
    return GenerationConfig(max_new_tokens=max_tokens, temperature=temperature,
                            top_p=1.0 if body.top_p is None else body.top_p,
                            stop=body.stops() + extra_stops, seed=seed)


def build_app(served: Served) -> FastAPI:
    app = FastAPI(title="phi-eval serve", docs_url=None, redoc_url=None)
    install_error_handlers(app)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_card(served)]}

    @app.get("/v1/models/{name:path}")
    async def model(name: str):
        if name != served.name:
            raise APIError(f"The model `{name}` does not exist", status=404, param="model", code="model_not_found")
        return model_card(served)

    @app.post("/v1/completions")
    async def completions(body: CompletionBody):
        served.check_model(body)
        body.check_unsupported()
        prompts = [served.encode(p) for p in body.prompts()]
        max_tokens = 16 if body.max_tokens is None else body.max_tokens
        for prompt in prompts:
            served.check_length(prompt.ids, max_tokens, "prompt")
        config = generation_config(body, max_tokens)
        requests = [GenerationRequest(p.text, config, sample_index=j) for p in prompts for j in range(body.n)]
        call = Call("cmpl", served.name)
        if body.stream:
            return event_stream(stream_completions(served, body, prompts, requests, call))
        if body.logprobs is None:
            results, scores = await generate(served, requests, max_tokens), [None] * len(requests)
        else:
            results, scores = await generate_scored(served, [prompts[k // body.n] for k in range(len(requests))],
                                                    requests, body.logprobs, body.echo)
        choices = []
        for k, (completion, scored) in enumerate(zip(results, scores)):
            prompt = prompts[k // body.n]
            logprobs = completion_logprobs(scored) if scored else None
            choices.append({"index": k, "text": (prompt.text if body.echo else "") + completion.text,
                            "finish_reason": completion.finish_reason, "logprobs": logprobs})
        return {**call.head("text_completion"), "choices": choices, "usage": usage(prompts, results)}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatBody):
        served.check_model(body)
        body.check_unsupported()
        prompt, turn_stops = chat_prompt(served.model.tokenizer, body.messages)
        prompt = served.encode(prompt)
        max_tokens = body.token_limit() or max(served.max_length - len(prompt.ids), 1)
        served.check_length(prompt.ids, max_tokens, "messages")
        config = generation_config(body, max_tokens, turn_stops)
        requests = [GenerationRequest(prompt.text, config, sample_index=j) for j in range(body.n)]
        call = Call("chatcmpl", served.name)
        top = (body.top_logprobs or 0) if body.logprobs else None
        if body.stream:
            return event_stream(stream_chat(served, body, prompt, requests, top, call))
        if top is None:
            results, scores = await generate(served, requests, max_tokens), [None] * len(requests)
        else:
            results, scores = await generate_scored(served, [prompt] * len(requests), requests, top, False)
        choices = []
        for k, (completion, scored) in enumerate(zip(results, scores)):
            logprobs = {"content": chat_logprobs(scored)} if scored else None
            choices.append({"index": k, "message": {"role": "assistant", "content": completion.text},
                            "finish_reason": completion.finish_reason, "logprobs": logprobs})
        return {**call.head("chat.completion"), "choices": choices, "usage": usage([prompt], results)}

    return app


def model_card(served: Served) -> dict:
    return {"id": served.name, "object": "model", "created": served.created, "owned_by": "phi-eval",
            "max_model_len": served.max_length, "backend": served.model.identity}


class Call:
    """The id and creation time every chunk of one response shares."""

    def __init__(self, prefix: str, model: str):
        self.id, self.created, self.model = f"{prefix}-{uuid.uuid4().hex}", int(time.time()), model

    def head(self, kind: str) -> dict:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}


# -- model work ------------------------------------------------------------------------------------------

async def wait(future: Future):
    try:
        return await asyncio.wrap_future(future)
    except UsageError as e:
        raise APIError(str(e)) from None


async def generate(served: Served, requests: list[GenerationRequest], max_tokens: int) -> list[Completion]:
    if max_tokens == 0:  # echo-only scoring: nothing to generate
        return [Completion(text="", finish_reason="length", n_tokens=0) for _ in requests]
    return await wait(served.worker.generate(requests))


async def generate_scored(served: Served, prompts: list[Prompt], requests: list[GenerationRequest], top: int,
                          echo: bool) -> tuple[list[Completion], list[dict]]:
    """Completions with the log-probabilities of their generated tokens (and of the prompt's, with echo):
    the requests are decoded as one batch, then each prompt + completion is scored. A text prompt with
    nothing generated is scored as text, which gives its tokens' exact character offsets."""
    def run() -> list[tuple[Completion, dict]]:
        decoding = [k for k, r in enumerate(requests) if r.config.max_new_tokens]
        decoded = dict(zip(decoding, decode_with_ids(served.model, [requests[k] for k in decoding],
                                                     [prompts[k].ids for k in decoding]))) if decoding else {}
        results = []
        for k, prompt in enumerate(prompts):
            completion, ids = decoded.get(k, (Completion(text="", finish_reason="length", n_tokens=0), []))
            target = prompt.text if prompt.given_as_text and not ids else prompt.ids + ids
            scored = served.model.token_logprobs(target, top=top)
            start = 0 if echo else len(prompt.ids)
            results.append((completion, {key: values[start:] for key, values in scored.items()}))
        return results

    pairs = await wait(served.worker.call(run))
    return [c for c, _ in pairs], [s for _, s in pairs]


def decode_with_ids(model, requests: list[GenerationRequest],
                    prompt_ids: list[list[int]]) -> list[tuple[Completion, list[int]]]:
    """HFModel's decoding loop (the one its generate() and stream() share) over the requests as one batch,
    keeping each row's generated token ids up to the end of its completion's text (a stop sequence cuts
    the text, not the tokens)."""
    finished = {}
    for index, tokens, completion in model._decode(requests, prompt_ids):
        if completion:
            finished[index] = (completion, list(tokens))
    decode = model.tokenizer.decode
    results = []
    for index in range(len(requests)):
        completion, tokens = finished[index]
        kept = next((k for k in range(len(tokens) + 1)
                     if len(decode(tokens[:k], skip_special_tokens=False)) >= len(completion.text)), len(tokens))
        results.append((completion, tokens[:kept]))
    return results


def text_pieces(ids: list[int], tokenizer, text: str) -> list[str]:
    """One piece of `text` per token, joining to `text`: what each token adds to the decoded prefix, with
    a half-decoded character held back until the token that completes it."""
    pieces, sent = [], ""
    for k in range(1, len(ids) + 1):
        now = tokenizer.decode(ids[:k], skip_special_tokens=False)[:len(text)]
        now = now if k == len(ids) else now.rstrip("\ufffd")
        if now.startswith(sent) and len(now) > len(sent):
            pieces.append(now[len(sent):])
            sent = now
        else:
            pieces.append("")
    if pieces and len(text) > len(sent):
        pieces[-1] += text[len(sent):]
    return pieces


async def pieces(served: Served, request: GenerationRequest):
    """Yield the completion's text pieces as the worker decodes them, then the Completion itself."""
    loop = asyncio.get_running_loop()
    arrived: asyncio.Queue = asyncio.Queue()
    cancelled = threading.Event()
    future = served.worker.stream(request, lambda piece: loop.call_soon_threadsafe(arrived.put_nowait, piece),
                                  cancelled)
    future.add_done_callback(lambda _: loop.call_soon_threadsafe(arrived.put_nowait, None))
    try:
        while (piece := await arrived.get()) is not None:
            yield piece
        yield await wait(future)
    finally:
        cancelled.set()  # the client went away: stop decoding


# -- response shapes -------------------------------------------------------------------------------------

def usage(prompts: list[Prompt], results: list[Completion]) -> dict:
    prompt_tokens = sum(len(p.ids) for p in prompts)
    completion_tokens = sum(c.n_tokens for c in results)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_logprobs(scored: dict) -> dict:
    """OpenAI's completions `logprobs`; text_offset counts characters of prompt + completion."""
    return {"tokens": scored["tokens"], "token_logprobs": scored["logprobs"], "top_logprobs": scored["top"],
            "text_offset": scored["offsets"]}


def chat_logprobs(scored: dict) -> list[dict]:
    def entry(token: str, logprob: float | None) -> dict:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

    return [{**entry(token, logprob), "top_logprobs": [entry(t, v) for t, v in (top or {}).items()]}
            for token, logprob, top in zip(scored["tokens"], scored["logprobs"], scored["top"])]


def event_stream(events) -> StreamingResponse:
    async def encoded():
        try:
            async for event in events:
                yield f"data: {json.dumps(event)}\n\n"
        except APIError as e:
            yield f"data: {json.dumps(e.body())}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(encoded(), media_type="text/event-stream")


async def stream_completions(served: Served, body: CompletionBody, prompts, requests, call: Call):
    def chunk(index: int, text: str, finish_reason=None, logprobs=None) -> dict:
        return {**call.head("text_completion"), "choices": [
            {"index": index, "text": text, "finish_reason": finish_reason, "logprobs": logprobs}]}

    results = []
    for k, request in enumerate(requests):
        prompt = prompts[k // body.n]
        if body.logprobs is not None:  # tokens with their log-probabilities, once the completion is known
            [completion], [scored] = await generate_scored(served, [prompt], [request], body.logprobs, body.echo)
            entries = completion_logprobs(scored)
            shown = (prompt.text if body.echo else "") + completion.text
            texts = text_pieces(scored["ids"], served.model.tokenizer, shown)
            for position, piece in enumerate(texts):
                yield chunk(k, piece, logprobs={key: values[position:position + 1] for key, values in entries.items()})
        else:
            if body.echo:
                yield chunk(k, prompt.text)
            completion = Completion(text="", finish_reason="length", n_tokens=0)
            if request.config.max_new_tokens:
                async for piece in pieces(served, request):
                    if isinstance(piece, Completion):
                        completion = piece
                    else:
                        yield chunk(k, piece)
        results.append(completion)
        yield chunk(k, "", finish_reason=completion.finish_reason)
    if body.stream_options and body.stream_options.include_usage:
        yield {**call.head("text_completion"), "choices": [], "usage": usage(prompts, results)}


async def stream_chat(served: Served, body: ChatBody, prompt, requests, top: int | None, call: Call):
    def chunk(index: int, delta: dict, finish_reason=None, logprobs=None) -> dict:
        return {**call.head("chat.completion.chunk"), "choices": [
            {"index": index, "delta": delta, "finish_reason": finish_reason, "logprobs": logprobs}]}

    results = []
    for k, request in enumerate(requests):
        yield chunk(k, {"role": "assistant", "content": ""})
        if top is not None:
            [completion], [scored] = await generate_scored(served, [prompt], [request], top, False)
            texts = text_pieces(scored["ids"], served.model.tokenizer, completion.text)
            for piece, entry in zip(texts, chat_logprobs(scored)):
                yield chunk(k, {"content": piece}, logprobs={"content": [entry]})
        else:
            async for piece in pieces(served, request):
                if isinstance(piece, Completion):
                    completion = piece
                else:
                    yield chunk(k, {"content": piece})
        results.append(completion)
        yield chunk(k, {}, finish_reason=completion.finish_reason)
    if body.stream_options and body.stream_options.include_usage:
        yield {**call.head("chat.completion.chunk"), "choices": [], "usage": usage([prompt], results)}


# -- errors ----------------------------------------------------------------------------------------------

def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, error: APIError):
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError):
        first = error.errors()[0]
        where = [str(part) for part in first.get("loc", ()) if part != "body"]
        if first.get("type") == "json_invalid":
            return JSONResponse(APIError("the request body is not valid JSON").body(), status_code=400)
        param = where[0] if where else None
        message = f"{'.'.join(where) or 'body'}: {first.get('msg', 'invalid value')}"
        return JSONResponse(APIError(message, param=param).body(), status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        message = f"{request.method} {request.url.path}: {error.detail}"
        return JSONResponse(APIError(message, status=error.status_code).body(), status_code=error.status_code)

    @app.exception_handler(Exception)
    async def server_error(request: Request, error: Exception):
        body = APIError(f"{type(error).__name__}: {error}", status=500, kind="server_error").body()
        return JSONResponse(body, status_code=500)
