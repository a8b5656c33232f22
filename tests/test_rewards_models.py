"""reward=hf_classifier and reward=reward_model on tiny random-init classifiers saved locally, pair labelling
by the classifier's reward, and the win-rate / TDPO table helpers of alignlab.eval.winrate."""
import math

import pytest
import torch
from hydra.utils import instantiate

from alignlab.data.pairs import label_pairs
from alignlab.errors import ConfigError, ModelLoadError
from alignlab.eval.winrate import format_table, tdpo_table, win_rate, winrate_vs_chosen
from alignlab.rewards import HFClassifierReward, RewardModelReward, VaderReward
from conftest import compose_config
from fixtures_hub import make_tiny_classifier

PROMPTS = ["The film was", "I", "", "A story about", "Honestly,"] * 3
RESPONSES = [" wonderful and moving.", " hated it" + " so much" * 60, "", " two friends.", " great!"] * 3


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    return make_tiny_classifier(tmp_path_factory.mktemp("clf"))


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory):
    return make_tiny_classifier(tmp_path_factory.mktemp("rm"), id2label={0: "LABEL_0"}, seed=1)


@pytest.fixture(scope="module")
def classifier(classifier_dir):
    return HFClassifierReward(model_name=str(classifier_dir), batch_size=4, max_length=64, device="cpu")


def manual_logits(path, texts, max_length=64):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
    out = []
    with torch.no_grad():
        for t in texts:
            enc = tok(t or tok.eos_token, truncation=True, max_length=max_length, return_tensors="pt")
            out.append(model(**enc).logits[0])
    return torch.stack(out)


# ---- hf_classifier ---------------------------------------------------------------------------------------------
def test_classifier_scores_are_label_probabilities(classifier, classifier_dir):
    scores = classifier.score(PROMPTS, RESPONSES)
    assert len(scores) == len(PROMPTS) and all(0.0 <= s <= 1.0 for s in scores)
    assert len({round(s, 6) for s in scores}) > 2  # not a constant
    expected = manual_logits(classifier_dir, [p + r for p, r in zip(PROMPTS, RESPONSES)]).softmax(-1)[:, 1]
    assert scores == pytest.approx(expected.tolist(), abs=1e-5)
    negative = HFClassifierReward(model_name=str(classifier_dir), label="NEGATIVE", max_length=64, device="cpu")
    assert [a + b for a, b in zip(scores, negative.score(PROMPTS, RESPONSES))] == pytest.approx([1.0] * len(scores))


def test_classifier_sees_prompt_plus_response(classifier):
    full = "The acting was not good at all."
    cuts = [0, 4, 15, len(full)]
    scores = classifier.score([full[:k] for k in cuts], [full[k:] for k in cuts])
    assert max(scores) - min(scores) < 1e-6


def test_classifier_batching_invariance(classifier_dir, classifier):
    base = classifier.score(PROMPTS, RESPONSES)
    for batch_size in (1, 3, 64):
        other = HFClassifierReward(model_name=str(classifier_dir), batch_size=batch_size, max_length=64,
                                   device="cpu")
        assert other.score(PROMPTS, RESPONSES) == pytest.approx(base, abs=1e-5)


def test_classifier_unknown_label_lists_the_labels(classifier_dir):
    with pytest.raises(ConfigError, match=r"reward.label='HAPPY'.*\['NEGATIVE', 'POSITIVE'\]"):
        HFClassifierReward(model_name=str(classifier_dir), label="HAPPY")
    assert HFClassifierReward(model_name=str(classifier_dir), label="positive").label_index == 1


