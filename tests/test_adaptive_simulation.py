"""The simulator's ``adaptive = exact`` (every trial and item at once) against the per-record
policy of ``muxlang.semantics``, replayed on the same draws: the samples each member draws agree
row by row, for slm_mux, majority and single, ties by accuracy or by order."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from muxlang import ir, semantics
from muxlang.adaptive_simulation import exact_draws
from muxlang.ir import Call
from muxlang.simulator import Config, Simulator
from muxlang.votes import StoredVotes

ANSWER = st.sampled_from(["1", "2", "3"]) | st.none()


@st.composite
def cases(draw):
    n_models = draw(st.integers(1, 4))
    n_items = draw(st.integers(1, 5))
    k = draw(st.integers(1, 7))
    models = [f"m{j}" for j in range(n_models)]
    votes = {m: [draw(st.lists(ANSWER, min_size=k, max_size=k)) for _ in range(n_items)]
             for m in models}
    gold = [draw(st.sampled_from(["1", "2"])) for _ in range(n_items)]
    stored = StoredVotes("h", [f"q{i}" for i in range(n_items)], models, votes, gold)
    chosen = draw(st.permutations(models))[:draw(st.integers(1, n_models))]
    budgets = [(m, draw(st.integers(1, k))) for m in chosen]
    accs = {m: draw(st.none() | st.sampled_from([0.4, 0.6, 0.6])) for m in models}
    rule = draw(st.sampled_from(["slm_mux", "majority", "single"]))
    return stored, budgets, accs, rule, draw(st.booleans()), draw(st.integers(0, 3))


@settings(max_examples=300, deadline=None)
@given(cases())
def test_exact_draws_equal_the_per_record_policy(case):
    votes, budgets, accs, rule, shuffle, seed = case
    sim = Simulator(votes, simulations=3, seed=seed, accuracies=accs, shuffle=shuffle)
    config = Config(tuple(budgets), rule)
    drawn = exact_draws(sim, config)
    backend = ir.Backend("b", "replay", "")
    pool = [ir.PoolMember(ir.Model(m, backend, m), b) for m, b in budgets]
    mux = ir.Mux("mux", ir.Task("t", "{question}"), pool, Call(rule), adaptive="exact")
    for t in range(sim.simulations):
        for row, i in enumerate(sim.item_index):
            full = [[votes.votes[m][i][j] for j in sim.draws(m)[t, row, :b].tolist()]
                    for m, b in budgets]
            prefixes = semantics.adaptive_prefixes(mux, full, sim.accuracies)
            want = [len(p) for p in prefixes]
            got = drawn[:, t * sim.n_items + row].tolist()
            assert got == want, (t, row, full)


def test_exact_saves_samples_where_a_member_is_sure():
    """Two members, ten samples each, the first unanimous: it draws all ten in the first round
    and nobody can beat 10/10, so the other never draws."""
    votes = StoredVotes("d", ["q"], ["a", "b"], {"a": [["4"] * 10], "b": [["4", "5"] * 5]},
                        ["4"])
    sim = Simulator(votes, simulations=4, seed=0, accuracies={"a": 0.9, "b": 0.5})
    drawn = exact_draws(sim, Config.of({"a": 10, "b": 10}))
    assert drawn.sum(axis=0).tolist() == [10] * 4
    assert np.array_equal(drawn[1], np.zeros(4))


def test_majority_keeps_drawing_while_a_more_trusted_member_could_still_vote_for_the_leader():
    """After the first round "1" leads 4 votes to none with 3 left: the answer is settled, but
    the most trusted member (a, nothing readable yet, one sample left) could still vote for it
    and become the member reported, so the policy draws on; without a, it stops."""
    rows = {"a": [[None, "1"]], "b": [["1", "1", "2"]], "c": [["1", "1", "2"]]}
    votes = StoredVotes("d", ["q"], list(rows), rows, ["1"])
    accs = {"a": 0.9, "b": 0.5, "c": 0.4}
    backend = ir.Backend("b", "replay", "")
    for pool in ({"a": 2, "b": 3, "c": 3}, {"b": 3, "c": 3}):
        sim = Simulator(votes, simulations=1, seed=0, accuracies=accs, shuffle=False)
        config = Config.of(pool, "majority")
        mux = ir.Mux("mux", ir.Task("t", "{question}"),
                     [ir.PoolMember(ir.Model(m, backend, m), b) for m, b in pool.items()],
                     Call("majority"), adaptive="exact")
        prefixes = semantics.adaptive_prefixes(mux, [rows[m][0][:b] for m, b in pool.items()],
                                               sim.accuracies)
        assert exact_draws(sim, config)[:, 0].tolist() == [len(p) for p in prefixes]
    assert [len(p) for p in prefixes] == [2, 2]  # b and c: settled after one round
