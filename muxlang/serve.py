"""A spec behind an OpenAI-compatible HTTP endpoint (``muxlang serve``), on aiohttp.web.

::

    import muxlang
    from muxlang.serve import MuxServer

    server = MuxServer("tuned.mux", muxlang.Session(store="muxlang.sqlite"))
    server.serve_forever("127.0.0.1", 8000)          # until SIGTERM / SIGINT
    # or: app = server.app (an aiohttp.web.Application), or: await server.start(host, port)

Every served mux or cascade answers through a ``Session.runner``, so answers, tie-breaks (the
mux's ``validation`` accuracies in the store) and sample caching are exactly those of
``Session.run`` and ``muxlang run``. The runners share one set of backend connections (each
backend's ``concurrency`` and ``rate`` hold for all served muxes together), one sample cache and
one run in the store. The request mapping, the errors and the metrics are described in
``docs/serve.md``.

Routes: ``POST /v1/chat/completions`` (also streamed), ``GET /v1/models``, ``GET
/v1/models/{name}``, ``GET /health``, ``GET /metrics`` (Prometheus text).
"""
from __future__ import annotations

import asyncio
import hmac
import json
import math
import os
import signal
import sys
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

from aiohttp import web

from muxlang import ir
from muxlang.errors import MuxError, did_you_mean
from muxlang.runtime.secrets import scrub
from muxlang.semantics import policy_of
from muxlang.session import Runner, Session, load, runnable_of, to_record_result

__all__ = ["MuxServer", "make_app", "ServeError", "MUX_FIELDS", "describe_runnable"]

# the request body's own fields; every other field is recorded as ignored in the trace
CHAT_FIELDS = ("model", "messages", "stream", "stream_options", "mux", "n")
MUX_FIELDS = ("record", "trace", "samples", "deadline", "adaptive")
SAMPLE_CAP = 64  # default largest per-member sample count a request may ask for
VARIANTS = 32  # prepared runs kept for requests that override the sample counts


class ServeError(Exception):
    """A request the server answers with an error in the OpenAI shape."""

    def __init__(self, status: int, message: str, code: str, *, kind: Optional[str] = None,
                 param: Optional[str] = None, headers: Optional[Mapping[str, str]] = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.kind = kind or ("invalid_request_error" if status < 500 else "server_error")
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"message": scrub(self.message), "type": self.kind,
                          "param": self.param, "code": self.code}}

    def response(self) -> web.Response:
        return web.json_response(self.body(), status=self.status, headers=self.headers)


# ------------------------------------------------------------------------------------------------
# what a served mux is
def budget(runnable: ir.Runnable) -> int:
    """Samples one request draws at most (every cascade step run, nested muxes in full)."""
    if isinstance(runnable, ir.Cascade):
        return sum(budget(step) for step in runnable.steps)
    return sum(m.samples if m.is_model else budget(m.member) for m in runnable.pool)


def describe_runnable(runnable: ir.Runnable) -> dict[str, Any]:
    """A served mux or cascade as ``GET /v1/models`` lists it: pool, budgets, rule, task,
    sampling policy."""
    if isinstance(runnable, ir.Cascade):
        return {"kind": "cascade", "threshold": runnable.threshold, "budget": budget(runnable),
                "steps": [describe_runnable(step) for step in runnable.steps]}
    pool = []
    for member in runnable.pool:
        if member.is_model:
            model: ir.Model = member.member  # type: ignore[assignment]
            pool.append({"member": member.name, "samples": member.samples, "id": model.id,
                         "backend": model.backend.name})
        else:
            pool.append({"member": member.name, "mux": describe_runnable(member.member)})
    return {"kind": "mux", "task": runnable.task.name, "rule": str(runnable.rule),
            "tie_break": runnable.tie_break, "validation": runnable.validation,
            "adaptive": runnable.adaptive, "budget": budget(runnable), "pool": pool}


def model_members(runnable: ir.Runnable) -> dict[str, int]:
    """Model members reachable from a mux or cascade: name -> samples (the largest count)."""
    found: dict[str, int] = {}
    for _, member in ir.model_members(runnable):
        found[member.name] = max(found.get(member.name, 0), member.samples)
    return found


def with_samples(runnable: ir.Runnable, samples: Mapping[str, int],
                 adaptive: Optional[str] = None) -> ir.Runnable:
    """The same mux or cascade with the named model members drawn ``samples[name]`` times, and
    (``adaptive``) its own sampling policy — or each step's — replaced (nested muxes always draw
    in full: muxlang.semantics)."""
    def mux_of(mux: ir.Mux, top: bool) -> ir.Mux:
        pool = [replace(m, samples=samples.get(m.name, m.samples)) if m.is_model
                else replace(m, member=mux_of(m.member, False))  # type: ignore[arg-type]
                for m in mux.pool]
        policy = adaptive if top and adaptive is not None else mux.adaptive
        return replace(mux, pool=pool, adaptive=policy)

    if isinstance(runnable, ir.Cascade):
        return replace(runnable, steps=[mux_of(step, True) for step in runnable.steps])
    return mux_of(runnable, True)


