"""Each default is written once (muxlang/ir.py's field defaults): docs/language.md's table of
defaults agrees with it, and the runtime reads the same values."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from muxlang import ir
from muxlang.lang import check_text
from muxlang.runtime.backends import BackendSettings

DOC = Path(__file__).resolve().parents[2] / "docs" / "language.md"
BASE = """
backend b { kind = openai  url = "http://127.0.0.1:1/v1" }
model m { backend = b }
model m2 { backend = b }
task t { user = "{q}" }
mux x { task = t  pool = [m * 1, m2 * 1] }
cascade c { steps = [x] }
tune u { mux = x }
"""
OPENING = {"backend": "backend b {", "model": "model m {", "task": "task t {", "mux": "mux x {",
           "cascade": "cascade c {", "tune": "tune u {"}


def _declared(spec: ir.Spec, kind: str):
    table = {"backend": spec.backends, "model": spec.models, "task": spec.tasks,
             "mux": spec.muxes, "cascade": spec.cascades, "tune": spec.tunes}[kind]
    return table[OPENING[kind].split()[1]]


def _documented() -> list[tuple[str, str, str]]:
    rows = re.findall(r"^\| (\w+) \| `(\w+)` \| `([^`]+)` \|$", DOC.read_text(), re.MULTILINE)
    assert len(rows) >= 20, "docs/language.md lost its table of defaults"
    return rows


@pytest.mark.parametrize("kind,key,value", _documented())
def test_setting_a_key_to_its_documented_default_changes_nothing(kind, key, value):
    implicit = _declared(check_text(BASE), kind)
    lines = BASE.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(OPENING[kind]))
    lines[at] = lines[at][:-1] + f" {key} = {value} }}"  # at the end: no position moves
    text = "\n".join(lines)
    explicit = _declared(check_text(text), kind)
    assert explicit == implicit


def test_the_runtime_reads_the_backend_defaults_of_the_ir():
    spec = check_text(BASE)
    settings = BackendSettings.resolve(spec.backends["b"], environ={})
    plain = BackendSettings("b", "openai", "http://127.0.0.1:1/v1")
    for name in ("concurrency", "rate", "timeout", "retries", "retry_time", "supports_n",
                 "max_response", "rate_scope"):
        assert getattr(settings, name) == getattr(plain, name) == ir.default(ir.Backend, name)
