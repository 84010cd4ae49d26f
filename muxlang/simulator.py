"""Offline simulator: score a pool configuration {model: budget} and a selection rule on stored samples.

Per simulation trial, each pool model draws ``budget`` of its stored samples for every item, without
replacement (seeded); the selection rule picks an answer per item; the answer is compared with gold.
The result is the mean accuracy over ``simulations`` trials with its standard error, the paper's
UnionAcc and Contradiction, and the expected tokens and cost per item.

The draws of a trial are its samples in sample-index order: slot j of a trial is that trial's
j-th sample, so "ties go to the answer sampled first" (``muxlang.stdlib.selection.top_answer``)
is "ties go to the earliest slot" here, random across trials and therefore unbiased. With
``shuffle=False`` (or for the models not named in ``shuffle``) every trial takes the stored
samples in their stored order, as a live run drew them: ``eval`` on exactly the drawn samples then
answers what ``run`` answered.

How it is fast:

* answers are mapped once to integer classes per item (``-1`` is an unreadable sample);
* draws are one random permutation of each model's stored samples per (trial, item), generated once
  with NumPy; a budget ``b`` takes the first ``b`` slots, so budgets are nested and share draws;
* per model, one walk over its slots (``_VoteWalk``) gives its top class and count among the
  drawn samples at every budget, for all trials and items at once, cached; an slm_mux or single
  configuration is then an argmax over a few models;
* majority packs each class's votes and tie-break into one integer key per (trial, item, class),
  so adding a drawn sample touches one key per row; one walk over the pool's last member answers
  its every budget, and walks start from the votes of the same fixed members at a smaller budget
  when another walk left them (``Simulator._majority``).

``plain_score`` replays the same draws item by item through the real stdlib selection rules, and
``outcomes`` gives the answer, chosen member and confidence per (trial, item) for differential
tests against ``muxlang.semantics``; the tests check they agree exactly.
"""
from __future__ import annotations

import hashlib
import json
import math
import zlib
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Iterable, Mapping, Optional

import numpy as np

from muxlang import ir
from muxlang.errors import MuxError
from muxlang.votes import StoredVotes

RULES = ("slm_mux", "majority", "single")
UNREADABLE = -1
_WALK_BYTES = 384 << 20  # majority walks kept for reuse (a 2-member grid needs about 26)
_PREFIX_BYTES = 128 << 20  # and the votes of their fixed members


def _bound(cache: dict, limit: int) -> None:
    """Drop the least recently used entries of ``cache`` (of objects with ``nbytes``, or
    None) while it holds more than ``limit`` bytes; the newest stays."""
    while len(cache) > 1 and sum(v.nbytes for v in cache.values() if v is not None) > limit:
        cache.pop(next(iter(cache)))


@dataclass(frozen=True)
class Config:
    """A pool (model → budget, in pool order, budgets ≥ 1) and a selection rule."""

    pool: tuple[tuple[str, int], ...]
    rule: str = "slm_mux"
    adaptive: str = "off"  # "off" | "exact": how the mux draws (``muxlang.adaptive_simulation``)

    @staticmethod
    def of(pool: Mapping[str, int] | Iterable[tuple[str, int]], rule: str = "slm_mux",
           adaptive: str = "off") -> "Config":
        items = pool.items() if isinstance(pool, Mapping) else pool
        return Config(tuple((str(m), int(b)) for m, b in items if int(b) > 0), rule, adaptive)

    @property
    def models(self) -> list[str]:
        return [m for m, _ in self.pool]

    def as_dict(self) -> dict[str, int]:
        return dict(self.pool)

    def __str__(self) -> str:
        inner = ", ".join(f"{m} * {b}" for m, b in self.pool)
        policy = f" adaptive={self.adaptive}" if self.adaptive != "off" else ""
        return f"{self.rule}[{inner}]{policy}"


@dataclass
class Score:
    accuracy: float  # mean over simulation trials of the share of items answered correctly
    se: float  # standard error of that mean over the simulation trials (resampling noise)
    se_items: float  # standard error from the finite item set (std over items / sqrt(n))
    union: float  # UnionAcc: share of items where some pool model's top answer is right
    contradiction: float  # share where one model is consistently wrong while another is right
    tokens: float  # expected tokens per item
    cost: float  # expected USD per item
    n_items: int
    n_trials: int
    correct_per_trial: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, int))
    samples: float = 0  # samples drawn per item: the budgets' sum, or the mean under adaptive
    spend: float = 0.0  # the ``cost`` objective, in ``Simulator.cost_unit`` (USD, tokens, samples)

    @property
    def se_total(self) -> float:
        return math.sqrt(self.se ** 2 + self.se_items ** 2)

    def objective(self, name: str, penalty: float = 1.0) -> float:
        if name == "accuracy":
            return self.accuracy
        if name == "cost":
            return self.spend
        if name == "samples":
            return float(self.samples)
        if name == "union_contradiction":
            return self.union - penalty * self.contradiction
        raise MuxError(f"unknown objective '{name}'")

    def as_dict(self) -> dict[str, float | int]:
        return {
            "accuracy": self.accuracy, "se": self.se, "se_items": self.se_items,
            "union": self.union, "contradiction": self.contradiction,
            "tokens": self.tokens, "cost": self.cost,
            "n_items": self.n_items, "n_trials": self.n_trials,
            "samples": self.samples, "spend": self.spend,
        }


