"""``muxlang serve`` driven by the real ``openai`` Python client against a scripted model server on
127.0.0.1: answers (plain and streamed), models, the request mapping, overrides, errors as the
SDK's own exception types, auth, metrics and health."""
from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import openai
import pytest

import muxlang
from tests.serve.serving import client, serving
from tests.support.helpers import spec_text

QUESTION = "What is 2 + 2?"


@pytest.fixture
def spec(backend, write_spec):
    return muxlang.load(write_spec(spec_text(backend.openai_url)))


def expected(spec, record, mux=None):
    return muxlang.Session().run(spec, [record], mux=mux)[0]


def http(url, data=None, headers=None):
    """(status, headers, body bytes) of a plain HTTP request."""
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def wait_for(predicate, what):
    """Poll ``predicate`` until it holds (bounded by count, not by a time to assert on)."""
    import time

    for _ in range(3000):
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


# ---- answers ------------------------------------------------------------------------------------
def test_an_answer_is_the_chosen_sample_with_headers_usage_and_trace(spec, backend):
    want = expected(spec, {"question": QUESTION})
    backend.clear_log()
    with serving(spec) as running:
        raw = client(running).chat.completions.with_raw_response.create(
            model="pool", temperature=1.5, max_tokens=5, seed=7,
            messages=[{"role": "system", "content": "Reply in French."},
                      {"role": "user", "content": QUESTION}],
            extra_body={"mux": {"trace": True}})
    completion = raw.parse()
    assert completion.model == "pool"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == want.text
    assert completion.choices[0].finish_reason == "stop"
    assert raw.headers["x-mux-model"] == want.model
    assert float(raw.headers["x-mux-confidence"]) == want.confidence
    assert completion.usage.prompt_tokens == want.tokens_in
    assert completion.usage.completion_tokens == want.tokens_out
    assert completion.usage.total_tokens == want.tokens_in + want.tokens_out
    trace = completion.model_extra["mux"]
    assert trace["model"] == want.model and trace["confidence"] == want.confidence
    assert trace["votes"] == want.votes and trace["scores"] == want.scores
    assert trace["answer"] == want.answer
    assert trace["samples"] == {"drawn": 9, "cached": 0, "budget": 9,
                                "members": {"a": 3, "b": 3, "c": 3},
                                "budgets": {"a": 3, "b": 3, "c": 3}}
    assert "confidence_bounds" not in trace  # drawn in full
    assert trace["input"] == "last user message -> {question}"
    assert {"temperature", "max_tokens", "seed"} <= set(trace["ignored"])
    assert any(item.startswith("system message") for item in trace["ignored"])
    assert "sampling parameters" in trace["note"]
    # the spec wins: its system prompt and sampling parameters reached the models
    sent = [entry["body"] for entry in backend.requests]
    assert sum(body.get("n") or 1 for body in sent) == 9
    for body in sent:
        assert body["messages"][0] == {"role": "system", "content": "Answer with #### N."}
        assert body["messages"][-1]["content"] == f"Question: {QUESTION}"
        assert body.get("max_tokens") != 5 and body["temperature"] == 0.3
        assert "Reply in French." not in json.dumps(body)


def test_the_answer_streams_as_server_sent_events(spec, backend):
    want = expected(spec, {"question": QUESTION})
    gate = threading.Event()
    held = []

    def latency(model, prompt, seed):  # holds the backend until the role chunk has arrived
        if not held:
            held.append(model)
            gate.wait(30)
        return 0.0

    backend.latency = latency
    with serving(spec) as running:
        stream = client(running).chat.completions.create(
            model="pool", messages=[{"role": "user", "content": QUESTION}], stream=True,
            stream_options={"include_usage": True})
        chunks = iter(stream)
        first = next(chunks)
        assert not gate.is_set()  # the role chunk came while no model had answered
        gate.set()
        rest = list(chunks)
    assert first.choices[0].delta.role == "assistant" and not first.choices[0].delta.content
    assert first.model == "pool" and first.object == "chat.completion.chunk"
    text = "".join(c.choices[0].delta.content or "" for c in rest if c.choices)
    assert text == want.text
    finishes = [c.choices[0].finish_reason for c in rest if c.choices]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    last = [c for c in rest if c.choices][-1]
    assert last.model_extra["mux"] == {"model": want.model, "confidence": want.confidence}
    assert rest[-1].choices == [] and rest[-1].usage.completion_tokens == want.tokens_out
    assert len({c.id for c in [first, *rest]}) == 1


