"""End to end through ``muxlang run`` against scripted servers on loopback."""
from __future__ import annotations

import hashlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from muxlang.cli import main
from muxlang.ir import Call
from muxlang.stdlib.registry import make_equivalence
from tests.support.helpers import KEY, KEY_ENV, read_jsonl, spec_text

ROOT = Path(__file__).resolve().parents[2]


def varied(model: str, prompt: str, seed: int) -> str:
    """Answers in 0..3 that depend on model, prompt and seed; some models agree more than others."""
    digest = hashlib.sha256(f"{model}|{prompt}|{seed}".encode()).digest()
    spread = {"id-a": 2, "id-b": 3, "id-c": 4}.get(model, 3)
    return f"Reasoning...\n#### {digest[0] % spread}"


def run_cli(*args: str) -> int:
    return main(["run", *map(str, args), "--no-progress"])


def algorithm_1(votes: dict[str, list], pool: list[str], accuracies: dict[str, float]):
    """The paper's Algorithm 1 on equivalence keys, written independently of stdlib."""
    best = None
    for position, name in enumerate(pool):
        if name not in votes:
            continue
        keys = votes[name]
        counts = Counter(k for k in keys if k is not None)
        score = max(counts.values()) / len(keys) if counts else 0.0
        modes = {k for k, c in counts.items() if c == max(counts.values())} if counts else set()
        rank = (score, accuracies.get(name, 0.0), -position)
        if best is None or rank > best[0]:
            best = (rank, name, score, modes)
    return best[1], best[2], best[3]


def keys_of(votes: dict[str, list], equivalence="numeric"):
    eq = make_equivalence(Call(equivalence))
    return {m: [None if a is None else eq.key(a) for a in answers] for m, answers in votes.items()}


# ---- selection -----------------------------------------------------------------------------------
def test_selections_equal_algorithm_1_on_the_recorded_votes(server, api_key, write_spec,
                                                             write_records, tmp_path):
    server.answer = varied
    accuracies = {"a": 0.61, "b": 0.83, "c": 0.72}
    spec = write_spec(spec_text(server.openai_url, accuracies=accuracies))
    records = [{"id": f"r{i}", "question": f"What is {i} + {i}?"} for i in range(60)]
    out = tmp_path / "out.jsonl"
    assert run_cli(spec, "--input", write_records(records), "--output", out) == 0
    lines = read_jsonl(out)
    assert [line["id"] for line in lines] == [r["id"] for r in records]
    for line in lines:
        assert line["error"] is None and line["missing"] == []
        assert set(line["votes"]) == {"a", "b", "c"}
        assert all(len(v) == 3 for v in line["votes"].values())
        keys = keys_of(line["votes"])
        model, score, modes = algorithm_1(keys, ["a", "b", "c"], accuracies)
        assert line["model"] == model
        assert line["confidence"] == pytest.approx(score)
        assert make_equivalence(Call("numeric")).key(line["answer"]) in modes
        assert line["answer"] in line["votes"][model]  # the raw extracted text of the winner
        assert line["tokens"]["input"] > 0 and line["tokens"]["output"] > 0
        assert line["latency"] >= 0


def test_output_order_is_input_order_under_random_latencies(server, api_key, write_spec,
                                                            write_records, tmp_path):
    rng = random.Random(7)
    delays = {}

    def latency(model, prompt, seed):
        return delays.setdefault((model, prompt, seed), rng.uniform(0.0, 0.06))

    server.latency = latency
    spec = write_spec(spec_text(server.openai_url, samples=2, backend="n = false"))
    records = [{"id": i, "question": f"q{i}"} for i in range(80)]
    out = tmp_path / "out.jsonl"
    assert run_cli(spec, "--input", write_records(records), "--output", out) == 0
    assert [line["id"] for line in read_jsonl(out)] == list(range(80))


