"""Sampling policies the simulator does not replay: ``delta(p)``, measured record by record on
the pool the search chose.

``delta(p)`` stops when a Monte Carlo estimate, seeded by what each record drew, says the rest of
the budget would change the selection with probability below p (``muxlang.semantics``). No array
version can draw the same random numbers, so ``tune`` does not put it in the search space: after
the search, the winner's pool and rule are replayed with each listed ``delta(p)``, and with the
winner's own policy for comparison, through ``semantics.decide`` on the first ``trials``
resampling trials of the simulator (the same draws the search scored, record by record, as
``eval`` and a live run decide). A ``delta(p)`` replaces the winner's policy when it loses no
validation accuracy on those trials and draws fewer samples; of several, the one drawing fewest.
A tune block that lists no ``off`` or ``exact`` has the search score pools at the full budget,
which is then only the yardstick: the tuned mux takes one of the listed policies (``choose``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from muxlang import ir, semantics
from muxlang.simulator import Config, Simulator

POLICY_TRIALS = 10  # resampling trials a record-by-record policy is measured on (at most)


@dataclass(frozen=True)
class PolicyFigures:
    """One policy on one pool, record by record over ``trials`` resampling trials."""

    adaptive: str
    accuracy: float  # mean over trials of the share of scored items answered right
    se: float  # standard error of that mean over the trials
    se_items: float  # from the finite item set
    drawn: tuple[float, ...]  # per pool member: samples drawn per item, the mean
    trials: int

    @property
    def samples(self) -> float:
        return float(sum(self.drawn))


def mux_with(template: ir.Mux, models: Mapping[str, ir.Model], config: Config,
             adaptive: str) -> ir.Mux:
    """The tuned mux as it would run: ``config``'s pool and rule, ``adaptive``."""
    pool = [ir.PoolMember(models[m], b) for m, b in config.pool]
    return ir.Mux(template.name, template.task, pool, ir.Call(config.rule), template.tie_break,
                  template.validation, template.accuracy, adaptive)


def measure(sim: Simulator, mux: ir.Mux, config: Config, trials: int) -> PolicyFigures:
    """``mux`` (pool and rule of ``config``) decided record by record on the simulator's first
    ``trials`` trials: each member's samples in that trial's draw order."""
    trials = max(1, min(trials, sim.simulations))
    right = np.zeros((trials, sim.n_items), bool)
    drawn = np.zeros(len(config.pool))
    votes = sim.votes
    orders = {m: sim.draws(m) for m, _ in config.pool}
    seen: dict[tuple, semantics.Outcome] = {}  # trials that drew the same: decided once
    for t in range(trials):
        for row, i in enumerate(sim.item_index):
            keys = {m: [votes.votes[m][i][j] for j in orders[m][t, row, :b].tolist()]
                    for m, b in config.pool}
            state = tuple(tuple(k) for k in keys.values())
            outcome = seen.get(state)
            if outcome is None:
                outcome = seen[state] = semantics.decide(mux, keys, sim.accuracies)
            right[t, row] = outcome.answer is not None and outcome.answer == votes.gold[i]
            for p, (m, _) in enumerate(config.pool):
                drawn[p] += outcome.used.get(m, 0)
    per_trial = right.sum(axis=1) / sim.n_items
    se = float(per_trial.std(ddof=1) / math.sqrt(trials)) if trials > 1 else 0.0
    per_item = right.mean(axis=0)
    se_items = (float(per_item.std(ddof=1) / math.sqrt(sim.n_items)) if sim.n_items > 1
                else 0.0)
    rows = trials * sim.n_items
    return PolicyFigures(mux.adaptive, float(per_trial.mean()), se, se_items,
                         tuple(float(d / rows) for d in drawn), trials)


def choose(own: PolicyFigures, others: Sequence[PolicyFigures], *,
           own_listed: bool = True) -> PolicyFigures | None:
    """The policy that replaces the winner's own: no less accurate on the same trials, fewer
    samples; of several, the fewest samples (then the order listed). None: keep the own.

    ``own_listed=False``: the own policy is not one the tune block lists (it lists only
    ``delta(p)``, and the search scored pools at the full budget), so it is a yardstick, never
    the choice: without a policy that loses nothing against it, the most accurate of
    ``others`` (then the fewest samples, then the order listed)."""
    better = [f for f in others if f.accuracy >= own.accuracy and f.samples < own.samples]
    if better:
        return min(better, key=lambda f: f.samples)
    if own_listed or not others:
        return None
    return max(others, key=lambda f: (f.accuracy, -f.samples))