def test_the_raw_stream_is_valid_sse_ending_in_done(spec):
    with serving(spec) as running:
        body = json.dumps({"model": "pool", "stream": True,
                           "messages": [{"role": "user", "content": QUESTION}]}).encode()
        status, headers, raw = http(running.url + "/v1/chat/completions", body,
                                    {"Content-Type": "application/json"})
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    events = raw.decode().split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    payloads = [json.loads(e[len("data: "):]) for e in events[:-2]]
    assert all(e.startswith("data: ") for e in events[:-1])
    assert payloads[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert payloads[-1]["choices"][0]["finish_reason"] == "stop"


def test_models_lists_the_served_muxes_with_pools_and_budgets(backend, write_spec):
    extra = """
mux small {
  task = t
  pool = [a * 1, b * 2]
}
cascade escalate {
  steps = [small, pool]
  threshold = 0.9
}
"""
    spec = muxlang.load(write_spec(spec_text(backend.openai_url, extra=extra)))
    with serving(spec) as running:
        sdk = client(running)
        models = list(sdk.models.list())
        one = sdk.models.retrieve("small")
        with pytest.raises(openai.NotFoundError):
            sdk.models.retrieve("smal")
    assert [m.id for m in models] == ["pool", "small", "escalate"]
    assert all(m.object == "model" and m.owned_by == "muxlang" for m in models)
    pool = models[0].model_extra["mux"]
    assert pool["budget"] == 9 and pool["rule"] == "slm_mux" and pool["task"] == "t"
    assert pool["adaptive"] == "off"
    assert pool["pool"][0] == {"member": "a", "samples": 3, "id": "id-a", "backend": "local"}
    cascade = models[2].model_extra["mux"]
    assert cascade["kind"] == "cascade" and cascade["budget"] == 12
    assert [s["budget"] for s in cascade["steps"]] == [3, 9]
    assert one.model_extra["mux"]["pool"][1]["samples"] == 2


def test_mux_limits_what_is_served_and_replay_muxes_are_left_out(backend, write_spec):
    extra = """
backend stored {
  kind = replay
}
model r { backend = stored  id = "r" }
mux replayed {
  task = t
  pool = [r * 2]
}
mux small {
  task = t
  pool = [a * 1]
}
"""
    spec = muxlang.load(write_spec(spec_text(backend.openai_url, extra=extra)))
    from muxlang.serve import MuxServer

    server = MuxServer(spec)
    try:
        assert list(server.served) == ["pool", "small"]
        assert server.notes == ["not serving 'replayed': it uses replay backend(s) stored"]
    finally:
        server.owner.close()
    with pytest.raises(muxlang.MuxError, match="replay backend"):
        MuxServer(spec, muxes=["replayed"])
    with pytest.raises(muxlang.MuxError, match="did you mean 'small'"):
        MuxServer(spec, muxes=["smal"])
    with serving(spec, muxes=["small"]) as running:
        sdk = client(running)
        assert [m.id for m in sdk.models.list()] == ["small"]
        with pytest.raises(openai.NotFoundError, match="served: small"):
            sdk.chat.completions.create(model="pool", messages=[{"role": "user", "content": "1"}])


# ---- the request mapping and overrides ------------------------------------------------------------
def test_a_record_in_mux_record_fills_every_field(backend, write_spec):
    extra = """
task two {
  user = "Question: {question}\\nOptions: {choices}"
  extract = final_number
  equivalence = numeric
}
mux choose {
  task = two
  pool = [a * 2, b * 1]
}
"""
    spec = muxlang.load(write_spec(spec_text(backend.openai_url, extra=extra)))
    record = {"question": "Which?", "choices": "1, 2 or 3"}
    want = expected(spec, record, "choose")
    with serving(spec) as running:
        sdk = client(running)
        with pytest.raises(openai.BadRequestError) as error:
            sdk.chat.completions.create(model="choose",
                                        messages=[{"role": "user", "content": "Which?"}])
        assert error.value.body["code"] == "invalid_record"
        assert "record has no field 'choices'" in error.value.body["message"]
        assert "mux.record" in error.value.body["message"]
        done = sdk.chat.completions.create(model="choose", messages=[],
                                           extra_body={"mux": {"record": record,
                                                               "trace": True}})
        flat = sdk.chat.completions.create(model="choose", messages=[],
                                           extra_body={"mux.record": record})
    assert done.choices[0].message.content == want.text == flat.choices[0].message.content
    assert done.model_extra["mux"]["input"] == "mux.record"


def test_content_parts_and_earlier_turns(spec):
    want = expected(spec, {"question": "first part\nsecond part"})
    with serving(spec) as running:
        sdk = client(running)
        done = sdk.chat.completions.create(
            model="pool", extra_body={"mux": {"trace": True}},
            messages=[{"role": "user", "content": "an earlier question"},
                      {"role": "assistant", "content": "an earlier answer"},
                      {"role": "user", "content": [{"type": "text", "text": "first part"},
                                                   {"type": "text", "text": "second part"}]}])
        with pytest.raises(openai.BadRequestError, match="image_url"):
            sdk.chat.completions.create(model="pool", messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}])
    assert done.choices[0].message.content == want.text
    assert any("earlier turns" in item for item in done.model_extra["mux"]["ignored"])


