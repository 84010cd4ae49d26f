"""The request layer alone (no spec parser): backends, n batching, retries, cool-down, secrets."""
from __future__ import annotations

import asyncio
import email.utils
import time

import pytest

from muxlang import ir
from muxlang.errors import MuxError
from muxlang.runtime.backends import (BackendSettings, RetryPolicy, make_backend, no_answer,
                                      parse_retry_after)
from muxlang.runtime.executor import Runtime
from muxlang.samples import MemoryCache, Sample, SampleFailure
from tests.support.helpers import KEY, KEY_ENV
from tests.support.scripted_server import ScriptedServer

FAST = RetryPolicy(base=0.01, cap=0.05)
MESSAGES = [{"role": "user", "content": "Question: 2+2"}]


def backend(url: str, kind: str = "openai", **kw) -> ir.Backend:
    kw.setdefault("timeout", 2.0)
    kw.setdefault("retries", 2)
    kw.setdefault("retry_time", 30.0)
    return ir.Backend(name="local", kind=kind, url=url, **kw)


def model(b: ir.Backend, name: str = "m", seed: int | None = 10) -> ir.Model:
    return ir.Model(name=name, backend=b, id=f"id-{name}", seed=seed)


def draw(b: ir.Backend, m: ir.Model, indices, *, messages=MESSAGES, cache=None, times: int = 1):
    async def go():
        async with Runtime([b], policy=FAST, cache=cache) as rt:
            outs = []
            for _ in range(times):
                outs.append(await rt.sample(m, messages, list(indices)))
            return outs, rt

    outs, rt = asyncio.run(go())
    return (outs[0] if times == 1 else outs), rt.clients["local"].stats


def bodies(server, path_part: str = ""):
    return [r for r in server.requests if path_part in r["path"]]


# ---- n > 1 ---------------------------------------------------------------------------------
def test_n_supported_probe_uses_one_request(server):
    b = backend(server.openai_url)
    (first, second), stats = draw(b, model(b), range(3), times=2)
    assert all(isinstance(s, Sample) for s in first + second)
    assert [r["n"] for r in server.requests] == [3, 3]
    assert stats.probes == {"id-m": True}
    # n=3 in one request gives each choice its own seed: base + sample index
    assert [s.seed for s in first] == [10, 11, 12]


def test_n_rejected_falls_back_to_fan_out(server):
    server.n_mode = "reject"
    b = backend(server.openai_url)
    (first, second), stats = draw(b, model(b), range(3), times=2)
    assert all(isinstance(s, Sample) for s in first + second)
    ns = [r["n"] for r in server.requests]
    assert ns[0] == 3 and server.requests[0]["status"] == 400  # the probe, rejected
    assert ns[1:] == [None] * 6  # then one request per sample, and no second probe
    assert sorted(r["seed"] for r in server.requests[1:4]) == [10, 11, 12]
    assert stats.probes == {"id-m": False}


def test_n_ignored_falls_back_to_fan_out_and_keeps_the_probe_answer(server):
    server.n_mode = "ignore"
    b = backend(server.openai_url)
    (first, second), stats = draw(b, model(b), range(3), times=2)
    assert all(isinstance(s, Sample) for s in first + second)
    ns = [r["n"] for r in server.requests]
    assert ns == [3, None, None, None, None, None]  # probe answered sample 0; the rest fan out
    assert stats.probes == {"id-m": False}
    # samples are the same as a server that honours n would give (seed per sample)
    texts = [s.text for s in first]
    server2 = ScriptedServer().start()
    try:
        b2 = backend(server2.openai_url)
        again, _ = draw(b2, model(b2), range(3))
    finally:
        server2.stop()
    assert texts == [s.text for s in again]


def test_declared_no_n_never_sends_n(server):
    b = backend(server.openai_url, supports_n=False)
    samples, _ = draw(b, model(b), range(4))
    assert all(isinstance(s, Sample) for s in samples)
    assert [r["n"] for r in server.requests] == [None] * 4
    assert sorted(r["seed"] for r in server.requests) == [10, 11, 12, 13]


