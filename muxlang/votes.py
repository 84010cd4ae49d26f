"""Stored answers shaped for scoring: the boundary between the store and its readers.

``muxlang eval`` and the optimizer never look at raw text or SQL; they get a ``StoredVotes``: for
one dataset and one task, every model's equivalence keys per item in sample-index order, the gold
key per item, and mean token counts for cost accounting.
"""
from __future__ import annotations

from dataclasses import dataclass, field


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

    def cost_per_sample(self, model: str) -> float:
        """Expected USD per sample of ``model`` (0 when no prices are set)."""
        return (self.input_tokens.get(model, 0.0) * self.price_input.get(model, 0.0)
                + self.output_tokens.get(model, 0.0) * self.price_output.get(model, 0.0))

    def tokens_per_sample(self, model: str) -> float:
        return self.input_tokens.get(model, 0.0) + self.output_tokens.get(model, 0.0)