def test_per_request_sample_counts(backend, write_spec, spec):
    fewer = muxlang.load(write_spec(spec_text(backend.openai_url, pool="a * 1, b * 5, c * 3"),
                                    "fewer.mux"))
    want = expected(fewer, {"question": QUESTION})
    with serving(spec) as running:
        sdk = client(running)
        done = sdk.chat.completions.create(
            model="pool", messages=[{"role": "user", "content": QUESTION}],
            extra_body={"mux": {"samples": {"a": 1, "b": 5}, "trace": True}})
        again = sdk.chat.completions.with_raw_response.create(
            model="pool", messages=[{"role": "user", "content": QUESTION}],
            extra_body={"mux": {"samples": {"b": 5, "a": 1}}})
        for bad, message in (({"d": 2}, "no model member 'd'"), ({"a": 0}, "from 1 to 64"),
                             ({"a": 2.5}, "whole number"), ([1, 2], "an object")):
            with pytest.raises(openai.BadRequestError, match=message):
                sdk.chat.completions.create(model="pool", messages=[{"role": "user",
                                                                     "content": "x"}],
                                            extra_body={"mux": {"samples": bad}})
        kept = running.call(lambda: len(running.server.served["pool"].variants))
    trace = done.model_extra["mux"]
    assert done.choices[0].message.content == want.text
    assert trace["votes"] == want.votes and [len(v) for v in trace["votes"].values()] == [1, 5, 3]
    assert trace["samples"]["budget"] == 9 and trace["overrides"] == {"samples": {"a": 1, "b": 5}}
    assert trace["samples"]["members"] == trace["samples"]["budgets"] == {"a": 1, "b": 5, "c": 3}
    assert again.headers["x-mux-model"] == want.model
    assert kept == 1  # the second request reused the first one's prepared run


def test_mux_adaptive_draws_as_run_does_with_that_policy_and_bad_values_are_400(
        spec, backend):
    """mux.adaptive = exact answers as the spec with adaptive = exact answers through run (the
    full budget's answer and member), drawing what that run draws; a bad policy is a 400."""
    from dataclasses import replace

    adaptive = replace(spec.muxes["pool"], adaptive="exact")
    want = muxlang.Session().run(spec, [{"question": QUESTION}], mux=adaptive)[0]
    full = expected(spec, {"question": QUESTION})
    with serving(spec) as running:
        sdk = client(running)
        completion = sdk.chat.completions.create(
            model="pool", messages=[{"role": "user", "content": QUESTION}],
            extra_body={"mux": {"adaptive": "exact", "trace": True}})
        trace = completion.model_extra["mux"]
        assert completion.choices[0].message.content == want.text
        assert (trace["answer"], trace["model"]) == (full.answer, full.model)
        assert trace["overrides"] == {"adaptive": "exact"}
        assert trace["samples"]["members"] == want.samples
        assert trace["samples"]["budgets"] == {"a": 3, "b": 3, "c": 3}
        assert trace.get("confidence_bounds") == want.confidence_bounds
        with pytest.raises(openai.BadRequestError) as error:
            sdk.chat.completions.create(model="pool", messages=[{"role": "user", "content": "x"}],
                                        extra_body={"mux": {"adaptive": "delta(3)"}})
        assert error.value.status_code == 400
        assert "off, exact or delta(p)" in error.value.body["message"]
        assert error.value.body["param"] == "mux.adaptive"
        with pytest.raises(openai.BadRequestError, match="did you mean 'trace'"):
            sdk.chat.completions.create(model="pool", messages=[{"role": "user", "content": "x"}],
                                        extra_body={"mux": {"trac": True}})


