"""Canonical forms and hashes: what makes two sample requests "the same request".

A sample is identified by ``(backend, model id, sampling parameters, prompt hash, sample index)``.
The first four form a :class:`SampleKey`; its ``hash`` (SHA-256 of their canonical JSON) is what
the ``samples`` table is unique on, together with the sample index.

- ``backend`` is the backend's *name* in the spec (not its URL), so overriding a URL on the command
  line keeps the cache; recorded imports use the backend name ``"import"``.
- parameters are ``ir.Model.sampling_params()`` in canonical JSON: sorted keys, no spaces, numbers
  normalised (``1`` and ``1.0`` are one temperature), ``None`` kept (an unset parameter differs
  from a set one).
- the prompt hash is SHA-256 of the canonical JSON of the chat messages actually sent
  (``[{"role": "system", "content": ...}, {"role": "user", "content": ...}]``), see
  :func:`render_messages` and :func:`prompt_hash`. For recorded (replayed) outputs, whose exact
  prompt is unknown, it is the item's input hash (:func:`record_input_hash`).
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from muxlang.errors import MuxError


def _normalise(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        number = float(value)
        if math.isfinite(number) and number.is_integer() and abs(number) < 2**53:
            return int(number)
        return number
    if isinstance(value, Mapping):
        return {str(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    return str(value)


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, compact, numbers normalised (1.0 -> 1), UTF-8 kept."""
    if isinstance(value, (list, tuple)) and all(type(v) is str for v in value):
        return json.dumps(list(value), separators=(",", ":"), ensure_ascii=False)  # fast path
    return json.dumps(_normalise(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def prompt_hash(messages: Sequence[Mapping[str, Any]]) -> str:
    """Hash of the chat messages sent to the model (role and content of each, in order)."""
    return sha256(canonical_json([{"role": m["role"], "content": m["content"]} for m in messages]))


def record_input_hash(record: Mapping[str, Any], gold_field: str | None) -> str:
    """Hash of a dataset record without its gold answer: what a recorded output answered.

    Recorded outputs (``muxlang import``) are stored under this as their prompt hash, so the same
    question imported twice (under any dataset name) shares its samples, and correcting a gold
    answer does not orphan them.
    """
    visible = {k: v for k, v in record.items() if k != gold_field}
    return sha256("record:" + canonical_json(visible))


_SLOT = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_\-]*)\}")


def render_template(template: str, record: Mapping[str, Any], *, where: str = "template") -> str:
    """Fill ``{field}`` slots from ``record``; ``{{`` and ``}}`` are literal braces."""

    def fill(match: re.Match) -> str:
        token = match.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        name = match.group(1)
        if name not in record:
            raise MuxError(f"{where}: slot {{{name}}} has no field '{name}' in the record "
                           f"(fields: {', '.join(sorted(map(str, record))) or 'none'})")
        value = record[name]
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

    return _SLOT.sub(fill, template)


def render_messages(task: Any, record: Mapping[str, Any]) -> list[dict[str, str]]:
    """The chat messages of ``task`` (an ``ir.Task``) for one record: system (if any), then user.

    Exactly what the runtime sends (``muxlang.runtime.templates.render``), so prompt hashes agree;
    a record that does not fit the template raises MuxError.
    """
    try:
        from muxlang.runtime.templates import RecordError, render
    except ImportError:  # pragma: no cover - runtime not installed
        render = None
    if render is not None:
        try:
            return render(task, record)
        except RecordError as error:
            raise MuxError(str(error)) from None
    messages = []
    if task.system:
        messages.append({"role": "system",
                         "content": render_template(task.system, record, where=f"task {task.name}")})
    messages.append({"role": "user",
                     "content": render_template(task.user, record, where=f"task {task.name}")})
    return messages


@dataclass(frozen=True)
class SampleKey:
    """Everything that determines a sample except its index."""

    backend: str
    model: str  # the model id the server knows
    params: str  # canonical JSON of the sampling parameters
    prompt_hash: str

    @property
    def hash(self) -> str:
        return sha256(canonical_json([self.backend, self.model, self.params, self.prompt_hash]))

    @classmethod
    def make(cls, backend: str, model: str, params: Mapping[str, Any], prompt_hash: str) -> "SampleKey":
        return cls(backend, model, canonical_json(dict(params)), prompt_hash)

    @classmethod
    def for_model(cls, model: Any, messages: Sequence[Mapping[str, Any]]) -> "SampleKey":
        """The key of ``model`` (an ``ir.Model``) answering ``messages``."""
        return cls.make(model.backend.name, model.id, model.sampling_params(), prompt_hash(messages))
