"""API keys: read from the environment at request time, and scrubbed from every message.

Keys are never stored on an object that gets printed, logged or pickled: a backend keeps the *name*
of the variable. ``scrub`` replaces every key value the process knows about (the variables named
by the running spec's backends, registered with ``register_key_env``) in a text; ``clip`` scrubs
and then cuts a message. The one home of masking, called wherever text from outside (a server's
error, a sample's text, an exception) becomes a message, an output line or a stored value: the
backends (errors and sample texts), the run stream (record errors), the session (a run's error in
the store) and the command line (its last-resort "internal error" and every error it prints).
"""
from __future__ import annotations

import os
import re
import threading

MASK = "***"
_lock = threading.Lock()
_key_envs: set[str] = set()
_values: set[str] = set()  # secrets met elsewhere than in a variable (a URL's password)
# Bearer tokens and common key shapes, masked even when we do not know the variable.
_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{6,}"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"),
]


def register_key_env(name: str | None) -> None:
    if name:
        with _lock:
            _key_envs.add(name)


def register_secret(value: str | None) -> None:
    """Mask ``value`` too wherever ``scrub`` runs (a password written into a backend's URL)."""
    if value and len(value) >= 4:
        with _lock:
            _values.add(value)


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
        values = [os.environ.get(n) for n in names] + list(_values)
    # longest first, so a key that contains another is masked whole
    return sorted({v for v in values if v and len(v) >= 4}, key=len, reverse=True)


def scrub(text: object, *, shapes: bool = True) -> str:
    """``text`` as a string with every known key value masked, and (``shapes``) every bearer
    token and ``sk-...`` key too. Sample texts pass ``shapes=False``: a model's answer loses only
    the keys this process really holds, never text that merely looks like a key."""
    out = str(text)
    for value in _known_values():
        if value in out:
            out = out.replace(value, MASK)
    if not shapes:
        return out
    for pattern in _PATTERNS:
        if pattern.groups:
            out = pattern.sub(lambda m: m.group(1) + MASK, out)
        else:
            out = pattern.sub(MASK, out)
    return out


def clip(text: object, limit: int) -> str:
    """``text`` scrubbed, *then* cut to ``limit`` characters (with "..." when cut).

    The order is the point: cut first, and a key crossing the cut would keep its prefix, which no
    longer matches the key and so would never be masked. Every message cut short is cut here.
    """
    out = scrub(text)
    return out if len(out) <= limit else out[:limit] + "..."
