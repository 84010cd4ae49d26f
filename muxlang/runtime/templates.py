"""Prompt rendering: a task's templates filled from one input record → chat messages."""
from __future__ import annotations

import json
import string
from typing import Any, Mapping

from muxlang import ir
from muxlang.runtime.samples import Messages


class RecordError(Exception):
    """A record that cannot be run (bad JSON, missing field): the message, without file:line."""


class _Values(dict):
    def __missing__(self, key: str) -> Any:
        raise RecordError(f"record has no field '{key}'")


def _plain(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    if value is None:
        return ""
    return value


def fill(template: str, record: Mapping[str, Any], task: ir.Task) -> str:
    values = _Values({k: _plain(v) for k, v in record.items()}) if record else _Values()
    try:
        return string.Formatter().vformat(template, (), values)
    except RecordError as error:
        raise RecordError(f"{error} (the template of task '{task.name}' needs it)") from None
    except (KeyError, IndexError, AttributeError, ValueError, TypeError) as error:
        raise RecordError(f"cannot fill the template of task '{task.name}': "
                          f"{type(error).__name__}: {error}") from None


def render(task: ir.Task, record: Mapping[str, Any]) -> Messages:
    """The chat messages for ``record``; raises RecordError naming a missing field."""
    for name in task.fields:
        if name not in record:
            raise RecordError(f"record has no field '{name}' (the template of task "
                              f"'{task.name}' needs it)")
    messages: Messages = []
    if task.system:
        messages.append({"role": "system", "content": fill(task.system, record, task)})
    messages.append({"role": "user", "content": fill(task.user, record, task)})
    return messages
