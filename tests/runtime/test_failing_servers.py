"""Servers that die mid-run, come back, or were never there (issue 10, items 9, 10 and 11): a
circuit breaker per backend, records answered without every sample made visible (``--strict``),
and one line per backend on the terminal instead of a flood."""
from __future__ import annotations

import asyncio
import re
import socket
import threading

from muxlang import ir
from muxlang.cli import main
from muxlang.runtime.backends import RetryPolicy
from muxlang.runtime.executor import Runtime
from muxlang.samples import Sample, SampleFailure
from tests.support.helpers import read_jsonl, spec_text
from tests.support.scripted_server import ScriptedServer, default_answer


def messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Question {i}"}]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop_after(server: ScriptedServer, answered: int):
    """An answer function that stops ``server`` (from another thread) once it has answered
    ``answered`` requests: the server dies in the middle of the run."""
    count = {"n": 0}
    lock = threading.Lock()

    def answer(model: str, prompt: str, seed: int) -> str:
        with lock:
            count["n"] += 1
            if count["n"] == answered:
                threading.Thread(target=server.stop, daemon=True).start()
        return default_answer(model, prompt, seed)

    return answer


# ---- item 9: the circuit breaker ----------------------------------------------------------------
def test_a_server_that_dies_opens_the_breaker_and_one_that_comes_back_closes_it():
    server = ScriptedServer().start()
    port = server.port
    backend = ir.Backend(name="local", kind="openai", url=server.openai_url, timeout=5.0,
                         retries=2, retry_time=30.0, concurrency=8)
    model = ir.Model(name="m", backend=backend, id="id-m", seed=1)
    policy = RetryPolicy(base=0.01, cap=0.02, probe_after=3600.0)
    said: list[str] = []

    async def go():
        async with Runtime([backend], policy=policy) as runtime:
            client = runtime.clients["local"]
            client.notify = said.append
            (first,) = await runtime.sample(model, messages(0), [0])
            assert isinstance(first, Sample)

            server.stop()  # the server dies mid-run
            died = await asyncio.gather(*(runtime.sample(model, messages(i), [0])
                                          for i in range(1, 41)))
            assert all(isinstance(r, SampleFailure) for (r,) in died)
            assert client.stats.outages == 1 and client.stats.down is not None
            sent = client.stats.requests

            # the rest fail at once, without being sent, each with a short message
            rest = await asyncio.gather(*(runtime.sample(model, messages(i), [0])
                                          for i in range(41, 141)))
            assert client.stats.requests == sent
            for (failure,) in rest:
                assert isinstance(failure, SampleFailure) and failure.attempts == 0
                assert "not sent: backend 'local' is down" in failure.error
                assert len(failure.error) < 150

            # the server comes back on its port; once a probe may go, the run resumes
            back = ScriptedServer(port=port).start()
            try:
                policy.probe_after = 0.0
                (probe,) = await runtime.sample(model, messages(200), [0])
                assert isinstance(probe, Sample)
                assert client.stats.down is None
                after = await asyncio.gather(*(runtime.sample(model, messages(i), [0])
                                               for i in range(201, 221)))
                assert all(isinstance(r, Sample) for (r,) in after)
            finally:
                back.stop()

    asyncio.run(go())
    assert len([line for line in said if "is down" in line]) == 1
    assert said[-1] == "backend 'local' answers again: its requests resume"


def test_a_failed_probe_keeps_the_breaker_open():
    server = ScriptedServer().start()
    backend = ir.Backend(name="local", kind="openai", url=server.openai_url, timeout=5.0,
                         retries=1, retry_time=30.0)
    model = ir.Model(name="m", backend=backend, id="id-m", seed=1)
    policy = RetryPolicy(base=0.01, cap=0.02, probe_after=3600.0)

    async def go():
        async with Runtime([backend], policy=policy) as runtime:
            client = runtime.clients["local"]
            assert isinstance((await runtime.sample(model, messages(0), [0]))[0], Sample)
            server.stop()
            await runtime.sample(model, messages(1), [0])
            assert client.stats.down is not None
            policy.probe_after = 0.0
            sent = client.stats.requests
            (failure,) = await runtime.sample(model, messages(2), [0])  # the probe: refused
            assert isinstance(failure, SampleFailure) and client.stats.down is not None
            policy.probe_after = 3600.0
            assert client.stats.requests == sent + 1  # one probe went, its retry did not
            (fast,) = await runtime.sample(model, messages(3), [0])
            assert "is down" in fast.error and client.stats.requests == sent + 1

    asyncio.run(go())


