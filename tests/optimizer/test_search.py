"""Search: the exhaustive mode finds the true optimum; fronts are non-dominated; bounds hold."""
from __future__ import annotations

import itertools

import optuna
import pytest
from opt_helpers import synthetic_votes

from muxlang.errors import MuxError
from muxlang.optimizer.search import Space, dominates, run_search
from muxlang.simulator import Config, Simulator


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
    with pytest.raises(MuxError, match=r"was run with x 1 \(this run: 2\); resume it"):
        run_search(sim, space, ["accuracy"], trials=30, sampler="tpe", storage=url,
                   study_name="s", fingerprint={"x": 2})
    with pytest.raises(MuxError, match=r"sampler tpe \(this run: nsga2\) \(sampler auto"):
        run_search(sim, space, ["accuracy"], trials=30, sampler="nsga2", storage=url,
                   study_name="s", fingerprint={"x": 1})


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
    held = {t.params["config"] for t in study.trials if "config" in t.params}
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


def _grid_study(sim, space, url, name):
    from muxlang.optimizer.search import _open_study

    return _open_study(url, name, ["maximize"], optuna.samplers.RandomSampler(seed=0), None,
                       "grid")


def _claim(study, n, index, worker, following):
    """A record another worker wrote: ``index`` scored, ``following`` claimed."""
    study.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.COMPLETE, values=[0.0], params={"config": index},
        distributions={"config": optuna.distributions.IntDistribution(0, n - 1)},
        user_attrs={"pool": {}, "score": {"accuracy": 0.0},
                    "claim": {"worker": worker, "next": following}}))


def test_grid_trials_are_written_whole_and_claim_the_next(sim, tmp_path):
    """An exhaustive run writes one COMPLETE trial per configuration: its index, values, pool
    and score in one go; the first of each batch claims the indices its worker scores next."""
    url = f"sqlite:///{tmp_path / 'walk.db'}"
    space = _space(sim, budgets=(1, 2), pool=(1, 2), rules=("slm_mux",))
    n = space.size()
    result = run_search(sim, space, ["accuracy"], trials=10_000, sampler="grid", storage=url,
                        study_name="w")
    everything = optuna.load_study(study_name="w", storage=url).trials
    # first the FAIL trial claiming the worker's first batch (no parameters: it counts nothing)
    assert everything[0].state.name == "FAIL" and everything[0].params == {}
    first = everything[0].user_attrs["claim"]["next"]
    trials = everything[1:]
    assert [t.state.name for t in trials] == ["COMPLETE"] * n
    assert first == [trials[0].params["config"]]
    assert sorted(t.params["config"] for t in trials) == list(range(n))
    grid = list(space.enumerate())
    for t in trials:
        assert t.user_attrs["pool"] == grid[t.params["config"]].as_dict()
        assert t.values == [t.user_attrs["score"]["accuracy"]]
    # batches: the first record of each claims the rest of it and the next batch, which are
    # the configurations written after it, in order; the last claim reaches the end
    configs = [t.params["config"] for t in trials]
    claims = [(k, t.user_attrs["claim"]["next"]) for k, t in enumerate(trials)
              if "claim" in t.user_attrs]
    assert claims[0][0] == 0 and 1 < len(claims) < n
    for (k, claimed), (k_next, _) in zip(claims, claims[1:]):
        assert claimed == configs[k + 1:k + 1 + len(claimed)] and k + len(claimed) >= k_next
    assert claims[-1][1] == configs[claims[-1][0] + 1:]
    memory = run_search(sim, space, ["accuracy"], trials=10_000, sampler="grid")
    assert result.best.config == memory.best.config
    assert [r.values for r in sorted(result.trials, key=lambda r: r.rank)] == \
        [r.values for r in sorted(memory.trials, key=lambda r: r.rank)]


