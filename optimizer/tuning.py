"""One tuning run, independent of where the votes come from: search on validation votes, score the
winner, the Pareto set and the baselines on test votes with the same simulator, and return a
``muxlang.results.TuneResult`` (``to_dict()``: what ``muxlang tune --json`` prints and ``muxlang
report`` plots).

``tune_votes`` runs in steps: ``search`` (the Optuna study), ``score_entries`` (winner, Pareto
set, accuracy–cost front on validation and test), ``single_baselines``, ``budget_curves`` and
``best_by_pool_size``; ``render_text`` prints a result from its typed fields."""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Callable

import optuna

from muxlang import ir
from muxlang.errors import MuxError
from muxlang.results import (BestSingle, CurvePoint, PolicyEntry, PoolSizeEntry, TuneBaselines,
                             TuneDataset, TuneEntry, TunePoint, TuneResult)
from muxlang.optimizer.policies import POLICY_TRIALS, PolicyFigures, choose, measure, mux_with
from muxlang.optimizer.search import (OBJECTIVES, Space, TrialRecord, pareto_front, run_search,
                                      score_to_dict)
from muxlang.simulator import Config, Simulator, votes_hash
from muxlang.votes import GATEWAY, StoredVotes


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
    searched = [p for p in tune.adaptive if p in ("off", "exact")] or ["off"]
    return Space(names, budgets, tune.pool_size, list(tune.rules), tune.max_samples, searched)


def _half_interval(entry: TuneEntry) -> float:
    """Half the validation interval: 2 combined standard errors (simulations and items)."""
    return 2 * math.sqrt(entry.val_se ** 2 + entry.val_se_items ** 2)


def _entry(config: Config, val: dict, test: dict | None) -> TuneEntry:
    entry = TuneEntry(
        pool=config.as_dict(), rule=config.rule, adaptive=config.adaptive,
        val_accuracy=val["accuracy"],
        val_se=val["se"], val_se_items=val["se_items"], union=val["union"],
        contradiction=val["contradiction"], cost=val["cost"], tokens=val["tokens"],
        samples=val["samples"])
    if test is not None:
        entry.test_accuracy, entry.test_se = test["accuracy"], test["se"]
        entry.test_se_items, entry.test_cost = test["se_items"], test["cost"]
        # is the test accuracy inside the validation interval?
        entry.in_val_interval = abs(test["accuracy"] - val["accuracy"]) <= _half_interval(entry)
    return entry


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


class _Scorer:
    """Scores configurations on validation (and test) votes with the same simulators."""

    def __init__(self, val_sim: Simulator, test_sim: Simulator | None):
        self.val_sim, self.test_sim = val_sim, test_sim

    def __call__(self, config: Config) -> TuneEntry:
        val_score = score_to_dict(self.val_sim.score(config))
        test_score = None
        if self.test_sim is not None:
            test_score = score_to_dict(self.test_sim.score(config))
        return _entry(config, val_score, test_score)


