"""Interop with a real LiteLLM proxy (issue 15), on loopback, with mock models and a master key.

The proxy lives in its own virtual environment (``.venv-litellm``, made by ``.ci/run``; or the
``litellm`` executable named by ``$MUXLANG_LITELLM``): its dependencies must not decide
muxlang's. Where it is not installed, these tests skip and say why. Models are configured with
``mock_response``: the proxy answers without any provider, and is told to use its bundled cost
map (no network). Covered here: a wrong key and an unknown model (item 1), a model group's 429
pausing that model only (item 2), the reported cost per sample, kept in the store and read by
``eval`` (item 5), and a full run of records through the proxy with n > 1. A reply with no
content (item 4) and the 503 of an in-flight cap (item 3) cannot be made by a mock model; the
scripted server covers them (``test_gateway.py``).
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from muxlang import ir
from muxlang.runtime.backends import RetryPolicy
from muxlang.runtime.executor import Runtime
from muxlang.samples import Sample, SampleFailure

ROOT = Path(__file__).resolve().parents[2]
MASTER_KEY = "sk-litellm-master-test-5e2c"
KEY_ENV = "MUXLANG_TEST_LITELLM_KEY"
FAST = RetryPolicy(base=0.05, cap=0.1)

CONFIG = """
model_list:
  - model_name: m1
    litellm_params:
      model: openai/m1
      api_key: not-used
      mock_response: "Let me think. #### 2"
      input_cost_per_token: 0.000001
      output_cost_per_token: 0.000002
  - model_name: m2
    litellm_params:
      model: openai/m2
      api_key: not-used
      mock_response: "#### 3"
  - model_name: limited
    litellm_params:
      model: openai/limited
      api_key: not-used
      mock_response: "litellm.RateLimitError"
litellm_settings:
  num_retries: 0
router_settings:
  num_retries: 0
general_settings:
  master_key: {key}
