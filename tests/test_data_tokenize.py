import pytest
import torch

from alignlab.data.chat import ChatRenderer
from alignlab.data.files import convert_rows, text_pair
from alignlab.data.rows import swap_preferences
from alignlab.data.tokenize import (IGNORE_INDEX, PreferenceCollator, SequenceCollator, TruncationStats,
                                    tokenize_pair, tokenize_text)
from alignlab.errors import ConfigError, DataError


class CharTokenizer:
    """One id per character (a=1, b=2, ...), EOS 0: makes expected ids easy to write by hand."""
    eos_token_id = 0
    pad_token_id = 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) - 96 for c in text]}


def test_pair_tokenisation_appends_eos_and_keeps_prompt_end():
    stats = TruncationStats()
    row = tokenize_pair(CharTokenizer(), {"prompt": "abcd", "chosen": "ef", "rejected": "g"}, max_length=6,
                        max_prompt_length=3, stats=stats)
    assert row["prompt_ids"] == [2, 3, 4]          # "bcd": the end of the prompt is kept
    assert row["chosen_ids"] == [5, 6, 0]          # "ef" + EOS
    assert row["rejected_ids"] == [7, 0]
    assert stats.prompt_truncated == 1 and stats.response_truncated == 0


def test_response_truncated_to_max_length_and_identical_pairs_dropped():
    stats = TruncationStats()
    row = tokenize_pair(CharTokenizer(), {"prompt": "ab", "chosen": "cdef", "rejected": "cdeg"}, max_length=4,
                        max_prompt_length=2, stats=stats)
    # both responses are cut to "cd" (2 tokens of room): identical, so the pair carries no preference
    assert row is None and stats.dropped == 1 and stats.response_truncated == 1
    kept = tokenize_pair(CharTokenizer(), {"prompt": "ab", "chosen": "cdef", "rejected": "cg"}, max_length=4,
                         max_prompt_length=2, stats=stats)
    assert kept["chosen_ids"] == [3, 4] and kept["rejected_ids"] == [3, 7]


def test_preference_collator_shapes_and_masks():
    rows = [{"prompt_ids": [1, 2], "chosen_ids": [3, 0], "rejected_ids": [4, 5, 0]},
            {"prompt_ids": [6], "chosen_ids": [7, 8, 9, 0], "rejected_ids": [0]}]
    batch = PreferenceCollator(pad_token_id=0)(rows)
    assert batch["num_pairs"] == 2
    assert batch["input_ids"].shape == (4, 5)      # 2 chosen rows then 2 rejected rows, padded to 5
    assert batch["input_ids"].tolist() == [[1, 2, 3, 0, 0], [6, 7, 8, 9, 0], [1, 2, 4, 5, 0], [6, 0, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    x = IGNORE_INDEX
    assert batch["labels"].tolist() == [[x, x, 3, 0, x], [x, 7, 8, 9, 0], [x, x, 4, 5, 0], [x, 0, x, x, x]]


def test_sequence_collator_masks_prompt():
    tokenizer = CharTokenizer()
    stats = TruncationStats()
    rows = [tokenize_text(tokenizer, {"prompt": "ab", "response": "c"}, 8, 8, stats),
            tokenize_text(tokenizer, {"prompt": "", "response": "de"}, 8, 8, stats)]
    batch = SequenceCollator(0)(rows)
    x = IGNORE_INDEX
    assert batch["input_ids"].tolist() == [[1, 2, 3, 0], [4, 5, 0, 0]]
    assert batch["labels"].tolist() == [[x, x, 3, 0], [4, 5, 0, x]]


def test_logps_ignore_prompt_and_padding():
    """Changing the logits at prompt and padding positions must not change the summed log-probs."""
    from alignlab.losses import sequence_logps, shift_for_next_token

    rows = [{"prompt_ids": [1, 2], "chosen_ids": [3, 0], "rejected_ids": [4, 5, 0]}]
    batch = PreferenceCollator(0)(rows)
    torch.manual_seed(0)
    logits = torch.randn(2, batch["input_ids"].shape[1], 8)
    base, n = sequence_logps(*shift_for_next_token(logits, batch["labels"]))
    assert n.tolist() == [2.0, 3.0]
    changed = logits.clone()
    scored = shift_for_next_token(torch.ones_like(logits), batch["labels"])[1] != IGNORE_INDEX
    changed[:, :-1][~scored] += 100.0              # positions that predict no response token
    changed[:, -1] += 100.0                        # the last position predicts nothing
    again, _ = sequence_logps(*shift_for_next_token(changed, batch["labels"]))
    torch.testing.assert_close(base, again)


def check_rows(rows, where, on_bad_row="error"):
    """What the file sources do to stored rows: alignlab.data.files.convert_rows with text_pair."""
    plain = ChatRenderer(None, "plain")
    return convert_rows(rows, where, on_bad_row, lambda row: text_pair(row, plain))


def test_bad_row_names_file_and_row():
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p", "rejected": "b"}]
    with pytest.raises(DataError, match=r"pairs\.jsonl row 1: missing 'chosen'"):
        check_rows(rows, "pairs.jsonl")
    assert len(check_rows(rows, "pairs.jsonl", on_bad_row="skip")) == 1
    with pytest.raises(ConfigError, match="data.on_bad_row"):
        check_rows(rows, "pairs.jsonl", on_bad_row="ignore")


@pytest.mark.parametrize("row,problem", [
    ({"chosen": "a", "rejected": "b"}, "missing 'prompt'"),
    ({"prompt": "p", "chosen": "a", "rejected": None}, "missing 'rejected'"),
    ({"prompt": "p", "chosen": 3, "rejected": "b"}, "'chosen' is a int, expected text"),
    ({"prompt": "p", "chosen": "", "rejected": ""}, "'chosen' and 'rejected' are both empty"),
])
def test_each_kind_of_bad_row_is_named(row, problem):
    good = {"prompt": "p", "chosen": "a", "rejected": "b"}
    with pytest.raises(DataError, match=rf"pairs\.jsonl row 2: {problem} \(set data.on_bad_row=skip"):
        check_rows([good, good, row], "pairs.jsonl")


def test_skipped_rows_are_counted(caplog):
    good = {"prompt": "p", "chosen": "a", "rejected": "b"}
    rows = [good, {"prompt": "p"}, {"prompt": "p", "chosen": 1, "rejected": "b"}, good,
            {"prompt": "p", "chosen": "", "rejected": ""}]
    with caplog.at_level("WARNING"):
        assert check_rows(rows, "pairs.jsonl", on_bad_row="skip") == [good, good]
    assert "pairs.jsonl: skipped 3 bad rows of 5 (first: [1, 2, 4])" in caplog.text
    with pytest.raises(DataError, match=r"pairs\.jsonl: no usable rows \(2 read, 2 bad\)"):
        check_rows(rows[1:3], "pairs.jsonl", on_bad_row="skip")


def test_swap_preferences_exchanges_chosen_and_rejected():
    assert swap_preferences([{"prompt": "p", "chosen": "a", "rejected": "b"}]) == \
        [{"prompt": "p", "chosen": "b", "rejected": "a"}]
