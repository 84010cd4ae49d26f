"""``muxlang graph``: one request node per member whose samples one request with n > 1 draws."""
from __future__ import annotations

import json

from muxlang.cli import main

SPEC = """
backend local { kind = openai  url = "http://127.0.0.1:1/v1"  n = true }
backend auto { kind = openai  url = "http://127.0.0.1:1/v1" }
backend single { kind = openai  url = "http://127.0.0.1:1/v1"  n = false }
model a { backend = local  id = "a" }
model b { backend = auto  id = "b" }
model c { backend = single  id = "c" }
task t { user = "{question}" }
mux m { task = t  pool = [a * 3, b * 2, c * 2] }
"""


def test_one_request_node_per_member_when_n_batches(tmp_path, capsys):
    path = tmp_path / "g.mux"
    path.write_text(SPEC)
    assert main(["graph", str(path), "--format", "json"]) == 0
    nodes = {n["id"]: n for n in json.loads(capsys.readouterr().out)["nodes"]}
    assert "request:m/a" in nodes and "request:m/b" in nodes
    assert not any(name.startswith("generate:m/a") or name.startswith("generate:m/b")
                   for name in nodes)
    assert {f"generate:m/c#{i}" for i in range(2)} <= set(nodes)  # n = false: one per sample
    assert main(["graph", str(path)]) == 0
    dot = capsys.readouterr().out
    assert '"request:m/a" [label="request a (n=3)"]' in dot
    assert "request b (n=2 if the server honours n)" in dot
    assert '"request:m/a" -> "extract:m/a#2"' in dot
    assert main(["graph", str(path), "--per-sample", "--format", "mermaid"]) == 0
    assert "generate a #2" in capsys.readouterr().out


def test_every_option_of_every_command_has_a_help_text():
    import argparse
    import importlib

    from muxlang.cli import COMMANDS

    for name, (module_name, _) in COMMANDS.items():
        parser = argparse.ArgumentParser(prog=name)
        importlib.import_module(f"muxlang.commands.{module_name}").add_arguments(parser)
        for action in parser._actions:
            if action.option_strings and action.help is None:
                raise AssertionError(f"muxlang {name} {action.option_strings[0]}: no help text")