def test_probe_is_done_once_under_concurrency(server):
    server.n_mode = "reject"
    b = backend(server.openai_url, concurrency=8)
    m = model(b)

    async def go():
        async with Runtime([b], policy=FAST) as rt:
            await asyncio.gather(*(rt.sample(m, [{"role": "user", "content": f"q{i}"}], [0, 1, 2])
                                   for i in range(10)))

    asyncio.run(go())
    assert sum(1 for r in server.requests if r["n"] == 3) == 1


# ---- usage, tokens, finish reason ------------------------------------------------------------
def test_usage_absent_gives_no_token_counts(server):
    server.usage = False
    b = backend(server.openai_url)
    samples, _ = draw(b, model(b), [0])
    assert samples[0].input_tokens is None and samples[0].output_tokens is None
    assert samples[0].finish_reason == "stop"


def test_n_batch_splits_usage_across_samples(server):
    b = backend(server.openai_url, supports_n=True)
    samples, _ = draw(b, model(b), range(3))
    assert sum(s.output_tokens for s in samples) > 0
    assert all(s.latency > 0 for s in samples)


# ---- Ollama -----------------------------------------------------------------------------------
def test_ollama_native_chat(server):
    b = backend(server.url, kind="ollama")
    m = ir.Model(name="m", backend=b, id="llama3", temperature=0.3, top_p=0.9, max_tokens=64,
                 seed=5)
    samples, _ = draw(b, m, range(3))
    assert all(isinstance(s, Sample) for s in samples)
    assert all(r["path"] == "/api/chat" for r in server.requests)
    body = server.requests[0]["body"]
    assert body["stream"] is False
    assert set(body["options"]) == {"temperature", "top_p", "num_predict", "seed"}
    assert body["options"]["num_predict"] == 64
    assert sorted(r["seed"] for r in server.requests) == [5, 6, 7]
    assert all(s.output_tokens and s.input_tokens for s in samples)
    assert samples[0].finish_reason == "stop"


# ---- retries and failures ---------------------------------------------------------------------
def test_retries_stop_at_their_bound(server):
    server.add_fault("500", count=None)
    b = backend(server.openai_url, retries=3)
    samples, stats = draw(b, model(b), [0])
    failure = samples[0]
    assert isinstance(failure, SampleFailure)
    assert len(server.requests) == 4  # the first attempt and 3 retries
    assert "gave up after 4 attempts" in failure.error
    assert "backend 'local'" in failure.error and "id-m" in failure.error
    assert "HTTP 500" in failure.error


def test_retry_time_bounds_a_long_retry_after(server):
    server.add_fault("429", count=None, retry_after=120)
    b = backend(server.openai_url, retries=5, retry_time=5.0)
    samples, _ = draw(b, model(b), [0])
    assert isinstance(samples[0], SampleFailure)
    assert len(server.requests) == 1
    assert "retry time" in samples[0].error


@pytest.mark.parametrize("kind", ["500", "503", "408", "409", "reset", "malformed", "hang"])
def test_transient_faults_are_retried(server, kind):
    server.add_fault(kind, count=1, seconds=5)
    b = backend(server.openai_url, timeout=0.5, retries=2)
    samples, stats = draw(b, model(b), [0])
    assert isinstance(samples[0], Sample), samples[0]
    assert stats.retries == 1


def test_malformed_body_is_an_error_not_an_empty_vote(server):
    server.add_fault("malformed", count=None, body='{"choices": "nope"}')
    b = backend(server.openai_url, retries=1)
    samples, _ = draw(b, model(b), [0])
    assert isinstance(samples[0], SampleFailure)
    assert "malformed" in samples[0].error


def test_hang_past_timeout_fails_after_retries(server):
    server.add_fault("hang", count=None, seconds=30)
    b = backend(server.openai_url, timeout=0.3, retries=1)
    samples, _ = draw(b, model(b), [0])
    assert isinstance(samples[0], SampleFailure)
    assert "timeout" in samples[0].error
    assert len(server.requests) == 2


