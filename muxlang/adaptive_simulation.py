"""``adaptive = exact`` in the simulator: how many samples each member draws, for every
resampling trial and item at once.

``muxlang.semantics.exact_draws`` says what a live run draws next, given what it drew; here the
same rounds run over arrays: a trial's draws are a random order of each member's stored samples
(``Simulator.draws``), so after n draws a member holds the first n of that order, and its answer's
count and whether the rest could still change it come from the walk of that model alone
(``Simulator.member_keys``: its largest and second largest vote key after each n). The policy
never changes the answer or the chosen member (the exact rule stops only once they are settled),
so the accuracy of a configuration is the full budget's; what changes is the samples drawn.
A differential test replays every (trial, item) through ``semantics.adaptive_prefixes`` and
checks the counts agree one by one.

``delta(p)`` decides from a Monte Carlo estimate seeded by the drawn keys, row by row: it has no
vectorised twin, and ``tune`` scores it with the per-record engine (``evaluation``).
"""
from __future__ import annotations

import numpy as np

from muxlang.errors import MuxError

# ``Simulator`` and ``Config`` (muxlang.simulator, the layer above, which calls this module) are
# named in annotations only: read through their methods, never imported.


def _half(k: np.ndarray | int):
    """ceil(k / 2), at least 1 (``semantics._half``)."""
    return np.maximum(1, -(-np.asarray(k) // 2))


class _Member:
    """One pool member's tables, read at each row's number of draws."""

    def __init__(self, sim: Simulator, model: str, budget: int, rank: int):
        self.first, self.second, self.high = sim.member_keys(model)
        self.budget, self.rank = budget, rank
        self.rows = np.arange(self.first.shape[1])

    def count(self, n: np.ndarray) -> np.ndarray:
        """The answer's count after ``n`` draws (per row)."""
        return (self.first[n, self.rows] >> self.high).astype(np.int64)

    def settled(self, n: np.ndarray) -> np.ndarray:
        """``semantics._top_settled``: no answer, seen or not, can pass or tie-and-win against
        the top with the samples left (a tie goes to the answer sampled first)."""
        left = (self.budget - n).astype(np.int64)
        top = self.first[n, self.rows].astype(np.int64)
        second = self.second[n, self.rows].astype(np.int64)
        count = top >> self.high
        return (left <= 0) | ((count >= left) & (second + (left << self.high) < top))


def exact_draws(sim: Simulator, config: Config) -> np.ndarray:
    """(members, trials x items) samples each pool member draws under ``adaptive = exact``."""
    if not config.pool:
        return np.zeros((0, sim.simulations * sim.n_items), np.int64)
    priority = sim.priority(config.models)
    rank = {position: r for r, position in enumerate(priority)}
    members = [_Member(sim, m, b, rank[p]) for p, (m, b) in enumerate(config.pool)]
    rows = members[0].rows.size
    if config.rule == "majority":
        return _majority(sim, config, members, rows)
    if config.rule == "single":
        n = np.zeros((len(members), rows), np.int64)
        chosen = priority[0]
        n[chosen] = _alone(members[chosen], np.zeros(rows, np.int64), np.ones(rows, bool))
        return n
    if config.rule != "slm_mux":
        raise MuxError(f"unknown selection rule '{config.rule}'")
    return _slm_mux(members, rows)


def _alone(member: _Member, n: np.ndarray, active: np.ndarray) -> np.ndarray:
    """A member deciding alone: half its budget, then half of what is left, until its answer
    is settled (``semantics._chunk``); ``n`` drawn so far, only ``active`` rows draw."""
    n = n.copy()
    while True:
        going = active & ~member.settled(n)
        if not going.any():
            return n
        left = member.budget - n
        chunk = np.minimum(left, _half(np.where(n == 0, member.budget, left)))
        n = np.where(going, n + chunk, n)


def _slm_mux(members: list[_Member], rows: int) -> np.ndarray:
    """``semantics.exact_draws`` for slm_mux, every row at once: the member that wins all ties
    draws its whole budget first; then every member that can still win draws half its budget
    per round; a member left alone decides as ``_alone``."""
    p = len(members)
    n = np.zeros((p, rows), np.int64)
    active = np.ones(rows, bool)
    budgets = np.array([m.budget for m in members], np.int64)[:, None]
    ranks = np.array([m.rank for m in members])
    while active.any():
        low = np.stack([m.count(n[i]) for i, m in enumerate(members)])  # a: low = a / k
        high = low + budgets - n  # high = (a + left) / k
        live = high > 0
        for o in range(p):  # o surely ends ahead of m: o.low > m.high, or equal and o wins ties
            for m in range(p):
                if o == m:
                    continue
                lhs, rhs = low[o] * budgets[m], high[m] * budgets[o]
                beats = (low[o] > 0) & ((lhs > rhs) | ((lhs == rhs) & (ranks[o] < ranks[m])))
                live[m] &= ~beats
        alive = live.sum(axis=0)
        left = budgets - n
        # one live member: it decides alone (settled or full: stop)
        only = active & (alive == 1)
        if only.any():
            who = live.argmax(axis=0)
            for i, member in enumerate(members):
                mine = only & (who == i)
                if mine.any():
                    n[i] = _alone(member, n[i], mine)
        first = active & (alive >= 2) & (n.sum(axis=0) == 0)
        lead = int(ranks.argmin())
        n[lead] = np.where(first, budgets[lead], n[lead])
        rounds = active & (alive >= 2) & ~first
        want = live & (left > 0) & rounds
        fallback = rounds & ~want.any(axis=0)  # no live member can draw: the others draw all
        step = np.where(want, np.minimum(left, _half(budgets)), 0)
        step = np.where(fallback & (left > 0), left, step)
        n = n + step
        active = first | (rounds & (step.sum(axis=0) > 0))
    return n


def _majority(sim: Simulator, config: Config, members: list[_Member], rows: int) -> np.ndarray:
    """``semantics.exact_draws`` for majority: every member draws half its budget per round
    (the same counts on every row) until the leader is settled (``_majority_settled``): its
    votes exceed every other answer's plus every vote not yet cast, and no member that could
    still vote ranks above its best voter."""
    budgets = [m.budget for m in members]
    n = np.zeros((len(members), rows), np.int64)
    active = np.ones(rows, bool)
    drawn = [0] * len(members)
    while active.any():
        remaining = sum(b - d for b, d in zip(budgets, drawn))
        if drawn == budgets:
            break
        if any(drawn):
            settled = _majority_settled(sim, config, members, drawn, remaining)
            active &= ~settled
        drawn = [min(b, d + int(_half(b))) for b, d in zip(budgets, drawn)]
        for i, d in enumerate(drawn):
            n[i] = np.where(active, d, n[i])
    return n


def _majority_settled(sim: Simulator, config: Config, members: list[_Member],
                      drawn: list[int], remaining: int) -> np.ndarray:
    counted = [(member, sim.class_counts(model, d).reshape(-1, sim.n_classes))
               for (model, _), d, member in zip(config.pool, drawn, members) if d]
    votes = sum(counts.astype(np.int32) for _, counts in counted)
    leader = votes.argmax(axis=1)
    lead = votes[np.arange(votes.shape[0]), leader]
    if votes.shape[1] > 1:
        runner = np.partition(votes, -2, axis=1)[:, -2]
    else:
        runner = np.zeros_like(lead)
    clear = (lead > remaining) & (runner + remaining < lead)
    # the leader's best voter: the most trusted member with a vote for it
    voter = np.full(lead.shape, len(members), np.int64)
    for member, counts in counted:
        voted = counts[np.arange(votes.shape[0]), leader] > 0
        voter = np.where(voted, np.minimum(voter, member.rank), voter)
    waiting = min((m.rank for m, d in zip(members, drawn) if d < m.budget), default=len(members))
    settled = clear & (voter <= waiting)
    return np.where(lead == 0, remaining == 0, settled)