# ---- failures ----------------------------------------------------------------------------------
def test_a_failing_member_is_listed_missing_and_the_rule_runs_on_the_rest(
        server, api_key, write_spec, write_records, tmp_path):
    server.answer = varied
    server.add_fault("404", count=None, model="id-b", message="model 'id-b' not found")
    spec = write_spec(spec_text(server.openai_url, accuracies={"a": 0.5, "b": 0.9, "c": 0.7}))
    out = tmp_path / "out.jsonl"
    rc = run_cli(spec, "--input", write_records([{"id": 1, "question": "q"}]), "--output", out)
    assert rc == 0
    (line,) = read_jsonl(out)
    assert line["missing"] == ["b"] and "b" not in line["votes"]
    assert "not found" in line["failures"]["b"] and "HTTP 404" in line["failures"]["b"]
    assert line["model"] in {"a", "c"} and line["error"] is None


def test_a_record_where_every_member_fails_gets_an_error_and_the_run_goes_on(
        server, api_key, write_spec, write_records, tmp_path, capsys):
    server.add_fault("500", count=None, match="doomed")
    spec = write_spec(spec_text(server.openai_url, models=("a", "b"), samples=2,
                                backend="n = false").replace("retries = 2", "retries = 1"))
    records = [{"id": 1, "question": "fine"}, {"id": 2, "question": "doomed"},
               {"id": 3, "question": "fine too"}]
    out = tmp_path / "out.jsonl"
    assert run_cli(spec, "--input", write_records(records), "--output", out) == 1
    lines = read_jsonl(out)
    assert [line["id"] for line in lines] == [1, 2, 3]
    assert lines[0]["error"] is None and lines[2]["error"] is None
    assert "every pool member failed" in lines[1]["error"]
    assert sorted(lines[1]["missing"]) == ["a", "b"]
    assert lines[1]["answer"] is None
    # retries stopped at the bound: 2 attempts per sample, 2 models x 2 samples
    doomed = [r for r in server.requests if "doomed" in json.dumps(r["body"])]
    assert len(doomed) == 2 * 2 * 2
    assert "in.jsonl:2:" in capsys.readouterr().err


def test_a_failed_sample_counts_in_k_and_the_member_keeps_its_other_samples(
        server, api_key, write_spec, write_records, tmp_path):
    # a: 7, 7 and one request that fails for good; b: 5, 5, 6. As Algorithm 1 treats an
    # unreadable sample, the failure counts in a's k: s = 2/3, tying b, and a's accuracy wins.
    # (Dropping a would answer b's 5; dropping only the failed sample would give a s = 1.)
    server.answer = lambda model, prompt, seed: (
        "#### 7" if model == "id-a" else "#### 5" if seed < 102 else "#### 6")
    server.add_fault("400", count=1, model="id-a", message="bad luck")
    spec = write_spec(spec_text(server.openai_url, models=("a", "b"), backend="n = false",
                                accuracies={"a": 0.9, "b": 0.5}))
    out = tmp_path / "out.jsonl"
    assert run_cli(spec, "--input", write_records([{"id": 1, "question": "q"}]),
                   "--output", out) == 0
    (line,) = read_jsonl(out)
    assert (line["answer"], line["model"]) == ("7", "a")
    assert line["confidence"] == pytest.approx(2 / 3)
    assert sorted(line["votes"]["a"], key=str) == ["7", "7", None]
    assert line["missing"] == [] and "failures" not in line
    assert line["partial"]["a"].startswith("1 of 3 samples failed (counted as unreadable)")
    assert "bad luck" in line["partial"]["a"]


def test_429_storm_is_absorbed(server, api_key, write_spec, write_records, tmp_path):
    server.answer = varied
    server.add_fault("429", duration=1.0, retry_after=1)
    spec = write_spec(spec_text(server.openai_url, backend="n = false")
                      .replace("retries = 2", "retries = 5"))
    records = [{"id": i, "question": f"q{i}"} for i in range(30)]
    out = tmp_path / "out.jsonl"
    assert run_cli(spec, "--input", write_records(records), "--output", out) == 0
    lines = read_jsonl(out)
    assert all(line["error"] is None and line["missing"] == [] for line in lines)
    assert any(r["status"] == "429" for r in server.requests)


