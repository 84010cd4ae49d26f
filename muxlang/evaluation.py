"""Offline evaluation of a mux and the paper's baselines on stored samples (no model calls).

Definitions (``/work/shared/docs/slm-mux.md``; "right" = equivalence key equal to the gold key):

- per-model accuracy: over the items where the model has stored samples, the mean share of its
  samples that are right, i.e. the exact expected accuracy of one sample (no resampling needed);
- ``single_best``: the pool model with the best validation accuracy, one sample;
- ``single_best_sc``: that model alone, majority over its k drawn samples (stdlib ``single``);
- ``agent_forest``: majority over all drawn samples of all pool models (stdlib ``majority``);
- ``slm_mux``: the paper's rule over the pool (stdlib ``slm_mux``); the spec's own rule is
  reported as ``mux`` (the same number when the spec says ``rule = slm_mux``);
- ``union`` (oracle): some pool model is right, a model being right when its most frequent drawn
  answer is gold (ties between answers: the one sampled first, as the selection rules break them);
- ``oracle_any_sample``: some drawn sample of some pool model is right;
- ``contradiction``: some pool model is consistently wrong (all its k drawn samples give the same
  readable wrong answer) while another pool model is right.

A *trial* draws, for every pool model and item, k distinct samples out of the stored ones (k = the
model's count in the pool). With more samples stored than drawn, trials are seeded resamplings and
figures are mean ± standard error over trials; every baseline of a trial sees the same draws.
``item_se`` is the standard error over items (std over items of the per-item share right, / sqrt
N): the uncertainty from the size of the dataset, which resampling does not reduce. Items whose
gold answer cannot be read are left out (and the report says how many). Without resampling (exactly
the drawn samples stored), the one trial takes them in sample-index order, so ``eval`` answers
each record as ``run`` did; ``records`` lists, per scored item, what the mux answered in the first
trial (equivalence key, gold, correct, chosen member, confidence).

The trials run on the optimizer's vectorised simulator (``muxlang.simulator``), so
``eval`` and ``tune`` give the same numbers for the same pool, seed and trials; a plain per-item
loop through the stdlib rules (``simulate_trial``) is used when the simulator cannot express the
case (a custom rule, or a model with different numbers of stored samples across items). Both
read each trial's draws from the simulator (``TrialDraws``), so they score the same samples.

Cascades and muxes with muxes in their pool are simulated per item as a tree through
``muxlang.semantics`` (the one meaning ``run`` uses too: a nested mux is one member whose answer
carries its own confidence, a cascade stops at the first step whose confidence reaches its
threshold); its accuracy, per-question spend (only the steps it reached) and the share
of items answered at each step are reported as ``mux``, while the flat baselines run over every
model the tree uses (each with the largest count it is drawn with).

Validation accuracies (tie-breaks, and which model is "Single-Best"): measured in the store on the
dataset named by ``validation`` (the command's ``--validation`` or the mux's ``validation``), else
typed in the spec (``accuracy``), else none (pool order); the report says which, per model.

Cost (per model ``cost_per_sample`` and ``cost_source``, per method ``cost_per_question``): the
mean cost a gateway reported for the model's stored samples when it reported any, else the spec's
prices times the mean stored tokens (``StoredVotes.cost_per_sample``, the one rule); None when
neither is known.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from muxlang import ir, semantics
from muxlang.errors import MuxError
from muxlang.stdlib.selection import top_answer
from muxlang.votes import GATEWAY, StoredVotes

if TYPE_CHECKING:
    from muxlang.simulator import Simulator

BASELINES = ("single_best", "single_best_sc", "agent_forest", "slm_mux", "union",
             "oracle_any_sample")
# resampling trials when more samples are stored than drawn: as many as tune simulates
DEFAULT_RESAMPLING_TRIALS = ir.default(ir.Tune, "simulations")


@dataclass
class Member:
    """A pool member as the simulator sees it: a model (name) drawn k times."""

    name: str
    k: int
    accuracy: Optional[float]


def model_accuracy(votes: Sequence[Sequence[Optional[str]]], gold: Sequence[Optional[str]]
                   ) -> tuple[Optional[float], int]:
    """Expected one-sample accuracy over the items that have samples and a readable gold answer;
    (accuracy, those items). Items whose gold cannot be read are left out here exactly as the
    baselines leave them out, so a model's accuracy and Single-Best on that model agree."""
    total, count = 0.0, 0
    for keys, g in zip(votes, gold):
        if not keys or g is None:
            continue
        count += 1
        total += sum(1 for key in keys if key == g) / len(keys)
    return (total / count if count else None), count


