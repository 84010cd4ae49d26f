"""What one more adaptive round costs, in samples, on servers that draw n > 1 per request.

An adaptive mux (``adaptive = exact | delta(p)``) draws a member's budget in rounds so that it
can stop early. Where a server draws several samples in one request, the prompt is billed once
per request: a split round saves the samples of the later round when it is not needed, and
costs one more prompt when it is. ``semantics._round`` keeps a split only when the samples it
leaves for later exceed its *overhead*, which this module estimates live:

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
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from muxlang import ir
    from muxlang.runtime.executor import Runtime


class Rounds:
    """Per run: how often each adaptive member's split rounds turned out to be needed."""

    def __init__(self) -> None:
        # (mux, pool position) -> [splits whose outcome is known, of them needed]
        self._seen: dict[tuple[str, int], list[int]] = {}

    def resolved(self, mux: str, position: int, needed: bool) -> None:
        """A round of this member left samples for later, and a later round of the same record
        drew some of them (``needed``) or the record settled without them. Splits still open
        do not count: under concurrency they would read as not needed."""
        seen = self._seen.setdefault((mux, position), [0, 0])
        seen[0] += 1
        seen[1] += needed

    def chance_needed(self, mux: str, position: int) -> float:
        splits, needed = self._seen.get((mux, position), (0, 0))
        return (needed + 1) / (splits + 2)

    def overhead(self, runtime: "Runtime", mux: "ir.Mux", position: int) -> float:
        """The member's overhead for ``semantics.next_draws`` (see the module docstring)."""
        model = mux.pool[position].member
        prompt = runtime.client(model).request_overhead(model)
        if prompt == 0 or math.isinf(prompt):
            return prompt
        q = self.chance_needed(mux.name, position)
        return prompt * q / (1 - q)
