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


ADAPTIVE = """
backend local { kind = openai  url = "http://127.0.0.1:1/v1"  n = true }
model a { backend = local  id = "a" }
model b { backend = local  id = "b" }
model c { backend = local  id = "c" }
task t { user = "{question}" }
mux inner { task = t  pool = [c * 2] }
mux m { task = t  pool = [a * 3, inner, b * 5]  adaptive = exact }
mux cheap { task = t  pool = [a * 4]  adaptive = delta(0.05) }
cascade both { steps = [cheap, m]  threshold = 0.7 }
"""


def test_the_plan_shows_each_muxs_policy_and_the_budgets_it_draws_up_to(tmp_path, capsys):
    """An adaptive mux's policy and its members' budgets are in the plan (json, dot, mermaid):
    on every select node the policy, on the adaptive node the policy and per model member the
    samples it draws at most; a nested member draws in full through its own vote node."""
    path = tmp_path / "adaptive.mux"
    path.write_text(ADAPTIVE)
    assert main(["graph", str(path), "--mux", "m", "--format", "json"]) == 0
    nodes = {n["id"]: n for n in json.loads(capsys.readouterr().out)["nodes"]}
    assert nodes["adaptive:m"]["adaptive"] == "exact"
    assert nodes["adaptive:m"]["budgets"] == {"a": 3, "b": 5}  # model members, pool order
    assert nodes["select:m"]["adaptive"] == "exact"
    assert nodes["select:m/inner"]["adaptive"] == "off"
    assert nodes["request:m/inner/c"]["samples"] == 2  # the nested mux: in full
    assert not any(n.startswith(("vote:m/a", "vote:m/b", "generate:m/a")) for n in nodes)

    assert main(["graph", str(path), "--mux", "both", "--format", "json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    nodes = {n["id"]: n for n in plan["nodes"]}
    assert (nodes["adaptive:both/cheap"]["adaptive"], nodes["adaptive:both/cheap"]["budgets"]) \
        == ("delta(0.05)", {"a": 4})
    assert nodes["adaptive:both/cheap"]["threshold"] == 0.7
    assert nodes["adaptive:both/m"]["budgets"] == {"a": 3, "b": 5}

    from muxlang import compiler
    from muxlang.lang import load_spec

    spec = load_spec(path)
    assert compiler.request_count(compiler.build_plan(spec, spec.cascades["both"])) == 4 + 8 + 2

    assert main(["graph", str(path), "--mux", "m"]) == 0
    dot = capsys.readouterr().out
    assert '"adaptive:m" [label="adaptive exact: up to a * 3, b * 5, in rounds"]' in dot
    assert '"select:m" [label="select m (adaptive exact)"]' in dot
    assert main(["graph", str(path), "--mux", "both", "--format", "mermaid"]) == 0
    mermaid = capsys.readouterr().out
    assert "adaptive delta(0.05): up to a * 4, in rounds" in mermaid