@dataclass(frozen=True)
class TrialDraws:
    """Which stored samples each trial draws, for every figure: read from the simulator's trial
    orders (``Simulator.draws``, their one home), by the vectorised engine and the per-item one
    alike. So both engines see the same samples in the same order, and a mux decided item by
    item (an adaptive policy, a cascade) draws prefixes of exactly the order its full-budget
    figure and the baselines use: ``adaptive = exact`` then answers as ``off`` record by record,
    as it promises. A model with exactly the drawn samples stored on every item keeps their
    stored order (as ``run`` drew them); Single-Best draws its one sample at random when more
    are stored."""

    pool: Simulator  # over the pool's models
    single: Simulator  # the one Single-Best's sample comes from (``pool`` when it can)

    @staticmethod
    def of(members: Sequence[Member], votes: StoredVotes, trials: int, seed: int,
           best: int) -> "TrialDraws":
        from muxlang.simulator import Simulator

        accuracies = {m.name: m.accuracy for m in members}
        sim = Simulator(votes, simulations=trials, seed=seed, accuracies=accuracies,
                        models=[m.name for m in members],
                        shuffle=[m.name for m in members if _resampled(votes, m.name, m.k)])
        one = members[best].name
        single = sim
        if _resampled(votes, one, 1) and one not in sim.shuffled:
            single = Simulator(votes, simulations=trials, seed=seed, accuracies=accuracies,
                               models=[one], shuffle=True)
        return TrialDraws(sim, single)

    def picks(self, model: str, k: int, trial: int, row: int, stored: int,
              single: bool = False) -> list[int]:
        """The first ``k`` positions of the trial's order of the ``stored`` samples of scored
        item ``row``. The simulator orders as many slots as the model's fullest item holds; an
        item with fewer (a store with uneven counts, scored here only) skips the slots it does
        not have, which leaves its own samples in a uniformly random order."""
        order = (self.single if single else self.pool).draws(model)[trial, row]
        if stored < order.size:
            order = order[order < stored]
        return order[:k].tolist()


NAMES = (*BASELINES, "mux", "contradiction", "no_answer")


@dataclass(frozen=True)
class RecordOutcome:
    """What the mux answered on one scored item in the first trial (``EvalReport.records``)."""

    id: str
    answer: Optional[str]  # equivalence key
    gold: Optional[str]
    correct: bool
    model: Optional[str]  # the chosen pool member (a nested mux by its name)
    confidence: float

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "answer": self.answer, "gold": self.gold, "correct": self.correct,
                "model": self.model, "confidence": self.confidence}