@pytest.mark.parametrize("status", ["400", "401", "403", "404"])
def test_client_errors_fail_fast_with_the_server_text(server, status, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    server.add_fault(status, count=None, message=f"no such thing (your key was {KEY})")
    b = backend(server.openai_url, api_key_env=KEY_ENV, supports_n=False)
    samples, _ = draw(b, model(b), [0])
    failure = samples[0]
    assert isinstance(failure, SampleFailure)
    assert len(server.requests) == 1
    assert f"HTTP {status}" in failure.error and "no such thing" in failure.error
    assert "backend 'local'" in failure.error and "model 'm'" in failure.error
    assert KEY not in failure.error
    assert server.requests[0]["authorization"] == f"Bearer {KEY}"


def test_429_storm_is_absorbed_with_a_shared_cool_down(server):
    server.add_fault("429", duration=1.0, retry_after=1)
    b = backend(server.openai_url, concurrency=4, retries=4, supports_n=False)
    m = model(b)

    async def go():
        async with Runtime([b], policy=FAST) as rt:
            return await asyncio.gather(*(rt.sample(m, [{"role": "user", "content": f"q{i}"}],
                                                    [0, 1]) for i in range(20))), rt

    results, rt = asyncio.run(go())
    assert all(isinstance(s, Sample) for pair in results for s in pair)
    limited = sum(1 for r in server.requests if r["status"] == "429")
    # the cool-down stops the backend: only the requests already in flight see the 429
    assert limited <= 2 * 4
    assert rt.clients["local"].stats.rate_limited == limited


def test_retry_after_is_honoured(server):
    server.add_fault("429", count=1, retry_after=1)
    b = backend(server.openai_url)
    samples, _ = draw(b, model(b), [0])
    assert isinstance(samples[0], Sample)
    first, second = server.requests[0]["time"], server.requests[1]["time"]
    assert second - first >= 0.95  # waited at least what the server asked


def test_parse_retry_after_forms():
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250", "Retry-After": "9"}) == 0.25
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= parse_retry_after({"Retry-After": when}) <= 31
    assert parse_retry_after({"Retry-After": "garbage"}) is None
    assert parse_retry_after({}) is None


def test_backoff_grows_and_is_capped():
    policy = RetryPolicy(base=1.0, cap=8.0, jitter=0.5)
    for attempt, top in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        delay = policy.backoff(attempt)
        assert top / 2 <= delay <= top


# ---- cache ------------------------------------------------------------------------------------
def test_cache_serves_repeated_samples_and_keeps_indices_apart(server):
    b = backend(server.openai_url, supports_n=False)
    m = model(b)
    cache = MemoryCache()
    (first, second), _ = draw(b, m, range(3), cache=cache, times=2)
    assert len(server.requests) == 3  # the second round came from the cache
    assert [s.text for s in first] == [s.text for s in second]
    assert all(s.cached for s in second)
    assert len(cache.data) == 3 and len({k.index for k in cache.data}) == 3


# ---- settings and secrets ---------------------------------------------------------------------
def test_url_overrides(monkeypatch):
    b = backend("http://spec:1/v1")
    assert BackendSettings.resolve(b).url == "http://spec:1/v1"
    monkeypatch.setenv("MUXLANG_BACKEND_LOCAL_URL", "http://env:2/v1/")
    assert BackendSettings.resolve(b).url == "http://env:2/v1"
    assert BackendSettings.resolve(b, url="http://cli:3/v1").url == "http://cli:3/v1"


def test_key_override_from_environment(server, monkeypatch):
    monkeypatch.setenv("MUXLANG_BACKEND_LOCAL_KEY", "override-key-123456")
    b = backend(server.openai_url)
    draw(b, model(b), [0])
    assert server.requests[0]["authorization"] == "Bearer override-key-123456"


def test_missing_key_variable_is_a_user_error(monkeypatch):
    monkeypatch.delenv("MUXLANG_NO_SUCH_KEY", raising=False)
    b = backend("http://127.0.0.1:9/v1", api_key_env="MUXLANG_NO_SUCH_KEY")
    with pytest.raises(MuxError, match="MUXLANG_NO_SUCH_KEY"):
        Runtime([b])


def test_replay_backend_cannot_be_called():
    with pytest.raises(MuxError, match="replay"):
        Runtime([ir.Backend(name="r", kind="replay", url="")])


def test_connection_refused_fails_with_a_message():
    b = backend("http://127.0.0.1:9/v1", retries=1)
    samples, _ = draw(b, model(b), [0])
    assert isinstance(samples[0], SampleFailure)
    assert "connection" in samples[0].error


def test_make_backend_kinds():
    assert make_backend(BackendSettings("x", "openai", "http://h")).kind == "openai"
    assert make_backend(BackendSettings("x", "ollama", "http://h")).kind == "ollama"


# ---- limits ---------------------------------------------------------------------------------
def test_concurrency_cap_is_respected(server):
    server.latency = 0.02
    b = backend(server.openai_url, concurrency=3, supports_n=False)
    m = model(b)

    async def go():
        async with Runtime([b], policy=FAST) as rt:
            await asyncio.gather(*(rt.sample(m, [{"role": "user", "content": f"q{i}"}], [0, 1])
                                   for i in range(15)))

    asyncio.run(go())
    assert len(server.requests) == 30
    assert server.max_active <= 3


def test_rate_cap_spaces_requests(server):
    b = backend(server.openai_url, rate=4.0, supports_n=False)
    m = model(b)

    async def go():
        async with Runtime([b], policy=FAST) as rt:
            await rt.sample(m, MESSAGES, range(9))

    asyncio.run(go())
    times = sorted(r["time"] for r in server.requests)
    # 4 per second: the 9th request cannot go before two full periods have passed
    assert times[-1] - times[0] >= 1.9


def test_one_session_per_backend_reuses_connections(server):
    b = backend(server.openai_url, concurrency=2, supports_n=False)
    m = model(b)

    async def go():
        async with Runtime([b], policy=FAST) as rt:
            for i in range(10):
                await rt.sample(m, [{"role": "user", "content": f"q{i}"}], [0])

    asyncio.run(go())
    peers = {tuple(r["peer"]) for r in server.requests}
    assert len(server.requests) == 10 and len(peers) == 1  # one kept-alive connection


def test_n_batches_keep_sample_seeds_when_some_indices_are_cached(server):
    b = backend(server.openai_url, supports_n=True)
    m = model(b)
    cache = MemoryCache()

    async def go():
        async with Runtime([b], policy=FAST, cache=cache) as rt:
            first = await rt.sample(m, MESSAGES, [1, 3])  # not consecutive: two requests
            full = await rt.sample(m, MESSAGES, range(6))  # 0, 2, 4-5 drawn; 1, 3 cached
            return first, full

    first, full = asyncio.run(go())
    assert [s.seed for s in full if not s.cached] == [10, 12, 14, 15]
    assert sorted((r["n"] or 1, r["seed"]) for r in server.requests) == [
        (1, 10), (1, 11), (1, 12), (1, 13), (2, 14)]
    # the same texts as drawing all six at once, in one request
    server.clear_log()
    again, _ = draw(b, m, range(6))
    assert [s.text for s in again] == [s.text for s in full]


# ---- failures that must not stall the run ----------------------------------------------------
@pytest.mark.timeout(60)
def test_a_retry_after_past_the_retry_time_does_not_stall_the_other_requests(server):
    # one 429 asking for a day's pause: the request that got it gives up (the pause passes its
    # retry time), and so do the requests queued behind it, instead of waiting out the day
    server.add_fault("429", count=1, retry_after=86400)
    b = backend(server.openai_url, concurrency=1, retries=3, retry_time=5.0, supports_n=False)
    m = model(b)

    async def go():
        async with Runtime([b], policy=FAST) as rt:
            return await asyncio.gather(*(rt.sample(m, [{"role": "user", "content": f"q{i}"}],
                                                    [0]) for i in range(3)))

    results = [pair[0] for pair in asyncio.run(go())]
    assert all(isinstance(r, SampleFailure) for r in results)
    assert len(server.requests) == 1  # the others were never sent into the pause
    waited = [r for r in results if "HTTP 429" not in r.error]
    assert len(waited) == 2
    assert all("rate-limited" in r.error and "retry time of 5s" in r.error for r in waited)


@pytest.mark.timeout(60)
def test_a_failing_n_probe_does_not_queue_the_other_records_behind_it(server):
    # the model hangs; with n support unknown every record wants to probe. One probe at a time
    # would cost each record a full timeout, one after the other; after the first probe fails
    # the waiting records must try on their own, side by side
    server.add_fault("hang", count=None, seconds=5)
    b = backend(server.openai_url, timeout=0.3, retries=0)
    m = model(b)

    async def go():
        async with Runtime([b], policy=FAST) as rt:
            return await asyncio.gather(*(rt.sample(m, [{"role": "user", "content": f"q{i}"}],
                                                    [0, 1, 2]) for i in range(6)))

    results = asyncio.run(go())
    assert all(isinstance(s, SampleFailure) and "timeout" in s.error
               for triple in results for s in triple)
    assert all(r["n"] == 3 for r in server.requests)
    assert len(server.requests) == 6
    assert server.peak_in_flight["id-m"] >= 2


@pytest.mark.parametrize("kind", ["openai", "ollama"])
def test_null_content_is_a_sample_with_no_answer_and_empty_content_a_vote(server, kind):
    # a valid reply without content (a refusal, a length cut with nothing) is a sample with no
    # answer and its reason, never retried (issue 15); "" that ended normally is an empty answer
    if kind == "openai":
        null = ('{"choices": [{"index": 0, "finish_reason": "stop", "message": '
                '{"role": "assistant", "content": null, "refusal": "I cannot help."}}]}')
        empty = ('{"choices": [{"index": 0, "finish_reason": "stop", "message": '
                 '{"role": "assistant", "content": ""}}]}')
    else:
        null = ('{"message": {"role": "assistant", "content": null}, "done": true, '
                '"done_reason": "length"}')
        empty = '{"message": {"role": "assistant", "content": ""}, "done": true}'
    server.add_fault("malformed", count=1, body=null)
    server.add_fault("malformed", count=1, body=empty)
    b = backend(server.url if kind == "ollama" else server.openai_url, kind=kind, retries=1,
                supports_n=False)
    (refused,), _ = draw(b, model(b), [0])
    assert isinstance(refused, Sample) and refused.text == "" and len(server.requests) == 1
    reason = no_answer(refused)
    assert reason == ("refusal: I cannot help." if kind == "openai" else "length")
    (sample,), _ = draw(b, model(b), [0])
    assert isinstance(sample, Sample) and sample.text == "" and no_answer(sample) is None


def test_a_400_to_the_probe_that_is_not_about_n_leaves_n_undecided(server):
    # the first record's prompt is rejected for its own sake (past the context): that says
    # nothing about n, and the next records must still get their samples in one request
    server.add_fault("400", count=None, match="huge", message="context length exceeded")
    b = backend(server.openai_url)
    m = model(b)

    async def go():
        async with Runtime([b], policy=FAST) as rt:
            bad = await rt.sample(m, [{"role": "user", "content": "huge"}], [0, 1, 2])
            good = [await rt.sample(m, [{"role": "user", "content": f"q{i}"}], [0, 1, 2])
                    for i in range(3)]
            return bad, good, rt.clients["local"].stats

    bad, good, stats = asyncio.run(go())
    assert all(isinstance(s, SampleFailure) and "context length exceeded" in s.error
               for s in bad)
    assert all(isinstance(s, Sample) for triple in good for s in triple)
    assert stats.probes == {"id-m": True}
    fine = [r for r in server.requests if "huge" not in str(r["body"])]
    assert [r["n"] for r in fine] == [3, 3, 3]
