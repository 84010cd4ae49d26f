"""``muxlang import``: recorded model outputs (ZeroEval format) into the store.

Samples file: JSON lines ``{"id", "model", "sample", "temperature", "text"}`` (optionally gzipped),
each optionally with ``"cost"``: the USD that sample cost (what a gateway reported), kept as the
sample's cost; a value that is not a cost (not a number, negative, NaN, infinite, absurdly large:
``samples.checked_cost``) imports the sample without one and is said in the result's ``notes``;
questions file: JSON lines ``{"id", "question", "answer"}``. Every line is checked before anything
is written; the dataset, its items and all samples are then written in ONE transaction, so a bad
line or a crash keeps nothing of the import. Re-importing the same files changes nothing.

A sample already stored under the same key (model, temperature, question, sample index) with a
different text is a conflict: the import stops at the first one, naming its line and key, and
writes nothing; with ``replace=True`` the stored samples are replaced by the file's (their
cached answers go with them). A stored failed request is always replaced by a recorded text, and
a recorded failure (``"text": null``) never replaces a stored text.

Imported samples get backend ``"import"``, the recorded model name as model id, parameters
``{"temperature": T, "top_p": null, "max_tokens": null, "seed": null}`` and, as prompt hash, the
item's input hash (the question record without its gold answer), so a spec's ``replay`` backend
finds them by model id and question.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterator
from pathlib import Path

from sqlalchemy import select

from muxlang.errors import DataError, DatasetError, MuxError, shorten
from muxlang.samples import (MAX_REPORTED_COST, SampleKey, canonical_json, checked_cost,
                             record_input_hash)
from muxlang.store import schema as s
from muxlang.store.core import (CHUNK, MAX_NAME, Store, default_dataset_name, in_values,
                                item_key_of, iter_records, read_records)

IMPORT_BACKEND = "import"
IMPORT_BATCH = 10_000  # rows per insert batch inside the one import transaction
GOLD_FIELD = "answer"


@dataclass
class ImportResult:
    dataset: str
    dataset_hash: str
    items: int
    samples_read: int
    samples_written: int
    models: dict[str, int] = field(default_factory=dict)  # model -> samples in the file
    seconds: float = 0.0
    run_id: int | None = None
    samples_replaced: int = 0  # stored texts replaced (replace=True)
    notes: list[str] = field(default_factory=list)  # what was imported other than as written


def _check_questions(path: str) -> list[dict]:
    lines = read_records(path)
    seen: dict[str, int] = {}
    for position, (line, record) in enumerate(lines):
        if "id" not in record:
            raise DataError(path, line, "field 'id': missing")
        if not isinstance(record["id"], (str, int)) or isinstance(record["id"], bool):
            raise DataError(path, line, "field 'id': must be a string or an integer")
        if len(str(record["id"])) > MAX_NAME:
            raise DataError(path, line, f"field 'id': {len(str(record['id'])):,} characters, "
                                        f"more than the {MAX_NAME} a store keeps")
        for name in ("question", GOLD_FIELD):
            if name not in record:
                raise DataError(path, line, f"field '{name}': missing")
        if not isinstance(record["question"], str):
            raise DataError(path, line, "field 'question': must be a string")
        key = item_key_of(record, position)
        if key in seen:
            raise DataError(path, line, f"field 'id': duplicate id {shorten(key)} "
                                        f"(first on line {seen[key]})")
        seen[key] = line
    if not lines:
        raise DataError(path, 1, "no questions in the file")
    return [record for _, record in lines]


def _sample_rows(samples_path: str, questions_path: str, by_key: dict[str, str],
                 models: dict[str, int], run_id: int | None,
                 bad_costs: list[int] | None = None) -> Iterator[dict]:
    """Checked ``samples`` rows of a samples file, streamed; DataError at the first bad line.
    A "cost" that is not one is not an error: the sample is kept without it, its line appended
    to ``bad_costs``."""
    seen: dict[tuple[str, str, int], tuple[int, str | None, Any]] = {}
    params_of: dict[Any, str] = {}
    now = time.time()
    for line, record in iter_records(samples_path):
        def bad(field_name: str, message: str):
            raise DataError(samples_path, line, f"field '{field_name}': {message}")

        for field_name in ("id", "model", "sample", "text"):
            if field_name not in record:
                bad(field_name, "missing")
        item_id = record["id"]
        if not isinstance(item_id, (str, int)) or isinstance(item_id, bool):
            bad("id", "must be a string or an integer")
        item_id = str(item_id)
        if item_id not in by_key:
            bad("id", f"{shorten(item_id)} is not in {questions_path}")
        model = record["model"]
        if not isinstance(model, str) or not model.strip():
            bad("model", "must be a non-empty string")
        if len(model) > MAX_NAME:
            bad("model", f"{len(model):,} characters, more than the {MAX_NAME} a store keeps")
        index = record["sample"]
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            bad("sample", "must be an integer >= 0")
        temperature = record.get("temperature", None)
        if temperature is not None and (isinstance(temperature, bool)
                                        or not isinstance(temperature, (int, float))
                                        or not math.isfinite(temperature) or temperature < 0):
            bad("temperature", "must be a number >= 0")
        text = record["text"]
        if text is not None and not isinstance(text, str):
            bad("text", "must be a string (or null for a failed request)")
        marker = (model, item_id, index)
        if marker in seen:
            first_line, first_text, first_temp = seen[marker]
            if first_temp == temperature and first_text != text:
                bad("text", f"sample {index} of {shorten(model)} on {shorten(item_id)} differs "
                            f"from line {first_line}")
            if first_temp == temperature:
                continue  # an exact repeat: harmless
        seen[marker] = (line, text, temperature)
        params = params_of.get(temperature)
        if params is None:
            params = params_of[temperature] = canonical_json(
                {"temperature": temperature, "top_p": None, "max_tokens": None, "seed": None})
        key = SampleKey(IMPORT_BACKEND, model, params, by_key[item_id])
        models[model] = models.get(model, 0) + 1
        finish = record.get("finish_reason")
        cost = record.get("cost")
        if cost is not None:
            # a number only: the text "0.01" is not a cost in a JSON file
            kept = (checked_cost(cost) if isinstance(cost, (int, float)) else None)
            if kept is None and bad_costs is not None:
                bad_costs.append(line)
            cost = kept if text is not None else None
        yield {
            "key_hash": key.hash, "sample_index": index, "backend": key.backend, "model": model,
            "params": key.params, "prompt_hash": key.prompt_hash, "text": text,
            "tokens_in": None, "tokens_out": None, "latency": None,
            "finish_reason": finish if isinstance(finish, str) else None,
            "error": None if text is not None else "no output recorded",
            "created_at": now, "run_id": run_id, "cost": cost, "_line": line, "_item": item_id,
            "_temperature": temperature,
        }


class _Conflicts:
    """Rows of a batch whose (key, index) is stored with another text: an error at the first
    one, or (``replace``) the stored rows deleted so that the batch's take their place."""

    def __init__(self, store: Store, samples_path: str, replace: bool):
        self.store, self.path, self.replace = store, samples_path, replace
        self.replaced = 0

    def check(self, conn, batch: list[dict]) -> None:
        c = s.samples.c
        wanted = {(r["key_hash"], r["sample_index"]): r for r in batch if r["text"] is not None}
        hashes = sorted({h for h, _ in wanted})
        stale: list[int] = []
        for start in range(0, len(hashes), CHUNK):
            query = select(c.id, c.key_hash, c.sample_index, c.text).where(
                in_values(self.store.dialect, c.key_hash, hashes[start:start + CHUNK]),
                c.error.is_(None))
            for found in conn.execute(query):
                row = wanted.get((found.key_hash, found.sample_index))
                if row is None or row["text"] == found.text:
                    continue
                if not self.replace:
                    error = DataError(
                        self.path, row["_line"],
                        f"sample {row['sample_index']} of model {shorten(row['model'])} on "
                        f"{shorten(row['_item'])} (temperature {row['_temperature']}) is already stored "
                        "with a different text; nothing was imported (replace=True replaces "
                        "the stored texts with the file's)")
                    error.conflict = True
                    raise error
                stale.append(found.id)
        for start in range(0, len(stale), CHUNK):
            ids = stale[start:start + CHUNK]
            conn.execute(s.answers.delete().where(in_values(self.store.dialect,
                                                             s.answers.c.sample_id, ids)))
            conn.execute(s.samples.delete().where(in_values(self.store.dialect, c.id, ids)))
        self.replaced += len(stale)


