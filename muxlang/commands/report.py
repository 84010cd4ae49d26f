"""``muxlang report``: PNG pictures of a tuning result: the accuracy–cost Pareto front (best single
model and the large reference model marked) and accuracy vs samples per model for the chosen pool.

The result comes from ``muxlang tune --result FILE.json`` (or ``tune --json`` output saved to a
file), or from a study in Optuna storage that ``muxlang tune --storage URL --study NAME`` ran.
``--html FILE --eval EVAL.json`` writes one self-contained HTML page instead (``report_html``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from muxlang.errors import MuxError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--result", metavar="FILE.json",
                        help="a result saved by `muxlang tune --result` or `tune --json`")
    source.add_argument("--storage", metavar="URL", help="Optuna storage of a tuning study")
    parser.add_argument("--study", metavar="NAME", help="the study (with --storage)")
    parser.add_argument("--out", metavar="DIR", default="tuning-plots",
                        help="folder for the PNG files (default tuning-plots)")
    parser.add_argument("--html", metavar="FILE",
                        help="write one self-contained HTML page instead of PNG files: the "
                             "tuning front, with --eval the evaluation (per-model accuracy, "
                             "baselines with error bars, one row per record)")
    parser.add_argument("--eval", metavar="EVAL.json",
                        help="with --html: an evaluation saved by `muxlang eval --json`")


def _from_storage(url: str, study: str | None) -> dict:
    import optuna

    from muxlang.commands.tune import storage_url

    if not study:
        raise MuxError("--storage needs --study NAME")
    resolved = storage_url(url)  # an unsupported scheme is refused here, by name
    if resolved.startswith("sqlite:///") and not Path(resolved[len("sqlite:///"):]).is_file():
        raise MuxError(f"no study storage at {url}: `muxlang tune --storage` writes one")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        # report only reads: Optuna's tables are not created in a database that lacks them
        storage = optuna.storages.RDBStorage(resolved, skip_table_creation=True)
        s = optuna.load_study(study_name=study, storage=storage)
    except KeyError:
        raise MuxError(f"no study '{study}' in that storage")
    except Exception as error:
        raise MuxError(f"cannot open the study storage: {error}".splitlines()[0])
    result = s.user_attrs.get("result")
    if not result:
        raise MuxError(f"study '{study}' has no finished tuning result yet (run muxlang tune "
                       f"to the end once)")
    # every feasible trial of the study, for the scatter
    points = []
    for t in s.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        score = t.user_attrs.get("score")
        if score and all(c <= 0 for c in t.user_attrs.get("constraint", [0.0])):
            points.append({"accuracy": score["accuracy"], "cost": score["cost"],
                           "tokens": score["tokens"],
                           "samples": sum(t.user_attrs.get("pool", {}).values())})
    return {**result, "points": points}


def run(args) -> int:
    from muxlang.optimizer.plots import write_plots

    if args.result:
        try:
            with open(args.result, encoding="utf-8") as fh:
                result = json.load(fh)
        except OSError as error:
            raise MuxError(f"cannot read {args.result}: {error.strerror or error}")
        except json.JSONDecodeError as error:
            raise MuxError(f"{args.result}: not a JSON tuning result ({error.msg}, line "
                           f"{error.lineno})")
        if not isinstance(result, dict) or "best" not in result:
            raise MuxError(f"{args.result}: not a tuning result (no 'best')")
    else:
        result = _from_storage(args.storage, args.study)
    if args.html:
        return _write_html(args, result)
    if args.eval:
        raise MuxError("--eval goes with --html FILE")
    for path in write_plots(result, args.out):
        print(f"wrote {path}")
    return 0


def _write_html(args, result: dict) -> int:
    from muxlang.report_html import render
    from muxlang.results import EvalReport, TuneResult

    if not args.eval:
        raise MuxError("--html needs --eval EVAL.json (an evaluation saved by `muxlang eval "
                       "--json`); `muxlang eval --html FILE` writes the page with raw samples")
    try:
        with open(args.eval, encoding="utf-8") as fh:
            evaluation = EvalReport.from_dict(json.load(fh))
    except OSError as error:
        raise MuxError(f"cannot read {args.eval}: {error.strerror or error}")
    except (ValueError, TypeError, AttributeError) as error:
        raise MuxError(f"{args.eval}: not an evaluation saved by `muxlang eval --json` ({error})")
    page = render(evaluation, None, TuneResult.from_dict(result))
    try:
        with open(args.html, "w", encoding="utf-8") as fh:
            fh.write(page)
    except OSError as error:
        raise MuxError(f"cannot write {args.html}: {error.strerror or error}")
    print(f"wrote {args.html}")
    return 0
