"""The Python API (``muxlang.load``, ``loads``, ``Session``) against real components: a scripted
OpenAI-compatible server on loopback, SQLite stores, the shipped GSM8K recordings; and the runnable
examples of docs/api.md."""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

import muxlang
from muxlang.cli import main
from tests.support.helpers import KEY, KEY_ENV, read_jsonl, spec_text
from tests.support.scripted_server import ScriptedServer

ROOT = Path(__file__).resolve().parents[2]
GSM8K = ROOT / "examples" / "zeroeval-gsm8k"


@pytest.fixture
def server():
    srv = ScriptedServer().start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.delenv("MUXLANG_STORE", raising=False)
    for name in list(os.environ):
        if name.startswith("MUXLANG_BACKEND_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # a default store would land here, never in the repository


def varied(model: str, prompt: str, seed: int) -> str:
    digest = hashlib.sha256(f"{model}|{prompt}|{seed}".encode()).digest()
    return f"Thinking about {model}...\n#### {digest[0] % 3}"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def write_records(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# ---- load / loads ------------------------------------------------------------------------------
def test_load_gives_a_checked_spec_that_prints_a_summary():
    spec = muxlang.load(ROOT / "specs" / "gsm8k.mux")
    assert isinstance(spec, muxlang.Spec)
    from muxlang import ir

    assert isinstance(spec, ir.Spec)
    assert spec.runnable().name == "gsm8k_duo"
    text = str(spec)
    assert text.startswith("Spec ")
    assert "mux gsm8k_duo: slm_mux over [llama31_8b * 3, gemma2_27b * 3]" in text
    assert "model gemma2_27b" in text and "backend local: openai" in text
    assert repr(spec).startswith("<Spec ") and "muxes [gsm8k_duo]" in repr(spec)


def test_the_readme_one_liner_works_from_a_fresh_interpreter():
    done = subprocess.run([sys.executable, "-c",
                           "import muxlang; s = muxlang.load('specs/gsm8k.mux'); print(s)"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "gsm8k_duo" in done.stdout


def test_import_muxlang_and_load_import_nothing_heavy():
    code = ("import sys, muxlang; muxlang.load('specs/gsm8k.mux'); "
            "print(sorted(m for m in ('optuna', 'sqlalchemy', 'aiohttp', 'numpy', 'networkx', "
            "'math_verify', 'matplotlib') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_dir_lists_the_api():
    names = dir(muxlang)
    for name in ("load", "loads", "Spec", "SpecError", "Session", "RecordResult", "EvalReport",
                 "TuneResult", "CollectResult"):
        assert name in names and name in muxlang.__all__
    with pytest.raises(AttributeError):
        muxlang.no_such_thing  # noqa: B018


def test_loads_errors_carry_file_line_and_column():
    text = 'backend b {\n  kind = openai\n  url = "http://x/v1"\n}\nmux m {\n  task = nope\n}\n'
    with pytest.raises(muxlang.SpecError) as caught:
        muxlang.loads(text, name="broken.mux")
    diagnostics = caught.value.diagnostics
    assert diagnostics
    by_message = {d.message: d for d in diagnostics}
    undefined = next(d for m, d in by_message.items() if "'nope' is not defined" in m)
    assert (undefined.file, undefined.line, undefined.column) == ("broken.mux", 6, 10)
    assert "broken.mux:6:10" in caught.value.render()
    assert isinstance(caught.value, muxlang.MuxError)


def test_load_errors_name_the_file(tmp_path):
    path = write(tmp_path / "bad.mux", "model m {\n  backend = nowhere\n}\n")
    with pytest.raises(muxlang.SpecError) as caught:
        muxlang.load(path)
    first = caught.value.diagnostics[0]
    assert first.file == str(path) and first.line == 2 and first.column > 0
    with pytest.raises(muxlang.SpecError) as missing:
        muxlang.load(tmp_path / "absent.mux")
    assert "absent.mux" in missing.value.diagnostics[0].file


def test_loads_a_valid_text_with_a_stdlib_import():
    spec = muxlang.loads(spec_text("http://127.0.0.1:1/v1") + "\nimport std.gsm8k\n")
    assert spec.path == "<string>" and set(spec.muxes) == {"pool"}


# ---- run / arun --------------------------------------------------------------------------------
def test_run_answers_every_record_as_the_cli_does(server, tmp_path):
    server.answer = varied
    spec_path = write(tmp_path / "spec.mux", spec_text("http://127.0.0.1:1/v1",
                                                       accuracies={"a": 0.5, "b": 0.9}))
    records = [{"id": f"r{i}", "question": f"What is {i} + {i}?"} for i in range(12)]
    session = muxlang.Session(backends={"local": server.openai_url})
    results = session.run(str(spec_path), records)
    assert [r.id for r in results] == [r["id"] for r in records]
    assert all(isinstance(r, muxlang.RecordResult) for r in results)

    # the CLI on the same records and the same (seeded) server gives the same lines
    out = tmp_path / "out.jsonl"
    assert main(["run", str(spec_path), "--input", str(write_records(tmp_path / "in.jsonl",
                                                                     records)),
                 "--output", str(out), "--backend", f"local={server.openai_url}",
                 "--no-progress"]) == 0
    for result, line in zip(results, read_jsonl(out)):
        assert (result.answer, result.model, result.confidence, result.votes, result.missing,
                result.error) == (line["answer"], line["model"], line["confidence"],
                                  line["votes"], line["missing"], line["error"])
        assert result.scores == line.get("scores", {})
        assert result.tokens_in == line["tokens"]["input"]
    for result in results:
        assert result.error is None and result.ok
        assert result.answer in result.votes[result.model]
        # the text of one of the winner's samples whose answer is the selected one
        assert result.text.startswith("Thinking about id-" + result.model)
        assert result.text.rstrip().endswith(f"#### {result.answer}")
        assert set(result.scores) == {"a", "b", "c"}
        assert result.to_dict()["id"] == result.id


def test_arun_yields_in_input_order_while_later_records_finish_first(server, tmp_path):
    # record i takes (n - i) * 40 ms: the last record is done first
    n = 8
    server.answer = varied
    server.latency = lambda model, prompt, seed: 0.04 * (n - int(re.search(r"Q(\d+)", prompt)
                                                                  .group(1)))
    spec = muxlang.loads(spec_text(server.openai_url, models=("a", "b"), samples=1))
    session = muxlang.Session(in_flight=n, concurrency=4 * n)
    seen = []

    async def main_() -> float:
        started = time.monotonic()
        async for result in session.arun(spec, ({"id": i, "question": f"Q{i}"} for i in range(n))):
            seen.append(result)
        return time.monotonic() - started

    elapsed = asyncio.run(main_())
    assert [r.id for r in seen] == list(range(n))
    assert all(r.error is None for r in seen)
    # they ran at once: the first took longest, yet came out first; the run took about as long
    # as its slowest record, not the sum of all
    assert seen[0].latency > seen[-1].latency + 0.15
    assert elapsed < 0.6 * sum(r.latency for r in seen)


def test_arun_takes_an_async_iterable_and_bad_records_get_errors(server):
    server.answer = varied
    spec = muxlang.loads(spec_text(server.openai_url, models=("a",), samples=2))

    async def records():
        yield {"id": 1, "question": "fine"}
        yield {"id": 2, "other": "no question field"}
        yield ["not", "an", "object"]

    async def main_() -> list:
        return [r async for r in muxlang.Session().arun(spec, records())]

    first, second, third = asyncio.run(main_())
    assert first.error is None and first.answer is not None
    assert second.id == 2 and "question" in second.error and second.answer is None
    assert "JSON object" in third.error


def test_run_works_inside_a_running_event_loop(server):
    """A notebook: ``Session.run`` is called while an event loop runs."""
    server.answer = varied
    spec = muxlang.loads(spec_text(server.openai_url, models=("a", "b"), samples=1))

    async def notebook_cell() -> list:
        return muxlang.Session().run(spec, [{"id": 1, "question": "q"}])

    (result,) = asyncio.run(notebook_cell())
    assert result.error is None and result.model in ("a", "b")


def test_failed_members_and_unknown_backend_overrides(server, tmp_path):
    server.answer = varied
    server.add_fault("404", count=None, model="id-b", message="no such model")
    spec = muxlang.loads(spec_text(server.openai_url, models=("a", "b"), samples=1))
    (result,) = muxlang.Session().run(spec, [{"id": 1, "question": "q"}])
    assert result.missing == ["b"] and "no such model" in result.failures["b"]
    assert result.model == "a" and result.error is None
    with pytest.raises(muxlang.MuxError, match="no backend 'locl'.*did you mean 'local'"):
        muxlang.Session(backends={"locl": server.openai_url}).run(spec, [])
    with pytest.raises(muxlang.MuxError, match="no mux or cascade named 'nope'"):
        muxlang.Session().run(spec, [], mux="nope")


def test_run_caches_in_the_store_and_breaks_ties_as_the_cli(server, tmp_path):
    """Ties by the validation accuracies measured in the store, through the API as through
    ``muxlang run``; the store serves the samples of a second run."""
    def answer(model: str, prompt: str, seed: int) -> str:
        if "val" in prompt:  # validation: b is right (gold 7), a is wrong
            return "#### 7" if model == "id-b" else "#### 1"
        return "#### 2" if model == "id-b" else "#### 1"  # a tie: one sample each

    server.answer = answer
    spec_path = write(tmp_path / "spec.mux", spec_text(server.openai_url, models=("a", "b"),
                                                       samples=1,
                                                       mux_extra='validation = "val"'))
    store = str(tmp_path / "store.sqlite")
    session = muxlang.Session(store=store)
    val = write_records(tmp_path / "val.jsonl",
                        [{"id": i, "question": f"val {i}", "answer": "7"} for i in range(4)])
    counts = session.collect(spec_path, str(val))
    assert (counts.drawn, counts.failed, counts.status) == (8, 0, "ok")
    records = [{"id": i, "question": f"q{i}"} for i in range(3)]
    runner = session.runner(muxlang.load(spec_path))
    assert runner.info.accuracies == {"a": 0.0, "b": 1.0}
    runner.close()
    first = session.run(spec_path, records)
    assert [r.model for r in first] == ["b"] * 3 and [r.answer for r in first] == ["2"] * 3
    asked = len(server.requests)
    again = session.run(spec_path, records)
    assert len(server.requests) == asked and all(r.cached == 2 for r in again)

    # without a store, the ties go by pool order and a warning says why
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plain = muxlang.Session().run(spec_path, records)
    assert [r.model for r in plain] == ["a"] * 3
    assert any(issubclass(w.category, muxlang.MuxWarning)
               and "needs the sample store" in str(w.message) for w in caught)
    told = []
    muxlang.Session(warn=told.append).run(spec_path, records[:1])
    assert told and "needs the sample store" in told[0]
    assert not (tmp_path / "muxlang.sqlite").exists()  # nothing created unasked


def test_a_runner_answers_records_concurrently_and_ends_its_run_in_the_store(server, tmp_path):
    """What a long-lived service does: prepare once, answer records as they come."""
    server.answer = varied
    spec = muxlang.loads(spec_text(server.openai_url, models=("a", "b"), samples=2))
    session = muxlang.Session(store=tmp_path / "s.sqlite")
    runner = session.runner(spec)
    assert runner.runnable.name == "pool" and runner.info.warnings == []

    async def serve() -> list:
        async with runner:
            return await asyncio.gather(*(runner.run({"id": i, "question": f"q{i % 2}"})
                                          for i in range(4)))

    results = asyncio.run(serve())
    runner.close("ok")
    runner.close("failed")  # once only
    assert [r.id for r in results] == [0, 1, 2, 3] and all(r.ok for r in results)
    assert results[0].answer == results[2].answer  # the same question: the same samples
    from muxlang.store import Store

    with Store(str(tmp_path / "s.sqlite")) as store:
        (run,) = store.runs()
    assert run["command"] == "run" and run["status"] == "ok"


# ---- collect -----------------------------------------------------------------------------------
def test_collect_counts_and_resumes(server, tmp_path):
    server.answer = varied
    spec = muxlang.loads(spec_text(server.openai_url, models=("a", "b"), samples=2))
    questions = write_records(tmp_path / "qs.jsonl",
                              [{"id": i, "question": f"q{i}", "answer": "1"} for i in range(5)])
    session = muxlang.Session(store=tmp_path / "s.sqlite")
    counts = session.collect(spec, str(questions))
    assert isinstance(counts, muxlang.CollectResult)
    assert (counts.dataset, counts.items, counts.wanted, counts.stored_before, counts.drawn,
            counts.failed, counts.status) == ("qs", 5, 20, 0, 20, 0, "ok")
    assert counts.tokens_in > 0 and counts.models == ["a", "b"]
    more = session.collect(spec, "qs", samples=3)  # by dataset name; one more per model
    assert (more.wanted, more.stored_before, more.drawn) == (30, 20, 10)
    with session.collection(spec, "qs", 3) as planned:
        assert (planned.counts.to_draw, planned.todo) == (0, [])
        assert planned.draw().drawn == 0


def test_collect_reports_failures_and_skipped_items(server, tmp_path):
    server.answer = varied
    server.add_fault("400", count=None, model="id-b", message="bad request")
    spec = muxlang.loads(spec_text(server.openai_url, models=("a", "b"), samples=1))
    questions = write_records(tmp_path / "qs.jsonl",
                              [{"id": 1, "question": "q", "answer": "1"},
                               {"id": 2, "answer": "1"}])  # no question: skipped
    counts = muxlang.Session(store=tmp_path / "s.sqlite").collect(spec, str(questions))
    assert counts.status == "failed" and counts.failed == 1 and counts.drawn == 1
    assert counts.skipped_items == 1 and "question" in counts.skipped[0]
    assert any("bad request" in error for error in counts.errors)


# ---- evaluate and tune on the shipped recordings -----------------------------------------------
@pytest.fixture(scope="module")
def gsm8k_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("gsm8k") / "gsm8k.sqlite"
    muxlang.Session(store=path).import_samples(
        GSM8K / "zeroeval-gsm8k-samples.jsonl.gz", GSM8K / "zeroeval-gsm8k-questions.jsonl")
    return str(path)


def test_evaluate_matches_eval_json(gsm8k_store, capsys):
    session = muxlang.Session(store=gsm8k_store)
    spec = muxlang.load(GSM8K / "gsm8k.mux")
    report = session.evaluate(spec, str(GSM8K / "gsm8k-test.jsonl"),
                              validation=str(GSM8K / "gsm8k-val.jsonl"))
    assert isinstance(report, muxlang.EvalReport)
    assert report.accuracy == report.mux.accuracy == report.details["mux"].accuracy
    assert set(report.baselines) == {"single_best", "single_best_sc", "agent_forest", "slm_mux",
                                     "union", "oracle_any_sample"}
    assert report.per_model["qwen2_72b"] > 0.9 and report.dataset.items == 819
    assert report.details["single_best"].model in report.per_model
    assert main(["eval", str(GSM8K / "gsm8k.mux"), "--store", gsm8k_store, "--dataset",
                 str(GSM8K / "gsm8k-test.jsonl"), "--validation", str(GSM8K / "gsm8k-val.jsonl"),
                 "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    mine = json.loads(json.dumps(report.to_dict(), sort_keys=True))
    printed.pop("seconds"), mine.pop("seconds")
    assert mine == printed
    assert muxlang.EvalReport.from_dict(report.to_dict()).to_dict() == report.to_dict()
    if "records" in printed:  # per item, from the first trial
        assert len(report.records) == 819
        right = sum(r.correct for r in report.records) / len(report.records)
        assert right == pytest.approx(report.accuracy)
        assert all(r.correct == (r.answer is not None and r.answer == r.gold)
                   for r in report.records)
        assert {r.model for r in report.records} <= set(report.per_model) | {None}


def test_evaluate_needs_an_existing_store(tmp_path):
    with pytest.raises(muxlang.MuxError):
        muxlang.Session(store=tmp_path / "none.sqlite").evaluate(GSM8K / "gsm8k.mux", "x")
    assert not (tmp_path / "none.sqlite").exists()


def test_tune_matches_tune_json(gsm8k_store, capsys):
    session = muxlang.Session(store=gsm8k_store)
    result = session.tune(GSM8K / "tune.mux", "zeroeval-gsm8k", split=0.5, trials=25)
    assert isinstance(result, muxlang.TuneResult)
    best = result.best
    assert best.rule in ("slm_mux", "majority") and sum(best.pool.values()) == best.samples
    assert 0.85 < best.val_accuracy < 1 and 0.85 < best.test_accuracy < 1
    assert result.front and all(isinstance(e, muxlang.TuneEntry) for e in result.front)
    assert result.baselines.references["qwen2_72b"].test_accuracy > 0.9
    assert result.split == {"fraction": 0.5, "seed": 0} and result.store.endswith("gsm8k.sqlite")
    assert main(["tune", str(GSM8K / "tune.mux"), "--store", gsm8k_store, "--dataset",
                 "zeroeval-gsm8k", "--split", "0.5", "--trials", "25", "--json",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    data = json.loads(printed)
    assert data == json.loads(json.dumps(result.to_dict())) | {"spec": data["spec"]}
    assert json.dumps(muxlang.TuneResult.from_dict(data).to_dict()) == printed.strip()


def test_tune_with_test_data_and_its_errors(gsm8k_store):
    session = muxlang.Session(store=gsm8k_store)
    spec = muxlang.load(GSM8K / "tune.mux")
    result = session.tune(spec, str(GSM8K / "gsm8k-val.jsonl"),
                          test=str(GSM8K / "gsm8k-test.jsonl"), trials=10, objectives=["accuracy"])
    assert result.test.items == 819 and result.best.test_accuracy is not None
    assert result.split is None
    with pytest.raises(muxlang.MuxError, match="either"):
        session.tune(spec, "zeroeval-gsm8k", test="x", split=0.5)
    with pytest.raises(muxlang.MuxError, match="no tune block 'nope'"):
        session.tune(spec, "zeroeval-gsm8k", tune="nope")


def test_tune_mistakes_are_told_in_the_python_api_s_words_not_the_command_line_s(
        gsm8k_store, tmp_path):
    """The library decides, the command line parses and prints: a Python caller who passed
    keyword arguments reads of ``test``, ``split``, ``references``, ``trials``, never of
    ``--test`` or ``--split`` flags it never gave."""
    from muxlang.errors import DatasetError

    session = muxlang.Session(store=gsm8k_store)
    spec = muxlang.load(GSM8K / "tune.mux")
    val = str(GSM8K / "gsm8k-val.jsonl")
    told = {}
    for name, kwargs in {
        "both": {"test": "x", "split": 0.5},
        "trials": {"trials": 0},
        "simulations": {"simulations": 0},
        "reference": {"references": ["nope_model"]},
        "same data": {"test": val},
    }.items():
        with pytest.raises(muxlang.MuxError) as caught:
            session.tune(spec, val, **kwargs)
        told[name] = str(caught.value)
    assert "either test" in told["both"] and "split" in told["both"]
    assert told["trials"].startswith("trials must be at least 1")
    assert "reference 'nope_model': no such model in the spec" in told["reference"]
    assert "holds the same questions" in told["same data"]
    assert isinstance(caught.value, DatasetError)  # the last one: the data's fault
    for message in told.values():
        assert "--" not in message, message

    # a test set that shares questions with the search data: the warning speaks of data too
    part = tmp_path / "part.jsonl"
    part.write_text("".join(Path(val).read_text().splitlines(keepends=True)[:40]))
    warned: list[str] = []
    muxlang.Session(store=gsm8k_store, warn=warned.append).tune(
        spec, val, test=str(part), trials=1, objectives=["accuracy"])
    assert any("40 of the 40 questions of the test data" in w and "also in the dataset" in w
               for w in warned), warned
    assert not any("--" in w for w in warned), warned


# ---- docs/api.md -------------------------------------------------------------------------------
def test_the_examples_of_docs_api_run(server, monkeypatch, capsys):
    """Every ``python`` block of docs/api.md, in order, in one namespace, from the repository
    root: the recordings example on a temporary store, the server examples against the scripted
    server."""
    server.answer = varied
    monkeypatch.setenv("MUXLANG_DEMO_URL", server.openai_url)
    monkeypatch.chdir(ROOT)
    default_store = (ROOT / "muxlang.sqlite").exists()
    text = (ROOT / "docs" / "api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 3
    namespace: dict = {"__name__": "__docs__"}
    for block in blocks:
        exec(compile(block, "docs/api.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "SLM-MUX 0.9" in out and "best: " in out and "broken.mux:2:10" in out
    assert (ROOT / "muxlang.sqlite").exists() == default_store  # only the temporary store
    assert namespace["r"].text and namespace["r"].error is None
