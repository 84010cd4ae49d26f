"""What one more adaptive round costs, in samples, on servers that draw n > 1 per request.

An adaptive mux (``adaptive = exact | delta(p)``) draws a member's budget in rounds so that it
can stop early; only ``exact``'s rounds are resized here (``delta(p)``'s answer depends on the
prefix it stops on, so its rounds stay fixed). Where a server draws several samples in one
request, the prompt is billed once per request: a split round saves the samples of the later
round when it is not needed, and costs one more prompt when it is. ``semantics._round`` keeps
a split only when the samples it leaves for later exceed its *overhead*, which this module
estimates live:

    overhead = h * q / (1 - q)

- ``h``: one more prompt in the member's samples (prompt tokens per request over completion
  tokens per sample, from the server's usage: ``BackendClient.request_overhead``; 0 where each
  sample is its own request, infinite before anything is measured);
- ``q``: the chance the later round is needed, learned per (mux, member) from this run's own
  splits (a uniform prior: q = (needed + 1) / (splits + 2)).

So a split is kept when its expected saving, (1 - q) x the samples left, beats its expected
cost, q x h: where members are rarely settled early the rounds stay whole and an adaptive run
costs no more than the full budget; where they often are, it splits and saves. The estimate
depends on the run's history, so live rounds (and the confidence over the samples drawn) may
differ from a replay's, which counts rounds as on a server that takes one request per sample;
answers and chosen members never do under ``exact`` (docs/language.md).

A batch run starts many records before any split's outcome is known; were they all to split on
the prior, a pool whose rounds rarely settle (majority, say) would pay a prompt per member for
each of them. So a member may have at most ``EXPLORE + RAMP x (splits resolved)`` splits open
at once: the learning costs a few prompts, and the number open grows with the evidence (where
splits turn out not to pay, q rises and rounds stay whole anyway).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from muxlang import ir
    from muxlang.runtime.executor import Runtime


EXPLORE = 4  # splits a member may have open before any outcome is known
RAMP = 4  # ... and more for each split whose outcome is known


class Rounds:
    """Per run: how often each adaptive member's split rounds turned out to be needed."""

    def __init__(self) -> None:
        # (mux, pool position) -> [splits whose outcome is known, of them needed, open now]
        self._seen: dict[tuple[str, int], list[int]] = {}

    def opened(self, mux: str, position: int) -> None:
        """A round of this member left samples of its budget for later."""
        self._seen.setdefault((mux, position), [0, 0, 0])[2] += 1

    def resolved(self, mux: str, position: int, needed: bool) -> None:
        """An open split's outcome: a later round of the same record drew some of what it left
        (``needed``), or the record settled without them. Splits still open do not count
        towards q: under concurrency they would read as not needed."""
        seen = self._seen.setdefault((mux, position), [0, 0, 0])
        seen[0] += 1
        seen[1] += needed
        seen[2] = max(0, seen[2] - 1)

    def chance_needed(self, mux: str, position: int) -> float:
        splits, needed, _ = self._seen.get((mux, position), (0, 0, 0))
        return (needed + 1) / (splits + 2)

    def overhead(self, runtime: "Runtime", mux: "ir.Mux", position: int) -> float:
        """The member's overhead for ``semantics.next_draws`` (see the module docstring)."""
        model = mux.pool[position].member
        prompt = runtime.client(model).request_overhead(model)
        if prompt == 0 or math.isinf(prompt):
            return prompt
        splits, _, open_now = self._seen.get((mux.name, position), (0, 0, 0))
        if open_now >= EXPLORE + RAMP * splits:
            return math.inf  # enough splits await their outcome
        q = self.chance_needed(mux.name, position)
        return prompt * q / (1 - q)
