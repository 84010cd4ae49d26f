import json

import networkx as nx

from muxlang import compiler
from muxlang.cli import main
from muxlang.lang import check_text

SPEC = '''
backend b { kind = replay }
model m1 { backend = b }
model m2 { backend = b }
model big { backend = b }
task t { user = "{question}" }
mux duo { task = t  pool = [m1 * 3, m2 * 2] }
mux nest { task = t  pool = [duo, big * 1] }
mux solo { task = t  pool = [big * 2] }
cascade c { steps = [duo, solo]  threshold = 0.7 }
'''


def test_declaration_graph_orders_dependencies_first():
    spec = check_text(SPEC, "g.mux")
    order = compiler.declaration_order(spec)
    assert order.index("backend:b") < order.index("model:m1") < order.index("mux:duo")
    assert order.index("mux:duo") < order.index("mux:nest")
    assert order.index("mux:solo") < order.index("cascade:c")


def test_plan_of_a_mux():
    spec = check_text(SPEC, "g.mux")
    plan = compiler.build_plan(spec, spec.muxes["duo"])
    ops = [d["op"] for _, d in plan.nodes(data=True)]
    assert ops.count("generate") == 5 and ops.count("extract") == 5 and ops.count("vote") == 2
    assert plan.graph["output"] == "select:duo"
    assert set(nx.ancestors(plan, "vote:duo/m1")) == {
        "render:t", *(f"{op}:duo/m1#{i}" for op in ("generate", "extract") for i in range(3))}
    assert compiler.request_count(plan) == 5


def test_plan_of_nested_mux_and_cascade():
    spec = check_text(SPEC, "g.mux")
    nested = compiler.build_plan(spec, spec.muxes["nest"])
    assert nested.has_edge("select:nest/duo", "select:nest")
    assert nested.has_edge("vote:nest/big", "select:nest")
    cascade = compiler.build_plan(spec, spec.cascades["c"])
    gate = "gate:c#1"
    assert cascade.nodes[gate]["threshold"] == 0.7
    assert cascade.has_edge("select:c/duo", gate)
    assert all(cascade.has_edge(gate, f"generate:c/solo/big#{i}") for i in range(2))
    assert cascade.graph["output"] == "cascade:c"
    assert nx.is_directed_acyclic_graph(cascade)


def test_graph_command_formats(tmp_path, capsys):
    path = tmp_path / "g.mux"
    path.write_text(SPEC)
    assert main(["graph", str(path), "--mux", "duo", "--format", "json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert len(payload["nodes"]) == 1 + 5 + 5 + 2 + 1
    assert payload["order"][0] == "render:t"
    assert main(["graph", str(path), "--format", "dot"]) == 0
    dot = capsys.readouterr().out
    assert dot.startswith("digraph") and '"gate:c#1" -> "generate:c/solo/big#0"' in dot
    assert main(["graph", str(path), "--declarations", "--format", "mermaid"]) == 0
    assert "-->" in capsys.readouterr().out
    assert main(["graph", str(path), "--mux", "nope"]) == 1
    assert "no mux or cascade named 'nope'" in capsys.readouterr().err


def test_graph_command_suggests_a_close_mux_name(tmp_path, capsys):
    path = tmp_path / "g.mux"
    path.write_text(SPEC)
    assert main(["graph", str(path), "--mux", "dou"]) == 1
    assert capsys.readouterr().err.rstrip().endswith("did you mean 'duo'?")