def first_slots(runnable: ir.Runnable) -> list[str]:
    """The first template slot of each task the mux or cascade renders (a user message fills
    them), in first-use order."""
    tasks: list[ir.Task] = []

    def visit(mux: ir.Mux) -> None:
        if mux.task not in tasks:
            tasks.append(mux.task)
        for member in mux.pool:
            if not member.is_model:
                visit(member.member)  # type: ignore[arg-type]

    for mux in (runnable.steps if isinstance(runnable, ir.Cascade) else [runnable]):
        visit(mux)
    return list(dict.fromkeys(t.fields[0] for t in tasks if t.fields))


def _uses_replay(runnable: ir.Runnable) -> list[str]:
    from muxlang.runtime.executor import backends_of

    return [b.name for b in backends_of(runnable) if b.kind == "replay"]


@dataclass
class Served:
    """One mux or cascade the server answers: its runner and the runs of sample overrides."""

    name: str
    runnable: ir.Runnable
    runner: Runner
    slots: list[str]
    members: dict[str, int]
    info: dict[str, Any]
    variants: "OrderedDict[tuple, Runner]" = field(default_factory=OrderedDict)


# ------------------------------------------------------------------------------------------------
# a parsed request
@dataclass
class ChatRequest:
    served: Served
    record: dict[str, Any]
    source: str  # where the record came from, for the trace
    stream: bool = False
    include_usage: bool = False
    trace: bool = False
    samples: dict[str, int] = field(default_factory=dict)
    deadline: Optional[float] = None
    ignored: list[str] = field(default_factory=list)
    adaptive: Optional[str] = None  # mux.adaptive: the sampling policy for this request
    status: int = 200  # what the request ended with (a streamed error: the error's status)


def _text_of(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type") == "text" and isinstance(
                    part.get("text"), str):
                parts.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ServeError(400, f"{where}: content part of type '{kind}' is not supported "
                                 "(a mux answers text; send text parts)", "unsupported_content",
                                 param="messages")
        return "\n".join(parts)
    if content is None:
        raise ServeError(400, f"{where} has no content", "invalid_message", param="messages")
    raise ServeError(400, f"{where}: content must be a string or a list of text parts",
                     "invalid_message", param="messages")


def _mux_options(body: dict[str, Any]) -> dict[str, Any]:
    """The ``mux`` extra fields: ``{"mux": {...}}`` or flat ``"mux.NAME"`` keys."""
    options: dict[str, Any] = {}
    nested = body.get("mux")
    if nested is not None:
        if not isinstance(nested, dict):
            raise ServeError(400, "'mux' must be an object of options ("
                             + ", ".join(MUX_FIELDS) + ")", "invalid_mux_options", param="mux")
        options.update(nested)
    for key, value in body.items():
        if key.startswith("mux."):
            options[key[4:]] = value
    for key in options:
        if key not in MUX_FIELDS:
            hint = did_you_mean(key, MUX_FIELDS)
            raise ServeError(400, f"unknown mux option '{key}'"
                             + (f"; {hint}" if hint else f" (options: {', '.join(MUX_FIELDS)})"),
                             "invalid_mux_options", param=f"mux.{key}")
    return options