def test_the_key_never_shows_up(server, api_key, write_spec, write_records, tmp_path):
    server.add_fault("401", count=None, model="id-a", message=f"invalid api key: {KEY}")
    server.add_fault("500", count=None, model="id-b", message=f"upstream said Bearer {KEY}")
    spec = write_spec(spec_text(server.openai_url, samples=1)
                      .replace("retries = 2", "retries = 0"))
    records = [{"id": 1, "question": "q"}, "{broken", {"id": 3, "question": "q3"}]
    out = tmp_path / "out.jsonl"
    env = {**os.environ, KEY_ENV: KEY, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "muxlang", "run", str(spec), "--input",
         str(write_records(records)), "--output", str(out)],
        env=env, capture_output=True, text=True, timeout=120, cwd=str(ROOT))
    assert proc.returncode == 1
    assert all(r["authorization"] == f"Bearer {KEY}" for r in server.requests)
    text = out.read_text()
    assert "invalid api key" in text  # the server's message is there...
    for where in (proc.stdout, proc.stderr, text):
        assert KEY not in where  # ...but never the key


def test_bad_input_lines_are_reported_with_file_and_line(server, api_key, write_spec,
                                                         write_records, tmp_path, capsys):
    spec = write_spec(spec_text(server.openai_url, models=("a",), samples=1))
    records = [{"id": 1, "question": "ok"}, "not json at all", "[1, 2]",
               {"id": 4, "prompt": "wrong field"}, "", {"id": 6, "question": "ok too"}]
    path = write_records(records)
    out = tmp_path / "out.jsonl"
    assert run_cli(spec, "--input", path, "--output", out) == 1
    lines = read_jsonl(out)
    assert len(lines) == 5  # one per non-blank line
    assert lines[0]["error"] is None and lines[4]["error"] is None and lines[4]["id"] == 6
    assert lines[1]["error"].startswith(f"{path}:2: invalid JSON")
    assert lines[2]["error"].startswith(f"{path}:3: ") and "object" in lines[2]["error"]
    assert lines[3]["error"].startswith(f"{path}:4: ") and "'question'" in lines[3]["error"]
    assert lines[3]["id"] == 4
    err = capsys.readouterr().err
    assert f"{path}:2:" in err and f"{path}:4:" in err
    assert "Traceback" not in err


# ---- n > 1 probing end to end ------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["support", "reject", "ignore"])
def test_n_probing_end_to_end(server, api_key, write_spec, write_records, tmp_path, mode):
    server.answer = varied
    server.n_mode = mode
    spec = write_spec(spec_text(server.openai_url, models=("a", "b"), samples=3))
    records = [{"id": i, "question": f"q{i}"} for i in range(6)]
    out = tmp_path / "out.jsonl"
    assert run_cli(spec, "--input", write_records(records), "--output", out) == 0
    lines = read_jsonl(out)
    probes = [r for r in server.requests if r["n"] == 3]
    if mode == "support":
        assert len(server.requests) == 6 * 2 and len(probes) == 12
    else:
        assert len(probes) == 2  # one probe per model, never again
        assert len(server.requests) == 2 + (6 * 2 * 3 - (2 if mode == "ignore" else 0))
    # every mode gives the same votes: sample i always has seed base + i
    reference = read_jsonl(out)
    assert all(len(v) == 3 for line in reference for v in line["votes"].values())
    expected = {}
    for i in range(6):
        for m in ("a", "b"):
            prompt = f"Answer with #### N.\nQuestion: q{i}"
            expected[(i, m)] = [varied(f"id-{m}", prompt, 100 + s).split("#### ")[1]
                                for s in range(3)]
    for line in lines:
        for m in ("a", "b"):
            assert line["votes"][m] == expected[(line["id"], m)]


# ---- Ollama ----------------------------------------------------------------------------------
def test_ollama_backend_end_to_end(server, write_spec, write_records, tmp_path):
    server.answer = varied
    spec = write_spec(spec_text(server.url, kind="ollama", models=("a", "b"), key=False))
    out = tmp_path / "out.jsonl"
    records = [{"id": i, "question": f"q{i}"} for i in range(4)]
    assert run_cli(spec, "--input", write_records(records), "--output", out) == 0
    lines = read_jsonl(out)
    assert all(r["path"] == "/api/chat" and r["body"]["stream"] is False
               for r in server.requests)
    assert len(server.requests) == 4 * 2 * 3
    assert all(line["tokens"]["output"] > 0 for line in lines)


