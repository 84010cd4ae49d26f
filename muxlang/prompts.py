"""Prompt rendering: a task's templates filled from one input record → the chat messages sent.

This is the one renderer: the runtime sends what it returns, and the store, ``collect`` and
``eval`` hash what it returns (``muxlang.samples.prompt_hash``) to find stored samples. Two
renderers that disagree on one record put its samples under two prompt hashes, so there must be
exactly one, below both the runtime and the store.

How values are written into a slot (it decides every stored prompt hash, so it does not change):

- a string as it is; numbers and booleans as Python's ``format`` writes them (``3``, ``0.5``,
  ``True``); lists and objects as JSON (``ensure_ascii=False``);
- ``None`` (JSON ``null``) as the empty string. The runtime has always sent it so, and the store
  hashed what the runtime sent: every sample stored by ``run --store`` or ``collect`` for a record
  with a null field is keyed by the prompt with an empty slot. Writing ``null`` instead would change
  those prompt hashes and orphan the stored samples.
- ``{{`` and ``}}`` are literal braces (``str.format`` rules; the checker allows only ``{field}``
  slots).
"""
from __future__ import annotations

import json
import string
from typing import TYPE_CHECKING, Any, Mapping

from muxlang.errors import MuxError

if TYPE_CHECKING:  # pragma: no cover
    from muxlang.ir import Task

Messages = list[dict[str, str]]


class RecordError(MuxError):
    """A record that cannot be run (bad JSON, missing field): the message, without file:line."""


class _Values(dict):
    def __missing__(self, key: str) -> Any:
        raise RecordError(f"record has no field '{key}'")


def _plain(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    if value is None:
        return ""  # see the module docstring: stored prompt hashes depend on it
    return value


def fill(template: str, record: Mapping[str, Any], task: "Task") -> str:
    """``template`` with its ``{field}`` slots filled from ``record``."""
    values = _Values({k: _plain(v) for k, v in record.items()}) if record else _Values()
    try:
        return string.Formatter().vformat(template, (), values)
    except RecordError as error:
        raise RecordError(f"{error} (the template of task '{task.name}' needs it)") from None
    except (KeyError, IndexError, AttributeError, ValueError, TypeError) as error:
        raise RecordError(f"cannot fill the template of task '{task.name}': "
                          f"{type(error).__name__}: {error}") from None


def render(task: "Task", record: Mapping[str, Any]) -> Messages:
    """The chat messages of ``task`` for ``record``: system (if any), then user.

    Raises RecordError (a MuxError) naming a missing field.
    """
    for name in task.fields:
        if name not in record:
            raise RecordError(f"record has no field '{name}' (the template of task "
                              f"'{task.name}' needs it)")
    messages: Messages = []
    if task.system:
        messages.append({"role": "system", "content": fill(task.system, record, task)})
    messages.append({"role": "user", "content": fill(task.user, record, task)})
    return messages