"""


def _executable() -> str | None:
    named = os.environ.get("MUXLANG_LITELLM")
    if named:
        return named if shutil.which(named) else None
    local = ROOT / ".venv-litellm" / "bin" / "litellm"
    return str(local) if local.exists() else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    executable = _executable()
    if executable is None:
        pytest.skip("LiteLLM's proxy is not installed (.ci/run installs litellm[proxy] into "
                    ".venv-litellm; that install failed or was not run, or $MUXLANG_LITELLM "
                    "names no executable)")
    folder = tmp_path_factory.mktemp("litellm")
    config = folder / "config.yaml"
    config.write_text(CONFIG.format(key=MASTER_KEY))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "DATABASE_URL"))}
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_TELEMETRY="False",
               NO_PROXY="*", no_proxy="*")
    log = (folder / "proxy.log").open("w")
    process = subprocess.Popen([executable, "--config", str(config), "--host", "127.0.0.1",
                                "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                               env=env, cwd=folder, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                pytest.skip(f"LiteLLM's proxy exited at start ({process.returncode}): "
                            + (folder / "proxy.log").read_text()[-500:])
            try:
                with urllib.request.urlopen(url + "/health/liveliness", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.skip("LiteLLM's proxy did not answer within 180 s")
                time.sleep(0.5)
        yield url + "/v1"
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def backend(url: str, **extra) -> ir.Backend:
    return ir.Backend(name="gw", kind="openai", url=url, api_key_env=KEY_ENV, concurrency=8,
                      timeout=30.0, retries=2, retry_time=30.0, **extra)


def run_records(url: str, ids: list[str], records: int = 20, k: int = 3, **extra):
    """``records`` records x the models ``ids`` x ``k`` samples through one runtime."""
    b = backend(url, **extra)
    models = [ir.Model(name=i, backend=b, id=i, seed=1) for i in ids]
    said: list[str] = []

    async def go():
        async with Runtime([b], policy=FAST) as runtime:
            client = runtime.clients["gw"]
            client.notify = said.append
            results = await asyncio.gather(*(
                runtime.sample(m, [{"role": "user", "content": f"Question {r}"}],
                               list(range(k)))
                for r in range(records) for m in models))
            return results, client

    results, client = asyncio.run(go())
    return results, client, said


def test_a_run_through_the_proxy_batches_and_reads_usage_and_cost(proxy, monkeypatch):
    monkeypatch.setenv(KEY_ENV, MASTER_KEY)
    results, client, said = run_records(proxy, ["m1", "m2"])
    samples = [s for record in results for s in record]
    assert all(isinstance(s, Sample) for s in samples) and not said
    assert client.stats.probes == {"m1": True, "m2": True}  # the proxy returns n choices
    m1 = [s for s in samples if s.text.endswith("#### 2")]
    assert len(m1) == 60 and all(s.input_tokens is not None for s in samples)
    # item 5: the proxy's x-litellm-response-cost, shared by the choices of a reply
    assert all(s.cost is not None and s.cost > 0 for s in m1)
    assert sum(s.cost for s in m1[:3]) == pytest.approx(
        1e-6 * sum(s.input_tokens for s in m1[:3]) + 2e-6 * sum(s.output_tokens
                                                                 for s in m1[:3]))


@pytest.mark.parametrize("n", [None, False])
def test_a_wrong_key_stops_the_backend_after_its_first_answer(proxy, monkeypatch, n):
    monkeypatch.setenv(KEY_ENV, "sk-not-the-master-key-0000")
    results, client, said = run_records(proxy, ["m1", "m2", "m1-typo"], supports_n=n)
    assert all(isinstance(s, SampleFailure) for record in results for s in record)
    stops = [line for line in said if "stopped taking requests" in line]
    assert len(stops) == 1 and "No connected db." in stops[0]
    # what was in flight when the first answer came (8 at most), then nothing: 240 (n = auto)
    # or 180 (n = false) requests before
    assert client.stats.requests <= 8 + 3
    assert "sk-not-the-master-key-0000" not in " ".join(said)


def test_an_unknown_model_stops_that_model_only(proxy, monkeypatch):
    monkeypatch.setenv(KEY_ENV, MASTER_KEY)
    results, client, said = run_records(proxy, ["m1", "m-unknown"])
    by_model = {"m1": [], "m-unknown": []}
    for i, record in enumerate(results):
        by_model[["m1", "m-unknown"][i % 2]].extend(record)
    assert all(isinstance(s, Sample) for s in by_model["m1"])
    assert all(isinstance(s, SampleFailure) for s in by_model["m-unknown"])
    stops = [line for line in said if "stopped taking requests" in line]
    assert len(stops) == 1 and "Invalid model name passed in model=m-unknown" in stops[0]
    assert "the server offers" in stops[0] and "m1" in stops[0]  # its GET /v1/models
    assert client.stats.requests <= 20 + 8 + 1  # m1's 20, what was in flight, then one


def test_a_model_groups_429_pauses_that_model_only(proxy, monkeypatch):
    monkeypatch.setenv(KEY_ENV, MASTER_KEY)
    results, client, said = run_records(proxy, ["m1", "limited"], records=4, k=1)
    assert client.stats.rate_limited >= 1
    assert set(client._cooldowns) <= {"limited"}  # LiteLLM names the model group
    healthy = [s for i, record in enumerate(results) if i % 2 == 0 for s in record]
    assert all(isinstance(s, Sample) for s in healthy)


def test_the_proxys_reported_cost_reaches_the_store_and_eval(proxy, monkeypatch, tmp_path,
                                                             capsys):
    """``muxlang collect`` through the proxy keeps its x-litellm-response-cost per sample (schema
    v6), and ``eval --json`` takes m1's cost per sample from them (``cost_source: gateway``)."""
    from muxlang.cli import main
    from muxlang.store import Store
    from muxlang.store import schema as s

    monkeypatch.setenv(KEY_ENV, MASTER_KEY)
    spec = tmp_path / "gw.mux"
    spec.write_text(f"""
backend gw {{ kind = openai  url = "{proxy}"  api_key = env("{KEY_ENV}")  retries = 2 }}
model m1 {{ backend = gw  id = "m1"  seed = 1 }}
task t {{ user = "Question {{question}}"  extract = final_number  equivalence = numeric }}
mux one {{ task = t  pool = [m1 * 3] }}
""")
    records = tmp_path / "q.jsonl"
    records.write_text("".join(f'{{"id": {i}, "question": "{i}", "answer": "2"}}\n'
                               for i in range(4)))
    store = tmp_path / "gw.sqlite"
    assert main(["collect", str(spec), "--dataset", str(records), "--samples", "3",
                 "--store", str(store), "--no-progress"]) == 0
    capsys.readouterr()
    with Store(str(store), must_exist=True) as opened, opened.engine.connect() as conn:
        rows = conn.execute(s.samples.select()).mappings().all()
    assert len(rows) == 12 and all(r["cost"] is not None and r["cost"] > 0 for r in rows)
    replies: dict[str, list] = {}  # one request (n = 3) per record: its cost shared by three
    for row in rows:
        replies.setdefault(row["key_hash"], []).append(row)
    for reply in replies.values():  # the proxy's prices x the reply's tokens
        assert sum(r["cost"] for r in reply) == pytest.approx(
            sum(1e-6 * r["tokens_in"] + 2e-6 * r["tokens_out"] for r in reply))
    assert main(["eval", str(spec), "--dataset", str(records), "--store", str(store),
                 "--json"]) == 0
    m1 = json.loads(capsys.readouterr().out)["models"]["m1"]
    assert m1["cost_source"] == "gateway"
    assert m1["cost_per_sample"] == pytest.approx(sum(r["cost"] for r in rows) / len(rows))
