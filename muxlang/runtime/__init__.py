"""The runtime: HTTP backends, the sample cache protocol, and the executor of compiled plans.

- ``Runtime`` (request layer: backends, limits, retries, n batching, cache) and ``PlanExecutor``
  (record layer: walks ``compiler.build_plan``'s DAG for one record) — ``muxlang.runtime.executor``;
- ``run_records`` (bounded, ordered streaming of JSONL records) — ``muxlang.runtime.stream``;
- ``Sample``, ``SampleFailure``, ``SampleKey``, ``SampleCache``, ``NullCache``, ``MemoryCache`` —
  ``muxlang.runtime.samples``.

Nothing heavy is imported here, so ``import muxlang.runtime`` stays cheap.
"""
from muxlang.runtime.samples import (MemoryCache, NullCache, Sample, SampleCache, SampleFailure,
                                     SampleKey, sample_keys)

__all__ = ["MemoryCache", "NullCache", "Sample", "SampleCache", "SampleFailure", "SampleKey",
           "sample_keys"]
