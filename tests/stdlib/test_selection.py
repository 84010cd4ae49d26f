"""Selection rules: hand-worked cases of Algorithm 1 and the baselines, and property tests."""
from __future__ import annotations

import random

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from muxlang.stdlib import registry
from muxlang.stdlib.selection import Ballot, Selection, majority, single, slm_mux, top_answer

# --------------------------------------------------------------------------------------------
# slm_mux: hand-worked


def test_clear_winner():
    votes = [["18", "18", "17"], ["20", "20", "20"], ["5", "6", "7"]]
    sel = slm_mux(votes, [0.9, 0.5, 0.7])
    assert sel == Selection(1, "20", 1.0, (("18", 2 / 3), ("20", 1.0), ("5", 1 / 3)))


def test_confidence_tie_broken_by_accuracy():
    votes = [["18", "18", "17"], ["20", "20", "19"]]
    assert slm_mux(votes, [0.6, 0.8]).index == 1
    assert slm_mux(votes, [0.8, 0.6]).index == 0
    sel = slm_mux(votes, [0.6, 0.8])
    assert sel.answer == "20" and sel.confidence == pytest.approx(2 / 3)


def test_tie_broken_by_index_when_accuracies_equal_or_unknown():
    votes = [["a", "a"], ["b", "b"], ["c", "c"]]
    assert slm_mux(votes, [0.7, 0.7, 0.7]).index == 0
    assert slm_mux(votes, [None, None, None]).index == 0
    assert slm_mux(votes, [None, 0.1, None]).index == 1  # any known accuracy beats None
    assert slm_mux(votes, [None, 0.5, 0.5]).index == 1
    assert slm_mux(votes, []).index == 0  # no accuracies at all: pool order


def test_unparseable_samples_count_in_k():
    # answering once out of five scores 0.2, not 1.0 (the reference implementation's bug)
    votes = [["7", None, None, None, None], ["8", "8", "9", "10", None]]
    sel = slm_mux(votes, [0.99, 0.1])
    assert sel.scores == (("7", 0.2), ("8", 0.4))
    assert (sel.index, sel.answer, sel.confidence) == (1, "8", 0.4)


def test_all_unparseable_gives_no_index():
    sel = slm_mux([[None, None], [None]], [0.9, 0.8])
    assert sel == Selection(None, None, 0.0, ((None, 0.0), (None, 0.0)))
    assert slm_mux([], []) == Selection(None, None, 0.0, ())


def test_members_without_samples_or_answers_are_never_chosen():
    votes = [[], [None, None, None], ["3", None, None]]
    sel = slm_mux(votes, [1.0, 1.0, 0.0])
    assert (sel.index, sel.answer) == (2, "3")
    assert sel.scores[0] == (None, 0.0) and sel.scores[1] == (None, 0.0)


def test_within_member_tie_takes_the_answer_sampled_first():
    # not the smallest key: that favours answers that sort first (small numbers, negatives)
    sel = slm_mux([["b", "a", "b", "a"]], [0.5])
    assert (sel.answer, sel.confidence) == ("b", 0.5)
    assert slm_mux([["a", "b", "a", "b"]], [0.5]).answer == "a"
    assert slm_mux([[None, "9", "10", "10", "9"]], [0.5]).answer == "9"
    assert top_answer(["-1", "3", "-1", "3", "3"]) == ("3", 3)  # a clear top is a clear top
    assert top_answer([None, None]) == (None, 0)


def test_different_sample_counts_use_each_members_k():
    # 2/3 beats 3/5; 4/6 ties 2/3 exactly and goes to accuracy
    assert slm_mux([["x", "x", "y"], ["z", "z", "z", "w", "v"]], [0.1, 0.9]).index == 0
    sel = slm_mux([["x", "x", "y"], ["z"] * 4 + ["w", "v"]], [0.1, 0.9])
    assert sel.index == 1 and sel.confidence == pytest.approx(2 / 3)


