"""Prompt lookup: the longest recurring suffix within min..max, its most recent earlier match."""

from __future__ import annotations

from pagoda.engine.spec_decode.ngram import NgramProposer


def test_proposes_what_followed_the_suffix_earlier():
    assert NgramProposer(1, 3).propose([1, 2, 3, 4, 5, 9, 2, 3], 2) == [4, 5]


def test_longest_match_wins_over_a_more_recent_shorter_one():
    # suffix [7, 8, 9]: matched in full at 0 (-> 10); only [8, 9] at 5 (-> 20).
    tokens = [7, 8, 9, 10, 0, 8, 9, 20, 7, 8, 9]
    assert NgramProposer(1, 3).propose(tokens, 1) == [10]
    assert NgramProposer(1, 2).propose(tokens, 1) == [20]


def test_the_most_recent_match_of_the_longest_length():
    assert NgramProposer(2, 2).propose([5, 6, 1, 5, 6, 2, 5, 6], 1) == [2]


def test_no_match_of_min_length_proposes_nothing():
    assert NgramProposer(2, 4).propose([1, 2, 3, 4, 5, 3], 3) == []
    assert NgramProposer(1, 1).propose([4], 3) == []


def test_proposal_stops_at_the_end_of_the_context_and_at_k():
    assert NgramProposer(1, 1).propose([1, 2, 1], 5) == [2, 1]
    assert NgramProposer(1, 1).propose([1, 2, 3, 4, 5, 1], 2) == [2, 3]
