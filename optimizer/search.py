"""Search pools, per-model sample budgets and the selection rule with Optuna.

The search space: per candidate model a budget, 0 (left out) or ``low..high`` samples; the number
of models in the pool within ``pool_size``; the rule one of ``rules``. Objectives: ``accuracy``
(maximise), ``union_contradiction`` (UnionAcc − λ·Contradiction, maximise), ``cost`` (minimise).

* Exhaustive when the space is small (``sampler="auto"`` and at most ``trials`` configurations, or
  ``sampler="grid"``): the feasible configurations are enumerated in a fixed order and
  ``GridWalk`` scores them by index, one COMPLETE trial each, so infeasible pools are never
  proposed and several workers sharing one study split them.
* Otherwise TPE (one objective) or NSGA-II (several) over one integer per candidate and a
  categorical rule. A pool outside ``pool_size`` cannot be ruled out by that space, so such trials
  complete with a positive constraint value (``constraints_func``): both samplers rank them below
  every feasible trial, and they never become the best or enter the Pareto front.

``run_search`` returns a ``SearchResult`` with the best feasible configuration and the Pareto set.
"""
from __future__ import annotations

import itertools
import json
import logging
import math
import os
import random
import time
import socket
import warnings
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import optuna

from muxlang.errors import MuxError
from muxlang.optimizer.simulator import RULES, Config, Score, Simulator

WORKER = f"{socket.gethostname()}:{os.getpid()}"
_DONE_STATES = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
OBJECTIVES = {"accuracy": "maximize", "union_contradiction": "maximize", "cost": "minimize"}
SAMPLERS = ("auto", "grid", "tpe", "nsga2")


class _InterruptWithoutTraceback(logging.Filter):
    """Ctrl-C inside a trial: Optuna logs "Trial N failed ... KeyboardInterrupt()" with the whole
    traceback (often deep inside the database driver) before re-raising it, and the CLI then says
    "interrupted" (and how to resume). Drop Optuna's record: the user pressed Ctrl-C, nothing
    failed."""

    interrupted = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):
            self.interrupted = True
            return False
        # then Optuna says the trial "failed with value None": it did not fail, it was stopped
        return not (self.interrupted and "failed with value None" in record.getMessage())


# Optuna logs failed trials from this module; a logger's filter sees the records it creates
logging.getLogger("optuna.study._optimize").addFilter(_InterruptWithoutTraceback())


@dataclass
class Space:
    candidates: list[str]
    budgets: dict[str, tuple[int, int]]  # candidate -> (low, high), low >= 1; 0 is always allowed
    pool_size: tuple[int, int]
    rules: list[str]

    def __post_init__(self) -> None:
        if not self.candidates:
            raise MuxError("the tune block has no candidates")
        for rule in self.rules:
            if rule not in RULES:
                raise MuxError(f"unknown selection rule '{rule}' in rules",)
        lo, hi = self.pool_size
        hi = min(hi, len(self.candidates))
        if lo < 1:
            lo = 1
        if lo > hi:
            raise MuxError(f"pool_size {self.pool_size[0]}..{self.pool_size[1]} cannot be met with "
                           f"{len(self.candidates)} candidates")
        self.pool_size = (lo, hi)
        for m, (b_lo, b_hi) in self.budgets.items():
            if b_lo > b_hi:
                raise MuxError(f"no budget is possible for '{m}': {b_lo}..{b_hi}")

    def n_budgets(self, model: str) -> int:
        lo, hi = self.budgets[model]
        return hi - lo + 1

    def size(self) -> int:
        """Number of feasible configurations (pools × budgets × rules), without enumerating."""
        # dp[j] = weighted count of ways to pick j models so far
        lo, hi = self.pool_size
        dp = [1] + [0] * hi
        for m in self.candidates:
            w = self.n_budgets(m)
            for j in range(hi, 0, -1):
                dp[j] += dp[j - 1] * w
        return sum(dp[lo:hi + 1]) * len(self.rules)

    def enumerate(self) -> Iterator[Config]:
        """Every feasible configuration, in a fixed order (rule, pool size, subset, budgets)."""
        lo, hi = self.pool_size
        for rule in self.rules:
            for size in range(lo, hi + 1):
                for subset in itertools.combinations(self.candidates, size):
                    ranges = [range(self.budgets[m][0], self.budgets[m][1] + 1) for m in subset]
                    for budgets in itertools.product(*ranges):
                        yield Config(tuple(zip(subset, budgets)), rule)

    def decode(self, raw: dict[str, int], rule: str) -> Config:
        """Optuna params (0 = out, v ≥ 1 = low + v − 1) → a Config in candidate order."""
        pool = []
        for m in self.candidates:
            v = raw.get(m, 0)
            if v > 0:
                pool.append((m, self.budgets[m][0] + v - 1))
        return Config(tuple(pool), rule)

    def violation(self, config: Config) -> float:
        n = len(config.pool)
        lo, hi = self.pool_size
        return float(max(lo - n, n - hi, 0))


