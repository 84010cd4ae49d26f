"""``muxlang import`` and ``muxlang eval`` from the command line (in-process ``main``)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from muxlang.cli import main

ROOT = Path(__file__).resolve().parents[2]
GSM8K = ROOT / "examples" / "zeroeval-gsm8k"

QUESTIONS = [{"id": "q1", "question": "1+1?", "answer": "2"},
             {"id": "q2", "question": "2+2?", "answer": "4"},
             {"id": "q3", "question": "3+3?", "answer": "6"}]


def sample(item, model, text, index=0):
    return {"id": item, "model": model, "sample": index, "temperature": 0.0, "text": text}


SAMPLES = [sample("q1", "M1", '{"answer": "2"}'), sample("q2", "M1", '{"answer": "4.0"}'),
           sample("q3", "M1", '{"answer": "7"}'), sample("q1", "M2", '{"answer": "$2"}'),
           sample("q2", "M2", '{"answer": "5"}'), sample("q3", "M2", '{"answer": "6"}')]

SPEC = """
backend rec {
  kind = replay
}
model one {
  backend = rec
  id = "M1"
  temperature = 0
}
model two {
  backend = rec
  id = "M2"
  temperature = 0
}
task t {
  user = "{question}"
  extract = json_field(field = "answer", then = "final_number")
  equivalence = numeric
  gold = "answer"
}
mux duo {
  task = t
  pool = [one, two]
}
"""


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MUXLANG_STORE", raising=False)
    (tmp_path / "tiny-questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    (tmp_path / "tiny-samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in SAMPLES))
    (tmp_path / "duo.mux").write_text(SPEC)
    (tmp_path / "valtypo.mux").write_text(SPEC.replace("pool = [one, two]",
                                                       'pool = [one, two]\n  validation = "tinny"'))
    (tmp_path / "slots.mux").write_text(SPEC.replace("kind = replay", 'kind = openai\n  url = '
                                                     '"http://127.0.0.1:9/v1"')
                                        .replace('user = "{question}"', 'user = "{question} {topic}"'))
    return tmp_path


def test_import_then_eval_json(files, capsys):
    assert main(["import", "tiny-samples.jsonl", "--questions", "tiny-questions.jsonl"]) == 0
    out = capsys.readouterr().out
    assert "imported 6 samples of 2 models on dataset 'tiny' (3 items)" in out
    assert (files / "muxlang.sqlite").exists()  # the default store: ./muxlang.sqlite
    assert main(["import", "tiny-samples.jsonl", "--questions", "tiny-questions.jsonl",
                 "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["samples_written"] == 0 and again["samples_read"] == 6

    assert main(["eval", "duo.mux", "--dataset", "tiny", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)  # exactly one JSON object on stdout
    assert report["per_model"] == pytest.approx({"one": 2 / 3, "two": 2 / 3})
    # no validation: ties by pool order -> "one" answers everywhere; AF ties -> smallest key
    assert report["baselines"]["slm_mux"] == pytest.approx(2 / 3)
    assert report["baselines"]["union"] == pytest.approx(1.0)
    assert report["contradiction"] == pytest.approx(2 / 3)  # q2 and q3; on q1 both are right
    assert report["validation"]["source"] == "none (pool order)"
    assert set(report["baselines"]) >= {"single_best", "single_best_sc", "agent_forest",
                                        "slm_mux", "union"}


def test_eval_with_a_questions_file_and_a_table(files, capsys):
    main(["import", "tiny-samples.jsonl", "--questions", "tiny-questions.jsonl"])
    capsys.readouterr()
    assert main(["eval", "duo.mux", "--dataset", "tiny-questions.jsonl",
                 "--validation", "tiny"]) == 0
    out = capsys.readouterr().out
    for text in ("Single-Best", "Single-Best-SC", "Agent Forest", "SLM-MUX", "Union (oracle)",
                 "Contradiction", "store: dataset tiny", "self-consistency is not exercised",
                 "validation dataset tiny is the evaluation dataset"):
        assert text in out, text


def test_store_from_the_environment_and_flag(files, capsys, monkeypatch):
    monkeypatch.setenv("MUXLANG_STORE", str(files / "env.sqlite"))
    main(["import", "tiny-samples.jsonl", "--questions", "tiny-questions.jsonl"])
    assert "env.sqlite" in capsys.readouterr().out
    main(["import", "tiny-samples.jsonl", "--questions", "tiny-questions.jsonl",
          "--store", str(files / "flag.sqlite")])
    assert "flag.sqlite" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["eval", "duo.mux", "--dataset", "nothing"], "neither a dataset in store"),
    (["eval", "duo.mux", "--dataset", "tiny", "--mux", "dou"], "did you mean 'duo'"),
    (["eval", "duo.mux", "--dataset", "tiny", "--validation", "nope"], "neither a dataset"),
    (["import", "missing.jsonl", "--questions", "tiny-questions.jsonl"], "missing.jsonl: no such file"),
    (["eval", "duo.mux", "--dataset", "tiny", "--store", "postgresql://u:pw@127.0.0.1:1/x"],
     "u:***@127.0.0.1:1"),
    # --store pointing at a data file instead of the store (was "internal error: DatabaseError")
    (["eval", "duo.mux", "--dataset", "tiny", "--store", "tiny-samples.jsonl"],
     "file is not a database"),
    (["import", "tiny-samples.jsonl", "--questions", "tiny-questions.jsonl",
      "--store", "tiny-questions.jsonl"], "file is not a database"),
    (["eval", "duo.mux", "--dataset", "tiny", "--store", "mysql://u:pw@127.0.0.1/x"],
     "store URL scheme 'mysql' is not supported"),
    # a validation dataset the spec names (not the command line) is blamed on the spec
    (["eval", "valtypo.mux", "--dataset", "tiny"],
     "mux 'duo' (line 21) takes its tie-break accuracies from validation = \"tinny\""),
    # a template that does not fit the records says which field is missing
    (["eval", "slots.mux", "--dataset", "tiny"], "record has no field 'topic'"),
])
def test_user_errors_are_one_line_without_traceback(files, capsys, argv, message):
    main(["import", "tiny-samples.jsonl", "--questions", "tiny-questions.jsonl"])
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and "pw@" not in err


def test_eval_does_not_create_a_store(files, capsys):
    assert main(["eval", "duo.mux", "--dataset", "tiny", "--store", "typo.sqlite"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert not (files / "typo.sqlite").exists()


def test_bad_line_from_the_cli(files, capsys):
    lines = (files / "tiny-samples.jsonl").read_text().splitlines()
    lines.insert(3, '{"id": "q1", "model": "M3", "sample": "zero", "temperature": 0, "text": ""}')
    (files / "bad.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["import", "bad.jsonl", "--questions", "tiny-questions.jsonl"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == "bad.jsonl:4: field 'sample': must be an integer >= 0"
    assert main(["eval", "duo.mux", "--dataset", "tiny-questions.jsonl"]) == 1
    assert "fewer stored" in capsys.readouterr().err  # nothing of the bad import was kept


def test_the_example_end_to_end_in_a_subprocess(tmp_path):
    """The README's main job: import the shipped GSM8K recordings, eval the example spec."""
    env_store = str(tmp_path / "e.sqlite")
    run = lambda *a: subprocess.run([sys.executable, "-m", "muxlang", *a, "--store", env_store],
                                    capture_output=True, text=True, cwd=ROOT, timeout=300)
    done = run("import", str(GSM8K / "zeroeval-gsm8k-samples.jsonl.gz"), "--questions",
               str(GSM8K / "zeroeval-gsm8k-questions.jsonl"))
    assert done.returncode == 0, done.stderr
    assert "14509 new" in done.stdout
    done = run("eval", str(GSM8K / "gsm8k.mux"), "--dataset", str(GSM8K / "gsm8k-test.jsonl"),
               "--validation", str(GSM8K / "gsm8k-val.jsonl"), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["dataset"]["items"] == 819 and len(report["per_model"]) == 11
    assert report["validation"]["source"] == "store: dataset gsm8k-val"
    assert report["details"]["single_best"]["model"] == "gemma2_27b"
    assert 0.85 < report["baselines"]["slm_mux"] < 0.95
    assert report["baselines"]["union"] > report["baselines"]["agent_forest"] > 0.85
