"""API keys: read from the environment at request time, and scrubbed from every message.

Keys are never stored on an object that gets printed, logged or pickled: a backend keeps the *name*
of the variable. ``scrub`` replaces every key value the process knows about (the variables named
by the running spec's backends, registered with ``register_key_env``) in a text.
"""
from __future__ import annotations

import os
import re
import threading

MASK = "***"
_lock = threading.Lock()
_key_envs: set[str] = set()
# Bearer tokens and common key shapes, masked even when we do not know the variable.
_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{6,}"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"),
]


def register_key_env(name: str | None) -> None:
    if name:
        with _lock:
            _key_envs.add(name)


def read_key(name: str | None) -> str | None:
    """The key in environment variable ``name`` (None when unnamed or unset/empty)."""
    if not name:
        return None
    if name not in _key_envs:
        register_key_env(name)
    value = os.environ.get(name)
    return value or None


def _known_values() -> list[str]:
    with _lock:
        names = list(_key_envs)
    values = [os.environ.get(n) for n in names]
    # longest first, so a key that contains another is masked whole
    return sorted({v for v in values if v and len(v) >= 4}, key=len, reverse=True)


def scrub(text: object) -> str:
    """``text`` as a string with every known key value and bearer token masked."""
    out = str(text)
    for value in _known_values():
        if value in out:
            out = out.replace(value, MASK)
    for pattern in _PATTERNS:
        if pattern.groups:
            out = pattern.sub(lambda m: m.group(1) + MASK, out)
        else:
            out = pattern.sub(MASK, out)
    return out