@dataclass
class TrialRecord:
    number: int
    config: Config
    values: tuple[float, ...]
    score: dict
    feasible: bool = True
    # ties between equal objective values go to the lowest ``rank``: the configuration's index
    # in the enumerated grid when there is one (the same whatever order workers took them in),
    # else the trial number
    rank: int | None = None

    @property
    def tie_rank(self) -> int:
        return self.number if self.rank is None else self.rank


@dataclass
class SearchResult:
    objectives: list[str]
    directions: list[str]
    best: TrialRecord | None
    pareto: list[TrialRecord]
    trials: list[TrialRecord]
    sampler: str
    space_size: int
    study_name: str | None = None

    def summary(self) -> dict:
        return {"objectives": self.objectives, "sampler": self.sampler,
                "space_size": self.space_size, "trials": len(self.trials)}


def _param_name(model: str) -> str:
    return f"b:{model}"


def config_attrs(config: Config, score: Score) -> dict:
    return {"pool": config.as_dict(), "pool_order": config.models, "rule": config.rule,
            "score": {k: v for k, v in score.as_dict().items()}}


class Objective:
    """The Optuna objective: suggest a configuration, simulate it, record it on the trial."""

    def __init__(self, sim: Simulator, space: Space, objectives: Sequence[str], penalty: float,
                 grid: list[Config] | None):
        self.sim, self.space, self.objectives, self.penalty = sim, space, list(objectives), penalty
        self.grid = grid

    def suggest(self, trial: optuna.Trial) -> Config:
        if self.grid is not None:
            return self.grid[trial.suggest_int("config", 0, len(self.grid) - 1)]
        rule = (trial.suggest_categorical("rule", list(self.space.rules))
                if len(self.space.rules) > 1 else self.space.rules[0])
        raw = {m: trial.suggest_int(_param_name(m), 0, self.space.n_budgets(m))
               for m in self.space.candidates}
        return self.space.decode(raw, rule)

    def evaluate(self, config: Config) -> tuple[list[float], Score]:
        want_union = "union_contradiction" in self.objectives
        if config.pool:
            score = self.sim.score(config, with_union=want_union)
        else:
            score = Score(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, self.sim.n_items, self.sim.simulations)
        return [score.objective(name, self.penalty) for name in self.objectives], score

    def __call__(self, trial: optuna.Trial):
        # first, so a worker that dies mid-trial can be recognised (``fail_dead_workers``)
        trial.set_user_attr("worker", WORKER)
        config = self.suggest(trial)
        violation = self.space.violation(config)
        values, score = self.evaluate(config)
        for key, value in config_attrs(config, score).items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("constraint", [violation])
        trial.set_constraint("pool_size", violation)
        return values[0] if len(values) == 1 else tuple(values)