# ---- overrides, stdin/stdout -------------------------------------------------------------------
def test_backend_url_override_and_stdio(server, api_key, write_spec, tmp_path, monkeypatch,
                                        capsys):
    spec = write_spec(spec_text("http://127.0.0.1:9/v1", models=("a",), samples=2))
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"id": "x", "question": "q"}\n'))
    rc = run_cli(spec, "--input", "-", "--output", "-", "--backend", f"local={server.openai_url}")
    assert rc == 0
    out = capsys.readouterr().out
    (line,) = [json.loads(x) for x in out.splitlines()]
    assert line["id"] == "x" and line["error"] is None


def test_backend_url_from_environment(server, api_key, write_spec, write_records, tmp_path,
                                      monkeypatch):
    spec = write_spec(spec_text("http://127.0.0.1:9/v1", models=("a",), samples=1))
    monkeypatch.setenv("MUXLANG_BACKEND_LOCAL_URL", server.openai_url)
    out = tmp_path / "out.jsonl"
    assert run_cli(spec, "--input", write_records([{"question": "q"}]), "--output", out) == 0
    assert read_jsonl(out)[0]["error"] is None and len(server.requests) == 1


def test_unknown_backend_override_and_mux_are_user_errors(server, api_key, write_spec,
                                                           write_records, tmp_path, capsys):
    spec = write_spec(spec_text(server.openai_url, models=("a",), samples=1))
    records = write_records([{"question": "q"}])
    assert run_cli(spec, "--input", records, "--output", tmp_path / "o",
                   "--backend", "nope=http://x") == 1
    assert run_cli(spec, "--input", records, "--output", tmp_path / "o", "--mux", "pol") == 1
    err = capsys.readouterr().err
    assert "no backend 'nope'" in err and "did you mean 'pool'" in err
    assert "Traceback" not in err


# ---- cascades and nested muxes ----------------------------------------------------------------
CASCADE = """
model weak {
  backend = local
  id = "id-weak"
  seed = 100
}
model strong {
  backend = local
  id = "id-strong"
  seed = 100
}
mux first {
  task = t
  pool = [weak * 3]
}
mux second {
  task = t
  pool = [strong * 3]
}
cascade ladder {
  steps = [first, second]
  threshold = 0.9
}
"""


def test_cascade_escalates_only_when_confidence_is_low(server, api_key, write_spec,
                                                        write_records, tmp_path):
    def answer(model, prompt, seed):
        if model == "id-strong":
            return "#### 7"
        return "#### 1" if "easy" in prompt else f"#### {seed}"

    server.answer = answer
    spec = write_spec(spec_text(server.openai_url, models=("a",), extra=CASCADE))
    records = [{"id": 1, "question": "easy one"}, {"id": 2, "question": "hard one"}]
    out = tmp_path / "out.jsonl"
    assert run_cli(spec, "--input", write_records(records), "--output", out) == 0
    easy, hard = read_jsonl(out)
    assert easy["step"] == "first" and easy["answer"] == "1" and easy["confidence"] == 1.0
    assert [s["mux"] for s in easy["steps"]] == ["first"]
    assert hard["step"] == "second" and hard["answer"] == "7" and hard["model"] == "strong"
    assert [s["mux"] for s in hard["steps"]] == ["first", "second"]
    assert hard["steps"][0]["confidence"] == pytest.approx(1 / 3)
    strong_prompts = [json.dumps(r["body"]) for r in server.requests if r["model"] == "id-strong"]
    assert strong_prompts and all("hard one" in p for p in strong_prompts)