def test_classifier_edge_cases(classifier, tmp_path):
    assert classifier.score([], []) == []
    with pytest.raises(ValueError, match=r"3 prompts vs 2 responses"):
        classifier.score(["a", "b", "c"], ["x", "y"])
    with pytest.raises(ModelLoadError, match=r"reward.model_name=.*no such path"):
        HFClassifierReward(model_name=str(tmp_path / "absent"))
    with pytest.raises(ModelLoadError, match=r"hub is unreachable"):
        HFClassifierReward(model_name="siebert/sentiment-roberta-large-english")  # HF_HUB_OFFLINE=1 in tests
    with pytest.raises(ConfigError, match="truncation_side"):
        HFClassifierReward(model_name="x", truncation_side="middle")


def test_classifier_progress_bar_for_more_than_one_batch(classifier, capsys):
    classifier.score(PROMPTS[:3], RESPONSES[:3])
    assert "hf_classifier" not in capsys.readouterr().err
    classifier.score(PROMPTS, RESPONSES)
    assert "hf_classifier" in capsys.readouterr().err


def test_default_device_is_cuda_when_available(classifier_dir):
    reward = HFClassifierReward(model_name=str(classifier_dir))
    assert reward.device == ("cuda" if torch.cuda.is_available() else "cpu")


def test_pairs_are_labelled_by_classifier_reward(classifier):
    prompt = "The film was"
    completions = [" wonderful.", " awful.", " fine, I guess.", " a masterpiece!"]
    rewards = classifier.score([prompt] * 4, completions)
    samples = [{"completion": c, "completion_ids": [i], "prompt_ids": [9]} for i, c in enumerate(completions)]
    pairs = label_pairs(prompt, samples, rewards)
    assert len(pairs) == 6 and len(set(rewards)) == 4
    by_text = dict(zip(completions, rewards))
    for pair in pairs:
        assert pair["chosen_reward"] > pair["rejected_reward"]
        assert pair["chosen_reward"] == by_text[pair["chosen"]] and pair["rejected_reward"] == by_text[pair["rejected"]]
    best = max(completions, key=by_text.get)
    assert sum(p["chosen"] == best for p in pairs) == 3 and not any(p["rejected"] == best for p in pairs)


# ---- reward_model ----------------------------------------------------------------------------------------------
def test_reward_model_scores_are_the_logit(reward_model_dir):
    reward = RewardModelReward(model_name=str(reward_model_dir), batch_size=4, max_length=64, device="cpu",
                               input_format="concat", truncation_side="right")
    scores = reward.score(PROMPTS, RESPONSES)
    expected = manual_logits(reward_model_dir, [p + r for p, r in zip(PROMPTS, RESPONSES)])[:, 0]
    assert len(scores) == len(PROMPTS) and scores == pytest.approx(expected.tolist(), abs=1e-5)
    for batch_size in (1, 64):
        again = RewardModelReward(model_name=str(reward_model_dir), batch_size=batch_size, max_length=64,
                                  device="cpu", input_format="concat", truncation_side="right")
        assert again.score(PROMPTS, RESPONSES) == pytest.approx(scores, abs=1e-5)


def test_reward_model_pair_input_and_left_truncation(reward_model_dir):
    reward = RewardModelReward(model_name=str(reward_model_dir), max_length=32, device="cpu")  # pair, left
    assert reward.input_format == "pair" and reward.truncation_side == "left"
    scores = reward.score(PROMPTS, RESPONSES)
    assert len(scores) == len(PROMPTS) and all(math.isfinite(s) for s in scores)
    # left truncation keeps the end: prompts that differ only before their last 32 tokens score the same
    a, b = reward.score(["y " * 100 + "x " * 100, "x " * 300], [" the same ending"] * 2)
    assert a == pytest.approx(b, abs=1e-5)
    concat = RewardModelReward(model_name=str(reward_model_dir), max_length=32, device="cpu", input_format="concat")
    a, b = concat.score(["y " * 100 + "x " * 100, "x " * 300], [" the same ending"] * 2)
    assert a == pytest.approx(b, abs=1e-5)
    right = RewardModelReward(model_name=str(reward_model_dir), max_length=32, device="cpu", input_format="concat",
                              truncation_side="right")
    a, b = right.score(["y " * 100 + "x " * 100, "x " * 300], [" the same ending"] * 2)
    assert a != pytest.approx(b, abs=1e-5)


