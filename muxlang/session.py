"""The Python API: load specs, and run, collect, evaluate and tune them through one ``Session``.

::

    import muxlang

    spec = muxlang.load("specs/gsm8k.mux")           # raises muxlang.SpecError (diagnostics)
    session = muxlang.Session(store="muxlang.sqlite", backends={"local": "http://gpu:8000/v1"})
    for result in session.run(spec, [{"id": 1, "question": "2 + 2?"}]):
        print(result.answer, result.model, result.confidence)
    report = session.evaluate(spec, "gsm8k-test", validation="gsm8k-val")
    tuned = session.tune(spec, "gsm8k-val", split=0.5)

The command line is a thin layer over this module: ``muxlang run`` streams files through a
``Session.runner``, ``collect`` drives a ``Session.collection``, ``eval`` prints
``Session.evaluate``'s report and ``tune`` ``Session.tune``'s result. What is decided (which
store, which tie-break accuracies, which samples to draw) is decided here, once for both.

Library code never prints: warnings go to the session's ``warn`` callback (default: Python's
``warnings.warn`` with ``MuxWarning``) and, where a result has one, into its ``warnings`` list.

Importing this module is cheap (the spec front end only); the runtime, the store, the evaluator
and the optimizer are imported by the methods that use them.
"""
from __future__ import annotations

import asyncio
import os
import time
import warnings as _warnings
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import (Any, AsyncIterable, AsyncIterator, Callable, Iterable, Mapping, Optional,
                    Sequence, Union)

from muxlang import ir
from muxlang.errors import DatasetError, MuxError, SpecError, did_you_mean, shorten
from muxlang.results import (CollectResult, EvalReport, RecordResult, RunInfo, TuneResult)

__all__ = ["Spec", "SpecError", "load", "loads", "Session", "Runner", "Collection", "MuxWarning",
           "tie_break_accuracies"]

Records = Union[Iterable[Any], AsyncIterable[Any]]


class MuxWarning(UserWarning):
    """A warning from muxlang (ties that cannot go by validation accuracies, a capped budget...)."""


# ------------------------------------------------------------------------------------------------
# specs
class Spec(ir.Spec):
    """A checked spec (``muxlang.ir.Spec``) that prints as a short summary.

    ``backends``, ``models``, ``tasks``, ``muxes``, ``cascades``, ``tunes``: name → declaration;
    ``path`` and ``text``: the root file; ``runnable(name=None)``: the mux or cascade to run.
    """

    @classmethod
    def of(cls, spec: ir.Spec) -> "Spec":
        """The same checked spec as a ``Spec`` (the declarations are shared, not copied)."""
        if isinstance(spec, cls):
            return spec
        made = cls.__new__(cls)
        made.__dict__.update(spec.__dict__)
        return made

    def __repr__(self) -> str:
        def names(table: Mapping[str, Any]) -> str:
            return "[" + ", ".join(table) + "]"

        return (f"<Spec {self.path!r}: backends {names(self.backends)}, models "
                f"{names(self.models)}, muxes {names(self.muxes)}"
                + (f", cascades {names(self.cascades)}" if self.cascades else "")
                + (f", tunes {names(self.tunes)}" if self.tunes else "") + ">")

    def __str__(self) -> str:
        lines = [f"Spec {self.path}"]
        lines += [f"  backend {b.name}: {b.kind}" + (f" {b.url}" if b.url else "")
                  for b in self.backends.values()]
        lines += [f"  model {m.name}: {m.id!r} on {m.backend.name}, temperature {m.temperature:g}"
                  + (f", accuracy {m.accuracy:g}" if m.accuracy is not None else "")
                  for m in self.models.values()]
        for mux in self.muxes.values():
            pool = ", ".join(f"{p.name} * {p.samples}" if p.is_model else p.name
                             for p in mux.pool)
            lines.append(f"  mux {mux.name}: {mux.rule} over [{pool}], task {mux.task.name}, "
                         f"tie-break {mux.tie_break}"
                         + (f" (validation {mux.validation})" if mux.validation else ""))
        for cascade in self.cascades.values():
            lines.append(f"  cascade {cascade.name}: "
                         f"[{', '.join(s.name for s in cascade.steps)}] threshold "
                         f"{cascade.threshold:g}")
        for tune in self.tunes.values():
            lines.append(f"  tune {tune.name}: mux {tune.mux.name}, "
                         f"{len(tune.candidates)} candidates, samples "
                         f"{tune.samples[0]}..{tune.samples[1]}")
        try:
            lines.append(f"  runs by default: {self.runnable().name}")
        except KeyError:
            pass
        return "\n".join(lines)


def load(path: Union[str, os.PathLike]) -> Spec:
    """Load, parse and check a spec file and its imports (what ``muxlang check`` checks).

    Raises ``SpecError``; its ``diagnostics`` carry ``file``, ``line``, ``column``, ``message``
    (and ``hint``) for every error found."""
    from muxlang.lang import load_spec

    return Spec.of(load_spec(path))


def loads(text: str, name: str = "<string>") -> Spec:
    """Check spec text; ``name`` is the file name its diagnostics give. Imports of ``std.*`` work,
    and quoted file imports are read relative to the working directory."""
    from muxlang.lang import check_text

    return Spec.of(check_text(text, name))


def _spec(spec: Union[ir.Spec, str, os.PathLike]) -> ir.Spec:
    if isinstance(spec, ir.Spec):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        return load(spec)
    raise TypeError(f"expected a Spec or the path of a .mux file, not {type(spec).__name__}")