def _stable_seed(seed: int, name: str) -> list[int]:
    return [int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode("utf-8"))]


def _std1(counts: np.ndarray) -> float:
    """Sample standard deviation (ddof 1) of integer counts, exactly 0 when they are all equal."""
    n = counts.size
    if n < 2:
        return 0.0
    c = counts.astype(np.int64, copy=False)
    total = int(c.sum())
    squares = int(np.dot(c, c))
    numerator = n * squares - total * total  # exact integer arithmetic
    return math.sqrt(max(numerator, 0) / (n * (n - 1)))


def _mean_and_se(correct_per_trial: np.ndarray, n_items: int) -> tuple[float, float]:
    """Mean accuracy over trials (mean of the per-trial shares) and its standard error."""
    if n_items == 0 or correct_per_trial.size == 0:
        return 0.0, 0.0
    t = correct_per_trial.size
    mean = int(correct_per_trial.sum()) / (n_items * t)
    se = _std1(correct_per_trial) / n_items / math.sqrt(t)
    return mean, se


def votes_hash(votes: StoredVotes, models: Iterable[str] | None = None) -> str:
    """Content hash of a dataset's items, gold keys and the stored answer keys of ``models``."""
    digest = hashlib.sha256()
    digest.update(json.dumps([votes.items, votes.gold], ensure_ascii=False).encode("utf-8"))
    for model in sorted(models if models is not None else votes.models):
        digest.update(json.dumps([model, votes.votes.get(model)], ensure_ascii=False).encode())
    return digest.hexdigest()


def subset_votes(votes: StoredVotes, indices: Iterable[int], name: str | None = None) -> StoredVotes:
    """The same votes restricted to the items at ``indices`` (in that order)."""
    idx = list(indices)
    return StoredVotes(
        dataset=name or votes.dataset,
        items=[votes.items[i] for i in idx],
        models=list(votes.models),
        votes={m: [rows[i] for i in idx] for m, rows in votes.votes.items()},
        gold=[votes.gold[i] for i in idx],
        input_tokens=dict(votes.input_tokens), output_tokens=dict(votes.output_tokens),
        price_input=dict(votes.price_input), price_output=dict(votes.price_output),
        reported_cost=dict(votes.reported_cost),
    )


def split_votes(votes: StoredVotes, fraction: float, seed: int) -> tuple[StoredVotes, StoredVotes]:
    """Split items at random (seeded) into a validation share ``fraction`` and the rest for test."""
    if not 0.0 < fraction < 1.0:
        raise MuxError(f"the validation share of a split must be between 0 and 1 (exclusive), "
                       f"got {fraction}")
    n = len(votes.items)
    order = np.random.default_rng(int(seed)).permutation(n)
    n_val = int(round(fraction * n))
    if n_val == 0 or n_val == n:
        raise MuxError(f"a split of {fraction} of {n} items leaves one side empty")
    val_idx = sorted(order[:n_val].tolist())
    test_idx = sorted(order[n_val:].tolist())
    return (subset_votes(votes, val_idx, f"{votes.dataset}[val {fraction:g} seed {seed}]"),
            subset_votes(votes, test_idx, f"{votes.dataset}[test {1 - fraction:g} seed {seed}]"))


