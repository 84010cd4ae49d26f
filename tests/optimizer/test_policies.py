"""delta(p) in tune: measured record by record on the winner's pool (optimizer/policies.py).

The record-by-record engine is ``muxlang.semantics``; on the policies the simulator replays
(off, exact) it must agree with the simulator on the same trials, which is what makes its
delta(p) figures comparable with the search's."""
from __future__ import annotations

import numpy as np
import pytest
from opt_helpers import synthetic_votes

from muxlang import ir
from muxlang.adaptive_simulation import exact_draws
from muxlang.ir import Call
from muxlang.optimizer.policies import PolicyFigures, choose, measure, mux_with
from muxlang.simulator import Config, Simulator


@pytest.fixture(scope="module")
def setup():
    votes = synthetic_votes(n_items=40, n_models=3, k=6, n_answers=3, seed=2, unreadable=0.1)
    sim = Simulator(votes, simulations=6, seed=1)
    backend = ir.Backend("b", "replay", "")
    models = {m: ir.Model(m, backend, m) for m in votes.models}
    template = ir.Mux("tuned", ir.Task("t", "{question}"), [], Call("slm_mux"))
    return sim, models, template


@pytest.mark.parametrize("rule", ["slm_mux", "majority", "single"])
@pytest.mark.parametrize("adaptive", ["off", "exact"])
def test_record_by_record_equals_the_simulator_on_the_same_trials(setup, rule, adaptive):
    sim, models, template = setup
    config = Config.of({"m2": 5, "m0": 3, "m1": 6}, rule, adaptive)
    figures = measure(sim, mux_with(template, models, config, adaptive), config, trials=4)
    correct = sim.correct(config)[:4]
    assert figures.accuracy == pytest.approx(correct.mean(axis=1).mean(), abs=1e-12)
    if adaptive == "exact":
        drawn = exact_draws(sim, config).reshape(len(config.pool), sim.simulations, -1)[:, :4]
        assert figures.drawn == pytest.approx(tuple(drawn.mean(axis=(1, 2))), abs=1e-12)
    else:
        assert figures.drawn == tuple(float(b) for _, b in config.pool)


def test_delta_draws_fewer_and_is_chosen_only_without_a_loss(setup):
    sim, models, template = setup
    config = Config.of({"m2": 6, "m1": 6}, "slm_mux")
    own = measure(sim, mux_with(template, models, config, "off"), config, trials=3)
    loose = measure(sim, mux_with(template, models, config, "delta(0.3)"), config, trials=3)
    assert loose.samples < own.samples
    picked = choose(own, [loose])
    assert (picked is loose) == (loose.accuracy >= own.accuracy)
    worse = PolicyFigures("delta(0.5)", own.accuracy - 0.01, 0, 0, (1.0,), 3)
    assert choose(own, [worse]) is None


def test_a_yardstick_that_is_not_listed_is_never_chosen():
    """When the tune block lists only delta(p), the full budget the search scored pools at is
    the yardstick: a listed policy that loses nothing against it and draws fewer wins as ever;
    without one, the most accurate listed policy (then the fewest samples, then list order)."""
    full = PolicyFigures("off", 0.90, 0, 0, (6.0,), 3)
    loose = PolicyFigures("delta(0.3)", 0.80, 0, 0, (2.0,), 3)
    tight = PolicyFigures("delta(0.05)", 0.85, 0, 0, (4.0,), 3)
    same = PolicyFigures("delta(0.04)", 0.85, 0, 0, (4.0,), 3)
    assert choose(full, [loose, tight]) is None  # off listed: kept, both lose accuracy
    assert choose(full, [loose, tight, same], own_listed=False) is tight
    assert choose(full, [loose], own_listed=False) is loose
    assert choose(full, [], own_listed=False) is None
    free = PolicyFigures("delta(0.2)", 0.90, 0, 0, (3.0,), 3)
    assert choose(full, [loose, free, tight], own_listed=False) is free