def test_nested_mux_member_is_one_answer_with_its_own_confidence(server, api_key, write_spec,
                                                                   write_records, tmp_path):
    def answer(model, prompt, seed):
        return {"id-a": "#### 5", "id-b": f"#### {seed}", "id-c": f"#### {seed % 2}"}[model]

    server.answer = answer
    extra = """
mux outer {
  task = t
  pool = [pool, c * 3]
}
"""
    spec = write_spec(spec_text(server.openai_url, extra=extra, pool="a * 3, b * 3"))
    out = tmp_path / "out.jsonl"
    rc = run_cli(spec, "--mux", "outer", "--input", write_records([{"question": "q"}]),
                 "--output", out)
    assert rc == 0
    (line,) = read_jsonl(out)
    assert line["votes"]["pool"] == ["5"]  # one member, one answer (docs/language.md)
    assert line["scores"]["pool"] == 1.0  # with the confidence its own rule gave it
    assert line["model"] == "pool" and line["path"] == ["pool", "a"]
    assert line["answer"] == "5" and line["confidence"] == 1.0
    assert line["text"] == "#### 5"


# ---- Ctrl-C --------------------------------------------------------------------------------------
def test_ctrl_c_stops_cleanly_and_keeps_finished_lines(server, api_key, write_spec, write_records,
                                                       tmp_path):
    server.latency = 0.05
    spec = write_spec(spec_text(server.openai_url, models=("a",), samples=1)
                      .replace("concurrency = 8", "concurrency = 2"))
    records = [{"id": i, "question": f"q{i}"} for i in range(400)]
    out = tmp_path / "out.jsonl"
    env = {**os.environ, KEY_ENV: KEY, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "muxlang", "run", str(spec), "--input",
         str(write_records(records)), "--output", str(out)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(ROOT))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if out.exists() and out.read_text().count("\n") >= 5:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in err and "interrupted" in err
    text = out.read_text()
    assert text.endswith("\n")
    lines = [json.loads(x) for x in text.splitlines()]
    assert 5 <= len(lines) < 400
    assert [line["id"] for line in lines] == list(range(len(lines)))


# ---- the store as cache ----------------------------------------------------------------------
def test_store_cache_makes_a_rerun_free(server, api_key, write_spec, write_records, tmp_path):
    server.answer = varied
    spec = write_spec(spec_text(server.openai_url, models=("a", "b"), samples=3))
    records = write_records([{"id": i, "question": f"q{i}"} for i in range(5)])
    store = tmp_path / "store.sqlite"
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    assert run_cli(spec, "--input", records, "--output", first, "--store", store) == 0
    sent = len(server.requests)
    assert sent > 0
    assert run_cli(spec, "--input", records, "--output", second, "--store", store) == 0
    assert len(server.requests) == sent  # nothing drawn twice
    a, b = read_jsonl(first), read_jsonl(second)
    assert [x["votes"] for x in a] == [x["votes"] for x in b]
    assert [x["answer"] for x in a] == [x["answer"] for x in b]
    assert all(x["cached"] == 6 for x in b)


# ---- records piped in one by one -----------------------------------------------------------------
@pytest.mark.timeout(120)
def test_records_piped_in_one_by_one_are_answered_as_they_arrive(server, api_key, write_spec):
    # a producer that is still running (stdin stays open): each record must be run and its line
    # written when it arrives, not when a batch of lines fills up or the pipe closes
    import selectors

    spec = write_spec(spec_text(server.openai_url, models=("a",), samples=1))
    env = {**os.environ, KEY_ENV: KEY, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "muxlang", "run", str(spec), "--input", "-", "--output", "-",
         "--no-progress"],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, cwd=str(ROOT))
    got = []
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            for i in range(2):
                proc.stdin.write(json.dumps({"id": i, "question": f"q{i}"}) + "\n")
                proc.stdin.flush()
                assert selector.select(timeout=60), f"no output line for record {i}"
                got.append(json.loads(proc.stdout.readline()))
        proc.stdin.close()
        proc.wait(timeout=60)
        rest, err = proc.stdout.read(), proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert [line["id"] for line in got] == [0, 1] and rest == ""
    assert all(line["error"] is None for line in got)


