"""Adaptive rounds on a server that draws several samples per request (n > 1).

There the prompt is billed once per request, so splitting a member's budget into rounds costs
one more prompt whenever the later round is needed. ``semantics._round`` keeps a split only when
what it leaves for later is more samples than that prompt is worth
(``BackendClient.request_overhead``, measured from the server's usage). These tests run a real
loopback server whose usage counts words: with long prompts and short answers an adaptive mux
must never send more requests or tokens than the full budget; with short prompts and long
answers it still splits and saves samples. The answers never differ from ``adaptive = off``.
"""
from __future__ import annotations

import math

from hypothesis import assume, given, settings
from hypothesis import strategies as st

import muxlang
from muxlang import ir, semantics
from muxlang.ir import Call
from tests.support.scripted_server import ScriptedServer

# per model: the answers of its samples 0..4 (a is split 3-2: the others must be asked)
REPLIES = {"id-a": ["7", "7", "7", "8", "8"], "id-b": ["7", "7", "9", "9", "7"],
           "id-c": ["1", "2", "3", "4", "5"]}


def _spec(url: str, adaptive: str, rule: str) -> muxlang.Spec:
    return muxlang.loads(
        f'backend b {{ kind = openai  url = "{url}/v1"  n = true }}\n'
        'model a { backend = b  id = "id-a"  accuracy = 0.9 }\n'
        'model bb { backend = b  id = "id-b"  accuracy = 0.8 }\n'
        'model c { backend = b  id = "id-c"  accuracy = 0.7 }\n'
        'task t { user = "{question}" }\n'
        f'mux m {{ task = t  pool = [a * 5, bb * 5, c * 5]  rule = {rule}  '
        f'adaptive = {adaptive} }}\n', f"{adaptive}.mux")


def _run(prompt_words: int, answer_words: int, adaptive: str, rule: str, records: int = 4):
    """Run the mux on ``records`` records; per record the answer and member, and what the server
    saw: requests and the tokens its usage reported (prompt + completion)."""
    padding = " ".join(["filler"] * (answer_words - 2))
    server = ScriptedServer(
        answer=lambda model, prompt, seed: f"{padding} #### {REPLIES[model][seed]}".strip())
    server.start()
    try:
        spec = _spec(server.url, adaptive, rule)
        question = " ".join(["word"] * (prompt_words - 1))
        rows = [{"id": i, "question": f"{question} {i}"} for i in range(records)]
        results = muxlang.Session().run(spec, rows)
        sent = [r for r in server.requests if str(r.get("model", "")).startswith("id-")]
    finally:
        server.stop()
    tokens = sum(prompt_words + answer_words * int(r.get("n") or 1) for r in sent)
    return [(r.answer, r.model) for r in results], len(sent), tokens, results


def test_long_prompts_short_answers_never_cost_more_than_the_full_budget():
    for rule in ("slm_mux", "majority", "single"):
        full, full_requests, full_tokens, _ = _run(200, 3, "off", rule)
        fast, requests, tokens, results = _run(200, 3, "exact", rule)
        assert fast == full, rule
        assert requests <= full_requests, rule
        assert tokens <= full_tokens, rule


def test_short_prompts_long_answers_still_split_rounds_and_save_samples():
    full, full_requests, _, _ = _run(2, 60, "off", "slm_mux")
    fast, requests, _, results = _run(2, 60, "exact", "slm_mux")
    assert fast == full
    drawn = sum(sum(r.samples.values()) for r in results)
    assert drawn < 15 * len(results)  # c can never win once a and bb agree: never fully drawn
    assert requests > full_requests  # bb drew in two rounds: splitting was worth a prompt


def test_the_measured_overhead_is_prompt_per_request_over_answer_per_sample():
    server = ScriptedServer(answer=lambda model, prompt, seed: "one two three #### 7").start()
    try:
        spec = _spec(server.url, "off", "slm_mux")
        session = muxlang.Session()
        session.run(spec, [{"id": 0, "question": " ".join(["w"] * 40)}])
        model = spec.models["a"]
        from muxlang.runtime.executor import Runtime

        async def measure() -> tuple[float, float]:
            async with Runtime.for_runnable(spec.muxes["m"]) as runtime:
                client = runtime.client(model)
                before = client.request_overhead(model)
                await runtime.sample(model, [{"role": "user", "content": " ".join(["w"] * 40)}],
                                     [0, 1, 2, 3])
                return before, client.request_overhead(model)

        import asyncio

        before, after = asyncio.run(measure())
    finally:
        server.stop()
    assert before == math.inf  # nothing measured yet: no round is split
    assert after == 40 / 5  # 40 prompt tokens per request, 5 completion tokens per sample


