"""`phi-eval serve SPEC`: an OpenAI-compatible HTTP server over any local model (a zoo name of a local model,
hf:HUB_ID_OR_DIR, gguf:FILE), so the data stages (annotate, synthesize), the app and `openai:` model specs
can use local models through the `openai` client.

Endpoints (under /v1): GET models, POST completions, POST chat/completions; streamed (SSE) or not;
temperature, top_p, max_tokens, stop (up to 4), seed, n, `logprobs` (completions: tokens, token_logprobs,
top_logprobs, text_offset; chat: logprobs + top_logprobs), completions `echo` (with max_tokens=0: the
prompt's token log-probabilities, which is how API log-likelihoods are scored), `usage`. Errors are
OpenAI's body {"error": {"message", "type", "param", "code"}}: 400 bad request, 404 unknown model or path,
500 server fault. The served model name is the spec's name (`GET /v1/models` lists it).

Chat prompts use the tokenizer's chat template when it has one; otherwise a plain transcript
("System: ...", "User: ...", one line per message, then "Assistant:"), stopped where the model begins a
"User:" or "System:" turn of its own (see protocol.chat_prompt).

The model runs on one thread (serve.worker): concurrent requests with the same settings are decoded as
one batch, streamed or not; scoring runs one request at a time.

In tests and scripts:

    from phi_eval.serve import start_server

    with start_server("hf:/path/to/model") as server:   # or start_server(loaded_hf_model, name="tiny")
        client = openai.OpenAI(base_url=server.base_url, api_key="none")
        client.completions.create(model=server.model_name, prompt="def f(", max_tokens=8)

start_server binds 127.0.0.1 on a free port unless told otherwise, returns once the server answers, and
gives a RunningServer (base_url, model_name, host, port, stop()); leaving the `with` block stops it.
"""
from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

from phi_eval.errors import UsageError

START_TIMEOUT_S = 60.0


@dataclass
class RunningServer:
    host: str
    port: int
    model_name: str
    _server: object
    _thread: threading.Thread
    _worker: object

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join()
        self._worker.close()

    def __enter__(self) -> "RunningServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def load_local_model(spec: str, *, device: str = "auto", dtype: str = "auto"):
    """(the model, its served name) for a spec of a local model."""
    from phi_eval.models import load_model
    from phi_eval.zoo import parse_model_spec

    parsed = parse_model_spec(spec)
    if parsed.kind not in ("hf", "gguf"):
        raise UsageError(f"phi-eval serve needs a local model (a zoo name of one, hf:DIR_OR_HUB_ID or gguf:FILE), "
                         f"not {parsed.kind}: {spec!r}")
    return load_model(parsed, device=device, dtype=dtype), parsed.name


def build(model, name: str):
    """The FastAPI app over a loaded model, and the worker that owns the model."""
    from phi_eval.serve.routes import Served, build_app
    from phi_eval.serve.worker import ModelWorker

    worker = ModelWorker(model)
    return build_app(Served(model=model, name=name, worker=worker, created=int(time.time()))), worker


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port} ({e.strerror}); pick another --port or --host") from None
    return sock


def start_server(model, *, name: str | None = None, host: str = "127.0.0.1", port: int = 0,
                 device: str = "auto", dtype: str = "auto", log_level: str = "warning") -> RunningServer:
    """Serve a spec (str) or an already loaded HFModel in a background thread of this process.
    port=0 picks a free port. `name` is the served model name (default: the spec's name)."""
    import uvicorn

    if isinstance(model, str):
        model, spec_name = load_local_model(model, device=device, dtype=dtype)
        name = name or spec_name
    name = name or model.identity["name"]
    sock = bind(host, port)
    app, worker = build(model, name)
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="phi-eval-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            worker.close()
            raise RuntimeError(f"phi-eval serve did not start on {host}:{port}")
        time.sleep(0.02)
    return RunningServer(host, sock.getsockname()[1], name, server, thread, worker)


def serve(spec: str, *, host: str = "127.0.0.1", port: int = 8000, name: str | None = None,
          device: str = "auto", dtype: str = "auto") -> None:
    """Serve until interrupted (Ctrl-C): what `phi-eval serve` runs."""
    import uvicorn

    sock = bind(host, port)  # before loading the model: a busy port fails fast
    model, spec_name = load_local_model(spec, device=device, dtype=dtype)
    name = name or spec_name
    app, worker = build(model, name)
    url = f"http://{f'[{host}]' if ':' in host else host}:{sock.getsockname()[1]}/v1"
    print(f"phi-eval serve: {name} at {url} (e.g. phi-eval run --models openai:{name}@{url})", flush=True)
    try:
        uvicorn.Server(uvicorn.Config(app, log_level="info")).run(sockets=[sock])
    finally:
        worker.close()
