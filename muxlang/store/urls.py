"""Where the store lives: URL resolution and credential-free display."""
from __future__ import annotations

import os
from pathlib import Path

from muxlang.errors import StoreError

DEFAULT_FILE = "muxlang.sqlite"
ENV_VAR = "MUXLANG_STORE"
_SECRET_QUERY_KEYS = {"password", "passfile", "sslpassword", "sslkey", "token", "api_key"}


def resolve_url(url: str | None = None) -> str:
    """``--store`` value, else ``$MUXLANG_STORE``, else ``muxlang.sqlite`` in the working directory.

    A plain path (no ``://``) means a SQLite file; ``postgresql://`` is read as psycopg 3.
    """
    value = url or os.environ.get(ENV_VAR) or DEFAULT_FILE
    value = value.strip()
    if not value:
        raise StoreError("empty store URL", opening=True)
    if "://" not in value:
        return "sqlite:///" + str(Path(value).expanduser().absolute())
    scheme, rest = value.split("://", 1)
    if scheme in ("postgresql", "postgres"):
        return "postgresql+psycopg://" + rest
    if scheme.split("+")[0] not in ("sqlite", "postgresql"):
        raise StoreError(f"store URL scheme '{scheme}' is not supported: the sample store is "
                         "SQLite (a file path, or sqlite:///PATH) or PostgreSQL "
                         "(postgresql://USER@HOST:5432/DB)", opening=True)
    return value


def redact_url(url: str) -> str:
    """The URL with its password (and secret query parameters) replaced by ``***``."""
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
    except Exception:
        # Unparseable: show the scheme and host part only, never what may be a credential.
        if "@" in url and "://" in url:
            scheme, rest = url.split("://", 1)
            return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
        return url
    if parsed.query:
        query = {k: ("***" if k.lower() in _SECRET_QUERY_KEYS else v) for k, v in parsed.query.items()}
        parsed = parsed.set(query=query)
    return parsed.render_as_string(hide_password=True)


def study_storage_url(url: str | None) -> str | None:
    """An Optuna study storage URL (``tune --storage``, ``report --storage``): a plain path is a
    SQLite file, ``postgresql://`` uses psycopg 3; any other scheme is refused here, naming the
    ones that work, rather than failing later inside Optuna with a missing driver."""
    if url is None:
        return None
    value = url.strip()
    if not value:
        raise StoreError("empty study storage URL", opening=True)
    if "://" not in value:
        return "sqlite:///" + str(Path(value).expanduser().absolute())
    scheme, rest = value.split("://", 1)
    if scheme in ("postgresql", "postgres"):
        return "postgresql+psycopg://" + rest
    if scheme.split("+")[0] not in ("sqlite", "postgresql"):
        raise StoreError(f"study storage URL scheme {scheme[:40]!r} is not supported: a study "
                         "storage is SQLite (a file path, or sqlite:///PATH) or PostgreSQL "
                         "(postgresql://USER@HOST:5432/DB)", opening=False)
    return value
