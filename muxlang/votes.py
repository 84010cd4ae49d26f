"""Stored answers shaped for scoring: the boundary between the store and its readers.

``muxlang eval`` and the optimizer never look at raw text or SQL; they get a ``StoredVotes``: for
one dataset and one task, every model's equivalence keys per item in sample-index order, the gold
key per item, and what a sample costs.

What a sample of a model costs (``cost_per_sample``, the one rule every reader calls): the mean
USD a gateway reported for its loaded samples (``x-litellm-response-cost``, or an import's
``cost``) when it reported any, else the spec's prices times the mean stored token counts. A
reported $0 does not hide a price the spec gives (a gateway may report 0 for a model it has no
price for); with no spec price, it is the cost. ``cost_source`` says which one it was.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

GATEWAY = "gateway"  # cost_source: the mean cost a gateway reported for the model's samples
PRICES = "prices"  # cost_source: the spec's prices times the mean stored token counts


@dataclass
class StoredVotes:
    dataset: str  # dataset name in the store
    items: list[str]  # item ids, in dataset order
    models: list[str]  # model names as the spec declares them
    # model -> per item -> equivalence keys of its stored samples, in sample-index order;
    # None marks a sample whose answer could not be read (it still counts in k).
    votes: dict[str, list[list[str | None]]]
    gold: list[str | None]  # gold equivalence key per item (None: gold missing/unreadable)
    input_tokens: dict[str, float] = field(default_factory=dict)  # model -> mean per sample
    output_tokens: dict[str, float] = field(default_factory=dict)  # model -> mean per sample
    price_input: dict[str, float] = field(default_factory=dict)  # model -> USD per token
    price_output: dict[str, float] = field(default_factory=dict)  # model -> USD per token
    # model -> mean USD per sample a gateway reported, over its loaded samples that have one
    # (absent: none reported)
    reported_cost: dict[str, float] = field(default_factory=dict)

    def _priced(self, model: str) -> bool:
        return bool(self.price_input.get(model) or self.price_output.get(model))

    def cost_source(self, model: str) -> Optional[str]:
        """Where ``cost_per_sample(model)`` comes from: ``"gateway"`` (reported costs),
        ``"prices"`` (the spec's prices and stored output token counts) or None (unknown: it
        counts as 0)."""
        reported = self.reported_cost.get(model)
        if reported is not None and (reported > 0 or not self._priced(model)):
            return GATEWAY
        if self._priced(model) and model in self.output_tokens:
            return PRICES
        return None

    def cost_per_sample(self, model: str) -> float:
        """Expected USD per sample of ``model``: the gateway's reported mean when there is one,
        else prices times mean tokens (0 when neither is known)."""
        if self.cost_source(model) == GATEWAY:
            return self.reported_cost[model]
        return (self.input_tokens.get(model, 0.0) * self.price_input.get(model, 0.0)
                + self.output_tokens.get(model, 0.0) * self.price_output.get(model, 0.0))

    def cost_of(self, pairs: Sequence[tuple[str, int]]) -> Optional[float]:
        """USD of drawing ``k`` samples of each ``(model, k)``; None when unknown: no model has
        a cost, or one has neither a reported cost nor token counts (a model with tokens and no
        price counts as free, as it always did)."""
        if not any(self.cost_source(name) for name, _ in pairs):
            return None
        if any(self.cost_source(name) != GATEWAY and name not in self.output_tokens
               for name, _ in pairs):
            return None
        return sum(k * self.cost_per_sample(name) for name, k in pairs)

    def cost_sources(self, models: Iterable[str]) -> str:
        """Where the costs of ``models`` come from, said for people: "reported by the gateway
        for a, b; the spec's prices x stored tokens for c; unknown for d"."""
        by_source: dict[Optional[str], list[str]] = {}
        for model in models:
            by_source.setdefault(self.cost_source(model), []).append(model)
        said = {GATEWAY: "reported by the gateway for", PRICES: "the spec's prices x stored "
                "tokens for", None: "unknown (no price, no reported cost) for"}
        return "; ".join(f"{said[source]} {', '.join(names)}"
                         for source, names in sorted(by_source.items(),
                                                     key=lambda kv: [GATEWAY, PRICES, None]
                                                     .index(kv[0])))

    def tokens_per_sample(self, model: str) -> float:
        return self.input_tokens.get(model, 0.0) + self.output_tokens.get(model, 0.0)
