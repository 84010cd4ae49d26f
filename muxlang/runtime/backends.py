"""HTTP backends: OpenAI-compatible and Ollama native, with limits, retries and n > 1 batching.

One ``BackendClient`` per spec backend owns one aiohttp session (connection reuse), a concurrency
cap (semaphore), a request-rate cap (asyncio-throttle), and a shared 429 cool-down. Its one public
coroutine, ``generate(model, messages, indices)``, draws the samples with the given indices and
returns, per index, a ``Sample`` or a ``SampleFailure``; it never raises for a server's fault.

Retries: timeouts, connection errors, 408, 409, 429, 5xx and malformed bodies are retried with
exponential backoff and jitter, honouring ``Retry-After`` (seconds or an HTTP date) and
``retry-after-ms`` plus a random share of as long again (``retry_delay``), bounded by
``backend.retries`` extra attempts and ``backend.retry_time`` seconds in total. A 429, or a 5xx
with ``Retry-After``, makes the backend wait (cool-down) before its next request, or only that
model when the server's error names it or ``rate_scope = model`` says so (``_cool_scope``); no
request waits past its own retry deadline. Other 4xx fail at once with the server's error text;
those that say every later request would fail too (401, 403, 404, and 400s whose meaning is
permanent: ``permanent_400``, the same 400 with n > 1 and n = 1) stop the backend or the model.
A reply without content (``content: null``, a refusal, a content filter, a length cut with
nothing) is a sample with no answer and its reason (``no_answer``), never retried; a gateway's
reported cost (``x-litellm-response-cost``) is kept on each sample. A response is read
(and gzip/deflate-decompressed, by ``_read_body``) no further than the backend's ``max_response``
bytes: past it, that sample fails at once (``response too large``). Keys are read from the
environment at request time and scrubbed from every message.
"""
from __future__ import annotations

import asyncio
import email.utils
import json
import math
import os
import random
import re
import time
import urllib.parse
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import aiohttp
from asyncio_throttle import Throttler

from muxlang import ir
from muxlang.errors import BackendError
from muxlang.prompts import Messages
from muxlang.runtime.secrets import clip, read_key, register_key_env, register_secret, scrub
from muxlang.samples import MAX_REPORTED_COST, Sample, SampleFailure, checked_cost

RETRYABLE_STATUS = {408, 409, 429}
MAX_ERROR_TEXT = 400  # characters of a server's error text in a message
MAX_SNIPPET = 120  # characters of a malformed body in a message


class RequestError(Exception):
    """One failed attempt (internal)."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False,
                 retry_after: float | None = None, unreachable: bool = False,
                 connection: str | None = None, detail: str | None = None,
                 error_type: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.detail = detail  # the server's own error text (HTTP errors)
        self.error_type = error_type  # its error "type" or "code", when it gave one
        self.unreachable = unreachable  # no connection could be opened at all
        self.connection = connection  # a connection failure (no answer): its error class


class RequestFailed(Exception):
    """A request that failed for good (after retries, or at once for a 4xx)."""

    def __init__(self, message: str, *, status: int | None = None, attempts: int = 0,
                 detail: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.attempts = attempts
        self.detail = detail  # the server's own error text, when it answered with an error


def env_name(backend_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", backend_name).upper()


@dataclass
class BackendSettings:
    """A backend as it will run: the spec's values with command-line / environment overrides."""

    name: str
    kind: str
    url: str
    key_envs: tuple[str, ...] = ()  # environment variables to read the key from, first set wins
    # the spec's defaults, written once in muxlang.ir
    concurrency: int = ir.default(ir.Backend, "concurrency")
    rate: float | None = ir.default(ir.Backend, "rate")
    timeout: float = ir.default(ir.Backend, "timeout")
    retries: int = ir.default(ir.Backend, "retries")
    retry_time: float = ir.default(ir.Backend, "retry_time")
    supports_n: bool | None = ir.default(ir.Backend, "supports_n")
    max_response: int = ir.default(ir.Backend, "max_response")
    rate_scope: str = ir.default(ir.Backend, "rate_scope")

    @classmethod
    def resolve(cls, backend: ir.Backend, *, url: str | None = None,
                concurrency: int | None = None, rate: float | None = None,
                environ: dict[str, str] | None = None) -> "BackendSettings":
        """Overrides: ``url`` (``--backend NAME=URL``) > ``MUXLANG_BACKEND_<NAME>_URL`` > spec.

        The key comes from ``MUXLANG_BACKEND_<NAME>_KEY`` when that is set, else from the variable
        the spec names.
        """
        env = os.environ if environ is None else environ
        prefix = f"MUXLANG_BACKEND_{env_name(backend.name)}_"
        key_envs = [prefix + "KEY"]
        if backend.api_key_env:
            key_envs.append(backend.api_key_env)
        for name in key_envs:
            register_key_env(name)
        url = (url or env.get(prefix + "URL") or backend.url or "").rstrip("/")
        try:
            register_secret(urllib.parse.urlsplit(url).password)  # masked wherever it shows
        except ValueError:
            pass  # check() says what is wrong with the URL
        return cls(
            name=backend.name,
            kind=backend.kind,
            url=url,
            key_envs=tuple(key_envs),
            concurrency=max(1, int(concurrency or backend.concurrency or 1)),
            rate=rate if rate is not None else backend.rate,
            timeout=float(backend.timeout),
            retries=max(0, int(backend.retries)),
            retry_time=float(backend.retry_time),
            supports_n=backend.supports_n,
            max_response=int(backend.max_response),
            rate_scope=backend.rate_scope,
        )

    def _check_url(self, spec_key_env: str | None) -> None:
        """A URL aiohttp would refuse at the first request, or one whose credentials would clash
        with the key: said before anything is sent, showing the URL without its password."""
        try:
            parts = urllib.parse.urlsplit(self.url)
            port = parts.port
            host = parts.hostname
        except ValueError as error:  # a port that is not a number, or out of range; a bad [v6]
            raise BackendError(f"backend '{self.name}': url {_redacted(self.url)} is not a valid "
                               f"URL ({error})", backend=self.name, needs="url") from None
        if not host or re.search(r"[\s/\\]", host) or (port is not None and port == 0):
            raise BackendError(f"backend '{self.name}': url {_redacted(self.url)} is not a valid "
                               "URL (no host, or a host with spaces)", backend=self.name,
                               needs="url")
        if (parts.username or parts.password) and (spec_key_env or self.key() is not None):
            raise BackendError(
                f"backend '{self.name}': its url carries credentials ({_redacted(self.url)}) and "
                "the backend also sends an API key (Authorization: Bearer); a request can carry "
                "only one: drop the user:password@ part of the url, or the backend's api_key",
                backend=self.name, needs="url")

    def key(self) -> str | None:
        for name in self.key_envs:
            value = read_key(name)
            if value:
                return value
        return None

    def key_hint(self) -> str:
        """Where the key a server refused came from, or that none was sent (never the key)."""
        for name in self.key_envs:
            if read_key(name):
                return (f"the key sent is {name}'s (environment or ./.env): check it is one "
                        "this server accepts")
        return (f"no key was sent: set {self.key_envs[-1]} in the environment or ./.env, or "
                f"name the variable with the backend's api_key = env(\"...\")"
                if self.key_envs else "no key was sent")

    def check(self, spec_key_env: str | None) -> None:
        """Errors a user can fix before any request is sent."""
        if self.kind not in BACKEND_KINDS:
            raise _kind_error(self)
        if not self.url:
            raise BackendError(f"backend '{self.name}' has no url: set it in the spec, give it "
                               f"as an override, or in MUXLANG_BACKEND_{env_name(self.name)}_URL",
                               backend=self.name, needs="url")
        if not re.match(r"^https?://", self.url):
            raise BackendError(f"backend '{self.name}': url must start with http:// or https://",
                               backend=self.name, needs="url")
        self._check_url(spec_key_env)
        if spec_key_env and self.key() is None:
            state = "is empty" if os.environ.get(spec_key_env) == "" else "is not set"
            raise BackendError(f"backend '{self.name}' reads its API key from environment "
                               f"variable {spec_key_env}, which {state}",
                               backend=self.name, needs="key")


