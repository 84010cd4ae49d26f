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
  answer is gold (ties between answers: the smallest key, as the selection rules break them);
- ``oracle_any_sample``: some drawn sample of some pool model is right;
- ``contradiction``: some pool model is consistently wrong (all its k drawn samples give the same
  readable wrong answer) while another pool model is right.

A *trial* draws, for every pool model and item, k distinct samples out of the stored ones (k = the
model's count in the pool). With more samples stored than drawn, trials are seeded resamplings and
figures are mean ± standard error over trials; every baseline of a trial sees the same draws.
``item_se`` is the standard error over items (std over items of the per-item share right, / sqrt
N): the uncertainty from the size of the dataset, which resampling does not reduce. Items whose
gold answer cannot be read are left out (and the report says how many).

The trials run on the optimizer's vectorised simulator (``muxlang.optimizer.simulator``), so
``eval`` and ``tune`` give the same numbers for the same pool, seed and trials; a plain per-item
loop through the stdlib rules (``simulate_trial``) is used when the simulator cannot express the
case (a custom rule, or a model with different numbers of stored samples across items).

Cascades and muxes with muxes in their pool are simulated per item as a tree (``make_runner``): a
nested mux is one vote in its parent's pool, a cascade stops at the first step whose confidence
reaches its threshold; its accuracy, per-question spend (only the steps it reached) and the share
of items answered at each step are reported as ``mux``, while the flat baselines run over every
model the tree uses (each with the largest count it is drawn with).

Validation accuracies (tie-breaks, and which model is "Single-Best"): measured in the store on the
dataset named by ``validation`` (the command's ``--validation`` or the mux's ``validation``), else
typed in the spec (``accuracy``), else none (pool order); the report says which, per model.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from muxlang import ir
from muxlang.errors import MuxError
from muxlang.votes import StoredVotes

BASELINES = ("single_best", "single_best_sc", "agent_forest", "slm_mux", "union",
             "oracle_any_sample")
DEFAULT_RESAMPLING_TRIALS = 100


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


def _top_answer(keys: Sequence[Optional[str]]) -> Optional[str]:
    """The most frequent readable key (ties: the smallest), as the selection rules read it."""
    counts: dict[str, int] = {}
    for key in keys:
        if key is not None:
            counts[key] = counts.get(key, 0) + 1
    if not counts:
        return None
    top = max(counts.values())
    return min(key for key, n in counts.items() if n == top)


def _draw_indices(stored: list[list[Optional[str]]], k: int, rng: np.random.Generator | None
                  ) -> list[list[int]]:
    """Per item, k distinct positions into the stored samples, in random order (the first is a
    uniformly drawn single sample); all of them, in index order, without an rng."""
    out: list[list[int]] = [[] for _ in stored]
    by_n: dict[int, list[int]] = {}
    for i, keys in enumerate(stored):
        by_n.setdefault(len(keys), []).append(i)
    for n, rows in sorted(by_n.items()):
        if rng is None or n == 0:
            for i in rows:
                out[i] = list(range(min(n, k)))
        else:
            picks = np.argsort(rng.random((len(rows), n)), axis=1)[:, :min(n, k)]
            for row, i in enumerate(rows):
                out[i] = picks[row].tolist()
    return out


NAMES = (*BASELINES, "mux", "contradiction", "no_answer")


def simulate_trial(members: Sequence[Member], votes: StoredVotes, rule: Any,
                   rng: np.random.Generator | None, best: int, scored: Sequence[int],
                   runner: Any = None) -> dict[str, np.ndarray]:
    """One trial, item by item through the stdlib rules: per figure, a bool per scored item.
    With a ``runner`` (see ``make_runner``) the "mux" figure is the runnable's tree; its
    per-item tokens/cost inputs ("used": samples per model) and cascade step are recorded."""
    from muxlang.stdlib.selection import majority, single, slm_mux

    accuracies = [m.accuracy for m in members]
    draws = [_draw_indices(votes.votes[m.name], m.k, rng) for m in members]
    out = {name: np.zeros(len(scored), dtype=bool) for name in NAMES}
    for row, i in enumerate(scored):
        g = votes.gold[i]
        pool = [[votes.votes[m.name][i][j] for j in draws[p][i]] for p, m in enumerate(members)]
        sel = slm_mux(pool, accuracies)
        out["slm_mux"][row] = sel.answer == g
        if runner is not None:
            answer, used, step = runner({m.name: pool[p] for p, m in enumerate(members)})
            out.setdefault("used", [None] * len(scored))[row] = used
            out.setdefault("step", np.zeros(len(scored), dtype=np.int16))[row] = step
        else:
            answer = (sel if rule is slm_mux else rule(pool, accuracies)).answer
        out["mux"][row] = answer == g
        out["no_answer"][row] = answer is None
        out["agent_forest"][row] = majority(pool, accuracies).answer == g
        out["single_best_sc"][row] = single(pool, accuracies).answer == g
        out["single_best"][row] = bool(pool[best]) and pool[best][0] == g
        right = [_top_answer(keys) == g for keys in pool]
        wrong = [bool(keys) and keys[0] is not None and keys[0] != g
                 and all(key == keys[0] for key in keys) for keys in pool]
        out["union"][row] = any(right)
        out["oracle_any_sample"][row] = any(g in keys for keys in pool)
        out["contradiction"][row] = any(right) and any(wrong)
    return out


def simulate_plain(members: Sequence[Member], votes: StoredVotes, rule: Any, trials: int,
                   seed: int, best: int, scored: Sequence[int], resampled: bool,
                   runner: Any = None) -> dict[str, Any]:
    """(trials, scored items) bool per figure, from ``simulate_trial``."""
    runs = [simulate_trial(members, votes, rule,
                           np.random.default_rng([seed, t]) if resampled else None, best, scored,
                           runner)
            for t in range(trials)]
    out: dict[str, Any] = {name: np.stack([r[name] for r in runs]) for name in NAMES}
    if runner is not None:
        out["used"] = [r["used"] for r in runs]
        out["step"] = np.stack([r["step"] for r in runs])
    return out


def simulate_fast(members: Sequence[Member], votes: StoredVotes, rule_name: str, trials: int,
                  seed: int, best: int) -> dict[str, np.ndarray]:
    """The same figures on the optimizer's vectorised simulator (same draws for every figure)."""
    from muxlang.optimizer.simulator import UNREADABLE, Config, Simulator

    sim = Simulator(votes, simulations=trials, seed=seed,
                    accuracies={m.name: m.accuracy for m in members},
                    models=[m.name for m in members])
    pool = tuple((m.name, m.k) for m in members)
    out: dict[str, np.ndarray] = {
        "slm_mux": sim.correct(Config(pool, "slm_mux")),
        "agent_forest": sim.correct(Config(pool, "majority")),
        "single_best_sc": sim.correct(Config(pool, "single")),
        "single_best": sim.correct(Config(((members[best].name, 1),), "single")),
    }
    out["mux"] = out[{"slm_mux": "slm_mux", "majority": "agent_forest",
                      "single": "single_best_sc"}[rule_name]]
    out["no_answer"] = sim.answers(Config(pool, rule_name)) == UNREADABLE
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

    def visit(mux: ir.Mux) -> None:
        for member in mux.pool:
            if member.is_model:
                seen = found.get(member.name)
                if seen is None:
                    found[member.name] = ir.PoolMember(member.member, member.samples, member.pos)
                elif seen.member is not member.member:
                    raise MuxError(f"two different models are named {member.name}")
                else:
                    seen.samples = max(seen.samples, member.samples)
            else:
                visit(member.member)

    for mux in (runnable.steps if isinstance(runnable, ir.Cascade) else [runnable]):
        visit(mux)
    return list(found.values())


def is_structured(runnable: ir.Runnable) -> bool:
    """A cascade, or a mux with a mux in its pool: simulated by running the tree per item."""
    return isinstance(runnable, ir.Cascade) or any(not m.is_model for m in runnable.pool)


def make_runner(runnable: ir.Runnable, accuracies: dict[str, Optional[float]]):
    """``run(drawn) -> (answer, samples used per model, step)`` for one item, where ``drawn``
    maps each model to its drawn keys (a member drawn k times uses the first k). A nested mux
    is one vote (its answer) in its parent's pool, with the nested mux's typed accuracy; a
    cascade stops at the first step whose confidence reaches its threshold."""
    from muxlang.stdlib.registry import get_rule

    rules: dict[str, Any] = {}

    def run_mux(mux: ir.Mux, drawn: dict[str, list], used: dict[str, int]):
        votes: list[list[Optional[str]]] = []
        accs: list[Optional[float]] = []
        by_order = mux.tie_break == "order"
        for member in mux.pool:
            if member.is_model:
                votes.append(drawn[member.name][:member.samples])
                used[member.name] = max(used.get(member.name, 0), member.samples)
                accs.append(None if by_order else accuracies.get(member.name))
            else:
                inner = run_mux(member.member, drawn, used)
                votes.append([inner.answer])
                accs.append(None if by_order else member.member.accuracy)
        if mux.name not in rules:
            rules[mux.name] = get_rule(mux.rule)
        return rules[mux.name](votes, accs)

    def run(drawn: dict[str, list]) -> tuple[Optional[str], dict[str, int], int]:
        used: dict[str, int] = {}
        if isinstance(runnable, ir.Cascade):
            step = 0
            for step, mux in enumerate(runnable.steps):
                selection = run_mux(mux, drawn, used)
                if selection.confidence >= runnable.threshold:
                    break
            return selection.answer, used, step
        return run_mux(runnable, drawn, used).answer, used, 0

    return run


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
                           f"{store.display_url} (--validation NAME_OR_FILE takes other data)"
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


def evaluate(store: Any, spec: ir.Spec, mux: ir.Mux, dataset: Any, *, trials: int | None = None,
             seed: int = 0, validation: str | None = None,
             extra_models: Sequence[ir.Model] | None = None) -> dict[str, Any]:
    """The full evaluation report (a JSON-ready dict); see the module docstring."""
    from muxlang.stdlib.registry import get_rule
    from muxlang.store.votes import load_votes

    started = time.perf_counter()
    info = store.require_dataset(dataset)
    runnable = mux
    root = runnable.steps[0] if isinstance(runnable, ir.Cascade) else runnable
    task = runnable.task
    for step in (runnable.steps if isinstance(runnable, ir.Cascade) else []):
        if step.task is not task and step.task.name != task.name:
            raise MuxError(f"cascade {runnable.name}: its steps use different tasks "
                           f"({task.name}, {step.task.name}); eval reads one task's answers")
    pool = flat_members(runnable)
    pool_models = [member.member for member in pool]
    structured = is_structured(runnable) or len(pool) != len(root.pool)
    others = [m for m in (extra_models if extra_models is not None else
                          (spec.models.values() if spec else []))
              if m.name not in {p.name for p in pool_models}]
    votes = load_votes(store, spec, root, info, models=[*pool_models, *others], task=task)
    n_items = len(votes.items)
    if n_items == 0:
        raise MuxError(f"dataset {info.name} has no items")
    notes: list[str] = []

    # every pool model needs k stored samples on every item
    for member in pool:
        stored = votes.votes[member.name]
        short = [(votes.items[i], len(keys)) for i, keys in enumerate(stored)
                 if len(keys) < member.samples]
        if short:
            have = sum(1 for keys in stored if keys)
            example = ", ".join(f"{item!r} has {n}" for item, n in short[:3])
            raise MuxError(
                f"model {member.name} ({member.member.id!r}): the mux draws {member.samples} "
                f"sample(s) per item but {len(short)} of {n_items} items of dataset {info.name} "
                f"have fewer stored ({example}); {have} items have any. Collect them with "
                f"`muxlang collect SPEC --dataset FILE --samples {member.samples}`"
                + (" (a replay backend replays the store: check the model id)"
                   if member.member.backend.kind == "replay" and have == 0 else ""))

    scored = [i for i, g in enumerate(votes.gold) if g is not None]
    if not scored:
        raise MuxError(f"dataset {info.name}: no item has a readable gold answer")

    # per-model figures (all spec models with samples), on the scored items like the baselines
    models_report: dict[str, dict[str, Any]] = {}
    per_model: dict[str, float] = {}
    for model in [*pool_models, *others]:
        stored = votes.votes[model.name]
        covered = sum(1 for keys in stored if keys)
        if covered == 0:
            notes.append(f"model {model.name}: no stored samples on {info.name}; left out")
            continue
        acc, n_scored_model = model_accuracy(stored, votes.gold)
        if acc is None:
            notes.append(f"model {model.name}: samples only on items without a readable gold "
                         "answer; left out")
            continue
        per_model[model.name] = acc
        counts = [len(keys) for keys in stored if keys]
        unreadable = sum(1 for keys in stored for key in keys if key is None)
        models_report[model.name] = {
            "accuracy": acc, "item_se": _item_se(acc, n_scored_model), "items": n_scored_model,
            "samples_per_item": [min(counts), max(counts)],
            "unreadable": unreadable / sum(counts),
            "in_pool": model in pool_models,
            "tokens_in": votes.input_tokens.get(model.name),
            "tokens_out": votes.output_tokens.get(model.name),
            "cost_per_sample": (votes.cost_per_sample(model.name)
                                if model.name in votes.output_tokens else None),
        }
        if covered < n_items:
            notes.append(f"model {model.name}: samples on {covered} of {n_items} items only")

    # validation accuracies → tie-breaks and Single-Best
    accuracies, sources, source_summary = validation_accuracies(
        store, spec, root, pool_models, validation)
    val_name = validation or root.validation
    if val_name:
        val_info = store.get_dataset(val_name)
        if val_info is not None and val_info.content_hash == info.content_hash:
            notes.append(f"validation dataset {val_name} is the evaluation dataset: tie-breaks and "
                         "Single-Best are chosen on the test data (optimistic)")
    members = [Member(m.name, m.samples, accuracies[m.name]) for m in pool]
    best = 0
    for p, member in enumerate(members):
        a, b = member.accuracy, members[best].accuracy
        if a is not None and (b is None or a > b):
            best = p

    # trials
    # resampling matters when a model has more samples stored than drawn, Single-Best included
    # (it draws one sample of its model)
    resampled = any(len(keys) > (1 if p == best else member.k)
                    for p, member in enumerate(members) for keys in votes.votes[member.name])
    if trials is None:
        trials = DEFAULT_RESAMPLING_TRIALS if resampled else 1
    if trials < 1:
        raise MuxError("--trials must be >= 1")
    if not resampled and trials > 1:
        notes.append(f"exactly the drawn samples are stored for every pool model: the {trials} "
                     "trials would be identical (standard error 0); one is run")
        trials = 1
    if len(scored) < n_items:
        notes.append(f"{n_items - len(scored)} items have no readable gold answer: left out")
    ragged = any(len({len(votes.votes[m.name][i]) for i in scored}) > 1 for m in members)
    rule_name = "" if structured or root.rule.args else root.rule.name
    engine = "vectorised"
    try:
        if ragged or rule_name not in ("slm_mux", "majority", "single"):
            raise ImportError
        figures = simulate_fast(members, votes, rule_name, trials, seed, best)
    except ImportError:
        engine = "plain"
        runner = make_runner(runnable, accuracies) if structured else None
        figures = simulate_plain(members, votes, get_rule(root.rule), trials, seed, best, scored,
                                 resampled, runner)
    n_scored = len(scored)

    def figure(name: str) -> dict[str, Any]:
        table = figures[name]
        mean, se = _mean_se(table.mean(axis=1))
        per_item = table.mean(axis=0)
        item_se = (float(np.std(per_item, ddof=1) / math.sqrt(n_scored)) if n_scored > 1
                   else 0.0)
        return {"accuracy": mean, "se": se, "item_se": item_se}

    def cost(pairs: Sequence[tuple[str, int]]) -> tuple[Optional[float], Optional[float]]:
        tokens, money = 0.0, 0.0
        for name, k in pairs:
            if name not in votes.output_tokens:
                return None, None
            tokens += k * votes.tokens_per_sample(name)
            money += k * votes.cost_per_sample(name)
        return tokens, money

    all_pairs = [(m.name, m.k) for m in members]
    best_member = members[best]
    spend = {
        "single_best": cost([(best_member.name, 1)]),
        "single_best_sc": cost([(best_member.name, best_member.k)]),
        "agent_forest": cost(all_pairs), "slm_mux": cost(all_pairs), "mux": cost(all_pairs),
        "union": cost(all_pairs), "oracle_any_sample": cost(all_pairs),
    }
    steps: list[float] | None = None
    if structured:
        # the tree's spend: the samples each item actually used (a cascade stops early)
        spent = [cost(list(used.items())) for trial in figures["used"] for used in trial]
        spend["mux"] = ((None, None) if any(s[0] is None for s in spent) else
                        (float(np.mean([s[0] for s in spent])),
                         float(np.mean([s[1] for s in spent]))))
        if isinstance(runnable, ir.Cascade):
            counts = np.bincount(figures["step"].ravel(), minlength=len(runnable.steps))
            steps = (counts / counts.sum()).tolist()
    details: dict[str, dict[str, Any]] = {}
    for name in (*BASELINES, "mux"):
        details[name] = figure(name)
        details[name]["tokens_per_question"], details[name]["cost_per_question"] = spend[name]
    details["single_best"]["model"] = best_member.name
    details["single_best_sc"]["model"] = best_member.name
    details["single_best_sc"]["samples"] = best_member.k
    contradiction = _mean_se(figures["contradiction"].mean(axis=1))
    mux_no_answer = float(figures["no_answer"].mean())

    if all(m.k == 1 for m in members):
        notes.append("the mux draws one sample per model: SLM-MUX's self-consistency is not "
                     "exercised (every confidence is 1, so the validation-accuracy tie-break "
                     "decides; Single-Best-SC equals Single-Best)")
    if source_summary.startswith("none"):
        notes.append("no validation accuracies (no --validation, no mux validation, none typed): "
                     "ties go by pool order and Single-Best is the first pool model")

    report = {
        "spec": spec.path if spec else None,
        "mux": {"name": runnable.name,
                "rule": (f"cascade [{', '.join(s.name for s in runnable.steps)}] threshold "
                         f"{runnable.threshold:g}" if isinstance(runnable, ir.Cascade)
                         else str(runnable.rule)),
                "tie_break": root.tie_break, "structured": structured,
                "answered_at_step": steps,
                "accuracy": details["mux"]["accuracy"], "se": details["mux"]["se"],
                "item_se": details["mux"]["item_se"], "no_answer": mux_no_answer,
                "tokens_per_question": details["mux"]["tokens_per_question"],
                "cost_per_question": details["mux"]["cost_per_question"]},
        "dataset": {"name": info.name, "content_hash": info.content_hash, "items": n_items,
                    "scored_items": n_scored},
        "engine": engine,
        "store": store.display_url,
        "trials": trials, "seed": seed, "resampled": resampled,
        "pool": [{"model": m.name, "samples": m.k,
                  "stored_per_item": [min(map(len, votes.votes[m.name])),
                                      max(map(len, votes.votes[m.name]))]} for m in members],
        "validation": {"source": source_summary, "dataset": val_name,
                       "accuracies": accuracies, "sources": sources},
        "per_model": per_model,
        "models": models_report,
        "baselines": {name: details[name]["accuracy"] for name in BASELINES},
        "contradiction": contradiction[0],
        "contradiction_se": contradiction[1],
        "details": details,
        "notes": notes,
        "seconds": time.perf_counter() - started,
    }
    return report
