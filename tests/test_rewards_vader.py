"""VADER reward: (compound + 1) / 2 of prompt + response."""

import pytest

from alignlab.rewards import VaderReward


@pytest.fixture(scope="module")
def reward():
    return VaderReward(unused_option="ignored")


def test_hand_cases(reward):
    pos, neg, empty = reward.score(
        ["This movie was", "This movie was", ""],
        [" wonderful, I loved it.", " awful and boring, I hated it.", ""],
    )
    assert pos > 0.5 and neg < 0.5
    assert pos > 0.9 and neg < 0.1
    assert empty == 0.5


def test_prompt_and_response_are_concatenated(reward):
    # the score is of the full text, however it is split between prompt and response
    full = "The acting was not good at all."
    split = [full[:k] for k in (0, 4, 15, len(full))]
    scores = reward.score(split, [full[len(p):] for p in split])
    assert len(set(scores)) == 1
    assert scores[0] < 0.5  # "not good": VADER negation sees across the split


def test_matches_vader_compound(reward):
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    text = "The plot is dull, but the score is brilliant!"
    compound = SentimentIntensityAnalyzer().polarity_scores(text)["compound"]
    assert reward.score([text], [""]) == [pytest.approx((compound + 1) / 2)]


def test_range_and_length(reward):
    prompts = ["I", "The film", "It was"] * 5
    responses = [" great", " terrible!!!", " fine", " GREAT GREAT GREAT :)"] * 3 + ["", "", ""]
    scores = reward.score(prompts, responses)
    assert len(scores) == 15
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_mismatched_lengths_raise(reward):
    with pytest.raises(ValueError, match=r"3.*2"):
        reward.score(["a", "b", "c"], ["x", "y"])


def test_empty_batch(reward):
    assert reward.score([], []) == []


def test_progress_bar_only_for_large_batches(reward, capsys):
    reward.score(["good"] * 10, [""] * 10)
    assert "vader reward" not in capsys.readouterr().err
    out = VaderReward(batch_size=500).score(["good"] * 1001, [""] * 1001)
    assert len(out) == 1001 and len(set(out)) == 1
    assert "vader reward" in capsys.readouterr().err
