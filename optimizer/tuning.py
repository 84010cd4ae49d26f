"""One tuning run, independent of where the votes come from: search on validation votes, score the
winner, the Pareto set and the baselines on test votes with the same simulator, and return one
JSON-ready result (what ``muxlang tune --json`` prints and ``muxlang report`` plots)."""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Callable

import optuna

from muxlang import ir
from muxlang.errors import MuxError
from muxlang.optimizer.search import (OBJECTIVES, Space, TrialRecord, pareto_front, run_search,
                                      score_to_dict)
from muxlang.optimizer.simulator import Config, Simulator, votes_hash
from muxlang.votes import StoredVotes


@dataclass
class Options:
    trials: int | None = None  # default: the tune block's
    simulations: int | None = None
    seed: int | None = None
    sampler: str | None = None
    objectives: list[str] | None = None
    storage: str | None = None
    study: str | None = None
    references: list[str] = field(default_factory=list)
    progress: bool = False
    curves: bool = True


def accuracies_for(spec_models: dict[str, ir.Model], sim: Simulator) -> dict[str, float | None]:
    """Validation accuracy per model: typed into the spec if it is, else measured on the votes."""
    out = dict(sim.measured_accuracy)
    for name in out:
        model = spec_models.get(name)
        if model is not None and model.accuracy is not None:
            out[name] = model.accuracy
    return out


def build_space(tune: ir.Tune, sim: Simulator, warn: Callable[[str], None]) -> Space:
    """The search space: per candidate the budgets its stored samples allow.

    A budget never exceeds the samples stored on every item (the fewest of any item: a larger
    budget would count samples that were never collected as unreadable). Candidates whose stored
    samples cap the block's ``samples`` range are named in one warning; candidates that cannot
    meet its lower bound are left out; when none is left, the error says what the store holds."""
    lo, hi = tune.samples
    budgets = {}
    capped: dict[int, list[str]] = {}  # stored samples -> candidates searched up to that only
    short: dict[int, list[str]] = {}  # stored samples -> candidates left out (too few)
    uneven: list[str] = []  # candidates with more samples on some items than on all
    for model in tune.candidates:
        most = sim.max_budget(model.name)
        if most == 0:
            warn(f"no stored samples of candidate '{model.name}': left out")
            continue
        stored = sim.full_budget(model.name)
        if stored < most:
            uneven.append(f"{model.name} ({stored} on every item, up to {most} on some)")
        if max(lo, 1) > stored:
            short.setdefault(stored, []).append(model.name)
            continue
        if hi > stored:
            capped.setdefault(stored, []).append(model.name)
        budgets[model.name] = (max(lo, 1), min(hi, stored))
    for stored, names in sorted(capped.items()):
        warn(f"{', '.join(names)}: {stored} sample(s) stored per item, so budgets above {stored} "
             f"cannot be simulated (searching {max(lo, 1)}..{stored} of samples = {lo}..{hi})")
    if uneven:
        warn("budgets count only the samples stored on every item: " + "; ".join(uneven)
             + " (collect the rest with muxlang collect --samples K)")
    held = ", ".join(f"{', '.join(names)}: {stored}" for stored, names in sorted(short.items()))
    if not budgets and short:
        raise MuxError(f"tune {tune.name}: samples = {lo}..{hi} needs at least {lo} stored "
                       f"sample(s) per item, but '{sim.votes.dataset}' holds fewer for every "
                       f"candidate ({held}); lower the range or store more samples "
                       f"(muxlang collect --samples {hi})")
    if short:
        warn(f"left out, fewer than {lo} sample(s) stored per item: {held}")
    names = [m.name for m in tune.candidates if m.name in budgets]
    if not names:
        raise MuxError(f"tune {tune.name}: no candidate has stored samples in "
                       f"'{sim.votes.dataset}'")
    return Space(names, budgets, tune.pool_size, list(tune.rules))


