"""``load_votes``: stored samples → equivalence keys per model and item (``StoredVotes``).

Answers depend on the task's extractor and equivalence rule, so they are not columns of
``samples``: they are computed on first read and cached in ``answers`` (per sample) and
``gold_keys`` (per item), under a *signature* = hash of the extractor call, the equivalence call
and the source code of the stdlib extractor/equivalence modules (plus the math-verify version).
Changing a task's extractor, or fixing a bug in the stdlib, therefore never serves stale keys;
old cache rows are simply not read.

How a spec model finds its samples on a dataset item:
- a live backend (``openai``/``ollama``): the exact cache key, i.e. backend name, model id,
  sampling parameters and the hash of the task's prompt rendered for the item;
- a ``replay`` backend: the model id, with prompt hash = the item's input hash (recorded imports)
  or the rendered prompt's hash (samples collected earlier), any backend and parameters. When
  several parameter sets are stored for one model, the one equal to the spec model's sampling
  parameters is used, else it is an error naming them.
"""
from __future__ import annotations

import hashlib
import importlib.util
from collections import defaultdict
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Callable, Iterable, Sequence

from sqlalchemy import select

from muxlang import ir
from muxlang.errors import DatasetError, MuxError
from muxlang.prompts import render
from muxlang.samples import SampleKey, canonical_json, prompt_hash
from muxlang.store import schema as s
from muxlang.store.core import CHUNK, DatasetInfo, Item, Store, gold_text, in_values
from muxlang.votes import StoredVotes


@lru_cache(maxsize=None)
def _code_version() -> str:
    digest = hashlib.sha256()
    for module in ("muxlang.stdlib.extractors", "muxlang.stdlib.equivalence",
                   "muxlang.stdlib.literals", "muxlang.stdlib.execution"):
        spec = importlib.util.find_spec(module)
        if spec and spec.origin:
            with open(spec.origin, "rb") as handle:
                digest.update(handle.read())
    try:
        from importlib.metadata import version

        digest.update(version("math-verify").encode())
    except Exception:  # pragma: no cover
        pass
    return digest.hexdigest()[:16]


def answer_signature(task: ir.Task) -> str:
    """The cache signature of a task's extractor + equivalence (and the stdlib code behind them)."""
    return hashlib.sha256(f"{task.extract}|{task.equivalence}|{_code_version()}".encode()
                          ).hexdigest()[:32]


class Reader:
    """A task's extractor and equivalence, applied safely; built on first use, so a fully cached
    read never imports math-verify/SymPy."""

    def __init__(self, task: ir.Task):
        self.task = task
        self._extract: Callable[[str], str | None] | None = None
        self._key: Callable[[str], str | None] | None = None
        self._equivalence: Any = None

    @classmethod
    def for_task(cls, task: ir.Task) -> "Reader":
        return cls(task)

    def _build(self) -> None:
        from muxlang.stdlib.registry import make_equivalence, make_extractor

        equivalence = make_equivalence(self.task.equivalence)
        self._equivalence = equivalence
        self._key = equivalence.key if hasattr(equivalence, "key") else equivalence
        self._extract = make_extractor(self.task.extract)

    def extract(self, text: str) -> str | None:
        if self._extract is None:
            self._build()
        return self._extract(text)

    def key(self, answer: str) -> str | None:
        if self._key is None:
            self._build()
        return self._key(answer)

    def record_aware(self) -> bool:
        """Does the equivalence key an answer by its record (``for_record``: code by execution)?
        Asked of the factory (``record_aware = True``), so nothing is built for a cached read."""
        from muxlang.stdlib.registry import EQUIVALENCES

        entry = EQUIVALENCES.get(self.task.equivalence.name)
        if entry is None or not getattr(entry.load(), "record_aware", False):
            return False
        if self._extract is None:
            self._build()
        return hasattr(self._equivalence, "for_record")

    def prepare(self, pairs: list[tuple[str | None, dict]]) -> None:
        """Let a record-aware equivalence compute many keys at once (in parallel)."""
        if self.record_aware() and hasattr(self._equivalence, "prepare"):
            self._equivalence.prepare(pairs)

    def answer(self, text: str | None, record: dict | None = None
               ) -> tuple[str | None, str | None]:
        if text is None:
            return None, None
        try:
            answer = self.extract(text)
            if answer is not None and record is not None and self.record_aware():
                return answer, self._equivalence.for_record(record)(answer)
            return answer, (self.key(answer) if answer is not None else None)
        except Exception:  # a stdlib failure on odd text is an unreadable answer, not a crash
            return None, None

    def gold(self, text: str | None, record: dict | None = None) -> str | None:
        """Gold text → key; a rationale ("... #### 18") is read with the extractor as a fallback."""
        if text is None:
            return None
        try:
            if record is not None and self.record_aware():
                return self._equivalence.for_record(record)(text)
            key = self.key(text)
            if key is None:
                answer = self.extract(text)
                key = self.key(answer) if answer is not None else None
            return key
        except Exception:
            return None