def simulate_trial(members: Sequence[Member], votes: StoredVotes, runnable: ir.Runnable,
                   accuracies: dict[str, Optional[float]], draws: TrialDraws, trial: int,
                   best: int, scored: Sequence[int],
                   decided: Optional[dict[int, Any]] = None) -> dict[str, Any]:
    """One trial, item by item: the runnable through ``muxlang.semantics`` (the "mux" figure,
    with the samples each item used, the cascade step and the per-record outcome) and the flat
    baselines through the stdlib rules: per figure, a bool per scored item. The samples are
    the trial's draws (``TrialDraws``), those the vectorised engine scores. ``decided``: the
    outcomes of earlier trials by row, reused when no pool model is resampled (then every
    trial draws the same pool; only Single-Best's one sample may differ), which spares a
    delta(p) mux its Monte Carlo estimate per trial."""
    from muxlang.stdlib.selection import majority, single, slm_mux

    member_accs = [m.accuracy for m in members]
    one = members[best].name
    out: dict[str, Any] = {name: np.zeros(len(scored), dtype=bool) for name in NAMES}
    out["used"], out["step"], out["records"] = [], np.zeros(len(scored), dtype=np.int16), []
    for row, i in enumerate(scored):
        g = votes.gold[i]
        pool = []
        for m in members:
            stored = votes.votes[m.name][i]
            pool.append([stored[j] for j in draws.picks(m.name, m.k, trial, row, len(stored))])
        outcome = decided.get(row) if decided is not None else None
        if outcome is None:
            outcome = semantics.decide(runnable, {m.name: pool[p] for p, m in
                                                  enumerate(members)}, accuracies)
            if decided is not None:
                decided[row] = outcome
        decision = outcome.decision
        answer = outcome.answer
        out["used"].append(outcome.used)
        out["step"][row] = outcome.step
        out["records"].append(RecordOutcome(
            votes.items[i], answer, g, answer == g, decision.member if decision else None,
            decision.confidence if decision else 0.0))
        out["mux"][row] = answer == g
        out["no_answer"][row] = answer is None
        out["slm_mux"][row] = slm_mux(pool, member_accs).answer == g
        out["agent_forest"][row] = majority(pool, member_accs).answer == g
        out["single_best_sc"][row] = single(pool, member_accs).answer == g
        stored = votes.votes[one][i]
        drawn = [stored[j] for j in draws.picks(one, 1, trial, row, len(stored), single=True)]
        out["single_best"][row] = bool(drawn) and drawn[0] == g
        right = [top_answer(keys)[0] == g for keys in pool]
        wrong = [bool(keys) and keys[0] is not None and keys[0] != g
                 and all(key == keys[0] for key in keys) for keys in pool]
        out["union"][row] = any(right)
        out["oracle_any_sample"][row] = any(g in keys for keys in pool)
        out["contradiction"][row] = any(right) and any(wrong)
    return out


def simulate_plain(members: Sequence[Member], votes: StoredVotes, runnable: ir.Runnable,
                   accuracies: dict[str, Optional[float]], trials: int, seed: int, best: int,
                   scored: Sequence[int]) -> dict[str, Any]:
    """(trials, scored items) bool per figure, from ``simulate_trial``; ``records`` from the
    first trial."""
    draws = TrialDraws.of(members, votes, trials, seed, best)
    assert list(scored) == draws.pool.item_index  # a row of the draws is a scored item
    decided: Optional[dict[int, Any]] = None if draws.pool.shuffled else {}
    runs = [simulate_trial(members, votes, runnable, accuracies, draws, t, best, scored, decided)
            for t in range(trials)]
    out: dict[str, Any] = {name: np.stack([r[name] for r in runs]) for name in NAMES}
    out["used"] = [r["used"] for r in runs]
    out["step"] = np.stack([r["step"] for r in runs])
    out["records"] = runs[0]["records"]
    return out


def _resampled(votes: StoredVotes, name: str, k: int) -> bool:
    """Whether drawing k of the model's stored samples is a resampling (more are stored)."""
    return any(len(keys) > k for keys in votes.votes[name])


