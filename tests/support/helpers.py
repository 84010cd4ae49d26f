"""Helpers for runtime tests: spec text pointing at a scripted server, JSONL reading."""
from __future__ import annotations

import json
import textwrap

KEY_ENV = "MUXLANG_TEST_SECRET_KEY"
KEY = "sk-test-7f3a9c1e5b2d4f60a8e1c3b5d7f9a2c4"


def spec_text(url: str, *, kind: str = "openai", models=("a", "b", "c"), samples: int = 3,
              backend: str = "", extra: str = "", pool: str | None = None,
              accuracies: dict | None = None, key: bool = True, mux_extra: str = "") -> str:
    """A spec with one backend, models named as given (ids 'id-NAME'), one task, mux 'pool'."""
    accuracies = accuracies or {}
    parts = [f"""
backend local {{
  kind = {kind}
  url = "{url}"
  {'api_key = env("' + KEY_ENV + '")' if key else ''}
  concurrency = 8
  timeout = 2s
  retries = 2
  retry_time = 30s
  {backend}
}}
"""]
    for name in models:
        acc = f"accuracy = {accuracies[name]}" if name in accuracies else ""
        parts.append(f"""
model {name} {{
  backend = local
  id = "id-{name}"
  seed = 100
  {acc}
}}
""")
    parts.append("""
task t {
  system = "Answer with #### N."
  user = "Question: {question}"
  extract = final_number
  equivalence = numeric
}
""")
    if pool is None:
        pool = ", ".join(f"{name} * {samples}" for name in models)
    parts.append(f"""
mux pool {{
  task = t
  pool = [{pool}]
  {mux_extra}
}}
""")
    parts.append(extra)
    return textwrap.dedent("\n".join(parts))


def read_jsonl(path) -> list[dict]:
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]
