"""Fixtures for ``muxlang serve`` tests: a scripted model server on 127.0.0.1, a clean
environment; the server helpers are in ``tests/serve/serving.py``."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.serve.serving import varied  # noqa: E402
from tests.support.helpers import KEY, KEY_ENV  # noqa: E402
from tests.support.scripted_server import ScriptedServer  # noqa: E402


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.delenv("MUXLANG_STORE", raising=False)
    for name in list(os.environ):
        if name.startswith("MUXLANG_BACKEND_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # a default store would land here, never in the repository


@pytest.fixture
def backend():
    srv = ScriptedServer(answer=varied).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def write_spec(tmp_path):
    def write(text: str, name: str = "spec.mux") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write