def pool_models(mux: ir.Mux) -> list[ir.Model]:
    """The models of a mux's pool, nested muxes flattened, each once, in pool order."""
    out: dict[str, ir.Model] = {}
    for _, member in ir.model_members(mux):
        out.setdefault(member.name, member.member)
    return list(out.values())


def _chunks(values: Sequence, size: int = CHUNK) -> Iterable[Sequence]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


@dataclass
class _Row:
    id: int
    index: int
    backend: str
    params: str
    error: str | None
    tokens_in: int | None
    tokens_out: int | None
    cached: bool
    key: str | None
    cost: float | None = None  # USD a gateway reported for it (schema v6)


def _fetch(store: Store, cx, where_column, values: Sequence[str], model_id: str | None,
           signature: str) -> list[tuple[str, _Row]]:
    """Samples whose ``where_column`` is in ``values`` (of ``model_id``), with cached keys.

    Two queries rather than an outer join: the cache lookup then goes by primary key, whatever
    the planner thinks of a freshly filled ``answers`` table."""
    c, a = s.samples.c, s.answers.c
    out = []
    costs = [c.cost] if store.has_costs else []  # a store older than v6 has none
    for chunk in _chunks(sorted(set(values)), CHUNK if store.dialect == "sqlite" else 20000):
        query = (select(where_column, c.id, c.sample_index, c.backend, c.params, c.error,
                        c.tokens_in, c.tokens_out, *costs)
                 .where(in_values(store.dialect, where_column, chunk)))
        if model_id is not None:
            query = query.where(c.model == model_id)
        for r in cx.execute(query):
            out.append((r[0], _Row(r.id, r.sample_index, r.backend, r.params, r.error, r.tokens_in,
                                   r.tokens_out, False, None, r.cost if costs else None)))
    by_id = {row.id: row for _, row in out}
    ids = sorted(by_id)
    for chunk in _chunks(ids, CHUNK if store.dialect == "sqlite" else 20000):
        query = select(a.sample_id, a.key).where(in_values(store.dialect, a.sample_id, chunk),
                                                 a.signature == signature)
        for r in cx.execute(query):
            row = by_id[r.sample_id]
            row.cached, row.key = True, r.key
    return out


def _fill_cache(store: Store, signature: str, reader: Reader, rows: list[_Row],
                records: dict[int, dict] | None = None) -> None:
    """Compute and store answers for rows that have none cached under ``signature``
    (``records``: sample id → its item's record, for a record-aware equivalence)."""
    todo = {row.id: row for row in rows if not row.cached}
    if not todo:
        return
    c = s.samples.c
    ids = sorted(todo)
    new = []
    aware = records is not None and reader.record_aware()
    with store.engine.connect() as cx:
        for chunk in _chunks(ids):
            fetched = list(cx.execute(select(c.id, c.text, c.error).where(
                in_values(store.dialect, c.id, chunk))))
            if aware:
                reader.prepare([(reader.extract(r.text), records.get(r.id, {}))
                                for r in fetched if r.error is None and r.text is not None])
            for r in fetched:
                answer, key = reader.answer(r.text if r.error is None else None,
                                            records.get(r.id) if aware else None)
                todo[r.id].key, todo[r.id].cached = key, True
                new.append({"sample_id": r.id, "signature": signature, "answer": answer,
                            "key": key})
    if not store.writable:  # a store opened only to read: the answers serve this command only
        return
    with store.transaction() as cx:
        store.insert_ignore(cx, s.answers, new, ["sample_id", "signature"])


def gold_keys(store: Store, items: Sequence[Item], task: ir.Task, reader: Reader | None = None,
              signature: str | None = None) -> list[str | None]:
    """The gold equivalence key of each item (cached per item and signature)."""
    signature = signature or answer_signature(task)
    g = s.gold_keys.c
    cached: dict[int, str | None] = {}
    with store.engine.connect() as cx:
        for chunk in _chunks([item.id for item in items]):
            for r in cx.execute(select(g.item_id, g.key).where(in_values(store.dialect, g.item_id, chunk),
                                                                g.signature == signature)):
                cached[r.item_id] = r.key
    missing = [item for item in items if item.id not in cached]
    if missing:
        reader = reader or Reader.for_task(task)
        new = []
        aware = reader.record_aware()  # code by execution: keyed with the item's record
        if aware:
            reader.prepare([(item.gold, item.record) for item in missing])
        for item in missing:
            cached[item.id] = reader.gold(item.gold, item.record if aware else None)
            new.append({"item_id": item.id, "signature": signature, "key": cached[item.id]})
        if store.writable:
            with store.transaction() as cx:
                store.insert_ignore(cx, s.gold_keys, new, ["item_id", "signature"])
    return [cached[item.id] for item in items]


