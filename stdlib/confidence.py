"""Member confidence functions: a member's samples → (its answer, its confidence).

The interface a mux's rule consumes through ``Ballot`` (``muxlang.stdlib.selection``):

    confidence(keys, logprobs=None) -> (answer, confidence)

``keys`` are the member's equivalence keys in sample-index order (None = unreadable, counted in
k, never an answer); ``logprobs[i]`` is sample i's mean token log-probability as the backend
returned it, or None when it gave none. Entries live in ``registry.CONFIDENCES`` (plugins may add
``confidence.NAME`` entry points).

- ``self_consistency()`` (the default, the paper's): the most frequent readable key, ties to the
  one sampled first; confidence = its count / k. Exactly ``Ballot.of_samples``.
- ``logprob_vote(temperature = 1.0)``: CISC (Taubenfeld et al. 2025, arXiv 2502.06233), a
  confidence-weighted vote. Each sample's weight is the softmax over the member's samples of its
  mean token log-probability / temperature (``temperature`` → ∞: plain counting; → 0: the single
  most likely sample). The answer is the key with the largest total weight (ties to the one
  sampled first) and the confidence is that weight's share of all samples' (unreadable samples
  keep their weight in the total, as they count in k). When any sample lacks a log-probability,
  it falls back to ``self_consistency`` (weights from a partial set would not be comparable).

Not yet wired: the runtime does not request ``logprobs`` and the store has no column for them,
and the mux semantics always use ``self_consistency``; a ``confidence`` key for muxes needs
those three (see the issue), and the functions here are what it would call.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

from muxlang.stdlib.selection import top_answer

Key = Optional[str]


def self_consistency():
    def confidence(keys: Sequence[Key], logprobs: Sequence[Optional[float]] | None = None
                   ) -> tuple[Key, float]:
        keys = list(keys)
        top, count = top_answer(keys)
        return top, (count / len(keys) if top is not None and keys else 0.0)

    return confidence


def logprob_vote(temperature: float = 1.0):
    from muxlang.errors import MuxError

    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not 0 < temperature < math.inf:
        raise MuxError(f"logprob_vote: 'temperature' must be a number > 0, got {temperature!r}")
    counting = self_consistency()

    def confidence(keys: Sequence[Key], logprobs: Sequence[Optional[float]] | None = None
                   ) -> tuple[Key, float]:
        keys = list(keys)
        if not keys:
            return None, 0.0
        if logprobs is None or len(logprobs) != len(keys) or any(
                lp is None or not math.isfinite(lp) for lp in logprobs):
            return counting(keys)
        scaled = [lp / temperature for lp in logprobs]  # type: ignore[operator]
        high = max(scaled)
        weights = [math.exp(s - high) for s in scaled]
        total = sum(weights)
        votes: dict[str, float] = {}
        for key, weight in zip(keys, weights):
            if key is not None:
                votes[key] = votes.get(key, 0.0) + weight
        best: Key = None
        best_w = 0.0
        for key in votes:  # first-insertion order: strict > keeps the first sampled on ties
            if votes[key] > best_w:
                best, best_w = key, votes[key]
        return best, (best_w / total if best is not None else 0.0)

    return confidence