def simulate_fast(members: Sequence[Member], votes: StoredVotes, rule_name: str, trials: int,
                  seed: int, best: int) -> dict[str, Any]:
    """The same figures on the vectorised simulator, on the same draws (``TrialDraws``)."""
    from muxlang.simulator import UNREADABLE, Config

    draws = TrialDraws.of(members, votes, trials, seed, best)
    sim, single_sim, one = draws.pool, draws.single, members[best].name
    pool = tuple((m.name, m.k) for m in members)
    out: dict[str, Any] = {
        "slm_mux": sim.correct(Config(pool, "slm_mux")),
        "agent_forest": sim.correct(Config(pool, "majority")),
        "single_best_sc": sim.correct(Config(pool, "single")),
        "single_best": single_sim.correct(Config(((one, 1),), "single")),
    }
    out["mux"] = out[{"slm_mux": "slm_mux", "majority": "agent_forest",
                      "single": "single_best_sc"}[rule_name]]
    answer, member, confidence = sim.outcomes(Config(pool, rule_name))
    out["no_answer"] = answer == UNREADABLE
    out["records"] = [
        RecordOutcome(votes.items[i], sim.key_of(row, int(answer[0, row])), votes.gold[i],
                      bool(out["mux"][0, row]),
                      members[int(member[0, row])].name if member[0, row] >= 0 else None,
                      float(confidence[0, row]))
        for row, i in enumerate(sim.item_index)]
    gold = sim.gold[None, :]
    any_right = any_wrong = any_sample = None
    for m in members:
        top, count = sim.top(m.name, m.k)
        right = top == gold
        wrong = (count == m.k) & (top >= 0) & (top != gold)
        sample = (sim.drawn(m.name, m.k) == gold[..., None]).any(axis=-1)
        any_right = right if any_right is None else any_right | right
        any_wrong = wrong if any_wrong is None else any_wrong | wrong
        any_sample = sample if any_sample is None else any_sample | sample
    out["union"] = any_right
    out["contradiction"] = any_right & any_wrong
    out["oracle_any_sample"] = any_sample
    return out


def _mean_se(values: Sequence[float]) -> tuple[float, float]:
    mean = float(np.mean(values))
    se = float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0
    return mean, se


def _item_se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n else 0.0


def flat_members(runnable: ir.Runnable) -> list[ir.PoolMember]:
    """Every model reachable from a mux or cascade (nested muxes and cascade steps flattened),
    once each, in first-use order, with the largest sample count it is drawn with."""
    found: dict[str, ir.PoolMember] = {}
    for _, member in ir.model_members(runnable):
        seen = found.get(member.name)
        if seen is None:
            found[member.name] = ir.PoolMember(member.member, member.samples, member.pos)
        elif seen.member is not member.member:
            raise MuxError(f"two different models are named {member.name}")
        else:
            seen.samples = max(seen.samples, member.samples)
    return list(found.values())


def is_structured(runnable: ir.Runnable) -> bool:
    """A cascade, or a mux with a mux in its pool: simulated by running the tree per item."""
    return isinstance(runnable, ir.Cascade) or any(not m.is_model for m in runnable.pool)


def validation_accuracies(store: Any, spec: ir.Spec | None, mux: ir.Mux, models: Sequence[ir.Model],
                          validation: str | None) -> tuple[dict[str, Optional[float]],
                                                            dict[str, str], str]:
    """Per model (accuracy, source), and a one-line summary of the sources."""
    from muxlang.store.votes import load_votes

    accuracies: dict[str, Optional[float]] = {}
    sources: dict[str, str] = {}
    name = validation or mux.validation
    measured: dict[str, Optional[float]] = {}
    if mux.tie_break == "order":
        for model in models:
            accuracies[model.name], sources[model.name] = None, "pool order (tie_break = order)"
        return accuracies, sources, "pool order (tie_break = order)"
    if name:
        info = store.get_dataset(name)
        if info is None and validation is None:  # the spec named it, not the command line
            from muxlang.errors import MuxError, did_you_mean

            names = [d.name for d in store.list_datasets()]
            hint = did_you_mean(name, names)
            raise MuxError(f"mux '{mux.name}' (line {mux.pos.line}) takes its tie-break "
                           f"accuracies from validation = \"{name}\", which is not in store "
                           f"{store.display_url} (to measure them on other data, give a validation "
                           f"dataset: validation= in Python, --validation on the command line)"
                           + (f"; {hint}" if hint else ""))
        if info is None:
            store.require_dataset(name)  # raises with the stored names
        val = load_votes(store, spec, mux, info, models=models)
        for model in models:
            measured[model.name], _ = model_accuracy(val.votes[model.name], val.gold)
    for model in models:
        if measured.get(model.name) is not None:
            accuracies[model.name] = measured[model.name]
            sources[model.name] = f"store: dataset {name}"
        elif model.accuracy is not None:
            accuracies[model.name] = model.accuracy
            sources[model.name] = "spec (typed accuracy)"
        else:
            accuracies[model.name] = None
            sources[model.name] = "none (pool order)"
    distinct = sorted(set(sources.values()))
    summary = distinct[0] if len(distinct) == 1 else "mixed: " + ", ".join(distinct)
    return accuracies, sources, summary