@st.composite
def _pools(draw):
    backend = ir.Backend("b", "openai", "http://127.0.0.1:1/v1")
    n = draw(st.integers(1, 4))
    models = [ir.Model(f"m{j}", backend, f"m{j}", accuracy=draw(st.sampled_from([None, 0.5, 0.7])))
              for j in range(n)]
    budgets = [draw(st.integers(1, 8)) for _ in models]
    rule = draw(st.sampled_from(["slm_mux", "majority", "single"]))
    policy = draw(st.sampled_from(["exact", "delta(0.1)"]))
    mux = ir.Mux("m", ir.Task("t", "{question}"),
                 [ir.PoolMember(m, k) for m, k in zip(models, budgets)], Call(rule),
                 adaptive=policy)
    full = [draw(st.lists(st.sampled_from(["1", "2", None]), min_size=k, max_size=k))
            for k in budgets]
    return mux, full


@settings(max_examples=300, deadline=None)
@given(_pools())
def test_a_prompt_worth_more_than_any_split_means_one_request_per_member(case):
    """With the overhead above every budget, no member is ever asked twice: an adaptive mux
    sends at most the full budget's requests, each for at most its samples (under exact;
    delta(p) keeps its rounds, whose prefixes decide its answer)."""
    mux, full = case
    assume(mux.adaptive == "exact")
    overhead = {i: 100.0 for i in range(len(mux.pool))}
    drawn: list[list] = [[] for _ in full]
    asked = [0] * len(full)
    while want := semantics.next_draws(mux, drawn, {}, None, overhead):
        for i, count in want.items():
            asked[i] += 1
            drawn[i] = full[i][:len(drawn[i]) + count]
    assert all(a <= 1 for a in asked), asked


@settings(max_examples=400, deadline=None)
@given(_pools(), st.sampled_from([0.0, 0.5, 2.0]))
def test_no_member_takes_more_rounds_than_most_rounds_says(case, overhead):
    """``semantics.most_rounds`` bounds the rounds of every rule and policy (``--dry-run``
    counts requests with it)."""
    mux, full = case
    drawn: list[list] = [[] for _ in full]
    asked = [0] * len(full)
    costs = {i: overhead for i in range(len(full))}
    while want := semantics.next_draws(mux, drawn, {}, None, costs):
        for i, count in want.items():
            asked[i] += 1
            drawn[i] = full[i][:len(drawn[i]) + count]
    assert all(a <= semantics.most_rounds(mux, i) for i, a in enumerate(asked)), asked


def test_a_dry_run_counts_the_most_requests_an_adaptive_run_sends(tmp_path):
    """The dry run's requests for an adaptive mux on an n > 1 server bound what the run sends;
    its note says what the figures are."""
    from muxlang.dryrun import run_plan

    server = ScriptedServer(
        answer=lambda model, prompt, seed: f"#### {REPLIES[model][seed]}").start()
    try:
        for rule, policy in (("slm_mux", "exact"), ("majority", "exact"),
                             ("single", "delta(0.2)")):
            spec = _spec(server.url, policy, rule)
            rows = [{"id": i, "question": f"q {i}"} for i in range(3)]
            session = muxlang.Session()
            plan = run_plan(session, spec, rows)
            server.clear_log()
            session.run(spec, rows)
            sent = [r for r in server.requests if str(r.get("model", "")).startswith("id-")]
            assert len(sent) <= plan.backends["b"].requests, (rule, policy)
            assert plan.backends["b"].requests < plan.backends["b"].requests_without_n
            (note,) = [n for n in plan.notes if n.startswith("adaptive")]
            assert note.endswith("requests the most its rounds take"), note
    finally:
        server.stop()


def test_rounds_that_never_settle_stop_being_split_after_a_few_tries():
    """Majority over these replies never settles after the first halves: every split round is
    needed. A run learns it (``runtime/rounds.py``) after a few splits per member, so it costs
    barely more than the full budget; splitting every record (the rule before) cost one more
    prompt per member and record (about a third more tokens here)."""
    full, full_requests, full_tokens, _ = _run(60, 25, "off", "majority", records=80)
    fast, requests, tokens, _ = _run(60, 25, "exact", "majority", records=80)
    assert fast == full
    assert tokens <= 1.10 * full_tokens, (tokens, full_tokens)
    assert requests < 1.5 * full_requests


@settings(max_examples=150, deadline=None)
@given(_pools())
def test_delta_rounds_do_not_depend_on_what_a_request_costs(case):
    """delta(p) may stop on another answer after another prefix: its rounds ignore the
    overhead, so a mux under it answers the same live, served and replayed."""
    mux, full = case
    assume(mux.adaptive != "exact")
    drawn: list[list] = [[] for _ in full]
    while want := semantics.next_draws(mux, drawn, {}, None, None):
        assert semantics.next_draws(mux, drawn, {}, None, {i: 50.0 for i in range(len(full))}) \
            == want
        drawn = [full[i][:len(drawn[i]) + want.get(i, 0)] for i in range(len(full))]
