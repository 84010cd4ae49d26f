"""``muxlang eval SPEC --dataset NAME_OR_FILE``: a mux and the paper's baselines, from stored samples.

No model is called. Per-model accuracy, Single-Best, Single-Best-SC, Agent Forest, SLM-MUX (and the
spec's own rule), union/oracle and contradiction rate, tokens and cost per question; mean ±
standard error over seeded resampling trials when more samples are stored than the mux draws.
A table on the terminal; ``--json`` prints one JSON object (``per_model``, ``baselines``, ...).
Definitions: ``muxlang.evaluation``.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from muxlang.commands.options import non_negative_int, positive_int, select_runnable

if TYPE_CHECKING:
    from muxlang.results import EvalReport


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC", help="the .mux spec file")
    parser.add_argument("--dataset", required=True, metavar="NAME_OR_FILE",
                        help="a dataset in the store, or a questions file (JSONL) to evaluate on")
    parser.add_argument("--mux", metavar="NAME",
                        help="the mux or cascade to evaluate (default: the last one declared)")
    parser.add_argument("--validation", metavar="NAME_OR_FILE",
                        help="dataset whose stored samples give the validation accuracies used "
                             "for tie-breaks and Single-Best (default: the mux's 'validation', "
                             "else typed accuracies, else pool order)")
    parser.add_argument("--trials", type=positive_int, metavar="T",
                        help="seeded resampling trials (default: 100 when more samples are stored "
                             "than the mux draws, else 1)")
    parser.add_argument("--seed", type=non_negative_int, default=0, metavar="S",
                        help="seed of the trials")
    parser.add_argument("--store", metavar="URL",
                        help="store URL or SQLite path (default: $MUXLANG_STORE, else "
                             "./muxlang.sqlite)")
    parser.add_argument("--limit", type=positive_int, metavar="N",
                        help="evaluate only the dataset's first N items")
    parser.add_argument("--html", metavar="FILE",
                        help="also write one self-contained HTML report (per-model accuracy, "
                             "baselines with error bars, one row per record with each member's "
                             "votes and raw samples)")
    parser.add_argument("--tune-result", metavar="FILE.json",
                        help="with --html: a tuning result (`muxlang tune --json` or --result) "
                             "whose accuracy-cost front the report shows")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from muxlang.errors import MuxError
    from muxlang.session import Session, load

    spec = load(args.spec)
    mux = select_runnable(spec, args.spec, args.mux)
    tune = None
    if args.tune_result:
        if not args.html:
            raise MuxError("--tune-result goes with --html FILE")
        try:
            with open(args.tune_result, encoding="utf-8") as fh:
                tune = json.load(fh)
        except (OSError, ValueError) as error:
            raise MuxError(f"cannot read the tuning result {args.tune_result}: {error}")
    session = Session(args.store)
    report = session.evaluate(spec, args.dataset, validation=args.validation, mux=mux,
                              trials=args.trials, seed=args.seed, limit=args.limit)
    if args.json:
        print(json.dumps(report.to_dict(), sort_keys=True))
    else:
        render(report)
        if report.validation.dataset is None and "pool order" in report.validation.source:
            print("hint: without validation accuracies, Single-Best and ties went by pool order; "
                  "give --validation NAME_OR_FILE to measure them on another dataset")
    if args.html:
        from muxlang.report_html import html_report

        page = html_report(session, spec, args.dataset, report=report, tune=tune, mux=mux)
        try:
            with open(args.html, "w", encoding="utf-8") as fh:
                fh.write(page)
        except OSError as error:
            raise MuxError(f"cannot write {args.html}: {error.strerror or error}")
        print(f"wrote {args.html}", file=sys.stderr)
    return 0


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def _se(value: float | None) -> str:
    return "—" if value is None else f"±{100 * value:.1f}"


def _num(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _money(value: float | None) -> str:
    if value is None:
        return "—"
    return "$0" if value == 0 else f"${value:.2g}" if value < 0.01 else f"${value:.4f}"


def render(report: EvalReport, file: Any = None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    stream = file or sys.stdout
    tty = getattr(stream, "isatty", lambda: False)()
    console = Console(file=stream, highlight=False, width=None if tty else 120)
    mux = report.mux
    data = report.dataset
    trials = report.trials
    cascade = bool(mux.answered_at_step)
    kind = "cascade" if cascade else "mux"
    what = mux.rule if cascade else f"rule {mux.rule}"
    console.print(f"[bold]{kind} {escape(mux.name)}[/] ({escape(what)}, tie-break "
                  f"{mux.tie_break}) on dataset [bold]{escape(data.name)}[/] "
                  f"({data.items} items, {data.content_hash[:12]}) from "
                  f"{escape(report.store)}")
    console.print(f"{trials} trial{'s' if trials != 1 else ''}"
                  + (f" of seeded resampling (seed {report.seed})" if report.resampled
                     else " (exactly k samples stored per model: no resampling)")
                  + f"; validation accuracies: {escape(report.validation.source)}")

    costs = any(row.tokens_in is not None or row.tokens_out is not None
                or row.cost_per_sample is not None for row in report.models.values())
    k_of = {p.model: p.samples for p in report.pool}
    models = Table(title="Models (accuracy of one sample, %)", title_justify="left")
    for name, justify in (("model", "left"), ("pool k", "right"), ("accuracy", "right"),
                          ("±items", "right"), ("validation", "right"), ("unreadable %", "right"),
                          *((("tokens/sample", "right"), ("cost/sample", "right")) if costs else ())):
        models.add_column(name, justify=justify, no_wrap=name == "model")
    val = report.validation.accuracies
    for name, row in sorted(report.models.items(), key=lambda kv: -kv[1].accuracy):
        tokens = (None if row.tokens_in is None and row.tokens_out is None
                  else (row.tokens_in or 0) + (row.tokens_out or 0))
        models.add_row(escape(name), str(k_of.get(name, "—")), _pct(row.accuracy),
                       _se(row.item_se), _pct(val.get(name)) if name in val else "—",
                       _pct(row.unreadable),
                       *((_num(tokens), _money(row.cost_per_sample)) if costs else ()))
    console.print(models)

    d = report.details
    table = Table(title="Methods on the same draws (accuracy, %)", title_justify="left")
    for name, justify in (("method", "left"), ("accuracy", "right"), ("±trials", "right"),
                          ("±items", "right"),
                          *((("tokens/question", "right"), ("cost/question", "right"))
                            if costs else ()), ("note", "left")):
        table.add_column(name, justify=justify, no_wrap=name == "method")

    def row(label: str, key: str, note: str = "") -> None:
        x = d[key]
        table.add_row(escape(label), _pct(x.accuracy), _se(x.se) if trials > 1 else "—",
                      _se(x.item_se),
                      *((_num(x.tokens_per_question), _money(x.cost_per_question))
                        if costs else ()), escape(note))

    row("Single-Best", "single_best", f"{d['single_best'].model}, 1 sample")
    row("Single-Best-SC", "single_best_sc",
        f"{d['single_best_sc'].model}, majority of {d['single_best_sc'].samples}")
    row("Agent Forest", "agent_forest", "majority over all samples")
    row("SLM-MUX", "slm_mux", "most self-consistent model")
    if mux.rule != "slm_mux" or mux.structured:
        row(f"{kind} {mux.name}", "mux", mux.rule if cascade else f"rule {mux.rule}")
    row("Union (oracle)", "union", "some model right")
    row("Oracle (any sample)", "oracle_any_sample", "some sample right")
    table.add_row("Contradiction", _pct(report.contradiction),
                  _se(report.contradiction_se) if trials > 1 else "—", "",
                  *(("", "") if costs else ()),
                  "a model consistently wrong, another right")
    console.print(table)
    if not costs:
        console.print("tokens and cost: not recorded for these samples (imported recordings)")
    if cascade:
        shares = ", ".join(f"step {i + 1}: {_pct(s)}%" for i, s in enumerate(mux.answered_at_step))
        console.print(f"cascade answered at {shares}")
    if mux.no_answer:
        console.print(f"mux gave no answer on {_pct(mux.no_answer)}% of items (counted wrong)")
    for note in report.notes:
        console.print(f"note: {escape(note)}")
    console.print(f"({report.seconds:.2f}s)")
