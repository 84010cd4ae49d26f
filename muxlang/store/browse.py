"""Reading stored samples back as they are: per dataset item and model, the raw texts
(``muxlang samples``, the HTML report's raw samples). Read only.

A model's samples on an item are found as ``load_votes`` finds them: by the model id and the
hash of the task's prompt rendered for the item, or (recorded imports) the item's input hash.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from sqlalchemy import select

from muxlang import ir
from muxlang.errors import MuxError
from muxlang.prompts import render
from muxlang.samples import prompt_hash
from muxlang.store import schema as s
from muxlang.store.core import Item, Store, in_values


@dataclass
class StoredSample:
    item: str  # the record's id
    model: str  # the spec's model name
    model_id: str
    sample: int
    text: str | None
    error: str | None
    tokens_in: int | None
    tokens_out: int | None
    latency: float | None
    backend: str
    params: str


def stored_samples(store: Store, task: ir.Task, items: Sequence[Item],
                   models: Iterable[ir.Model]) -> list[StoredSample]:
    """Every stored sample of ``models`` on ``items`` (item order, then model, then index)."""
    hashes: dict[str, list[int]] = {}
    for position, item in enumerate(items):
        hashes.setdefault(item.input_hash, []).append(position)
        try:
            rendered = prompt_hash(render(task, item.record))
        except MuxError:
            continue
        if rendered != item.input_hash:
            hashes.setdefault(rendered, []).append(position)
    c = s.samples.c
    found: list[tuple[int, int, StoredSample]] = []
    models = list(models)
    with store.engine.connect() as cx:
        for order, model in enumerate(models):
            keys = sorted(hashes)
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                query = (select(c.prompt_hash, c.sample_index, c.text, c.error, c.tokens_in,
                                c.tokens_out, c.latency, c.backend, c.params)
                         .where(c.model == model.id)
                         .where(in_values(store.dialect, c.prompt_hash, chunk)))
                for r in cx.execute(query):
                    for position in hashes.get(r.prompt_hash, []):
                        found.append((position, order, StoredSample(
                            items[position].key, model.name, model.id, r.sample_index, r.text,
                            r.error, r.tokens_in, r.tokens_out, r.latency, r.backend, r.params)))
    found.sort(key=lambda t: (t[0], t[1], t[2].sample, t[2].backend, t[2].params))
    return [sample for _, _, sample in found]