# ---- errors ---------------------------------------------------------------------------------------
def test_bad_requests_are_400_or_404_in_the_openai_shape(spec):
    with serving(spec) as running:
        sdk = client(running)
        with pytest.raises(openai.NotFoundError) as error:
            sdk.chat.completions.create(model="pol", messages=[{"role": "user", "content": "x"}])
        assert error.value.body["code"] == "model_not_found"
        assert "did you mean 'pool'" in error.value.body["message"]
        cases = [
            ({"messages": [{"role": "system", "content": "x"}]}, "no user message"),
            ({"messages": "hello"}, "must be a list"),
            ({"messages": [{"role": "user", "content": "x"}], "n": 3}, "'n' must be 1"),
            ({"messages": [{"role": "user", "content": "x"}],
              "extra_body": {"mux": {"deadline": -1}}}, "mux.deadline"),
            ({"messages": [{"role": "user", "content": "x"}],
              "extra_body": {"mux": {"trace": "yes"}}}, "mux.trace"),
        ]
        for kwargs, message in cases:
            with pytest.raises(openai.BadRequestError, match=message) as error:
                sdk.chat.completions.create(model="pool", **kwargs)
            assert set(error.value.body) == {"message", "type", "param", "code"}
            assert error.value.body["type"] == "invalid_request_error"
        for data, message in ((b"{not json", "not valid JSON"), (b"[1, 2]", "JSON object"),
                              (b'{"messages": []}', "'model' is required")):
            status, _, body = http(running.url + "/v1/chat/completions", data,
                                   {"Content-Type": "application/json"})
            assert status == 400 and message in json.loads(body)["error"]["message"]
        status, _, body = http(running.url + "/v1/chat/completions",
                               b'{"model": "pool", "x": "' + b"a" * (5 << 20) + b'"}',
                               {"Content-Type": "application/json"})
        assert status == 413 and json.loads(body)["error"]["code"] == "request_too_large"
        status, _, body = http(running.url + "/v1/nothing")
        assert status == 404 and json.loads(body)["error"]["code"] == "not_found"
        status, _, body = http(running.url + "/v1/models", b"{}")
        assert status == 405 and json.loads(body)["error"]["code"] == "method_not_allowed"


def test_every_member_failing_is_a_502(spec, backend):
    with serving(spec) as running:
        sdk = client(running)
        backend.add_fault("400", count=None, message="model is gone")
        with pytest.raises(openai.InternalServerError) as error:
            sdk.chat.completions.create(model="pool", messages=[{"role": "user", "content": "x"}])
        assert error.value.status_code == 502
        assert error.value.body["code"] == "all_members_failed"
        assert "every pool member failed" in error.value.body["message"]
        assert "model is gone" in error.value.body["message"]
        stream = sdk.chat.completions.create(model="pool", stream=True,
                                             messages=[{"role": "user", "content": "y"}])
        with pytest.raises(openai.APIError, match="every pool member failed"):
            list(stream)
        metrics = http(running.url + "/metrics")[2].decode()
    assert 'muxlang_serve_requests_total{model="pool",status="502"} 2.0' in metrics
    failures = [line for line in metrics.splitlines()
                if line.startswith('muxlang_backend_failures_total{backend="local"}')]
    assert float(failures[0].split()[-1]) >= 3


def test_no_readable_answer_is_a_502_and_a_passed_deadline_a_504(spec, backend):
    with serving(spec) as running:
        sdk = client(running)
        answer = backend.answer
        backend.answer = lambda model, prompt, seed: "I would rather not say."
        with pytest.raises(openai.InternalServerError) as error:
            sdk.chat.completions.create(model="pool", messages=[{"role": "user", "content": "w"}])
        assert error.value.status_code == 502 and error.value.body["code"] == "no_answer"
        assert "9 samples, none read" in error.value.body["message"]
        backend.answer = answer
        backend.add_fault("hang", count=None, seconds=1.5)
        with pytest.raises(openai.InternalServerError) as error:
            sdk.chat.completions.create(model="pool", messages=[{"role": "user", "content": "z"}],
                                        extra_body={"mux": {"deadline": 0.2}})
        assert error.value.status_code == 504
        assert error.value.body["code"] == "deadline_exceeded"
        backend.clear_faults()
        metrics = http(running.url + "/metrics")[2].decode()
    assert 'muxlang_serve_requests_total{model="pool",status="502"} 1.0' in metrics
    assert 'muxlang_serve_requests_total{model="pool",status="504"} 1.0' in metrics