def _interval_check(val: dict, test: dict) -> bool:
    """Is the test accuracy inside the validation interval (± 2 combined standard errors)?"""
    half = 2 * math.sqrt(val["se"] ** 2 + val["se_items"] ** 2)
    return abs(test["accuracy"] - val["accuracy"]) <= half


def _entry(config: Config, val: dict, test: dict | None) -> dict:
    out = {
        "pool": config.as_dict(), "rule": config.rule,
        "val_accuracy": val["accuracy"], "val_se": val["se"], "val_se_items": val["se_items"],
        "union": val["union"], "contradiction": val["contradiction"],
        "cost": val["cost"], "tokens": val["tokens"], "samples": sum(config.as_dict().values()),
        "test_accuracy": None, "test_se": None, "test_se_items": None, "in_val_interval": None,
    }
    if test is not None:
        out.update({"test_accuracy": test["accuracy"], "test_se": test["se"],
                    "test_se_items": test["se_items"], "test_cost": test["cost"],
                    "in_val_interval": _interval_check(val, test)})
    return out


class _Progress:
    """A rich progress bar on stderr, one tick per finished trial of this process."""

    def __init__(self, total: int, enabled: bool):
        self.bar = None
        self.best: float | None = None
        self.sign: int | None = None
        if enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn)

            self.bar = Progress(TextColumn("tuning"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("best {task.fields[best]}"), TimeElapsedColumn(),
                                console=Console(stderr=True), transient=True)
            self.task = self.bar.add_task("trials", total=total, best="-")

    def __enter__(self):
        if self.bar:
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.bar:
            self.bar.stop()

    def __call__(self, study, trial) -> None:
        if self.bar:
            # the best value of this process's trials, from the trial itself: asking the study
            # (``study.best_trial``) costs database queries per trial with a shared storage
            if self.sign is None:
                directions = study.directions
                self.sign = (0 if len(directions) != 1 else
                             1 if directions[0] == optuna.study.StudyDirection.MAXIMIZE else -1)
            values = trial.values
            if self.sign and values and trial.state == optuna.trial.TrialState.COMPLETE:
                if self.best is None or self.sign * values[0] > self.sign * self.best:
                    self.best = values[0]
            self.bar.update(self.task, advance=1,
                            best="-" if self.best is None else f"{self.best:.4f}")


def tune_votes(spec: ir.Spec, tune: ir.Tune, val: StoredVotes, test: StoredVotes | None,
               options: Options, warn: Callable[[str], None] | None = None,
               fingerprint: dict | None = None) -> dict:
    """Search on ``val``; score on ``test``. Returns the result object (JSON-ready)."""
    warnings: list[str] = []

    def note(message: str) -> None:
        warnings.append(message)
        if warn:
            warn(message)

    simulations = options.simulations or tune.simulations
    seed = tune.seed if options.seed is None else options.seed
    objectives = options.objectives or list(tune.objectives)
    trials = options.trials or tune.trials
    candidates = [m.name for m in tune.candidates]
    references = [r for r in options.references if r in val.votes and r not in candidates]
    wanted = candidates + references
    val_sim = Simulator(val, simulations, seed, models=[m for m in wanted if m in val.votes])
    accuracies = accuracies_for(spec.models, val_sim)
    if tune.mux.tie_break == "order":  # the mux breaks ties by pool order only
        accuracies = {m: None for m in accuracies}
    val_sim.accuracies.update(accuracies)
    test_sim = None
    if test is not None:
        test_sim = Simulator(test, simulations, seed, accuracies=accuracies,
                             models=[m for m in wanted if m in test.votes])
    space = build_space(tune, val_sim, note)
    if "cost" in (options.objectives or list(tune.objectives)):
        unpriced = [m for m in space.candidates if val.cost_per_sample(m) <= 0]
        if unpriced:
            note(f"cost objective: no price or no stored token counts for "
                 f"{', '.join(unpriced)}; their samples count as free")
    if not space.candidates:
        raise MuxError(f"tune {tune.name}: no candidate has stored samples in '{val.dataset}'")
    fp = dict(fingerprint or {})
    fp.update({"val": votes_hash(val, space.candidates), "candidates": space.candidates,
               "objectives": objectives, "simulations": simulations, "seed": seed,
               "rules": space.rules, "pool_size": list(space.pool_size),
               "budgets": {m: list(b) for m, b in space.budgets.items()}})
    total = min(trials, space.size())
    with _Progress(total, options.progress) as progress:
        result = run_search(val_sim, space, objectives, trials, options.sampler or tune.sampler,
                            seed, tune.penalty, options.storage, options.study,
                            callbacks=[progress], fingerprint=fp)
    if result.best is None:
        raise MuxError("no feasible configuration was found; widen pool_size or raise --trials")

    def evaluate(config: Config) -> dict:
        val_score = score_to_dict(val_sim.score(config))
        test_score = None
        if test_sim is not None:
            test_score = score_to_dict(test_sim.score(config))
        return _entry(config, val_score, test_score)

    best = evaluate(result.best.config)
    pareto = [evaluate(r.config) for r in result.pareto]
    if test_sim is not None and not best["in_val_interval"]:
        note(f"the winner's test accuracy {best['test_accuracy']:.4f} is outside its validation "
             f"interval {best['val_accuracy']:.4f} ± "
             f"{2 * math.sqrt(best['val_se'] ** 2 + best['val_se_items'] ** 2):.4f} (2 SE)")

    # accuracy vs cost of every feasible trial, and its 2-D front (for the picture)
    # in grid order when there is one (workers walk it in their own orders)
    feasible = sorted((r for r in result.trials if r.feasible and r.config.pool),
                      key=lambda r: r.tie_rank)
    points = [{"accuracy": r.score.get("accuracy", 0.0), "cost": r.score.get("cost", 0.0),
               "tokens": r.score.get("tokens", 0.0),
               "samples": sum(b for _, b in r.config.pool)} for r in feasible[:5000]]
    axis = ("cost" if any(p["cost"] > 0 for p in points)
            else "tokens" if any(p["tokens"] > 0 for p in points) else "samples")

    def x_of(r: TrialRecord) -> float:
        return (sum(b for _, b in r.config.pool) if axis == "samples"
                else r.score.get(axis, 0.0))

    two_d = [TrialRecord(r.number, r.config, (r.score.get("accuracy", 0.0), x_of(r)), r.score,
                         rank=r.rank) for r in feasible]
    front2 = [evaluate(r.config) for r in pareto_front(two_d, ["maximize", "minimize"])][:60]

    singles = {}
    for m in space.candidates + references:
        if m not in val_sim.k_stored or (test_sim is not None and m not in test_sim.k_stored):
            continue
        singles[m] = evaluate(Config(((m, 1),), "slm_mux"))
    cand_singles = {m: e for m, e in singles.items() if m in space.candidates}
    best_single = max(cand_singles, key=lambda m: (cand_singles[m]["val_accuracy"], m))

    curves = {}
    if options.curves:
        for m, b in result.best.config.pool:
            top = space.budgets[m][1]
            points_m = []
            for budget in range(1, top + 1):
                pool = tuple((x, budget if x == m else y) for x, y in result.best.config.pool)
                cfg = Config(pool, result.best.config.rule)
                entry = {"budget": budget, "val_accuracy": val_sim.score(cfg, False).accuracy}
                if test_sim is not None:
                    entry["test_accuracy"] = test_sim.score(cfg, False).accuracy
                entry["alone_val_accuracy"] = val_sim.score(Config(((m, budget),)), False).accuracy
                points_m.append(entry)
            curves[m] = points_m

    # the other scaling dimension: the best pool of each size (per rule), on validation and test
    by_size: dict[tuple[str, int], TrialRecord] = {}
    for r in feasible:
        key = (r.config.rule, len(r.config.pool))
        mine = (r.score.get("accuracy", 0.0), -r.tie_rank)
        if key not in by_size or mine > (by_size[key].score["accuracy"], -by_size[key].tie_rank):
            by_size[key] = r
    pool_sizes = []
    for (rule, size), r in sorted(by_size.items()):
        entry = {"rule": rule, "size": size, "pool": r.config.as_dict(),
                 "val_accuracy": r.score.get("accuracy", 0.0), "test_accuracy": None}
        if test_sim is not None:
            entry["test_accuracy"] = test_sim.score(r.config, False).accuracy
        pool_sizes.append(entry)

    return {
        "tune": tune.name, "mux": tune.mux.name, "objectives": objectives,
        "directions": [OBJECTIVES[o] for o in objectives],
        "sampler": result.sampler, "space_size": result.space_size,
        "trials": len(result.trials), "simulations": simulations, "seed": seed,
        "study": options.study, "penalty": tune.penalty,
        "dataset": {"name": val.dataset, "items": val_sim.n_items,
                    "sha256": votes_hash(val, space.candidates)},
        "test": ({"name": test.dataset, "items": test_sim.n_items,
                  "sha256": votes_hash(test, space.candidates)} if test is not None else None),
        "accuracies": accuracies,
        "best": best, "pareto": pareto, "front_accuracy_cost": front2,
        "baselines": {"best_single": {"model": best_single, **cand_singles[best_single]},
                      "singles": singles,
                      "references": {m: singles[m] for m in references if m in singles}},
        "curves": curves, "pool_sizes": pool_sizes, "points": points, "warnings": warnings,
    }


def render_text(result: dict, out=None) -> None:
    """The human-readable summary of a tuning result."""
    out = out or sys.stdout
    def pct(x):
        return "-" if x is None else f"{100 * x:.2f}%"

    def se(x):
        return "" if x is None else f" ± {100 * x:.2f}"

    def pool(e):
        return ", ".join(f"{m} * {b}" for m, b in e["pool"].items())

    b = result["best"]
    ds = result["dataset"]
    print(f"tune {result['tune']} (mux {result['mux']}): {result['trials']} trials, "
          f"sampler {result['sampler']}, space {result['space_size']} configurations, "
          f"{result['simulations']} simulations per configuration", file=out)
    print(f"validation: {ds['name']} ({ds['items']} items)"
          + (f"; test: {result['test']['name']} ({result['test']['items']} items)"
             if result["test"] else ""), file=out)
    print(f"objectives: {', '.join(result['objectives'])}", file=out)
    print("", file=out)
    print(f"best: {b['rule']} [{pool(b)}]", file=out)
    print(f"  validation accuracy {pct(b['val_accuracy'])}{se(b['val_se'])} (simulations)"
          f"{se(b['val_se_items'])} (items)", file=out)
    if b["test_accuracy"] is not None:
        print(f"  test accuracy       {pct(b['test_accuracy'])}{se(b['test_se'])} (simulations)"
              f"{se(b['test_se_items'])} (items)", file=out)
    print(f"  cost {b['cost']:.3g} USD/item, {b['tokens']:.0f} tokens/item, "
          f"union {pct(b['union'])}, contradiction {pct(b['contradiction'])}", file=out)
    bs = result["baselines"]["best_single"]
    print(f"best single model: {bs['model']}: validation {pct(bs['val_accuracy'])}, "
          f"test {pct(bs['test_accuracy'])}", file=out)
    for name, ref in result["baselines"]["references"].items():
        print(f"reference {name}: validation {pct(ref['val_accuracy'])}, "
              f"test {pct(ref['test_accuracy'])}", file=out)
    if len(result["pareto"]) > 1:
        print("", file=out)
        print("Pareto set (validation → test):", file=out)
        for e in result["pareto"]:
            print(f"  {pct(e['val_accuracy']):>8} → {pct(e['test_accuracy']):>8}  "
                  f"cost {e['cost']:.3g}  {e['rule']} [{pool(e)}]", file=out)
