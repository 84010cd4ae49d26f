"""Search pools, per-model sample budgets and the selection rule with Optuna.

The search space: per candidate model a budget, 0 (left out) or ``low..high`` samples; the number
of models in the pool within ``pool_size``; the rule one of ``rules``. Objectives: ``accuracy``
(maximise), ``union_contradiction`` (UnionAcc − λ·Contradiction, maximise), ``cost`` (minimise).

* Exhaustive when the space is small (``sampler="auto"`` and at most ``trials`` configurations, or
  ``sampler="grid"``): the feasible configurations are enumerated in a fixed order and
  ``optimizer/grid.py``'s ``GridWalk`` scores them by index, one COMPLETE trial each, so
  infeasible pools are never proposed and several workers sharing one study split them.
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
import random
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import optuna

from muxlang.errors import MuxError
from muxlang.optimizer.grid import (DONE_STATES, WORKER, GridWalk, fail_dead_workers,
                                   wait_for_running)
from muxlang.simulator import RULES, Config, Score, Simulator

OBJECTIVES = {"accuracy": "maximize", "union_contradiction": "maximize", "cost": "minimize",
              "samples": "minimize"}
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
    max_samples: int | None = None  # samples per item at most (the sum of the budgets)
    adaptive: list[str] = field(default_factory=lambda: ["off"])  # the mux's sampling policies

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
        if self.max_samples is not None:
            return self._size_capped()
        # dp[j] = weighted count of ways to pick j models so far
        lo, hi = self.pool_size
        dp = [1] + [0] * hi
        for m in self.candidates:
            w = self.n_budgets(m)
            for j in range(hi, 0, -1):
                dp[j] += dp[j - 1] * w
        return sum(dp[lo:hi + 1]) * len(self.rules) * len(self.adaptive)

    def _size_capped(self) -> int:
        """``size`` under ``max_samples``: dp[j][s] = ways to pick j models using s samples."""
        lo, hi = self.pool_size
        cap = int(self.max_samples or 0)
        dp = [[0] * (cap + 1) for _ in range(hi + 1)]
        dp[0][0] = 1
        for m in self.candidates:
            b_lo, b_hi = self.budgets[m]
            for j in range(hi, 0, -1):
                for s in range(cap, -1, -1):
                    dp[j][s] += sum(dp[j - 1][s - b] for b in range(b_lo, min(b_hi, s) + 1))
        return sum(sum(dp[j]) for j in range(lo, hi + 1)) * len(self.rules) * len(self.adaptive)

    def enumerate(self) -> Iterator[Config]:
        """Every feasible configuration, in a fixed order (rule, sampling policy, pool size,
        subset, budgets)."""
        lo, hi = self.pool_size
        for rule, policy in itertools.product(self.rules, self.adaptive):
            for size in range(lo, hi + 1):
                for subset in itertools.combinations(self.candidates, size):
                    ranges = [range(self.budgets[m][0], self.budgets[m][1] + 1) for m in subset]
                    for budgets in itertools.product(*ranges):
                        if self.max_samples is None or sum(budgets) <= self.max_samples:
                            yield Config(tuple(zip(subset, budgets)), rule, policy)

    def decode(self, raw: dict[str, int], rule: str, adaptive: str = "off") -> Config:
        """Optuna params (0 = out, v ≥ 1 = low + v − 1) → a Config in candidate order."""
        pool = []
        for m in self.candidates:
            v = raw.get(m, 0)
            if v > 0:
                pool.append((m, self.budgets[m][0] + v - 1))
        return Config(tuple(pool), rule, adaptive)

    def violation(self, config: Config) -> float:
        n = len(config.pool)
        lo, hi = self.pool_size
        over = (max(sum(b for _, b in config.pool) - self.max_samples, 0)
                if self.max_samples is not None else 0)
        return float(max(lo - n, n - hi, 0) + over)


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
            "adaptive": config.adaptive, "score": {k: v for k, v in score.as_dict().items()}}


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
        policy = (trial.suggest_categorical("adaptive", list(self.space.adaptive))
                  if len(self.space.adaptive) > 1 else self.space.adaptive[0])
        raw = {m: trial.suggest_int(_param_name(m), 0, self.space.n_budgets(m))
               for m in self.space.candidates}
        return self.space.decode(raw, rule, policy)

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
        # equal objectives: the cheaper configuration (money, tokens, samples), then fewer models
        r.score.get("cost", 0.0), r.score.get("tokens", 0.0),
        r.score.get("samples", sum(b for _, b in r.config.pool)), len(r.config.pool), r.tie_rank)


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
            config = Config(pool, attrs["rule"], attrs.get("adaptive", "off"))
        else:
            continue
        feasible = all(c <= 0 for c in attrs.get("constraint", [0.0]))
        values = tuple(t.values) if t.values is not None else ()
        out.append(TrialRecord(t.number, config, values, attrs.get("score", {}), feasible,
                               None if index is None else int(index)))
    return out


def summarise(study: optuna.Study, objectives: Sequence[str], sampler: str,
              space_size: int, grid: Sequence[Config] | None = None,
              records: list[TrialRecord] | None = None) -> SearchResult:
    """The search's result from its records (by default the study's trials)."""
    directions = [OBJECTIVES[o] for o in objectives]
    if records is None:
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
    if grid is not None and storage is None:
        records = _walk_alone(study, grid, total, seed, objective, list(callbacks))
        return summarise(study, objectives, kind, size, grid, records)
    if grid is not None:
        def evaluate(config: Config) -> tuple[list[float], dict]:
            values, score = objective.evaluate(config)
            attrs = config_attrs(config, score)
            # the configuration is the grid index (the ``config`` parameter); report reads these
            return values, {"pool": attrs["pool"], "score": attrs["score"]}

        GridWalk(study, grid, total, seed, shared=storage is not None).run(evaluate,
                                                                          list(callbacks))
    else:
        if not study.get_trials(deepcopy=False):  # a fresh study, no worker seeded it yet
            _seed_singles(study, space, total)
        already = len(study.get_trials(deepcopy=False, states=DONE_STATES))
        if already < total:
            stop = optuna.study.MaxTrialsCallback(total, states=DONE_STATES)
            study.optimize(objective, n_trials=total - already, callbacks=[stop, *callbacks],
                           catch=(), n_jobs=n_jobs)
        if storage is not None:
            wait_for_running(study)
    return summarise(study, objectives, kind, size, grid)


def _seed_singles(study: optuna.Study, space: Space, total: int) -> None:
    """A sampled search first tries every candidate alone at its largest budget: the baselines
    ``tune`` reports beside the best (a pool found by sampling must not lose to one of them
    unseen), and, on cheaper-is-better objectives, often the front's cheap end. Only when
    the pool may hold one model and they take at most half the trials."""
    if space.pool_size[0] > 1 or len(space.candidates) > total // 2:
        return
    fixed = {}
    if len(space.rules) > 1:
        fixed["rule"] = space.rules[0]
    if len(space.adaptive) > 1:
        fixed["adaptive"] = space.adaptive[0]
    for model in space.candidates:
        study.enqueue_trial({**fixed, **{_param_name(m): space.n_budgets(m) if m == model else 0
                                         for m in space.candidates}})


def _walk_alone(study: optuna.Study, grid: Sequence[Config], total: int, seed: int,
                objective: "Objective", callbacks: list[Callable]) -> list[TrialRecord]:
    """The grid walk of a study in memory, which no other worker shares and nobody reads
    after this process: the same configurations in the same order as ``GridWalk``, scored
    into records here. (Storing each trial in Optuna's in-memory storage deep-copies it, which
    cost a fifth of an exhaustive search.) Callbacks still see each trial as Optuna would."""
    distribution = optuna.distributions.IntDistribution(0, len(grid) - 1)
    records = []
    for number, index in enumerate(GridWalk.walk_order(len(grid), seed)[:total]):
        config = grid[index]
        values, score = objective.evaluate(config)
        records.append(TrialRecord(number, config, tuple(values),
                                   config_attrs(config, score)["score"], True, index))
        if callbacks:
            trial = optuna.trial.create_trial(
                state=optuna.trial.TrialState.COMPLETE, values=values,
                params={"config": index}, distributions={"config": distribution})
            for callback in callbacks:
                callback(study, trial)
    return records


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
        raise MuxError(f"study '{name}' was created with other objectives; use a new study name")
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
            hint = (" (sampler auto searches the whole grid only when the trials cover it)"
                    if "sampler" in differ else "")
            raise MuxError(f"study '{name}' was run with {said}{hint}; resume it with the same "
                           f"spec, data and options, or use a new study name")
    return study


def _shown(value: object) -> str:
    """A fingerprint value as a user typed it (lists and dicts compactly, long ones cut)."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def score_to_dict(score: Score) -> dict:
    d = score.as_dict()
    d["se_total"] = math.sqrt(score.se ** 2 + score.se_items ** 2)
    return d
