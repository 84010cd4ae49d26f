"""The vectorised simulator against a plain per-item loop through the real stdlib rules."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.optimizer.opt_helpers import synthetic_votes

from muxlang.simulator import (Config, Simulator, plain_correct_per_trial, split_votes,
                                         votes_hash)
from muxlang.stdlib.selection import majority, single, slm_mux
from muxlang.votes import StoredVotes


@pytest.fixture(scope="module")
def sim():
    votes = synthetic_votes(n_items=60, n_models=4, k=5, n_answers=3, seed=3, unreadable=0.15)
    # ragged: one model has fewer samples on some items (padded slots count as unreadable)
    for i in range(0, 60, 7):
        votes.votes["m2"][i] = votes.votes["m2"][i][:2]
    # equal accuracies for two models exercise the index tie-break
    return Simulator(votes, simulations=12, seed=5,
                     accuracies={"m0": 0.7, "m1": 0.7, "m2": None, "m3": 0.6})


CONFIGS = [
    Config.of({"m0": 1}), Config.of({"m0": 3, "m1": 3}), Config.of({"m1": 2, "m0": 4, "m3": 1}),
    Config.of({"m0": 2, "m1": 5, "m2": 3, "m3": 4}), Config.of({"m2": 5, "m3": 2}),
    Config.of({"m0": 1, "m1": 1, "m2": 1, "m3": 1}), Config.of({"m3": 5}),
]


@pytest.mark.parametrize("rule", ["slm_mux", "majority", "single"])
@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_vectorised_equals_plain(sim, config, rule):
    config = Config(config.pool, rule)
    fast = sim.correct_per_trial(config)
    plain = plain_correct_per_trial(sim, config)
    assert fast.tolist() == plain.tolist()


def test_score_fields(sim):
    config = Config.of({"m0": 3, "m3": 2})
    score = sim.score(config)
    per_trial = plain_correct_per_trial(sim, config) / sim.n_items
    assert score.accuracy == pytest.approx(per_trial.mean(), abs=0)
    assert score.se == pytest.approx(per_trial.std(ddof=1) / math.sqrt(len(per_trial)))
    assert 0 <= score.contradiction <= score.union <= 1
    v = sim.votes
    assert score.cost == pytest.approx(3 * v.cost_per_sample("m0") + 2 * v.cost_per_sample("m3"))
    assert score.tokens == pytest.approx(3 * v.tokens_per_sample("m0")
                                         + 2 * v.tokens_per_sample("m3"))


def test_same_seed_same_draws_any_pool(sim):
    # a model's draws do not depend on which other models are in the pool
    a = Simulator(sim.votes, simulations=12, seed=5, models=["m3", "m0"])
    assert np.array_equal(a.draws("m0"), sim.draws("m0"))
    b = Simulator(sim.votes, simulations=12, seed=6)
    assert not np.array_equal(b.draws("m0"), sim.draws("m0"))


def _votes(rows: dict, gold: list) -> StoredVotes:
    return StoredVotes("hand", [f"q{i}" for i in range(len(gold))], list(rows), rows, gold)


def test_union_and_contradiction_by_hand():
    # item 0: a right, b consistently wrong -> union, contradiction
    # item 1: both wrong, inconsistent      -> neither
    # item 2: b right, a unreadable         -> union only
    rows = {"a": [["1", "1"], ["5", "6"], [None, None]],
            "b": [["2", "2"], ["7", "8"], ["3", "3"]]}
    sim = Simulator(_votes(rows, ["1", "2", "3"]), simulations=3, seed=0)
    u, c = sim.union_contradiction(Config.of({"a": 2, "b": 2}))
    assert (u, c) == (pytest.approx(2 / 3), pytest.approx(1 / 3))


def test_full_budget_is_deterministic_and_matches_algorithm_1():
    rows = {"a": [["1", "1", "2"], ["4", "5", "6"]], "b": [["3", "3", "3"], ["9", "9", None]]}
    sim = Simulator(_votes(rows, ["1", "9"]), simulations=5, seed=1,
                    accuracies={"a": 0.9, "b": 0.5})
    score = sim.score(Config.of({"a": 3, "b": 3}))
    # item 0: a 2/3, b 3/3 -> b's "3" (wrong); item 1: a 1/3 (tie -> "4"), b 2/3 -> "9" right
    assert score.accuracy == 0.5 and score.se == 0.0
    assert sim.score(Config.of({"a": 3, "b": 3}, "majority")).accuracy == 0.5


def test_split_is_seeded_and_disjoint():
    votes = synthetic_votes(n_items=50, n_models=2, k=2)
    val, test = split_votes(votes, 0.5, 0)
    assert len(val.items) == 25 and len(test.items) == 25
    assert not set(val.items) & set(test.items)
    again, _ = split_votes(votes, 0.5, 0)
    assert again.items == val.items
    other, _ = split_votes(votes, 0.5, 1)
    assert other.items != val.items
    assert votes_hash(val) != votes_hash(test)


# ---- per record: answer, member and confidence, against the stdlib rules ---------------------
@st.composite
def small_stores(draw):
    """A few items and models with few distinct answers, so within-model and cross-model ties
    are common; some samples unreadable, some items with fewer samples stored."""
    n_models = draw(st.integers(1, 4))
    n_items = draw(st.integers(1, 6))
    k = draw(st.integers(1, 5))
    answer = st.sampled_from(["1", "2", "3"]) | st.none()
    models = [f"m{j}" for j in range(n_models)]
    votes = {m: [draw(st.lists(answer, min_size=k, max_size=k)) for _ in range(n_items)]
             for m in models}
    gold = [draw(st.sampled_from(["1", "2"])) for _ in range(n_items)]
    stored = StoredVotes("h", [f"q{i}" for i in range(n_items)], models, votes, gold)
    budgets = {m: draw(st.integers(1, k)) for m in models}
    accs = {m: draw(st.none() | st.sampled_from([0.4, 0.6, 0.6])) for m in models}
    return stored, budgets, accs


@settings(max_examples=150, deadline=None)
@given(small_stores(), st.sampled_from(["slm_mux", "majority", "single"]), st.booleans(),
       st.integers(0, 3))
def test_outcomes_equal_the_stdlib_rules_record_by_record(store, rule_name, shuffle, seed):
    votes, budgets, accs = store
    sim = Simulator(votes, simulations=3, seed=seed, accuracies=accs, shuffle=shuffle)
    config = Config.of(budgets, rule_name)
    answer, member, confidence = sim.outcomes(config)
    rule = {"slm_mux": slm_mux, "majority": majority, "single": single}[rule_name]
    for t in range(sim.simulations):
        for row, i in enumerate(sim.item_index):
            pool = [[votes.votes[m][i][j] for j in sim.draws(m)[t, row, :b].tolist()]
                    for m, b in config.pool]
            sel = rule(pool, [sim.accuracies.get(m) for m in config.models])
            got = (sim.key_of(row, int(answer[t, row])),
                   None if member[t, row] < 0 else int(member[t, row]),
                   float(confidence[t, row]))
            assert got == (sel.answer, sel.index, sel.confidence)


def test_without_shuffle_every_trial_takes_the_stored_order():
    votes = StoredVotes("d", ["q"], ["m"], {"m": [["b", "a", "a", "b"]]}, ["a"])
    sim = Simulator(votes, simulations=5, shuffle=False)
    answer, _, confidence = sim.outcomes(Config.of({"m": 4}))
    assert {sim.key_of(0, int(c)) for c in answer[:, 0]} == {"b"}  # sampled first, every trial
    assert confidence.tolist() == [[0.5]] * 5


@pytest.mark.parametrize("rule", ["slm_mux", "majority", "single"])
def test_tied_answers_are_each_chosen_half_the_time(rule):
    """No bias between tied answers: over many resampling trials of a member whose samples tie
    two answers (2 of each, any order), each wins 50% ± noise. The smallest-key rule chose "-3"
    (it sorts first) every time."""
    votes = StoredVotes("d", ["q"], ["m"], {"m": [["7", "-3", "7", "-3"]]}, ["7"])
    sim = Simulator(votes, simulations=4000, seed=11)
    answer, _, _ = sim.outcomes(Config.of({"m": 4}, rule))
    share = float(np.mean([sim.key_of(0, int(c)) == "7" for c in answer[:, 0]]))
    assert abs(share - 0.5) < 4 * math.sqrt(0.25 / 4000)  # 4 standard errors
    # and the same through the plain rule on the same draws
    draws = sim.draws("m")[:, 0, :4].tolist()
    plain = [slm_mux([[votes.votes["m"][0][j] for j in d]], [None]).answer for d in draws]
    assert abs(plain.count("7") / len(plain) - 0.5) < 4 * math.sqrt(0.25 / 4000)


# ---- majority by vote walks: caches, resumed walks, shared prefixes, eviction -----------------
@st.composite
def config_sequences(draw):
    """One store and several majority pools over it, in any order (budgets up and down, pool
    orders differing), as a search asks for them."""
    store, _, accs = draw(small_stores())
    models = store.models
    k = min(len(store.votes[m][0]) for m in models)
    configs = []
    for _ in range(draw(st.integers(1, 8))):
        chosen = draw(st.permutations(models))[:draw(st.integers(1, len(models)))]
        configs.append(Config(tuple((m, draw(st.integers(1, k))) for m in chosen), "majority"))
    return store, accs, configs


@pytest.mark.parametrize("walk_bytes", [1, 384 << 20])  # evict at once / keep every walk
@settings(max_examples=60, deadline=None)
@given(config_sequences(), st.booleans())
def test_majority_walks_answer_as_the_stdlib_rule_in_any_order(walk_bytes, sequence, shuffle):
    import muxlang.simulator as simulator

    votes, accs, configs = sequence
    saved = simulator._WALK_BYTES, simulator._PREFIX_BYTES
    simulator._WALK_BYTES = simulator._PREFIX_BYTES = walk_bytes
    try:
        sim = Simulator(votes, simulations=3, seed=1, accuracies=accs, shuffle=shuffle)
        for config in configs:
            answer = sim.answers(config)
            for t in range(sim.simulations):
                for row, i in enumerate(sim.item_index):
                    pool = [[votes.votes[m][i][j] for j in sim.draws(m)[t, row, :b].tolist()]
                            for m, b in config.pool]
                    want = majority(pool, [sim.accuracies.get(m) for m in config.models]).answer
                    assert sim.key_of(row, int(answer[t, row])) == want, (config, t, row)
    finally:
        simulator._WALK_BYTES, simulator._PREFIX_BYTES = saved


def test_a_pool_too_wide_for_packed_keys_is_scored_by_the_plain_rule():
    """Nine members with 100 samples each need 73-bit keys: the rule runs row by row, and
    answers as the stdlib rule does."""
    rng = np.random.default_rng(4)
    models = [f"m{j}" for j in range(9)]
    rows = {m: [[str(v) for v in rng.integers(0, 3, 100)] for _ in range(2)] for m in models}
    votes = StoredVotes("wide", ["q0", "q1"], models, rows, ["1", "2"])
    sim = Simulator(votes, simulations=2, seed=0)
    config = Config.of({m: 100 for m in models}, "majority")
    assert sim.correct_per_trial(config).tolist() == plain_correct_per_trial(sim, config).tolist()
    assert list(sim._chains.values()) == [None]  # no packed walk was possible
    narrow = Config.of({m: 3 for m in models}, "majority")  # fits: budget-wide fields
    assert sim.correct_per_trial(narrow).tolist() == plain_correct_per_trial(sim, narrow).tolist()


@pytest.mark.parametrize("reverse", [False, True])
def test_majority_over_a_whole_grid_in_one_simulator_equals_the_plain_rule(sim, reverse):
    """Every budget pair of a three-member pool, walked up and walked down: walks resume,
    prefixes are built from smaller ones, answers come from caches."""
    fresh = Simulator(sim.votes, simulations=sim.simulations, seed=sim.seed,
                      accuracies=sim.accuracies)
    budgets = [(a, b) for a in range(1, 6) for b in range(1, 6)]
    for a, b in (reversed(budgets) if reverse else budgets):
        config = Config.of({"m3": a, "m0": b, "m1": 2}, "majority")
        assert (fresh.correct_per_trial(config).tolist()
                == plain_correct_per_trial(fresh, config).tolist()), config
