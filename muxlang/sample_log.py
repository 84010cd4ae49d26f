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