# ------------------------------------------------------------------------------------------------
# the server
class MuxServer:
    """The muxes and cascades of a spec, answering OpenAI chat completions.

    ``spec``: a checked spec or the path of a .mux file. ``session``: where samples come from and
    go (store, backend URL overrides, limits); default ``Session()`` without caching.
    ``muxes``: the names to serve (default: every mux and cascade whose backends are live, i.e.
    not ``replay``). ``api_key``: when given, every route but ``/health`` needs ``Authorization:
    Bearer <api_key>``. ``in_flight``: requests answered at once (default: the runner's, as
    ``muxlang run``'s records in flight); ``queue``: requests waiting beyond those before a 429
    (default 256). ``deadline``: seconds a request may take unless it says ``mux.deadline``
    (default none). ``max_samples``: the largest ``mux.samples`` count. ``shutdown_timeout``:
    seconds in-flight requests get to finish after a stop.
    """

    def __init__(self, spec: Union[ir.Spec, str, os.PathLike], session: Optional[Session] = None,
                 muxes: Optional[Sequence[str]] = None, *, api_key: Optional[str] = None,
                 in_flight: Optional[int] = None, queue: int = 256,
                 deadline: Optional[float] = None, max_samples: int = SAMPLE_CAP,
                 shutdown_timeout: float = 30.0, source: str = "<serve>"):
        self.spec = spec if isinstance(spec, ir.Spec) else load(spec)
        self.session = session if session is not None else Session()
        for name, value in (("in_flight", in_flight), ("max_samples", max_samples)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise MuxError(f"{name} must be a whole number >= 1, not {value!r}")
        if not isinstance(queue, int) or queue < 0:
            raise MuxError(f"queue must be a whole number >= 0, not {queue!r}")
        for name, value in (("deadline", deadline), ("shutdown_timeout", shutdown_timeout)):
            if value is not None and not (isinstance(value, (int, float)) and value > 0):
                raise MuxError(f"{name} must be a number of seconds > 0, not {value!r}")
        if api_key is not None and not api_key:
            raise MuxError("the server's API key is empty")
        self._api_key = api_key.encode() if api_key else None
        self.queue, self.deadline, self.max_samples = queue, deadline, max_samples
        self.shutdown_timeout = float(shutdown_timeout)
        self.notes: list[str] = []  # what was left out, for the command to print
        self.served: dict[str, Served] = {}
        runnables = self._choose(muxes)
        self._owner = owner = self.session.runner(self.spec, runnables[0], source=source,
                                                  serves=runnables[1:])
        self.status = "ok"
        try:
            self._add(owner)
            for runnable in runnables[1:]:
                self._add(self.session.runner(self.spec, runnable, share=owner))
        except BaseException as error:
            owner.close(error=error)
            raise
        self.in_flight = in_flight or owner.in_flight
        self.metrics = _Metrics(self)
        self._admitted = 0  # requests being answered or waiting for a slot
        self._running = 0
        self._slots: Optional[asyncio.Semaphore] = None
        self._latency = 1.0  # moving average of a request's seconds (Retry-After)
        self._stopping = False
        self._handlers: set[asyncio.Task] = set()
        self._app: Optional[web.Application] = None
        self._runner: Optional[web.AppRunner] = None
        self.host: Optional[str] = None
        self.port: Optional[int] = None
        self.started = int(time.time())

    # -- set-up ------------------------------------------------------------------------------
    def _choose(self, names: Optional[Sequence[str]]) -> list[ir.Runnable]:
        if names:
            chosen = []
            for name in dict.fromkeys(names):
                runnable = runnable_of(self.spec, name)
                replay = _uses_replay(runnable)
                if replay:
                    raise MuxError(f"'{name}' uses replay backend(s) {', '.join(replay)}, which "
                                   "only serve stored samples to eval and tune; serve needs "
                                   "model servers (kind = openai or ollama)")
                chosen.append(runnable)
            return chosen
        chosen = []
        for runnable in [*self.spec.muxes.values(), *self.spec.cascades.values()]:
            replay = _uses_replay(runnable)
            if replay:
                self.notes.append(f"not serving '{runnable.name}': it uses replay backend(s) "
                                  f"{', '.join(replay)}")
            else:
                chosen.append(runnable)
        if not chosen:
            raise MuxError(f"{self.spec.path}: no mux or cascade to serve"
                           + (" (every one uses replay backends)" if self.notes else ""))
        return chosen

    def _add(self, runner: Runner) -> None:
        runnable = runner.runnable
        self.served[runnable.name] = Served(runnable.name, runnable, runner,
                                            first_slots(runnable), model_members(runnable),
                                            describe_runnable(runnable))

    @property
    def owner(self) -> Runner:
        """The runner whose backends, cache and store run every served mux shares."""
        return self._owner

    @property
    def app(self) -> web.Application:
        """The aiohttp application (made once); its start-up opens the backends' connections,
        its clean-up closes them and ends the run in the store."""
        if self._app is None:
            self._app = make_app(self)
        return self._app

    # -- running -----------------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 8000) -> None:
        """Listen on ``host``:``port`` (0: any free port; ``self.port`` says which)."""
        self._runner = web.AppRunner(self.app, access_log=None,
                                     shutdown_timeout=self.shutdown_timeout)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, backlog=1024)
        try:
            await site.start()
        except OSError as error:
            await self._runner.cleanup()
            self._runner = None
            raise MuxError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
        sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
        self.host, self.port = host, (sockets[0].getsockname()[1] if sockets else port)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (at most ``shutdown_timeout`` seconds,
        then they are cancelled), close the backends and end the run in the store."""
        self._stopping = True
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def cancel_in_flight(self) -> None:
        """Cancel every request being answered (a second Ctrl-C while stopping)."""
        for task in list(self._handlers):
            task.cancel()

    def serve_forever(self, host: str = "127.0.0.1", port: int = 8000,
                      on_ready: Optional[Callable[["MuxServer"], None]] = None,
                      on_stopping: Optional[Callable[[str], None]] = None) -> None:
        """Serve until SIGTERM or SIGINT, then stop gracefully (``stop``); a second signal
        cancels the requests still in flight. ``on_ready(server)`` once listening,
        ``on_stopping(signal name)`` when a stop begins."""
        from muxlang.runtime.loop import run as run_loop

        async def main() -> None:
            loop = asyncio.get_running_loop()
            stop = asyncio.Event()
            signals: list[str] = []

            def on_signal(name: str) -> None:
                signals.append(name)
                if len(signals) == 1:
                    if on_stopping is not None:
                        on_stopping(name)
                    stop.set()
                else:
                    self.cancel_in_flight()

            installed = []
            for sig in (signal.SIGTERM, signal.SIGINT):
                try:
                    loop.add_signal_handler(sig, on_signal, sig.name)
                    installed.append(sig)
                except (NotImplementedError, RuntimeError, ValueError):
                    pass
            try:
                await self.start(host, port)
                if on_ready is not None:
                    on_ready(self)
                await stop.wait()
            finally:
                await self.stop()
                self._owner.close("failed" if self.port is None else self.status)
                for sig in installed:
                    loop.remove_signal_handler(sig)

        run_loop(main())

    async def _open(self, app: web.Application) -> None:
        self._slots = asyncio.Semaphore(self.in_flight)
        try:
            await self._owner.__aenter__()
        except BaseException as error:
            self._owner.close(error=error)
            raise

    async def _close(self, app: web.Application) -> None:
        try:
            await self._owner.__aexit__(None, None, None)
        finally:
            self._owner.close(self.status, {"requests": self.metrics.answered,
                                            "failed": self.metrics.failed})

    async def _on_shutdown(self, app: web.Application) -> None:
        self._stopping = True

    # -- requests ----------------------------------------------------------------------------
    def check_auth(self, request: web.Request) -> None:
        if self._api_key is None or request.path == "/health":
            return
        given = request.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                                 self._api_key):
            raise ServeError(401, "invalid or missing API key: send 'Authorization: Bearer "
                             "<key>' with the key the server was started with",
                             "invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    def parse(self, body: Any) -> ChatRequest:
        """A chat completion request's body → what to run (raises ServeError 400/404)."""
        if not isinstance(body, dict):
            raise ServeError(400, "the request body must be a JSON object", "invalid_body")
        model = body.get("model")
        if model is None:
            raise ServeError(400, "'model' is required: the name of a served mux or cascade ("
                             + ", ".join(self.served) + ")", "missing_model", param="model")
        if not isinstance(model, str):
            raise ServeError(400, "'model' must be a string", "invalid_model", param="model")
        served = self.served.get(model)
        if served is None:
            hint = did_you_mean(model, self.served)
            raise ServeError(404, f"no served mux or cascade named '{model}'"
                             + (f"; {hint}" if hint else "")
                             + f" (served: {', '.join(self.served)})", "model_not_found",
                             param="model")
        options = _mux_options(body)
        adaptive = None
        if "adaptive" in options:
            try:
                adaptive = policy_of(options["adaptive"])
            except ValueError as error:
                raise ServeError(400, f"mux.{error}", "invalid_mux_options",
                                 param="mux.adaptive") from None
        stream = body.get("stream", False)
        if stream is None:
            stream = False
        if not isinstance(stream, bool):
            raise ServeError(400, "'stream' must be true or false", "invalid_stream",
                             param="stream")
        include_usage = False
        stream_options = body.get("stream_options")
        if stream_options is not None:
            if not isinstance(stream_options, dict):
                raise ServeError(400, "'stream_options' must be an object", "invalid_body",
                                 param="stream_options")
            include_usage = bool(stream_options.get("include_usage"))
        n = body.get("n")
        if n is not None and n != 1:
            raise ServeError(400, "'n' must be 1: a mux gives one answer per request",
                             "unsupported_parameter", param="n")
        trace = options.get("trace", False)
        if not isinstance(trace, bool):
            raise ServeError(400, "mux.trace must be true or false", "invalid_mux_options",
                             param="mux.trace")
        samples = self._samples(served, options.get("samples"))
        deadline = options.get("deadline")
        if deadline is not None:
            if (isinstance(deadline, bool) or not isinstance(deadline, (int, float))
                    or not math.isfinite(deadline) or deadline <= 0):
                raise ServeError(400, "mux.deadline must be a number of seconds > 0",
                                 "invalid_mux_options", param="mux.deadline")
            deadline = float(deadline)
        else:
            deadline = self.deadline
        ignored = [key for key in body if key not in CHAT_FIELDS and not key.startswith("mux.")]
        record, source, dropped = self._record(served, body.get("messages"), options)
        return ChatRequest(served, record, source, stream, include_usage, trace, samples,
                           deadline, dropped + ignored, adaptive=adaptive)

    def _samples(self, served: Served, given: Any) -> dict[str, int]:
        if given is None:
            return {}
        if not isinstance(given, dict) or not given:
            raise ServeError(400, "mux.samples must be an object {member: samples}, e.g. "
                             + json.dumps({next(iter(served.members), "model"): 3}),
                             "invalid_mux_options", param="mux.samples")
        out = {}
        for name, count in given.items():
            if name not in served.members:
                hint = did_you_mean(name, served.members)
                raise ServeError(400, f"mux.samples: '{served.name}' has no model member "
                                 f"'{name}'" + (f"; {hint}" if hint else
                                                f" (members: {', '.join(served.members)})"),
                                 "invalid_mux_options", param="mux.samples")
            if (isinstance(count, bool) or not isinstance(count, int)
                    or not 1 <= count <= self.max_samples):
                raise ServeError(400, f"mux.samples: '{name}' must be a whole number from 1 to "
                                 f"{self.max_samples}, not {json.dumps(count)}",
                                 "invalid_mux_options", param="mux.samples")
            out[name] = count
        return out

    def _record(self, served: Served, messages: Any, options: Mapping[str, Any]
                ) -> tuple[dict[str, Any], str, list[str]]:
        """(record, where it came from, what of the messages was not used)."""
        dropped: list[str] = []
        if messages is not None and not isinstance(messages, list):
            raise ServeError(400, "'messages' must be a list of messages", "invalid_messages",
                             param="messages")
        messages = messages or []
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise ServeError(400, f"messages[{index}] must be an object with a 'role'",
                                 "invalid_messages", param="messages")
        roles = [m["role"] for m in messages]
        if "record" in options:
            record = options["record"]
            if not isinstance(record, dict):
                raise ServeError(400, "mux.record must be a JSON object (the record's fields)",
                                 "invalid_mux_options", param="mux.record")
            if messages:
                dropped.append("messages (mux.record was given)")
            return dict(record), "mux.record", dropped
        if not messages:
            raise ServeError(400, "'messages' is required (its last user message fills the "
                             "task's template), or give the whole record in mux.record",
                             "invalid_messages", param="messages")
        last = max((i for i, role in enumerate(roles) if role == "user"), default=None)
        if last is None:
            raise ServeError(400, "'messages' has no user message to answer",
                             "invalid_messages", param="messages")
        text = _text_of(messages[last].get("content"), f"messages[{last}]")
        if not served.slots:
            raise ServeError(400, f"the task of '{served.name}' has no template slot for a "
                             "message; give the record in mux.record", "invalid_messages",
                             param="messages")
        if any(role in ("system", "developer") for role in roles):
            dropped.append("system message (the task's own system prompt is used)")
        if last != len(messages) - 1 or len(messages) - roles.count("system") - roles.count(
                "developer") > 1:
            dropped.append("earlier turns (only the last user message is answered)")
        record = {slot: text for slot in served.slots}
        return record, "last user message -> " + ", ".join("{" + s + "}" for s in served.slots), \
            dropped

    def runner_for(self, request: ChatRequest) -> Runner:
        """The prepared run for a request: the mux's own, or one with its sample overrides
        (kept for the next request with the same overrides)."""
        served = request.served
        if not request.samples and request.adaptive is None:
            return served.runner
        key = (tuple(sorted(request.samples.items())), request.adaptive)
        runner = served.variants.get(key)
        if runner is not None:
            served.variants.move_to_end(key)
            return runner
        variant = with_samples(served.runnable, request.samples, request.adaptive)
        if variant == served.runnable:  # the spec's own counts
            runner = served.runner
        else:
            try:
                runner = self.session.runner(self.spec, variant, share=self._owner)
            except MuxError as error:
                raise ServeError(500, f"cannot prepare '{served.name}' with mux.samples or "
                                 f"mux.adaptive: {error}", "internal_error") from None
        served.variants[key] = runner
        while len(served.variants) > VARIANTS:
            served.variants.popitem(last=False)
        return runner

    def admit(self) -> None:
        """Take a place in the server's queue, or raise 429 when it is full."""
        if self._stopping:
            raise ServeError(503, "the server is shutting down", "shutting_down",
                             headers={"Retry-After": "1", "Connection": "close"})
        if self._admitted >= self.in_flight + self.queue:
            retry = max(1, math.ceil(self._latency * (self._admitted - self.in_flight + 1)
                                     / self.in_flight))
            raise ServeError(429, f"the server's queue is full ({self.in_flight} requests "
                             f"answered at once, {self.queue} waiting); retry after {retry} s",
                             "queue_full", kind="rate_limit_error",
                             headers={"Retry-After": str(retry)})
        self._admitted += 1

    def release(self) -> None:
        self._admitted -= 1

    async def answer(self, request: ChatRequest) -> "Answer":
        """Run the request's record (after ``admit``); raises ServeError 400/502/504."""
        runner = self.runner_for(request)
        started = time.monotonic()
        assert self._slots is not None, "the application has not started"

        waited = [0.0]

        async def run() -> Any:
            async with self._slots:  # type: ignore[union-attr]
                waited[0] = time.monotonic() - started
                self._running += 1
                try:
                    return await runner.run_record(request.record)
                finally:
                    self._running -= 1

        try:
            if request.deadline is not None:
                outcome = await asyncio.wait_for(run(), request.deadline)
            else:
                outcome = await run()
        except asyncio.TimeoutError:
            raise ServeError(504, f"no answer within the deadline of {request.deadline:g} s",
                             "deadline_exceeded") from None
        elapsed = time.monotonic() - started
        self._latency = 0.9 * self._latency + 0.1 * elapsed
        result = to_record_result(outcome)
        answer = Answer(request, result, outcome, elapsed, waited[0])
        self.metrics.observe(answer)
        if outcome.bad_input:
            raise ServeError(400, f"{result.error}; give the whole record in mux.record "
                             "when the task needs more than one field", "invalid_record",
                             param="messages")
        if result.error is not None:
            failures = "; ".join(f"{m}: {why}" for m, why in result.failures.items())
            raise ServeError(502, f"{result.error}" + (f" ({failures})" if failures else ""),
                             "all_members_failed")
        if result.answer is None or result.text is None:
            drawn, cached = answer.samples
            raise ServeError(502, f"'{request.served.name}': no pool member gave a readable "
                             f"answer ({drawn + cached} samples, none read by the task's "
                             "extractor)", "no_answer")
        return answer