def test_majority_and_slm_mux_differ_on_the_same_votes():
    # two weak members agree on a wrong "5" now and then; one member is certain of "7"
    votes = [["5", "5", "6"], ["5", "5", "3"], ["7", "7", "7"]]
    accs = [0.5, 0.4, 0.6]
    mux = slm_mux(votes, accs)
    assert (mux.index, mux.answer, mux.confidence) == (2, "7", 1.0)
    forest = majority(votes, accs)
    assert (forest.answer, forest.confidence) == ("5", pytest.approx(4 / 9))
    assert forest.index == 0  # the best-accuracy member that voted "5" (0.5 > 0.4)


def test_a_nested_mux_ballot_is_one_answer_with_its_confidence():
    nested = Ballot.of_answer("7", 0.6)
    assert (nested.keys, nested.top, nested.confidence) == (("7",), "7", 0.6)
    sel = slm_mux([nested, ["5", "5", "6"]], [None, None])
    assert (sel.index, sel.answer) == (1, "5")  # 2/3 beats the nested mux's 0.6
    assert slm_mux([Ballot.of_answer("7", 0.7), ["5", "5", "6"]], [None, None]).index == 0
    assert majority([Ballot.of_answer("7", 1.0), ["5", "7"]], [None, None]).answer == "7"
    assert Ballot.of_answer(None, 0.9).confidence == 0.0


# --------------------------------------------------------------------------------------------
# majority and single: hand-worked


def test_majority_counts_every_sample():
    votes = [["1", "2", None], ["2", None, None], ["3", "3", None]]
    sel = majority(votes, [0.5, 0.9, 0.1])
    # "2" and "3" both have 2 votes: "2"'s best voter (0.9) beats "3"'s (0.1)
    assert (sel.answer, sel.index) == ("2", 1)
    assert sel.confidence == pytest.approx(2 / 9)  # share of all samples drawn


def test_majority_ties_go_to_the_most_trusted_voter_then_its_first_sample():
    votes = [["b"], ["a"]]
    assert majority(votes, [0.5, 0.5]).answer == "b"  # equal voters: voted first (pool order)
    assert majority(votes, [0.5, 0.9]).answer == "a"  # a's voter is better
    assert majority(votes, [None, 0.1]).answer == "a"
    assert majority([["c", "a", "a", "c"]], [0.5]).answer == "c"  # then sample order
    assert majority([["x", "x"], ["x"]], [0.3, 0.3]).index == 0  # equal accuracy: lowest index
    # both tied answers were voted by the trusted member 1: its first sample decides, even
    # though member 0 (less trusted, earlier in the pool) voted "x" first
    sel = majority([["x", "y"], ["y", "x"]], [0.3, 0.9])
    assert (sel.answer, sel.index) == ("y", 1)
    assert majority([["x", "y"], ["y", "x"]], [0.3, 0.3]).answer == "x"  # trust by pool order


def test_majority_all_unparseable():
    assert majority([[None], [None, None]], [0.5, 0.6]) == Selection(
        None, None, 0.0, ((None, 0.0), (None, 0.0)))


def test_single_is_best_members_self_consistency():
    votes = [["1", "1", "1"], ["2", "3", "2"]]
    sel = single(votes, [0.5, 0.8])
    assert (sel.index, sel.answer, sel.confidence) == (1, "2", pytest.approx(2 / 3))
    assert single(votes, [0.8, 0.8]).index == 0  # ties: lowest index
    assert single(votes, [None, None]).index == 0
    # the best member could not answer: no answer (it is that model's baseline)
    assert single([["1"], [None, None]], [0.1, 0.9]).index is None
    # members that drew no samples (a failed model) are skipped
    assert single([["1"], []], [0.1, 0.9]).index == 0


def test_rules_are_registered():
    from muxlang.ir import Call

    for name, fn in (("slm_mux", slm_mux), ("majority", majority), ("single", single)):
        assert registry.get_rule(Call(name=name)) is fn


# --------------------------------------------------------------------------------------------
# Properties

ANSWERS = st.sampled_from(["1", "2", "3", "4"]) | st.none()
MEMBER = st.lists(ANSWERS, min_size=0, max_size=7)
POOL = st.lists(MEMBER, min_size=1, max_size=5)
ACC = st.none() | st.sampled_from([0.1, 0.5, 0.5, 0.9])
RULES = [slm_mux, majority, single]