class Simulator:
    """Scores configurations on one ``StoredVotes`` with ``simulations`` seeded resampling trials.

    ``accuracies`` (model → validation accuracy or None) breaks slm_mux ties and picks the
    ``single`` model; by default each model's per-sample accuracy on these votes. Score a test set
    with the validation set's accuracies, never its own.
    """

    def __init__(self, votes: StoredVotes, simulations: int = ir.default(ir.Tune, "simulations"),
                 seed: int = 0,
                 accuracies: Mapping[str, float | None] | None = None,
                 models: Iterable[str] | None = None, shuffle: bool | Iterable[str] = True):
        if simulations < 1:
            raise MuxError(f"simulations must be at least 1, got {simulations}")
        self.votes = votes
        self.simulations = int(simulations)
        self.seed = int(seed)
        wanted = list(models) if models is not None else list(votes.models)
        # the models whose draws are random permutations; the others keep the stored order
        self.shuffled = (set(wanted) if shuffle is True else set() if shuffle is False
                         else set(shuffle))
        missing = [m for m in wanted if m not in votes.votes]
        if missing:
            raise MuxError(f"no stored samples of {', '.join(missing)} in dataset "
                           f"'{votes.dataset}'")
        self.models = wanted
        # items with a readable gold answer are the ones scored
        self.item_index = [i for i, g in enumerate(votes.gold) if g is not None]
        self.n_items = len(self.item_index)
        if self.n_items == 0:
            raise MuxError(f"dataset '{votes.dataset}' has no item with a readable gold answer")
        self._encode()
        self.measured_accuracy = self._per_sample_accuracy()
        self.accuracies: dict[str, float | None] = dict(self.measured_accuracy)
        if accuracies is not None:
            self.accuracies.update({m: accuracies.get(m) for m in self.models if m in accuracies})
        self._draws: dict[str, np.ndarray] = {}
        self._top: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
        self._counts: dict[tuple[str, int], np.ndarray] = {}
        self._fconf: dict[tuple[str, int], np.ndarray] = {}
        self._fast: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
        self._wrong: dict[tuple[str, int], np.ndarray] = {}
        self._majority_answers: dict[tuple, np.ndarray] = {}
        self._drawn: dict[Config, list[float]] = {}  # adaptive configurations: samples drawn
        self._chains: dict[tuple, Optional[_VoteWalk]] = {}
        self._prefixes: dict[tuple, _Votes] = {}
        self._slot_cells: dict[str, _Slots] = {}
        self._member_keys: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}

    # --- encoding -------------------------------------------------------------------------------
    def _encode(self) -> None:
        votes, models = self.votes, self.models
        self.keys: list[list[str]] = []  # per scored item: class id -> key, sorted
        gold = np.empty(self.n_items, dtype=np.int32)
        self.k_stored = {m: max((len(votes.votes[m][i]) for i in self.item_index), default=0)
                         for m in models}
        self.samples = {m: np.full((self.n_items, max(self.k_stored[m], 1)), UNREADABLE, np.int32)
                        for m in models}
        self.n_stored = {m: np.zeros(self.n_items, np.int32) for m in models}
        for row, i in enumerate(self.item_index):
            vocab = {votes.gold[i]}
            for m in models:
                vocab.update(k for k in votes.votes[m][i] if k is not None)
            ordered = sorted(vocab)
            ids = {k: c for c, k in enumerate(ordered)}
            self.keys.append(ordered)
            gold[row] = ids[votes.gold[i]]
            for m in models:
                keys = votes.votes[m][i]
                self.n_stored[m][row] = len(keys)
                for j, k in enumerate(keys):
                    if k is not None:
                        self.samples[m][row, j] = ids[k]
        self.gold = gold
        self.n_classes = max(len(k) for k in self.keys)

    def _per_sample_accuracy(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for m in self.models:
            stored = int(self.n_stored[m].sum())
            if stored == 0:
                out[m] = None
                continue
            right = int((self.samples[m] == self.gold[:, None]).sum())
            out[m] = right / stored
        return out

    # --- draws and per-(model, budget) cache ------------------------------------------------------
    def max_budget(self, model: str) -> int:
        """Samples stored for ``model`` (the most of any item): the largest budget it can draw."""
        return self.k_stored[model]

    def full_budget(self, model: str) -> int:
        """Samples stored for ``model`` on every scored item: the largest budget it draws in
        full everywhere (above it, the items with fewer count their missing draws as
        unreadable, which scores the model on data that was never collected)."""
        if model not in self.k_stored:
            return 0
        rows = self.votes.votes[model]
        return min((len(rows[i]) for i in self.item_index), default=0)

    def draws(self, model: str) -> np.ndarray:
        """(simulations, items, k_stored) slot order per trial and item; budget b takes [..., :b]."""
        if model not in self._draws:
            k = max(self.k_stored[model], 1)
            if model not in self.shuffled:  # the stored order, in every trial
                order = np.arange(k, dtype=np.int16)
                self._draws[model] = np.broadcast_to(order, (self.simulations, self.n_items, k))
                return self._draws[model]
            rng = np.random.default_rng(_stable_seed(self.seed, model))
            noise = rng.random((self.simulations, self.n_items, k))
            self._draws[model] = np.argsort(noise, axis=-1, kind="stable").astype(np.int16)
        return self._draws[model]

    def _check_budget(self, model: str, budget: int) -> None:
        if model not in self.k_stored:
            raise MuxError(f"no stored samples of '{model}' in dataset '{self.votes.dataset}'")
        if budget < 1 or budget > self.k_stored[model]:
            raise MuxError(f"budget {budget} for '{model}' is outside 1..{self.k_stored[model]} "
                           f"(samples stored per item in '{self.votes.dataset}')")

    def drawn(self, model: str, budget: int) -> np.ndarray:
        """Class ids of the drawn samples: (simulations, items, budget); -1 = unreadable."""
        self._check_budget(model, budget)
        order = self.draws(model)[..., :budget].astype(np.intp)
        table = self.samples[model]
        return table[np.arange(self.n_items)[None, :, None], order]

    def class_counts(self, model: str, budget: int) -> np.ndarray:
        """(simulations, items, classes) counts of each class among the drawn samples."""
        key = (model, budget)
        if key not in self._counts:
            self._check_budget(model, budget)
            t, n, c = self.simulations, self.n_items, self.n_classes
            dtype = np.uint8 if budget < 256 else np.uint16
            prev = self.class_counts(model, budget - 1) if budget > 1 else None
            if prev is not None:
                # budgets are nested: the first b-1 drawn slots are those of budget b-1
                counts = prev.astype(dtype, copy=True)
                slots = self.draws(model)[..., budget - 1].astype(np.intp)
                drawn = self.samples[model][np.arange(n)[None, :], slots]
                cells = np.arange(t * n, dtype=np.int64).reshape(t, n) * c + drawn
                flat = counts.reshape(-1)
                flat[cells[drawn >= 0]] += 1
            else:
                drawn = self.drawn(model, budget)
                slot = np.where(drawn < 0, c, drawn)  # unreadable: an extra, dropped column
                flat = (np.arange(t * n, dtype=np.int64).reshape(t, n, 1) * (c + 1)
                        + slot).ravel()
                counts = np.bincount(flat, minlength=t * n * (c + 1)).reshape(t, n, c + 1)
                counts = np.ascontiguousarray(counts[..., :c]).astype(dtype)
            self._counts[key] = counts
            while len(self._counts) > 48:  # only majority needs them again; bound memory
                self._counts.pop(next(iter(self._counts)))
        return self._counts[key]

    def top(self, model: str, budget: int) -> tuple[np.ndarray, np.ndarray]:
        """Per (trial, item): the model's most frequent class among its drawn samples (ties to
        the class drawn first; -1 when none is readable) and that class's count. One walk over
        the model's slots (``member_keys``) gives every budget at once."""
        key = (model, budget)
        if key not in self._top:
            self._check_budget(model, budget)
            self.member_keys(model)
        return self._top[key]

    def member_keys(self, model: str) -> tuple[np.ndarray, np.ndarray, int]:
        """The model alone, after each number of drawn samples n = 0..k: the largest and the
        second largest vote key per (trial x items) row, (k + 1, rows) each, and the bits
        below the count (a key is ``count << high | (cap - first slot)``). What adaptive
        sampling asks of a member: its answer's count, and whether the rest of its samples
        could still change it (``muxlang.adaptive_simulation``)."""
        if model not in self._member_keys:
            k = self.k_stored[model]
            self._check_budget(model, max(k, 1))
            layout = _Layout.of(self, ((model, k),), [0])
            assert layout is not None  # one member always fits
            votes = _Votes(self, layout.dtype, second=True)
            first = np.zeros((k + 1, votes.top.size), layout.dtype)
            second = np.zeros_like(first)
            shape = (self.simulations, self.n_items)
            for slot in range(k):
                votes.add(self, layout, 0, slot)
                first[slot + 1], second[slot + 1] = votes.top, votes.second
                count = (votes.top >> layout.high).astype(np.int32)
                self._top[(model, slot + 1)] = votes.answer(shape), count.reshape(shape)
            self._member_keys[model] = first, second, layout.high
        return self._member_keys[model]

    def _rank_table(self) -> dict[tuple[int, int], int]:
        """Every fraction count/budget this store can produce → its rank in increasing order."""
        if not hasattr(self, "_ranks"):
            k = max(max(self.k_stored.values(), default=1), 1)
            values = sorted({Fraction(c, b) for b in range(1, k + 1) for c in range(b + 1)})
            index = {v: r for r, v in enumerate(values)}
            self._ranks = {(c, b): index[Fraction(c, b)]
                           for b in range(1, k + 1) for c in range(b + 1)}
            self._rank_dtype = np.uint8 if len(values) <= 255 else np.uint16
        return self._ranks

    def fast_tables(self, model: str, budget: int) -> tuple[np.ndarray, np.ndarray]:
        """(confidence rank, top answer is gold) per (trial, item), compact dtypes, cached: the
        only inputs the slm_mux and single rules need for accuracy."""
        key = (model, budget)
        if key not in self._fast:
            top, count = self.top(model, budget)
            ranks = self._rank_table()
            lookup = np.array([ranks[(c, budget)] for c in range(budget + 1)],
                              dtype=self._rank_dtype)
            self._fast[key] = (lookup[count], top == self.gold[None, :])
        return self._fast[key]

    def correct(self, config: Config) -> np.ndarray:
        """(simulations, items) bool: is the selected answer gold?"""
        if config.rule == "majority" or not config.pool:
            return self.answers(config) == self.gold[None, :]
        models = config.models
        budgets = [b for _, b in config.pool]
        order = self.priority(models)
        first = order[0]
        rank, right = self.fast_tables(models[first], budgets[first])
        if config.rule == "single" or len(order) == 1:
            return right
        best = rank.copy()
        right = right.copy()
        for i in order[1:]:
            r, ok = self.fast_tables(models[i], budgets[i])
            better = r > best  # strict: on equal confidence the higher priority stays
            np.maximum(best, r, out=best)
            flip = np.bitwise_xor(right, ok)  # right = ok where better (bool masked copies
            flip &= better                    # are slow in NumPy; xor-and-xor is not)
            right ^= flip
        return right

    def confidence(self, model: str, budget: int) -> np.ndarray:
        """count / budget as float64: equal rationals give equal floats (correct rounding)."""
        key = (model, budget)
        if key not in self._fconf:
            self._fconf[key] = self.top(model, budget)[1] / float(budget)
        return self._fconf[key]

    # --- rules ----------------------------------------------------------------------------------
    def priority(self, models: list[str]) -> list[int]:
        """Positions of ``models`` (pool order) sorted by tie-break priority: higher validation
        accuracy first (None last), then lower pool index."""
        def key(i: int):
            acc = self.accuracies.get(models[i])
            return (0 if acc is not None else 1, -(acc if acc is not None else 0.0), i)
        return sorted(range(len(models)), key=key)

    def answers(self, config: Config) -> np.ndarray:
        """(simulations, items) selected class per trial and item; -1 = no answer."""
        if config.rule not in RULES:
            raise MuxError(f"unknown selection rule '{config.rule}'", )
        if not config.pool:
            return np.full((self.simulations, self.n_items), UNREADABLE, np.int32)
        models = config.models
        budgets = [b for _, b in config.pool]
        if config.rule == "majority":
            return self._majority(config)
        order = self.priority(models)
        if config.rule == "single":
            first = order[0]
            return self.top(models[first], budgets[first])[0]
        # slm_mux: highest confidence; argmax keeps the first maximum = highest priority
        if len(order) == 1:
            return self.top(models[0], budgets[0])[0]
        conf = np.stack([self.confidence(models[i], budgets[i]) for i in order])
        tops = np.stack([self.top(models[i], budgets[i])[0] for i in order])
        winner = conf.argmax(axis=0)
        return np.take_along_axis(tops, winner[None], axis=0)[0]

    def outcomes(self, config: Config) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(simulations, items) arrays: the selected class (-1: none), the pool position of the
        chosen member (-1: none) and the confidence — what ``muxlang.semantics`` reports per
        record, for differential tests and per-record reports."""
        shape = (self.simulations, self.n_items)
        answer = self.answers(config)
        member = np.full(shape, -1, np.int32)
        confidence = np.zeros(shape, np.float64)
        if not config.pool:
            return answer, member, confidence
        models = config.models
        budgets = [b for _, b in config.pool]
        order = self.priority(models)
        if config.rule == "majority":
            total = sum(budgets)
            for i in reversed(order):  # the best-priority voter for the answer is written last
                counts = self.class_counts(models[i], budgets[i])
                voted = np.take_along_axis(counts, np.maximum(answer, 0)[..., None],
                                           axis=-1)[..., 0] > 0
                member[voted & (answer >= 0)] = i
            for m, b in config.pool:
                counts = self.class_counts(m, b)
                confidence += np.take_along_axis(counts, np.maximum(answer, 0)[..., None],
                                                 axis=-1)[..., 0]
            confidence = np.where(answer >= 0, confidence / total, 0.0)
            return answer, member, confidence
        if config.rule == "single" or len(order) == 1:
            first = order[0]
            chosen = np.full(shape, first, np.int32)
            confidence = self.confidence(models[first], budgets[first]).copy()
        else:
            conf = np.stack([self.confidence(models[i], budgets[i]) for i in order])
            winner = conf.argmax(axis=0)
            chosen = np.asarray(order, np.int32)[winner]
            confidence = np.take_along_axis(conf, winner[None], axis=0)[0]
        member = np.where(answer >= 0, chosen, -1).astype(np.int32)
        confidence = np.where(answer >= 0, confidence, 0.0)
        return answer, member, confidence

    def key_of(self, row: int, cls: int) -> str | None:
        """The equivalence key of class ``cls`` on scored item ``row`` (None for -1)."""
        return None if cls < 0 else self.keys[row][cls]

    def accuracy_levels(self, models: list[str]) -> tuple[list[int], int]:
        """Dense rank of each model's validation accuracy (0 = best; equal accuracies share a
        rank; None ranks last) and the number of ranks."""
        values = sorted({a for m in models if (a := self.accuracies.get(m)) is not None},
                        reverse=True)
        level = {a: r for r, a in enumerate(values)}
        ranks = [level[a] if (a := self.accuracies.get(m)) is not None else len(values)
                 for m in models]
        return ranks, len(values) + 1

    def _majority(self, config: Config) -> np.ndarray:
        """Agent Forest: most votes over all drawn samples; ties go to the most trusted member
        that voted for a tied answer, which picks the one it sampled first
        (``muxlang.stdlib.selection.majority``).

        Each class gets one integer key, a sum over members: ``votes << high`` plus, per member
        that voted for it, ``(cap - its first slot) << shift``, the most trusted member's field
        highest. Keys of voted classes are distinct (a slot holds one class), so the answer is
        the class of the largest key. Adding one drawn sample changes one key per (trial,
        item), so the answer after each further sample of the pool's last member is an O(rows)
        update (``_VoteWalk``): one walk answers that member's every budget."""
        cached = self._majority_answers.get(config.pool)
        if cached is not None:
            return cached.astype(np.int32)
        *others, (last, budget) = config.pool
        trust = self.priority(config.models)
        chain_key = (tuple(others), last, tuple(trust))  # one walk per fixed part of the pool
        if chain_key in self._chains:
            chain = self._chains.pop(chain_key)
            self._chains[chain_key] = chain  # most recently used last
        else:
            chain = self._chains[chain_key] = _VoteWalk.start(self, config.pool, trust)
            _bound(self._chains, _WALK_BYTES)
        answer = self._majority_plain(config) if chain is None else chain.answer(budget)
        self._majority_answers[config.pool] = answer.astype(np.int16 if self.n_classes < 2 ** 15
                                                            else np.int32)
        while len(self._majority_answers) > 4096:
            self._majority_answers.pop(next(iter(self._majority_answers)))
        return answer

    def row_starts(self) -> np.ndarray:
        """(trials x items,) where each (trial, item) row starts in a flat table with one cell
        per class of the item and one more (unreadable samples) at the row's end: rows are as
        wide as their item's classes, not as the widest item's."""
        if not hasattr(self, "_row_starts"):
            widths = np.array([len(keys) + 1 for keys in self.keys], np.int64)
            starts = np.concatenate([[0], np.cumsum(widths)[:-1]])
            total = int(widths.sum())
            self._row_starts = (np.arange(self.simulations, dtype=np.int64)[:, None] * total
                                + starts[None, :]).ravel()
            self._row_cells = total * self.simulations
        return self._row_starts

    def slot_cells(self, model: str) -> "_Slots":
        """``model``'s draws slot by slot, as the vote walks read them (``_Slots``). Cached
        per model; every budget reads a prefix."""
        if model not in self._slot_cells:
            k = self.k_stored[model]
            drawn = np.ascontiguousarray(np.moveaxis(self.drawn(model, k), -1, 0)).reshape(k, -1)
            unreadable = np.tile(np.array([len(keys) for keys in self.keys], np.int64),
                                 self.simulations)
            classes = np.where(drawn < 0, unreadable[None, :], drawn)
            cells = classes + self.row_starts()[None, :]
            readable = (drawn >= 0).view(np.uint8)
            first = readable.copy()
            seen = np.zeros(self._row_cells, np.uint8)
            for slot in range(k):
                first[slot] &= 1 - seen[cells[slot]]
                seen[cells[slot]] = 1
            self._slot_cells[model] = _Slots(cells, classes.astype(self.class_dtype), readable,
                                             first)
        return self._slot_cells[model]

    @property
    def class_dtype(self) -> type:
        return np.uint16 if self.n_classes < (1 << 16) - 1 else np.uint32

    def _prefix(self, layout: "_Layout", fixed: tuple[tuple[str, int], ...]) -> "_Votes":
        """The votes of the pool's first members at their budgets (``fixed``), kept for other
        walks: built from the same members with a smaller last budget when one is kept."""
        if not fixed:
            return _Votes(self, layout.dtype)
        key = (layout, fixed)
        if key in self._prefixes:
            self._prefixes[key] = self._prefixes.pop(key)  # most recently used last
            return self._prefixes[key]
        *head, (model, budget) = fixed
        start = next((b for b in range(budget - 1, 0, -1)
                      if (layout, (*head, (model, b))) in self._prefixes), 0)
        votes = (self._prefixes[(layout, (*head, (model, start)))] if start
                 else self._prefix(layout, tuple(head))).copy()
        for slot in range(start, budget):
            votes.add(self, layout, len(fixed) - 1, slot)
        self._prefixes[key] = votes
        _bound(self._prefixes, _PREFIX_BYTES)
        return votes

    def _majority_plain(self, config: Config) -> np.ndarray:
        """The stdlib rule row by row: for pools whose keys would not fit 64 bits (many members
        with large budgets), where the incremental walk cannot pack them."""
        rule = _load_rule("majority")
        accuracies = [self.accuracies.get(m) for m in config.models]
        drawn = [self.drawn(m, b) for m, b in config.pool]
        answer = np.full((self.simulations, self.n_items), UNREADABLE, np.int32)
        for t in range(self.simulations):
            for row in range(self.n_items):
                ballots = [[None if c < 0 else int(c) for c in d[t, row].tolist()]
                           for d in drawn]
                chosen = rule(ballots, accuracies).answer
                answer[t, row] = UNREADABLE if chosen is None else chosen
        return answer

    def correct_per_trial(self, config: Config) -> np.ndarray:
        return np.count_nonzero(self.correct(config), axis=1)

    def score(self, config: Config, with_union: bool = True) -> Score:
        correct = self.correct(config)
        per_trial = np.count_nonzero(correct, axis=1)
        mean, se = _mean_and_se(per_trial, self.n_items)
        se_items = 0.0
        if self.n_items > 1:
            per_item = np.count_nonzero(correct, axis=0)  # right answers per item, of T
            se_items = _std1(per_item) / self.simulations / math.sqrt(self.n_items)
        union = contradiction = 0.0
        if with_union and config.pool:
            union, contradiction = self.union_contradiction(config)
        drawn = self.samples_drawn(config)
        tokens = sum(n * self.votes.tokens_per_sample(m) for (m, _), n in zip(config.pool, drawn))
        cost = sum(n * self.votes.cost_per_sample(m) for (m, _), n in zip(config.pool, drawn))
        samples = sum(drawn)
        spend = {"usd": cost, "tokens": tokens}.get(self.cost_unit, samples)
        return Score(mean, se, se_items, union, contradiction, float(tokens), float(cost),
                     self.n_items, self.simulations, per_trial, samples, float(spend))

    def samples_drawn(self, config: Config) -> list[float]:
        """Per pool member, the samples it draws per item: its budget, or under ``adaptive =
        exact`` the mean over trials and items of what the policy draws (the answers are the
        full budget's). ``delta(p)`` decides by a seeded Monte Carlo per record and is not
        simulated: ``eval`` measures it on a chosen pool."""
        if config.adaptive == "off":
            return [b for _, b in config.pool]
        if config.adaptive != "exact":
            raise MuxError(f"the simulator scores adaptive = off or exact, not "
                           f"{config.adaptive}; measure it on a chosen pool with `muxlang eval`")
        if config not in self._drawn:
            from muxlang.adaptive_simulation import exact_draws

            self._drawn[config] = [float(n) for n in exact_draws(self, config).mean(axis=1)]
        return self._drawn[config]

    @property
    def cost_unit(self) -> str:
        """What the ``cost`` objective counts, the same for every configuration: USD when every
        model has a cost per sample (``StoredVotes.cost_per_sample``: what a gateway reported,
        else prices times token counts), else tokens when every model has token counts, else
        samples (so that without prices a sample is never free)."""
        if not hasattr(self, "_cost_unit"):
            models = self.models
            if models and all(self.votes.cost_per_sample(m) > 0 for m in models):
                self._cost_unit = "usd"
            elif models and all(self.votes.tokens_per_sample(m) > 0 for m in models):
                self._cost_unit = "tokens"
            else:
                self._cost_unit = "samples"
        return self._cost_unit

    def union_contradiction(self, config: Config) -> tuple[float, float]:
        """The paper's UnionAcc and Contradiction (§3), on each trial's drawn samples, averaged.

        A model is right on an item when its most frequent drawn answer is gold; it is
        consistently wrong when all its drawn samples give the same readable wrong answer."""
        any_right = None
        any_wrong = None
        for m, b in config.pool:
            key = (m, b)
            if key not in self._wrong:
                top, count = self.top(m, b)
                self._wrong[key] = (count == b) & (top >= 0) & (top != self.gold[None, :])
            right = self.fast_tables(m, b)[1]
            wrong = self._wrong[key]
            any_right = right.copy() if any_right is None else np.bitwise_or(any_right, right,
                                                                             out=any_right)
            any_wrong = wrong.copy() if any_wrong is None else np.bitwise_or(any_wrong, wrong,
                                                                             out=any_wrong)
        size = any_right.size
        union = np.count_nonzero(any_right) / size
        contradiction = np.count_nonzero(any_right & any_wrong) / size
        return union, contradiction

    def single_model_scores(self, budget: int | None = None) -> dict[str, Score]:
        """Each model alone (its self-consistency over ``budget`` samples, default 1)."""
        out = {}
        for m in self.models:
            b = min(budget or 1, self.k_stored[m])
            if b >= 1:
                out[m] = self.score(Config(((m, b),), "slm_mux"))
        return out


