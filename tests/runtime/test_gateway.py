"""Behind a gateway (issue 15): what LiteLLM's proxy answers, mimicked by the scripted server.

Permanent 400s stop the model or the backend; a 429 that names its model pauses that model only;
a 503 with Retry-After pauses like a 429 and retries are spread; a reply with no content is a
sample with no answer (counted in k, never a vote, never retried); a gateway's reported cost is
kept per sample, in the store (schema v6) and in eval's cost (what is not a cost: NULL, said once).
The same against a real LiteLLM proxy: ``test_gateway_litellm.py``.
"""
from __future__ import annotations

import asyncio
import json
import random

import pytest

from muxlang import ir
from muxlang.cli import main
from muxlang.runtime.backends import RetryPolicy, no_answer, permanent_400, retry_delay
from muxlang.runtime.executor import Runtime
from muxlang.samples import Sample, SampleFailure
from tests.support.helpers import KEY, read_jsonl, spec_text
from tests.support.scripted_server import ScriptedServer

FAST = RetryPolicy(base=0.01, cap=0.02)


def messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Question {i}"}]


# ---- item 1: permanent 400s ----------------------------------------------------------------------
@pytest.mark.parametrize("n", ["auto", "false"])
def test_a_wrong_key_stops_the_backend_after_one_request_per_model(
        api_key, write_spec, write_records, tmp_path, capsys, n):
    server = ScriptedServer(keys={"the-right-key"}).start()
    try:
        spec = write_spec(spec_text(server.openai_url, backend=f"n = {n}"))
        records = write_records([{"id": i, "question": f"q{i}"} for i in range(20)])
        out = tmp_path / "out.jsonl"
        assert main(["run", str(spec), "--input", str(records), "--output", str(out),
                     "--no-progress"]) == 1
        lines = read_jsonl(out)
        assert len(lines) == 20 and all(line["error"] for line in lines)
        err = capsys.readouterr().err
        stopped = [line for line in err.splitlines()
                   if line.startswith("backend 'local' stopped taking requests")]
        assert len(stopped) == 1 and "No connected db." in stopped[0]  # the server's words, once
        # what was in flight when the first answer came (concurrency 8), and at most one
        # request per model after it; not 20 records x 3 models' worth (240 or 80 before)
        assert len(server.requests) <= 8 + 3
        assert KEY not in err and KEY not in out.read_text()
    finally:
        server.stop()


@pytest.mark.parametrize("n", ["auto", "false"])
def test_an_unknown_model_stops_that_model_and_the_others_answer(
        api_key, write_spec, write_records, tmp_path, capsys, n):
    server = ScriptedServer(known_models={"id-a", "id-c"}).start()
    try:
        spec = write_spec(spec_text(server.openai_url, backend=f"n = {n}"))
        records = write_records([{"id": i, "question": f"q{i}"} for i in range(20)])
        out = tmp_path / "out.jsonl"
        assert main(["run", str(spec), "--input", str(records), "--output", str(out),
                     "--no-progress"]) == 0
        lines = read_jsonl(out)
        assert all(line["error"] is None and line["missing"] == ["b"] for line in lines)
        err = capsys.readouterr().err
        stopped = [line for line in err.splitlines() if line.startswith("model 'b'")]
        assert len(stopped) == 1 and "Invalid model name passed in model=id-b" in stopped[0]
        # named against GET /v1/models, with the closest id offered
        assert "the server offers id-a, id-c; did you mean" in stopped[0]
        bad = [r for r in server.requests if r["model"] == "id-b"]
        assert len(bad) <= 8 + 1  # in flight when the first answer came, then one at most
    finally:
        server.stop()


def test_the_same_400_with_n_and_without_stops_the_model():
    server = ScriptedServer().start()
    server.add_fault("400", count=None, model="id-m", message="bad deployment config")
    backend = ir.Backend(name="local", kind="openai", url=server.openai_url, retries=2,
                         concurrency=8)
    model = ir.Model(name="m", backend=backend, id="id-m", seed=1)
    said: list[str] = []

    async def go():
        async with Runtime([backend], policy=FAST) as runtime:
            runtime.clients["local"].notify = said.append
            return await asyncio.gather(*(runtime.sample(model, messages(i), [0, 1, 2])
                                          for i in range(20)))

    try:
        results = asyncio.run(go())
    finally:
        server.stop()
    assert all(isinstance(r, SampleFailure) for record in results for r in record)
    assert len(server.requests) == 2  # the probe (n = 3), then one sample alone: both 400
    assert [line for line in said if "stopped taking requests" in line] == [said[0]]
    assert "bad deployment config" in said[0] and "with n > 1 and with n = 1" in said[0]


