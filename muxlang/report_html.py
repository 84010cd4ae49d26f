"""One self-contained HTML file for an evaluation (``muxlang eval --html FILE``).

The page holds everything inline (CSS and SVG; no script, no font, no image from anywhere), so
it opens from disk in any browser and can be mailed: per-model accuracy, the paper's baselines
with error bars (± one standard error: over trials when there are several, else over items),
the tuning front when a tuning result is given, and one row per evaluated record (gold, the
chosen answer, each member's votes and confidence) with records whose members disagree first;
each row's raw samples open with one click (``<details>``).

``record_members(session, spec, report)`` reads each record's stored samples (texts, extracted
answers and equivalence keys per pool model) from the session's store; ``render(report,
members, tune)`` gives the page; ``html_report(session, spec, dataset, ...)`` does both.
"""
from __future__ import annotations

import html
from collections import Counter
from typing import Any, Mapping, Optional, Sequence

from muxlang.results import EvalReport, TuneResult

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d2330}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:28px 0 8px}
.meta{color:#5b6475} table{border-collapse:collapse;margin:6px 0}
th,td{border-bottom:1px solid #e3e6ec;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f4f6f9;font-weight:600} td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.wrong td.ok{color:#b3261e} tr.right td.ok{color:#1e7b34} .bar{fill:#4a7fd4}
.mux{fill:#e08a1e} .err{stroke:#1d2330;stroke-width:1.5} .axis{stroke:#9aa3b2}
svg text{font-size:12px;fill:#1d2330} .dis{background:#fff8e6}
details summary{cursor:pointer;color:#2f5fb3} pre{white-space:pre-wrap;max-width:900px;
background:#f7f7f9;padding:6px;margin:4px 0;font-size:12px} .vote{font-family:monospace}
.note{color:#5b6475;font-size:13px}
"""

_LABELS = {"single_best": "Single-Best", "single_best_sc": "Single-Best-SC",
           "agent_forest": "Agent Forest", "slm_mux": "SLM-MUX", "mux": "this mux",
           "union": "Union (oracle)", "oracle_any_sample": "Oracle (any sample)"}


def _e(value: Any) -> str:
    return html.escape("—" if value is None else str(value))


def _pct(value: Optional[float]) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _bars(rows: Sequence[tuple[str, float, float, bool]]) -> str:
    """Horizontal bars 0..100% with ± error bars: (label, accuracy, se, highlighted)."""
    left, width, step = 190, 420, 24
    height = step * len(rows) + 30
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 80}" '
           f'height="{height}" role="img">']
    for tick in range(0, 101, 25):
        x = left + width * tick / 100
        out.append(f'<line class="axis" x1="{x}" y1="0" x2="{x}" y2="{height - 22}"/>'
                   f'<text x="{x}" y="{height - 6}" text-anchor="middle">{tick}%</text>')
    for i, (label, value, se, mark) in enumerate(rows):
        y = i * step + 4
        w = width * max(0.0, min(1.0, value))
        lo = left + width * max(0.0, value - se)
        hi = left + width * min(1.0, value + se)
        out.append(f'<text x="{left - 8}" y="{y + 13}" text-anchor="end">{_e(label)}</text>'
                   f'<rect class="{"mux" if mark else "bar"}" x="{left}" y="{y}" width="{w:.1f}" '
                   f'height="16"/><line class="err" x1="{lo:.1f}" y1="{y + 8}" x2="{hi:.1f}" '
                   f'y2="{y + 8}"/><line class="err" x1="{lo:.1f}" y1="{y + 3}" x2="{lo:.1f}" '
                   f'y2="{y + 13}"/><line class="err" x1="{hi:.1f}" y1="{y + 3}" x2="{hi:.1f}" '
                   f'y2="{y + 13}"/><text x="{left + width + 8}" y="{y + 13}">'
                   f'{100 * value:.1f} ± {100 * se:.1f}</text>')
    out.append("</svg>")
    return "".join(out)


def _front(tune: TuneResult) -> str:
    """Accuracy against cost per question: every configuration tried, the front joined."""
    points = [(p.cost, p.accuracy) for p in tune.points]
    front = sorted((e.cost, e.val_accuracy) for e in (tune.front_accuracy_cost or tune.front))
    every = points + front
    if not every:
        return '<p class="note">the tuning result holds no configurations</p>'
    w, h, pad = 520, 300, 46
    xs, ys = [c for c, _ in every], [a for _, a in every]
    x0, x1 = min(xs), max(xs) or 1.0
    y0, y1 = min(ys), max(ys)
    x1 = x1 if x1 > x0 else x0 + 1.0
    y0, y1 = (y0, y1) if y1 > y0 else (y0 - 0.01, y1 + 0.01)

    def at(c: float, a: float) -> tuple[float, float]:
        return (pad + (w - 2 * pad) * (c - x0) / (x1 - x0),
                h - pad - (h - 2 * pad) * (a - y0) / (y1 - y0))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img">',
           f'<line class="axis" x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}"/>',
           f'<line class="axis" x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}"/>',
           f'<text x="{w / 2}" y="{h - 10}" text-anchor="middle">cost per question '
           f'(${x0:.3g} – ${x1:.3g})</text>',
           f'<text x="12" y="{h / 2}" transform="rotate(-90 12 {h / 2})" text-anchor="middle">'
           f'validation accuracy ({100 * y0:.1f}–{100 * y1:.1f}%)</text>']
    for c, a in points:
        x, y = at(c, a)
        out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="#9aa3b2"/>')
    line = " ".join(f"{at(c, a)[0]:.1f},{at(c, a)[1]:.1f}" for c, a in front)
    out.append(f'<polyline points="{line}" fill="none" stroke="#e08a1e" stroke-width="2"/>')
    for c, a in front:
        x, y = at(c, a)
        out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="#e08a1e"/>')
    out.append("</svg>")
    rows = "".join(
        f"<tr><td>{_e(e.rule)}</td><td>{_e(', '.join(f'{m}×{k}' for m, k in e.pool.items()))}"
        f"</td><td class=num>{_pct(e.val_accuracy)}</td><td class=num>{_pct(e.test_accuracy)}"
        f"</td><td class=num>${e.cost:.4g}</td></tr>"
        for e in (tune.front_accuracy_cost or tune.front))
    return ("".join(out) + "<table><tr><th>rule</th><th>pool</th><th>validation</th>"
            f"<th>test</th><th>cost/question</th></tr>{rows}</table>")


def _member_cell(samples: Sequence[Mapping[str, Any]], k: int) -> tuple[str, Optional[str]]:
    """A member's votes and confidence (its top answer's share of its first k samples)."""
    used = list(samples)[:k] if k else list(samples)
    keys = [s.get("key") for s in used]
    counts = Counter(key for key in keys if key is not None)
    if not used:
        return "—", None
    top, count = counts.most_common(1)[0] if counts else (None, 0)
    votes = " ".join("∅" if s.get("answer") is None else str(s.get("answer")) for s in used)
    return f'<span class="vote">{_e(votes)}</span> ({count}/{len(used)})', top


def render(report: EvalReport, members: Optional[Mapping[str, Mapping[str, list]]] = None,
           tune: Optional[TuneResult] = None, title: Optional[str] = None) -> str:
    """The page. ``members``: {record id: {model: [sample objects: sample, text, answer, key,
    error]}} as ``record_members`` reads them (without it the table shows no votes)."""
    members = members or {}
    pool = [(p.model, p.samples) for p in report.pool]
    title = title or f"muxlang eval: {report.mux.name} on {report.dataset.name}"
    parts = [f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
             f"<meta name=viewport content='width=device-width,initial-scale=1'>"
             f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{_e(title)}</h1>",
             f'<p class="meta">{report.dataset.items} items ({report.dataset.scored_items} '
             f"scored), {report.trials} trial(s), rule {_e(report.mux.rule)}, tie-break "
             f"{_e(report.mux.tie_break)}; validation accuracies: "
             f"{_e(report.validation.source)}; store {_e(report.store)}</p>"]

    parts.append("<h2>Models: accuracy of one sample</h2>")
    models = sorted(report.models.items(), key=lambda kv: -kv[1].accuracy)
    parts.append(_bars([(name, row.accuracy, row.item_se, False) for name, row in models]))
    parts.append("<table><tr><th>model</th><th>pool k</th><th>accuracy</th><th>±items</th>"
                 "<th>unreadable</th><th>cost/sample</th></tr>")
    k_of = dict(pool)
    for name, row in models:
        cost = "—" if row.cost_per_sample is None else f"${row.cost_per_sample:.4g}"
        parts.append(f"<tr><td>{_e(name)}</td><td class=num>{_e(k_of.get(name))}</td>"
                     f"<td class=num>{_pct(row.accuracy)}</td><td class=num>"
                     f"{_pct(row.item_se)}</td><td class=num>{_pct(row.unreadable)}</td>"
                     f"<td class=num>{cost}</td></tr>")
    parts.append("</table>")

    parts.append("<h2>Baselines and the mux (± one standard error)</h2>")
    rows = []
    for key, label in _LABELS.items():
        figure = report.details.get(key)
        if figure is None:
            continue
        se = figure.se if report.trials > 1 else figure.item_se
        rows.append((f"{label}" + (f" ({figure.model})" if figure.model else ""),
                     figure.accuracy, se, key == "mux"))
    parts.append(_bars(rows))
    parts.append(f'<p class="note">error bars: {"over trials" if report.trials > 1 else "over items"}'
                 f"; contradiction {_pct(report.contradiction)}</p>")
    if tune is not None:
        parts.append("<h2>Tuning: accuracy against cost</h2>")
        parts.append(_front(tune))

    records = list(report.records)

    def disagrees(record: Any) -> bool:
        tops = set()
        for model, _ in pool:
            _, top = _member_cell(members.get(str(record.id), {}).get(model, []), k_of[model])
            if top is not None:
                tops.add(top)
        return len(tops) > 1

    flagged = [(disagrees(r), r) for r in records]
    flagged.sort(key=lambda pair: not pair[0])  # stable: disagreements first, then dataset order
    parts.append(f"<h2>Records ({len(records)}; {sum(d for d, _ in flagged)} with members "
                 "disagreeing, listed first)</h2>")
    head = "".join(f"<th>{_e(model)} ×{k}</th>" for model, k in pool)
    parts.append(f'<table id="records"><thead><tr><th>id</th><th>gold</th><th>answer</th>'
                 f"<th>correct</th><th>chosen</th><th>confidence</th>{head}<th>samples</th>"
                 "</tr></thead><tbody>")
    for disagree, record in flagged:
        mine = members.get(str(record.id), {})
        cells = "".join(f"<td>{_member_cell(mine.get(model, []), k)[0]}</td>"
                        for model, k in pool)
        raw = []
        for model, _ in pool:
            for sample in mine.get(model, []):
                body = sample.get("text") if sample.get("text") is not None else (
                    f"error: {sample.get('error')}")
                raw.append(f"<div><b>{_e(model)} #{_e(sample.get('sample'))}</b> → "
                           f"{_e(sample.get('answer'))}<pre>{_e(body)}</pre></div>")
        details = (f"<details><summary>{len(raw)} samples</summary>{''.join(raw)}</details>"
                   if raw else "—")
        state = "right" if record.correct else "wrong"
        parts.append(f'<tr class="record {state}{" dis" if disagree else ""}">'
                     f"<td>{_e(record.id)}</td><td>{_e(record.gold)}</td>"
                     f"<td>{_e(record.answer)}</td><td class=ok>"
                     f"{'✓' if record.correct else '✗'}</td><td>{_e(record.model)}</td>"
                     f"<td class=num>{_e(None if record.confidence is None else round(record.confidence, 3))}"
                     f"</td>{cells}<td>{details}</td></tr>")
    parts.append("</tbody></table>")
    for note in report.notes:
        parts.append(f'<p class="note">note: {_e(note)}</p>')
    parts.append("</body></html>\n")
    return "".join(parts)


def record_members(session: Any, spec: Any, report: EvalReport, mux: Any = None
                   ) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """{record id: {pool model: [{sample, text, answer, key, error}]}} from the session's store,
    for the records of ``report``."""
    from muxlang.scoring import Scorer
    from muxlang.session import runnable_of
    from muxlang.store.browse import stored_samples

    runnable = runnable_of(spec, mux if mux is not None else report.mux.name)
    task = runnable.task
    scorer = Scorer(task)
    wanted = {str(r.id) for r in report.records}
    names = {p.model for p in report.pool}
    models = [m for m in spec.models.values() if m.name in names]
    store = session.open_store(must_exist=True)
    try:
        items = [item for item in store.items(report.dataset.name) if str(item.key) in wanted]
        out: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for sample in stored_samples(store, task, items, models):
            answer = scorer.extract(sample.text)
            out.setdefault(str(sample.item), {}).setdefault(sample.model, []).append({
                "sample": sample.sample, "text": sample.text, "answer": answer,
                "key": scorer.key(answer), "error": sample.error})
        return out
    finally:
        store.close()


def html_report(session: Any, spec: Any, dataset: str, *, report: Optional[EvalReport] = None,
                tune: Any = None, mux: Any = None, **evaluate: Any) -> str:
    """The HTML page of ``session.evaluate(spec, dataset, mux=mux, **evaluate)`` (or of the
    ``report`` given), with the raw samples from the store; ``tune``: a ``TuneResult`` or the
    dict ``muxlang tune --json`` prints."""
    from muxlang.session import _spec

    spec = _spec(spec)
    if report is None:
        report = session.evaluate(spec, dataset, mux=mux, **evaluate)
    if isinstance(tune, Mapping):
        tune = TuneResult.from_dict(dict(tune))
    return render(report, record_members(session, spec, report, mux), tune)