@dataclass
class Answer:
    request: ChatRequest
    result: Any  # muxlang.results.RecordResult
    outcome: Any  # the executor's result
    seconds: float  # from admission to the answer
    queued: float = 0.0  # of which waiting for a slot (the server's queue)

    @property
    def samples(self) -> tuple[int, int]:
        """(drawn from the backends, served by the store)."""
        outcome = self.outcome
        steps = outcome.steps or ([outcome.result] if outcome.result else [])
        samples = [s for step in steps for s in step.samples]
        cached = sum(1 for s in samples if s.cached)
        return len(samples) - cached, cached

    def usage(self) -> dict[str, int]:
        prompt = self.result.tokens_in or 0
        completion = self.result.tokens_out or 0
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion}

    def summary(self) -> dict[str, Any]:
        return {"model": self.result.model, "confidence": self.result.confidence}

    def _samples(self, runnable: ir.Runnable, drawn: int, cached: int) -> dict[str, Any]:
        """Samples behind the answer: drawn now, from the store, the request's budget, and per
        member of the mux that answered the samples it drew (``members``) and could have drawn
        (``budgets``). Under an adaptive policy ``members`` is what the policy drew, ``run``'s
        ``samples`` (the executor's count: a model member that failed outright is in
        ``missing`` instead); a nested mux is decided in full, all of its own samples."""
        if self.request.samples or self.request.adaptive is not None:
            runnable = with_samples(runnable, self.request.samples, self.request.adaptive)
        answering: Any = runnable
        if isinstance(runnable, ir.Cascade):
            answering = next((s for s in runnable.steps if s.name == self.result.step),
                             runnable.steps[-1])
        budgets = {m.name: m.samples if m.is_model else budget(m.member)
                   for m in answering.pool}
        used = self.outcome.result.drawn if self.outcome.result is not None else None
        if used is None:  # drawn in full
            members = dict(budgets)
        else:
            members = {m.name: used[m.name] if m.is_model else budgets[m.name]
                       for m in answering.pool if not m.is_model or m.name in used}
        return {"drawn": drawn, "cached": cached, "budget": budget(runnable),
                "members": members, "budgets": budgets}

    def trace(self) -> dict[str, Any]:
        r, request = self.result, self.request
        drawn, cached = self.samples
        runnable = request.served.runnable
        trace: dict[str, Any] = {
            "mux": request.served.name,
            "kind": "cascade" if isinstance(runnable, ir.Cascade) else "mux",
            "model": r.model, "confidence": r.confidence, "answer": r.answer,
            "votes": r.votes, "scores": r.scores,
            "samples": self._samples(runnable, drawn, cached),
            "missing": r.missing, "failures": r.failures, "partial": r.partial,
            "input": request.source, "ignored": request.ignored,
            "note": "the spec's prompts and sampling parameters are used: a request's system "
                    "message and its temperature, top_p, max_tokens, seed, stop and other "
                    "sampling fields do not reach the models",
            "latency": round(self.outcome.latency, 4),  # the record's run, as run's `latency`
            "queued": round(self.queued, 4),  # seconds it waited in the server's queue before
        }
        if len(r.path) > 1:
            trace["path"] = r.path
        if r.steps:
            trace["step"] = r.step
            trace["steps"] = [s.to_dict() for s in r.steps]
        overrides: dict[str, Any] = {}
        if request.samples:
            overrides["samples"] = request.samples
        if request.adaptive is not None:
            overrides["adaptive"] = request.adaptive
        if overrides:
            trace["overrides"] = overrides
        if r.confidence_bounds is not None:  # adaptive, stopped early: as run's
            trace["confidence_bounds"] = r.confidence_bounds
        if request.deadline is not None:
            trace["deadline"] = request.deadline
        return trace