@dataclass(frozen=True)
class _Layout:
    """Where each member's field sits in a vote key (see ``Simulator._majority``): the most
    trusted member's field highest, the vote count above them all. Fields are as wide as the
    member's stored samples when that fits, so a pool's keys are the same for every budget of
    its members and walks can share their prefixes; else as wide as the budgets."""

    models: tuple[str, ...]
    shifts: tuple[int, ...]  # per pool position
    caps: tuple[int, ...]  # per pool position: a class first drawn in slot s has field cap - s
    high: int  # bits below the vote count
    bits: int  # the widest key

    @staticmethod
    def of(sim: Simulator, pool: tuple[tuple[str, int], ...], trust: list[int]
           ) -> Optional["_Layout"]:
        stored = [sim.k_stored[m] for m, _ in pool]
        for widths in ([k.bit_length() for k in stored],
                       [b.bit_length() for _, b in pool[:-1]] + [stored[-1].bit_length()]):
            shifts = [0] * len(pool)
            shift = 0
            for position in reversed(trust):
                shifts[position] = shift
                shift += widths[position]
            bits = shift + sum(stored).bit_length()
            if bits <= 64:
                return _Layout(tuple(m for m, _ in pool), tuple(shifts),
                               tuple((1 << w) - 1 for w in widths), shift, bits)
        return None  # too many members with too many samples to pack into 64 bits

    @property
    def dtype(self) -> type:
        """The narrowest unsigned integer that holds every key (narrow tables stay in cache)."""
        return next(t for t, n in ((np.uint16, 16), (np.uint32, 32), (np.uint64, 64))
                    if self.bits <= n)