class GridWalk:
    """Score every configuration of the enumerated grid (or ``target`` of them) into the study,
    one COMPLETE trial per configuration, shared with other workers walking the same study.

    A configuration is scored first and then written in one go (``Study.add_trial``: the grid
    index as the ``config`` parameter, the objective values and the ``pool`` and ``score``
    attributes in one transaction). Asking Optuna for a trial instead and setting its parameter,
    each attribute and its state cost ~20 database transactions per configuration, and that was
    nearly all the time of an exhaustive search on PostgreSQL.

    Workers sharing a study do not write a configuration twice, without keeping a RUNNING trial
    per configuration: they work in batches, and the first record of a batch also claims the
    rest of that batch (until written) and the batch the worker scores next (attribute ``claim`` = {"worker": host:pid, "next": [index,
    ...]}; a worker's newest claim replaces its older ones). Before picking, a worker reads the
    trials added since its last look (Optuna's cached storage fetches only those) and skips the
    indices that are done or claimed by another live worker; after scoring a batch it looks
    again and gives up each configuration that another worker has written meanwhile or claimed
    in an earlier trial (trial numbers order the claims). Only a worker's first configuration
    (and the batch after one it gave up entirely) is not claimed in advance: two workers can
    race for those, rarely. Batches start at one configuration and grow while a batch takes
    under ``batch_seconds``, up to ``max_batch``.

    A claim stops holding when its worker is gone: at once for a dead process on this host,
    after ``stale_after`` seconds without a new claim from it for a worker elsewhere. A FAILED
    trial frees its index; a RUNNING one (a worker of an older muxlang) holds it while it runs.
    Indices are walked in a seeded random order (per process when shared, so workers rarely
    meet). The walk ends when ``target`` configurations are done (counting earlier runs': a
    resumed study does only what is left) and no other worker still holds one, or after
    ``patience`` seconds without progress (trials stuck RUNNING in a worker that died elsewhere
    without heartbeats)."""

    def __init__(self, study: optuna.Study, grid: Sequence[Config], target: int, seed: int = 0,
                 shared: bool = False, stale_after: float = 60.0, patience: float = 90.0,
                 poll: float = 0.2, max_batch: int = 64, batch_seconds: float = 1.0):
        import numpy as np

        self.study, self.grid, self.n = study, grid, len(grid)
        self.target = min(target, self.n)
        key = [seed, os.getpid()] if shared else [seed]
        self.order = np.random.default_rng(key).permutation(self.n).tolist()
        self.position = 0  # order[:position] are done or in ``passed``
        self.passed: set[int] = set()  # walked past while someone else held them
        self.done: set[int] = set()  # indices with a COMPLETE/PRUNED trial
        self.running: set[int] = set()  # indices of unfinished trials
        self.scan_from = 0  # trials before this position are finished and counted
        # worker -> (number of the trial that made its newest claim, the indices claimed)
        self.claims: dict[str, tuple[int, tuple[int, ...]]] = {}
        self.claim_since: dict[str, float] = {}  # worker -> when a claim of it was last seen
        self.stale_after, self.patience, self.poll = stale_after, patience, poll
        self.max_batch, self.batch_seconds = max_batch, batch_seconds
        self.host = socket.gethostname()
        self.distribution = optuna.distributions.IntDistribution(0, self.n - 1)

    def refresh(self) -> None:
        trials = self.study.get_trials(deepcopy=False)
        now = time.monotonic()
        running: set[int] = set()
        settled = True
        for position in range(self.scan_from, len(trials)):
            t = trials[position]
            value = t.params.get("config")
            finished = t.state.is_finished()
            if value is not None:
                if t.state in _DONE_STATES:
                    self.done.add(int(value))
                elif not finished:
                    running.add(int(value))
                # FAIL: the configuration was never scored; it is free to take again
            claim = t.user_attrs.get("claim") if finished else None
            if isinstance(claim, dict) and "worker" in claim:
                worker, raw = str(claim["worker"]), claim.get("next")
                following = tuple(int(i) for i in (
                    () if raw is None else raw if isinstance(raw, (list, tuple)) else [raw]))
                if worker not in self.claims or t.number > self.claims[worker][0]:
                    self.claims[worker] = (t.number, following)
                    self.claim_since[worker] = now
            if settled and finished:
                self.scan_from = position + 1
            else:
                settled = False
        self.running = running

    def _gone(self, worker: str, now: float) -> bool:
        owner, _, pid = worker.rpartition(":")
        if owner == self.host and pid.isdigit():
            return not _alive(int(pid))
        return now - self.claim_since.get(worker, now) > self.stale_after

    def held(self) -> dict[int, int]:
        """Indices other live workers hold: index -> trial number of the claim (-1: RUNNING)."""
        now = time.monotonic()
        out = {i: -1 for i in self.running}
        for worker, (number, indices) in self.claims.items():
            if worker == WORKER or not indices or self._gone(worker, now):
                continue
            for index in indices:
                if index not in self.done:
                    out[index] = min(number, out.get(index, number))
        return out

    def pick(self, held: dict[int, int], count: int, exclude: Iterable[int] = ()) -> list[int]:
        """Up to ``count`` free indices, ``exclude`` (held by this worker) left out."""
        exclude = set(exclude)
        count = min(count, self._room(held, exclude))
        out: list[int] = []
        for index in sorted(self.passed):  # held by others before: free again?
            if len(out) >= count:
                return out
            if index in self.done:
                self.passed.discard(index)
            elif index not in held and index not in exclude:
                self.passed.discard(index)
                out.append(index)
        while len(out) < count and self.position < self.n:
            index = self.order[self.position]
            self.position += 1
            if index in self.done:
                continue
            if index in held or index in exclude:
                self.passed.add(index)
                continue
            out.append(index)
        return out

    def _room(self, held: dict[int, int], mine: Iterable[int]) -> int:
        """How many more configurations may be started, besides ``mine`` (this worker's)?"""
        busy = {i for i in held if i not in self.done}
        busy.update(i for i in mine if i not in self.done)
        return max(0, self.target - len(self.done) - len(busy))

    def run(self, evaluate: Callable[[Config], tuple[list[float], dict]],
            callbacks: Sequence[Callable] = ()) -> None:
        self.refresh()
        batch = self.pick(self.held(), 1)  # the first pick is not claimed
        size = 1
        last_progress, last_done, last_reap = time.monotonic(), len(self.done), 0.0
        cycle = time.monotonic()  # since the last claim was decided: writes, scoring, look
        while True:
            if not batch:  # nothing free: done, or the rest is held by other workers
                held = self.held()
                if len(self.done) >= self.target and not set(held) - self.done:
                    return
                now = time.monotonic()
                if len(self.done) != last_done:
                    last_progress, last_done = now, len(self.done)
                elif now - last_progress > self.patience:
                    return  # only trials stuck RUNNING in workers that died elsewhere are left
                if self.running and now - last_reap > 5.0:
                    fail_dead_workers(self.study)
                    last_reap = now
                time.sleep(self.poll)
                self.refresh()
                batch, size = self.pick(self.held(), 1), 1
                cycle = time.monotonic()
                continue
            results = [(index, *evaluate(self.grid[index])) for index in batch]
            self.refresh()
            held = self.held()
            number, claimed = self.claims.get(WORKER, (None, ()))
            keep = []
            for index, values, attrs in results:
                if index in self.done:
                    continue  # another worker wrote it meanwhile
                if index in held and (index not in claimed or held[index] < number):
                    self.passed.add(index)  # claimed first elsewhere: theirs
                    continue
                keep.append((index, values, attrs))
            # a batch takes about ``batch_seconds`` at most, so a worker claims again that often
            now = time.monotonic()
            size = (min(size * 2, self.max_batch) if now - cycle < self.batch_seconds
                    else max(1, size // 2))
            cycle = now
            following = self.pick(held, size if keep else 1, exclude=[i for i, _, _ in keep])
            for position, (index, values, attrs) in enumerate(keep):
                if position == 0:  # holds the rest of this batch until written, and the next
                    attrs = {**attrs, "claim": {"worker": WORKER, "next": [
                        i for i, _, _ in keep[1:]] + following}}
                trial = optuna.trial.create_trial(
                    state=optuna.trial.TrialState.COMPLETE, values=values,
                    params={"config": index}, distributions={"config": self.distribution},
                    user_attrs=attrs)
                self.study.add_trial(trial)
                self.done.add(index)
                for callback in callbacks:
                    callback(self.study, trial)
            batch = following


def make_sampler(kind: str, n_objectives: int, seed: int, grid_size: int | None,
                 shared: bool = False):
    if kind == "grid":  # the configurations are walked by ``GridWalk``, not sampled
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=10, multivariate=True)
    if kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    raise MuxError(f"unknown sampler '{kind}' (one of {', '.join(SAMPLERS)})")


def choose_sampler(kind: str, space_size: int, trials: int, n_objectives: int) -> str:
    if kind not in SAMPLERS:
        raise MuxError(f"unknown sampler '{kind}' (one of {', '.join(SAMPLERS)})")
    if kind != "auto":
        return kind
    if space_size <= trials:
        return "grid"
    return "tpe" if n_objectives == 1 else "nsga2"


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """True when ``a`` is at least as good as ``b`` everywhere and better somewhere."""
    better = False
    for x, y, d in zip(a, b, directions):
        if d == "minimize":
            x, y = -x, -y
        if x < y:
            return False
        if x > y:
            better = True
    return better


def pareto_front(records: Sequence[TrialRecord], directions: Sequence[str]) -> list[TrialRecord]:
    """Non-dominated records, one per distinct configuration, sorted by the first objective."""
    unique: dict[Config, TrialRecord] = {}
    for r in records:
        unique.setdefault(r.config, r)
    rs = list(unique.values())
    sign = -1 if directions[0] == "maximize" else 1
    if len(directions) == 1:
        best = min((sign * r.values[0] for r in rs), default=None)
        front = [r for r in rs if sign * r.values[0] == best]
    elif len(directions) == 2:
        # sweep: by the first objective (best first, ties by the second), keep strict improvers
        sign2 = -1 if directions[1] == "maximize" else 1
        ordered = sorted(rs, key=lambda r: (sign * r.values[0], sign2 * r.values[1]))
        front, best2, best1 = [], None, None
        for r in ordered:
            v1, v2 = sign * r.values[0], sign2 * r.values[1]
            if best2 is None or v2 < best2 or (v2 == best2 and v1 == best1):
                front.append(r)
                if best2 is None or v2 < best2:
                    best2, best1 = v2, v1
    else:
        front = [r for r in rs if not any(dominates(o.values, r.values, directions) for o in rs)]
    front.sort(key=lambda r: (sign * r.values[0], r.tie_rank))
    # equal objective vectors: keep the cheapest/first one only
    seen, out = set(), []
    for r in front:
        if r.values not in seen:
            seen.add(r.values)
            out.append(r)
    return out


def _rank_key(r: TrialRecord, directions: Sequence[str]):
    return tuple((-v if d == "maximize" else v) for v, d in zip(r.values, directions)) + (
        r.score.get("cost", 0.0), len(r.config.pool), r.tie_rank)


def records_from_study(study: optuna.Study,
                       grid: Sequence[Config] | None = None) -> list[TrialRecord]:
    """One record per COMPLETE trial: its configuration is the grid entry of its ``config``
    parameter (exhaustive searches store only the index, the pool and the score), else the
    ``pool_order``/``pool``/``rule`` attributes."""
    out = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        attrs = t.user_attrs
        index = t.params.get("config")
        if grid is not None and index is not None and 0 <= int(index) < len(grid):
            config = grid[int(index)]
        elif "pool_order" in attrs:
            pool = tuple((m, int(attrs["pool"][m])) for m in attrs["pool_order"])
            config = Config(pool, attrs["rule"])
        else:
            continue
        feasible = all(c <= 0 for c in attrs.get("constraint", [0.0]))
        values = tuple(t.values) if t.values is not None else ()
        out.append(TrialRecord(t.number, config, values, attrs.get("score", {}), feasible,
                               None if index is None else int(index)))
    return out


def summarise(study: optuna.Study, objectives: Sequence[str], sampler: str,
              space_size: int, grid: Sequence[Config] | None = None) -> SearchResult:
    directions = [OBJECTIVES[o] for o in objectives]
    records = records_from_study(study, grid)
    feasible = [r for r in records if r.feasible and r.config.pool]
    best = min(feasible, key=lambda r: _rank_key(r, directions)) if feasible else None
    front = pareto_front(feasible, directions) if feasible else []
    if len(objectives) > 1 and front:
        best = min(front, key=lambda r: _rank_key(r, directions))
    return SearchResult(list(objectives), directions, best, front, records, sampler, space_size,
                        study.study_name)


def run_search(sim: Simulator, space: Space, objectives: Sequence[str] = ("accuracy",),
               trials: int = 100, sampler: str = "auto", seed: int = 0, penalty: float = 1.0,
               storage: str | None = None, study_name: str | None = None,
               callbacks: Iterable[Callable] = (), fingerprint: dict | None = None,
               n_jobs: int = 1) -> SearchResult:
    """Run (or resume) a study; ``trials`` counts every finished trial of the study, so several
    workers sharing one storage stop together and an interrupted study does only what is left."""
    objectives = list(objectives) or ["accuracy"]
    for o in objectives:
        if o not in OBJECTIVES:
            raise MuxError(f"unknown objective '{o}' (one of {', '.join(OBJECTIVES)})")
    if len(set(objectives)) != len(objectives):
        raise MuxError("an objective is listed twice")
    if trials < 1:
        raise MuxError(f"trials must be at least 1, got {trials}")
    size = space.size()
    kind = choose_sampler(sampler, size, trials, len(objectives))
    grid = list(space.enumerate()) if kind == "grid" else None
    if grid is not None and len(grid) == 0:
        raise MuxError("the search space is empty")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directions = [OBJECTIVES[o] for o in objectives]
    study = _open_study(storage, study_name, directions,
                        make_sampler(kind, len(objectives), seed, len(grid) if grid else None,
                                     shared=storage is not None),
                        fingerprint, kind)
    total = trials if grid is None else min(trials, len(grid))
    objective = Objective(sim, space, objectives, penalty, grid)
    if storage is not None:
        fail_dead_workers(study)  # a resumed study: trials its dead workers left are FAIL
    if grid is not None:
        def evaluate(config: Config) -> tuple[list[float], dict]:
            values, score = objective.evaluate(config)
            attrs = config_attrs(config, score)
            # the configuration is the grid index (the ``config`` parameter); report reads these
            return values, {"pool": attrs["pool"], "score": attrs["score"]}

        GridWalk(study, grid, total, seed, shared=storage is not None).run(evaluate,
                                                                          list(callbacks))
    else:
        already = len(study.get_trials(deepcopy=False, states=_DONE_STATES))
        if already < total:
            stop = optuna.study.MaxTrialsCallback(total, states=_DONE_STATES)
            study.optimize(objective, n_trials=total - already, callbacks=[stop, *callbacks],
                           catch=(), n_jobs=n_jobs)
        if storage is not None:
            _wait_for_running(study)
    return summarise(study, objectives, kind, size, grid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def fail_dead_workers(study: optuna.Study) -> int:
    """Mark FAIL the RUNNING trials whose worker is gone, so their configurations are tried again
    and nobody waits for them.

    A worker on this host is gone when its process no longer exists (Ctrl-C during a database
    write, ``kill -9``): found at once from the ``worker`` attribute (host:pid) each trial sets
    first. Workers on other hosts are found by Optuna's heartbeats once their grace period
    (``grace_period`` seconds without a heartbeat) has passed."""
    host = socket.gethostname()
    failed = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker", "")
        owner, _, pid = worker.rpartition(":")
        if owner != host or not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        try:
            study.tell(t.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
            failed += 1
        except (ValueError, RuntimeError):  # finished meanwhile (another worker reaped it)
            pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    return failed


def _wait_for_running(study: optuna.Study, timeout: float = 60.0) -> None:
    """Let trials other workers are still running finish, so every worker reports the same
    winner. Trials of dead workers on this host are failed at once; a worker that died on
    another host leaves a RUNNING trial until its heartbeat goes stale: give up after
    ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fail_dead_workers(study)
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        if not running:
            return
        time.sleep(0.2)


def _open_study(storage: str | None, name: str | None, directions: list[str], sampler,
                fingerprint: dict | None, kind: str) -> optuna.Study:
    study = None
    for attempt in range(6):
        try:
            rdb = None
            if storage is not None:
                # heartbeats: a worker that dies mid-trial leaves a FAIL, not a RUNNING forever
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    rdb = optuna.storages.RDBStorage(storage, heartbeat_interval=30,
                                                     grace_period=120,
                                                     engine_kwargs={"pool_pre_ping": True})
            study = optuna.create_study(storage=rdb, study_name=name, directions=directions,
                                        sampler=sampler, load_if_exists=storage is not None)
            break
        except ValueError as error:
            raise MuxError(f"cannot open study '{name}': {error}")
        except Exception as error:  # storage URL, server down, driver missing, schema race
            if not type(error).__module__.startswith(("sqlalchemy", "psycopg", "optuna")):
                raise
            if attempt == 5 or "IntegrityError" not in type(error).__name__ + repr(error):
                raise MuxError(f"cannot open the study storage: {error}".splitlines()[0])
            # several workers creating the storage's tables or the study at once: try again
            time.sleep(0.2 + random.random() * (attempt + 1))
    if list(study.directions) != [optuna.study.StudyDirection.MAXIMIZE if d == "maximize"
                                  else optuna.study.StudyDirection.MINIMIZE for d in directions]:
        raise MuxError(f"study '{name}' was created with other objectives; use a new --study name")
    if fingerprint is not None:
        mine = {**fingerprint, "sampler": kind}
        attrs = study.user_attrs
        if "fingerprint" not in attrs:
            study.set_user_attr("fingerprint", mine)
        elif attrs["fingerprint"] != mine:
            theirs = attrs["fingerprint"]
            differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            said = "; ".join(f"{k} {_shown(theirs.get(k))} (this run: {_shown(mine.get(k))})"
                             for k in differ)
            hint = (" (sampler auto searches the whole grid only when --trials covers it)"
                    if "sampler" in differ else "")
            raise MuxError(f"study '{name}' was run with {said}{hint}; resume it with the same "
                           f"spec, data and options, or use a new --study name")
    return study


def _shown(value: object) -> str:
    """A fingerprint value as a user typed it (lists and dicts compactly, long ones cut)."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def score_to_dict(score: Score) -> dict:
    d = score.as_dict()
    d["se_total"] = math.sqrt(score.se ** 2 + score.se_items ** 2)
    return d
