"""Selection rules: the pool's ballots on one question → one chosen answer.

A rule is ``f(ballots, accuracies) -> Selection``:

- ``ballots[i]`` is what pool member i puts before the rule (a ``Ballot``): the equivalence keys
  of its drawn samples in sample-index order (``None`` = no readable answer; ``len(keys)`` is
  k_i), its answer ``top`` and its confidence. A plain list of keys is accepted as the ballot of a
  model that drew those samples. A nested mux's ballot is its one answer with the confidence its
  own rule gave it (``Ballot.of_answer``): one member, one answer, as ``scores`` reports it.
- ``accuracies[i]`` is member i's validation accuracy, or ``None`` when unknown (ranks lowest).

A member's answer (``top_answer``): its most frequent readable key. When several keys tie for the
top count, the one whose first sample came first in sample-index order wins. Unlike "the smallest
key", which favours answers that sort first (small numbers, negatives, ``0.x``: more often wrong on
GSM8K), this is unbiased: within a run the order is the order samples were drawn in, and across
the simulator's resampling trials it is random, so each tied answer wins equally often.

Rules (deterministic for given ballots; no dependence on set or dict iteration order):

``slm_mux`` — the paper's Algorithm 1. f_i(y) = count_i(y) / k_i, where unreadable samples count
  in k_i but are never an answer; y_i* = ``top_answer``; s_i = f_i(y_i*). The member with the
  highest s_i wins; ties go to the highest validation accuracy (None lowest), then to the lowest
  pool index.
``majority`` — Agent Forest: every sample of every member is one vote (a nested mux: one vote for
  its answer). The answer with the most votes wins. Ties go to the most trusted member that voted
  for any tied answer (highest accuracy, then lowest index): of the tied answers, the one it
  sampled first wins (the same unbiased order as within a member). Equivalently, the tied answers
  are compared member by member in trust order, by when each member first voted for them, so the
  simulator can score a pool as a sum of per-member integer keys. ``index`` is the most trusted
  member that voted for the winner and ``confidence`` is the winner's share of all votes
  (unreadable included).
``single`` — self-consistency of the member with the best validation accuracy (ties: lowest
  index): its y* and s. Members with no samples are skipped when choosing it.

Members with no samples or only unreadable ones are never chosen; when nobody has a readable
answer, ``index`` and ``answer`` are ``None`` and ``confidence`` is 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

_NO_ACC = float("-inf")

Key = Optional[str]


def top_answer(keys: Sequence[Key]) -> tuple[Key, int]:
    """A member's answer: its most frequent readable key and that key's count; among keys tied
    for the top count, the one whose first sample came first. ``(None, 0)`` when none is
    readable. The one definition every implementation (runtime, replay, simulator) follows."""
    counts: dict[str, int] = {}
    for key in keys:
        if key is not None:
            counts[key] = counts.get(key, 0) + 1
    best: Key = None
    best_n = 0
    for key in counts:  # dicts keep first-insertion order: strict > keeps the earliest on ties
        if counts[key] > best_n:
            best, best_n = key, counts[key]
    return best, best_n


@dataclass(frozen=True)
class Ballot:
    """What one pool member puts before its mux's rule (see the module docstring)."""

    keys: tuple[Key, ...]  # votes in sample-index order (a nested mux: its one answer)
    top: Key  # the member's answer
    confidence: float  # s_i: top count / k for a model; a nested mux's own confidence

    @staticmethod
    def of_samples(keys: Sequence[Key]) -> "Ballot":
        keys = tuple(keys)
        top, count = top_answer(keys)
        return Ballot(keys, top, count / len(keys) if top is not None else 0.0)

    @staticmethod
    def of_answer(answer: Key, confidence: float) -> "Ballot":
        """A nested mux: one vote, for its answer, carrying its own rule's confidence."""
        return Ballot((answer,), answer, float(confidence) if answer is not None else 0.0)


BallotLike = Union[Ballot, Sequence[Key]]


@dataclass(frozen=True)
class Selection:
    index: Optional[int]  # pool position of the chosen member; None if nobody has a readable answer
    answer: Key  # the chosen equivalence key
    confidence: float  # slm_mux/single: chosen member's s; majority: winner's share of all votes
    scores: tuple  # per member: (its top answer, its confidence), tuple[tuple[str | None, float], ...]


def ballots_of(votes: Sequence[BallotLike]) -> list[Ballot]:
    """Ballots as given, plain key lists read as a model's samples."""
    return [v if isinstance(v, Ballot) else Ballot.of_samples(v) for v in votes]


def _acc(accuracies: Sequence[Optional[float]], i: int) -> float:
    if i >= len(accuracies):
        return _NO_ACC
    a = accuracies[i]
    if a is None or a != a:  # None or NaN rank lowest
        return _NO_ACC
    return float(a)


def _scores(ballots: Sequence[Ballot]) -> tuple:
    return tuple((b.top, b.confidence) for b in ballots)


def slm_mux(votes: Sequence[BallotLike], accuracies: Sequence[Optional[float]]) -> Selection:
    """SLM-MUX (Algorithm 1): the most self-consistent member wins; ties by accuracy, then index."""
    ballots = ballots_of(votes)
    best = -1
    best_s = 0.0
    best_a = _NO_ACC
    for i, ballot in enumerate(ballots):
        if ballot.top is None:
            continue
        s, a = ballot.confidence, _acc(accuracies, i)
        # strictly better only: on a full tie the earlier (lower) index stays
        if best < 0 or s > best_s or (s == best_s and a > best_a):
            best, best_s, best_a = i, s, a
    scores = _scores(ballots)
    if best < 0:
        return Selection(None, None, 0.0, scores)
    return Selection(best, ballots[best].top, best_s, scores)


def single(votes: Sequence[BallotLike], accuracies: Sequence[Optional[float]]) -> Selection:
    """Self-consistency of the member with the best validation accuracy (ties: lowest index)."""
    ballots = ballots_of(votes)
    scores = _scores(ballots)
    best = -1
    best_a = _NO_ACC
    for i, ballot in enumerate(ballots):
        if not ballot.keys:
            continue
        a = _acc(accuracies, i)
        if best < 0 or a > best_a:
            best, best_a = i, a
    if best < 0 or ballots[best].top is None:
        return Selection(None, None, 0.0, scores)
    return Selection(best, ballots[best].top, ballots[best].confidence, scores)


def majority(votes: Sequence[BallotLike], accuracies: Sequence[Optional[float]]) -> Selection:
    """Agent Forest: one vote per sample over all members; ties go to the most trusted member
    that voted for a tied answer (accuracy, then index), which picks the one it sampled first."""
    ballots = ballots_of(votes)
    counts: dict[str, int] = {}
    total = 0
    for ballot in ballots:
        total += len(ballot.keys)
        for key in ballot.keys:
            if key is not None:
                counts[key] = counts.get(key, 0) + 1
    scores = _scores(ballots)
    if not counts:
        return Selection(None, None, 0.0, scores)
    most = max(counts.values())
    tied = {key for key, n in counts.items() if n == most}
    trust = sorted(range(len(ballots)), key=lambda i: (-_acc(accuracies, i), i))
    for i in trust:  # the first member, in trust order, to have voted for a tied answer
        for key in ballots[i].keys:
            if key in tied:
                return Selection(i, key, most / total, scores)
    raise AssertionError("a most-voted answer has a voter")
