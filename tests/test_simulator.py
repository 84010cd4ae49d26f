"""The vectorised simulator against a plain per-item loop through the real stdlib rules."""
from __future__ import annotations

import math

import numpy as np
import pytest
from opt_helpers import synthetic_votes

from muxlang.optimizer.simulator import (Config, Simulator, plain_correct_per_trial, split_votes,
                                         votes_hash)
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
