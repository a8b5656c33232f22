"""Byte-level BPE tokenizer trained on the generated reviews."""

import pytest
from transformers import AutoTokenizer

from alignlab.data.reviews import generate_reviews
from alignlab.tokenizer import EOS_TOKEN, train_bpe_tokenizer


@pytest.fixture(scope="module")
def texts():
    return [r["text"] for r in generate_reviews(2000, seed=0)]


@pytest.fixture(scope="module")
def tok(texts):
    return train_bpe_tokenizer(texts, vocab_size=1024)


ODD = ["", " ", "  two  spaces ", "Ünïcödé — naïve café 🎬🍿", "tabs\tand\nnewlines\r\n", "12345 67.89",
       "UPPER lower MiXeD", "<b>html</b> & \"quotes\" 'single'", "中文 日本語 한국어"]


def test_round_trip_exact(tok, texts):
    for x in texts[:300] + ODD:
        ids = tok(x)["input_ids"]
        assert tok.decode(ids) == x


def test_vocab_size_and_special_tokens(tok):
    assert len(tok) == 1024
    assert tok.eos_token == tok.bos_token == tok.pad_token == tok.unk_token == EOS_TOKEN
    assert tok.eos_token_id is not None and tok.pad_token_id == tok.eos_token_id
    assert tok.convert_ids_to_tokens(tok.eos_token_id) == EOS_TOKEN
    assert tok.padding_side == "right"
    # encode adds no bos/eos (Pythia-like); callers append eos themselves
    assert tok.eos_token_id not in tok("The film is great.")["input_ids"]


def test_small_corpus_gives_smaller_vocab():
    small = train_bpe_tokenizer(["the film the film the film"], vocab_size=1024)
    assert 257 < len(small) < 1024
    assert small.decode(small("the film")["input_ids"]) == "the film"
    with pytest.raises(ValueError):
        train_bpe_tokenizer(["x"], vocab_size=100)


def test_bpe_merges(tok, texts):
    lengths = [len(tok(x)["input_ids"]) for x in texts[:200]]
    chars = [len(x) for x in texts[:200]]
    assert sum(lengths) < sum(chars) / 3
    assert len(tok(" film")["input_ids"]) == 1  # a frequent word is one token


def test_deterministic(tok, texts):
    again = train_bpe_tokenizer(texts, vocab_size=1024)
    assert again.backend_tokenizer.to_str() == tok.backend_tokenizer.to_str()


def test_save_and_reload(texts, tmp_path):
    tok = train_bpe_tokenizer(texts[:500], vocab_size=512, save_dir=tmp_path / "tok")
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert len(reloaded) == len(tok) == 512
    assert reloaded.eos_token_id == tok.eos_token_id and reloaded.pad_token_id == tok.pad_token_id
    for x in texts[:100] + ODD:
        assert reloaded(x)["input_ids"] == tok(x)["input_ids"]
        assert reloaded.decode(reloaded(x)["input_ids"]) == x
    # padding uses the eos id, on the right unless the caller asks for left
    batch = reloaded(["The film is great.", "The film is great and the score is lovely."], padding=True)
    short, mask = batch["input_ids"][0], batch["attention_mask"][0]
    assert short[-1] == reloaded.pad_token_id and mask[-1] == 0 and mask[0] == 1
    reloaded.padding_side = "left"
    batch = reloaded(["The film is great.", "The film is great and the score is lovely."], padding=True)
    assert batch["input_ids"][0][0] == reloaded.pad_token_id and batch["attention_mask"][0][0] == 0