# ------------------------------------------------------------------------------------------------
# metrics
class _Metrics:
    """Prometheus metrics of one server (its own registry, so several servers can coexist)."""

    def __init__(self, server: MuxServer):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("muxlang_serve_requests", "Chat completion requests answered, "
                                "by served mux and HTTP status", ["model", "status"],
                                registry=self.registry)
        self.samples = Counter("muxlang_serve_samples", "Samples behind the answers, by served "
                               "mux and source (drawn from a backend or served by the store)",
                               ["model", "source"], registry=self.registry)
        self.latency = Histogram("muxlang_serve_request_seconds", "Seconds from a chat "
                                 "completion request to its answer, by served mux", ["model"],
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30,
                                          60, 120, 300), registry=self.registry)
        in_flight = Gauge("muxlang_serve_in_flight", "Requests being answered",
                          registry=self.registry)
        in_flight.set_function(lambda: server._running)
        queued = Gauge("muxlang_serve_queued", "Requests waiting for a slot",
                       registry=self.registry)
        queued.set_function(lambda: max(0, server._admitted - server._running))
        self.registry.register(_BackendCollector(server))
        self.answered = 0
        self.failed = 0

    def observe(self, answer: Answer) -> None:
        name = answer.request.served.name
        drawn, cached = answer.samples
        if drawn:
            self.samples.labels(name, "drawn").inc(drawn)
        if cached:
            self.samples.labels(name, "cached").inc(cached)

    def done(self, model: str, status: int, seconds: Optional[float]) -> None:
        self.requests.labels(model, str(status)).inc()
        if seconds is not None:
            self.latency.labels(model).observe(seconds)
        self.answered += 1
        self.failed += status >= 400