@dataclass
class _Loaded:
    """A runnable's stored votes on one dataset, and what evaluating it needs to know."""

    info: Any  # the dataset (DatasetInfo)
    runnable: ir.Runnable
    root: ir.Mux  # the mux itself, or a cascade's first step
    pool: list[ir.PoolMember]  # every model the runnable uses, flattened
    others: list[ir.Model]  # the spec's other models, for per-model figures
    votes: StoredVotes
    structured: bool  # a cascade or nested muxes: the "mux" figure runs the tree

    @property
    def per_item(self) -> bool:
        """The "mux" figure needs the per-item engine (muxlang.semantics, item by item)."""
        return self.structured or self.adaptive
    scored: list[int]  # items with a readable gold answer
    adaptive: bool = False  # some mux samples adaptively: the "mux" figure runs the policy

    @property
    def pool_models(self) -> list[ir.Model]:
        return [member.member for member in self.pool]


def _load(store: Any, spec: ir.Spec | None, runnable: ir.Runnable, dataset: Any,
          extra_models: Sequence[ir.Model] | None, limit: int | None = None) -> _Loaded:
    from muxlang.store.votes import load_votes

    info = store.require_dataset(dataset)
    root = runnable.steps[0] if isinstance(runnable, ir.Cascade) else runnable
    task = runnable.task
    for step in (runnable.steps if isinstance(runnable, ir.Cascade) else []):
        if step.task is not task and step.task.name != task.name:
            raise MuxError(f"cascade {runnable.name}: its steps use different tasks "
                           f"({task.name}, {step.task.name}); eval reads one task's answers")
    pool = flat_members(runnable)
    names = {p.name for p in pool}
    others = [m for m in (extra_models if extra_models is not None else
                          (spec.models.values() if spec else [])) if m.name not in names]
    items = store.items(info)[:limit] if limit is not None else None  # the first `limit` items
    votes = load_votes(store, spec, root, info, models=[*(p.member for p in pool), *others],
                       task=task, items=items)
    if not votes.items:
        raise MuxError(f"dataset {info.name} has no items")
    scored = [i for i, g in enumerate(votes.gold) if g is not None]
    loaded = _Loaded(info, runnable, root, pool, others, votes,
                     is_structured(runnable) or len(pool) != len(root.pool), scored,
                     any(m.adaptive != "off" for m in
                         (runnable.steps if isinstance(runnable, ir.Cascade) else [runnable])))
    _require_samples(loaded)
    if not scored:
        raise MuxError(f"dataset {info.name}: no item has a readable gold answer")
    return loaded