def test_reward_model_needs_one_output(classifier_dir):
    with pytest.raises(ConfigError, match=r"has 2 outputs .*num_labels=1.*reward=hf_classifier"):
        RewardModelReward(model_name=str(classifier_dir))


def test_reward_configs_instantiate(tmp_path, classifier_dir, reward_model_dir):
    cfg = compose_config(tmp_path, ["reward=hf_classifier", f"reward.model_name={classifier_dir}",
                                    "reward.max_length=64"])
    assert compose_config(tmp_path, ["reward=hf_classifier"]).reward.model_name == \
        "siebert/sentiment-roberta-large-english"
    reward = instantiate(cfg.reward)
    assert isinstance(reward, HFClassifierReward) and reward.label == "POSITIVE"
    assert len(reward.score(["a"], ["b"])) == 1
    cfg = compose_config(tmp_path, ["reward=reward_model", f"reward.model_name={reward_model_dir}",
                                    "reward.max_length=64"])
    assert isinstance(instantiate(cfg.reward), RewardModelReward)


# ---- win rate and the TDPO table -------------------------------------------------------------------------------
def test_win_rate_counts_ties_half():
    assert win_rate([1, 2, 3, 4], [0, 2, 5, 4]) == pytest.approx((1 + 0.5 + 0 + 0.5) / 4)
    assert win_rate([1.0], [1.05], tie_tolerance=0.1) == 0.5
    with pytest.raises(ValueError):
        win_rate([1], [1, 2])


def test_winrate_vs_chosen():
    vader = VaderReward()
    samples = [{"prompt": "p1", "completion": " wonderful, great!", "reward": None},
               {"prompt": "p2", "completion": " awful.", "reward": None},
               {"prompt": "p3", "completion": " no chosen response for this one"}]
    for s in samples[:2]:
        s["reward"] = vader.score([s["prompt"]], [s["completion"]])[0]
    chosen = {"p1": " okay.", "p2": " lovely and brilliant."}
    out = winrate_vs_chosen(vader, samples[:2], chosen)
    assert out == {"eval/winrate_vs_chosen": 0.5, "eval/reward_chosen": pytest.approx(
        sum(vader.score(["p1", "p2"], [" okay.", " lovely and brilliant."])) / 2), "eval/winrate_n": 2.0}
    # samples without a reward are scored here; unmatched prompts are left out
    assert winrate_vs_chosen(vader, [{"prompt": "p1", "completion": " wonderful, great!"}, samples[2]],
                             chosen)["eval/winrate_vs_chosen"] == 1.0
    assert winrate_vs_chosen(vader, samples[2:], chosen) == {}


def test_tdpo_table():
    results = [{"config": {"method": {"name": "tdpo2", "beta": 0.1, "alpha": 0.5}},
                "metrics": {"eval/pref_accuracy": 0.6733, "eval/entropy": 4.915}},
               {"config": {"method": {"name": "dpo", "beta": 0.1}},
                "metrics": {"eval/pref_accuracy": 0.5943, "eval/entropy": 3.196}},
               {"config": {"method": {"name": "dpo", "beta": 0.1}},
                "metrics": {"eval/pref_accuracy": 0.6, "eval/entropy": 3.0}}]
    rows = tdpo_table(results)
    assert [r["run"] for r in rows] == ["tdpo2 beta=0.1 alpha=0.5", "dpo beta=0.1", "dpo beta=0.1 #2"]
    assert rows[0]["accuracy_%"] == pytest.approx(67.33) and rows[1]["entropy"] == pytest.approx(3.196)
    assert math.isnan(rows[0]["reward"])
    text = format_table(rows)
    assert "accuracy_%" in text and "reward" not in text.splitlines()[0] and "67.330" in text
