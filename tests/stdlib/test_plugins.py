"""User plugins: a package in tests/stdlib/plugin_example registers the extractor ``last_word``
through the ``muxlang.plugins`` entry point group; specs use it like a stdlib name."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
PLUGIN = HERE / "plugin_example"
MUXLANG = [sys.executable, "-m", "muxlang"]

SPEC = """
backend recorded {{ kind = replay }}
model m {{ backend = recorded  id = "m"  temperature = 0 }}
task words {{
  user    = "{{question}}"
  extract = {extract}
  gold    = "answer"
}}
mux one {{ task = words  pool = [m]  rule = single }}
"""


def _run(args: list[str], cwd: Path, plugin: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if plugin:
        env["PYTHONPATH"] = os.pathsep.join([str(PLUGIN), env.get("PYTHONPATH", "")])
    return subprocess.run(MUXLANG + args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture()
def plugin_path(monkeypatch):
    """The plugin installed in this process (its folder on sys.path), entry points re-read."""
    from muxlang.stdlib import registry

    monkeypatch.syspath_prepend(str(PLUGIN))
    registry.load_plugins(force=True)
    yield
    for table in (registry.EXTRACTORS, registry.EQUIVALENCES, registry.RULES):
        if dict.__contains__(table, "last_word"):
            dict.__delitem__(table, "last_word")


def test_entry_point_registers_extractor(plugin_path):
    from muxlang.ir import Call
    from muxlang.stdlib import registry

    assert "last_word" in registry.EXTRACTORS
    entry = registry.EXTRACTORS["last_word"]
    assert [p.name for p in entry.params] == ["upper", "min_length"]
    extract = registry.make_extractor(Call("last_word", (("upper", True),)))
    assert extract("so the answer is paris") == "PARIS"
    # a stdlib name is never replaced by a plugin's
    assert registry.register("extractor", "boxed", "muxlang_plugin_example:last_word") \
        is dict.__getitem__(registry.EXTRACTORS, "boxed")


def test_spec_uses_plugin_check_and_eval(tmp_path):
    spec = tmp_path / "words.mux"
    spec.write_text(SPEC.format(extract="last_word(upper = true)"))
    done = _run(["check", str(spec)], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    # the spec runs on recorded samples: import, then eval reads answers with the plugin
    questions = tmp_path / "words-questions.jsonl"
    samples = tmp_path / "words-samples.jsonl"
    questions.write_text("".join(json.dumps({"id": i, "question": q, "answer": a}) + "\n"
                                 for i, (q, a) in enumerate([("capital of France?", "PARIS"),
                                                             ("capital of Italy?", "ROME")])))
    samples.write_text("".join(json.dumps({"id": i, "model": "m", "sample": 0, "temperature": 0,
                                           "text": t}) + "\n"
                               for i, t in enumerate(["it is paris", "surely milan"])))
    store = str(tmp_path / "s.sqlite")
    done = _run(["import", str(samples), "--questions", str(questions), "--store", store], tmp_path)
    assert done.returncode == 0, done.stderr
    done = _run(["eval", str(spec), "--dataset", "words", "--store", store, "--json"], tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["models"]["m"]["accuracy"] == 0.5  # "PARIS" read and right, "MILAN" wrong
    assert report["models"]["m"]["unreadable"] == 0.0


def test_check_reports_plugin_mistakes(tmp_path):
    spec = tmp_path / "bad.mux"
    spec.write_text(SPEC.format(extract="last_wrd"))
    done = _run(["check", str(spec)], tmp_path)
    assert done.returncode == 2
    assert "unknown extractor 'last_wrd'" in done.stderr + done.stdout
    assert "last_word" in done.stderr + done.stdout  # did you mean
    spec.write_text(SPEC.format(extract="last_word(upper = \"yes\")"))
    done = _run(["check", str(spec)], tmp_path)
    assert done.returncode == 2 and "argument 'upper'" in done.stderr + done.stdout
    spec.write_text(SPEC.format(extract="last_word(min_length = 0)"))
    done = _run(["check", str(spec)], tmp_path)
    out = done.stderr + done.stdout
    assert done.returncode == 2 and "'min_length' must be at least 1" in out, out
    line = [ln for ln in out.splitlines() if "min_length = 0" in ln][0]
    caret = out.splitlines()[out.splitlines().index(line) + 1]
    assert line[caret.index("^")] == "m"  # the caret is on the argument at fault
    # without the plugin installed, the name is unknown
    spec.write_text(SPEC.format(extract="last_word"))
    done = _run(["check", str(spec)], tmp_path, plugin=False)
    assert done.returncode == 2 and "unknown extractor 'last_word'" in done.stderr + done.stdout
