"""The tuned spec: only the pool/rule values change; imports still resolve; headers replace."""
from __future__ import annotations

import pytest

from muxlang.errors import MuxError
from muxlang.lang import load_spec
from muxlang.simulator import Config
from muxlang.optimizer.tuned_spec import (HEADER_END, Record, config_of_spec, tuned_text,
                                          write_tuned_spec)

SHARED = """\
import std.gsm8k
backend rec { kind = replay }
model a { backend = rec  id = "a" }
model b { backend = rec  id = "b" }
model c { backend = rec  id = "c" }
"""

ROOT = """\
import "shared/models.mux"   # models live next door

mux m {
    task = gsm8k_json     # four-space indent here
    pool = [a * 2]
}
"""


def _record(config, **kw):
    base = dict(source_path="x.mux", source_hash="0" * 64, dataset="d", dataset_hash="1" * 64,
                store="postgresql://u:pw@h:5432/db", study="s", storage=None,
                objective="accuracy", val_accuracy=0.9, val_se=0.01, val_se_items=0.02,
                test_accuracy=0.88, test_se=0.01, test_se_items=0.02, simulations=10, seed=0,
                config=config)
    base.update(kw)
    return Record(**base)


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "src" / "shared").mkdir(parents=True)
    (tmp_path / "src" / "shared" / "models.mux").write_text(SHARED)
    (tmp_path / "src" / "root.mux").write_text(ROOT)
    return tmp_path


def test_rule_inserted_with_the_blocks_indent_and_imports_rewritten(tree):
    config = Config((("a", 3), ("c", 1)), "majority")
    out = tree / "elsewhere" / "deeper" / "tuned.mux"
    text = write_tuned_spec(str(tree / "src" / "root.mux"), "m", config, _record(config),
                            str(out))
    assert 'import "../../src/shared/models.mux"   # models live next door' in text
    assert "    pool = [a * 3, c * 1]\n    rule = majority\n}" in text
    assert "pw" not in text and "postgresql://h:5432/db" in text
    spec = load_spec(out)
    assert config_of_spec(spec, "m") == config


def test_retuning_replaces_the_old_header(tree):
    first = Config((("b", 1),), "slm_mux")
    source = tree / "src" / "root.mux"
    out = tree / "src" / "tuned.mux"
    write_tuned_spec(str(source), "m", first, _record(first), str(out))
    second = Config((("a", 1), ("b", 2)), "slm_mux")
    text = write_tuned_spec(str(out), "m", second, _record(second), str(out))
    assert text.count(HEADER_END) == 1
    assert text.endswith(ROOT.replace("[a * 2]", "[a * 1, b * 2]"))


def test_long_pools_wrap_one_member_per_line(tree):
    many = Config(tuple((n, 9) for n in ["a", "b", "c"] * 1), "slm_mux")
    text = tuned_text(ROOT.replace("mux m", "mux " + "m"), "root.mux", "m", many, ["# h"])
    assert "[a * 9, b * 9, c * 9]" in text
    long_names = Config(tuple((n * 30, 1) for n in "abc"), "slm_mux")
    wrapped = tuned_text(ROOT, "root.mux", "m", long_names, ["# h"])
    assert "pool = [\n      " + "a" * 30 + " * 1,\n" in wrapped


def test_mux_from_an_import_is_a_user_error(tree):
    with pytest.raises(MuxError, match="comes from an import"):
        tuned_text(ROOT, "root.mux", "other", Config((("a", 1),)), ["# h"])


def test_keys_added_to_a_mux_written_on_one_line_stay_inside_it():
    from muxlang.lang import check_text

    source = ('backend b { kind = replay }\nmodel a { backend = b }\nmodel c { backend = b }\n'
              'task t { user = "{q}" }\nmux m { task = t  pool = [a * 1] }\n')
    config = Config(((("a", 3)), ("c", 2)), "majority", "exact")
    text = tuned_text(source, "one.mux", "m", config, ["# tuned"])
    spec = check_text(text)
    mux = spec.muxes["m"]
    assert (mux.rule.name, mux.adaptive) == ("majority", "exact")
    assert [(p.name, p.samples) for p in mux.pool] == [("a", 3), ("c", 2)]


def test_the_header_says_when_the_policy_replaced_an_untried_own_one(tree):
    """A tune block whose adaptive list left the mux's own policy out: the written policy is
    the one tune chose, and the header says it replaced one that was never measured."""
    source = tree / "src" / "root.mux"
    source.write_text(ROOT.replace("pool = [a * 2]", "pool = [a * 2]\n    adaptive = delta(0.1)"))
    config = Config((("a", 3),), "slm_mux", "exact")
    out = tree / "src" / "tuned.mux"
    text = write_tuned_spec(str(source), "m", config,
                            _record(config, replaced_adaptive="delta(0.1)"), str(out))
    assert ("# adaptive:    exact replaces the mux's own delta(0.1), which the tune block's "
            "adaptive list left out (never measured)") in text
    assert load_spec(out).muxes["m"].adaptive == "exact"
    plain = tuned_text(ROOT, "root.mux", "m", config, _record(config).lines())
    assert "# adaptive:" not in plain