# ---- the output going away ---------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_a_reader_that_goes_away_ends_the_run_quietly(server, api_key, write_spec, write_records):
    # `muxlang run ... -o - | head -1`: once the pipe is closed no line can be written; the run
    # must stop (not wait forever for the lost line's turn) and say nothing of tracebacks
    server.latency = 0.05
    spec = write_spec(spec_text(server.openai_url, models=("a",), samples=1)
                      .replace("concurrency = 8", "concurrency = 2"))
    records = write_records([{"id": i, "question": f"q{i}"} for i in range(300)])
    env = {**os.environ, KEY_ENV: KEY, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "muxlang", "run", str(spec), "--input", str(records),
         "--output", "-"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(ROOT))
    try:
        assert json.loads(proc.stdout.readline())["id"] == 0
        proc.stdout.close()
        err = proc.stderr.read()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 141
    assert "Traceback" not in err and "never retrieved" not in err and "internal error" not in err


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_an_output_that_cannot_be_written_is_a_user_error(server, api_key, write_spec,
                                                          write_records, capsys):
    spec = write_spec(spec_text(server.openai_url, models=("a",), samples=1))
    records = write_records([{"id": i, "question": f"q{i}"} for i in range(5)])
    assert run_cli(spec, "--input", records, "--output", "/dev/full") == 1
    err = capsys.readouterr().err
    assert "cannot write /dev/full" in err and "No space left" in err
    assert "internal error" not in err


def test_a_failed_run_stores_no_key_in_its_error(server, api_key, write_spec, write_records,
                                                 tmp_path):
    spec = write_spec(spec_text(server.openai_url, models=("a",), samples=1))
    store = tmp_path / "store.sqlite"
    out = tmp_path / f"no-such-dir-{KEY}" / "out.jsonl"  # an error whose text holds the key
    assert run_cli(spec, "--input", write_records([{"question": "q"}]), "--output", out,
                   "--store", store) == 1
    assert b"cannot write" in store.read_bytes() and KEY.encode() not in store.read_bytes()


def test_progress_total_counts_records_not_blank_lines(tmp_path):
    from muxlang.commands.run import _count_lines

    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"q": 1}\n\n   \n{"q": 2}\r\n\n{"q": 3}')  # no newline at the end
    assert _count_lines(str(path)) == 3
    assert _count_lines(str(tmp_path / "missing.jsonl")) is None


# ---- failures that settle a backend or a model for the whole run ---------------------------------
def test_a_401_stops_the_backend_instead_of_failing_every_record_on_its_own(
        server, api_key, write_spec, write_records, tmp_path, capsys):
    server.add_fault("401", count=None, message="invalid api key")
    spec = write_spec(spec_text(server.openai_url, samples=1))
    records = [{"id": i, "question": f"q{i}"} for i in range(30)]
    out = tmp_path / "out.jsonl"
    assert run_cli(spec, "--input", write_records(records), "--output", out) == 1
    lines = read_jsonl(out)
    assert [line["id"] for line in lines] == list(range(30))
    assert all("every pool member failed" in line["error"] for line in lines)
    assert "HTTP 401: invalid api key" in lines[-1]["failures"]["a"]
    assert "not sent: the backend stopped taking requests" in lines[-1]["failures"]["a"]
    # only what was already in flight (concurrency 8) reached the server, not 30 x 3 requests
    assert len(server.requests) <= 8
    err = capsys.readouterr().err
    assert "backend 'local' stopped taking requests: HTTP 401: invalid api key" in err
    # where the refused key came from (its variable, never its value)
    assert "(the key sent is " in err and "'s (environment or ./.env)" in err
    assert api_key not in err


def test_a_404_model_is_left_out_of_later_records_without_asking_again(
        server, api_key, write_spec, write_records, tmp_path, capsys):
    server.answer = varied
    server.add_fault("404", count=None, model="id-b", message="model 'id-b' not found")
    spec = write_spec(spec_text(server.openai_url, samples=1))
    records = [{"id": i, "question": f"q{i}"} for i in range(30)]
    out = tmp_path / "out.jsonl"
    assert run_cli(spec, "--input", write_records(records), "--output", out) == 0
    lines = read_jsonl(out)
    assert all(line["missing"] == ["b"] and line["error"] is None for line in lines)
    assert all(line["model"] in {"a", "c"} for line in lines)
    assert sum(r["body"]["model"] == "id-b" for r in server.requests) <= 8
    assert sum(r["body"]["model"] == "id-a" for r in server.requests) == 30
    assert "model 'b' on backend 'local' stopped taking requests: HTTP 404" in \
        capsys.readouterr().err


