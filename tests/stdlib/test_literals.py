"""Python-literal answers (CRUXEval) and extractor chains for pools recorded in several formats."""
from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from muxlang.errors import MuxError
from muxlang.ir import Call
from muxlang.stdlib import registry

ROOT = Path(__file__).resolve().parents[2]
CRUX = ROOT / "examples" / "crux-o"


def key(text):
    return registry.make_equivalence(Call("python_literal")).key(text)


@pytest.mark.parametrize("a, b", [
    ("'abc'", '"abc"'), ("(1,2)", "(1, 2)"), ("{1: 2, 3: 4}", "{3: 4, 1: 2}"),
    ("{3, 1, 2}", "{1, 2, 3}"), ("[1, 'a', (2,)]", "[1,'a',(2, )]"), ("  True ", "True"),
    ("-0x10", "-16"), ("1e3", "1000.0"),
])
def test_equal_values(a, b):
    assert key(a) is not None and key(a) == key(b)


@pytest.mark.parametrize("a, b", [
    ("[1, 2]", "(1, 2)"), ("'1'", "1"), ("1", "True"), ("{1: 2}", "{1: 3}"), ("(1,)", "1"),
    ("set()", "{}"),
])
def test_different_values(a, b):
    assert key(a) != key(b)


def test_not_a_literal_falls_back_to_the_stripped_text():
    assert key("  f(3) ") == key("f(3)") == "s:f(3)"
    assert key("   ") is None
    assert key("[" * 10000) is not None  # no crash on deep nesting (text fallback)


def test_python_literal_extractor():
    extract = registry.make_extractor(Call("python_literal"))
    assert extract("'o=9,h=6,l=4'") == "'o=9,h=6,l=4'"
    assert extract("```python\n[1, 2]\n```") == "[1, 2]"
    assert extract("`(3, 'a')`") == "(3, 'a')"
    assert extract("assert f(1) == [2]") == "[2]"
    assert extract("  \n") is None


def test_code_extractor_keeps_indentation():
    extract = registry.make_extractor(Call("code"))
    body = "    return x\n"
    assert extract(body) == body
    assert extract("Here:\n```python\ndef f():\n    return 1\n```\n") == "def f():\n    return 1\n"


def test_first_of_reads_both_recorded_formats():
    """The shipped crux-o recordings: ZeroEval models answer with a JSON object whose 'answer'
    holds the literal, CodeLlama with the bare literal; one chain reads both."""
    chain = registry.make_extractor(Call("first_of", (("first", "json_field"),
                                                      ("second", "python_literal"))))
    json_only = registry.make_extractor(Call("json_field"))
    bare_only = registry.make_extractor(Call("python_literal"))
    by_model: dict[str, list[str]] = {}
    with gzip.open(CRUX / "crux-o-samples.jsonl.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            r = json.loads(line)
            by_model.setdefault(r["model"], []).append(r["text"])
    codellama = by_model.pop("codellama-7b")
    zeroeval = [t for texts in by_model.values() for t in texts]
    assert sum(json_only(t) is None for t in codellama) > 0.9 * len(codellama)
    assert all(chain(t) == bare_only(t) for t in codellama[:2000])
    read = sum(chain(t) is not None for t in zeroeval)
    assert read > 0.97 * len(zeroeval)
    sample = [t for t in zeroeval if json_only(t) is not None][:500]
    assert all(chain(t) == json_only(t) for t in sample)


def test_first_of_arguments():
    registry.EXTRACTORS["first_of"].check_arguments({"first": "json_field",
                                                     "second": "python_literal"})
    with pytest.raises(MuxError, match="'second': unknown extractor 'pyton_literal'.*python_literal"):
        registry.EXTRACTORS["first_of"].check_arguments({"first": "json_field",
                                                         "second": "pyton_literal"})
    with pytest.raises(MuxError, match="'first'.*'regex' needs arguments"):
        registry.EXTRACTORS["first_of"].check_arguments({"first": "regex"})
    with pytest.raises(MuxError, match="first_of"):
        registry.EXTRACTORS["first_of"].check_arguments({"first": "first_of"})


def test_check_puts_the_caret_on_the_bad_link(tmp_path):
    spec = tmp_path / "c.mux"
    spec.write_text('task t {\n  user = "{question}"\n'
                    '  extract = first_of("json_field", "pyton_literal")\n'
                    '  equivalence = execution(timeout = 0)\n}\n')
    done = subprocess.run([sys.executable, "-m", "muxlang", "check", str(spec)],
                          capture_output=True, text=True, timeout=60)
    out = done.stdout + done.stderr
    assert done.returncode == 2
    assert "c.mux:3:36" in out and "did you mean 'python_literal'" in out, out
    assert "c.mux:4:27" in out and "'timeout' must be a number of seconds" in out, out


def test_shipped_specs_check():
    for spec in (CRUX / "crux-o.mux", CRUX / "tune.mux",
                 ROOT / "examples" / "humaneval-codegen" / "humaneval.mux"):
        done = subprocess.run([sys.executable, "-m", "muxlang", "check", str(spec)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


def test_prose_is_no_literal_answer():
    extract = registry.make_extractor(Call("python_literal"))
    assert extract("The function returns the list.\nSo the answer is [1, 2].") is None
    assert extract("[1,\n 2]") == "[1,\n 2]"  # a literal over several lines is one
    assert extract("'unterminated") == "'unterminated"  # one line: kept, keyed as text
