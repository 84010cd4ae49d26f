"""adaptive = exact: the same answer and member as the full budget, for fewer samples.

Property tests over random pools (flat and nested; slm_mux, majority, single; ties by accuracy
and order; cascade steps with thresholds) and random drawn samples: deciding on what the
adaptive policy draws gives the full-budget answer and chosen member, a confidence within the
full-budget bounds, the same side of a cascade threshold, and never more samples.
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from muxlang import ir, semantics
from muxlang.ir import Call

ANSWER = st.sampled_from(["1", "2", "3"]) | st.none()


def _task() -> ir.Task:
    return ir.Task("t", "{question}")


def _backend() -> ir.Backend:
    return ir.Backend("b", "openai", "http://127.0.0.1:1/v1")


@st.composite
def pools(draw):
    n = draw(st.integers(1, 4))
    backend = _backend()
    models = [ir.Model(f"m{j}", backend, f"id-{j}",
                       accuracy=draw(st.none() | st.sampled_from([0.5, 0.7])))
              for j in range(n)]
    budgets = [draw(st.integers(1, 6)) for _ in models]
    rule = draw(st.sampled_from(["slm_mux", "majority", "single"]))
    tie = draw(st.sampled_from(["accuracy", "order"]))
    pool = [ir.PoolMember(m, k) for m, k in zip(models, budgets)]
    nested = None
    if n > 1 and draw(st.booleans()):
        inner = ir.Mux("inner", _task(), pool[:1], Call(draw(st.sampled_from(
            ["slm_mux", "majority", "single"]))),
            accuracy=draw(st.none() | st.sampled_from([0.5, 0.7])))
        pool = [ir.PoolMember(inner, 1), *pool[1:]]
        nested = inner
    mux = ir.Mux("top", _task(), pool, Call(rule), tie, adaptive="exact")
    drawn = {m.name: draw(st.lists(ANSWER, min_size=k, max_size=k))
             for m, k in zip(models, budgets)}
    threshold = draw(st.none() | st.sampled_from([0.4, 0.5, 2 / 3, 1.0]))
    # one more request's cost in samples (a server drawing n > 1 per request; 0: per sample)
    overhead = {m.name: draw(st.sampled_from([0.0, 0.2, 1.0, 2.5, 100.0])) for m in models}
    return mux, drawn, threshold, nested, overhead


def _full(mux: ir.Mux) -> ir.Mux:
    return ir.Mux(mux.name, mux.task, mux.pool, mux.rule, mux.tie_break, adaptive="off")


@settings(max_examples=1500, deadline=None)
@given(pools())
def test_exact_keeps_the_full_budget_answer_and_member(case):
    mux, drawn, threshold, _, overhead = case
    if threshold is None:
        full = semantics.decide(_full(mux), drawn)
        adaptive = semantics.decide(mux, drawn, overhead=overhead)
    else:  # as a cascade step: a second step that always answers "9"
        backend = _backend()
        late_model = ir.Model("late", backend, "id-late")
        drawn = {**drawn, "late": ["9"]}
        late = ir.Mux("late", mux.task, [ir.PoolMember(late_model, 1)])
        full = semantics.decide(ir.Cascade("c", [_full(mux), late], threshold), drawn)
        adaptive = semantics.decide(ir.Cascade("c", [mux, late], threshold), drawn,
                                    overhead=overhead)
    assert adaptive.answer == full.answer
    assert (adaptive.decision.member, adaptive.step) == (full.decision.member, full.step)
    assert sum(adaptive.used.values()) <= sum(full.used.values())
    decision = adaptive.decision
    if decision.member is not None and decision.bounds is not None:
        # the full-budget confidence lies within the reported bounds, as does the one reported
        # over the samples drawn
        low, high = decision.bounds
        assert low <= full.decision.confidence <= high
        assert low <= decision.confidence <= high


@pytest.mark.parametrize("rule", ["slm_mux", "majority", "single"])
def test_a_confident_leader_saves_samples(rule):
    backend = _backend()
    a, b, c = (ir.Model(n, backend, n, accuracy=acc) for n, acc in
               (("a", 0.9), ("b", 0.8), ("c", 0.7)))
    mux = ir.Mux("m", _task(), [ir.PoolMember(a, 5), ir.PoolMember(b, 5), ir.PoolMember(c, 5)],
                 Call(rule), adaptive="exact")
    drawn = {"a": ["7"] * 5, "b": ["7", "8", "7", "8", "7"], "c": ["1", "2", "3", "4", "5"]}
    if rule == "majority":
        drawn["b"], drawn["c"] = ["7"] * 5, ["7", "7", "1", "2", "3"]
    outcome = semantics.decide(mux, drawn)
    full = semantics.decide(_full(mux), drawn)
    assert (outcome.answer, outcome.decision.member) == (full.answer, full.decision.member)
    used = sum(outcome.used.values())
    # slm_mux: a unanimous leader that wins all ties settles it alone; single: a's first 3 of 5
    # (half its budget) agree: the other 2 could at most tie, and a tie goes to the first; majority: after half of each budget, 7 has 8 votes against the 6 not
    # yet cast (and a, its best voter, has drawn all it could change)
    assert used == {"slm_mux": 5, "single": 3, "majority": 9}[rule], outcome.used
    assert sum(full.used.values()) == 15


def test_a_nested_adaptive_mux_is_refused_by_the_checker():
    from muxlang.errors import SpecError
    from muxlang.lang import check_text

    text = ('backend b { kind = openai  url = "http://127.0.0.1:1/v1" }\n'
            'model a { backend = b }\nmodel c { backend = b }\n'
            'task t { user = "{question}" }\n'
            'mux inner { task = t  pool = [a * 3]  adaptive = exact }\n'
            'mux outer { task = t  pool = [inner, c * 3] }\n')
    with pytest.raises(SpecError) as raised:
        check_text(text, "n.mux")
    (diagnostic,) = raised.value.diagnostics
    assert (diagnostic.line, "samples adaptively" in diagnostic.message) == (6, True)


def test_run_draws_fewer_samples_live_and_says_so(tmp_path):
    """Against a loopback server: a unanimous leader that wins all ties is drawn alone (one
    request for its budget), and the output says what was drawn."""
    import muxlang
    from tests.support.scripted_server import ScriptedServer

    server = ScriptedServer().start()
    try:
        server.answer = lambda model, prompt, seed: "#### 7" if model == "id-a" else f"#### {seed}"
        spec = muxlang.loads(
            f'backend b {{ kind = openai  url = "{server.url}/v1" }}\n'
            'model a { backend = b  id = "id-a"  accuracy = 0.9 }\n'
            'model c { backend = b  id = "id-c"  accuracy = 0.5 }\n'
            'task t { user = "{question}" }\n'
            'mux m { task = t  pool = [a * 5, c * 5]  adaptive = exact }\n', "a.mux")
        (result,) = muxlang.Session().run(spec, [{"id": 1, "question": "q"}])
        sent = [r for r in server.requests if r.get("model") in ("id-a", "id-c")]
    finally:
        server.stop()
    assert (result.answer, result.model, result.confidence) == ("7", "a", 1.0)
    assert result.samples == {"a": 5, "c": 0}
    assert [r["model"] for r in sent] == ["id-a"]  # n = 5 in one request; c never asked


def test_delta_is_deterministic_and_stops_earlier_than_exact():
    """delta(p) is seeded by what was drawn: the same samples give the same decision (a replay
    answers as the live run did); on a confident pool it draws fewer samples than exact."""
    import random

    backend = _backend()
    models = [ir.Model(n, backend, n, accuracy=a) for n, a in (("s", 0.8), ("m", 0.6))]
    rnd = random.Random(3)
    exact_used = delta_used = 0
    for _ in range(200):
        drawn = {"s": ["7" if rnd.random() < 0.85 else str(rnd.randrange(3)) for _ in range(8)],
                 "m": ["7" if rnd.random() < 0.6 else str(rnd.randrange(3)) for _ in range(8)]}
        pool = [ir.PoolMember(m, 8) for m in models]
        exact = semantics.decide(ir.Mux("x", _task(), pool, adaptive="exact"), drawn)
        mux = ir.Mux("x", _task(), pool, adaptive="delta(0.05)")
        once, again = semantics.decide(mux, drawn), semantics.decide(mux, drawn)
        assert (once.answer, once.decision.member, once.used) == (
            again.answer, again.decision.member, again.used)
        exact_used += sum(exact.used.values())
        delta_used += sum(once.used.values())
    assert delta_used < exact_used


def test_delta_does_not_stop_on_one_unanimous_sample_of_ten():
    """An answer not seen yet is one answer in the posterior, not a new one per draw: after 1
    sample of 10 the chance another answer overtakes it is large (it was 0 when every unseen
    draw was a distinct answer, and delta(0.001) stopped there), and once the rest can at
    most tie the first answer it is 0."""
    backend = _backend()
    member = ir.PoolMember(ir.Model("x", backend, "x"), 10)
    mux = ir.Mux("m", _task(), [member], adaptive="delta(0.001)")
    assert semantics.change_probability(mux, [["A"]], {}, None) > 0.1
    assert semantics.change_probability(mux, [["A"] * 5], {}, None) == 0.0
    outcome = semantics.decide(mux, {"x": ["A"] + ["B"] * 9})
    assert outcome.answer == "B" and outcome.used["x"] > 1


@pytest.mark.parametrize("value, message", [
    ("delta(2)", "out of range: delta(p) needs 0 < p < 1"),
    ("delta(0.1, 0.2)", "delta takes one number"),
    ("exakt", "expected off, exact or delta(p)"),
])
def test_bad_adaptive_values_are_reported_at_their_place(value, message):
    from muxlang.errors import SpecError
    from muxlang.lang import check_text

    text = ('backend b { kind = openai  url = "http://127.0.0.1:1/v1" }\n'
            'model a { backend = b }\ntask t { user = "{question}" }\n'
            f'mux m {{ task = t  pool = [a * 3]  adaptive = {value} }}\n')
    with pytest.raises(SpecError) as raised:
        check_text(text, "bad.mux")
    (diagnostic,) = raised.value.diagnostics
    assert diagnostic.line == 4 and message in diagnostic.message
