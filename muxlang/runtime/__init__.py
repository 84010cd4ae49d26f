"""The runtime: HTTP backends and the executor of compiled plans.

- ``Runtime`` (request layer: backends, limits, retries, n batching, cache) and ``PlanExecutor``
  (record layer: walks ``compiler.build_plan``'s DAG for one record) — ``muxlang.runtime.executor``;
- ``run_records`` (bounded, ordered streaming of JSONL records) — ``muxlang.runtime.stream``;
- samples, their keys and the cache protocol (``Sample``, ``SampleFailure``, ``SampleId``,
  ``SampleCache``, ``NullCache``, ``MemoryCache``) live in ``muxlang.samples``, prompt rendering
  (``render``) in ``muxlang.prompts``: below the runtime, because the store uses them too.

Use (what ``muxlang run`` does)::

    from muxlang.compiler import build_plan
    from muxlang.runtime.executor import PlanExecutor, Runtime, backends_of
    from muxlang.runtime.stream import run_records, read_lines

    runtime = Runtime(backends_of(runnable), urls={"local": "http://..."}, concurrency=None,
                      rate=None, cache=NullCache())          # or the store's StoreCache
    async with runtime:
        # one record:
        result = await PlanExecutor(build_plan(spec, runnable), runtime).run_record(record)
        result.output()                                      # the JSON line of `muxlang run`
        # raw samples (collect): one Sample or SampleFailure per index, cache first
        samples = await runtime.sample(model, render(task, record), [0, 1, 2])

Output line keys: ``id`` (when the record has one), ``answer`` (the extracted text of the
winner's first sample whose key is the selected key), ``model`` (winning pool member), ``confidence``,
``votes`` (member → extracted answers in sample order; failed members absent), ``missing``,
``error``, ``tokens`` {input, output} (null when the server reports no usage), ``latency`` (seconds,
the record's wall time); when relevant also ``failures`` (member → message), ``scores`` (member →
confidence), ``path`` (winner down to its model, for nested muxes), ``cached`` (samples served from
the cache), and for cascades ``step`` (the mux whose answer it is) and ``steps`` (every step run).

Nothing is imported here, so ``import muxlang.runtime`` stays cheap.
"""