def test_grid_walk_leaves_claimed_configurations_to_live_workers(sim, tmp_path):
    """A configuration another live worker has claimed is not scored here while the claim
    holds; it is once the claim goes stale (a worker elsewhere that stopped writing), and at
    once when the claiming process on this host is dead."""
    import socket
    import subprocess
    import sys

    from muxlang.optimizer.grid import GridWalk

    url = f"sqlite:///{tmp_path / 'claims.db'}"
    space = _space(sim, budgets=(1, 2), pool=(1, 2), rules=("slm_mux",))
    grid = list(space.enumerate())
    n = len(grid)
    study = _grid_study(sim, space, url, "c")
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    _claim(study, n, 0, "elsewhere:1", 1)  # a live-looking worker on another host holds 1
    _claim(study, n, 2, f"{socket.gethostname()}:{child.pid}", 3)  # a dead one here held 3
    scored = []

    def evaluate(config):
        scored.append(grid.index(config))
        return [0.5], {"pool": config.as_dict(), "score": {"accuracy": 0.5}}

    # the other worker stays silent: its claim goes stale only once everything else is scored
    # (a clock that stands still until then: no race with how fast this machine scores)
    def clock():
        return 0.0 if len(scored) < n - 3 else 100.0

    walk = GridWalk(study, grid, n, seed=3, shared=True, stale_after=0.5, patience=30, poll=0.05,
                    clock=clock)
    walk.run(evaluate)
    assert 3 in scored and scored[-1] == 1
    assert sorted(scored) == [i for i in range(n) if i not in (0, 2)]
    done = [t.params["config"] for t in study.trials if t.state.name == "COMPLETE"]
    assert sorted(done) == list(range(n))


def test_grid_walk_gives_up_a_configuration_claimed_first_elsewhere(sim, tmp_path):
    """Two workers that claimed the same configuration: the later claim (higher trial number)
    gives way, so the configuration is written once."""
    import os
    import socket

    from muxlang.optimizer.grid import GridWalk

    url = f"sqlite:///{tmp_path / 'race.db'}"
    space = _space(sim, budgets=(1, 2), pool=(1, 2), rules=("slm_mux",))
    grid = list(space.enumerate())
    n = len(grid)
    study = _grid_study(sim, space, url, "r")
    walk = GridWalk(study, grid, n, seed=0, shared=True, stale_after=1e9, patience=30, poll=0.05)
    target = walk.order[0]  # this walk's first pick
    calls = []
    other = None

    picked = walk.pick

    def pick(held, count, exclude=()):
        """The first pick races: another worker (this host, alive) claims it between this
        walk's look and its own claim, so its claim is the earlier one."""
        nonlocal other
        out = picked(held, count, exclude)
        if other is None:
            other = next(i for i in range(n) if i != target)
            _claim(study, n, other, f"{socket.gethostname()}:1", target)
        return out

    walk.pick = pick

    def evaluate(config):
        calls.append(grid.index(config))
        if len(calls) == 3:  # this walk claimed calls[2] (with calls[1]): a later claim
            later = next(i for i in range(n) if i not in (target, other, *calls))  # gives way
            _claim(study, n, later, f"{socket.gethostname()}:{os.getppid()}", calls[2])
        return [0.5], {"pool": config.as_dict(), "score": {"accuracy": 0.5}}

    def finish_for_the_other():  # the other worker writes its claimed configuration
        _claim(study, n, target, f"{socket.gethostname()}:1", None)

    # pid 1 is alive; after walking everything else this walk waits for index ``target``
    import threading

    threading.Timer(1.0, finish_for_the_other).start()
    walk.run(evaluate)
    counts = {}
    for t in study.trials:
        if t.state == optuna.trial.TrialState.COMPLETE:
            counts[t.params["config"]] = counts.get(t.params["config"], 0) + 1
    assert set(counts.values()) == {1} and sorted(counts) == list(range(n))
    assert calls[0] == target and target not in calls[1:]


def test_budgets_stop_at_the_samples_stored_on_every_item():
    from muxlang.lang import check_text
    from muxlang.simulator import Simulator
    from muxlang.optimizer.tuning import build_space

    votes = synthetic_votes(n_items=40, n_models=2, k=5, seed=3)
    for i in range(0, 40, 2):  # m0: 5 samples on half the items, 3 on the others
        votes.votes["m0"][i] = votes.votes["m0"][i][:3]
    spec = check_text("""
backend b { kind = replay }
model m0 { backend = b }
model m1 { backend = b }
task t { user = "{question}" }
mux x { task = t  pool = [m0 * 1, m1 * 1] }
tune s { mux = x  samples = 0..5 }
""", "t.mux")
    warnings: list[str] = []
    space = build_space(spec.tunes["s"], Simulator(votes, 4, 0), warnings.append)
    assert space.budgets["m0"] == (1, 3) and space.budgets["m1"] == (1, 5)
    assert any("m0 (3 on every item, up to 5 on some)" in w for w in warnings)