class _BackendCollector:
    """Per-backend request figures, read from the runtime's clients when scraped."""

    FIGURES = (("requests", "requests", "HTTP requests sent to the backend (attempts)"),
               ("failures", "failures", "Requests that failed for good (errors by backend)"),
               ("retries", "retries", "Requests sent again after a retryable error"),
               ("rate_limited", "rate_limited", "429 answers from the backend"))

    def __init__(self, server: MuxServer):
        self.server = server

    def describe(self) -> list:
        return []

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily

        clients = self.server.owner.runtime.clients
        for name, attribute, text in self.FIGURES:
            family = CounterMetricFamily(f"muxlang_backend_{name}", text, labels=["backend"])
            for backend, client in clients.items():
                family.add_metric([backend], getattr(client.stats, attribute))
            yield family


# ------------------------------------------------------------------------------------------------
# the application
def _sse(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def make_app(server: Union[MuxServer, ir.Spec, str, os.PathLike], session: Optional[Session] = None,
             muxes: Optional[Sequence[str]] = None, **options: Any) -> web.Application:
    """The aiohttp application serving a spec: ``make_app(MuxServer(...))``, or
    ``make_app(spec, session, muxes, **MuxServer options)``. Run it with ``web.run_app`` or an
    ``AppRunner``; its start-up opens the backends, its clean-up closes them."""
    if not isinstance(server, MuxServer):
        server = MuxServer(server, session, muxes, **options)
    elif session is not None or muxes is not None or options:
        raise TypeError("make_app(MuxServer) takes no further arguments")
    this: MuxServer = server

    @web.middleware
    async def errors(request: web.Request, handler: Callable) -> web.StreamResponse:
        try:
            this.check_auth(request)
            return await handler(request)
        except ServeError as error:
            return error.response()
        except web.HTTPException as error:
            if error.status < 400:
                raise
            code = {404: "not_found", 405: "method_not_allowed",
                    413: "request_too_large"}.get(error.status, "http_error")
            return ServeError(error.status, f"{request.method} {request.path}: {error.reason}",
                              code).response()
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception as error:  # a bug of ours: a plain 500, never a traceback
            print(f"muxlang serve: internal error on {request.method} {request.path}: "
                  f"{type(error).__name__}: {scrub(error)}", file=sys.stderr, flush=True)
            return ServeError(500, f"internal error: {type(error).__name__}",
                              "internal_error").response()

    async def chat(request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        if task is not None:
            this._handlers.add(task)
        started = time.monotonic()
        model, status = "unknown", 500
        try:
            try:
                body = await request.json(loads=json.loads)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise ServeError(400, "the request body is not valid JSON", "invalid_json")
            if isinstance(body, dict) and isinstance(body.get("model"), str) and \
                    body["model"] in this.served:
                model = body["model"]
            parsed = this.parse(body)
            this.admit()
            try:
                if parsed.stream:
                    status = 200
                    try:
                        return await _stream(this, request, parsed)
                    finally:
                        status = parsed.status
                answer = await this.answer(parsed)
                status = 200
                return _completion(answer)
            finally:
                this.release()
        except (ServeError, web.HTTPException) as error:
            status = error.status
            raise
        finally:
            this.metrics.done(model, status, time.monotonic() - started
                              if status in (200, 502, 504) else None)
            if task is not None:
                this._handlers.discard(task)

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list",
                                  "data": [_model_entry(this, s) for s in this.served.values()]})

    async def model(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        served = this.served.get(name)
        if served is None:
            hint = did_you_mean(name, this.served)
            raise ServeError(404, f"no served mux or cascade named '{name}'"
                             + (f"; {hint}" if hint else ""), "model_not_found", param="model")
        return web.json_response(_model_entry(this, served))

    async def health(request: web.Request) -> web.Response:
        state = "stopping" if this._stopping else "ok"
        return web.json_response({"status": state, "models": list(this.served),
                                  "in_flight": this._running,
                                  "queued": max(0, this._admitted - this._running)},
                                 status=503 if this._stopping else 200)

    async def metrics(request: web.Request) -> web.Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return web.Response(body=generate_latest(this.metrics.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application(middlewares=[errors], client_max_size=4 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/v1/models/{name}", model)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.on_startup.append(this._open)
    app.on_shutdown.append(this._on_shutdown)
    app.on_cleanup.append(this._close)
    app[SERVER] = this
    return app


SERVER = web.AppKey("muxlang.server", MuxServer)  # app[SERVER]: the application's MuxServer


def _model_entry(server: MuxServer, served: Served) -> dict[str, Any]:
    return {"id": served.name, "object": "model", "created": server.started,
            "owned_by": "muxlang", "mux": served.info}


def _headers(answer: Answer) -> dict[str, str]:
    r = answer.result
    return {"x-mux-model": str(r.model), "x-mux-confidence": repr(float(r.confidence))}


def _completion(answer: Answer) -> web.Response:
    request = answer.request
    body: dict[str, Any] = {
        "id": f"chatcmpl-mux-{uuid.uuid4().hex}", "object": "chat.completion",
        "created": int(time.time()), "model": request.served.name,
        "choices": [{"index": 0, "message": {"role": "assistant",
                                             "content": answer.result.text},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": answer.usage(), "system_fingerprint": None,
    }
    if request.trace:
        body["mux"] = answer.trace()
    return web.json_response(body, headers=_headers(answer),
                             dumps=lambda o: json.dumps(o, ensure_ascii=False))


async def _stream(server: MuxServer, http: web.Request, request: ChatRequest
                  ) -> web.StreamResponse:
    """SSE: a role chunk at once, the answer's text when selected, a last chunk (finish reason,
    ``mux`` summary or trace), usage when asked, ``[DONE]``. An error after the role chunk is
    an ``error`` event (the OpenAI SDK raises it as ``APIError``)."""
    response = web.StreamResponse(status=200, headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no"})
    await response.prepare(http)
    base = {"id": f"chatcmpl-mux-{uuid.uuid4().hex}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": request.served.name,
            "system_fingerprint": None}

    def chunk(delta: dict[str, Any], finish: Optional[str] = None, **extra: Any) -> bytes:
        return _sse({**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                          "finish_reason": finish}], **extra})

    try:
        await response.write(chunk({"role": "assistant", "content": ""}))
        try:
            answer = await server.answer(request)
        except Exception as error:  # the status line has gone: the error is an event
            if not isinstance(error, ServeError):
                print(f"muxlang serve: internal error in a stream: {type(error).__name__}: "
                      f"{scrub(error)}", file=sys.stderr, flush=True)
                error = ServeError(500, f"internal error: {type(error).__name__}",
                                   "internal_error")
            request.status = error.status
            await response.write(_sse(error.body()))
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            return response
        await response.write(chunk({"content": answer.result.text}))
        await response.write(chunk({}, "stop", mux=answer.trace() if request.trace
                                   else answer.summary()))
        if request.include_usage:
            await response.write(_sse({**base, "choices": [], "usage": answer.usage()}))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
    except (ConnectionResetError, ConnectionError):
        pass  # the client went away; the record's samples are stored all the same
    return response
