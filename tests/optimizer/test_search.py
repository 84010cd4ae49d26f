"""Search: the exhaustive mode finds the true optimum; fronts are non-dominated; bounds hold."""
from __future__ import annotations

import itertools

import optuna
import pytest
from opt_helpers import synthetic_votes

from muxlang.errors import MuxError
from muxlang.optimizer.search import Space, dominates, run_search
from muxlang.optimizer.simulator import Config, Simulator


@pytest.fixture(scope="module")
def sim():
    votes = synthetic_votes(n_items=80, n_models=4, k=4, n_answers=3, seed=11,
                            skill=[0.5, 0.62, 0.7, 0.55])
    return Simulator(votes, simulations=8, seed=2)


def _space(sim, budgets=(1, 3), pool=(1, 3), rules=("slm_mux", "majority")):
    return Space(sim.models, {m: budgets for m in sim.models}, pool, list(rules))


def _brute_force(sim, space):
    return {c: sim.score(c) for c in space.enumerate()}


def test_space_size_matches_enumeration(sim):
    for pool in [(1, 1), (2, 3), (1, 4)]:
        space = _space(sim, pool=pool)
        configs = list(space.enumerate())
        assert space.size() == len(configs) == len(set(configs))
        assert all(pool[0] <= len(c.pool) <= pool[1] for c in configs)


def test_exhaustive_finds_true_optimum(sim):
    space = _space(sim)
    truth = _brute_force(sim, space)
    best_value = max(s.accuracy for s in truth.values())
    result = run_search(sim, space, ["accuracy"], trials=10_000, sampler="auto")
    assert result.sampler == "grid"
    assert len(result.trials) == space.size()
    assert result.best.values[0] == best_value
    assert truth[result.best.config].accuracy == best_value


def test_exhaustive_union_contradiction_optimum(sim):
    space = _space(sim, budgets=(2, 2), pool=(2, 4), rules=("slm_mux",))
    truth = _brute_force(sim, space)
    want = max(s.union - 0.5 * s.contradiction for s in truth.values())
    result = run_search(sim, space, ["union_contradiction"], trials=1000, penalty=0.5)
    assert result.best.values[0] == pytest.approx(want)


def test_pareto_front_is_non_dominated_and_complete(sim):
    space = _space(sim, pool=(1, 2))
    result = run_search(sim, space, ["accuracy", "cost"], trials=10_000)
    dirs = result.directions
    front = [r.values for r in result.pareto]
    assert front
    for a, b in itertools.permutations(front, 2):
        assert not dominates(a, b, dirs)
    # exhaustive: every configuration's point is dominated by or equal to a front point
    for config, score in _brute_force(sim, space).items():
        point = (score.accuracy, score.cost)
        assert any(p == point or dominates(p, point, dirs) for p in front)


@pytest.mark.parametrize("sampler,objectives", [("tpe", ["accuracy"]),
                                                ("nsga2", ["accuracy", "cost"])])
def test_model_based_samplers_respect_pool_bounds(sim, sampler, objectives):
    space = _space(sim, pool=(2, 2))
    result = run_search(sim, space, objectives, trials=40, sampler=sampler, seed=1)
    assert result.sampler == sampler
    assert any(not r.feasible for r in result.trials)  # the product space proposes some
    assert result.best is not None and len(result.best.config.pool) == 2
    assert all(len(r.config.pool) == 2 for r in result.pareto)
    assert all(r.feasible for r in result.pareto)


def test_budget_floor_maps_zero_to_out(sim):
    space = Space(["m0", "m1"], {"m0": (2, 3), "m1": (2, 3)}, (1, 2), ["slm_mux"])
    assert space.decode({"m0": 0, "m1": 1}, "slm_mux") == Config((("m1", 2),), "slm_mux")
    assert space.decode({"m0": 2, "m1": 0}, "slm_mux") == Config((("m0", 3),), "slm_mux")


def test_bad_settings_are_user_errors(sim):
    with pytest.raises(MuxError):
        Space(["m0"], {"m0": (1, 2)}, (2, 3), ["slm_mux"])
    with pytest.raises(MuxError):
        run_search(sim, _space(sim), ["speed"])
    with pytest.raises(MuxError):
        run_search(sim, _space(sim), ["accuracy"], sampler="random")


def test_study_resumes_and_counts_all_trials(sim, tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    space = _space(sim)
    first = run_search(sim, space, ["accuracy"], trials=15, sampler="tpe", storage=url,
                       study_name="s", fingerprint={"x": 1})
    assert len(first.trials) == 15
    again = run_search(sim, space, ["accuracy"], trials=25, sampler="tpe", storage=url,
                       study_name="s", fingerprint={"x": 1})
    assert len(again.trials) == 25
    study = optuna.load_study(study_name="s", storage=url)
    assert len(study.trials) == 25
    with pytest.raises(MuxError, match="different"):
        run_search(sim, space, ["accuracy"], trials=30, sampler="tpe", storage=url,
                   study_name="s", fingerprint={"x": 2})


def test_resumed_grid_scores_configurations_of_failed_and_dead_trials(sim, tmp_path):
    """A worker interrupted mid-trial leaves a FAIL trial; one killed leaves a RUNNING trial.
    Resuming must score those configurations too, and not wait for the dead worker."""
    import socket
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'grid.db'}"
    space = _space(sim, budgets=(1, 2), pool=(1, 2), rules=("slm_mux",))
    n = space.size()
    first = run_search(sim, space, ["accuracy"], trials=5, sampler="grid", storage=url,
                       study_name="g")
    assert len(first.trials) == 5
    study = optuna.load_study(study_name="g", storage=url)
    held = {t.params["config"] for t in study.trials}
    free = [i for i in range(n) if i not in held]
    distribution = optuna.distributions.IntDistribution(0, n - 1)
    # Ctrl-C inside a trial: Optuna marks it FAIL
    study.enqueue_trial({"config": free[0]})
    interrupted = study.ask({"config": distribution})
    study.tell(interrupted, state=optuna.trial.TrialState.FAIL)
    # kill -9 inside a trial: it stays RUNNING, tagged with its (now dead) worker
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    study.enqueue_trial({"config": free[1]})
    killed = study.ask({"config": distribution})
    killed.set_user_attr("worker", f"{socket.gethostname()}:{child.pid}")

    again = run_search(sim, space, ["accuracy"], trials=10_000, sampler="grid", storage=url,
                       study_name="g")
    trials = optuna.load_study(study_name="g", storage=url).trials
    complete = {t.params["config"] for t in trials if t.state.name == "COMPLETE"}
    assert complete == set(range(n))  # the failed and the killed configuration included
    assert not [t for t in trials if t.state.name == "RUNNING"]
    assert len({r.config for r in again.trials}) == n  # what the result reports


def test_tied_winner_does_not_depend_on_trial_order(sim, tmp_path):
    """Exhaustive runs walking the grid in different orders (workers sharing a study walk
    per-process orders) report the same winner when several configurations tie."""
    space = Space(sim.models, {m: (1, 4) for m in sim.models}, (1, 1), ["slm_mux", "single"])
    # single and slm_mux of one model score the same: every configuration is tied with another
    winners = {run_search(sim, space, ["accuracy"], trials=10_000, sampler="grid",
                          seed=seed).best.config for seed in range(4)}
    assert len(winners) == 1