def _redacted(url: str) -> str:
    """``url`` for a message: its password (and user) as ``***``, at most 200 characters."""
    shown = re.sub(r"^(https?://)[^/@]*@", r"\1***@", url)
    return clip(shown, 200)


@dataclass
class RetryPolicy:
    base: float = 0.5  # first backoff, seconds
    cap: float = 30.0  # longest single backoff
    jitter: float = 0.5  # a delay is uniform in [d * (1 - jitter), d]
    probe_after: float = 5.0  # seconds a backend that went down waits before its next probe

    def backoff(self, attempt: int) -> float:
        delay = min(self.cap, self.base * (2 ** max(0, attempt - 1)))
        return delay * (1 - self.jitter * random.random())


def retry_delay(retry_after: float) -> float:
    """How long a request told ``Retry-After: retry_after`` waits: the server's time, then a
    random share of as long again (at least 0.5 s). Requests that got the same Retry-After at
    once must not all come back in the same instant: behind a gateway's in-flight cap (503,
    ``Retry-After: 1`` to every request past it) they would collide again, round after round."""
    return retry_after + random.uniform(0, max(0.5, retry_after))


def parse_retry_after(headers: Any, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date)."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


COST_HEADERS = ("x-litellm-response-cost",)  # a gateway's cost of one reply, USD


def response_cost(headers: Any) -> tuple[float | None, str | None]:
    """The cost a gateway reported for a reply (LiteLLM's ``x-litellm-response-cost``), USD, and
    the header's text when it held something that is not a cost (``samples.checked_cost``: not a
    number, negative, NaN, infinite, absurdly large): (None, that text)."""
    if headers is None:
        return None, None
    bad = None
    for name in COST_HEADERS:
        value = headers.get(name)
        if value:
            cost = checked_cost(value)
            if cost is not None:
                return cost, None
            bad = bad or f"{name}: {value}"
    return None, bad


def _error_text(raw: bytes) -> str:
    """The server's error message out of an error body (JSON or text), shortened."""
    return _error_info(raw)[0]


def _error_info(raw: bytes) -> tuple[str, str | None]:
    """The server's error message (shortened) and its error ``type`` or ``code`` if it gave one
    (LiteLLM: ``{"error": {"message": ..., "type": "no_db_connection", "code": "400"}}``)."""
    text = raw.decode("utf-8", errors="replace").strip()
    kind = None
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict):
        err = body.get("error", body.get("detail", body.get("message")))
        if isinstance(err, dict):
            for name in ("type", "code"):
                if isinstance(err.get(name), str) and not err[name].isdigit():
                    kind = clip(err[name], 80)
                    break
            err = err.get("message") or json.dumps(err)
        if err is not None:
            text = str(err)
    text = clip(" ".join(text.split()), MAX_ERROR_TEXT)  # masked before it is cut
    return text or "(empty body)", kind


# 400s whose meaning is permanent, as gateways word them (LiteLLM's proxy above all). A key the
# gateway cannot check or refuses fails every request to the backend; an unknown model every
# request for that model. Matched on the error type and the message, case-insensitive.
BACKEND_400 = re.compile(
    r"no_db_connection|no connected db|invalid proxy server token|authentication ?error|"
    r"invalid[_ ]api[_ ]key|incorrect api key|api key (is )?(not valid|invalid)|"
    r"unauthorized|expired key|key not allowed|budget_exceeded|exceeded budget", re.I)
MODEL_400 = re.compile(
    r"invalid model name passed in model=|model_not_found|model not found|"
    r"(model|deployment) \S+ (does not exist|not found)|no such model|unknown model|"
    r"key not allowed to access model|team not allowed to access model", re.I)
# a 400 about this one request (its length, its content) says nothing about the next one
REQUEST_400 = re.compile(r"context|too long|maximum|token|length|content[ _-]?(policy|filter)|"
                         r"safety|prompt", re.I)


def permanent_400(detail: str | None, error_type: str | None) -> str | None:
    """``"backend"`` or ``"model"`` when a 400 says that every later request (to the backend, or
    for the model) would fail the same way; None for a 400 about this request."""
    text = f"{error_type or ''} {detail or ''}"
    if MODEL_400.search(text):
        return "model"
    if BACKEND_400.search(text):
        return "backend"
    return None