# ---- cost without prices, cheaper ties, max_samples -------------------------------------------
def _twins() -> Simulator:
    """Two models that always agree and are always right: every configuration is as accurate."""
    from muxlang.votes import StoredVotes

    votes = StoredVotes("twins", ["q0", "q1"], ["a", "b"],
                        {"a": [["1"] * 4, ["2"] * 4], "b": [["1"] * 4, ["2"] * 4]}, ["1", "2"])
    return Simulator(votes, simulations=2, seed=0)


def test_without_prices_or_tokens_cost_counts_samples():
    sim = _twins()
    assert sim.cost_unit == "samples"
    score = sim.score(Config.of({"a": 3, "b": 2}))
    assert (score.cost, score.samples, score.spend) == (0.0, 5, 5.0)
    assert score.objective("cost") == 5.0 and score.objective("samples") == 5.0
    sim.votes.output_tokens.update({"a": 100.0, "b": 50.0})
    priced = Simulator(sim.votes, simulations=2, seed=0)
    assert priced.cost_unit == "tokens"
    assert priced.score(Config.of({"a": 3, "b": 2})).spend == 3 * 100 + 2 * 50


def test_accuracy_ties_go_to_the_cheaper_configuration():
    # every pool is 100% right: the winner is the one with the fewest samples (not the largest)
    sim = _twins()
    space = Space(["a", "b"], {"a": (1, 4), "b": (1, 4)}, (1, 2), ["slm_mux", "majority"])
    result = run_search(sim, space, ["accuracy"], trials=100, sampler="grid")
    assert sum(b for _, b in result.best.config.pool) == 1


def test_max_samples_bounds_the_pool_and_the_count():
    sim = _twins()
    space = Space(["a", "b"], {"a": (1, 4), "b": (1, 4)}, (1, 2), ["slm_mux"], max_samples=5)
    configs = list(space.enumerate())
    assert space.size() == len(configs) == 8 + 10  # alone: 4 + 4; pairs summing to <= 5: 10
    assert all(sum(b for _, b in c.pool) <= 5 for c in configs)
    assert space.violation(Config.of({"a": 4, "b": 4})) == 3.0
    for sampler in ("grid", "tpe"):
        result = run_search(sim, space, ["accuracy", "samples"], trials=30, sampler=sampler)
        assert result.pareto and all(sum(b for _, b in r.config.pool) <= 5 for r in result.pareto)


@pytest.mark.parametrize("sampler,objectives", [("tpe", ["accuracy"]),
                                                ("nsga2", ["accuracy", "cost"])])
def test_a_sampled_search_tries_every_candidate_alone_first(sim, sampler, objectives):
    """The single models tune reports as baselines are searched too: a sampled best can
    never lose to one of them unseen (a crux-o tune once chose five models at 54.75 % where
    gemma2-27b alone scored 54.75 % with one sample)."""
    space = _space(sim, budgets=(1, 3), pool=(1, 3))
    result = run_search(sim, space, objectives, trials=30, sampler=sampler, seed=3)
    first = [r.config for r in sorted(result.trials, key=lambda r: r.number)[:len(sim.models)]]
    assert first == [Config(((m, 3),), "slm_mux") for m in sim.models]
    best_single = max(sim.score(c).accuracy for c in first)
    assert result.best.values[0] >= best_single


def test_the_summary_says_cost_in_the_unit_the_objective_counted():
    """With no prices, no reported cost and no token counts, a cost in USD reads 0 for every
    pool: the summary says samples per item, as the cost objective counted them."""
    import io

    from muxlang.lang import check_text
    from muxlang.optimizer.tuning import Options, render_text, tune_votes

    sim = _twins()
    spec = check_text("""
backend r { kind = replay }
model a { backend = r }
model b { backend = r }
task t { user = "{question}" }
mux x { task = t  pool = [a * 1, b * 1] }
tune s { mux = x  samples = 1..4  objectives = [accuracy, cost] }
""", "t.mux")
    result = tune_votes(spec, spec.tunes["s"], sim.votes, None, Options(simulations=2))
    out = io.StringIO()
    render_text(result, out)
    assert result.cost_unit == "samples"
    assert "  cost 1 sample/item (no prices, no token counts)," in out.getvalue()
    assert "USD" not in out.getvalue()