def test_one_reset_connection_is_not_an_outage(server):
    backend = ir.Backend(name="local", kind="openai", url=server.openai_url, timeout=5.0,
                         retries=0, retry_time=30.0)
    model = ir.Model(name="m", backend=backend, id="id-m", seed=1)

    async def go():
        async with Runtime([backend], policy=RetryPolicy(probe_after=3600.0)) as runtime:
            client = runtime.clients["local"]
            assert isinstance((await runtime.sample(model, messages(0), [0]))[0], Sample)
            server.add_fault("reset", count=1)
            (reset,) = await runtime.sample(model, messages(1), [0])
            assert isinstance(reset, SampleFailure) and "connection error" in reset.error
            (after,) = await runtime.sample(model, messages(2), [0])
            assert isinstance(after, Sample) and client.stats.outages == 0

    asyncio.run(go())


def test_a_server_dying_mid_run_ends_the_run_fast_with_bounded_retries(
        server, api_key, write_spec, write_records, tmp_path, capsys):
    server.answer = stop_after(server, 30)
    spec = write_spec(spec_text(server.openai_url, samples=1, backend="n = false")
                      .replace("retries = 2", "retries = 4"))
    records = write_records([{"id": i, "question": f"q{i}"} for i in range(200)])
    out = tmp_path / "out.jsonl"
    assert main(["run", str(spec), "--input", str(records), "--output", str(out)]) == 1
    lines = read_jsonl(out)
    assert len(lines) == 200 and sum(line["error"] is None for line in lines) >= 8
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("backend 'local' is down:")]
    assert err.count("backend 'local' is down:") == 1
    done = re.search(r"(\d+) requests, (\d+) retries", err)
    requests, retries = int(done.group(1)), int(done.group(2))
    # what was in flight when the server died retried once (at most 4 times each); the rest
    # failed at once. Without the breaker: ~570 requests x 4 retries, batch after batch.
    assert retries <= 4 * 60 and requests <= 30 + 5 * 60
    assert "is down" in lines[-1]["failures"]["a"]


# ---- item 10: records answered without every sample ---------------------------------------------
def test_records_with_missing_or_partial_members_are_counted_and_strict_fails_on_them(
        server, api_key, write_spec, write_records, tmp_path, capsys):
    server.add_fault("404", count=None, model="id-b", message="no such model")
    spec = write_spec(spec_text(server.openai_url, samples=2, backend="n = false"))
    records = write_records([{"id": i, "question": f"q{i}"} for i in range(5)])
    out = tmp_path / "out.jsonl"
    assert main(["run", str(spec), "--input", str(records), "--output", str(out)]) == 0
    assert "5 answered with members missing" in capsys.readouterr().err
    assert main(["run", str(spec), "--input", str(records), "--output", str(out),
                 "--strict"]) == 1
    assert main(["run", str(spec), "--input", str(records), "--output", str(out),
                 "--strict", "--no-progress"]) == 1
    assert "--strict: 5 records were answered without every sample" in capsys.readouterr().err

    server.clear_faults()
    server.add_fault("400", count=1, model="id-a", message="one bad sample")
    assert main(["run", str(spec), "--input", str(records), "--output", str(out),
                 "--strict"]) == 1
    assert "1 with members' samples failed" in capsys.readouterr().err
    assert main(["run", str(spec), "--input", str(records), "--output", str(out),
                 "--strict"]) == 0  # every sample drawn: strict passes


# ---- item 11: an unreachable server does not flood the terminal ----------------------------------
def test_an_unreachable_server_says_so_once_then_each_record_briefly(
        api_key, write_spec, write_records, tmp_path, capsys):
    spec = write_spec(spec_text(f"http://127.0.0.1:{free_port()}/v1", samples=1)
                      .replace("retries = 2", "retries = 1"))
    records = write_records([{"id": i, "question": f"q{i}"} for i in range(20)])
    out = tmp_path / "out.jsonl"
    assert main(["run", str(spec), "--input", str(records), "--output", str(out),
                 "--no-progress"]) == 1
    err = capsys.readouterr().err
    lines = err.splitlines()
    backend = [line for line in lines if line.startswith("backend 'local' stopped")]
    assert len(backend) == 1 and "Connect call failed" in backend[0]
    per_record = [line for line in lines if "in.jsonl:" in line]
    assert len(per_record) == 20
    assert all(len(line) <= 400 for line in per_record), max(map(len, per_record))
    assert len(lines) <= 22 and len(err) <= 20 * 400 + 1000
    # the output keeps each member's reason
    assert all(set(line["failures"]) == {"a", "b", "c"} for line in read_jsonl(out))