@dataclass(frozen=True)
class _Slots:
    """A model's draws slot by slot, (slots, trials x items) each."""

    cells: np.ndarray  # int64: the flat table cell of the drawn class (``row_starts``;
    # unreadable samples: the row's last cell)
    classes: np.ndarray  # that class on its item (unreadable: the row's last class)
    readable: np.ndarray  # uint8 0/1
    first: np.ndarray  # uint8 0/1: the class is drawn there for the first time


class _Votes:
    """Vote keys of every (trial, item, class) and each row's largest key and its class.

    Unreadable samples land in an extra cell at the end of each row and add nothing there: its
    key stays 0 and never becomes the largest (every key of a voted class is positive)."""

    def __init__(self, sim: Simulator, dtype: type, second: bool = False):
        rows = sim.row_starts().size
        self.keys = np.zeros(sim._row_cells, dtype)
        self.best = np.zeros(rows, sim.class_dtype)  # the class of each row's largest key
        self.top = np.zeros(rows, dtype)  # and that key (0: no readable vote yet)
        # with ``second``: each row's second largest key too (0 when there is none)
        self.second = np.zeros(rows, dtype) if second else None

    def copy(self) -> "_Votes":
        out = object.__new__(_Votes)
        out.keys, out.best, out.top = self.keys.copy(), self.best.copy(), self.top.copy()
        out.second = None if self.second is None else self.second.copy()
        return out

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.best.nbytes + self.top.nbytes

    def answer(self, shape: tuple[int, int]) -> np.ndarray:
        """(trials, items) the class of each row's largest key; -1 where nothing readable was
        drawn."""
        answer = self.best.astype(np.int32)
        answer[self.top == 0] = UNREADABLE
        return answer.reshape(shape)

    def add(self, sim: Simulator, layout: _Layout, position: int, slot: int) -> None:
        """Pool member ``position``'s sample in ``slot`` of every (trial, item) into its
        class's key (a vote, and the member's field when the class is new to it), then each
        row's largest key. Selections are arithmetic (``b + (a - b) * take``, wrapping in
        unsigned integers): ``np.where`` on a random mask is several times slower."""
        slots = sim.slot_cells(layout.models[position])
        dtype = layout.dtype
        cells = slots.cells[slot]
        grown = self.keys[cells]  # one cell per row: no repeated index
        grown += slots.readable[slot] * dtype(1 << layout.high)
        grown += slots.first[slot] * dtype((layout.caps[position] - slot)
                                           << layout.shifts[position])
        self.keys[cells] = grown
        take = grown > self.top
        if self.second is not None:  # the runner-up: the old top when another class passes
            # it, else the larger of itself and the grown key (unless that is the top's own)
            other = slots.classes[slot] != self.best
            runner = np.where(take, self.top, np.maximum(self.second, grown))
            self.second = np.where(other, runner, self.second)
        self.best += (slots.classes[slot] - self.best) * take
        np.maximum(self.top, grown, out=self.top)