def _require_samples(loaded: _Loaded) -> None:
    """Every pool model needs as many stored samples as the mux draws, on every item."""
    votes, n_items, name = loaded.votes, len(loaded.votes.items), loaded.info.name
    for member in loaded.pool:
        stored = votes.votes[member.name]
        short = [(votes.items[i], len(keys)) for i, keys in enumerate(stored)
                 if len(keys) < member.samples]
        if not short:
            continue
        have = sum(1 for keys in stored if keys)
        example = ", ".join(f"{item!r} has {n}" for item, n in short[:3])
        raise MuxError(
            f"model {member.name} ({member.member.id!r}): the mux draws {member.samples} "
            f"sample(s) per item but {len(short)} of {n_items} items of dataset {name} "
            f"have fewer stored ({example}); {have} items have any. Collect them with "
            f"`muxlang collect SPEC --dataset FILE --samples {member.samples}`"
            + (" (a replay backend replays the store: check the model id)"
               if member.member.backend.kind == "replay" and have == 0 else ""))


def _model_figures(loaded: _Loaded, notes: list[str]) -> tuple[dict[str, float],
                                                                 dict[str, dict[str, Any]]]:
    """Per model with samples (pool and others), on the scored items like the baselines:
    accuracy and the per-model report entry."""
    votes, n_items, name = loaded.votes, len(loaded.votes.items), loaded.info.name
    per_model: dict[str, float] = {}
    report: dict[str, dict[str, Any]] = {}
    pool_models = loaded.pool_models
    for model in [*pool_models, *loaded.others]:
        stored = votes.votes[model.name]
        covered = sum(1 for keys in stored if keys)
        if covered == 0:
            notes.append(f"model {model.name}: no stored samples on {name}; left out")
            continue
        acc, n_scored_model = model_accuracy(stored, votes.gold)
        if acc is None:
            notes.append(f"model {model.name}: samples only on items without a readable gold "
                         "answer; left out")
            continue
        per_model[model.name] = acc
        counts = [len(keys) for keys in stored if keys]
        unreadable = sum(1 for keys in stored for key in keys if key is None)
        report[model.name] = {
            "accuracy": acc, "item_se": _item_se(acc, n_scored_model), "items": n_scored_model,
            "samples_per_item": [min(counts), max(counts)],
            "unreadable": unreadable / sum(counts),
            "in_pool": model in pool_models,
            "tokens_in": votes.input_tokens.get(model.name),
            "tokens_out": votes.output_tokens.get(model.name),
            # no reported cost, and no tokens or no price: unknown, not $0
            "cost_per_sample": (votes.cost_per_sample(model.name)
                                if votes.cost_source(model.name) else None),
            "cost_source": votes.cost_source(model.name),  # "gateway" | "prices" | None
        }
        if covered < n_items:
            notes.append(f"model {model.name}: samples on {covered} of {n_items} items only")
    if any(entry["cost_source"] == GATEWAY for entry in report.values()):
        notes.append(f"cost per sample: {votes.cost_sources(report)}")
    return per_model, report


@dataclass
class _Accuracies:
    """Validation accuracies → tie-breaks and Single-Best."""

    by_model: dict[str, Optional[float]]
    sources: dict[str, str]
    summary: str
    dataset: Optional[str]
    members: list[Member]
    best: int  # position in members of Single-Best


def _accuracies(store: Any, spec: ir.Spec | None, loaded: _Loaded, validation: str | None,
                notes: list[str]) -> _Accuracies:
    by_model, sources, summary = validation_accuracies(store, spec, loaded.root,
                                                       loaded.pool_models, validation)
    val_name = validation or loaded.root.validation
    if val_name:
        val_info = store.get_dataset(val_name)
        if val_info is not None and val_info.content_hash == loaded.info.content_hash:
            notes.append(f"validation dataset {val_name} is the evaluation dataset: tie-breaks and "
                         "Single-Best are chosen on the test data (optimistic)")
    members = [Member(m.name, m.samples, by_model[m.name]) for m in loaded.pool]
    best = 0
    for p, member in enumerate(members):
        a, b = member.accuracy, members[best].accuracy
        if a is not None and (b is None or a > b):
            best = p
    return _Accuracies(by_model, sources, summary, val_name, members, best)


@dataclass
class _Simulated:
    figures: dict[str, Any]
    engine: str  # "vectorised" | "plain"
    trials: int
    resampled: bool