def test_a_400_about_one_request_stops_nothing():
    server = ScriptedServer().start()
    server.add_fault("400", count=None, match="huge", message="context length exceeded")
    backend = ir.Backend(name="local", kind="openai", url=server.openai_url, retries=2)
    model = ir.Model(name="m", backend=backend, id="id-m", seed=1)

    async def go():
        async with Runtime([backend], policy=FAST) as runtime:
            bad = await runtime.sample(model, [{"role": "user", "content": "huge"}], [0, 1])
            good = await runtime.sample(model, messages(1), [0, 1])
            return bad, good, runtime.clients["local"].stats

    try:
        bad, good, stats = asyncio.run(go())
    finally:
        server.stop()
    assert all(isinstance(r, SampleFailure) for r in bad)
    assert all(isinstance(r, Sample) for r in good) and not stats.stopped_models


def test_which_400s_are_permanent():
    assert permanent_400("No connected db.", "no_db_connection") == "backend"
    assert permanent_400("/chat/completions: Invalid model name passed in model=x. Call "
                         "`/v1/models` to view available models for your key.",
                         "invalid_request_error") == "model"
    assert permanent_400("Authentication Error, Invalid proxy server token passed.",
                         "auth_error") == "backend"
    assert permanent_400("This model's maximum context length is 4096 tokens",
                         "invalid_request_error") is None
    assert permanent_400("only n = 1 is supported", "invalid_request_error") is None


# ---- item 2: 429s per model, 503 with Retry-After, jitter ----------------------------------------
def _pause_test(scope: str | None, message: str) -> tuple[list[dict], dict]:
    server = ScriptedServer().start()
    server.add_fault("429", count=1, model="id-b", retry_after=3, message=message)
    backend = ir.Backend(name="local", kind="openai", url=server.openai_url, retries=2,
                         retry_time=30.0, supports_n=False,
                         **({"rate_scope": scope} if scope else {}))
    a = ir.Model(name="a", backend=backend, id="id-a", seed=1)
    b = ir.Model(name="b", backend=backend, id="id-b", seed=1)

    async def go():
        async with Runtime([backend], policy=FAST) as runtime:
            client = runtime.clients["local"]
            first_b = asyncio.ensure_future(runtime.sample(b, messages(0), [0]))
            while not client.stats.rate_limited:  # b was told to pause
                await asyncio.sleep(0.01)
            got_a = await runtime.sample(a, messages(1), [0])
            got_b = await first_b
            return got_a + got_b, dict(client._cooldowns)

    try:
        results, pauses = asyncio.run(go())
    finally:
        server.stop()
    assert all(isinstance(r, Sample) for r in results)
    return server.requests, pauses


def test_a_429_naming_its_model_pauses_that_model_only():
    message = ("No deployments available for selected model, Try again in 3 seconds. Passed "
               "model=id-b. pre-call-checks=False")
    requests, pauses = _pause_test(None, message)
    assert list(pauses) == ["id-b"]
    order = [r["model"] for r in requests]
    assert order == ["id-b", "id-a", "id-b"]  # a went while b waited out its pause


def test_a_429_that_names_no_model_pauses_the_backend_and_rate_scope_decides():
    requests, pauses = _pause_test(None, "Too many requests")
    assert list(pauses) == [None]  # a waited out the backend's pause too (in either order)
    assert sorted(r["model"] for r in requests) == ["id-a", "id-b", "id-b"]
    _, pauses = _pause_test("model", "Too many requests")
    assert list(pauses) == ["id-b"]
    _, pauses = _pause_test("backend", "model group 'id-b' is rate-limited")
    assert list(pauses) == [None]


def test_a_503_with_retry_after_pauses_like_a_429():
    server = ScriptedServer().start()
    server.add_fault("503", count=1, retry_after=1, message="Max parallel request limit")
    backend = ir.Backend(name="local", kind="openai", url=server.openai_url, retries=2,
                         supports_n=False)
    model = ir.Model(name="m", backend=backend, id="id-m", seed=1)

    async def go():
        async with Runtime([backend], policy=FAST) as runtime:
            got = await runtime.sample(model, messages(0), [0])
            return got, dict(runtime.clients["local"]._cooldowns)

    try:
        (sample,), pauses = asyncio.run(go())
    finally:
        server.stop()
    assert isinstance(sample, Sample) and list(pauses) == [None]


def test_retry_after_waits_are_spread():
    random.seed(0)
    delays = [retry_delay(1.0) for _ in range(200)]
    assert all(1.0 <= d <= 2.0 for d in delays)
    assert max(delays) - min(delays) > 0.8  # spread over the second after, not bunched
    assert all(0.0 <= retry_delay(0.0) <= 0.5 for _ in range(20))


