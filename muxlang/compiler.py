"""Checked spec → graphs (networkx).

Two graphs:
- the *declaration graph*: files, backends, models, tasks, muxes, cascades and tune blocks, an edge
  from each thing to what depends on it; its topological order is the order to build or explain a
  spec in.
- the *execution plan* of one runnable (mux or cascade), a DAG instantiated once per input record:

    render(task) → generate(model, sample i) → extract → vote(member) → select(mux)
                                                       [cascade] → gate(step) → next step … → cascade

  Node ids are paths (``outer/inner/model#2``) so a model drawn in two muxes gets distinct nodes.
  Every node has ``op`` and the ir objects it needs; ``gate`` nodes carry the cascade threshold:
  their successors run only when the previous step's confidence is below it. Every ``select``
  node carries its mux's sampling policy (``adaptive``: off, exact or delta(p)); an adaptive mux
  has one ``adaptive`` node instead of per-sample nodes for its model members, carrying the
  policy and ``budgets`` (model member -> the samples it draws at most).
"""
from __future__ import annotations

import json
from typing import Any, Iterable

import networkx as nx

from muxlang import ir


# -- the declaration graph -----------------------------------------------------------------------
def declaration_graph(spec: ir.Spec) -> nx.DiGraph:
    graph = nx.DiGraph()
    for path in [*spec.imports, spec.path]:
        graph.add_node(f"file:{path}", kind="file", name=path)
    for path in spec.imports:
        graph.add_edge(f"file:{path}", f"file:{spec.path}")

    def add(kind: str, obj: Any, deps: Iterable[str]) -> None:
        node = f"{kind}:{obj.name}"
        graph.add_node(node, kind=kind, name=obj.name, pos=str(obj.pos))
        graph.add_edge(f"file:{obj.pos.file}", node) if graph.has_node(
            f"file:{obj.pos.file}") else None
        for dep in deps:
            graph.add_edge(dep, node)

    for backend in spec.backends.values():
        add("backend", backend, [])
    for model in spec.models.values():
        add("model", model, [f"backend:{model.backend.name}"])
    for task in spec.tasks.values():
        add("task", task, [])
    for mux in spec.muxes.values():
        members = [f"{'model' if m.is_model else 'mux'}:{m.name}" for m in mux.pool]
        add("mux", mux, [f"task:{mux.task.name}", *members])
    for cascade in spec.cascades.values():
        add("cascade", cascade, [f"mux:{step.name}" for step in cascade.steps])
    for tune in spec.tunes.values():
        add("tune", tune, [f"mux:{tune.mux.name}", *(f"model:{m.name}" for m in tune.candidates)])
    return graph


def declaration_order(spec: ir.Spec) -> list[str]:
    """Declarations in an order where everything comes after what it depends on."""
    graph = declaration_graph(spec)
    return [n for n in nx.lexicographical_topological_sort(graph) if not n.startswith("file:")]


# -- the execution plan --------------------------------------------------------------------------
def build_plan(spec: ir.Spec, runnable: ir.Runnable) -> nx.DiGraph:
    """The per-record execution DAG of a mux or cascade (a template: no record in it)."""
    plan = nx.DiGraph(root=runnable.name)
    if isinstance(runnable, ir.Cascade):
        _add_cascade(plan, runnable)
    else:
        _add_mux(plan, runnable, runnable.name, gate=None)
    plan.graph["output"] = _output_node(runnable)
    assert nx.is_directed_acyclic_graph(plan)
    return plan


def _output_node(runnable: ir.Runnable) -> str:
    return f"cascade:{runnable.name}" if isinstance(runnable, ir.Cascade) else f"select:{runnable.name}"


def _add_mux(plan: nx.DiGraph, mux: ir.Mux, path: str, gate: str | None,
             threshold: float | None = None) -> str:
    render = f"render:{mux.task.name}"
    plan.add_node(render, op="render", task=mux.task)
    select = f"select:{path}"
    plan.add_node(select, op="select", mux=mux, path=path, adaptive=mux.adaptive)
    adaptive = None
    if mux.adaptive != "off":
        # one node draws every model member in rounds until the decision is settled
        # (muxlang.semantics.next_draws), each up to its budget; nested members are decided
        # before it starts, in full (their own vote nodes)
        adaptive = f"adaptive:{path}"
        plan.add_node(adaptive, op="adaptive", mux=mux, task=mux.task, threshold=threshold,
                      adaptive=mux.adaptive,
                      budgets={m.name: m.samples for m in mux.pool if m.is_model})
        plan.add_edge(render, adaptive)
        plan.add_edge(adaptive, select, adaptive=True)
        if gate is not None:
            plan.add_edge(gate, adaptive)
    for index, member in enumerate(mux.pool):
        if isinstance(member.member, ir.Mux):
            inner = _add_mux(plan, member.member, f"{path}/{member.name}", gate)
            plan.add_edge(inner, select, member=index)
            if adaptive is not None:
                plan.add_edge(inner, adaptive, member=index)
            continue
        if adaptive is not None:
            continue
        vote = f"vote:{path}/{member.name}"
        plan.add_node(vote, op="vote", model=member.member, member=index, samples=member.samples)
        plan.add_edge(vote, select, member=index)
        for sample in range(member.samples):
            generate = f"generate:{path}/{member.name}#{sample}"
            extract = f"extract:{path}/{member.name}#{sample}"
            plan.add_node(generate, op="generate", model=member.member, task=mux.task,
                          sample=sample)
            plan.add_node(extract, op="extract", task=mux.task, sample=sample)
            plan.add_edge(render, generate)
            plan.add_edge(generate, extract)
            plan.add_edge(extract, vote, sample=sample)
            if gate is not None:
                plan.add_edge(gate, generate)
    return select


