"""Issue 14, day one: scored runs (gold, correct, accuracy), --keep-fields, --limit and
--log-samples of ``muxlang run``, and the same through the Python API."""
from __future__ import annotations

import json

import muxlang
from muxlang.cli import main
from tests.support.helpers import read_jsonl, spec_text


def answer_sum(model: str, prompt: str, seed: int) -> str:
    """Model 'id-a' adds right, the others are off by one."""
    numbers = [int(x) for x in prompt.split("What is ")[1].split("?")[0].split(" + ")]
    total = sum(numbers) + (0 if model == "id-a" else 1)
    return f"Adding up.\n#### {total}"


def test_scored_run_keep_fields_limit_and_sample_log(server, api_key, write_spec, write_records,
                                                      tmp_path, capsys):
    server.answer = answer_sum
    spec = write_spec(spec_text(server.openai_url, samples=2, accuracies={"a": 0.9, "b": 0.5,
                                                                         "c": 0.4}))
    records = [{"id": f"r{i}", "question": f"What is {i} + {i}?", "answer": f"#### {2 * i}",
                "topic": "sums", "level": i} for i in range(6)]
    records.append({"id": "nogold", "question": "What is 1 + 1?"})
    out, log = tmp_path / "out.jsonl", tmp_path / "samples.jsonl"
    status = main(["run", str(spec), "--input", str(write_records(records)), "--output",
                   str(out), "--keep-fields", "topic,level", "--limit", "5",
                   "--log-samples", str(log)])
    assert status == 0
    lines = read_jsonl(out)
    assert [line["id"] for line in lines] == [f"r{i}" for i in range(5)]  # --limit 5
    for i, line in enumerate(lines):
        assert line["gold"] == f"#### {2 * i}"
        # a is right and b, c (off by one, agreeing) outvote nothing: slm_mux ties go by accuracy
        assert line["correct"] is (line["answer"] == str(2 * i))
        assert line["fields"] == {"topic": "sums", "level": i}
        assert line["text"].startswith("Adding up.")
    err = capsys.readouterr().err
    right = sum(line["correct"] for line in lines)
    assert f"accuracy {right / 5:.1%} ({right}/5 scored)" in err
    assert "30 samples logged" in err
    samples = read_jsonl(log)
    assert len(samples) == 5 * 3 * 2
    first = next(s for s in samples if s["id"] == "r1" and s["member"] == "a")
    assert first["model"] == "id-a" and first["sample"] in (0, 1)
    assert first["text"].endswith("#### 2") and first["answer"] == "2" and first["key"] is not None
    assert first["prompt"][-1] == {"role": "user", "content": "Question: What is 1 + 1?"}
    assert first["error"] is None and first["tokens"]["input"] > 0 and first["latency"] >= 0
    assert {(s["id"], s["member"], s["sample"]) for s in samples} == {
        (f"r{i}", m, k) for i in range(5) for m in "abc" for k in range(2)}


def test_a_record_without_gold_is_not_scored_and_the_api_scores_too(server, api_key,
                                                                   write_spec, tmp_path):
    server.answer = answer_sum
    spec = muxlang.loads(spec_text(server.openai_url, samples=1), name="t.mux")
    session = muxlang.Session()
    results = session.run(spec, [{"id": 1, "question": "What is 2 + 3?", "answer": "5"},
                                 {"id": 2, "question": "What is 2 + 3?"}])
    assert results[0].gold == "5" and results[0].correct is (results[0].answer == "5")
    assert results[1].gold is None and results[1].correct is None
    assert json.loads(json.dumps(results[0].to_dict()))["correct"] == results[0].correct