def load_votes(store: Store, spec: ir.Spec | None, mux: ir.Mux, dataset: DatasetInfo | str, *,
               models: Sequence[ir.Model] | None = None, task: ir.Task | None = None,
               items: Sequence[Item] | None = None) -> StoredVotes:
    """Every stored sample of ``models`` (default: the mux's pool, nested muxes flattened) on
    ``dataset``, read with the task's extractor and equivalence (cached), as ``StoredVotes``.

    ``votes[model][i]`` lists the equivalence keys of ALL stored samples of that model on item i
    in sample-index order (more than the mux draws, if more are stored: subsampling is the
    reader's business); ``None`` marks an unreadable answer or a failed request; an empty list
    means nothing is stored for that item. Token means are over samples with recorded tokens
    (models with none recorded are absent from ``input_tokens``/``output_tokens``); the mean
    reported cost over samples with one (``reported_cost``; what ``StoredVotes.cost_per_sample``
    prefers to prices).
    """
    info = store.require_dataset(dataset)
    task = task or mux.task
    models = list(models) if models is not None else pool_models(mux)
    items = list(items) if items is not None else store.items(info)
    signature = answer_signature(task)
    reader = Reader.for_task(task)
    gold_signature = signature
    if task.gold and task.gold != info.gold_field:
        # the task reads its gold answer from another field than the one stored at import
        items = [replace(item, gold=gold_text(item.record.get(task.gold))) for item in items]
        gold_signature = hashlib.sha256(f"{signature}|{task.gold}".encode()).hexdigest()[:32]
    gold = gold_keys(store, items, task, reader, gold_signature)

    rendered: list[str | None] = []
    render_error: str | None = None
    for item in items:
        try:
            rendered.append(prompt_hash(render(task, item.record)))
        except MuxError as error:
            rendered.append(None)  # the template does not fit the record: only replay can match
            render_error = render_error or str(error)

    votes: dict[str, list[list[str | None]]] = {}
    tokens_in: dict[str, float] = {}
    tokens_out: dict[str, float] = {}
    reported: dict[str, float] = {}
    with store.engine.connect() as cx:
        for model in models:
            per_item: list[list[_Row]] = [[] for _ in items]
            if model.backend.kind == "replay":
                where: dict[str, list[int]] = defaultdict(list)
                for position, item in enumerate(items):
                    where[item.input_hash].append(position)
                    if rendered[position] is not None and rendered[position] != item.input_hash:
                        where[rendered[position]].append(position)
                fetched = _fetch(store, cx, s.samples.c.prompt_hash, list(where), model.id,
                                 signature)
                groups = {(row.backend, row.params) for _, row in fetched}
                chosen = _choose_group(model, groups)
                for token, row in fetched:
                    if (row.backend, row.params) == chosen:
                        for position in where[token]:
                            per_item[position].append(row)
            else:
                where = defaultdict(list)
                missing_template = [items[p].key for p, h in enumerate(rendered) if h is None]
                if missing_template:
                    raise DatasetError(f"task {task.name}: its prompt cannot be rendered for "
                                       f"item {missing_template[0]!r} of dataset {info.name}: "
                                       f"{render_error}", dataset=info.name)
                for position, h in enumerate(rendered):
                    key = SampleKey.make(model.backend.name, model.id, model.sampling_params(), h)
                    where[key.hash].append(position)
                for token, row in _fetch(store, cx, s.samples.c.key_hash, list(where), None,
                                         signature):
                    for position in where[token]:
                        per_item[position].append(row)
            all_rows = [row for rows in per_item for row in rows]
            records = ({row.id: items[position].record for position, rows in enumerate(per_item)
                        for row in rows} if reader.record_aware() else None)
            _fill_cache(store, signature, reader, all_rows, records)
            votes[model.name] = [
                [None if row.error is not None else row.key
                 for row in sorted(rows, key=lambda r: r.index)]
                for rows in per_item]
            known_in = [row.tokens_in for row in all_rows if row.tokens_in is not None]
            known_out = [row.tokens_out for row in all_rows if row.tokens_out is not None]
            if known_in:
                tokens_in[model.name] = sum(known_in) / len(known_in)
            if known_out:
                tokens_out[model.name] = sum(known_out) / len(known_out)
            known_cost = [row.cost for row in all_rows
                          if row.cost is not None and row.error is None]
            if known_cost:
                reported[model.name] = sum(known_cost) / len(known_cost)

    return StoredVotes(
        dataset=info.name, items=[item.key for item in items], models=[m.name for m in models],
        votes=votes, gold=gold, input_tokens=tokens_in, output_tokens=tokens_out,
        price_input={m.name: m.price_input for m in models},
        price_output={m.name: m.price_output for m in models}, reported_cost=reported)


def _choose_group(model: ir.Model, groups: set[tuple[str, str]]) -> tuple[str, str] | None:
    if len(groups) <= 1:
        return next(iter(groups), None)
    wanted = canonical_json(model.sampling_params())
    matching = [g for g in groups if g[1] == wanted]
    if len(matching) == 1:
        return matching[0]
    described = "; ".join(f"backend {b} with {p}" for b, p in sorted(groups))
    raise MuxError(f"model {model.name} ({model.id!r}): the store holds samples under several "
                   f"sampling settings ({described}); set the model's sampling parameters in the "
                   "spec to the one to replay")