def tune_votes(spec: ir.Spec, tune: ir.Tune, val: StoredVotes, test: StoredVotes | None,
               options: Options, warn: Callable[[str], None] | None = None,
               fingerprint: dict | None = None) -> TuneResult:
    """Search on ``val``; score on ``test``. Warnings go to ``warn`` as they come and into the
    result's ``warnings``."""
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
    if "cost" in objectives and val_sim.cost_unit != "usd":
        unpriced = [m for m in space.candidates if val.cost_per_sample(m) <= 0]
        note(f"cost objective: no reported cost, or no price or no stored token counts, for "
             f"{', '.join(unpriced)}; cost counts {val_sim.cost_unit} per item instead")
    elif "cost" in objectives and any(val.cost_source(m) == GATEWAY for m in space.candidates):
        note(f"cost objective: USD per item, {val.cost_sources(space.candidates)}")
    if not space.candidates:
        raise MuxError(f"tune {tune.name}: no candidate has stored samples in '{val.dataset}'")
    result = search(tune, val, val_sim, space, objectives, trials, simulations, seed, options,
                    fingerprint)
    score = _Scorer(val_sim, test_sim)
    best = score(result.best.config)
    policies: list[PolicyEntry] = []
    deltas = [p for p in tune.adaptive if p.startswith("delta")]
    if deltas:
        best, policies = _try_policies(spec, tune, best, result.best.config, deltas, val_sim,
                                       test_sim, note)
    untried = tune.mux.adaptive if tune.mux.adaptive not in tune.adaptive else None
    if untried is not None:
        note(f"mux {tune.mux.name} says adaptive = {untried}, which tune {tune.name}'s adaptive "
             f"list ({', '.join(tune.adaptive)}) leaves out, so it was never measured; the tuned "
             f"mux says adaptive = {best.adaptive} (list {untried} to compare it)")
    if test_sim is not None and not best.in_val_interval:
        note(f"the winner's test accuracy {best.test_accuracy:.4f} is outside its validation "
             f"interval {best.val_accuracy:.4f} ± {_half_interval(best):.4f} (2 SE)")
    # in grid order when there is one (workers walk it in their own orders)
    feasible = sorted((r for r in result.trials if r.feasible and r.config.pool),
                      key=lambda r: r.tie_rank)
    points, front2 = accuracy_cost(feasible, score)
    singles = single_baselines(space, references, val_sim, test_sim, score)
    cand_singles = {m: e for m, e in singles.items() if m in space.candidates}
    best_single = max(cand_singles, key=lambda m: (cand_singles[m].val_accuracy, m))
    return TuneResult(
        tune=tune.name, mux=tune.mux.name, objectives=objectives,
        directions=[OBJECTIVES[o] for o in objectives], sampler=result.sampler,
        space_size=result.space_size, trials=len(result.trials), simulations=simulations,
        seed=seed, study=options.study, penalty=tune.penalty,
        dataset=TuneDataset(name=val.dataset, items=val_sim.n_items,
                            sha256=votes_hash(val, space.candidates)),
        test=(TuneDataset(name=test.dataset, items=test_sim.n_items,
                          sha256=votes_hash(test, space.candidates))
              if test is not None and test_sim is not None else None),
        accuracies=accuracies, best=best, front=[score(r.config) for r in result.pareto],
        front_accuracy_cost=front2,
        baselines=TuneBaselines(
            best_single=BestSingle(model=best_single, **vars(cand_singles[best_single])),
            singles=singles,
            references={m: singles[m] for m in references if m in singles}),
        curves=(budget_curves(result.best.config, space, val_sim, test_sim)
                if options.curves else {}),
        pool_sizes=best_by_pool_size(feasible, test_sim), points=points, policies=policies,
        untried_adaptive=untried, cost_unit=val_sim.cost_unit, warnings=warnings)


def _try_policies(spec: ir.Spec, tune: ir.Tune, best: TuneEntry, config: Config,
                  deltas: list[str], val_sim: Simulator, test_sim: Simulator | None,
                  note: Callable[[str], None]) -> tuple[TuneEntry, list[PolicyEntry]]:
    """``optimizer.policies``: the winner's pool with each ``delta(p)`` against its own policy,
    record by record on the same trials; the winner's entry as chosen, and every figure. The
    chosen policy is always one the tune block lists: its own is the search's full budget when
    the list names no off or exact, a yardstick then, never the choice."""
    trials = min(POLICY_TRIALS, val_sim.simulations)

    def run(sim: Simulator, policy: str) -> PolicyFigures:
        return measure(sim, mux_with(tune.mux, spec.models, config, policy), config, trials)

    listed = config.adaptive in tune.adaptive
    own = run(val_sim, config.adaptive)
    tried = [run(val_sim, p) for p in deltas]
    chosen = choose(own, tried, own_listed=listed)
    entries = [PolicyEntry(adaptive=f.adaptive, val_accuracy=f.accuracy, val_se=f.se,
                           samples=f.samples, trials=f.trials, chosen=f is (chosen or own),
                           listed=f is not own or listed)
               for f in [own, *tried]]
    yardstick = "" if listed else ": the full budget the search scored pools at, not listed"
    note(f"adaptive {', '.join(deltas)}: measured record by record on the winner's pool over "
         f"{trials} trials against its own policy ({config.adaptive}{yardstick}): "
         + "; ".join(f"{e.adaptive} {100 * e.val_accuracy:.2f}% with {e.samples:.2f} samples"
                     for e in entries)
         + (f"; {chosen.adaptive} chosen" if chosen else f"; {config.adaptive} kept"))
    if chosen is None:
        return best, entries
    votes = val_sim.votes
    pool = [m for m, _ in config.pool]
    entry = TuneEntry(**{**vars(best), "adaptive": chosen.adaptive,
                         "val_accuracy": chosen.accuracy, "val_se": chosen.se,
                         "val_se_items": chosen.se_items, "samples": chosen.samples,
                         "tokens": sum(n * votes.tokens_per_sample(m)
                                       for m, n in zip(pool, chosen.drawn)),
                         "cost": sum(n * votes.cost_per_sample(m)
                                     for m, n in zip(pool, chosen.drawn))})
    if test_sim is not None:
        on_test = run(test_sim, chosen.adaptive)
        entry.test_accuracy, entry.test_se = on_test.accuracy, on_test.se
        entry.test_se_items = on_test.se_items
        entry.test_cost = sum(n * test_sim.votes.cost_per_sample(m)
                              for m, n in zip(pool, on_test.drawn))
        entry.in_val_interval = abs(entry.test_accuracy - entry.val_accuracy) <= \
            _half_interval(entry)
    return entry, entries


