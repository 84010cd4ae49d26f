"""A mux built or changed in Python (not through the checker) with a sampling policy the
semantics do not run is a MuxError naming the mux, before anything is sent — not a traceback,
and not a silent run under another policy."""
from __future__ import annotations

import dataclasses

import pytest

import muxlang
from muxlang.errors import MuxError

SPEC = ('backend b { kind = openai  url = "http://127.0.0.1:9/v1" }\nmodel a { backend = b }\n'
        'task t { user = "{q}" }\nmux m { task = t  pool = [a * 3] }\n')


@pytest.mark.parametrize("policy, said", [
    ("bogus", "not 'bogus'"), ("EXACT", "not 'EXACT'"), ("delta(2)", "not 'delta(2)'"),
    ("delta(abc)", "not 'delta(abc)'"), (None, "written as text, not null"),
    (0.05, "written as text, not 0.05"), ("delta(0.050)", "is written 'delta(0.05)'"),
])
def test_a_policy_the_semantics_do_not_run_is_refused(policy, said):
    spec = muxlang.loads(SPEC, "x.mux")
    mux = dataclasses.replace(spec.muxes["m"], adaptive=policy)
    with pytest.raises(MuxError, match="mux 'm': ") as raised:
        muxlang.Session().run(spec, [{"q": "x"}], mux=mux)
    assert said in str(raised.value)