def runnable_of(spec: ir.Spec, mux: Union[str, ir.Mux, ir.Cascade, None]) -> ir.Runnable:
    """The mux or cascade ``mux`` names (default: the last one the spec declares)."""
    if isinstance(mux, (ir.Mux, ir.Cascade)):
        return _checked_policies(mux)
    try:
        return spec.runnable(mux)
    except KeyError:
        pass
    names = [*spec.muxes, *spec.cascades]
    if mux is None:
        raise MuxError(f"{spec.path}: declares no mux or cascade")
    hint = did_you_mean(mux, names)
    raise MuxError(f"{spec.path}: no mux or cascade named '{mux}'"
                   + (f"; {hint}" if hint else
                      f" (there are: {', '.join(names)})" if names else ""))


def _checked_policies(runnable: ir.Runnable) -> ir.Runnable:
    """A mux or cascade built in Python (not through the checker): its muxes' ``adaptive``
    policies must be ones the semantics run, over rules they know how to stop for."""
    from muxlang.semantics import policy_of

    for mux in ir.muxes_in(runnable):
        try:
            policy = policy_of(mux.adaptive)
        except ValueError as error:
            raise MuxError(f"mux '{mux.name}': {error}") from None
        if policy != mux.adaptive:
            raise MuxError(f"mux '{mux.name}': adaptive {mux.adaptive!r} is written "
                           f"{policy!r}")
        problem = ir.adaptive_rule_problem(policy, mux.rule.name)
        if problem is not None:
            raise MuxError(f"mux '{mux.name}': {problem}")
    return runnable


def tune_of(spec: ir.Spec, name: Optional[str]) -> ir.Tune:
    """The tune block ``name`` names (default: the last one the root file declares)."""
    if not spec.tunes:
        raise MuxError(f"{spec.path} has no tune block")
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


# ------------------------------------------------------------------------------------------------
# tie-breaks: the same validation accuracies for `run`, `Session.run` and `eval`
def store_exists(url: Optional[str]) -> bool:
    """Whether the store ``url`` names (None: the default rules) may hold data: a SQLite file
    that exists, or any server URL. Nothing is created."""
    from muxlang.store.urls import resolve_url

    resolved = resolve_url(url)
    return not (resolved.startswith("sqlite:///")
                and not Path(resolved.split(":///", 1)[1]).exists())


def tie_break_accuracies(spec: ir.Spec, runnable: ir.Runnable, store: Any = None,
                         store_url: Optional[str] = None) -> RunInfo:
    """Validation accuracies (model → accuracy) for the muxes whose ties go by accuracy.

    A mux's ``validation`` names a store dataset: the accuracies are measured there exactly as
    ``eval`` measures them (``muxlang.evaluation.validation_accuracies``), in ``store`` or else
    the store ``store_url`` names (None: the default rules) when it exists; none is created. A
    model measured there wins over an ``accuracy`` typed on it, as in eval. When they cannot be
    measured the run goes on, and ``warnings`` say that ties go by typed accuracies or pool order
    rather than silently breaking ties differently from the figures eval and tune report.
    """
    info = RunInfo(mux=runnable.name)
    wanted = [mux for mux in ir.muxes_in(runnable)
              if mux.tie_break == "accuracy" and mux.validation]
    if not wanted:
        return info
    opened = None
    if store is None:
        if not store_exists(store_url):
            from muxlang.store.urls import resolve_url

            where = resolve_url(store_url)  # a SQLite file that does not exist: no password
            for mux in wanted:
                info.warnings.append(
                    f"mux '{mux.name}': validation dataset '{mux.validation}' needs the sample "
                    f"store, and there is none at {where}; ties go by typed accuracies, "
                    "else pool order")
            return info
        from muxlang.store import Store

        store = opened = Store(store_url, must_exist=True)  # read only: nothing created
    from muxlang.evaluation import validation_accuracies

    try:
        for mux in wanted:
            models = [m.member for m in mux.pool if m.is_model]
            if store.get_dataset(mux.validation) is None:
                info.warnings.append(
                    f"mux '{mux.name}': validation dataset '{mux.validation}' is not in store "
                    f"{store.display_url} (`muxlang collect` it first); ties go by typed "
                    "accuracies, else pool order")
                continue
            measured, sources, _ = validation_accuracies(store, spec, mux, models, None)
            for model in models:
                value = measured.get(model.name)
                if value is not None and sources[model.name].startswith("store"):
                    info.accuracies.setdefault(model.name, value)
            info.measured[mux.name] = {m.name: measured.get(m.name) for m in models}
            info.datasets[mux.name] = mux.validation
    finally:
        if opened is not None:
            opened.close()
    return info


def describe_tie_breaks(info: RunInfo) -> list[str]:
    """One line per mux whose tie-break accuracies were measured (what ``muxlang run`` says)."""
    lines = []
    for mux, measured in info.measured.items():
        shown = ", ".join(f"{name} {100 * value:.1f}%" if value is not None else f"{name} (none)"
                          for name, value in measured.items())
        lines.append(f"tie-breaks of mux '{mux}': validation accuracies on "
                     f"{info.datasets[mux]}: {shown}")
    return lines


def to_record_result(result: Any) -> RecordResult:
    """The API's ``RecordResult`` for the executor's result of one record."""
    out = result.output()
    return RecordResult.from_output(out, out.get("text"))


