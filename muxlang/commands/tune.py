"""``muxlang tune SPEC --dataset VAL [--test TEST | --split 0.5]``: search pools, per-model sample
budgets and the selection rule on stored samples (Optuna), check the winner on test data, and
optionally write the tuned spec (``--out``) and pictures (``--plot``)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from muxlang.errors import DatasetError, MuxError, caused_by_interrupt


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="the .mux spec with a tune block")
    parser.add_argument("--dataset", required=True, metavar="VAL",
                        help="validation data: a store dataset, or a questions file (JSONL) whose "
                             "questions have stored samples")
    parser.add_argument("--test", metavar="TEST",
                        help="held-out test data: a store dataset or a questions file")
    parser.add_argument("--split", type=float, metavar="FRACTION",
                        help="no separate test set: tune on this share of VAL's items (drawn at "
                             "random, --split-seed) and report on the rest")
    parser.add_argument("--split-seed", type=int, default=0, metavar="N",
                        help="seed of the --split draw (default 0)")
    parser.add_argument("--tune", metavar="NAME", help="the tune block (default: the last one)")
    parser.add_argument("--trials", type=int, metavar="N",
                        help="configurations to try, counted over all workers of a study")
    parser.add_argument("--simulations", type=int, metavar="N",
                        help="seeded resampling trials per configuration")
    parser.add_argument("--seed", type=int, metavar="N", help="seed of draws and sampler")
    parser.add_argument("--sampler", choices=["auto", "grid", "tpe", "nsga2"],
                        help="how configurations are chosen: grid walks the whole space, tpe "
                             "(one objective) and nsga2 (several) search it; auto: grid when "
                             "the space fits in the trials, else tpe or nsga2 (default: the "
                             "tune block's sampler)")
    parser.add_argument("--objective", action="append", metavar="NAME",
                        help="accuracy | union_contradiction | cost | samples; repeat for several")
    parser.add_argument("--reference", action="append", metavar="MODEL", default=None,
                        help="a non-candidate model to compare with (default: every model of the "
                             "spec that is not a candidate and has samples)")
    parser.add_argument("--store", metavar="URL", help="the sample store (default $MUXLANG_STORE "
                                                        "or muxlang.sqlite)")
    parser.add_argument("--storage", metavar="URL",
                        help="Optuna RDB storage shared by workers, e.g. "
                             "postgresql+psycopg://user@host:5432/db")
    parser.add_argument("--study", metavar="NAME", help="study name (resumed when it exists)")
    parser.add_argument("--out", metavar="TUNED.mux", help="write the tuned spec here")
    parser.add_argument("--plot", metavar="DIR", help="write PNG pictures into DIR")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--result", metavar="FILE.json",
                        help="also save the result object (for `muxlang report`)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def pick_tune(spec, name: str | None):
    from muxlang.session import tune_of

    return tune_of(spec, name)


def storage_url(url: str | None) -> str | None:
    from muxlang.session import storage_url as resolve

    return resolve(url)


def run(args) -> int:
    try:
        return _tune(args)
    except BaseException as error:
        if getattr(args, "storage", None) and caused_by_interrupt(error):
            print("interrupted: the study keeps every finished trial; run the same command "
                  "again to resume it", file=sys.stderr)
        raise


def _tune(args) -> int:
    from muxlang.lang.loader import read_source
    from muxlang.optimizer.tuning import render_text
    from muxlang.session import Session, load, tune_of

    if args.split is not None and args.test:
        raise MuxError("give either --test or --split, not both")
    if args.trials is not None and args.trials < 1:
        raise MuxError("--trials must be at least 1")
    if args.simulations is not None and args.simulations < 1:
        raise MuxError("--simulations must be at least 1")
    spec = load(args.spec)
    tune = tune_of(spec, args.tune)
    if args.out:  # fail before the search, not after it
        from muxlang.lang.parser import parse
        from muxlang.optimizer.tuned_spec import find_mux

        if Path(args.out).is_dir():
            raise MuxError(f"--out {args.out} is a directory; give a file name like tuned.mux")
        find_mux(parse(read_source(args.spec), args.spec), tune.mux.name)
    if args.plot and Path(args.plot).exists() and not Path(args.plot).is_dir():
        raise MuxError(f"--plot {args.plot} exists and is not a directory")
    session = Session(args.store, warn=_warn)
    try:
        result = session.tune(
            spec, args.dataset, test=args.test, split=args.split, tune=tune.name,
            split_seed=args.split_seed, trials=args.trials, simulations=args.simulations,
            seed=args.seed, sampler=args.sampler, objectives=_objectives(args.objective),
            references=args.reference, storage=args.storage, study=args.study,
            progress=not args.no_progress and not args.json and sys.stderr.isatty())
    except DatasetError as error:
        if getattr(error, "same_as", None) is None:
            raise
        # the library names the data; this command line says it with the flags that were given
        raise MuxError(f"--test {args.test} holds the same questions as --dataset "
                       f"{args.dataset}; give held-out data, or --split 0.5 to hold out part "
                       f"of {args.dataset}") from None
    if args.out:
        _write_tuned(args, tune, result)
        result.extra["out"] = args.out
    if args.plot:
        from muxlang.optimizer.plots import write_plots

        result.extra["plots"] = write_plots(result.to_dict(), args.plot)
    if args.result:
        try:
            Path(args.result).write_text(json.dumps(result.to_dict(), indent=1) + "\n",
                                         encoding="utf-8")
        except OSError as error:
            raise MuxError(f"cannot write {args.result}: {error.strerror or error}")
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        render_text(result)
        if args.out:
            print(f"\nwrote {args.out}")
        for path in result.extra.get("plots", []):
            print(f"wrote {path}")
    return 0


def _write_tuned(args, tune, result) -> None:
    """``--out``: the spec with the tuned pool and rule, and a comment saying where they came
    from."""
    from muxlang.lang.loader import read_source
    from muxlang.optimizer.tuned_spec import Record, text_hash, write_tuned_spec
    from muxlang.simulator import Config

    dataset_label = args.dataset
    if args.split is not None:
        dataset_label = f"{args.dataset} (split {args.split:g}/{1 - args.split:g}, " \
                        f"seed {args.split_seed}: validation part)"
    best = result.best
    config = Config(tuple(best.pool.items()), best.rule, best.adaptive)
    storage = storage_url(args.storage)
    study = result.study
    record = Record(
        source_path=args.spec, source_hash=text_hash(read_source(args.spec)),
        dataset=dataset_label, dataset_hash=result.dataset.content_sha256, store=result.store,
        study=study, storage=storage, objective=", ".join(result.objectives),
        val_accuracy=best.val_accuracy, val_se=best.val_se, val_se_items=best.val_se_items,
        test_accuracy=best.test_accuracy, test_se=best.test_se,
        test_se_items=best.test_se_items, simulations=result.simulations, seed=result.seed,
        config=config,
        test_dataset=(args.test or (f"{args.dataset} (the other part of the split)"
                                    if args.split is not None else None)),
        replaced_adaptive=result.untried_adaptive)
    write_tuned_spec(args.spec, tune.mux.name, config, record, args.out)


def _objectives(values):
    if not values:
        return None
    out = []
    for v in values:
        out.extend(x.strip() for x in v.split(",") if x.strip())
    return out