def _simulate(loaded: _Loaded, acc: _Accuracies, trials: int | None, seed: int,
              notes: list[str]) -> _Simulated:
    """Run the trials, on the vectorised simulator where it can express the case."""
    votes, members, best = loaded.votes, acc.members, acc.best
    # resampling matters when a model has more samples stored than drawn, Single-Best included
    # (it draws one sample of its model)
    resampled = any(len(keys) > (1 if p == best else member.k)
                    for p, member in enumerate(members) for keys in votes.votes[member.name])
    if trials is None:
        trials = DEFAULT_RESAMPLING_TRIALS if resampled else 1
    if trials < 1:
        raise MuxError(f"trials must be at least 1, got {trials}")
    if not resampled and trials > 1:
        notes.append(f"exactly the drawn samples are stored for every pool model: the {trials} "
                     "trials would be identical (standard error 0); one is run")
        trials = 1
    n_items = len(votes.items)
    if len(loaded.scored) < n_items:
        notes.append(f"{n_items - len(loaded.scored)} items have no readable gold answer: left out")
    ragged = any(len({len(votes.votes[m.name][i]) for i in loaded.scored}) > 1 for m in members)
    root = loaded.root
    rule_name = "" if loaded.per_item or root.rule.args else root.rule.name
    if not ragged and rule_name in ("slm_mux", "majority", "single"):
        try:
            figures = simulate_fast(members, votes, rule_name, trials, seed, best)
            return _Simulated(figures, "vectorised", trials, resampled)
        except ImportError:  # the plain engine scores the same draws, item by item
            pass
    figures = simulate_plain(members, votes, loaded.runnable, acc.by_model, trials, seed, best,
                             loaded.scored)
    return _Simulated(figures, "plain", trials, resampled)


def _figure(table: np.ndarray) -> dict[str, Any]:
    mean, se = _mean_se(table.mean(axis=1))
    n_scored = table.shape[1]
    per_item = table.mean(axis=0)
    item_se = float(np.std(per_item, ddof=1) / math.sqrt(n_scored)) if n_scored > 1 else 0.0
    return {"accuracy": mean, "se": se, "item_se": item_se}


def _spend(loaded: _Loaded, acc: _Accuracies, sim: _Simulated
           ) -> tuple[dict[str, tuple[Optional[float], Optional[float]]], list[float] | None]:
    """(tokens, USD) per question for each figure, and a cascade's share answered per step."""
    votes = loaded.votes

    def cost(pairs: Sequence[tuple[str, int]]) -> tuple[Optional[float], Optional[float]]:
        tokens = (None if any(name not in votes.output_tokens for name, _ in pairs) else
                  sum(k * votes.tokens_per_sample(name) for name, k in pairs))
        return tokens, votes.cost_of(pairs)  # None: unknown, not $0

    all_pairs = [(m.name, m.k) for m in acc.members]
    best = acc.members[acc.best]
    spend = {name: cost(all_pairs) for name in (*BASELINES, "mux")}
    spend["single_best"] = cost([(best.name, 1)])
    spend["single_best_sc"] = cost([(best.name, best.k)])
    steps: list[float] | None = None
    if loaded.per_item:
        # the tree's spend: the samples each item actually used (a cascade stops early)
        spent = [cost(list(used.items())) for trial in sim.figures["used"] for used in trial]
        spend["mux"] = tuple(  # tokens, USD; each unknown (None) when one item's is
            None if any(s[i] is None for s in spent) else float(np.mean([s[i] for s in spent]))
            for i in (0, 1))
        if isinstance(loaded.runnable, ir.Cascade):
            counts = np.bincount(sim.figures["step"].ravel(),
                                 minlength=len(loaded.runnable.steps))
            steps = (counts / counts.sum()).tolist()
    return spend, steps


