"""Workers sharing one Optuna study: the distributed walk of an enumerated grid, and who is alive.

``run_search`` (``optimizer/search.py``) decides what to search; this module is how several
processes, on one host or many, split an exhaustive search over one shared study (PostgreSQL or
SQLite storage) without writing a configuration twice, and how they notice a worker that died
(``fail_dead_workers``) or wait for one still running (``wait_for_running``). Kept apart from the
search because it is a small distributed protocol (claims in trial attributes, liveness by pid on
this host and by staleness elsewhere) with its own tests, and nothing of it depends on what the
objectives are.
"""
from __future__ import annotations

import os
import socket
import time
import warnings
from typing import Callable, Iterable, Sequence

import optuna

from muxlang.simulator import Config

WORKER = f"{socket.gethostname()}:{os.getpid()}"  # this process, as trials and claims name it
DONE_STATES = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


class GridWalk:
    """Score every configuration of the enumerated grid (or ``target`` of them) into the study,
    one COMPLETE trial per configuration, shared with other workers walking the same study.

    A configuration is scored first and then written in one go (``Study.add_trial``: the grid
    index as the ``config`` parameter, the objective values and the ``pool`` and ``score``
    attributes in one transaction). Asking Optuna for a trial instead and setting its parameter,
    each attribute and its state cost ~20 database transactions per configuration, and that was
    nearly all the time of an exhaustive search on PostgreSQL.

    Workers sharing a study do not write a configuration twice, without keeping a RUNNING trial
    per configuration: they work in batches, and the first record of a batch also claims the
    rest of that batch (until written) and the batch the worker scores next (attribute
    ``claim`` = {"worker": host:pid, "next": [index, ...]}; a worker's newest claim replaces its
    older ones). A batch with no such record to carry its claim (a worker's first, and the one
    after a batch it gave up entirely) is claimed by a FAIL trial without parameters. Before
    picking, a worker reads the trials added since its last look (Optuna's cached storage
    fetches only those) and skips the indices that are done or claimed by another live worker;
    after scoring a batch it looks again and gives up each configuration that another worker
    has written meanwhile or claimed in an earlier trial (trial numbers order the claims).
    Batches start at one configuration and grow while a batch takes under ``batch_seconds``,
    up to ``max_batch``.

    A claim stops holding when its worker is gone: at once for a dead process on this host,
    after ``stale_after`` seconds without a new claim from it for a worker elsewhere. A FAILED
    trial frees its index; a RUNNING one (a worker of an older muxlang) holds it while it runs.
    Indices are walked in a seeded random order (per process when shared, so workers rarely
    meet). The walk ends when ``target`` configurations are done (counting earlier runs': a
    resumed study does only what is left) and no other worker still holds one, or after
    ``patience`` seconds without progress (trials stuck RUNNING in a worker that died elsewhere
    without heartbeats)."""

    def __init__(self, study: optuna.Study, grid: Sequence[Config], target: int, seed: int = 0,
                 shared: bool = False, stale_after: float = 60.0, patience: float = 90.0,
                 poll: float = 0.2, max_batch: int = 64, batch_seconds: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        """``clock``: when claims were seen, for ``stale_after`` (tests pass their own)."""
        self.study, self.grid, self.n = study, grid, len(grid)
        self.target = min(target, self.n)
        self.shared = shared
        self.order = self.walk_order(self.n, seed, os.getpid() if shared else None)
        self.position = 0  # order[:position] are done or in ``passed``
        self.passed: set[int] = set()  # walked past while someone else held them
        self.done: set[int] = set()  # indices with a COMPLETE/PRUNED trial
        self.running: set[int] = set()  # indices of unfinished trials
        self.scan_from = 0  # trials before this position are finished and counted
        # worker -> (number of the trial that made its newest claim, the indices claimed)
        self.claims: dict[str, tuple[int, tuple[int, ...]]] = {}
        self.claim_since: dict[str, float] = {}  # worker -> when a claim of it was last seen
        self.stale_after, self.patience, self.poll = stale_after, patience, poll
        self.max_batch, self.batch_seconds = max_batch, batch_seconds
        self.host = socket.gethostname()
        self.distribution = optuna.distributions.IntDistribution(0, self.n - 1)
        self.clock = clock

    @staticmethod
    def walk_order(n: int, seed: int, worker: int | None = None) -> list[int]:
        """The seeded order a walk takes the grid's ``n`` indices in (its own per ``worker``
        process when shared, so workers rarely meet)."""
        import numpy as np

        key = [seed] if worker is None else [seed, worker]
        return np.random.default_rng(key).permutation(n).tolist()

    def refresh(self) -> None:
        trials = self.study.get_trials(deepcopy=False)
        now = self.clock()
        running: set[int] = set()
        settled = True
        for position in range(self.scan_from, len(trials)):
            t = trials[position]
            value = t.params.get("config")
            finished = t.state.is_finished()
            if value is not None:
                if t.state in DONE_STATES:
                    self.done.add(int(value))
                elif not finished:
                    running.add(int(value))
                # FAIL: the configuration was never scored; it is free to take again
            claim = t.user_attrs.get("claim") if finished else None
            if isinstance(claim, dict) and "worker" in claim:
                worker, raw = str(claim["worker"]), claim.get("next")
                following = tuple(int(i) for i in (
                    () if raw is None else raw if isinstance(raw, (list, tuple)) else [raw]))
                if worker not in self.claims or t.number > self.claims[worker][0]:
                    self.claims[worker] = (t.number, following)
                    self.claim_since[worker] = now
            if settled and finished:
                self.scan_from = position + 1
            else:
                settled = False
        self.running = running

    def _gone(self, worker: str, now: float) -> bool:
        owner, _, pid = worker.rpartition(":")
        if owner == self.host and pid.isdigit():
            return not _alive(int(pid))
        return now - self.claim_since.get(worker, now) > self.stale_after

    def held(self) -> dict[int, int]:
        """Indices other live workers hold: index -> trial number of the claim (-1: RUNNING)."""
        now = self.clock()
        out = {i: -1 for i in self.running}
        for worker, (number, indices) in self.claims.items():
            if worker == WORKER or not indices or self._gone(worker, now):
                continue
            for index in indices:
                if index not in self.done:
                    out[index] = min(number, out.get(index, number))
        return out

    def pick(self, held: dict[int, int], count: int, exclude: Iterable[int] = ()) -> list[int]:
        """Up to ``count`` free indices, ``exclude`` (held by this worker) left out."""
        exclude = set(exclude)
        count = min(count, self._room(held, exclude))
        out: list[int] = []
        for index in sorted(self.passed):  # held by others before: free again?
            if len(out) >= count:
                return out
            if index in self.done:
                self.passed.discard(index)
            elif index not in held and index not in exclude:
                self.passed.discard(index)
                out.append(index)
        while len(out) < count and self.position < self.n:
            index = self.order[self.position]
            self.position += 1
            if index in self.done:
                continue
            if index in held or index in exclude:
                self.passed.add(index)
                continue
            out.append(index)
        return out

    def _room(self, held: dict[int, int], mine: Iterable[int]) -> int:
        """How many more configurations may be started, besides ``mine`` (this worker's)?"""
        busy = {i for i in held if i not in self.done}
        busy.update(i for i in mine if i not in self.done)
        return max(0, self.target - len(self.done) - len(busy))

    def run(self, evaluate: Callable[[Config], tuple[list[float], dict]],
            callbacks: Sequence[Callable] = ()) -> None:
        self.refresh()
        batch = self._claimed(self.pick(self.held(), 1))
        size = 1
        last_progress, last_done, last_reap = time.monotonic(), len(self.done), 0.0
        cycle = time.monotonic()  # since the last claim was decided: writes, scoring, look
        while True:
            if not batch:  # nothing free: done, or the rest is held by other workers
                held = self.held()
                if len(self.done) >= self.target and not set(held) - self.done:
                    return
                now = time.monotonic()
                if len(self.done) != last_done:
                    last_progress, last_done = now, len(self.done)
                elif now - last_progress > self.patience:
                    return  # only trials stuck RUNNING in workers that died elsewhere are left
                if self.running and now - last_reap > 5.0:
                    fail_dead_workers(self.study)
                    last_reap = now
                time.sleep(self.poll)
                self.refresh()
                batch, size = self._claimed(self.pick(self.held(), 1)), 1
                cycle = time.monotonic()
                continue
            results = [(index, *evaluate(self.grid[index])) for index in batch]
            self.refresh()
            held = self.held()
            number, claimed = self.claims.get(WORKER, (None, ()))
            keep = []
            for index, values, attrs in results:
                if index in self.done:
                    continue  # another worker wrote it meanwhile
                if index in held and (index not in claimed or held[index] < number):
                    self.passed.add(index)  # claimed first elsewhere: theirs
                    continue
                keep.append((index, values, attrs))
            # a batch takes about ``batch_seconds`` at most, so a worker claims again that often
            now = time.monotonic()
            size = (min(size * 2, self.max_batch) if now - cycle < self.batch_seconds
                    else max(1, size // 2))
            cycle = now
            following = self.pick(held, size if keep else 1, exclude=[i for i, _, _ in keep])
            if not keep:  # nothing written to carry the claim
                following = self._claimed(following)
            for position, (index, values, attrs) in enumerate(keep):
                if position == 0 and self.shared:  # holds the rest of the batch till written
                    attrs = {**attrs, "claim": {"worker": WORKER, "next": [
                        i for i, _, _ in keep[1:]] + following}}
                trial = optuna.trial.create_trial(
                    state=optuna.trial.TrialState.COMPLETE, values=values,
                    params={"config": index}, distributions={"config": self.distribution},
                    user_attrs=attrs)
                self.study.add_trial(trial)
                self.done.add(index)
                for callback in callbacks:
                    callback(self.study, trial)
            batch = following

    def _claimed(self, batch: list[int]) -> list[int]:
        """Claim a batch no scored trial carries a claim for (a worker's first, or the one after
        a batch it gave up entirely), in a FAIL trial of its own: no parameters, so it frees or
        counts nothing, only orders this claim among the others (trial numbers). Unclaimed, two
        workers raced for such batches, and on a loaded machine often."""
        if self.shared and batch:
            self.study.add_trial(optuna.trial.create_trial(
                state=optuna.trial.TrialState.FAIL,
                user_attrs={"claim": {"worker": WORKER, "next": list(batch)}}))
        return batch


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def fail_dead_workers(study: optuna.Study) -> int:
    """Mark FAIL the RUNNING trials whose worker is gone, so their configurations are tried again
    and nobody waits for them.

    A worker on this host is gone when its process no longer exists (Ctrl-C during a database
    write, ``kill -9``): found at once from the ``worker`` attribute (host:pid) each trial sets
    first. Workers on other hosts are found by Optuna's heartbeats once their grace period
    (``grace_period`` seconds without a heartbeat) has passed."""
    host = socket.gethostname()
    failed = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker", "")
        owner, _, pid = worker.rpartition(":")
        if owner != host or not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        try:
            study.tell(t.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
            failed += 1
        except (ValueError, RuntimeError):  # finished meanwhile (another worker reaped it)
            pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    return failed


def wait_for_running(study: optuna.Study, timeout: float = 60.0) -> None:
    """Let trials other workers are still running finish, so every worker reports the same
    winner. Trials of dead workers on this host are failed at once; a worker that died on
    another host leaves a RUNNING trial until its heartbeat goes stale: give up after
    ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fail_dead_workers(study)
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        if not running:
            return
        time.sleep(0.2)
