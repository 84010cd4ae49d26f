"""``muxlang import``: the shared ZeroEval data, bad lines, idempotency — on SQLite and PostgreSQL."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from muxlang.errors import DataError
from muxlang.store import Store, import_samples

from store_paths import EXAMPLES


def write_jsonl(path: Path, records) -> Path:
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


QUESTIONS = [{"id": "q1", "question": "1+1?", "answer": "2"},
             {"id": "q2", "question": "2+2?", "answer": "4"}]
GOOD = [{"id": "q1", "model": "m", "sample": 0, "temperature": 0.0, "text": "#### 2"},
        {"id": "q2", "model": "m", "sample": 0, "temperature": 0.0, "text": "#### 5"},
        {"id": "q1", "model": "n", "sample": 0, "temperature": 0.0, "text": "#### 2"}]


def test_import_of_the_shared_gsm8k_data(gsm8k_store):
    st = gsm8k_store
    info = st.get_dataset("zeroeval-gsm8k")
    assert info.n_items == 1319
    assert st.count_samples() == 14509
    assert st.count_samples("Qwen2-72B-Instruct") == 1319
    assert len(st.items(info)) == 1319


def test_import_on_both_databases_and_again(store, tmp_path):
    q = write_jsonl(tmp_path / "tiny-questions.jsonl", QUESTIONS)
    smp = write_jsonl(tmp_path / "tiny-samples.jsonl.gz", GOOD)
    first = import_samples(store, smp, q)
    assert (first.dataset, first.items, first.samples_read, first.samples_written) == ("tiny", 2, 3, 3)
    assert first.models == {"m": 2, "n": 1}
    again = import_samples(store, smp, q)
    assert again.samples_written == 0 and store.count_samples() == 3
    # same questions under another name: a second dataset, the samples are shared
    other = import_samples(store, smp, q, dataset="tiny-copy")
    assert other.samples_written == 0 and store.get_dataset("tiny-copy").n_items == 2
    runs = store.runs()
    assert [r["status"] for r in runs[:3]] == ["ok", "ok", "ok"]


@pytest.mark.skipif(not (EXAMPLES / "zeroeval-math-l5").is_dir(), reason="example missing")
def test_import_of_the_shared_math_data_on_postgres_too(store):
    d = EXAMPLES / "zeroeval-math-l5"
    result = import_samples(store, d / "zeroeval-math-l5-samples.jsonl.gz",
                            d / "zeroeval-math-l5-questions.jsonl")
    assert (result.items, result.samples_written, len(result.models)) == (721, 8652, 12)
    assert store.count_samples() == 8652


BAD_LINES = [
    ('{"id": "q1", "model": "m", "sample": 1, "temperature": 0, "text": "x"', 2, "invalid JSON"),
    ({"id": "q9", "model": "m", "sample": 1, "temperature": 0, "text": "x"}, 2, "field 'id': 'q9' is not in"),
    ({"model": "m", "sample": 1, "temperature": 0, "text": "x"}, 2, "field 'id': missing"),
    ({"id": "q1", "model": "", "sample": 1, "temperature": 0, "text": "x"}, 2, "field 'model'"),
    ({"id": "q1", "model": "m", "sample": -1, "temperature": 0, "text": "x"}, 2, "field 'sample'"),
    ({"id": "q1", "model": "m", "sample": "1", "temperature": 0, "text": "x"}, 2, "field 'sample'"),
    ({"id": "q1", "model": "m", "sample": 1, "temperature": "hot", "text": "x"}, 2, "field 'temperature'"),
    ({"id": "q1", "model": "m", "sample": 1, "temperature": 0, "text": 5}, 2, "field 'text'"),
    ({"id": "q1", "model": "m", "sample": 1, "temperature": 0}, 2, "field 'text': missing"),
    ({"id": "q1", "model": "m", "sample": 0, "temperature": 0.0, "text": "other"}, 2,
     "field 'text': sample 0 of 'm' on 'q1' differs from line 1"),
    ("[1, 2]", 2, "not a JSON object"),
]


@pytest.mark.parametrize("bad,line,message", BAD_LINES)
def test_a_bad_line_keeps_nothing(store, tmp_path, bad, line, message):
    q = write_jsonl(tmp_path / "tiny-questions.jsonl", QUESTIONS)
    smp = write_jsonl(tmp_path / "s.jsonl", [GOOD[0], bad, GOOD[1]])
    with pytest.raises(DataError) as info:
        import_samples(store, smp, q)
    assert info.value.file == str(smp) and info.value.line == line
    assert message in str(info.value) and str(info.value).startswith(f"{smp}:{line}: ")
    assert store.count_samples() == 0 and store.list_datasets() == []


def test_a_bad_question_line_keeps_nothing(store, tmp_path):
    q = write_jsonl(tmp_path / "q.jsonl", [QUESTIONS[0], {"id": "q2", "question": "2+2?"}])
    smp = write_jsonl(tmp_path / "s.jsonl", GOOD[:1])
    with pytest.raises(DataError, match=r"q.jsonl:2: field 'answer': missing"):
        import_samples(store, smp, q)
    assert store.count_samples() == 0 and store.list_datasets() == []


def test_a_failure_while_writing_keeps_nothing(store, tmp_path, monkeypatch):
    q = write_jsonl(tmp_path / "tiny-questions.jsonl", QUESTIONS)
    smp = write_jsonl(tmp_path / "s.jsonl", GOOD)

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(store, "_put_rows", boom)
    with pytest.raises(RuntimeError):
        import_samples(store, smp, q)
    monkeypatch.undo()
    assert store.count_samples() == 0 and store.list_datasets() == []
    assert store.runs()[0]["status"] == "failed"


def test_truncated_gzip_is_a_data_error(store, tmp_path):
    q = write_jsonl(tmp_path / "tiny-questions.jsonl", QUESTIONS)
    data = gzip.compress(("\n".join(json.dumps(r) for r in GOOD * 50)).encode())
    smp = tmp_path / "s.jsonl.gz"
    smp.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cannot read"):
        import_samples(store, smp, q)
    assert store.count_samples() == 0


def test_a_bad_line_after_written_batches_keeps_nothing(store, tmp_path, monkeypatch):
    import muxlang.store.importer as importer

    monkeypatch.setattr(importer, "IMPORT_BATCH", 2)  # batches are written before the bad line
    q = write_jsonl(tmp_path / "tiny-questions.jsonl", QUESTIONS)
    lines = [dict(GOOD[0], sample=i) for i in range(7)] + ['{"id": "q1", "model": "m"}']
    smp = write_jsonl(tmp_path / "s.jsonl.gz", lines)
    with pytest.raises(DataError, match=r"s.jsonl.gz:8: field 'sample': missing"):
        import_samples(store, smp, q)
    assert store.count_samples() == 0 and store.list_datasets() == []
    ok = write_jsonl(tmp_path / "ok.jsonl", lines[:7])
    assert import_samples(store, ok, q).samples_written == 7
