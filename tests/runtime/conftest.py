"""Fixtures for runtime tests: scripted servers on loopback and spec files pointing at them."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.helpers import KEY, KEY_ENV  # noqa: E402
from tests.support.scripted_server import ScriptedServer  # noqa: E402

@pytest.fixture
def server():
    srv = ScriptedServer().start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    return KEY


@pytest.fixture
def write_spec(tmp_path):
    def write(text: str, name: str = "spec.mux") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.fixture
def write_records(tmp_path):
    def write(records, name: str = "in.jsonl") -> Path:
        path = tmp_path / name
        with path.open("w") as handle:
            for record in records:
                handle.write(record if isinstance(record, str) else json.dumps(record))
                handle.write("\n")
        return path

    return write


@pytest.fixture(autouse=True)
def _no_backend_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("MUXLANG_BACKEND_"):
            monkeypatch.delenv(name)
