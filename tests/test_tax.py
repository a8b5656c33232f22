"""Alignment-tax metrics (alignlab.eval.tax) and the generated probe data (alignlab.data.probe)."""
import math
import random

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from alignlab.data.probe import KINDS, generate_out_of_task_texts, review_probe_items, word_order_items
from alignlab.eval.tax import alignment_tax, continuation_logps, perplexity, probe_scores

pytestmark = pytest.mark.usefixtures("single_thread")

KEYS = {"tax/ppl_out_of_task", "tax/ppl_out_of_task_pre", "tax/ppl_ratio", "tax/probe_accuracy",
        "tax/probe_accuracy_pre", "tax/probe_drop", "tax/probe_margin", "tax/probe_margin_pre"}




@pytest.fixture(scope="module")
def reviews():
    from alignlab.data.reviews import generate_reviews

    return [r["text"] for r in generate_reviews(400, 0)]


@pytest.fixture(scope="module")
def tokenizer(reviews):
    from alignlab.tokenizer import train_bpe_tokenizer

    return train_bpe_tokenizer(reviews, 384)  # trained on reviews only, like the embedded model's


def tiny(tokenizer, seed=0):
    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(GPTNeoXConfig(
        vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=256, hidden_dropout=0.0, attention_dropout=0.0,
        pad_token_id=0, eos_token_id=0, bos_token_id=0))


def test_out_of_task_texts_are_seeded_and_not_reviews():
    texts = generate_out_of_task_texts(200, seed=3)
    assert texts == generate_out_of_task_texts(200, seed=3) and texts != generate_out_of_task_texts(200, seed=4)
    assert len(set(texts)) > 190
    words = {w.strip(".,;").lower() for t in texts for w in t.split()}
    assert not words & {"film", "movie", "plot", "actor", "acting", "script", "boring", "wonderful", "review"}
    assert {"degrees", "minutes", "platform", "river"} <= words  # several kinds: weather, recipe, travel, geography
    assert len(generate_out_of_task_texts(50, 0, kinds=["recipe"])) == 50
    with pytest.raises(ValueError, match="unknown out-of-task kinds"):
        generate_out_of_task_texts(5, 0, kinds=["poetry"])
    assert set(KINDS) == {"weather", "recipe", "travel", "geography", "household"}


def test_word_order_items_shuffle_the_same_words(reviews):
    items = word_order_items(reviews, 100, seed=1)
    assert len(items) == 100
    for it in items:
        assert it["good"] != it["bad"] and sorted(it["good"].split()) == sorted(it["bad"].split())
        assert it["good"].startswith(" ") and it["bad"].startswith(" ")
        assert any(r.startswith(it["prefix"] + it["good"]) for r in reviews)
    held_out = review_probe_items(50, seed=0)
    assert held_out == review_probe_items(50, seed=0)
    with pytest.raises(ValueError, match="only 0 word-order items"):
        word_order_items(["too short"], 3)


def test_perplexity_matches_a_direct_computation(tokenizer):
    model = tiny(tokenizer)
    texts = ["The river Danube flows through Vienna.", "Put two cups of flour into a deep pot."]
    nll, count = 0.0, 0
    with torch.no_grad():
        for t in texts:
            ids = torch.tensor([[tokenizer.eos_token_id] + tokenizer(t, add_special_tokens=False)["input_ids"]])
            logp = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
            nll -= logp.gather(1, ids[0, 1:, None]).sum().item()
            count += ids.shape[1] - 1
    assert math.isclose(perplexity(model, tokenizer, texts, batch_size=1), math.exp(nll / count), rel_tol=1e-4)
    assert math.isclose(perplexity(model, tokenizer, texts, batch_size=2), math.exp(nll / count), rel_tol=1e-4)
    a, b = continuation_logps(model, tokenizer, ["A good", "A good"], [" film", " film and more"])
    assert a > b  # more tokens, lower total log-likelihood


def test_alignment_tax_keys_and_values_on_a_tiny_model(tokenizer):
    policy, pre = tiny(tokenizer, 0), tiny(tokenizer, 1)
    metrics = alignment_tax(policy, pre, tokenizer, n_texts=24, n_probe=24, batch_size=12)
    assert KEYS <= set(metrics) and all(math.isfinite(v) for v in metrics.values())
    assert math.isclose(metrics["tax/ppl_ratio"], metrics["tax/ppl_out_of_task"] / metrics["tax/ppl_out_of_task_pre"])
    assert metrics["tax/probe_drop"] == metrics["tax/probe_accuracy_pre"] - metrics["tax/probe_accuracy"]
    assert 1 < metrics["tax/ppl_out_of_task"] < 10 * len(tokenizer)
    same = alignment_tax(pre, pre, tokenizer, n_texts=24, n_probe=24, batch_size=12)
    assert same["tax/ppl_ratio"] == 1.0 and same["tax/probe_drop"] == 0.0  # no alignment, no tax


def test_lm_eval_is_only_imported_when_asked(tokenizer, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_lm_eval(name, *args, **kwargs):
        if name == "lm_eval" or name.startswith("lm_eval."):
            raise ImportError("no lm_eval here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_lm_eval)
    model = tiny(tokenizer)
    alignment_tax(model, model, tokenizer, n_texts=4, n_probe=4)  # no lm_eval needed
    with pytest.raises(ImportError, match="lm-evaluation-harness"):
        alignment_tax(model, model, tokenizer, n_texts=4, n_probe=4, lm_eval_tasks=["arc_easy"])


def test_the_probe_is_solvable_by_a_model_trained_a_little_on_reviews(tokenizer, reviews):
    """The SFT model can do the probe (so its drop after alignment is a tax); a random model cannot."""
    from alignlab.data.tokenize import collate_sequences, encode

    items = review_probe_items(60, seed=0)
    model = tiny(tokenizer)
    untrained = probe_scores(model, tokenizer, items)["accuracy"]
    ids = [encode(tokenizer, r) for r in reviews]
    rng = random.Random(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(25):
        batch = collate_sequences([[tokenizer.eos_token_id]] * 16, rng.sample(ids, 16), tokenizer.pad_token_id)
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    trained = probe_scores(model, tokenizer, items)
    assert untrained < 0.75
    assert trained["accuracy"] >= 0.85 and trained["margin"] > 0