def search(tune: ir.Tune, val: StoredVotes, val_sim: Simulator, space: Space,
           objectives: list[str], trials: int, simulations: int, seed: int, options: Options,
           fingerprint: dict | None):
    """The Optuna search on validation votes (``optimizer.search.run_search``'s result)."""
    fp = dict(fingerprint or {})
    fp.update({"val": votes_hash(val, space.candidates), "candidates": space.candidates,
               "objectives": objectives, "simulations": simulations, "seed": seed,
               "rules": space.rules, "pool_size": list(space.pool_size),
               "budgets": {m: list(b) for m, b in space.budgets.items()}})
    if space.adaptive != ["off"]:  # (studies from before adaptive was searched still resume)
        fp["adaptive"] = space.adaptive
    total = min(trials, space.size())
    with _Progress(total, options.progress) as progress:
        result = run_search(val_sim, space, objectives, trials, options.sampler or tune.sampler,
                            seed, tune.penalty, options.storage, options.study,
                            callbacks=[progress], fingerprint=fp)
    if result.best is None:
        raise MuxError("no feasible configuration was found; widen pool_size or raise --trials")
    return result


def accuracy_cost(feasible: list[TrialRecord], score: Callable[[Config], TuneEntry]
                  ) -> tuple[list[TunePoint], list[TuneEntry]]:
    """Accuracy vs spend of every feasible trial (the first 5000), and its 2-D front: cost when
    any is priced, else tokens, else samples."""
    points = [TunePoint(accuracy=r.score.get("accuracy", 0.0), cost=r.score.get("cost", 0.0),
                        tokens=r.score.get("tokens", 0.0), samples=_samples(r))
              for r in feasible[:5000]]
    axis = ("cost" if any(p.cost > 0 for p in points)
            else "tokens" if any(p.tokens > 0 for p in points) else "samples")

    def x_of(r: TrialRecord) -> float:
        return _samples(r) if axis == "samples" else r.score.get(axis, 0.0)

    two_d = [TrialRecord(r.number, r.config, (r.score.get("accuracy", 0.0), x_of(r)), r.score,
                         rank=r.rank) for r in feasible]
    front = [score(r.config) for r in pareto_front(two_d, ["maximize", "minimize"])][:60]
    return points, front


def _samples(r: TrialRecord) -> float:
    """Samples a trial's configuration draws per item (the mean, under adaptive sampling)."""
    return r.score.get("samples", sum(b for _, b in r.config.pool))


def single_baselines(space: Space, references: list[str], val_sim: Simulator,
                     test_sim: Simulator | None, score: Callable[[Config], TuneEntry]
                     ) -> dict[str, TuneEntry]:
    """Every candidate and reference alone, one sample, where it has samples on both sets."""
    singles = {}
    for m in space.candidates + references:
        if m not in val_sim.k_stored or (test_sim is not None and m not in test_sim.k_stored):
            continue
        singles[m] = score(Config(((m, 1),), "slm_mux"))
    return singles


def budget_curves(config: Config, space: Space, val_sim: Simulator, test_sim: Simulator | None
                  ) -> dict[str, list[CurvePoint]]:
    """Per model of the best pool: accuracy as its budget varies, the others fixed (and the
    model alone with that budget)."""
    curves = {}
    for m, _ in config.pool:
        top = space.budgets[m][1]
        points_m = []
        for budget in range(1, top + 1):
            pool = tuple((x, budget if x == m else y) for x, y in config.pool)
            cfg = Config(pool, config.rule, config.adaptive)
            points_m.append(CurvePoint(
                budget=budget, val_accuracy=val_sim.score(cfg, False).accuracy,
                test_accuracy=(test_sim.score(cfg, False).accuracy if test_sim is not None
                               else None),
                alone_val_accuracy=val_sim.score(Config(((m, budget),)), False).accuracy))
        curves[m] = points_m
    return curves