def test_sixteen_requests_behind_an_in_flight_cap_all_get_through():
    server = ScriptedServer(in_flight_cap=1, cap_retry_after=1, latency=0.02).start()
    backend = ir.Backend(name="local", kind="openai", url=server.openai_url, retries=8,
                         retry_time=60.0, concurrency=16, supports_n=False)
    model = ir.Model(name="m", backend=backend, id="id-m", seed=1)

    async def go():
        async with Runtime([backend], policy=FAST) as runtime:
            got = await asyncio.gather(*(runtime.sample(model, messages(i), [0])
                                         for i in range(16)))
            return got, runtime.clients["local"].stats

    try:
        results, stats = asyncio.run(go())
    finally:
        server.stop()
    assert all(isinstance(r, Sample) for (r,) in results)
    assert server.capped >= 1 and stats.retries >= 1


# ---- item 4: replies with no content -------------------------------------------------------------
@pytest.mark.parametrize("kind,reason", [("refusal", "refusal: I can't help with that."),
                                         ("content_filter", "content_filter"),
                                         ("length_empty", "length")])
def test_a_reply_with_no_content_is_a_sample_with_no_answer(
        server, api_key, write_spec, write_records, tmp_path, kind, reason):
    server.add_fault(kind, count=None, model="id-a")
    spec = write_spec(spec_text(server.openai_url, backend="n = false"))
    records = write_records([{"id": i, "question": f"q{i}"} for i in range(3)])
    out, store = tmp_path / "out.jsonl", tmp_path / "store.sqlite"
    run = ["run", str(spec), "--input", str(records), "--output", str(out), "--no-progress",
           "--store", str(store)]
    assert main(run) == 0
    lines = read_jsonl(out)
    for line in lines:
        assert line["error"] is None and line["model"] != "a" and "a" not in line["missing"]
        assert line["votes"]["a"] == [None, None, None]  # counted in k, never a vote
        assert reason in line["no_answer"]["a"] and "3 of 3" in line["no_answer"]["a"]
    # never retried: one request per sample
    assert len([r for r in server.requests if r["model"] == "id-a"]) == 3 * 3
    # stored with its reason: a second run sends nothing for them
    before = len(server.requests)
    assert main(run) == 0
    assert len(server.requests) == before
    assert reason in read_jsonl(out)[0]["no_answer"]["a"]
    # the Python API says the same (from the store: nothing is sent)
    import muxlang

    (result,) = muxlang.Session(store=store).run(muxlang.load(spec), [{"id": 0, "question": "q0"}])
    assert reason in result.no_answer["a"] and len(server.requests) == before


def test_no_answer_reads_the_finish_reason():
    assert no_answer(Sample(0, "", "content_filter")) == "content_filter"
    assert no_answer(Sample(0, "", "stop")) is None  # a real, empty answer
    assert no_answer(Sample(0, "", None)) is None
    assert no_answer(Sample(0, "#### 1", "length")) is None


# ---- item 5: a gateway's reported cost -----------------------------------------------------------
def test_a_gateway_reported_cost_is_kept_per_sample():
    server = ScriptedServer(cost=lambda model: 0.003 if model == "id-m" else None).start()
    backend = ir.Backend(name="local", kind="openai", url=server.openai_url, retries=0)
    model = ir.Model(name="m", backend=backend, id="id-m", seed=1)
    other = ir.Model(name="o", backend=backend, id="id-o", seed=1)

    async def go():
        async with Runtime([backend], policy=FAST) as runtime:
            return (await runtime.sample(model, messages(0), [0, 1, 2]),
                    await runtime.sample(other, messages(0), [0]))

    try:
        batched, (plain,) = asyncio.run(go())
    finally:
        server.stop()
    assert len(server.requests) == 2  # one request with n = 3: its cost shared by its samples
    assert [round(s.cost, 6) for s in batched] == [0.001] * 3
    assert plain.cost is None


def test_a_runs_output_sums_the_reported_cost(
        api_key, write_spec, write_records, tmp_path):
    server = ScriptedServer(cost=0.002).start()
    try:
        spec = write_spec(spec_text(server.openai_url, models=("a",), samples=2,
                                    backend="n = false"))
        records = write_records([{"id": 0, "question": "q0"}])
        out = tmp_path / "out.jsonl"
        assert main(["run", str(spec), "--input", str(records), "--output", str(out),
                     "--no-progress"]) == 0
        (line,) = read_jsonl(out)
        assert line["reported_cost"] == pytest.approx(0.004)
        # the Python API says the same
        import muxlang

        (result,) = muxlang.Session().run(muxlang.load(spec), [{"id": 0, "question": "q0"}])
        assert result.reported_cost == pytest.approx(0.004)
    finally:
        server.stop()


