"""A scripted model server for tests: OpenAI-compatible and Ollama-compatible, on 127.0.0.1.

Every model's answers, latency and faults are set per test. Two ways to use it:

In-process (a background thread running its own event loop)::

    server = ScriptedServer(answer=lambda model, prompt, seed: f"#### {seed % 3}")
    server.start()
    server.url          # "http://127.0.0.1:PORT"  (OpenAI base: server.url + "/v1")
    server.add_fault("429", count=3, retry_after=1)
    ...
    server.requests     # the request log, for assertions
    server.peak_in_flight["id-a"]  # most requests for a model handled at once (hangs included)
    server.stop()

As a subprocess (for kill -9 tests and benchmarks)::

    python -m tests.support.scripted_server --port 0 --latency 0.02 --slots 64

prints ``URL http://127.0.0.1:PORT`` on its first stdout line, then serves until killed.

Endpoints: ``POST /v1/chat/completions`` (also ``/chat/completions``), ``POST /api/chat`` (Ollama
native), ``GET /health``, ``GET /log`` (the request log as JSON), ``GET /stats`` (slot time used), ``POST /config`` (set faults, n
mode, latency from another process).

Faults (``add_fault(kind, count=1, model=None, duration=None, **options)``), consumed in the order
they were added by the requests they match:

- ``"429"``: status 429 with ``Retry-After: <retry_after>`` seconds (or ``retry_after_date=True``
  for an HTTP date, or ``retry_after_ms=...`` for a ``retry-after-ms`` header);
- ``"500"``, ``"503"``, ``"408"``, any status as a string: that status with an error body
  (``message=`` sets its text);
- ``"hang"``: sleep ``seconds`` (default 30) before answering, i.e. past the client's timeout;
- ``"reset"``: close the connection without an answer;
- ``"malformed"``: status 200 with a body that is not the expected JSON (``body=`` sets it);
- ``"refusal"``, ``"content_filter"``, ``"length_empty"``: a valid 200 reply with no answer
  (``content: null`` with a ``refusal``; ``content: null`` with ``finish_reason:
  content_filter``; ``content: ""`` with ``finish_reason: length``).

Any status fault takes ``retry_after=`` (a ``Retry-After`` header, for a 503 too) and ``type=``
(the error's ``type``, as LiteLLM's ``no_db_connection``).

Gateway behaviour, as LiteLLM's proxy answers (``keys=``, ``known_models=``, ``in_flight_cap=``,
``cost=``): a request whose bearer key is not in ``keys`` gets ``400 {"error": {"message": "No
connected db.", "type": "no_db_connection"}}``; a model not in ``known_models`` gets ``400
Invalid model name passed in model=...``; past ``in_flight_cap`` requests handled at once, a
request gets ``503`` with ``Retry-After: <cap_retry_after>``; ``cost`` (a number, or a function
of the model) is sent as ``x-litellm-response-cost`` (a string as it is: a hostile value). ``GET /v1/models`` lists ``known_models``
(or every model with an answer function).

``count`` is how many requests the fault hits (``None``: all of them, forever); ``duration``
(seconds) makes it hit every matching request for that long instead (a storm); ``model`` and
``match`` (a substring of the prompt) restrict which requests it hits.

n handling (``n_mode``, global or per model via ``n_modes``): ``"support"`` returns n choices,
choice j drawn with seed + j (so n=3 in one request gives the same answers as three requests with
seeds s, s+1, s+2); ``"reject"`` answers 400 to n > 1 as llama.cpp does; ``"ignore"`` returns one
choice as Ollama's OpenAI endpoint does.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.utils
import hashlib
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from aiohttp import web

AnswerFn = Callable[[str, str, int], str]  # (model id, prompt text, seed) -> response text


def default_answer(model: str, prompt: str, seed: int) -> str:
    """A deterministic, varied answer: '#### N' with N in 0..2 from a hash of the inputs."""
    digest = hashlib.sha256(f"{model}|{prompt}|{seed}".encode()).digest()
    return f"Let me think step by step.\n#### {digest[0] % 3}"


@dataclass
class Fault:
    kind: str
    count: int | None = 1
    model: str | None = None
    duration: float | None = None
    options: dict[str, Any] = field(default_factory=dict)
    started: float | None = None
    match: str | None = None  # only requests whose prompt contains this text

    def matches(self, model: str, now: float, prompt: str = "") -> bool:
        if self.model is not None and self.model != model:
            return False
        if self.match is not None and self.match not in prompt:
            return False
        if self.duration is not None:
            if self.started is None:
                self.started = now
            return now - self.started < self.duration
        return (self.count or 0) > 0

    def expired(self, now: float) -> bool:
        if self.duration is not None:
            return self.started is not None and now - self.started >= self.duration
        return (self.count or 0) <= 0


class ScriptedServer:
    def __init__(
        self,
        answer: AnswerFn | None = None,
        *,
        answers: dict[str, AnswerFn] | None = None,
        latency: float | Callable[[str, str, int], float] = 0.0,
        slots: int | None = None,
        n_mode: str = "support",
        n_modes: dict[str, str] | None = None,
        usage: bool = True,
        port: int = 0,
        host: str = "127.0.0.1",
        log: bool = True,
        keys: set[str] | None = None,
        known_models: set[str] | None = None,
        in_flight_cap: int | None = None,
        cap_retry_after: float = 1,
        cost: float | str | Callable[[str], float | str | None] | None = None,
    ):
        self.keys = set(keys) if keys is not None else None  # gateway keys, LiteLLM-like
        self.known_models = set(known_models) if known_models is not None else None
        self.in_flight_cap = in_flight_cap  # requests handled at once before 503s
        self.cap_retry_after = cap_retry_after
        self.capped = 0  # requests answered 503 for the in-flight cap
        self.cost = cost
        self.log = log  # keep the request log (off for benchmarks)
        self.answer = answer or default_answer
        self.answers = dict(answers or {})
        self.latency = latency
        self.slots = slots
        self.n_mode = n_mode
        self.n_modes = dict(n_modes or {})
        self.usage = usage
        self.host, self.port = host, port
        self.requests: list[dict[str, Any]] = []
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._started = threading.Event()
        self._semaphore: asyncio.Semaphore | None = None
        self._active = 0
        self.max_active = 0  # most requests the server held at once
        # per model id: most requests being handled at once, faults (hangs) included
        self.peak_in_flight: dict[str, int] = {}
        self._in_flight_now: dict[str, int] = {}
        self._in_flight_total = 0  # requests being handled now, every model
        self.held = 0  # requests that took a slot
        self.held_seconds = 0.0  # slot time they really took (timer overshoot included)
        self.asked_seconds = 0.0  # slot time they asked for (the scripted latency)

    # ---- configuration (thread-safe) -------------------------------------------------------
    def add_fault(self, kind: str, count: int | None = 1, model: str | None = None,
                  duration: float | None = None, match: str | None = None,
                  **options: Any) -> None:
        """``count=None`` (without ``duration``): every matching request, forever."""
        if count is None and duration is None:
            duration = float("inf")
        with self._lock:
            self._faults.append(Fault(str(kind), None if duration else count, model, duration,
                                      options, match=match))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def clear_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def _take_fault(self, model: str, prompt: str = "") -> Fault | None:
        if not self._faults:
            return None
        now = time.monotonic()
        with self._lock:
            self._faults = [f for f in self._faults if not f.expired(now)]
            for fault in self._faults:
                if fault.matches(model, now, prompt):
                    if fault.duration is None:
                        fault.count = (fault.count or 0) - 1
                    return fault
        return None

    # ---- app -------------------------------------------------------------------------------
    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/chat/completions", self._openai)
        app.router.add_post("/api/chat", self._ollama)
        app.router.add_get("/health", self._health)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/models", self._models)
        app.router.add_get("/log", self._log)
        app.router.add_get("/stats", self._stats)
        app.router.add_post("/config", self._config)
        return app

    async def _models(self, request: web.Request) -> web.Response:
        names = sorted(self.known_models if self.known_models is not None else self.answers)
        return web.json_response({"object": "list", "data": [
            {"id": name, "object": "model", "owned_by": "scripted"} for name in names]})

    def _gateway_refusal(self, request: web.Request, model: str) -> web.Response | None:
        """LiteLLM's answers to a wrong key, an unknown model and a full in-flight cap."""
        if self.keys is not None:
            given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            if given not in self.keys:
                return web.json_response({"error": {
                    "message": "No connected db.", "type": "no_db_connection", "param": None,
                    "code": "400"}}, status=400)
        if self.known_models is not None and model not in self.known_models:
            message = (f"/chat/completions: Invalid model name passed in model={model}. Call "
                       "`/v1/models` to view available models for your key.")
            return web.json_response({"error": {
                "message": message, "type": "invalid_request_error", "param": None,
                "code": "400"}}, status=400)
        if self.in_flight_cap is not None and self._in_flight_total > self.in_flight_cap:
            self.capped += 1
            return web.json_response(
                {"error": {"message": "Max parallel request limit reached.",
                           "type": "service_unavailable", "code": "503"}},
                status=503, headers={"Retry-After": f"{self.cap_retry_after:g}"})
        return None

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response({"held": self.held, "held_seconds": self.held_seconds,
                                  "asked_seconds": self.asked_seconds,
                                  "max_active": self.max_active})

    async def _log(self, request: web.Request) -> web.Response:
        with self._lock:
            return web.json_response(list(self.requests))

    async def _config(self, request: web.Request) -> web.Response:
        body = await request.json()
        for fault in body.get("faults", []):
            fault = dict(fault)
            self.add_fault(fault.pop("kind"), fault.pop("count", 1), fault.pop("model", None),
                           fault.pop("duration", None), fault.pop("match", None), **fault)
        if "n_mode" in body:
            self.n_mode = body["n_mode"]
        if "latency" in body:
            self.latency = float(body["latency"])
        return web.json_response({"ok": True})

    def _prompt(self, messages: Any) -> str:
        if not isinstance(messages, list):
            return ""
        return "\n".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))

    def _text(self, model: str, prompt: str, seed: int) -> str:
        fn = self.answers.get(model, self.answer)
        return fn(model, prompt, seed)

    def _delay(self, model: str, prompt: str, seed: int) -> float:
        if callable(self.latency):
            return float(self.latency(model, prompt, seed))
        return float(self.latency)

    async def _wait(self, model: str, prompt: str, seed: int) -> None:
        delay = self._delay(model, prompt, seed)
        if self._semaphore is None and self.slots:
            self._semaphore = asyncio.Semaphore(self.slots)
        if self._semaphore is not None:
            async with self._semaphore:
                await self._hold(delay)
        else:
            await self._hold(delay)

    async def _hold(self, delay: float) -> None:
        self._active += 1
        self.max_active = max(self.max_active, self._active)
        start = time.perf_counter()
        try:
            if delay > 0:
                await asyncio.sleep(delay)
        finally:
            self._active -= 1
            self.held += 1
            self.held_seconds += time.perf_counter() - start
            self.asked_seconds += delay

    async def _fault_response(self, request: web.Request, fault: Fault, api: str):
        kind, opt = fault.kind, fault.options
        if kind == "hang":
            await asyncio.sleep(float(opt.get("seconds", 30)))
            return None
        if kind == "reset":
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError()  # nothing more to send on this connection
        if kind == "malformed":
            return web.Response(status=200, body=opt.get("body", '{"choices": [ {"mess'),
                                content_type="application/json")
        if kind in ("refusal", "content_filter", "length_empty"):
            message: dict[str, Any] = {"role": "assistant", "content": None}
            finish = {"refusal": "stop", "content_filter": "content_filter",
                      "length_empty": "length"}[kind]
            if kind == "refusal":
                message["refusal"] = opt.get("refusal", "I can't help with that.")
            if kind == "length_empty":
                message["content"] = ""
            body = {"id": "chatcmpl-empty", "object": "chat.completion",
                    "created": int(time.time()), "model": "scripted",
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 0, "total_tokens": 5}}
            return web.json_response(body)
        status = int(kind)
        headers = {}
        if status != 429 and opt.get("retry_after") is not None:
            headers["Retry-After"] = str(opt["retry_after"])
        if status == 429:
            if "retry_after_ms" in opt:
                headers["retry-after-ms"] = str(opt["retry_after_ms"])
            elif opt.get("retry_after_date"):
                when = time.time() + float(opt.get("retry_after", 1))
                headers["Retry-After"] = email.utils.formatdate(when, usegmt=True)
            elif opt.get("retry_after") is not None:
                headers["Retry-After"] = str(opt["retry_after"])
        message = opt.get("message", f"scripted fault {status}")
        if api == "ollama":
            body = {"error": message}
        else:
            body = {"error": {"message": message, "type": opt.get("type", "scripted"),
                              "code": status}}
        return web.json_response(body, status=status, headers=headers)

    def _record(self, api: str, request: web.Request, body: Any, status: int | str) -> None:
        if not self.log:
            return
        entry = {
            "api": api,
            "path": request.path,
            "model": body.get("model") if isinstance(body, dict) else None,
            "n": body.get("n") if isinstance(body, dict) else None,
            "seed": (body.get("seed") if api == "openai"
                     else (body.get("options") or {}).get("seed")) if isinstance(body, dict)
            else None,
            "body": body,
            "authorization": request.headers.get("Authorization"),
            "peer": (request.transport.get_extra_info("peername")
                     if request.transport is not None else None),
            "status": status,
            "time": time.time(),
        }
        with self._lock:
            self.requests.append(entry)

    async def _read(self, request: web.Request) -> Any:
        try:
            return await request.json()
        except Exception:
            return None

    @contextlib.contextmanager
    def _in_flight(self, body: Any) -> Iterator[None]:
        """Count a request as in flight for its model (faults and hangs included) while it runs."""
        model = str(body.get("model")) if isinstance(body, dict) else ""
        self._in_flight_now[model] = self._in_flight_now.get(model, 0) + 1
        self.peak_in_flight[model] = max(self.peak_in_flight.get(model, 0),
                                         self._in_flight_now[model])
        self._in_flight_total += 1
        try:
            yield
        finally:
            self._in_flight_now[model] -= 1
            self._in_flight_total -= 1

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        body = await self._read(request)
        with self._in_flight(body):
            return await self._openai_reply(request, body)

    async def _openai_reply(self, request: web.Request, body: Any) -> web.StreamResponse:
        if not isinstance(body, dict) or "model" not in body or "messages" not in body:
            self._record("openai", request, body, 400)
            return web.json_response({"error": {"message": "bad request body"}}, status=400)
        model = str(body["model"])
        n = int(body.get("n") or 1)
        seed = int(body.get("seed") or 0)
        prompt = self._prompt(body["messages"])
        refused = self._gateway_refusal(request, model)
        if refused is not None:
            self._record("openai", request, body, refused.status)
            return refused
        fault = self._take_fault(model, prompt)
        if fault is not None:
            self._record("openai", request, body, fault.kind)
            response = await self._fault_response(request, fault, "openai")
            if response is not None:
                return response
        mode = self.n_modes.get(model, self.n_mode)
        if n > 1 and mode == "reject":
            self._record("openai", request, body, 400)
            return web.json_response(
                {"error": {"code": 400, "message": "only n = 1 is supported",
                           "type": "invalid_request_error"}}, status=400)
        if fault is None:
            self._record("openai", request, body, 200)
        count = 1 if mode == "ignore" else n
        await self._wait(model, prompt, seed)
        choices = []
        completion = 0
        for j in range(count):
            text = self._text(model, prompt, seed + j)
            completion += max(1, len(text.split()))
            choices.append({"index": j, "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop"})
        payload: dict[str, Any] = {
            "id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion",
            "created": int(time.time()), "model": model, "choices": choices,
        }
        if self.usage:
            prompt_tokens = max(1, len(prompt.split()))
            payload["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                                "total_tokens": prompt_tokens + completion}
        headers = {}
        cost = self.cost(model) if callable(self.cost) else self.cost
        if cost is not None:
            headers["x-litellm-response-cost"] = (cost if isinstance(cost, str)
                                                  else repr(float(cost)))
        return web.json_response(payload, headers=headers)

    async def _ollama(self, request: web.Request) -> web.StreamResponse:
        body = await self._read(request)
        with self._in_flight(body):
            return await self._ollama_reply(request, body)

    async def _ollama_reply(self, request: web.Request, body: Any) -> web.StreamResponse:
        if not isinstance(body, dict) or "model" not in body or "messages" not in body:
            self._record("ollama", request, body, 400)
            return web.json_response({"error": "bad request body"}, status=400)
        model = str(body["model"])
        options = body.get("options") or {}
        seed = int(options.get("seed") or 0)
        prompt = self._prompt(body["messages"])
        fault = self._take_fault(model, prompt)
        if fault is not None:
            self._record("ollama", request, body, fault.kind)
            response = await self._fault_response(request, fault, "ollama")
            if response is not None:
                return response
        else:
            self._record("ollama", request, body, 200)
        if body.get("stream", True) is not False:
            return web.json_response({"error": "scripted server only answers stream: false"},
                                     status=400)
        await self._wait(model, prompt, seed)
        text = self._text(model, prompt, seed)
        payload: dict[str, Any] = {
            "model": model, "created_at": "2026-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": text},
            "done": True, "done_reason": "stop",
        }
        if self.usage:
            payload["prompt_eval_count"] = max(1, len(prompt.split()))
            payload["eval_count"] = max(1, len(text.split()))
        return web.json_response(payload)

    # ---- lifecycle -------------------------------------------------------------------------
    async def start_async(self) -> None:
        self._runner = web.AppRunner(self.make_app(), access_log=None,
                                     handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=1024)
        await site.start()
        sockets = site._server.sockets  # type: ignore[union-attr]
        self.port = sockets[0].getsockname()[1]

    async def stop_async(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def openai_url(self) -> str:
        return f"{self.url}/v1"

    def start(self) -> "ScriptedServer":
        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.start_async())
            self._started.set()
            loop.run_forever()
            loop.run_until_complete(self.stop_async())
            loop.close()

        self._thread = threading.Thread(target=serve, name="scripted-server", daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("scripted server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None
            self._thread = None

    def __enter__(self) -> "ScriptedServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.support.scripted_server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--slots", type=int, default=None, help="requests served at once")
    parser.add_argument("--n-mode", choices=["support", "reject", "ignore"], default="support")
    parser.add_argument("--no-usage", action="store_true")
    parser.add_argument("--no-log", action="store_true", help="keep no request log")
    parser.add_argument("--fault", action="append", default=[],
                        help="KIND[:key=value,...] e.g. 429:count=3,retry_after=1")
    return parser.parse_args(argv)


def _parse_fault(text: str) -> tuple[str, dict[str, Any]]:
    kind, _, rest = text.partition(":")
    options: dict[str, Any] = {}
    for part in filter(None, rest.split(",")):
        key, _, value = part.partition("=")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return kind, options


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    server = ScriptedServer(latency=args.latency, slots=args.slots, n_mode=args.n_mode,
                            usage=not args.no_usage, port=args.port, host=args.host,
                            log=not args.no_log)
    for text in args.fault:
        kind, options = _parse_fault(text)
        server.add_fault(kind, options.pop("count", 1), options.pop("model", None),
                         options.pop("duration", None), options.pop("match", None), **options)

    async def serve() -> None:
        await server.start_async()
        print(f"URL {server.url}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop_async()

    try:
        try:
            import uvloop  # a faster loop when installed: the server should not be the bottleneck
        except ImportError:
            asyncio.run(serve())
        else:
            uvloop.run(serve())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