@st.composite
def pools(draw):
    votes = draw(POOL)
    accs = draw(st.lists(ACC, min_size=len(votes), max_size=len(votes)))
    return votes, accs


@settings(max_examples=400, deadline=None)
@given(pools(), st.randoms(use_true_random=False))
def test_sample_order_only_breaks_ties(pool, rnd):
    """Shuffling a member's samples changes no confidence, and no answer unless it was tied."""
    votes, accs = pool
    shuffled = [rnd.sample(list(s), len(s)) for s in votes]
    for rule in RULES:
        before, after = rule(votes, accs), rule(shuffled, accs)
        assert before.confidence == after.confidence
        assert [s for _, s in before.scores] == [s for _, s in after.scores]
    for samples, mixed in zip(votes, shuffled):
        top, count = top_answer(samples)
        tied = sum(1 for key in set(samples) if key is not None and samples.count(key) == count)
        if tied == 1:
            assert top_answer(mixed) == (top, count)
        else:
            assert top_answer(mixed)[1] == count


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=2, max_value=9), st.sampled_from(["1", "2"]),
       st.sampled_from(["1", "2", "3"]), st.sampled_from(["2", "3", None]), ACC, ACC,
       st.booleans())
def test_unanimous_member_beats_one_with_k_minus_1_agreeing(k, a, b, odd, acc_full, acc_part,
                                                            full_first):
    assume(odd != b)
    full = [a] * k
    partial = [b] * (k - 1) + [odd]
    votes = [full, partial] if full_first else [partial, full]
    accs = [acc_full, acc_part] if full_first else [acc_part, acc_full]
    sel = slm_mux(votes, accs)
    assert sel.index == (0 if full_first else 1)
    assert (sel.answer, sel.confidence) == (a, 1.0)


@settings(max_examples=400, deadline=None)
@given(pools(), st.integers(min_value=0, max_value=6), ACC)
def test_appending_an_all_unparseable_member_changes_nothing(pool, k, acc):
    votes, accs = pool
    before = slm_mux(votes, accs)
    after = slm_mux(votes + [[None] * k], accs + [acc])
    assert (after.index, after.answer, after.confidence) == (before.index, before.answer,
                                                             before.confidence)
    assert after.scores == before.scores + ((None, 0.0),)
    m_before, m_after = majority(votes, accs), majority(votes + [[None] * k], accs + [acc])
    assert (m_after.index, m_after.answer) == (m_before.index, m_before.answer)


@settings(max_examples=400, deadline=None)
@given(pools())
def test_slm_mux_matches_algorithm_1(pool):
    """A direct, slow transcription of Algorithm 1 agrees with the fast rule."""
    votes, accs = pool
    sel = slm_mux(votes, accs)
    best = None
    for i, samples in enumerate(votes):
        answers = sorted({s for s in samples if s is not None})
        if not answers:
            continue
        f = {y: samples.count(y) / len(samples) for y in answers}
        y_star = max(answers, key=lambda y: (f[y], -samples.index(y)))  # ties: sampled first
        rank = (f[y_star], -1 if accs[i] is None else accs[i], -i)
        if best is None or rank > best[0]:
            best = (rank, i, y_star)
    if best is None:
        assert sel.index is None and sel.answer is None
    else:
        assert (sel.index, sel.answer, sel.confidence) == (best[1], best[2], best[0][0])


@settings(max_examples=300, deadline=None)
@given(pools())
def test_selection_invariants(pool):
    votes, accs = pool
    for rule in RULES:
        sel = rule(votes, accs)
        assert len(sel.scores) == len(votes)
        assert 0.0 <= sel.confidence <= 1.0
        if sel.index is None:
            assert sel.answer is None and sel.confidence == 0.0
        else:
            assert sel.answer in votes[sel.index]  # the chosen member did vote for it
            assert sel.answer is not None


def test_deterministic_across_repeated_calls():
    rnd = random.Random(0)
    votes = [[rnd.choice(["1", "2", None]) for _ in range(5)] for _ in range(4)]
    accs = [0.5, None, 0.5, 0.2]
    for rule in RULES:
        assert len({rule(votes, accs) for _ in range(20)}) == 1