def test_dry_runs_send_nothing_and_print_the_plan(server, api_key, write_spec, write_records,
                                                  tmp_path, capsys):
    priced = spec_text(server.openai_url, samples=3, backend="n = true").replace(
        "  seed = 100", "  seed = 100\n  max_tokens = 200\n  input_price = 1\n  output_price = 2")
    spec = write_spec(priced)
    records = [{"id": i, "question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(8)]
    source = write_records(records)
    store = tmp_path / "s.sqlite"
    assert main(["run", str(spec), "-i", str(source), "-o", str(tmp_path / "o.jsonl"),
                 "--dry-run", "--limit", "4"]) == 0
    out = capsys.readouterr().out
    assert server.requests == []
    assert "dry run: nothing is sent. 4 records, 36 samples asked for, 0 in the store, 36 to draw" in out
    assert "backend local: 36 samples in 12 requests (n > 1 used)" in out
    assert "at most 7,200 output" in out and "estimated cost: at most $" in out
    # collect the first two items, then a dry run of collect and of a cached run says so
    assert main(["collect", str(spec), "--dataset", str(source), "--store", str(store),
                 "--limit", "2", "--no-progress"]) == 0
    sent = len(server.requests)
    assert sent == 2 * 3  # one request per model and item: n = 3
    assert main(["collect", str(spec), "--dataset", str(source), "--store", str(store),
                 "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert plan["records"] == 8 and plan["cached"] == 18 and plan["to_draw"] == 54
    assert plan["backends"]["local"]["requests"] == 18
    assert main(["run", str(spec), "-i", str(source), "-o", str(tmp_path / "o.jsonl"),
                 "--store", str(store), "--dry-run"]) == 0
    assert "8 records, 72 samples asked for, 18 in the store, 54 to draw" in capsys.readouterr().out
    assert len(server.requests) == sent


def test_dry_run_cost_is_unknown_without_prices(server, api_key, write_spec, write_records,
                                                tmp_path, capsys):
    spec = write_spec(spec_text(server.openai_url, samples=2))
    source = write_records([{"id": 1, "question": "What is 1 + 1?"}])
    assert main(["run", str(spec), "-i", str(source), "-o", "-", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "estimated cost: —" in out and "$0" not in out
    assert "probed at the start" in out


def test_a_dotenv_file_gives_env_values(server, write_spec, write_records, tmp_path,
                                        monkeypatch, capsys):
    """``.env`` in the working directory sets the key a spec's env(...) names; the real
    environment wins over it."""
    from muxlang import envfile
    from tests.support.helpers import KEY, KEY_ENV

    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(f"# keys for the local server\n{KEY_ENV}={KEY}\n"
                                   "MUXLANG_TEST_ALREADY=from-file\n")
    monkeypatch.setenv("MUXLANG_TEST_ALREADY", "from-env")
    envfile.reset()
    try:
        spec = write_spec(spec_text(server.openai_url, samples=1))
        source = write_records([{"id": 1, "question": "What is 1 + 1?"}])
        assert main(["run", str(spec), "-i", str(source), "-o", str(tmp_path / "o.jsonl"),
                     "--no-progress"]) == 0
        assert read_jsonl(tmp_path / "o.jsonl")[0]["error"] is None
        import os

        assert os.environ[KEY_ENV] == KEY and os.environ["MUXLANG_TEST_ALREADY"] == "from-env"
        assert server.requests  # the key from .env let the run reach the server
    finally:
        monkeypatch.delenv(KEY_ENV, raising=False)
        envfile.reset()


def test_store_takes_a_value_everywhere_and_cache_means_the_default_store(
        server, api_key, write_spec, write_records, tmp_path, monkeypatch, capsys):
    """`run --store SPEC -i ...` no longer takes the spec as an optional store value: --store
    always names a store (as in every command); --cache caches in the default one."""
    import pytest

    server.answer = answer_sum
    spec = write_spec(spec_text(server.openai_url, samples=1))
    source = write_records([{"id": 1, "question": "What is 1 + 2?"}])
    with pytest.raises(SystemExit):  # argparse: SPEC is missing, --store took the spec path
        main(["run", "--store", str(spec), "-i", str(source), "-o", "-"])
    monkeypatch.setenv("MUXLANG_STORE", str(tmp_path / "default.sqlite"))
    assert main(["run", str(spec), "-i", str(source), "-o", str(tmp_path / "a.jsonl"),
                 "--cache", "--no-progress"]) == 0
    assert (tmp_path / "default.sqlite").exists()
    sent = len(server.requests)
    assert main(["run", str(spec), "-i", str(source), "-o", str(tmp_path / "b.jsonl"),
                 "--cache", "--no-progress"]) == 0
    assert len(server.requests) == sent  # served by the default store
    assert read_jsonl(tmp_path / "b.jsonl")[0]["cached"] == 3


def test_the_readme_first_spec_runs_against_a_local_server_without_a_key(server, monkeypatch):
    from pathlib import Path

    monkeypatch.delenv("MUXLANG_API_KEY", raising=False)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    text = readme.split("## A spec", 1)[1].split("```", 2)[1]
    spec = muxlang.loads(text, name="readme.mux")
    session = muxlang.Session(backends={"local": server.openai_url})
    result, = session.run(spec, [{"id": 1, "question": "What is 1 + 1?", "answer": "2"}])
    assert result.error is None and result.answer is not None and result.correct is not None


def test_collect_log_samples_writes_one_line_per_sample_drawn(server, api_key, write_spec,
                                                              write_records, tmp_path, capsys):
    server.answer = answer_sum
    spec = write_spec(spec_text(server.openai_url, samples=2))
    source = write_records([{"id": f"q{i}", "question": f"What is {i} + 2?", "answer": str(i + 2)}
                            for i in range(3)])
    log = tmp_path / "collect.jsonl"
    assert main(["collect", str(spec), "--dataset", str(source), "--store",
                 str(tmp_path / "s.sqlite"), "--log-samples", str(log), "--no-progress"]) == 0
    rows = read_jsonl(log)
    assert sorted((r["id"], r["member"], r["sample"]) for r in rows) == sorted(
        (f"q{i}", m, k) for i in range(3) for m in "abc" for k in range(2))
    row = next(r for r in rows if r["id"] == "q1" and r["member"] == "a")
    assert row["answer"] == "3" and row["text"].endswith("#### 3") and row["error"] is None
    assert row["prompt"][-1]["content"] == "Question: What is 1 + 2?"


def test_a_record_aware_equivalence_scores_by_the_record():
    """An equivalence keyed by the record (code by execution: for_record) scores a run's answer
    as eval scores it: gold and answer keyed with the record."""
    from muxlang.ir import Task
    from muxlang.scoring import Scorer

    class ByRecord:
        def key(self, answer):
            raise AssertionError("not used for a record-aware equivalence")

        def for_record(self, record):
            return lambda text: str(eval(text.replace("x", str(record["x"]))))  # noqa: S307

    scorer = Scorer(Task(name="t", user="{x}"))
    scorer._equivalence, scorer._key, scorer._extract = ByRecord(), ByRecord().key, str
    assert scorer.score({"x": 3, "answer": "x * 2"}, "x + 3") == ("x * 2", True)
    assert scorer.score({"x": 3, "answer": "x * 2"}, "x + 4") == ("x * 2", False)
    assert scorer.score({"x": 3}, "x") == (None, None)