def best_by_pool_size(feasible: list[TrialRecord], test_sim: Simulator | None
                      ) -> list[PoolSizeEntry]:
    """The other scaling dimension: the best pool of each size (per rule), on validation and
    test."""
    by_size: dict[tuple[str, int], TrialRecord] = {}
    for r in feasible:
        key = (r.config.rule, len(r.config.pool))
        mine = (r.score.get("accuracy", 0.0), -r.tie_rank)
        if key not in by_size or mine > (by_size[key].score["accuracy"], -by_size[key].tie_rank):
            by_size[key] = r
    return [PoolSizeEntry(rule=rule, size=size, pool=r.config.as_dict(),
                          val_accuracy=r.score.get("accuracy", 0.0),
                          test_accuracy=(test_sim.score(r.config, False).accuracy
                                         if test_sim is not None else None))
            for (rule, size), r in sorted(by_size.items())]


def render_text(result: TuneResult, out=None) -> None:
    """The human-readable summary of a tuning result."""
    out = out or sys.stdout

    def pct(x):
        return "-" if x is None else f"{100 * x:.2f}%"

    def se(x):
        return "" if x is None else f" ± {100 * x:.2f}"

    def pool(e: TuneEntry) -> str:
        return ", ".join(f"{m} * {b}" for m, b in e.pool.items())

    def cost(e: TuneEntry) -> str:
        """In the unit the cost objective counted: with no prices nor reported costs, USD
        would read 0 for every pool."""
        if result.cost_unit == "usd":
            return f"{e.cost:.3g} USD/item, {e.tokens:.0f} tokens/item"
        if result.cost_unit == "tokens":
            return f"{e.tokens:.0f} tokens/item (no prices)"
        n = round(e.samples, 2)
        return f"{n:g} sample{'' if n == 1 else 's'}/item (no prices, no token counts)"

    b = result.best
    ds = result.dataset
    print(f"tune {result.tune} (mux {result.mux}): {result.trials} trials, "
          f"sampler {result.sampler}, space {result.space_size} configurations, "
          f"{result.simulations} simulations per configuration", file=out)
    print(f"validation: {ds.name} ({ds.items} items)"
          + (f"; test: {result.test.name} ({result.test.items} items)"
             if result.test else ""), file=out)
    print(f"objectives: {', '.join(result.objectives)}", file=out)
    print("", file=out)
    policy = f", adaptive = {b.adaptive}" if b.adaptive != "off" else ""
    print(f"best: {b.rule} [{pool(b)}]{policy}; samples per item: {round(b.samples, 2):g}",
          file=out)
    print(f"  validation accuracy {pct(b.val_accuracy)}{se(b.val_se)} (simulations)"
          f"{se(b.val_se_items)} (items)", file=out)
    if b.test_accuracy is not None:
        print(f"  test accuracy       {pct(b.test_accuracy)}{se(b.test_se)} (simulations)"
              f"{se(b.test_se_items)} (items)", file=out)
    print(f"  cost {cost(b)}, union {pct(b.union)}, contradiction {pct(b.contradiction)}",
          file=out)
    for entry in result.policies:
        mark = ("  (chosen)" if entry.chosen else
                "  (the full budget, to compare: not in the tune block's list)"
                if not entry.listed else "")
        print(f"  adaptive = {entry.adaptive}: validation {pct(entry.val_accuracy)}"
              f"{se(entry.val_se)}, {entry.samples:.2f} samples per item "
              f"({entry.trials} trials, record by record){mark}", file=out)
    if result.untried_adaptive is not None:
        print(f"  the mux's own adaptive = {result.untried_adaptive} was not tried (the tune "
              f"block's adaptive list leaves it out): the tuned mux says adaptive = "
              f"{b.adaptive}", file=out)
    bs = result.baselines.best_single
    if bs is not None:
        print(f"best single model: {bs.model}: validation {pct(bs.val_accuracy)}, "
              f"test {pct(bs.test_accuracy)}", file=out)
    for name, ref in result.baselines.references.items():
        print(f"reference {name}: validation {pct(ref.val_accuracy)}, "
              f"test {pct(ref.test_accuracy)}", file=out)
    if len(result.front) > 1:
        print("", file=out)
        print("Pareto set (validation → test):", file=out)
        for e in result.front:
            print(f"  {pct(e.val_accuracy):>8} → {pct(e.test_accuracy):>8}  "
                  f"cost {cost(e)}  {e.rule} [{pool(e)}]", file=out)