def evaluate(store: Any, spec: ir.Spec, mux: ir.Runnable, dataset: Any, *,
             trials: int | None = None, seed: int = 0, validation: str | None = None,
             extra_models: Sequence[ir.Model] | None = None,
             limit: int | None = None) -> dict[str, Any]:
    """The full evaluation report (a JSON-ready dict); see the module docstring. ``limit``: only
    the dataset's first items.

    The steps: stored votes (``_load``) → per-model figures → validation accuracies →
    trials (``_simulate``) → the report."""
    started = time.perf_counter()
    notes: list[str] = []
    loaded = _load(store, spec, mux, dataset, extra_models, limit)
    per_model, models_report = _model_figures(loaded, notes)
    acc = _accuracies(store, spec, loaded, validation, notes)
    sim = _simulate(loaded, acc, trials, seed, notes)
    spend, steps = _spend(loaded, acc, sim)

    details: dict[str, dict[str, Any]] = {}
    for name in (*BASELINES, "mux"):
        details[name] = _figure(sim.figures[name])
        details[name]["tokens_per_question"], details[name]["cost_per_question"] = spend[name]
    members, best_member = acc.members, acc.members[acc.best]
    details["single_best"]["model"] = best_member.name
    details["single_best_sc"]["model"] = best_member.name
    details["single_best_sc"]["samples"] = best_member.k
    contradiction = _mean_se(sim.figures["contradiction"].mean(axis=1))

    if all(m.k == 1 for m in members):
        notes.append("the mux draws one sample per model: SLM-MUX's self-consistency is not "
                     "exercised (every confidence is 1, so the validation-accuracy tie-break "
                     "decides; Single-Best-SC equals Single-Best)")
    if acc.summary.startswith("none"):
        notes.append("no validation accuracies (none given, no mux validation, none typed): "
                     "ties go by pool order and Single-Best is the first pool model")

    runnable, root, votes, info = loaded.runnable, loaded.root, loaded.votes, loaded.info
    if "used" in sim.figures:  # the samples each item drew (a cascade or adaptive policy stops)
        mean_samples = float(np.mean([sum(used.values()) for trial in sim.figures["used"]
                                      for used in trial]))
    else:
        mean_samples = float(sum(m.k for m in members))
    return {
        "spec": spec.path if spec else None,
        "mux": {"name": runnable.name,
                "rule": (f"cascade [{', '.join(s.name for s in runnable.steps)}] threshold "
                         f"{runnable.threshold:g}" if isinstance(runnable, ir.Cascade)
                         else str(runnable.rule)),
                "tie_break": root.tie_break, "structured": loaded.structured,
                "adaptive": root.adaptive,
                "mean_samples": mean_samples,
                "answered_at_step": steps,
                "accuracy": details["mux"]["accuracy"], "se": details["mux"]["se"],
                "item_se": details["mux"]["item_se"],
                "no_answer": float(sim.figures["no_answer"].mean()),
                "tokens_per_question": details["mux"]["tokens_per_question"],
                "cost_per_question": details["mux"]["cost_per_question"]},
        "dataset": {"name": info.name, "content_hash": info.content_hash,
                    "items": len(votes.items), "scored_items": len(loaded.scored)},
        "engine": sim.engine,
        "store": store.display_url,
        "trials": sim.trials, "seed": seed, "resampled": sim.resampled,
        "pool": [{"model": m.name, "samples": m.k,
                  "stored_per_item": [min(map(len, votes.votes[m.name])),
                                      max(map(len, votes.votes[m.name]))]} for m in members],
        "validation": {"source": acc.summary, "dataset": acc.dataset,
                       "accuracies": acc.by_model, "sources": acc.sources},
        "per_model": per_model,
        "models": models_report,
        "baselines": {name: details[name]["accuracy"] for name in BASELINES},
        "contradiction": contradiction[0],
        "contradiction_se": contradiction[1],
        "details": details,
        "records": [r.as_dict() for r in sim.figures["records"]],
        "notes": notes,
        "seconds": time.perf_counter() - started,
    }