class _VoteWalk:
    """A pool's votes built by adding drawn samples one slot at a time: first every sample of
    the fixed members (from the longest prefix another walk left, ``Simulator._prefix``), then
    the last member's, whose answer after each slot is the answer at that budget. One walk
    answers every budget of the last member; a larger one resumes where a smaller stopped."""

    def __init__(self, sim: Simulator, layout: _Layout, votes: _Votes):
        self.sim, self.layout, self.votes = sim, layout, votes
        self.last = len(layout.models) - 1
        self.done = 0  # samples of the last member added
        self.answers: dict[int, np.ndarray] = {}  # budget of the last member -> answers

    @staticmethod
    def start(sim: Simulator, pool: tuple[tuple[str, int], ...],
              trust: list[int]) -> Optional["_VoteWalk"]:
        layout = _Layout.of(sim, pool, trust)
        if layout is None:
            return None
        return _VoteWalk(sim, layout, sim._prefix(layout, pool[:-1]).copy())

    @property
    def nbytes(self) -> int:
        return self.votes.nbytes + len(self.answers) * self.votes.best.size * 4

    def answer(self, budget: int) -> np.ndarray:
        """(trials, items) answers with the last member at ``budget``; -1 = no readable vote."""
        shape = (self.sim.simulations, self.sim.n_items)
        for slot in range(self.done, budget):
            self.votes.add(self.sim, self.layout, self.last, slot)
            self.answers[slot + 1] = self.votes.answer(shape)
        self.done = max(self.done, budget)
        return self.answers[budget]