def test_a_server_never_reached_stops_its_backend_after_one_retry_cycle(
        write_spec, write_records, tmp_path, api_key):
    import socket

    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    spec = write_spec(spec_text(f"http://127.0.0.1:{port}/v1", samples=1)
                      .replace("retries = 2", "retries = 1"))
    records = [{"id": i, "question": f"q{i}"} for i in range(40)]
    out = tmp_path / "out.jsonl"
    assert run_cli(spec, "--input", write_records(records), "--output", out) == 1
    lines = read_jsonl(out)
    assert len(lines) == 40 and all(line["answer"] is None for line in lines)
    last = lines[-1]["failures"]["c"]
    assert "not sent" in last and "the server was never reached" in last
    assert "ClientConnectorError" in last


# ---- tie-breaks from the mux's validation dataset ----------------------------------------------
def test_ties_go_by_validation_accuracies_measured_in_the_store(
        server, api_key, write_spec, write_records, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MUXLANG_STORE", raising=False)

    def answer(model: str, prompt: str, seed: int) -> str:
        if "val" in prompt:  # validation: b is right (gold 7), a is wrong
            return "#### 7" if model == "id-b" else "#### 1"
        return "#### 2" if model == "id-b" else "#### 1"  # run: one sample each, a tie

    server.answer = answer
    spec = write_spec(spec_text(server.openai_url, models=("a", "b"), samples=1,
                                mux_extra='validation = "val"'))
    store = tmp_path / "store.sqlite"
    val = write_records([{"id": i, "question": f"val {i}", "answer": "7"} for i in range(4)],
                        name="val.jsonl")
    assert main(["collect", str(spec), "--dataset", str(val), "--store", str(store),
                 "--no-progress"]) == 0
    records = write_records([{"id": i, "question": f"q{i}"} for i in range(3)])
    capsys.readouterr()

    out = tmp_path / "out.jsonl"
    assert run_cli(spec, "--input", records, "--output", out, "--store", store) == 0
    assert [line["model"] for line in read_jsonl(out)] == ["b"] * 3  # b: 100% on val, a: 0%
    assert "validation accuracies on val: a 0.0%, b 100.0%" in capsys.readouterr().err

    # without a store to measure them in, ties go by pool order, and the run says so
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert run_cli(spec, "--input", records, "--output", out) == 0
    assert [line["model"] for line in read_jsonl(out)] == ["a"] * 3
    err = capsys.readouterr().err
    assert "validation dataset 'val' needs the sample store" in err


def test_the_output_may_not_be_the_input(server, api_key, write_spec, write_records, capsys):
    spec = write_spec(spec_text(server.openai_url, samples=1))
    records = write_records([{"id": 1, "question": "q"}])
    before = records.read_text()
    assert run_cli(spec, "--input", records, "--output", records) == 1
    assert "is the input file" in capsys.readouterr().err
    assert records.read_text() == before and not server.requests


def test_an_empty_key_variable_is_called_empty_not_unset(server, write_spec, write_records,
                                                          monkeypatch, capsys):
    spec = write_spec(spec_text(server.openai_url, samples=1))
    records = write_records([{"id": 1, "question": "q"}])
    monkeypatch.setenv(KEY_ENV, "")
    assert run_cli(spec, "--input", records, "--output", "-") == 1
    assert f"environment variable {KEY_ENV}, which is empty" in capsys.readouterr().err
    monkeypatch.delenv(KEY_ENV)
    assert run_cli(spec, "--input", records, "--output", "-") == 1
    assert f"environment variable {KEY_ENV}, which is not set" in capsys.readouterr().err
