"""Served answers equal ``muxlang run``'s (``Session.run`` and the command), record by record, for
the same records and seeds: flat muxes under both rules, a nested mux, a cascade, and with the
sample store (cached samples, tie-breaks by the mux's validation accuracies)."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import muxlang
from muxlang.cli import main
from tests.serve.serving import client, serving, varied
from tests.support.helpers import read_jsonl, spec_text
from tests.support.scripted_server import ScriptedServer

EXTRA = """
mux small {
  task = t
  pool = [a * 2, b * 2]
  accuracy = 0.7
}
mux vote {
  task = t
  pool = [a * 3, b * 2, c * 1]
  rule = majority
}
mux nested {
  task = t
  pool = [small, c * 2]
}
cascade escalate {
  steps = [small, pool]
  threshold = 0.9
}
"""

RECORDS = [{"id": i, "question": f"What is {i} + {3 * i}?"} for i in range(16)]


def served(running, name, records, **options):
    """The served answers of ``records`` (sent 4 at a time), in record order; ``options``: more
    ``mux`` options (``adaptive="exact"``)."""
    sdk = client(running)

    def one(record):
        raw = sdk.chat.completions.with_raw_response.create(
            model=name, messages=[],
            extra_body={"mux": {"record": record, "trace": True, **options}})
        return raw.headers, raw.parse()

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, records))


def assert_same(want, got):
    for result, (headers, completion) in zip(want, got, strict=True):
        trace = completion.model_extra["mux"]
        assert completion.choices[0].message.content == result.text, result.id
        assert headers["x-mux-model"] == result.model, result.id
        assert float(headers["x-mux-confidence"]) == result.confidence, result.id
        assert (trace["answer"], trace["model"], trace["confidence"]) == (
            result.answer, result.model, result.confidence)
        assert trace["votes"] == result.votes and trace["scores"] == result.scores
        assert trace.get("path", [result.model]) == (result.path or [result.model])
        assert trace.get("step") == result.step
        assert completion.usage.completion_tokens == result.tokens_out
        if result.samples:  # an adaptive mux: what its policy drew per member, as run says
            assert trace["samples"]["members"] == result.samples, result.id
        assert trace.get("confidence_bounds") == result.confidence_bounds, result.id


def test_served_answers_equal_session_run_for_every_kind_of_mux(backend, write_spec):
    spec = muxlang.load(write_spec(spec_text(backend.openai_url, extra=EXTRA,
                                             accuracies={"a": 0.6, "b": 0.8, "c": 0.7})))
    names = ["pool", "vote", "nested", "escalate"]
    want = {name: muxlang.Session().run(spec, RECORDS, mux=name) for name in names}
    assert all(r.error is None for results in want.values() for r in results)
    # the records really exercise the selection: several members win, cascades stop and go on
    assert len({r.model for r in want["pool"]}) > 1
    assert {r.step for r in want["escalate"]} == {"small", "pool"}
    with serving(spec) as running:
        for name in names:
            assert_same(want[name], served(running, name, RECORDS))


def test_served_answers_equal_the_run_command_lines(backend, write_spec, tmp_path):
    path = write_spec(spec_text(backend.openai_url, extra=EXTRA))
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    assert main(["run", str(path), "--mux", "nested", "-i", str(source), "-o",
                 str(tmp_path / "out.jsonl"), "--no-progress"]) == 0
    lines = read_jsonl(tmp_path / "out.jsonl")
    with serving(muxlang.load(path)) as running:
        got = served(running, "nested", RECORDS)
    for line, (headers, completion) in zip(lines, got, strict=True):
        trace = completion.model_extra["mux"]
        assert completion.choices[0].message.content == line["text"]
        assert (trace["answer"], trace["model"], trace["confidence"], trace["votes"]) == (
            line["answer"], line["model"], line["confidence"], line["votes"])


STORE_SPEC = """
backend local {{
  kind = openai
  url = "{url}"
  concurrency = 8
  retries = 1
}}
model a {{ backend = local  id = "id-a"  seed = 100 }}
model b {{ backend = local  id = "id-b"  seed = 100 }}
task t {{
  user = "Question: {{question}}"
  extract = final_number
  equivalence = numeric
  gold = "answer"
}}
mux pool {{
  task = t
  pool = [a * 2, b * 2]
  validation = "val"
}}
"""


def test_with_the_store_serve_caches_and_breaks_ties_as_run_does(backend, write_spec, tmp_path):
    spec = muxlang.load(write_spec(STORE_SPEC.format(url=backend.openai_url)))
    store = str(tmp_path / "samples.sqlite")
    val = tmp_path / "val.jsonl"
    # b agrees with the gold answer more often than a: ties go to b by validation accuracy
    val.write_text("".join(json.dumps({"id": i, "question": f"v{i}", "answer": "1"}) + "\n"
                           for i in range(12)))
    muxlang.Session(store=store).collect(spec, str(val), name="val")
    runner = muxlang.Session(store=store).runner(spec)
    accuracies = runner.info.accuracies
    runner.close()
    assert set(accuracies) == {"a", "b"}
    want = muxlang.Session(store=store).run(spec, RECORDS)
    assert any(r.scores["a"] == r.scores["b"] for r in want)  # ties that accuracies broke
    backend.clear_log()
    with serving(spec, muxlang.Session(store=store)) as running:
        got = served(running, "pool", RECORDS)
    assert backend.requests == []  # every sample came from the store
    assert_same(want, got)
    assert all(c.model_extra["mux"]["samples"] == {"drawn": 0, "cached": 4, "budget": 4,
                                                   "members": {"a": 2, "b": 2},
                                                   "budgets": {"a": 2, "b": 2}}
               for _, c in got)


def test_sample_overrides_reach_nested_muxes_and_equal_run_with_those_counts(backend, write_spec):
    spec = muxlang.load(write_spec(spec_text(backend.openai_url, extra=EXTRA)))
    changed = EXTRA.replace("pool = [a * 2, b * 2]", "pool = [a * 1, b * 2]").replace(
        "pool = [small, c * 2]", "pool = [small, c * 3]")
    other = muxlang.load(write_spec(spec_text(backend.openai_url, extra=changed), "other.mux"))
    want = muxlang.Session().run(other, RECORDS[:6], mux="nested")
    with serving(spec) as running:
        sdk = client(running)
        got = []
        for record in RECORDS[:6]:
            raw = sdk.chat.completions.with_raw_response.create(
                model="nested", messages=[], extra_body={"mux": {
                    "record": record, "trace": True, "samples": {"a": 1, "c": 3}}})
            got.append((raw.headers, raw.parse()))
        same = sdk.chat.completions.create(model="nested", messages=[], extra_body={
            "mux": {"record": RECORDS[0], "samples": {"c": 2}}})  # the spec's own count
        variants = running.call(lambda: dict(running.server.served["nested"].variants))
    assert_same(want, got)
    assert got[0][1].model_extra["mux"]["samples"]["members"] == {"small": 3, "c": 3}
    assert variants[((("c", 2),), None)] is running.server.served["nested"].runner
    assert same.choices[0].message.content


def settled_on_even(model, prompt, seed):
    """Member a repeats one answer on the even questions (its full budget settles the mux
    there: the others could at most tie, and a wins ties by pool order); otherwise varied."""
    if model == "id-a" and "even" in prompt:
        return "Reasoning about it, id-a says:\n#### 4"
    return varied(model, prompt, seed)


def test_an_adaptive_mux_serves_the_samples_its_policy_drew_as_run_reports_them(write_spec):
    """Under adaptive = exact (the spec's) and delta(p) (mux.adaptive), the trace's
    samples.members is what the policy drew per member, run's `samples`, below the budgets
    where it stopped early, with run's confidence bounds; the totals count the same draws."""
    records = [{"id": i, "question": f"{'even' if i % 2 == 0 else 'odd'} question {i}"}
               for i in range(8)]
    backend = ScriptedServer(answer=settled_on_even).start()
    try:  # one request per sample: the rounds are the policy's alone, whatever ran before
        spec = muxlang.load(write_spec(spec_text(backend.openai_url, backend="n = false",
                                                 mux_extra="adaptive = exact")))
        want = muxlang.Session().run(spec, records)
        loose = replace(spec.muxes["pool"], adaptive="delta(0.2)")
        want_loose = muxlang.Session().run(spec, records, mux=loose)
        with serving(spec) as running:
            got = served(running, "pool", records)
            got_loose = served(running, "pool", records, adaptive="delta(0.2)")
    finally:
        backend.stop()
    assert_same(want, got)
    assert_same(want_loose, got_loose)
    budgets = {"a": 3, "b": 3, "c": 3}
    for result, (_, completion) in [*zip(want, got), *zip(want_loose, got_loose)]:
        samples = completion.model_extra["mux"]["samples"]
        assert samples["members"] == result.samples, result.id
        assert samples["budgets"] == budgets and samples["budget"] == 9
        assert samples["drawn"] == sum(result.samples.values()) and samples["cached"] == 0
    for result, (_, completion) in zip(want[::2], got[::2]):  # the even questions: a settles
        trace = completion.model_extra["mux"]
        assert trace["samples"]["members"] == {"a": 3, "b": 0, "c": 0} == result.samples
        assert trace["confidence_bounds"] == result.confidence_bounds == [1.0, 1.0]
    drawn = [sum(c.model_extra["mux"]["samples"]["members"].values())
             for _, c in [*got, *got_loose]]
    assert min(drawn) < 9 and "drawn" not in got[0][1].model_extra["mux"]