# --- plain per-item reference ---------------------------------------------------------------------
def _load_rule(name: str):
    from muxlang.ir import Call
    from muxlang.stdlib.registry import get_rule

    return get_rule(Call(name))


def plain_correct_per_trial(sim: Simulator, config: Config, rule=None) -> np.ndarray:
    """The same draws, item by item, through the real stdlib rule: correct items per trial."""
    rule = rule or _load_rule(config.rule)
    votes = sim.votes
    accuracies = [sim.accuracies.get(m) for m in config.models]
    draws = {m: sim.draws(m) for m in config.models}
    out = np.zeros(sim.simulations, dtype=np.int64)
    for t in range(sim.simulations):
        right = 0
        for row, i in enumerate(sim.item_index):
            pool_votes: list[list[str | None]] = []
            for m, b in config.pool:
                stored = votes.votes[m][i]
                pool_votes.append([stored[j] if j < len(stored) else None
                                   for j in draws[m][t, row, :b].tolist()])
            selection = rule(pool_votes, accuracies)
            if selection.answer is not None and selection.answer == votes.gold[i]:
                right += 1
        out[t] = right
    return out


def plain_score(sim: Simulator, config: Config, rule=None) -> tuple[float, float]:
    """Mean accuracy and standard error from :func:`plain_correct_per_trial`."""
    return _mean_and_se(plain_correct_per_trial(sim, config, rule), sim.n_items)
