"""Every sample of a run, one JSON object each (``muxlang run --log-samples FILE``).

``SampleLog(write, scorer).attach(runtime)`` sees every ``Runtime.sample`` call of a run (cached
samples included) and gives ``write`` one object per sample: ``id`` (the record's), ``member``
(the spec's model name), ``model`` (the id the server knows), ``sample`` (its index), ``prompt``
(the chat messages sent), ``text`` (the raw reply; None when it failed), ``answer`` (what the
task's extractor read), ``key`` (its equivalence key), ``error``, ``tokens`` (``input``,
``output``), ``latency`` (seconds of the request) and ``cached``. Which record a sample belongs to
is known from the task running it: ``record(record)`` marks it (a context variable, inherited by
the tasks the executor starts for that record).
"""
from __future__ import annotations

import contextvars
from typing import Any, Callable, Mapping, Optional

_RECORD: contextvars.ContextVar[Any] = contextvars.ContextVar("muxlang_sample_log_record",
                                                              default=None)


def sample_object(record_id: Any, model: Any, messages: Any, result: Any,
                  scorer: Any) -> dict[str, Any]:
    """The log object of one sample (a ``Sample`` or a ``SampleFailure``) of ``model``."""
    text = getattr(result, "text", None)
    error = getattr(result, "error", None) if text is None else None
    answer = scorer.extract(text) if text is not None and scorer is not None else None
    return {
        "id": record_id, "member": model.name, "model": model.id, "sample": result.index,
        "prompt": messages, "text": text, "answer": answer,
        "key": scorer.key(answer) if scorer is not None else None, "error": error,
        "tokens": {"input": getattr(result, "input_tokens", None),
                   "output": getattr(result, "output_tokens", None)},
        "latency": round(float(getattr(result, "latency", 0.0) or 0.0), 4),
        "cached": bool(getattr(result, "cached", False)),
    }


class SampleLog:
    def __init__(self, write: Callable[[dict[str, Any]], None], scorer: Any = None):
        self.write = write
        self.scorer = scorer
        self.count = 0

    def attach(self, runtime: Any) -> "SampleLog":
        """Log every sample ``runtime`` gives from now on."""
        inner = runtime.sample

        async def sample(model: Any, messages: Any, indices: Any) -> Any:
            results = await inner(model, messages, indices)
            record = _RECORD.get()
            record_id = record.get("id") if isinstance(record, Mapping) else None
            for result in results:
                self.write(sample_object(record_id, model, messages, result, self.scorer))
                self.count += 1
            return results

        runtime.sample = sample
        return self

    @staticmethod
    def record(record: Optional[Any]) -> Any:
        """Mark the running task (and the tasks it starts) as working on ``record``."""
        return _RECORD.set(record)


def stored(session: Any, spec: Any, dataset: str, *, ids: Optional[Any] = None,
           models: Optional[Any] = None, mux: Any = None, limit: Optional[int] = None
           ) -> list[dict[str, Any]]:
    """The stored samples of a mux's pool models on a dataset in the session's store, as the
    objects a run's sample log holds (``muxlang samples``): ``ids`` and ``models`` (spec model
    names) narrow it; ``limit``: the first items only. Nothing is written."""
    from muxlang.errors import MuxError, did_you_mean
    from muxlang.prompts import render
    from muxlang.scoring import Scorer
    from muxlang.session import _spec, pool_members, runnable_of
    from muxlang.store import resolve_dataset
    from muxlang.store.browse import stored_samples

    spec = _spec(spec)
    runnable = runnable_of(spec, mux)
    task = runnable.task
    pool = [model for model, _, _ in pool_members(runnable, None)]
    if models:
        names = {m.name for m in pool}
        for name in models:
            if name not in names:
                hint = did_you_mean(name, names)
                raise MuxError(f"no model '{name}' in the pool of '{runnable.name}'"
                               + (f"; {hint}" if hint else f" (models: {', '.join(sorted(names))})"))
        pool = [m for m in pool if m.name in set(models)]
    scorer = Scorer(task)
    store = session.open_store(must_exist=True)
    try:
        info = resolve_dataset(store, dataset, task.gold)
        items = store.items(info)
        if limit is not None:
            items = items[:limit]
        if ids is not None:
            wanted = {str(i) for i in ids}
            items = [item for item in items if str(item.key) in wanted]
            if not items:
                raise MuxError(f"dataset {info.name} has no item with id "
                               f"{', '.join(sorted(wanted))}")
        by_key = {str(item.key): item for item in items}
        out = []
        for sample in stored_samples(store, task, items, pool):
            try:
                prompt = render(task, by_key[str(sample.item)].record)
            except MuxError:
                prompt = None
            answer = scorer.extract(sample.text)
            out.append({
                "id": sample.item, "member": sample.model, "model": sample.model_id,
                "sample": sample.sample, "prompt": prompt, "text": sample.text,
                "answer": answer, "key": scorer.key(answer), "error": sample.error,
                "tokens": {"input": sample.tokens_in, "output": sample.tokens_out},
                "latency": sample.latency, "backend": sample.backend})
        return out
    finally:
        store.close()
