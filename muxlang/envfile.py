"""``.env`` in the working directory: values for ``env(...)`` (python-dotenv).

A spec's ``api_key = env("NAME")`` (and ``MUXLANG_BACKEND_<NAME>_URL`` / ``_KEY``,
``MUXLANG_STORE``) read the process environment; ``load_env_file()`` first adds the variables a
``.env`` file in the working directory sets, without replacing any that is already set (the real
environment wins). The command line calls it on start, ``Session()`` when it is made. A key the
file holds is masked in every message as any key is.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

_loaded: set[str] = set()


def load_env_file(path: Union[str, os.PathLike, None] = None) -> list[str]:
    """Load ``path`` (default ``./.env``) into ``os.environ`` without overriding; the names it
    set. A missing file is no error; each file is read once per process."""
    target = Path(path) if path is not None else Path.cwd() / ".env"
    try:
        resolved = str(target.resolve())
    except OSError:
        return []
    if resolved in _loaded or not target.is_file():
        return []
    _loaded.add(resolved)
    from dotenv import dotenv_values

    added = []
    for name, value in dotenv_values(target).items():
        if value is not None and name not in os.environ:
            os.environ[name] = value
            added.append(name)
    return added


def reset() -> None:  # for tests
    _loaded.clear()

