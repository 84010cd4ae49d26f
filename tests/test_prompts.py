"""The one prompt renderer and the sample keys built on it: stored prompt hashes must not move."""
from __future__ import annotations

import pytest

from muxlang import ir
from muxlang.errors import MuxError
from muxlang.prompts import RecordError, render
from muxlang.samples import SampleId, SampleKey, prompt_hash, sample_keys

TASK = ir.Task(name="t", user="Q: {question} ({note}) {meta}", system="Be brief about {topic}.",
               fields=("question", "note", "meta", "topic"))


def test_values_are_written_as_the_runtime_always_sent_them():
    record = {"question": "2+2?", "note": None, "meta": {"b": [1, "é"]}, "topic": 3}
    messages = render(TASK, record)
    assert messages == [{"role": "system", "content": "Be brief about 3."},
                        {"role": "user", "content": 'Q: 2+2? () {"b": [1, "é"]}'}]
    # pinned: samples stored for such a record (null field -> empty slot) are found by this hash
    assert prompt_hash(messages) == (
        "9a3847e56db864df2afd6b88004fa3bfba80f6a40799ae35411fa48d29ce7f60")


def test_a_missing_field_is_a_record_error_and_a_mux_error():
    with pytest.raises(RecordError, match="record has no field 'topic'") as caught:
        render(TASK, {"question": "x", "note": None, "meta": 1})
    assert isinstance(caught.value, MuxError)


def test_sample_ids_share_one_key_per_request():
    backend = ir.Backend(name="local", kind="openai", url="http://h")
    model = ir.Model(name="m", backend=backend, id="llama", temperature=1)
    messages = render(TASK, {"question": "q", "note": "n", "meta": 0, "topic": "t"})
    ids = sample_keys("local", "llama", model.sampling_params(), messages, [0, 1, 2])
    assert ids == [SampleId(SampleKey.for_model(model, messages), i) for i in range(3)]
    assert ids[0].key.params == '{"max_tokens":null,"seed":null,"temperature":1,"top_p":null}'