def _plain(batch: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if not k.startswith("_")} for row in batch]


def import_samples(store: Store, samples_path: str | Path, questions_path: str | Path,
                   dataset: str | None = None, *, replace: bool = False) -> ImportResult:
    """Import a samples file with its questions (see the module docstring); ``replace``: stored
    samples whose text differs from the file's are replaced instead of being a conflict."""
    started = time.perf_counter()
    samples_path, questions_path = str(samples_path), str(questions_path)
    records = _check_questions(questions_path)
    by_key = {item_key_of(r, i): record_input_hash(r, GOLD_FIELD) for i, r in enumerate(records)}
    name = dataset or default_dataset_name(questions_path)

    if not Path(samples_path).is_file():
        raise DatasetError(f"{samples_path}: no such file" if not Path(samples_path).exists()
                           else f"{samples_path}: not a file", dataset=samples_path)
    models: dict[str, int] = {}
    bad_costs: list[int] = []
    counts = {"read": 0, "written": 0}
    run_id = store.start_run("import", {"samples": samples_path, "questions": questions_path,
                                        "dataset": name})
    try:
        # one transaction: the samples are checked and written in batches as the file streams
        # by; a bad line (or anything else) rolls all of it back, the dataset included
        with store.transaction() as conn:
            info = store.put_dataset(name, records, gold_field=GOLD_FIELD, source=questions_path,
                                     conn=conn)
            conflicts = _Conflicts(store, samples_path, replace)
            batch: list[dict] = []
            for row in _sample_rows(samples_path, questions_path, by_key, models, run_id,
                                    bad_costs):
                batch.append(row)
                if len(batch) >= IMPORT_BATCH:
                    conflicts.check(conn, batch)
                    counts["written"] += store._put_rows(conn, _plain(batch), replace_errors=True)
                    counts["read"] += len(batch)
                    batch = []
            conflicts.check(conn, batch)
            counts["written"] += store._put_rows(conn, _plain(batch), replace_errors=True)
            counts["read"] += len(batch)
            if counts["read"] == 0:
                raise DataError(samples_path, 1, "no samples in the file")
    except BaseException as error:
        store.finish_run(run_id, "failed", {"error": str(error)[:500]})
        raise
    written = counts["written"]
    if written and store.dialect == "postgresql":
        store.analyze()  # fresh planner statistics after a bulk load
    result = ImportResult(dataset=info.name, dataset_hash=info.content_hash, items=len(records),
                          samples_read=counts["read"], samples_written=written, models=models,
                          seconds=time.perf_counter() - started, run_id=run_id,
                          samples_replaced=conflicts.replaced)
    if bad_costs:
        lines = ", ".join(map(str, bad_costs[:5])) + (", ..." if len(bad_costs) > 5 else "")
        result.notes.append(
            f"{samples_path}: field 'cost' on {len(bad_costs)} line(s) ({lines}) is not a cost "
            f"in USD (a number from 0 to {MAX_REPORTED_COST:g}); those samples were imported "
            "without one")
    store.finish_run(run_id, "ok", {"dataset": info.name, "items": len(records),
                                    "samples_read": counts["read"], "samples_written": written,
                                    "samples_replaced": conflicts.replaced})
    return result
