"""Sizes (``max_response = 8MB``): the literal, its units, its range and its default."""
from __future__ import annotations

import pytest

from muxlang import ir
from muxlang.errors import SpecError
from muxlang.lang import check_text

SPEC = '''
backend b {{ kind = openai  url = "http://127.0.0.1:9/v1"  {extra} }}
model m {{ backend = b }}
task t {{ user = "{{q}}" }}
mux x {{ task = t  pool = [m * 1] }}
'''


def max_response(extra: str) -> int:
    return check_text(SPEC.format(extra=extra), "s.mux").backends["b"].max_response


@pytest.mark.parametrize("written,count", [
    ("8MB", 8_000_000), ("512KiB", 512 * 1024), ("1.5MiB", 3 * 2**19), ("2GB", 2 * 10**9),
    ("2048B", 2048), ("100000", 100_000), ("1GiB", 2**30), ("64KB", 64_000),
])
def test_sizes_convert_to_bytes(written, count):
    assert max_response(f"max_response = {written}") == count


def test_the_default_is_8MB():
    assert max_response("") == ir.default(ir.Backend, "max_response") == 8_000_000


@pytest.mark.parametrize("written,message,hint", [
    ("100B", "100B is out of range: must be at least 1024 bytes", None),
    ("8mb", "unknown unit 'mb' in '8mb'",
     "sizes are written in B, KB, MB, GB, KiB, MiB or GiB: write 8MB"),
    ("30s", "expected a size such as 8MB, 512KiB or 100000B, found a duration", None),
    ('"8MB"', "expected a size such as 8MB, 512KiB or 100000B, found a string", None),
    ("1.5", "expected a size such as 8MB, 512KiB or 100000B, found a number", None),
])
def test_bad_sizes_are_diagnostics(written, message, hint):
    with pytest.raises(SpecError) as caught:
        max_response(f"max_response = {written}")
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.message == message
    if hint is not None:
        assert diagnostic.hint == hint
