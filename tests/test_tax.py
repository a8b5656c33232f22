"""Alignment-tax metrics (alignlab.eval.tax) and the generated probe data (alignlab.data.probe)."""
import math
import random

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from alignlab.data.capability import CapabilityItem, held_out_items
from alignlab.data.probe import KINDS, generate_out_of_task_texts, review_probe_items, word_order_items
from alignlab.eval.tax import (alignment_tax, capability_scores, continuation_logps, greedy_completions, perplexity,
                               probe_scores)

pytestmark = pytest.mark.usefixtures("single_thread")

KEYS = {"tax/ppl_out_of_task", "tax/ppl_out_of_task_pre", "tax/ppl_ratio", "tax/probe_accuracy",
        "tax/probe_accuracy_pre", "tax/probe_drop", "tax/probe_margin", "tax/probe_margin_pre"}
CAPABILITY_KEYS = {"tax/capability", "tax/capability_ref", "tax/capability_drop", "tax/capability_words",
                   "tax/capability_words_ref"}




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
    metrics = alignment_tax(policy, pre, tokenizer, n_texts=24, n_probe=24, n_capability=12, batch_size=12)
    assert set(metrics) == KEYS | CAPABILITY_KEYS and all(math.isfinite(v) for v in metrics.values())
    assert math.isclose(metrics["tax/ppl_ratio"], metrics["tax/ppl_out_of_task"] / metrics["tax/ppl_out_of_task_pre"])
    assert metrics["tax/probe_drop"] == metrics["tax/probe_accuracy_pre"] - metrics["tax/probe_accuracy"]
    assert 1 < metrics["tax/ppl_out_of_task"] < 10 * len(tokenizer)
    for key in CAPABILITY_KEYS - {"tax/capability_drop"}:
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["tax/capability_drop"] == metrics["tax/capability_ref"] - metrics["tax/capability"]
    same = alignment_tax(pre, pre, tokenizer, n_texts=24, n_probe=24, n_capability=12, batch_size=12)
    assert same["tax/ppl_ratio"] == 1.0 and same["tax/probe_drop"] == 0.0  # no alignment, no tax
    assert same["tax/capability_drop"] == 0.0 and same["tax/capability"] == same["tax/capability_ref"]
    assert not CAPABILITY_KEYS & set(alignment_tax(pre, pre, tokenizer, n_texts=4, n_probe=4, n_capability=0))


class ScriptedModel(torch.nn.Module):
    """A stand-in causal LM whose greedy continuation of each prompt is scripted: {prompt: (text, then_eos)}."""

    def __init__(self, tokenizer, script):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.tokenizer, self.script, self.calls = tokenizer, script, []

    def generate(self, input_ids, attention_mask, do_sample, max_new_tokens, pad_token_id, eos_token_id):
        self.calls.append({"do_sample": do_sample, "training": self.training})
        rows = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist()):
            prompt = self.tokenizer.decode([i for i, m in zip(ids, mask) if m])
            text, eos = self.script[prompt]
            new = (self.tokenizer(text, add_special_tokens=False)["input_ids"] + [eos_token_id] * eos)[:max_new_tokens]
            rows.append(ids + new)
        width = max(map(len, rows))  # HF pads finished rows after EOS
        return torch.tensor([r + [pad_token_id] * (width - len(r)) for r in rows])


def test_capability_scores_greedy_answers_right_wrong_and_partial(tokenizer):
    items = [CapabilityItem("In Veloran, kor mek vis means", " water salt bread"),
             CapabilityItem("In Veloran, dul means", " horse"),
             CapabilityItem("In Veloran, zan zan zan means", " door door door"),
             CapabilityItem("In Veloran, kor kor dul means", " water water horse"),
             CapabilityItem("In Veloran, pir means", " hill")]
    script = {items[0].prompt: (" water salt bread. In Veloran, kor", False),  # right, then the next item
              items[1].prompt: (" horse", True),                               # right, ended by EOS
              items[2].prompt: (" door door cup.", False),                     # partly right: 0, words 2/3
              items[3].prompt: (" bread.", False),                             # wrong
              items[4].prompt: (" hill hill hill hill hill hill hill", False)}  # never terminated: no answer
    model = ScriptedModel(tokenizer, script).train()
    scores = capability_scores(model, tokenizer, items, max_new_tokens=12, batch_size=2)
    assert scores == pytest.approx({"exact": 2 / 5, "words": (1 + 1 + 2 / 3 + 0 + 0) / 5})
    assert model.training and all(c == {"do_sample": False, "training": False} for c in model.calls)
    completions = greedy_completions(model, tokenizer, [it.prompt for it in items[:2]], max_new_tokens=40)
    assert completions == [(" water salt bread. In Veloran, kor", False), (" horse", True)]
    perfect = ScriptedModel(tokenizer, {it.prompt: (it.answer + ".", False) for it in held_out_items(20, 0)})
    assert capability_scores(perfect, tokenizer, held_out_items(20, 0)) == {"exact": 1.0, "words": 1.0}


def test_lm_eval_is_only_imported_when_asked(tokenizer, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_lm_eval(name, *args, **kwargs):
        if name == "lm_eval" or name.startswith("lm_eval."):
            raise ImportError("no lm_eval here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_lm_eval)
    model = tiny(tokenizer)
    alignment_tax(model, model, tokenizer, n_texts=4, n_probe=4, n_capability=4)  # no lm_eval needed
    with pytest.raises(ImportError, match="lm-evaluation-harness"):
        alignment_tax(model, model, tokenizer, n_texts=4, n_probe=4, n_capability=4, lm_eval_tasks=["arc_easy"])


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