class ResponseTooLarge(Exception):
    """A response past the backend's ``max_response`` (internal)."""


# Content-Encodings a response may use, and how to decode them: zlib streams, whose output each
# call bounds (``max_length``), so a small compressed body never inflates past the cap.
DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS,
            "deflate": 32 + zlib.MAX_WBITS}


async def _read_body(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, decompressed, reading no further than ``limit`` bytes of it.

    A declared length past the limit is refused before anything is read; otherwise the body is
    read (and inflated) chunk by chunk and refused as soon as it passes the limit, so a gzip bomb
    or an endless stream costs at most ``limit`` bytes of memory and stops there, not at the
    timeout. Raises ``ResponseTooLarge``, or ``RequestError`` for an encoding it cannot read.
    """
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in DECODERS and encoding not in ("", "identity"):
        raise RequestError(f"response in Content-Encoding '{encoding[:40]}', which was not asked "
                           f"for (muxlang reads {', '.join(DECODERS)} and plain bodies)",
                           status=response.status)
    declared = response.content_length
    if declared is not None and declared > limit and encoding in ("", "identity"):
        raise ResponseTooLarge(f"{declared} bytes (declared)")
    wbits = DECODERS.get(encoding)
    decoder = zlib.decompressobj(wbits) if wbits is not None else None
    out = bytearray()
    try:
        async for chunk in response.content.iter_chunked(1 << 16):
            while chunk:
                if decoder is None:
                    data, chunk = chunk, b""
                else:
                    data = decoder.decompress(chunk, limit + 1 - len(out))
                    chunk = decoder.unconsumed_tail
                    if decoder.eof and decoder.unused_data:  # another gzip member follows
                        chunk = decoder.unused_data
                        decoder = zlib.decompressobj(wbits)
                out += data
                if len(out) > limit:
                    raise ResponseTooLarge(f"more than {limit} bytes"
                                           + (" once decompressed" if decoder else ""))
        if decoder is not None:
            out += decoder.flush(limit + 1 - len(out))
            if len(out) > limit:
                raise ResponseTooLarge(f"more than {limit} bytes once decompressed")
    except zlib.error as error:
        raise RequestError(f"response body is not valid {encoding}: {error}",
                           status=response.status, retryable=True) from None
    return bytes(out)


def _runs(indices: Sequence[int]) -> list[list[int]]:
    """Runs of consecutive indices, in order: [0, 1, 2, 5, 6, 9] -> [[0, 1, 2], [5, 6], [9]]."""
    runs: list[list[int]] = []
    for index in indices:
        if runs and index == runs[-1][-1] + 1:
            runs[-1].append(index)
        else:
            runs.append([index])
    return runs


def _split(total: int | None, parts: int) -> list[int | None]:
    if total is None or parts <= 0:
        return [None] * max(parts, 0)
    base, extra = divmod(int(total), parts)
    return [base + (1 if j < extra else 0) for j in range(parts)]


# finish reasons of a complete answer: an empty text with one of these is a real (empty) answer
ANSWERED = frozenset({"stop", "eos", "end_turn", "stop_sequence"})


def _no_content(finish_reason: Any, message: Any) -> str:
    """The reason recorded for a valid reply that carries no answer (``content: null``): its
    refusal text, else its finish reason (``content_filter``, ``length``, ``tool_calls``), else
    ``no_content``. Such a reply is a sample with no answer (see ``no_answer``), not an error:
    the same request would draw the same refusal, so it is never retried."""
    refusal = message.get("refusal") if isinstance(message, dict) else None
    if isinstance(refusal, str) and refusal.strip():
        return "refusal: " + clip(" ".join(refusal.split()), 200)
    if isinstance(finish_reason, str) and finish_reason and finish_reason not in ANSWERED:
        return clip(finish_reason, 60)
    return "no_content"


def no_answer(sample: Sample) -> str | None:
    """Why ``sample`` has no answer, or None when it has one (an empty text that ended normally
    is a real, empty answer). A sample with no answer counts in k and never wins: it is read as
    an unreadable sample, whatever the extractor would make of an empty text. Its reason is its
    ``finish_reason`` (``refusal: ...``, ``content_filter``, ``length``, ``no_content``), kept
    in the output and in the store."""
    if sample.text:
        return None
    reason = sample.finish_reason
    if reason is None or reason in ANSWERED:
        return None
    return reason


@dataclass
class BackendStats:
    requests: int = 0  # HTTP attempts sent
    retries: int = 0
    rate_limited: int = 0  # 429 answers
    failures: int = 0  # requests that failed for good
    samples: int = 0
    batched: int = 0  # requests with n > 1
    probes: dict[str, bool] = field(default_factory=dict)
    stopped: str | None = None  # why the backend took no more requests, if it stopped
    down: str | None = None  # why the backend counts as down (circuit breaker open), while it is
    outages: int = 0  # times the breaker opened
    fast_failed: int = 0  # requests failed without being sent while the backend was down
    stopped_models: dict[str, str] = field(default_factory=dict)  # model name -> why


class BackendClient:
    """Base: limits, retries, cool-down, n batching. Subclasses build and read the HTTP bodies."""

    kind = "base"
    path = ""

    def __init__(self, settings: BackendSettings, *, policy: RetryPolicy | None = None):
        self.settings = settings
        self.policy = policy or RetryPolicy()
        self.stats = BackendStats()
        self._session: aiohttp.ClientSession | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._throttler: Throttler | None = None
        # pauses the server asked for: monotonic end, per model id (None: the whole backend)
        self._cooldowns: dict[str | None, float] = {}
        self._cooldown_spans: dict[str | None, float] = {}  # how long each pause was asked for
        self._n_support: dict[str, bool] = {}
        # model id -> [requests, prompt tokens, samples, completion tokens] the server reported
        self._usage: dict[str, list[int]] = {}
        self._probing: dict[str, asyncio.Future] = {}  # model id -> the probe in flight
        self._headers_cache: tuple[str | None, dict[str, str]] | None = None
        self._answered = False  # some request of this run got a 200
        # the circuit breaker (see _trip): connection failures since the server last answered
        self._last_answer = float("-inf")  # monotonic time of the server's last HTTP answer
        self._failures_in_row = 0
        self._first_failure = 0.0
        self._down_since: float | None = None  # the breaker is open since then
        self._last_probe = 0.0  # when the breaker opened or its last probe failed
        self._breaker_probe = False  # the breaker's probe is in flight
        self._short_stop: str | None = None  # the reason a refused request quotes, short
        # said once when the backend or a model stops, goes down or comes back (the run command
        # prints it); the requests that fail for it then only point at it
        self.notify: Callable[[str], None] | None = None
        self._said_bad_cost = False  # a reported cost that was not one has been said
        self._stopped_models: dict[str, str] = {}  # model id -> why it takes no more
        self._model_answered: set[str] = set()  # model ids that got a 200 this run
        self._offered: asyncio.Future | None = None  # GET /models, once (see _offered_hint)
        # the adaptive in-flight limit (see _gate_enter)
        self._limit = float(max(1, settings.concurrency))
        self._in_flight = 0
        self._gate_waiters: list[asyncio.Future] = []
        if settings.supports_n is not None:
            self._default_n = settings.supports_n
        else:
            self._default_n = None

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def endpoint(self) -> str:
        return self.settings.url + self.path

    # ---- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        if self._session is not None:
            return
        limit = self.settings.concurrency
        connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit,
                                         keepalive_timeout=60, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
            cookie_jar=aiohttp.DummyCookieJar(), raise_for_status=False,
            auto_decompress=False)  # _read_body decompresses, within max_response
        self._semaphore = asyncio.Semaphore(limit)
        rate = self.settings.rate
        if rate:
            count = max(1, int(rate))
            self._throttler = Throttler(rate_limit=count, period=count / rate,
                                        retry_interval=min(0.01, 0.5 / rate))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> "BackendClient":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # ---- subclass hooks -----------------------------------------------------------------------
    def build(self, model: ir.Model, messages: Messages, n: int, seed: int) -> dict[str, Any]:
        raise NotImplementedError

    def parse(self, body: Any, n: int, seed: int, latency: float) -> list[Sample]:
        """Samples (index = choice position) from a 200 body; raise ValueError when malformed."""
        raise NotImplementedError

    def can_batch(self) -> bool:
        return False

    # ---- what one more request costs --------------------------------------------------------
    def _measure(self, model: ir.Model, got: Sequence[Sample]) -> None:
        """Add one answered request's reported usage to the model's running totals."""
        prompt = [s.input_tokens for s in got]
        completion = [s.output_tokens for s in got]
        if not got or None in prompt or None in completion:
            return
        totals = self._usage.setdefault(model.id, [0, 0, 0, 0])
        totals[0] += 1
        totals[1] += sum(prompt)  # the request's prompt tokens, split over its samples
        totals[2] += len(got)
        totals[3] += sum(completion)

    def request_overhead(self, model: ir.Model) -> float:
        """What one more request for ``model`` costs, in its samples (an adaptive mux's round
        size rule, ``semantics._round``): 0 where each sample is its own request anyway (the
        server does not honour ``n``, or the API has none); else the prompt tokens per request
        over the completion tokens per sample that this run measured from the server's usage
        (the model's own, else every model's on this backend), and infinite until it has
        measured any: no round is split before the split is known to be worth its prompt."""
        if not self.can_batch() or self.n_support(model) is False:
            return 0.0
        totals = self._usage.get(model.id)
        if not totals or not totals[3]:
            totals = [sum(column) for column in zip(*self._usage.values())] or None
        if not totals or not totals[3]:
            return math.inf
        requests, prompt, samples, completion = totals
        return (prompt / requests) / (completion / samples)

    # ---- n support ----------------------------------------------------------------------------
    def n_support(self, model: ir.Model) -> bool | None:
        if self._default_n is not None:
            return self._default_n
        return self._n_support.get(model.id)

    # ---- the public coroutine -----------------------------------------------------------------
    async def generate(self, model: ir.Model, messages: Messages,
                       indices: Sequence[int]) -> list[Sample | SampleFailure]:
        """Draw the samples ``indices`` of ``model`` for ``messages``; one result per index.

        Where the server honours ``n``, each run of consecutive indices is one request (its
        seed is the run's first sample's, so choice j is sample first + j, as a fan-out with
        per-sample seeds would draw it); elsewhere one request per sample.
        """
        if self._session is None:
            await self.start()
        results: dict[int, Sample | SampleFailure] = {}
        remaining = list(dict.fromkeys(indices))
        runs = _runs(remaining)
        state: bool | None = False
        if self.can_batch() and any(len(run) > 1 for run in runs):
            state = self.n_support(model)
            if state is None:
                probe = next(run for run in runs if len(run) > 1)
                state = await self._settle_n(model, messages, probe, results)
                remaining = [i for i in remaining if i not in results]
                runs = _runs(remaining)
        if state:
            await asyncio.gather(*(self._draw_run(model, messages, run, results)
                                   for run in runs))
        elif remaining:
            outs = await asyncio.gather(*(self._one(model, messages, i) for i in remaining))
            for i, out in zip(remaining, outs):
                results[i] = out
        self.stats.samples += sum(isinstance(r, Sample) for r in results.values())
        return [results[i] for i in indices]

    async def _draw_run(self, model: ir.Model, messages: Messages, run: list[int],
                        results: dict[int, Sample | SampleFailure]) -> None:
        """Consecutive samples with n = len(run) per request; what the server leaves out, one
        by one."""
        while len(run) > 1:
            try:
                got = await self._request(model, messages, run)
            except RequestFailed as failure:
                for i in run:
                    results[i] = SampleFailure(i, failure.message, failure.status,
                                               failure.attempts)
                return
            for i, sample in zip(run, got):
                results[i] = sample
            run = run[len(got):]
            if len(got) < 2:
                break  # the server stopped honouring n: fan out the rest
        if run:
            outs = await asyncio.gather(*(self._one(model, messages, i) for i in run))
            for i, out in zip(run, outs):
                results[i] = out

    async def _settle_n(self, model: ir.Model, messages: Messages, probe: list[int],
                        results: dict[int, Sample | SampleFailure]) -> bool | None:
        """Whether ``model`` honours n, probing with samples ``probe`` when nobody knows yet.

        One probe at a time per model: tasks that arrive while it is in flight wait for its
        verdict. A probe that the server fails for another reason (5xx, timeout, 401, ...)
        settles nothing, and the tasks that waited for it then probe on their own, at once and
        concurrently. Queueing them behind one another instead would make a failing model cost
        every record a full retry cycle, one record after the other (a hanging model stalled
        the whole run that way).
        """
        pending = self._probing.get(model.id)
        if pending is not None:
            state = await asyncio.shield(pending)
            if state is not None:
                return state
            return await self._probe(model, messages, probe, results)
        verdict: asyncio.Future = asyncio.get_running_loop().create_future()
        self._probing[model.id] = verdict
        state = None
        try:
            state = await self._probe(model, messages, probe, results)
        finally:
            del self._probing[model.id]
            verdict.set_result(state)
        return state

    async def _probe(self, model: ir.Model, messages: Messages, indices: list[int],
                     results: dict[int, Sample | SampleFailure]) -> bool | None:
        """Send n = len(indices) once and count the choices; records what it got in results."""
        try:
            got = await self._request(model, messages, indices)
        except RequestFailed as failure:
            if failure.status == 400:
                return await self._probe_rejected(model, messages, indices[0], results,
                                                  failure)
            for i in indices:
                results[i] = SampleFailure(i, failure.message, failure.status, failure.attempts)
            return None
        supported = len(got) >= 2
        self._n_support[model.id] = supported
        self.stats.probes[model.id] = supported
        for i, sample in zip(indices, got):
            results[i] = sample
        return supported

    async def _probe_rejected(self, model: ir.Model, messages: Messages, first: int,
                              results: dict[int, Sample | SampleFailure],
                              rejected: RequestFailed | None = None) -> bool | None:
        """The probe got a 400: was it ``n``, or this request (a prompt past the context, ...)?

        The probe's first sample is asked for alone. If that works, the server rejects n
        (llama.cpp). If it fails too, the 400 said nothing about n, and the verdict stays open:
        one bad record must not switch a server that honours n to fan-out for the whole run (k
        times the requests, and on a hosted API k times the prompt tokens billed). Costs no
        request more than fanning out at once would.
        """
        single = await self._one(model, messages, first)
        results[first] = single
        if isinstance(single, SampleFailure):
            if (rejected is not None and single.status == 400 and rejected.detail
                    and self._same_400(model, rejected.detail, single.error)):
                # the same 400 with n and without, before the model ever answered: it is about
                # the model (or what the gateway makes of it), not about n or this request
                self._stop_model(model, scrub(f"{self._prefix(model)}: HTTP 400 with n > 1 "
                                              f"and with n = 1: {rejected.detail}"))
            return None
        self._n_support[model.id] = False
        self.stats.probes[model.id] = False
        return False

    async def _one(self, model: ir.Model, messages: Messages, index: int) -> Sample | SampleFailure:
        try:
            got = await self._request(model, messages, [index])
        except RequestFailed as failure:
            return SampleFailure(index, failure.message, failure.status, failure.attempts)
        return got[0]

    def _prefix(self, model: ir.Model) -> str:
        return f"backend '{self.name}', model '{model.name}' ({model.id})"

    async def _request(self, model: ir.Model, messages: Messages,
                       indices: list[int]) -> list[Sample]:
        """One logical request for samples ``indices`` (n = len), with retries."""
        n = len(indices)
        seed = (model.seed or 0) + indices[0]
        payload = json.dumps(self.build(model, messages, n, seed)).encode("utf-8")
        if n > 1:
            self.stats.batched += 1
        started = time.monotonic()
        attempts = 0
        retries, retry_time = self.settings.retries, self.settings.retry_time
        deadline = started + retry_time
        failing_since: float | None = None  # this request's first connection failure
        while True:
            attempts += 1
            try:
                got = await self._attempt(model, payload, n, seed, deadline, attempts)
                break
            except RequestError as error:
                if error.connection is not None and failing_since is None:
                    failing_since = time.monotonic()
                message = scrub(f"{self._prefix(model)}: {error.message}")
                if not error.retryable:
                    self.stats.failures += 1
                    hint = ""
                    if (model.id not in self._stopped_models
                            and (error.status == 404 or (error.status == 400 and permanent_400(
                                error.detail, error.error_type) == "model"))):
                        hint = await self._offered_hint(model)
                    self._stop_on(error, model, hint)
                    raise RequestFailed(message, status=error.status, attempts=attempts,
                                        detail=error.detail)
                if attempts > retries:
                    self.stats.failures += 1
                    self._stop_on(error, model)
                    self._trip(error, failing_since)
                    raise RequestFailed(f"{message} (gave up after {attempts} attempts)",
                                        status=error.status, attempts=attempts)
                delay = self.policy.backoff(attempts)
                if error.retry_after is not None:
                    delay = retry_delay(error.retry_after)
                if error.status == 429 or (error.retry_after is not None
                                           and error.status in (502, 503, 504)):
                    # a pause the server asked for holds back the other requests too
                    scope = self._cool_scope(error, model)
                    self._cool_down(scope, error.retry_after
                                    if error.retry_after is not None else delay)
                    if scope is None:
                        self._pushed_back()
                elapsed = time.monotonic() - started
                if elapsed + delay > retry_time:
                    self.stats.failures += 1
                    self._trip(error, failing_since)
                    raise RequestFailed(
                        f"{message} (gave up after {attempts} attempts: waiting {delay:.1f}s "
                        f"more would pass the retry time of {retry_time:g}s)",
                        status=error.status, attempts=attempts)
                self.stats.retries += 1
                await asyncio.sleep(delay)
        self._measure(model, got)
        out = []
        for j, (i, sample) in enumerate(zip(indices, got)):
            sample.index = i
            # a server that echoes the key (in an answer) never gets it stored or printed
            sample.text = scrub(sample.text, shapes=False)
            out.append(sample)
        return out

    async def _offered_hint(self, model: ir.Model) -> str:
        """For a model the server says it does not know: the models it lists at ``GET
        {url}/models`` (OpenAI-compatible servers and gateways), with the closest to the id
        asked for. Asked once per backend; "" when the server lists none or the id is there."""
        if self.kind != "openai" or self._session is None:
            return ""
        if self._offered is None:  # one request, which every failure meanwhile waits for
            self._offered = asyncio.ensure_future(self._list_models())
        offered = await asyncio.shield(self._offered)
        if not offered or model.id in offered:
            return ""
        from muxlang.errors import did_you_mean

        shown = ", ".join(clip(name, 80) for name in offered[:20])
        more = f" and {len(offered) - 20} more" if len(offered) > 20 else ""
        close = did_you_mean(model.id, offered)
        return f" (the server offers {shown}{more}" + (f"; {close})" if close else ")")

    async def _list_models(self) -> list[str]:
        assert self._session is not None
        try:
            async with self._session.get(self.settings.url + "/models", headers=self._headers(),
                                         timeout=aiohttp.ClientTimeout(total=10)) as response:
                raw = await _read_body(response, 1_000_000)
                if response.status != 200:
                    return []
                data = json.loads(raw).get("data")
                return [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m][:1000]
        except Exception:  # noqa: BLE001 - a hint only: no list, no hint
            return []

    def _stop_on(self, error: RequestError, model: ir.Model, hint: str = "") -> None:
        """Stop sending what is bound to fail the same way, after a failure that says so.

        A 401 (the key) fails every request to the backend; a 403 or 404 every request for that
        model; a server that no connection could ever reach this run (wrong URL or port, server
        down) is not coming back within a request's retry time. Without this, a run of 100,000
        records would send each of them its own doomed requests, and with retries wait out a
        backoff per record, before telling the user what one request already knew.
        """
        reason = scrub(error.message)
        permanent = (permanent_400(error.detail, error.error_type) if error.status == 400
                     else None)
        if error.status == 401 or permanent == "backend":
            self._stop(f"{reason} ({self.settings.key_hint()})", clip(reason, 100))
        elif error.status in (403, 404) or permanent == "model":
            self._stop_model(model, reason + hint)
        elif error.unreachable and not self._answered:
            self._stop(f"the server was never reached: {reason}",
                       f"the server was never reached ({error.connection})")

    def _same_400(self, model: ir.Model, detail: str, single_error: str) -> bool:
        return (model.id not in self._model_answered and detail in single_error
                and not REQUEST_400.search(detail))

    def _stop_model(self, model: ir.Model, reason: str) -> None:
        self._stopped_models.setdefault(model.id, clip(reason, 100))  # every model with it
        if model.name not in self.stats.stopped_models:
            self.stats.stopped_models[model.name] = reason
            self._say(f"model '{model.name}' on backend '{self.name}' stopped taking "
                      f"requests: {reason}")

    def _stop(self, reason: str, short: str) -> None:
        if self.stats.stopped is None:
            self.stats.stopped, self._short_stop = reason, short
            self._say(f"backend '{self.name}' stopped taking requests: {reason}")

    def _say(self, message: str) -> None:
        if self.notify is not None:
            self.notify(message)

    # ---- the circuit breaker ------------------------------------------------------------------
    def _trip(self, error: RequestError, since: float | None) -> None:
        """Open the breaker: a request spent its retry cycle on connection failures, and the
        server answered nobody since its first one (``since``): every attempt of every request
        since then failed the same way, or is still waiting. The server is down; without this,
        each batch of records in flight would spend its own retry cycle against it, batch after
        batch, for the rest of the run. While open, requests fail at once, without being sent,
        except one probe every ``policy.probe_after`` seconds: the first that gets an answer
        closes it. (A server this run never reached at all is stopped for good instead, by
        ``_stop_on``.)"""
        if (error.connection is None or since is None or self._down_since is not None
                or not self._answered):
            return
        if self._last_answer >= since:
            return
        if self._failures_in_row < max(2, self.settings.retries + 1):
            return  # (with retries = 0, one reset of a stale connection is not an outage)
        now = time.monotonic()
        self._down_since = self._last_probe = now
        self.stats.outages += 1
        self.stats.down = (f"{self._failures_in_row} connection failures in a row over "
                           f"{now - self._first_failure:.1f}s, the last: {scrub(error.message)}")
        self._say(f"backend '{self.name}' is down: {self.stats.down}; its requests fail at once "
                  f"until a probe (one every {self.policy.probe_after:g}s) gets an answer")

    def _admit(self, model: ir.Model, attempt: int) -> bool:
        """Whether this attempt is the breaker's probe; raise RequestFailed when the backend is
        down and it is not a probe's turn."""
        if self._down_since is None:
            return False
        if (not self._breaker_probe
                and time.monotonic() - self._last_probe >= self.policy.probe_after):
            self._breaker_probe = True
            return True
        self.stats.failures += 1
        self.stats.fast_failed += 1
        what = "not sent" if attempt == 1 else "not retried"
        # short, and the same for every request: the reason was said once, when it went down
        raise RequestFailed(f"{self._prefix(model)}: {what}: backend '{self.name}' is down "
                            "(no connection; probed again later)", attempts=attempt - 1)

    def _answer_seen(self) -> None:
        """The server answered (any status): it is up; close the breaker if it was open."""
        self._last_answer = time.monotonic()
        self._failures_in_row = 0
        if self._down_since is not None:
            self._down_since, self._breaker_probe = None, False
            self.stats.down = None
            self._say(f"backend '{self.name}' answers again: its requests resume")

    def _connection_failed(self, probe: bool) -> None:
        if self._failures_in_row == 0:
            self._first_failure = time.monotonic()
        self._failures_in_row += 1
        if probe:  # still down: the next probe later
            self._breaker_probe = False
            self._last_probe = time.monotonic()

    def _refuse_if_stopped(self, model: ir.Model, attempt: int) -> None:
        """Raise RequestFailed (not a RequestError: it is not retried) when stopped."""
        what = "not sent" if attempt == 1 else "not retried"
        if self.stats.stopped is not None:
            self.stats.failures += 1
            raise RequestFailed(f"{self._prefix(model)}: {what}: the backend stopped taking "
                                f"requests: {self._short_stop}", attempts=attempt - 1)
        reason = self._stopped_models.get(model.id)
        if reason is not None:
            self.stats.failures += 1
            raise RequestFailed(f"{self._prefix(model)}: {what}: the model stopped taking "
                                f"requests: {reason}", attempts=attempt - 1)

    def _cool_scope(self, error: RequestError, model: ir.Model) -> str | None:
        """Whom a pause the server asked for holds back: None for the whole backend, else the
        model id. ``rate_scope = model`` or ``backend`` says so; ``auto`` pauses only the model
        when the server's error names it (LiteLLM limits each model group on its own: "...
        Passed model=NAME ..."), else the backend."""
        scope = self.settings.rate_scope
        if scope == "model":
            return model.id
        if scope == "backend":
            return None
        text = error.detail or ""
        if model.id and re.search(r"(?<![\w./:-])" + re.escape(model.id) + r"(?![\w/:-]|\.\w)",
                                  text):
            return model.id
        return None

    def _cool_down(self, scope: str | None, delay: float) -> None:
        until = time.monotonic() + delay
        if until > self._cooldowns.get(scope, 0.0):
            self._cooldowns[scope] = until
            self._cooldown_spans[scope] = delay

    async def _wait_cool_down(self, model: ir.Model, deadline: float) -> None:
        """Wait out a pause the server asked for (a 429, or a 503 with ``Retry-After``) on the
        backend or on this model, but never past this request's retry deadline.

        A server may ask for a long pause (``Retry-After: 86400``). The request that got it gives
        up at once (the pause passes its retry time); every other request must not then wait the
        whole pause either, which would stall the run with no bound: one whose deadline comes
        before the cool-down ends fails now, without being sent. Each waiter then waits a random
        share of the pause more, so that the requests it held back do not all come back in the
        same instant and collide again (a gateway's in-flight cap answers them 503 at once).
        """
        waited: set[str | None] = set()
        while True:
            scope = model.id if (self._cooldowns.get(model.id, 0.0)
                                 > self._cooldowns.get(None, 0.0)) else None
            until = self._cooldowns.get(scope, 0.0)
            wait = until - time.monotonic()
            if wait <= 0:
                return
            if until > deadline:
                what = f"model '{model.id}'" if scope is not None else "backend"
                raise RequestError(
                    f"rate-limited: the server asked the {what} to pause {wait:.1f}s more, "
                    f"past the retry time of {self.settings.retry_time:g}s", status=429)
            if scope not in waited:
                waited.add(scope)
                wait += random.uniform(0, self._cooldown_spans.get(scope, 0.0))
            await asyncio.sleep(wait)

    # ---- the adaptive in-flight limit ---------------------------------------------------------
    async def _gate_enter(self) -> None:
        """Wait for one of the ``_limit`` requests the server takes at once now. The limit is
        the backend's concurrency until the server pushes back (a 429, or a 5xx with
        Retry-After, that pauses the backend): then it halves, down to 1, and grows again by
        about one per round of answers. A gateway's in-flight cap answers every request past
        it at once; resending them all after its Retry-After, however spread, collides again."""
        while self._in_flight >= max(1, int(self._limit)):
            waiter = asyncio.get_running_loop().create_future()
            self._gate_waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter in self._gate_waiters:
                    self._gate_waiters.remove(waiter)
                elif waiter.done() and not waiter.cancelled():
                    self._wake()  # pass the turn on
                raise
        self._in_flight += 1

    def _gate_leave(self) -> None:
        self._in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        free = max(1, int(self._limit)) - self._in_flight
        while free > 0 and self._gate_waiters:
            waiter = self._gate_waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                free -= 1

    def _pushed_back(self) -> None:
        self._limit = max(1.0, self._limit / 2)

    def _went_through(self) -> None:
        if self._limit < self.settings.concurrency:
            self._limit = min(float(self.settings.concurrency), self._limit + 1 / self._limit)
            self._wake()

    def _headers(self) -> dict[str, str]:
        # the key is read from the environment for every request (it may be rotated), but the
        # headers dict is rebuilt only when it changes
        key = self.settings.key()
        if self._headers_cache is None or self._headers_cache[0] != key:
            headers = {"Content-Type": "application/json", "Accept": "application/json",
                       "Accept-Encoding": "gzip, deflate"}
            if key:
                headers["Authorization"] = f"Bearer {key}"
            self._headers_cache = (key, headers)
        return self._headers_cache[1]

    async def _attempt(self, model: ir.Model, payload: bytes, n: int, seed: int,
                       deadline: float, attempt: int) -> list[Sample]:
        """One HTTP attempt; ``deadline`` (monotonic) bounds the wait for a 429 cool-down."""
        assert self._session is not None and self._semaphore is not None
        async with self._semaphore:
            await self._gate_enter()
            try:
                # checked once a slot is ours: requests queued behind the one that found the
                # backend or model dead must not be sent either
                self._refuse_if_stopped(model, attempt)
                probe = self._admit(model, attempt)
                try:
                    await self._wait_cool_down(model, deadline)
                    if self._throttler is not None:
                        await self._throttler.acquire()
                except BaseException:
                    if probe:
                        self._breaker_probe = False  # no probe went: the next one may probe
                    raise
                self.stats.requests += 1
                start = time.monotonic()
                answered = False
                try:
                    async with self._session.post(self.endpoint, data=payload,
                                                  headers=self._headers()) as response:
                        answered = True
                        self._answer_seen()
                        status = response.status
                        headers = response.headers
                        raw = await _read_body(response, self.settings.max_response)
                except ResponseTooLarge as error:
                    # not retried: the same request would draw the same flood
                    raise RequestError(
                        f"response too large: {error} (HTTP {status}), past the backend's "
                        f"max_response of {self.settings.max_response} bytes; not read further",
                        status=status) from None
                except asyncio.TimeoutError:
                    raise RequestError(
                        f"no answer within the timeout of {self.settings.timeout:g}s",
                        retryable=True) from None
                except aiohttp.ClientError as error:
                    detail = str(error) or type(error).__name__
                    kind = type(error).__name__
                    if not answered:
                        self._connection_failed(probe)
                    # a failed probe is not retried: the backend is still down
                    raise RequestError(
                        f"connection error ({kind}): {detail}"
                        + (" (probing a backend that is down)" if probe else ""),
                        retryable=not probe,
                        unreachable=isinstance(error, aiohttp.ClientConnectorError),
                        connection=None if answered else kind) from None
                except OSError as error:
                    if not answered:
                        self._connection_failed(probe)
                    raise RequestError(f"connection error: {error}", retryable=not probe,
                                       connection=None if answered else type(error).__name__
                                       ) from None
                finally:
                    if probe and self._breaker_probe:  # a probe that got no answer (a timeout)
                        self._breaker_probe = False
                        self._last_probe = time.monotonic()
                latency = time.monotonic() - start
            finally:
                self._gate_leave()
        if status == 200:
            self._answered = True
            try:
                body = json.loads(raw)
                got = self.parse(body, n, seed, latency)
                self._model_answered.add(model.id)
                self._went_through()
                cost, bad = response_cost(headers)
                if cost is not None and got:  # the reply's cost, shared by its samples
                    for sample in got:
                        sample.cost = cost / len(got)
                elif bad is not None and not self._said_bad_cost:
                    self._said_bad_cost = True  # once per backend: the samples are fine
                    self._say(f"backend '{self.name}': the reported cost {clip(bad, 80)!r} is "
                              "not a cost in USD (a number from 0 to "
                              f"{MAX_REPORTED_COST:g}); its samples are kept without one")
                return got
            except (ValueError, TypeError, KeyError, AttributeError, IndexError) as error:
                # masked before it is cut (a key crossing the cut would keep its prefix)
                snippet = clip(raw[:4096].decode("utf-8", errors="replace"), MAX_SNIPPET)
                raise RequestError(f"malformed response body ({clip(error, 200)}): {snippet!r}",
                                   status=200, retryable=True) from None
        text, error_type = _error_info(raw)
        if status == 429:
            self.stats.rate_limited += 1
        retryable = status in RETRYABLE_STATUS or status >= 500
        return_after = parse_retry_after(headers) if retryable else None
        raise RequestError(f"HTTP {status}: {text}", status=status, retryable=retryable,
                           retry_after=return_after, detail=text, error_type=error_type)


class OpenAIBackend(BackendClient):
    """``POST {base}/chat/completions`` (vLLM, SGLang, llama.cpp server, hosted APIs)."""

    kind = "openai"
    path = "/chat/completions"

    def can_batch(self) -> bool:
        return True

    def build(self, model: ir.Model, messages: Messages, n: int, seed: int) -> dict[str, Any]:
        payload: dict[str, Any] = {"model": model.id, "messages": messages,
                                   "temperature": model.temperature, "seed": seed}
        if model.top_p is not None:
            payload["top_p"] = model.top_p
        if model.max_tokens is not None:
            payload["max_tokens"] = model.max_tokens
        if n > 1:
            payload["n"] = n
        return payload

    def parse(self, body: Any, n: int, seed: int, latency: float) -> list[Sample]:
        if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
            raise ValueError("no 'choices' list")
        choices = body["choices"]
        if not choices:
            raise ValueError("empty 'choices'")
        choices = sorted(choices, key=lambda c: c.get("index", 0) if isinstance(c, dict) else 0)
        choices = choices[:n]
        usage = body.get("usage") if isinstance(body.get("usage"), dict) else None
        prompt = usage.get("prompt_tokens") if usage else None
        completion = usage.get("completion_tokens") if usage else None
        inputs, outputs = _split(prompt, len(choices)), _split(completion, len(choices))
        samples = []
        for j, choice in enumerate(choices):
            if not isinstance(choice, dict):
                raise ValueError("a choice is not an object")
            message = choice.get("message")
            if isinstance(message, dict):
                content = message.get("content")
            elif "text" in choice:  # completions-style servers
                content = choice.get("text")
            else:
                raise ValueError("a choice has no 'message'")
            finish = choice.get("finish_reason")
            if content is None or (content == "" and isinstance(finish, str)
                                   and finish not in ANSWERED):
                content, finish = "", _no_content(finish, message)  # a sample with no answer
            if not isinstance(content, str):
                raise ValueError("message content is not text")
            samples.append(Sample(index=j, text=content,
                                  finish_reason=finish if isinstance(finish, str) else None,
                                  input_tokens=inputs[j], output_tokens=outputs[j],
                                  latency=latency, seed=seed + j))
        return samples


class OllamaBackend(BackendClient):
    """Ollama's native ``POST {base}/api/chat`` with ``stream: false`` (one sample a request)."""

    kind = "ollama"
    path = "/api/chat"

    def build(self, model: ir.Model, messages: Messages, n: int, seed: int) -> dict[str, Any]:
        options: dict[str, Any] = {"temperature": model.temperature, "seed": seed}
        if model.top_p is not None:
            options["top_p"] = model.top_p
        if model.max_tokens is not None:
            options["num_predict"] = model.max_tokens
        return {"model": model.id, "messages": messages, "stream": False, "options": options}

    def parse(self, body: Any, n: int, seed: int, latency: float) -> list[Sample]:
        if not isinstance(body, dict):
            raise ValueError("body is not an object")
        if "error" in body and "message" not in body:
            raise ValueError(f"error in body: {body['error']}")
        message = body.get("message")
        if not isinstance(message, dict):
            raise ValueError("no 'message' object")
        content = message.get("content")
        finish = body.get("done_reason")
        if content is None:
            content, finish = "", _no_content(finish, message)  # a sample with no answer
        if not isinstance(content, str):
            raise ValueError("message content is not text")

        def count(name: str) -> int | None:
            value = body.get(name)
            return int(value) if isinstance(value, (int, float)) else None
        return [Sample(index=0, text=content, finish_reason=finish if isinstance(finish, str)
                       else None,
                       input_tokens=count("prompt_eval_count"), output_tokens=count("eval_count"),
                       latency=latency, seed=seed)]


BACKEND_KINDS: dict[str, type[BackendClient]] = {"openai": OpenAIBackend, "ollama": OllamaBackend}


def make_backend(settings: BackendSettings, *, policy: RetryPolicy | None = None) -> BackendClient:
    try:
        cls = BACKEND_KINDS[settings.kind]
    except KeyError:
        raise _kind_error(settings) from None
    return cls(settings, policy=policy)


def _kind_error(settings: BackendSettings) -> BackendError:
    return BackendError(f"backend '{settings.name}' has kind '{settings.kind}', which the "
                        f"runtime cannot call (it calls {' and '.join(BACKEND_KINDS)} servers; "
                        "replay backends only serve stored samples)",
                        backend=settings.name, needs="kind")
