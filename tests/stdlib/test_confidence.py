"""Member confidence functions: self-consistency (the default) and the CISC log-probability vote."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from muxlang.errors import MuxError
from muxlang.ir import Call
from muxlang.stdlib import registry
from muxlang.stdlib.selection import Ballot


def build(name, **args):
    return registry.CONFIDENCES[name].load()(**args)


keys_st = st.lists(st.sampled_from(["a", "b", "c", None]), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(keys_st)
def test_self_consistency_is_the_ballot(keys):
    ballot = Ballot.of_samples(keys)
    assert build("self_consistency")(keys) == (ballot.top, ballot.confidence)


@settings(max_examples=300, deadline=None)
@given(keys_st, st.data())
def test_logprob_vote_limits(keys, data):
    lps = data.draw(st.lists(st.floats(-5, 0), min_size=len(keys), max_size=len(keys)))
    # equal log-probabilities: every weight equal, plain counting
    assert build("logprob_vote")(keys, [-1.0] * len(keys)) == build("self_consistency")(keys)
    answer, conf = build("logprob_vote")(keys, lps)
    assert 0 <= conf <= 1
    assert (answer is None) == all(k is None for k in keys)
    # no log-probabilities (or some missing): self-consistency
    assert build("logprob_vote")(keys, None) == build("self_consistency")(keys)
    assert build("logprob_vote")(keys, [None] + lps[1:]) == build("self_consistency")(keys)


def test_confident_minority_wins():
    keys = ["a", "a", "b"]
    lps = [-3.0, -3.0, -0.1]  # two unsure samples say a, one sure sample says b
    assert build("self_consistency")(keys) == ("a", pytest.approx(2 / 3))
    answer, conf = build("logprob_vote", temperature=0.5)(keys, lps)
    w = [math.exp(-6.0), math.exp(-6.0), math.exp(-0.2)]
    assert answer == "b" and conf == pytest.approx(w[2] / sum(w))
    # equal weights tie: the answer sampled first
    assert build("logprob_vote")(["b", "a"], [-1.0, -1.0])[0] == "b"


def test_arguments_checked():
    with pytest.raises(MuxError, match="temperature"):
        build("logprob_vote", temperature=0)
    assert [p.name for p in registry.CONFIDENCES["logprob_vote"].params] == ["temperature"]
    assert "self_consistency" in registry.CONFIDENCES