def test_a_full_queue_answers_429_with_retry_after(spec, backend):
    gate = threading.Event()
    backend.latency = lambda model, prompt, seed: gate.wait(30) and 0.0
    with serving(spec, in_flight=1, queue=0) as running:
        sdk = client(running)
        first = {}
        worker = threading.Thread(target=lambda: first.setdefault(
            "done", sdk.chat.completions.create(model="pool",
                                                messages=[{"role": "user", "content": "1"}])))
        worker.start()
        try:
            wait_for(lambda: running.call(lambda: running.server._admitted) == 1,
                     "the first request was admitted")
            with pytest.raises(openai.RateLimitError) as error:
                sdk.chat.completions.create(model="pool",
                                            messages=[{"role": "user", "content": "2"}])
            assert error.value.status_code == 429
            assert error.value.body["code"] == "queue_full"
            assert int(error.value.response.headers["retry-after"]) >= 1
        finally:
            gate.set()
            worker.join(60)
    assert first["done"].choices[0].message.content


def test_bearer_auth_guards_every_route_but_health_and_never_echoes_the_key(spec, capfd):
    key = "serve-key-0123456789abcdef"
    with serving(spec, api_key=key) as running:
        with pytest.raises(openai.AuthenticationError) as error:
            client(running, key="wrong-key").chat.completions.create(
                model="pool", messages=[{"role": "user", "content": "x"}])
        assert error.value.status_code == 401
        assert key not in json.dumps(error.value.body)
        with pytest.raises(openai.AuthenticationError):
            client(running, key="wrong-key").models.list()
        sdk = client(running, key=key)
        assert sdk.chat.completions.create(model="pool", messages=[
            {"role": "user", "content": "x"}]).choices[0].message.content
        assert [m.id for m in sdk.models.list()] == ["pool"]
        assert http(running.url + "/health")[0] == 200
        assert http(running.url + "/metrics")[0] == 401
        assert http(running.url + "/metrics", headers={"Authorization": f"Bearer {key}"})[0] == 200
    out = capfd.readouterr()
    assert key not in out.out + out.err


def test_health_and_metrics(spec):
    with serving(spec) as running:
        status, _, body = http(running.url + "/health")
        assert status == 200
        assert json.loads(body) == {"status": "ok", "models": ["pool"], "in_flight": 0,
                                    "queued": 0}
        sdk = client(running)
        sdk.chat.completions.create(model="pool", messages=[{"role": "user", "content": "x"}])
        with pytest.raises(openai.NotFoundError):
            sdk.chat.completions.create(model="other", messages=[{"role": "user",
                                                                 "content": "x"}])
        status, headers, body = http(running.url + "/metrics")
    text = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert 'muxlang_serve_requests_total{model="pool",status="200"} 1.0' in text
    assert 'muxlang_serve_requests_total{model="unknown",status="404"} 1.0' in text
    assert 'muxlang_serve_samples_total{model="pool",source="drawn"} 9.0' in text
    assert 'muxlang_serve_request_seconds_count{model="pool"} 1.0' in text
    assert 'muxlang_backend_requests_total{backend="local"}' in text
    assert "muxlang_serve_in_flight 0.0" in text and "muxlang_serve_queued 0.0" in text


def test_served_muxes_share_each_backends_limits(backend, write_spec):
    """Two muxes answering at once hold the backend to the session's concurrency together."""
    extra = """
mux small {
  task = t
  pool = [a * 2, b * 2]
}
"""
    spec = muxlang.load(write_spec(spec_text(backend.openai_url, extra=extra)))
    backend.latency = 0.05
    with serving(spec, muxlang.Session(concurrency=2)) as running:
        sdk = client(running)

        def ask(i):
            return sdk.chat.completions.create(
                model=("pool", "small")[i % 2],
                messages=[{"role": "user", "content": f"{i} + 1?"}]).choices[0].message.content

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(ask, range(8)))
        clients = running.call(lambda: list(running.server.owner.runtime.clients))
    assert all(answers)
    assert clients == ["local"]  # one connection pool for both muxes
    assert backend.max_active == 2  # never more than the limit, and both slots were used