def _add_cascade(plan: nx.DiGraph, cascade: ir.Cascade) -> None:
    out = f"cascade:{cascade.name}"
    plan.add_node(out, op="cascade", cascade=cascade)
    gate = None
    for step_index, step in enumerate(cascade.steps):
        select = _add_mux(plan, step, f"{cascade.name}/{step.name}", gate, cascade.threshold)
        plan.add_edge(select, out, step=step_index)
        if step_index + 1 < len(cascade.steps):
            gate = f"gate:{cascade.name}#{step_index + 1}"
            plan.add_node(gate, op="gate", threshold=cascade.threshold, step=step_index + 1)
            plan.add_edge(select, gate)


def request_count(plan: nx.DiGraph) -> int:
    """Samples one record needs when no step escalates (n = 1 requests); an adaptive mux
    counted at its full budget (the most it draws)."""
    return sum(1 for _, data in plan.nodes(data=True) if data["op"] == "generate") + sum(
        sum(data["budgets"].values()) for _, data in plan.nodes(data=True)
        if data["op"] == "adaptive")


# -- printing ------------------------------------------------------------------------------------
def _label(node: str, data: dict[str, Any]) -> str:
    if data.get("op") == "generate":
        return f"generate {data['model'].name} #{data['sample']}"
    if data.get("op") == "gate":
        return f"gate: confidence < {data['threshold']:g}"
    if data.get("op") == "adaptive":
        pool = ", ".join(f"{name} * {k}" for name, k in data["budgets"].items())
        return f"adaptive {data['adaptive']}: up to {pool}, in rounds"
    if data.get("op") == "select" and data.get("adaptive", "off") != "off":
        return f"select {data['path']} (adaptive {data['adaptive']})"
    if "kind" in data:
        return f"{data['kind']} {data['name']}"
    return node.replace(":", " ", 1)


def _plain(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool)) or value is None


def _plain_attrs(data: dict[str, Any]) -> dict[str, Any]:
    """Node and edge attributes as JSON: plain values (and mappings of them, as an adaptive
    node's ``budgets``) as they are, ir objects by their name."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if _plain(value):
            out[key] = value
        elif isinstance(value, dict) and all(_plain(v) for v in value.values()):
            out[key] = {str(k): v for k, v in value.items()}
        elif hasattr(value, "name"):
            out[key] = value.name
    return out


def to_dot(graph: nx.DiGraph) -> str:
    lines = ["digraph muxlang {", "  rankdir=LR;", "  node [shape=box, fontname=Helvetica];"]
    for node, data in graph.nodes(data=True):
        lines.append(f"  {json.dumps(node)} [label={json.dumps(_label(node, data))}];")
    for a, b in graph.edges():
        lines.append(f"  {json.dumps(a)} -> {json.dumps(b)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_mermaid(graph: nx.DiGraph) -> str:
    ids = {node: f"n{i}" for i, node in enumerate(graph.nodes)}
    lines = ["flowchart LR"]
    for node, data in graph.nodes(data=True):
        label = _label(node, data).replace('"', "'")
        lines.append(f'  {ids[node]}["{label}"]')
    for a, b in graph.edges():
        lines.append(f"  {ids[a]} --> {ids[b]}")
    return "\n".join(lines) + "\n"


def to_json(graph: nx.DiGraph) -> str:
    payload = {
        "graph": _plain_attrs(dict(graph.graph)),
        "nodes": [{"id": n, **_plain_attrs(d)} for n, d in graph.nodes(data=True)],
        "edges": [{"source": a, "target": b, **_plain_attrs(d)} for a, b, d in graph.edges(data=True)],
        "order": list(nx.lexicographical_topological_sort(graph)),
    }
    return json.dumps(payload, indent=2) + "\n"


FORMATS = {"dot": to_dot, "mermaid": to_mermaid, "json": to_json}