# ------------------------------------------------------------------------------------------------
# the session
def _run_sync(make: Callable[[], Any]) -> Any:
    """Run the coroutine ``make()`` returns to the end, also from inside a running event loop
    (a notebook): then in a thread of its own, with its own loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        from muxlang.runtime.loop import run as run_loop

        return run_loop(make())
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="muxlang") as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


class Session:
    """Where samples come from and go: the sample store, backend URL overrides, runtime limits.

    ``store``: a store URL (``postgresql://...``) or SQLite path; None takes the default rules
    (``$MUXLANG_STORE``, else ``./muxlang.sqlite``). Nothing is created until a call needs it:
    ``run`` stores samples only when ``cache`` says so (default: when ``store`` was given),
    ``evaluate`` and ``tune`` read an existing store, ``collect`` creates it.

    ``backends``: ``{backend name: URL}`` overrides, like ``--backend NAME=URL`` (keys still
    come from each backend's ``api_key`` variable, or ``MUXLANG_BACKEND_<NAME>_KEY``).

    Runtime knobs, as the command line's: ``concurrency`` and ``rate`` (requests per second) per
    backend override the spec's; ``in_flight`` bounds the records in progress at once (default:
    from the concurrency). ``warn(message)`` receives warnings (default: ``warnings.warn`` with
    ``MuxWarning``).
    """

    def __init__(self, store: Union[str, os.PathLike, None] = None,
                 backends: Optional[Mapping[str, str]] = None, *, cache: Optional[bool] = None,
                 concurrency: Optional[int] = None, rate: Optional[float] = None,
                 in_flight: Optional[int] = None,
                 warn: Optional[Callable[[str], None]] = None):
        from muxlang.envfile import load_env_file

        load_env_file()  # ./.env: values for env(...), the real environment wins
        self.store = None if store is None else os.fspath(store)
        self.backends = {str(k): str(v) for k, v in (backends or {}).items()}
        self.cache = (store is not None) if cache is None else bool(cache)
        for name, value in (("concurrency", concurrency), ("in_flight", in_flight)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise MuxError(f"{name} must be a whole number >= 1, not {value!r}")
        if rate is not None and not rate > 0:
            raise MuxError(f"rate must be > 0 requests per second, not {rate!r}")
        self.concurrency = concurrency
        self.rate = rate
        self.in_flight = in_flight
        self._warn = warn

    def __repr__(self) -> str:
        from muxlang.store.urls import redact_url, resolve_url

        try:
            where = redact_url(resolve_url(self.store))
        except MuxError as error:
            where = f"<{error}>"
        return (f"Session(store={where!r}, backends={self.backends!r}, cache={self.cache}"
                + "".join(f", {k}={getattr(self, k)!r}" for k in ("concurrency", "rate",
                                                                  "in_flight")
                          if getattr(self, k) is not None) + ")")

    def warn(self, message: str) -> None:
        if self._warn is not None:
            self._warn(message)
        else:
            _warnings.warn(message, MuxWarning, stacklevel=3)

    def open_store(self, *, must_exist: bool = False) -> Any:
        """The session's ``muxlang.store.Store`` (close it when done)."""
        from muxlang.store import Store

        return Store(self.store, must_exist=must_exist)

    # -- run ---------------------------------------------------------------------------------
    def runner(self, spec: Union[ir.Spec, str], mux: Union[str, ir.Runnable, None] = None, *,
               source: str = "<python>", share: Optional["Runner"] = None,
               serves: Iterable[ir.Runnable] = ()) -> "Runner":
        """A prepared run of one mux or cascade: ``async with runner:`` then
        ``await runner.run(record)`` per record (any order, concurrently), ``runner.close(status)``
        at the end. ``Session.arun`` and ``muxlang run`` are built on it.

        Several muxes answered at once (a server) share one runner's backends: ``serves`` lists
        the other muxes or cascades whose backends this runner connects too, and a runner made
        with ``share=owner`` uses the owner's backend connections (so each backend's concurrency
        and rate hold for all of them together), sample cache and store run. The owner opens and
        closes them (its ``async with`` and ``close``); a sharing runner's are no-ops."""
        return Runner(self, _spec(spec), mux, source, share=share, serves=serves)

    async def arun(self, spec: Union[ir.Spec, str], records: Records,
                   mux: Union[str, ir.Runnable, None] = None) -> AsyncIterator[RecordResult]:
        """Run ``records`` (dicts; an iterable or async iterable) through the mux or cascade
        ``mux`` (default: the last one declared), yielding one ``RecordResult`` per record in
        input order as soon as it and every earlier one are done; at most ``in_flight`` records
        are in progress at once. A record that cannot run gets a result with ``error``."""
        runner = self.runner(spec, mux)
        status = "failed"
        tasks: deque[asyncio.Task] = deque()
        try:
            failed = 0
            async with runner:
                limit = runner.in_flight
                async for record in _aiter(records):
                    if len(tasks) >= limit:
                        result = await tasks.popleft()
                        failed += result.error is not None
                        yield result
                    tasks.append(asyncio.ensure_future(runner.run(record)))
                while tasks:
                    result = await tasks.popleft()
                    failed += result.error is not None
                    yield result
            status = "ok" if not failed else "failed"
        except (asyncio.CancelledError, GeneratorExit, KeyboardInterrupt):
            status = "interrupted"
            raise
        finally:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            runner.close(status)

    def run(self, spec: Union[ir.Spec, str], records: Iterable[Any],
            mux: Union[str, ir.Runnable, None] = None) -> list[RecordResult]:
        """``arun`` to the end: the list of ``RecordResult``, in input order."""
        async def collect() -> list[RecordResult]:
            return [result async for result in self.arun(spec, records, mux)]

        return _run_sync(collect)

    # -- collect -----------------------------------------------------------------------------
    def collection(self, spec: Union[ir.Spec, str], dataset: str,
                   samples: Optional[int] = None, *, mux: Union[str, ir.Runnable, None] = None,
                   name: Optional[str] = None, lease: Optional[float] = None,
                   limit: Optional[int] = None) -> "Collection":
        """A prepared collection: what is stored and what is still to draw (``counts``), drawn by
        ``draw()`` / ``await adraw()``. Use as a context manager (it holds the store open).
        ``lease``: seconds a dead worker's claims keep others waiting (default 30). ``limit``:
        only the dataset's first ``limit`` items; ``muxlang.dryrun.collect_plan`` of it says
        what ``draw()`` would send."""
        return Collection(self, _spec(spec), dataset, samples, mux, name, lease=lease,
                          limit=limit)

    def collect(self, spec: Union[ir.Spec, str], dataset: str, samples: Optional[int] = None, *,
                mux: Union[str, ir.Runnable, None] = None, name: Optional[str] = None,
                on_progress: Optional[Callable[[CollectResult], None]] = None,
                lease: Optional[float] = None, limit: Optional[int] = None) -> CollectResult:
        """Store ``samples`` samples (default: each member's count in the pool) per pool model for
        every item of ``dataset`` (a JSONL file, registered by content hash, or the name of a
        dataset in the store). What is stored is never drawn again, so a collection that was
        interrupted is continued by calling it again. Models on replay backends are skipped.

        Collections of the same samples may run at once, in processes on one host or on many
        hosts sharing a PostgreSQL store: each claims what it draws (a lease in the store), so
        no sample is requested twice; a worker that dies loses its claims after ``lease`` seconds
        (default 30; at once when it was a process of this host) and the others draw them."""
        with self.collection(spec, dataset, samples, mux=mux, name=name,
                             lease=lease, limit=limit) as collection:
            return collection.draw(on_progress)

    # -- import ------------------------------------------------------------------------------
    def import_samples(self, samples: Union[str, os.PathLike], questions: Union[str, os.PathLike],
                       dataset: Optional[str] = None, *, replace: bool = False) -> Any:
        """Import recorded outputs (ZeroEval JSON lines ``{"id", "model", "sample",
        "temperature", "text"}``, optionally gzipped) with their questions file into the store,
        as ``muxlang import`` does; ``dataset`` defaults to the questions file's name. Returns
        ``muxlang.store.ImportResult`` (dataset, items, samples read and written, per model).
        A stored sample whose text differs from the file's is a ``DataError`` at its line and
        nothing is imported; ``replace=True`` replaces such samples (``samples_replaced``)."""
        from muxlang.store import import_samples

        store = self.open_store()
        try:
            return import_samples(store, samples, questions, dataset, replace=replace)
        finally:
            store.close()

    # -- evaluate ----------------------------------------------------------------------------
    def evaluate(self, spec: Union[ir.Spec, str], dataset: str, validation: Optional[str] = None,
                 mux: Union[str, ir.Runnable, None] = None, trials: Optional[int] = None, *,
                 seed: int = 0, limit: Optional[int] = None) -> EvalReport:
        """A mux or cascade and the paper's baselines on stored samples (no model is called).

        ``dataset`` and ``validation``: a dataset in the store or a questions file; validation
        accuracies (tie-breaks, Single-Best) from ``validation``, else the mux's ``validation``,
        else typed accuracies. ``trials``: seeded resampling trials (default: 100 when more
        samples are stored than the mux draws, else 1). ``limit``: only the dataset's first
        ``limit`` items."""
        from muxlang.evaluation import evaluate
        from muxlang.store import resolve_dataset

        spec = _spec(spec)
        runnable = runnable_of(spec, mux)
        if trials is not None and (not isinstance(trials, int) or trials < 1):
            raise MuxError(f"trials must be a whole number >= 1, not {trials!r}")
        _check_limit(limit)
        store = self.open_store(must_exist=True)
        try:
            info = resolve_dataset(store, dataset, runnable.task.gold)
            validation_name = None
            if validation:
                validation_name = resolve_dataset(store, validation, runnable.task.gold).name
            run_id = store.start_run("eval", {"dataset": info.name, "mux": runnable.name,
                                              "trials": trials, "seed": seed,
                                              "validation": validation_name},
                                     spec_path=str(spec.path), spec_text=spec.text)
            try:
                report = evaluate(store, spec, runnable, info, trials=trials, seed=seed,
                                  validation=validation_name, limit=limit)
            except BaseException as error:
                store.finish_run(run_id, "failed", {"error": _error_text(error)})
                raise
            store.finish_run(run_id, "ok", {"baselines": report["baselines"],
                                            "mux": report["mux"]["accuracy"]})
        finally:
            store.close()
        return EvalReport.from_dict(report)

    # -- tune --------------------------------------------------------------------------------
    def tune(self, spec: Union[ir.Spec, str], dataset: str, test: Optional[str] = None,
             split: Optional[float] = None, tune: Optional[str] = None, *, split_seed: int = 0,
             trials: Optional[int] = None, simulations: Optional[int] = None,
             seed: Optional[int] = None, sampler: Optional[str] = None,
             objectives: Optional[list[str]] = None, references: Optional[list[str]] = None,
             storage: Optional[str] = None, study: Optional[str] = None,
             progress: bool = False) -> TuneResult:
        """Search pools, per-model sample budgets and the rule of a tune block (default: the last
        one) on the stored samples of ``dataset`` (validation), and score the winner on ``test``
        (or, with ``split``, on the other part of ``dataset``). Unset options come from the tune
        block. ``references``: non-candidate models to compare with (default: every other model
        of the spec with stored samples). ``storage``/``study``: an Optuna RDB storage shared by
        workers (the study is resumed when it exists; the result is saved with it)."""
        from muxlang.optimizer.tuning import Options, tune_votes
        from muxlang.simulator import split_votes

        spec = _spec(spec)
        block = tune_of(spec, tune)
        if split is not None and test:
            raise MuxError("give either test (held-out test data) or split (a share of the "
                           "dataset held out), not both")
        if split is not None and not 0 < split < 1:
            raise MuxError(f"split must be between 0 and 1 (the validation share), not {split}")
        for label, value in (("trials", trials), ("simulations", simulations)):
            if value is not None and value < 1:
                raise MuxError(f"{label} must be at least 1, not {value!r}")
        storage = storage_url(storage)
        if storage and not study:
            study = f"{Path(spec.path).stem}-{block.name}"
        val, test_votes, store_url, content_hash, refs = self._tune_votes(
            spec, block, dataset, test, references)
        if split is not None:
            val, test_votes = split_votes(val, split, split_seed)
        options = Options(trials=trials, simulations=simulations, seed=seed, sampler=sampler,
                          objectives=list(objectives) if objectives else None, storage=storage,
                          study=study, references=refs, progress=progress)
        fingerprint = {"tune": block.name, "dataset": dataset, "split": split,
                       "split_seed": split_seed if split is not None else None, "test": test}
        result = tune_votes(spec, block, val, test_votes, options, warn=self.warn,
                            fingerprint=fingerprint)
        result.spec = str(spec.path)
        result.store = store_url
        result.dataset.content_sha256 = content_hash
        result.split = {"fraction": split, "seed": split_seed} if split is not None else None
        if storage and study:
            self._save_to_study(storage, study, result)
        return result

    def _tune_votes(self, spec: ir.Spec, block: ir.Tune, dataset: str, test: Optional[str],
                    references: Optional[list[str]]):
        """(val votes, test votes or None, store display URL, dataset content hash, references)."""
        from muxlang.store import load_votes, resolve_dataset

        store = self.open_store(must_exist=True)  # tune only reads the store
        try:
            candidates = list(block.candidates)
            names = {m.name for m in candidates}
            if references is not None:
                refs = []
                for r in references:
                    if r not in spec.models:
                        hint = did_you_mean(r, spec.models)
                        raise MuxError(f"reference {shorten(r)}: no such model in the spec"
                                       + (f"; {hint}" if hint else ""))
                    refs.append(spec.models[r])
            else:
                refs = [m for n, m in spec.models.items() if n not in names]
            gold = block.mux.task.gold
            info = resolve_dataset(store, dataset, gold)
            test_info = resolve_dataset(store, test, gold) if test else None
            if test_info is not None and test_info.content_hash == info.content_hash:
                # scoring the winner on the data it was chosen on would report a biased figure
                error = DatasetError(
                    f"the test data {shorten(test)} holds the same questions as the dataset "
                    f"{shorten(dataset)} searched on; give held-out test data, or a split "
                    f"(split=0.5: half of it held out)", dataset=test)
                error.same_as = dataset  # the command line says it with its flags
                raise error
            val = load_votes(store, spec, block.mux, info, models=candidates)
            test_votes = (load_votes(store, spec, block.mux, test_info, models=candidates)
                          if test_info else None)
            if test_votes is not None:
                shared = len(set(val.items) & set(test_votes.items))
                if shared:
                    self.warn(f"{shared} of the {len(test_votes.items)} questions of the test "
                              f"data {shorten(test)} are also in the dataset {shorten(dataset)} "
                              "searched on: the test figure is not fully held out")
            kept = []
            for ref in refs:
                try:
                    rv = load_votes(store, spec, block.mux, info, models=[ref])
                    rt = (load_votes(store, spec, block.mux, test_info, models=[ref])
                          if test_info else None)
                except MuxError:
                    if references is not None:
                        raise
                    continue
                if not any(rv.votes[ref.name][i] for i in range(len(rv.items))):
                    if references is not None:
                        self.warn(f"reference {ref.name}: no stored samples in '{info.name}'")
                    continue
                _merge_votes(val, rv, ref.name)
                if rt is not None:
                    _merge_votes(test_votes, rt, ref.name)
                kept.append(ref.name)
            return val, test_votes, store.display_url, info.content_hash, kept
        finally:
            store.close()

    def _save_to_study(self, storage: str, study: str, result: TuneResult) -> None:
        """Keep the result with the study, so ``muxlang report --storage --study`` can plot it."""
        import optuna

        try:
            stored = optuna.load_study(study_name=study, storage=storage)
            slim = {k: v for k, v in result.to_dict().items() if k != "points"}
            stored.set_user_attr("result", slim)
        except Exception as error:  # the study itself is complete; the picture data is a bonus
            first = (str(error).splitlines() or [type(error).__name__])[0]
            self.warn(f"could not save the result with study '{study}': "
                      + _error_text(first, 300))


def _error_text(error: object, limit: int = 500) -> str:
    """An exception's message as a run record or a warning keeps it: every key masked, *then*
    cut (``muxlang.runtime.secrets.clip``). An error may quote anything a server or a callback
    said, a key included; none reaches the store's runs table or a message unmasked."""
    from muxlang.runtime.secrets import clip

    return clip(error, limit)


def _check_limit(limit: Optional[int]) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise MuxError(f"limit must be a whole number >= 1, not {limit!r}")


def storage_url(url: Optional[str]) -> Optional[str]:
    """An Optuna storage URL: a plain path is a SQLite file, ``postgresql://`` uses psycopg 3;
    another scheme is a StoreError naming those two."""
    from muxlang.store.urls import study_storage_url

    return study_storage_url(url)


def _merge_votes(into: Any, other: Any, model: str) -> None:
    into.models.append(model)
    into.votes[model] = other.votes[model]
    for table in ("input_tokens", "output_tokens", "price_input", "price_output"):
        if model in getattr(other, table):
            getattr(into, table)[model] = getattr(other, table)[model]


async def _aiter(records: Records) -> AsyncIterator[Any]:
    if hasattr(records, "__aiter__"):
        async for record in records:  # type: ignore[union-attr]
            yield record
    else:
        for record in records:  # type: ignore[union-attr]
            yield record


# ------------------------------------------------------------------------------------------------
# a prepared run
class Runner:
    """One mux or cascade ready to run records: backends, the store as sample cache (when the
    session caches), and tie-break accuracies measured once (``info``; its ``warnings`` were
    also given to the session's ``warn``).

    ``async with runner:`` opens the backends' connections; inside, ``await runner.run(record)``
    gives a ``RecordResult`` (``await runner.run_record(record)`` the executor's own result, whose
    ``output()`` is the line ``muxlang run`` writes). ``close(status, summary)`` ends the run in
    the store (``ok``, ``failed``, ``interrupted``); it is called on errors by itself.
    """

    def __init__(self, session: Session, spec: ir.Spec, mux: Union[str, ir.Runnable, None],
                 source: str, *, share: Optional["Runner"] = None,
                 serves: Iterable[ir.Runnable] = ()):
        from muxlang.compiler import build_plan
        from muxlang.runtime.executor import PlanExecutor, Runtime, backends_of

        self.session = session
        self.spec = spec
        self.runnable = runnable_of(spec, mux)
        for name in session.backends:
            if name not in spec.backends:
                hint = did_you_mean(name, spec.backends)
                raise MuxError(f"backend URL override '{name}': the spec has no backend "
                               f"'{name}'" + (f"; {hint}" if hint else
                                              f" (backends: {', '.join(spec.backends)})"))
        plan = build_plan(spec, self.runnable)
        self._owner = share is None
        if share is not None:  # the owner's connections, cache and store run
            lacking = [b.name for b in backends_of(self.runnable)
                       if b.name not in share.runtime.clients]
            if lacking:
                raise MuxError(f"'{self.runnable.name}' calls backends {', '.join(lacking)}, "
                               f"which the runner of '{share.runnable.name}' it shares does not "
                               "connect to (list it in that runner's serves)")
            self.store, self.run_id, self._closed = share.store, share.run_id, True
            self.info = tie_break_accuracies(spec, self.runnable, self.store, session.store)
            for message in self.info.warnings:
                session.warn(message)
            self.runtime = share.runtime
            self.executor = PlanExecutor(plan, self.runtime, accuracies=self.info.accuracies)
            self.in_flight = self._in_flight()
            return
        used = backends_of(self.runnable)
        for other in serves:
            used += [b for b in backends_of(other) if b.name not in {u.name for u in used}]
        urls = {name: url for name, url in session.backends.items()
                if name in {b.name for b in used}}
        self.store = self.run_id = None
        cache = None
        if session.cache:
            from muxlang.store.cache import StoreCache

            self.store = session.open_store()
            self.run_id = self.store.start_run("run", {"mux": self.runnable.name,
                                                       "input": source},
                                               spec_path=str(spec.path), spec_text=spec.text)
            cache = StoreCache(self.store, self.run_id)
        self._closed = False
        try:
            self.info = tie_break_accuracies(spec, self.runnable, self.store, session.store)
            for message in self.info.warnings:
                session.warn(message)
            self.runtime = Runtime(used, urls=urls, concurrency=session.concurrency,
                                   rate=session.rate, cache=cache)
            self.executor = PlanExecutor(plan, self.runtime, accuracies=self.info.accuracies)
        except BaseException as error:
            self.close("failed", error=error)
            raise
        self.in_flight = self._in_flight()

    def _in_flight(self) -> int:
        return self.session.in_flight or max(
            16, 2 * -(-self.runtime.total_concurrency // max(1, self.executor.requests_per_record))
            + 8)

    @property
    def accuracies(self) -> dict[str, float]:
        return self.info.accuracies

    async def __aenter__(self) -> "Runner":
        if self._owner:
            await self.runtime.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._owner:
            await self.runtime.close()

    async def run_record(self, record: Any) -> Any:
        """The executor's result for one record (``.output()``: the ``muxlang run`` line)."""
        return await self.executor.run_record(record)

    async def run(self, record: Any) -> RecordResult:
        return RecordResult.from_output(self.line(record, await self.executor.run_record(record)))

    @property
    def scorer(self) -> Any:
        """The task's ``muxlang.scoring.Scorer``: gold and correctness of answers."""
        if getattr(self, "_scorer", None) is None:
            from muxlang.scoring import Scorer

            self._scorer = Scorer(self.runnable.task)
        return self._scorer

    def line(self, record: Any, result: Any, keep: Sequence[str] = ()) -> dict[str, Any]:
        """The ``muxlang run`` output object of one record: the executor's ``output()``, with
        ``gold`` and ``correct`` when the record holds the task's gold field and ``fields``
        (the record's values of ``keep``, those it has) when ``keep`` names any."""
        out = result.output()
        if self.scorer.has_gold(record) and not getattr(result, "bad_input", False):
            out["gold"], out["correct"] = self.scorer.score(record, out.get("answer"))
        if keep and isinstance(record, dict):
            out["fields"] = {name: record[name] for name in keep if name in record}
        return out

    @property
    def cache_hits(self) -> int:
        return self.runtime.cache_hits if hasattr(self, "runtime") else 0

    def close(self, status: str = "ok", summary: Optional[Mapping[str, Any]] = None, *,
              error: Optional[BaseException] = None) -> None:
        """End the run in the store (when it caches there) and close the store. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.store is None:
            return
        try:
            if error is not None:  # keys never reach the store, even in an unexpected error
                self.store.finish_run(self.run_id, "failed", {"error": _error_text(error)})
            else:
                self.store.finish_run(self.run_id, status,
                                      {"cache_hits": self.cache_hits, **(summary or {})})
        finally:
            self.store.close()


# ------------------------------------------------------------------------------------------------
# a prepared collection
@dataclass
class _Job:
    model: Any  # ir.Model
    messages: list[dict[str, str]]
    missing: list[int]
    key: Any = None  # muxlang.samples.SampleKey
    item: Any = None  # the record's id


def pool_members(runnable: ir.Runnable, k: Optional[int]) -> list[tuple[Any, Any, int]]:
    """(model, task, samples) for every model reachable from a mux or cascade, deduplicated."""
    found: dict[tuple[str, str], tuple[Any, Any, int]] = {}
    for mux, member in ir.model_members(runnable):
        count = k or member.samples
        key = (member.member.name, mux.task.name)
        if key not in found or found[key][2] < count:
            found[key] = (member.member, mux.task, count)
    return list(found.values())


def _claimed_cache(store: Any, run_id: Any) -> Any:
    """The runtime's cache for what a collection claimed: stores what arrives (as ``StoreCache``
    does), looks nothing up (the claim found these samples missing a moment ago)."""
    from muxlang.store.cache import StoreCache

    class Claimed(StoreCache):
        async def get(self, ids: Any) -> list[Any]:
            return [None] * len(ids)

    return Claimed(store, run_id)



class Collection:
    """A collection planned against the store: ``counts`` says what is wanted, stored and still
    to draw before anything is drawn; ``draw()`` (or ``await adraw()``) draws the rest, storing
    each request's samples as they arrive, and returns the final ``CollectResult``. Close it (or
    use ``with``) to end the run record and close the store."""

    def __init__(self, session: Session, spec: ir.Spec, dataset: str, samples: Optional[int],
                 mux: Union[str, ir.Runnable, None], name: Optional[str], *,
                 lease: Optional[float] = None, limit: Optional[int] = None):
        from muxlang.prompts import render
        from muxlang.samples import SampleKey
        from muxlang.store import load_dataset_file, resolve_dataset
        from muxlang.store.leases import DEFAULT_TTL

        if samples is not None and (not isinstance(samples, int) or samples < 1):
            raise MuxError(f"samples must be a whole number >= 1, not {samples!r}")
        if lease is not None and (isinstance(lease, bool) or not isinstance(lease, (int, float))
                                  or not 0 < lease < float("inf")):
            raise MuxError(f"lease must be a number of seconds > 0, not {lease!r}")
        _check_limit(limit)
        self.lease = float(lease) if lease is not None else DEFAULT_TTL
        self.leases: Any = None  # muxlang.store.leases.Leases, while drawing
        # on_samples(record id, model, messages, [Sample | SampleFailure]) as each request ends
        # (collect --log-samples: muxlang.sample_log.sample_object of each)
        self.on_samples: Optional[Callable[[Any, Any, Any, list], None]] = None
        self.session = session
        self.spec = spec
        self.runnable = runnable_of(spec, mux)
        self.samples = samples
        for override in session.backends:
            if override not in spec.backends:
                raise MuxError(f"backend URL override '{override}': the spec has no backend "
                               f"'{override}'")
        members = pool_members(self.runnable, samples)
        replay = [m for m, _, _ in members if m.backend.kind == "replay"]
        self.members = [entry for entry in members if entry[0].backend.kind != "replay"]
        counts = CollectResult(models=[m.name for m, _, _ in self.members])
        if replay:
            counts.notes.append("skipped (replay backend; use `muxlang import`): "
                                + ", ".join(m.name for m in replay))
        if not self.members:
            raise MuxError(f"{spec.path}: every pool model uses a replay backend: nothing to "
                           "collect")
        self.counts = counts
        self.store = session.open_store()
        self._closed = False
        self.run_id = None
        try:
            counts.store = self.store.display_url
            gold = self.members[0][1].gold or "answer"
            if name is None and not os.path.isfile(dataset):
                info = resolve_dataset(self.store, dataset, gold)  # a dataset in the store
            else:
                info = load_dataset_file(self.store, dataset, name=name, gold_field=gold)
            items = self.store.items(info)[:limit]  # limit None: every item
            counts.dataset, counts.items = info.name, len(items)
            jobs: list[tuple[Any, _Job]] = []
            for item in items:
                rendered: dict[str, Any] = {}
                for model, task, k in self.members:
                    if task.name not in rendered:
                        try:
                            rendered[task.name] = render(task, item.record)
                        except MuxError as error:
                            rendered[task.name] = None
                            counts.skipped.append(f"{item.key}: {error}")
                    messages = rendered[task.name]
                    if messages is None:
                        continue
                    key = SampleKey.for_model(model, messages)
                    jobs.append((key, _Job(model, messages, list(range(k)), key, item.key)))
            counts.skipped_items = len(counts.skipped)
            stored = self.store.get_samples_many([key for key, _ in jobs])
            self.todo: list[_Job] = []
            for key, job in jobs:
                k = len(job.missing)
                counts.wanted += k
                job.missing = self.store.missing_indices(key, k, stored[key.hash])
                counts.stored_before += k - len(job.missing)
                if job.missing:
                    self.todo.append(job)
            self.run_id = self.store.start_run("collect", {
                "dataset": info.name, "dataset_hash": info.content_hash, "samples": samples,
                "models": counts.models}, spec_path=str(spec.path), spec_text=spec.text)
        except BaseException:
            self.store.close()
            self._closed = True
            raise

    def __enter__(self) -> "Collection":
        return self

    def __exit__(self, kind: Any, error: Any, tb: Any) -> None:
        self.close(error=error)

    async def adraw(self, on_progress: Optional[Callable[[CollectResult], None]] = None
                    ) -> CollectResult:
        """Draw what is missing, storing each request's samples as they arrive;
        ``on_progress(counts)`` after each request. Cancelling it stops the collection: ``status``
        ``interrupted``.

        Other collections of the same samples may be drawing at the same time (other processes,
        other hosts on one store): a sample is drawn only under a lease this collection holds in
        the store (``muxlang.store.leases``), claimed a batch of requests ahead of the requests
        and renewed while they are in flight. What another worker holds is left to it and looked
        at again until it is stored (counted in ``from_cache``) or its lease expired (then drawn
        here)."""
        from muxlang.runtime.executor import Runtime, backends_of
        from muxlang.samples import Sample
        from muxlang.store.leases import Leases

        totals = self.counts
        started = time.perf_counter()
        if not self.todo:
            totals.seconds = round(time.perf_counter() - started, 3)
            return self._settle()
        backends = [b for b in backends_of(self.runnable) if b.kind != "replay"]
        urls = {n: u for n, u in self.session.backends.items() if n in {b.name for b in backends}}
        runtime = Runtime(backends, urls=urls, concurrency=self.session.concurrency,
                          rate=self.session.rate, cache=_claimed_cache(self.store, self.run_id))
        leases = self.leases = Leases(self.store, ttl=self.lease)

        jobs: dict[str, _Job] = {}  # by request key: two tasks may render the same prompt
        for job in self.todo:
            same = jobs.get(job.key.hash)
            if same is None:
                jobs[job.key.hash] = _Job(job.model, job.messages, list(job.missing), job.key,
                                          job.item)
            else:
                same.missing = sorted(set(same.missing) | set(job.missing))
        order = list(jobs)
        # workers that start together begin at different places, so their claims rarely meet
        shift = int.from_bytes(os.urandom(4), "big") % len(order)
        order = order[shift:] + order[:shift]
        workers = min(len(order), 2 * runtime.total_concurrency + 4)
        # claimed a little ahead of the requests, no more: what one worker holds and has not
        # started is what others cannot draw (and what waits for the lease after a kill)
        batch = max(4, min(32, workers // 4))
        ready: asyncio.Queue[Optional[_Job]] = asyncio.Queue(maxsize=2 * batch)
        released: list[tuple[str, int]] = []  # done or failed here: leases to delete
        tried: set[tuple[str, int]] = set()  # drawn or failed here: never claimed again
        poll = min(1.0, max(0.05, self.lease / 10))

        async def claim(hashes: list[str]) -> list[tuple[str, int]]:
            """Claim what ``hashes`` still miss; queue what this worker got. Returns the pairs
            other workers hold."""
            wanted = [(h, [i for i in jobs[h].missing if (h, i) not in tried]) for h in hashes]
            got = await asyncio.to_thread(leases.claim, wanted)
            if got.stored:
                tried.update(got.stored)
                totals.from_cache += len(got.stored)
                if on_progress is not None:
                    on_progress(totals)
            for h, indices in got.mine.items():
                job = jobs[h]
                tried.update((h, i) for i in indices)
                await ready.put(_Job(job.model, job.messages, indices, job.key, job.item))
            return got.held

        async def claimer() -> None:
            held: set[tuple[str, int]] = set()
            for start in range(0, len(order), batch):
                held.update(await claim(order[start:start + batch]))
            while held:  # another worker's: wait until stored there, or its lease expired
                await asyncio.sleep(poll)
                held = set(await claim(sorted({h for h, _ in held})))
            for _ in range(workers):
                await ready.put(None)

        async def one(job: _Job) -> None:
            results = await runtime.sample(job.model, job.messages, job.missing)
            if self.on_samples is not None:
                self.on_samples(job.item, job.model, job.messages, results)
            for result in results:
                released.append((job.key.hash, result.index))
                if isinstance(result, Sample):
                    totals.drawn += 1
                    totals.tokens_in += result.input_tokens or 0
                    totals.tokens_out += result.output_tokens or 0
                    totals.cost += result.spent(job.model.price_input, job.model.price_output)
                else:
                    totals.failed += 1
                    message = f"{job.model.name}: {result.error}"
                    totals.errors[message] = totals.errors.get(message, 0) + 1
            if on_progress is not None:
                on_progress(totals)

        async def worker() -> None:
            while True:
                job = await ready.get()
                if job is None:
                    return
                await one(job)

        async def upkeep() -> None:
            """Delete the leases of what is stored (or failed) in batches; renew the rest."""
            renewed = time.monotonic()
            while True:
                await asyncio.sleep(min(0.2, self.lease / 6))
                if released:
                    done = released[:]
                    del released[:len(done)]
                    await asyncio.to_thread(leases.release, done)
                if time.monotonic() - renewed >= self.lease / 3:
                    renewed = time.monotonic()
                    await asyncio.to_thread(leases.renew)

        try:
            async with runtime:
                tasks = [asyncio.ensure_future(upkeep()), asyncio.ensure_future(claimer()),
                         *(asyncio.ensure_future(worker()) for _ in range(workers))]
                try:
                    await asyncio.gather(*tasks[1:])
                finally:  # on an error or a cancel, nothing is left running
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
        except asyncio.CancelledError:
            totals.status = "interrupted"
        finally:
            totals.seconds = round(time.perf_counter() - started, 3)
            self._release_leases()
        return self._settle()

    def draw(self, on_progress: Optional[Callable[[CollectResult], None]] = None
             ) -> CollectResult:
        """``adraw`` to the end (Ctrl-C: ``status`` ``interrupted``, what was stored stays)."""
        try:
            return _run_sync(lambda: self.adraw(on_progress))
        except KeyboardInterrupt:
            self.counts.status = "interrupted"
            return self._settle()

    def _settle(self) -> CollectResult:
        if self.counts.status == "ok" and self.counts.failed:
            self.counts.status = "failed"
        self.close()
        return self.counts

    def _release_leases(self) -> None:
        """Give up every lease this collection still holds (done, failed or interrupted)."""
        leases, self.leases = self.leases, None
        if leases is not None:
            try:
                leases.release_all()
            except MuxError:
                pass  # the store is gone: the leases expire by themselves

    def close(self, error: Optional[BaseException] = None) -> None:
        """End the run record (``counts.status``, or failed with ``error``); close the store."""
        if self._closed:
            return
        self._closed = True
        try:
            self._release_leases()
            if error is not None:
                self.store.finish_run(self.run_id, "failed", {"error": _error_text(error)})
            else:
                self.store.finish_run(self.run_id, self.counts.status, self.counts.summary())
        finally:
            self.store.close()
