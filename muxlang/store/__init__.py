"""The sample store: datasets, items, samples, runs, and cached answers (SQLAlchemy 2.x).

Where it lives
    ``Store(url)``: ``url`` = ``--store`` value, else ``$MUXLANG_STORE``, else ``muxlang.sqlite`` in
    the working directory. A plain path means a SQLite file (WAL, busy timeout 30 s, every
    transaction ``BEGIN IMMEDIATE``); ``postgresql://user@host:5432/db`` (or
    ``postgresql+psycopg://...``) means PostgreSQL via psycopg 3. ``store.display_url`` is the URL
    with its password hidden: print that, never ``store.url``. Opening a store creates or upgrades
    its schema (``migrations.MIGRATIONS``, an ordered list; ``store.version``), but only in an
    empty database or a store recognised as muxlang's (its ``muxlang_meta`` table, or the exact
    tables of an earlier version: ``migrations.recognise``); anything else is refused untouched.
    ``Store(url, must_exist=True)`` is for commands that only read: nothing is created, migrated
    or switched, a read-only SQLite file is opened read-only, and caches are written only when
    ``store.writable``. Text columns take any Python string (``schema.SafeText``: NUL and lone
    surrogates are stored escaped and read back exactly).

Cache API (for the runtime: ``run`` and ``collect``)
    key = SampleKey.for_model(model, messages)      # muxlang.samples; ir.Model + the messages sent
          # = (backend name, model id, canonical sampling params, prompt_hash(messages))
    stored = store.get_samples(key, k)             # [StoredSample] with index < k, by index
    many = store.get_samples_many(keys, k)          # {key.hash: [StoredSample]}, batched lookups
    todo = store.missing_indices(key, k, stored)   # indices in range(k) still to draw
    store.put_samples([NewSample(key, index, text, tokens_in, tokens_out, latency,
                                 finish_reason, error, run_id, cost), ...])
    ``cost``: USD a gateway reported for the sample (schema v6); a value that is not a cost
    (negative, NaN, infinite, absurd: ``muxlang.samples.checked_cost``) is stored as NULL.
    ``put_samples`` is one transaction and idempotent (ON CONFLICT DO NOTHING on the unique
    (key hash, sample index), on both dialects): writing a sample twice stores it once. A sample
    with ``error`` set records a failed request; it counts as *missing* for ``missing_indices``
    (so it is retried) and is replaced when a successful sample for the same index is put.
    Draw index i only for i in ``missing_indices``: k samples are then always k distinct indices,
    and a stored sample is never requested again. Use ``muxlang.prompts.render(task, record)``
    and ``muxlang.samples.prompt_hash`` so every command hashes prompts the same way.

    The runtime plugs the store in as its sample cache with
    ``Runtime(..., cache=muxlang.store.cache.StoreCache(store, run_id))`` (used by ``collect`` and
    ``run`` with a store): ``get`` serves stored successful samples, ``put`` stores each request's
    samples as they arrive.

Runs
    run_id = store.start_run("collect", params, spec_path=..., spec_text=...)
    store.finish_run(run_id, "ok" | "failed" | "interrupted", summary)
    A run keeps its host and pid (schema v3); ``start_run`` marks "killed" the runs of this host
    left "running" by processes that no longer exist (e.g. after ``kill -9``).

Datasets
    load_dataset_file(store, path) -> DatasetInfo   # JSONL / JSONL.gz / JSON list, content-hashed
    resolve_dataset(store, name_or_path, gold_field) -> DatasetInfo   # what --dataset takes
    store.items(dataset) -> [Item(id, position, key, record, gold, input_hash)]

For eval and the optimizer
    load_votes(store, spec, mux, dataset, models=None) -> muxlang.votes.StoredVotes
    Extracted answers and equivalence keys are cached per (sample, signature), where the
    signature covers the task's extractor and equivalence and the stdlib code (see ``votes.py``).

Imports
    import_samples(store, samples_path, questions_path, dataset=None, replace=False)
        -> ImportResult; a stored sample with another text under the same key is a DataError
        at its line (nothing written) unless ``replace``
"""
from muxlang.store.core import (DatasetInfo, Item, NewSample, Store, StoredSample,
                                default_dataset_name, load_dataset_file, read_records,
                                resolve_dataset)
from muxlang.store.importer import ImportResult, import_samples
from muxlang.store.urls import redact_url, resolve_url
from muxlang.store.votes import answer_signature, load_votes, pool_models

__all__ = [
    "DatasetInfo", "ImportResult", "Item", "NewSample", "Store", "StoredSample",
    "answer_signature", "default_dataset_name", "import_samples", "load_dataset_file",
    "load_votes", "pool_models", "read_records", "redact_url", "resolve_dataset", "resolve_url",
]