def _stored_costs(store) -> dict[str, list]:
    """model id -> the costs of its stored samples (in key, index order)."""
    from muxlang.store import Store
    from muxlang.store import schema as s

    with Store(str(store), must_exist=True) as opened:
        with opened.engine.connect() as conn:
            rows = conn.execute(s.samples.select().order_by(s.samples.c.key_hash,
                                                            s.samples.c.sample_index)).mappings()
            out: dict[str, list] = {}
            for row in rows:
                out.setdefault(row["model"], []).append(row["cost"])
            return out


def test_reported_costs_reach_the_store_and_eval_reports_cost_from_them(
        api_key, write_spec, write_records, tmp_path, capsys):
    """x-litellm-response-cost → collect and run --store keep it per sample → eval --json says
    each model's cost per sample from it (a price in the spec for b is not what counts)."""
    server = ScriptedServer(cost=lambda model: {"id-a": 0.006, "id-b": 0.0009}[model]).start()
    try:
        spec = write_spec(spec_text(server.openai_url, models=("a", "b"), samples=3)
                          .replace('id = "id-b"', 'id = "id-b"  input_price = 1000  '
                                                   'output_price = 1000'))
        records = write_records([{"id": i, "question": f"q{i}", "answer": str(i % 3)}
                                 for i in range(4)])
        store = tmp_path / "gw.sqlite"
        assert main(["collect", str(spec), "--dataset", str(records), "--samples", "3",
                     "--store", str(store), "--no-progress", "--json"]) == 0
        summary = json.loads(capsys.readouterr().out)
        # collect's total: what the gateway reported, not b's price x tokens
        assert summary["cost"] == pytest.approx(4 * (0.006 + 0.0009))
        costs = _stored_costs(store)
        # one request with n = 3 per model and record: its cost shared by its three samples
        assert [round(c, 6) for c in costs["id-a"]] == [0.002] * 12
        assert [round(c, 6) for c in costs["id-b"]] == [0.0003] * 12
        assert main(["eval", str(spec), "--dataset", str(records), "--store", str(store),
                     "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        a, b = report["models"]["a"], report["models"]["b"]
        assert (a["cost_source"], a["cost_per_sample"]) == ("gateway", pytest.approx(0.002))
        assert (b["cost_source"], b["cost_per_sample"]) == ("gateway", pytest.approx(0.0003))
        assert report["mux"]["cost_per_question"] == pytest.approx(3 * 0.002 + 3 * 0.0003)
        assert "cost per sample: reported by the gateway for a, b" in report["notes"]
        # run --store keeps what it draws too (one more record), and reads the rest back
        more = write_records([{"id": 9, "question": "q9"}], "more.jsonl")
        out = tmp_path / "out.jsonl"
        assert main(["run", str(spec), "--input", str(more), "--output", str(out),
                     "--store", str(store), "--no-progress"]) == 0
        assert read_jsonl(out)[0]["reported_cost"] == pytest.approx(0.006 + 0.0009)
        assert len(_stored_costs(store)["id-a"]) == 15
        assert all(c is not None for c in _stored_costs(store)["id-a"])
    finally:
        server.stop()


@pytest.mark.parametrize("header", ["abc", "-1", "nan", "inf", "1e999", "1e300", "9" * 2000])
def test_a_reported_cost_that_is_not_a_cost_is_stored_as_null_and_said_once(
        api_key, write_spec, write_records, tmp_path, capsys, header):
    server = ScriptedServer(cost=header).start()
    try:
        spec = write_spec(spec_text(server.openai_url, models=("a",), samples=2))
        records = write_records([{"id": i, "question": f"q{i}", "answer": "1"} for i in range(3)])
        store = tmp_path / "gw.sqlite"
        out = tmp_path / "out.jsonl"
        assert main(["run", str(spec), "--input", str(records), "--output", str(out),
                     "--store", str(store), "--no-progress"]) == 0
        err = capsys.readouterr().err
        lines = read_jsonl(out)
        assert all(line["error"] is None and "reported_cost" not in line for line in lines)
        assert _stored_costs(store) == {"id-a": [None] * 6}  # every sample kept, no cost
        said = [line for line in err.splitlines() if "is not a cost in USD" in line]
        assert len(said) == 1 and "backend 'local'" in said[0]
        assert len(said[0]) < 300 and "internal error" not in err
        assert main(["eval", str(spec), "--dataset", str(records), "--store", str(store),
                     "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["models"]["a"]["cost_source"] is None
    finally:
        server.stop()
