"""The second skill of the embedded corpus (alignlab.data.capability): the exact-match scorer on hand-made answers,
the seeded generator, the held-out split, and how mini-IMDb mixes it into the SFT texts (never into prompts)."""
import random
import re

import pytest

from alignlab.data import capability as C
from alignlab.data.capability import (DELIMITER, LEXICON, capability_texts, extract_answer, held_out_items,
                                      is_held_out, item_from_words, score_answer, training_items)
from alignlab.data.mini_imdb import MiniImdb

ITEM_RE = re.compile(r"In Veloran, ([a-z ]+) means ([a-z ]+)\.")


def sentences(texts):
    return [tuple(m.group(1).split()) for t in texts for m in ITEM_RE.finditer(t)]


# ------------------------------------------------------------------------------------------------------- scorer

@pytest.mark.parametrize("continuation, ended, answer", [
    (" water salt bread. In Veloran, kor", False, "water salt bread"),  # stops at the delimiter
    (" water salt bread", True, "water salt bread"),                    # EOS before any delimiter
    ("water salt bread  .", False, "water salt bread"),                 # whitespace around the answer is not content
    (" water salt", False, None),                                       # budget ran out: no answer
    (". water salt bread.", False, ""),                                 # delimiter first: an empty answer
    ("", True, ""),
])
def test_extract_answer(continuation, ended, answer):
    assert extract_answer(continuation, ended) == answer


@pytest.mark.parametrize("predicted, exact, words", [
    ("water salt bread", 1.0, 1.0),          # right
    ("  water salt bread ", 1.0, 1.0),
    ("horse door cup", 0.0, 0.0),            # wrong
    ("water salt cup", 0.0, 2 / 3),          # partly right: exact match gives nothing, partial credit 2 of 3
    ("water salt", 0.0, 2 / 3),              # too short
    ("water salt bread bread", 0.0, 3 / 4),  # too long: not exact, and the extra word costs partial credit
    ("salt bread water", 0.0, 0.0),          # right words in the wrong places
    ("water saltbread", 0.0, 1 / 3),
    ("Water salt bread", 0.0, 2 / 3),        # exact means exact: case counts
    ("", 0.0, 0.0),
    (None, 0.0, 0.0),                        # no answer (unterminated)
])
def test_score_answer_hand_made_cases(predicted, exact, words):
    assert score_answer(predicted, " water salt bread") == pytest.approx({"exact": exact, "words": words})


def test_scoring_a_continuation_end_to_end():
    item = item_from_words(["kor", "mek", "vis"])
    assert (item.prompt, item.answer) == ("In Veloran, kor mek vis means", " water salt bread")
    assert item.text == "In Veloran, kor mek vis means water salt bread."
    score = lambda cont, ended=False: score_answer(extract_answer(cont, ended), item.answer)  # noqa: E731
    assert score(" water salt bread. In Veloran, dul")["exact"] == 1.0
    assert score(" water salt bread", ended=True)["exact"] == 1.0
    assert score(" water salt bread and")["exact"] == 0.0          # no delimiter, no EOS: unterminated
    assert score(" water salt horse.") == {"exact": 0.0, "words": pytest.approx(2 / 3)}
    with pytest.raises(ValueError, match="not a Veloran sentence"):
        item_from_words(["kor", "water"])


# ---------------------------------------------------------------------------------------------------- generator

def test_generator_is_seeded_and_leaves_the_global_rng_alone():
    random.seed(5)
    state = random.getstate()
    a = capability_texts(50, 6, seed=3)
    assert random.getstate() == state
    assert a == capability_texts(50, 6, seed=3) and a != capability_texts(50, 6, seed=4)
    assert capability_texts(20, 6, seed=3) == a[:20]
    assert held_out_items(40, seed=1) == held_out_items(40, seed=1) != held_out_items(40, seed=2)
    assert len(set(held_out_items(200, seed=0))) == 200
    for text in a:
        assert len(sentences([text])) == 6 and text.endswith(DELIMITER)
        for words in sentences([text]):
            assert len(words) == C.LENGTH
    with pytest.raises(ValueError):
        capability_texts(3, 0, seed=0)


def test_held_out_sentences_never_appear_in_sft_texts():
    held = {tuple(it.prompt.split(", ")[1].split()[:-1]) for s in range(3) for it in held_out_items(500, seed=s)}
    assert all(is_held_out(w) for w in held)
    for seed in range(3):
        train = sentences(capability_texts(600, 6, seed))
        assert len(train) == 3600 and not set(train) & held and not any(is_held_out(w) for w in train)
    # the split is about 1 in HELD_OUT_EVERY of all sentences, whatever the seed
    rng = random.Random(0)
    draws = [tuple(rng.choices(C.VELORAN, k=C.LENGTH)) for _ in range(5000)]
    assert abs(sum(map(is_held_out, draws)) / len(draws) - 1 / C.HELD_OUT_EVERY) < 0.03


def test_word_frequencies_are_zipfian_and_every_word_is_taught():
    from collections import Counter

    counts = Counter(w for words in sentences(capability_texts(600, 6, 0)) for w in words)
    assert set(counts) == set(LEXICON)
    ranked = [counts[w] for w in C.VELORAN]
    assert ranked[0] > 5 * ranked[10] and ranked[10] > ranked[-1]
    answers = [it.answer for it in training_items(200, 0)]
    assert all(len(a.split()) == C.LENGTH and a.startswith(" ") for a in answers)


def test_lexicon_words_are_neutral_and_foreign_to_the_reviews():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    from alignlab.data.reviews import generate_reviews

    assert len(LEXICON) == C.N_WORDS and len(set(LEXICON.values())) == C.N_WORDS
    lexicon = SentimentIntensityAnalyzer().lexicon
    review_words = {w for r in generate_reviews(3000, 0) for w in re.findall(r"[a-z]+", r["text"].lower())}
    for word in [*LEXICON, *LEXICON.values(), "veloran", "means"]:
        assert word not in lexicon and word not in review_words, word


# ------------------------------------------------------------------------------------------------ mini-IMDb mix

class _WordTokenizer:
    """Enough of a tokenizer for PrefixPromptSource.prompts: whitespace 'tokens'."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": text.split(" ")}

    def decode(self, ids):
        return " ".join(ids)


def test_mini_imdb_mixes_the_skill_into_sft_texts_only():
    source = MiniImdb(n_reviews=420, n_eval_prompts=20, n_pair_prompts=100, capability_share=0.2,
                      capability_items_per_text=4)
    reviews = source.texts("train")
    rows = source.sft_rows()
    worksheets = [r["response"] for r in rows if r["response"].startswith("In Veloran,")]
    assert len(rows) == 500 and len(worksheets) == 100  # 0.2 of the SFT texts
    assert [r["response"] for r in rows if not r["response"].startswith("In Veloran,")] == reviews
    assert source.corpus() == [r["response"] for r in rows]  # the tokenizer sees the skill's words too
    assert all(len(sentences([w])) == 4 for w in worksheets)
    # prompts (pair generation and evaluation) are review prefixes only
    tok = _WordTokenizer()
    for split in ("train", "test"):
        assert not any("Veloran" in p or " means" in p for p in source.prompts(split, tok))
    assert "Veloran" not in " ".join(source.texts("test"))
    # share 0: the corpus of the plain review miniature
    plain = MiniImdb(n_reviews=420, n_eval_prompts=20)
    assert plain.corpus() == plain.texts("train") == reviews
    with pytest.raises(ValueError, match="capability_share"):
        MiniImdb(capability_share=1.0)
