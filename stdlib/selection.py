"""Selection rules: the pool's votes on one question → one chosen answer.

A rule is ``f(votes, accuracies) -> Selection``:

- ``votes[i]`` holds pool member i's samples as equivalence keys (``None`` = no readable answer);
  ``len(votes[i])`` is k_i, the number of samples drawn from member i.
- ``accuracies[i]`` is member i's validation accuracy, or ``None`` when unknown (ranks lowest).

Rules (all deterministic: no randomness, no dependence on set or dict iteration order, and the
result never depends on the order of a member's samples):

``slm_mux`` — the paper's Algorithm 1. f_i(y) = count_i(y) / k_i, where unreadable samples count
  in k_i but are never an answer; y_i* = argmax_y f_i(y); s_i = f_i(y_i*). The member with the
  highest s_i wins; ties go to the highest validation accuracy (None lowest), then to the lowest
  pool index. Within a member, answers with equal counts are tied: the lexicographically
  smallest key is y_i* (an arbitrary but order-independent choice; such a member's s_i is the same
  whichever answer is picked).
``majority`` — Agent Forest: every sample of every member is one vote. The answer with the most
  votes wins; ties go to the answer whose best voter has the highest accuracy, then to the
  smallest key. ``index`` is the best-accuracy (then lowest-index) member that voted for it and
  ``confidence`` is the winner's share of all samples drawn (unreadable ones included).
``single`` — self-consistency of the member with the best validation accuracy (ties: lowest
  index): its y* and s. Members with no samples are skipped when choosing it.

Members with no samples or only unreadable ones are never chosen; when nobody has a readable
answer, ``index`` and ``answer`` are ``None`` and ``confidence`` is 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

_NO_ACC = float("-inf")


@dataclass(frozen=True)
class Selection:
    index: Optional[int]  # pool position of the chosen member; None if nobody has a readable answer
    answer: Optional[str]  # the chosen equivalence key
    confidence: float  # slm_mux/single: chosen member's f(y*) = count/k; majority: share of all samples
    scores: tuple  # per member: (its top answer, its confidence), tuple[tuple[str | None, float], ...]


def _top(samples: Sequence[Optional[str]]) -> tuple[Optional[str], int]:
    """A member's most frequent readable key (ties: smallest key) and its count."""
    counts: dict[str, int] = {}
    for key in samples:
        if key is not None:
            counts[key] = counts.get(key, 0) + 1
    best: Optional[str] = None
    best_n = 0
    for key, n in counts.items():
        if n > best_n or (n == best_n and key < best):  # type: ignore[operator]
            best, best_n = key, n
    return best, best_n


def _acc(accuracies: Sequence[Optional[float]], i: int) -> float:
    if i >= len(accuracies):
        return _NO_ACC
    a = accuracies[i]
    if a is None or a != a:  # None or NaN rank lowest
        return _NO_ACC
    return float(a)


def _member_scores(votes: Sequence[Sequence[Optional[str]]]) -> tuple:
    scores = []
    for samples in votes:
        k = len(samples)
        if k == 0:
            scores.append((None, 0.0))
            continue
        answer, n = _top(samples)
        scores.append((answer, n / k if answer is not None else 0.0))
    return tuple(scores)


def slm_mux(votes: Sequence[Sequence[Optional[str]]],
            accuracies: Sequence[Optional[float]]) -> Selection:
    """SLM-MUX (Algorithm 1): the most self-consistent member wins; ties by accuracy, then index."""
    scores = _member_scores(votes)
    best = -1
    best_s = 0.0
    best_a = _NO_ACC
    for i, (answer, s) in enumerate(scores):
        if answer is None:
            continue
        a = _acc(accuracies, i)
        # strictly better only: on a full tie the earlier (lower) index stays
        if best < 0 or s > best_s or (s == best_s and a > best_a):
            best, best_s, best_a = i, s, a
    if best < 0:
        return Selection(None, None, 0.0, scores)
    return Selection(best, scores[best][0], best_s, scores)


def single(votes: Sequence[Sequence[Optional[str]]],
           accuracies: Sequence[Optional[float]]) -> Selection:
    """Self-consistency of the member with the best validation accuracy (ties: lowest index)."""
    scores = _member_scores(votes)
    best = -1
    best_a = _NO_ACC
    for i, samples in enumerate(votes):
        if not samples:
            continue
        a = _acc(accuracies, i)
        if best < 0 or a > best_a:
            best, best_a = i, a
    if best < 0 or scores[best][0] is None:
        return Selection(None, None, 0.0, scores)
    answer, s = scores[best]
    return Selection(best, answer, s, scores)


def majority(votes: Sequence[Sequence[Optional[str]]],
             accuracies: Sequence[Optional[float]]) -> Selection:
    """Agent Forest: one vote per sample over all members; ties by best voter's accuracy, then key."""
    scores = _member_scores(votes)
    counts: dict[str, int] = {}
    # per answer: (best voter's accuracy, its index) — highest accuracy, then lowest index
    voter: dict[str, tuple[float, int]] = {}
    total = 0
    for i, samples in enumerate(votes):
        total += len(samples)
        a = _acc(accuracies, i)
        for key in samples:
            if key is None:
                continue
            counts[key] = counts.get(key, 0) + 1
            seen = voter.get(key)
            if seen is None or a > seen[0]:
                voter[key] = (a, i)
    if not counts:
        return Selection(None, None, 0.0, scores)
    best: Optional[str] = None
    best_n = 0
    best_a = _NO_ACC
    for key, n in counts.items():
        a = voter[key][0]
        if (best is None or n > best_n or (n == best_n and a > best_a)
                or (n == best_n and a == best_a and key < best)):
            best, best_n, best_a = key, n, a
    assert best is not None
    return Selection(voter[best][1], best, best_n / total, scores)
