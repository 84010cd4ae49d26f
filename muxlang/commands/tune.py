"""``muxlang tune SPEC --dataset VAL [--test TEST | --split 0.5]``: search pools, per-model sample
budgets and the selection rule on stored samples (Optuna), check the winner on test data, and
optionally write the tuned spec (``--out``) and pictures (``--plot``)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from muxlang.errors import MuxError, caused_by_interrupt, did_you_mean


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
    parser.add_argument("--sampler", choices=["auto", "grid", "tpe", "nsga2"])
    parser.add_argument("--objective", action="append", metavar="NAME",
                        help="accuracy | union_contradiction | cost; repeat for several")
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
    if not spec.tunes:
        raise MuxError(f"{spec.path} has no tune block",)
    if name is not None:
        if name not in spec.tunes:
            hint = did_you_mean(name, spec.tunes)
            raise MuxError(f"no tune block '{name}' in {spec.path}"
                           + (f"; {hint}" if hint else
                              f" (tune blocks: {', '.join(spec.tunes)})"))
        return spec.tunes[name]
    for candidate in reversed(spec.root_names):
        if candidate in spec.tunes:
            return spec.tunes[candidate]
    return list(spec.tunes.values())[-1]


def storage_url(url: str | None) -> str | None:
    if url is None:
        return None
    if "://" not in url:  # a file path: SQLite
        return "sqlite:///" + str(Path(url).expanduser().absolute())
    scheme, rest = url.split("://", 1)
    if scheme in ("postgresql", "postgres"):
        return "postgresql+psycopg://" + rest
    return url


def load_spec_votes(args, spec, tune):
    """(val votes, test votes or None, store display URL, dataset content hash, references)."""
    from muxlang.store import Store, load_votes, resolve_dataset

    store = Store(args.store)
    try:
        candidates = list(tune.candidates)
        names = {m.name for m in candidates}
        if args.reference is not None:
            refs = []
            for r in args.reference:
                if r not in spec.models:
                    hint = did_you_mean(r, spec.models)
                    raise MuxError(f"--reference {r}: no such model in the spec"
                                   + (f"; {hint}" if hint else ""))
                refs.append(spec.models[r])
        else:
            refs = [m for n, m in spec.models.items() if n not in names]
        gold = tune.mux.task.gold
        info = resolve_dataset(store, args.dataset, gold)
        test_info = resolve_dataset(store, args.test, gold) if args.test else None
        if test_info is not None and test_info.content_hash == info.content_hash:
            # scoring the winner on the data it was chosen on would report a biased "test" figure
            raise MuxError(f"--test {args.test} holds the same questions as --dataset "
                           f"{args.dataset}; give held-out data, or --split 0.5 to hold out "
                           f"part of {args.dataset}")
        val = load_votes(store, spec, tune.mux, info, models=candidates)
        test = load_votes(store, spec, tune.mux, test_info, models=candidates) if test_info else None
        if test is not None:
            shared = len(set(val.items) & set(test.items))
            if shared:
                _warn(f"{shared} of the {len(test.items)} questions of --test {args.test} are "
                      f"also in --dataset {args.dataset}: the test figure is not fully held out")
        kept = []
        for ref in refs:
            try:
                rv = load_votes(store, spec, tune.mux, info, models=[ref])
                rt = load_votes(store, spec, tune.mux, test_info, models=[ref]) if test_info else None
            except MuxError:
                if args.reference is not None:
                    raise
                continue
            if not any(rv.votes[ref.name][i] for i in range(len(rv.items))):
                if args.reference is not None:
                    _warn(f"reference {ref.name}: no stored samples in '{info.name}'")
                continue
            _merge(val, rv, ref.name)
            if rt is not None:
                _merge(test, rt, ref.name)
            kept.append(ref.name)
        return val, test, store.display_url, info.content_hash, kept
    finally:
        store.close()


def _merge(into, other, model: str) -> None:
    into.models.append(model)
    into.votes[model] = other.votes[model]
    for table in ("input_tokens", "output_tokens", "price_input", "price_output"):
        if model in getattr(other, table):
            getattr(into, table)[model] = getattr(other, table)[model]


def run(args) -> int:
    try:
        return _tune(args)
    except BaseException as error:
        if getattr(args, "storage", None) and caused_by_interrupt(error):
            print("interrupted: the study keeps every finished trial; run the same command "
                  "again to resume it", file=sys.stderr)
        raise


def _tune(args) -> int:
    from muxlang.lang import load_spec
    from muxlang.lang.loader import read_source
    from muxlang.optimizer.simulator import split_votes
    from muxlang.optimizer.tuned_spec import Record, text_hash, write_tuned_spec
    from muxlang.optimizer.tuning import Options, render_text, tune_votes

    if args.split is not None and args.test:
        raise MuxError("give either --test or --split, not both")
    if args.trials is not None and args.trials < 1:
        raise MuxError("--trials must be at least 1")
    if args.simulations is not None and args.simulations < 1:
        raise MuxError("--simulations must be at least 1")
    spec = load_spec(args.spec)
    tune = pick_tune(spec, args.tune)
    if args.out:  # fail before the search, not after it
        from muxlang.lang.parser import parse
        from muxlang.optimizer.tuned_spec import find_mux

        if Path(args.out).is_dir():
            raise MuxError(f"--out {args.out} is a directory; give a file name like tuned.mux")
        find_mux(parse(read_source(args.spec), args.spec), tune.mux.name)
    if args.plot and Path(args.plot).exists() and not Path(args.plot).is_dir():
        raise MuxError(f"--plot {args.plot} exists and is not a directory")
    storage = storage_url(args.storage)
    study = args.study
    if storage and not study:
        study = f"{Path(args.spec).stem}-{tune.name}"
    val, test, store_url, content_hash, refs = load_spec_votes(args, spec, tune)
    dataset_label = args.dataset
    if args.split is not None:
        val, test = split_votes(val, args.split, args.split_seed)
        dataset_label = f"{args.dataset} (split {args.split:g}/{1 - args.split:g}, " \
                        f"seed {args.split_seed}: validation part)"
    options = Options(trials=args.trials, simulations=args.simulations, seed=args.seed,
                      sampler=args.sampler, objectives=_objectives(args.objective),
                      storage=storage, study=study, references=refs,
                      progress=not args.no_progress and not args.json and sys.stderr.isatty())
    fingerprint = {"tune": tune.name, "dataset": args.dataset, "split": args.split,
                   "split_seed": args.split_seed if args.split is not None else None,
                   "test": args.test}
    result = tune_votes(spec, tune, val, test, options, warn=None if args.json else _warn,
                        fingerprint=fingerprint)
    result["spec"] = args.spec
    result["store"] = store_url
    result["dataset"]["content_sha256"] = content_hash
    result["split"] = ({"fraction": args.split, "seed": args.split_seed}
                       if args.split is not None else None)
    if args.json:
        for message in result["warnings"]:
            _warn(message)
    if args.out:
        from muxlang.optimizer.simulator import Config

        best = result["best"]
        config = Config(tuple(best["pool"].items()), best["rule"])
        record = Record(
            source_path=args.spec, source_hash=text_hash(read_source(args.spec)),
            dataset=dataset_label, dataset_hash=content_hash, store=store_url, study=study,
            storage=storage, objective=", ".join(result["objectives"]),
            val_accuracy=best["val_accuracy"], val_se=best["val_se"],
            val_se_items=best["val_se_items"], test_accuracy=best["test_accuracy"],
            test_se=best["test_se"], test_se_items=best["test_se_items"],
            simulations=result["simulations"], seed=result["seed"], config=config,
            test_dataset=(args.test or (f"{args.dataset} (the other part of the split)"
                                        if args.split is not None else None)))
        write_tuned_spec(args.spec, tune.mux.name, config, record, args.out)
        result["out"] = args.out
    if args.plot:
        from muxlang.optimizer.plots import write_plots

        result["plots"] = write_plots(result, args.plot)
    if args.result:
        try:
            Path(args.result).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        except OSError as error:
            raise MuxError(f"cannot write {args.result}: {error.strerror or error}")
    if storage and study:
        _save_to_study(storage, study, result)
    if args.json:
        print(json.dumps(result))
    else:
        render_text(result)
        if args.out:
            print(f"\nwrote {args.out}")
        for path in result.get("plots", []):
            print(f"wrote {path}")
    return 0


def _objectives(values):
    if not values:
        return None
    out = []
    for v in values:
        out.extend(x.strip() for x in v.split(",") if x.strip())
    return out


def _save_to_study(storage: str, study: str, result: dict) -> None:
    """Keep the result with the study so `muxlang report --storage --study` can plot it."""
    import optuna

    try:
        s = optuna.load_study(study_name=study, storage=storage)
        slim = {k: v for k, v in result.items() if k != "points"}
        s.set_user_attr("result", slim)
    except Exception as error:  # the study itself is complete; the picture data is a bonus
        _warn(f"could not save the result with study '{study}': {error}".splitlines()[0])
