"""Every number right (issue 12): pairs trained on the tokens that were sampled, explicit dropout, ties counted as one
half, evaluation in eval mode, sampling from exactly the configured distribution, KL measured on the policy's own
samples, frozen models' logits through their own head, IPO's configured score, the merging defaults, RMSprop."""
import logging
import math

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

from alignlab.data.pairs import generate_pairs
from alignlab.data.rows import as_sequences, swap_preferences
from alignlab.data.tokenize import PreferenceCollator, TruncationStats, tokenize_pair
from alignlab.errors import ConfigError
from alignlab.eval.metrics import evaluate, preference_accuracy
from alignlab.forward import check_output_head, logits_at_positions
from alignlab.losses import pair_accuracy, sequence_kl
from alignlab.methods.dpo import DPO
from alignlab.methods.ipo import IPO
from alignlab.models import freeze, set_dropout
from alignlab.sampling import sample_completions
from conftest import compose_config

EOS = 0


class CharTokenizer:
    """One id per lower-case character (a=1 ... z=26), EOS = pad = 0."""
    eos_token_id = pad_token_id = EOS

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) - 96 for c in text]}

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(i + 96) for i in ids if not (skip_special_tokens and i == EOS))


def neox(seed: int = 0, dropout: float = 0.0, vocab: int = 27) -> GPTNeoXForCausalLM:
    config = GPTNeoXConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=64, rotary_pct=0.25, hidden_dropout=dropout,
                           attention_dropout=dropout, eos_token_id=EOS, pad_token_id=EOS, bos_token_id=EOS)
    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(config)


class LengthReward:
    def score(self, prompts, responses):
        return [float(len(r)) for r in responses]


class CodeReward:  # distinct texts score differently
    def score(self, prompts, responses):
        return [float(sum(map(ord, r))) for r in responses]


@pytest.fixture(autouse=True)
def _single_thread(single_thread):
    yield


# ---- 1. pairs keep the sampled token ids ------------------------------------------------------------------------
def pairs_cfg(**kw):
    return OmegaConf.create({"completions_per_prompt": 4, "max_new_tokens": 5, "temperature": 1.0, "top_p": 1.0,
                             "batch_size": 8, **kw})


def test_pairs_keep_the_sampled_ids_and_only_finished_samples_end_with_eos():
    model = neox(1)
    with torch.no_grad():  # make EOS likely enough that some samples end and some stop at max_new_tokens
        model.get_output_embeddings().weight[EOS] += 0.5
    splits, stats = generate_pairs(model, CharTokenizer(), LengthReward(), ["ab", "cd", "ef", "gh"] * 4, pairs_cfg(),
                                   0.0, seed=0)
    rows = splits["train"]
    assert rows and stats["samples"] == 64 and 0 < stats["truncated"] < 64
    for row in rows:
        for side in ("chosen", "rejected"):
            ids = row[f"{side}_ids"]
            assert CharTokenizer().decode(ids, skip_special_tokens=True) == row[side]
            assert EOS not in ids[:-1] and len(ids) <= 5
        tokenized = tokenize_pair(CharTokenizer(), row, 64, 16, TruncationStats())
        # trained on exactly what was sampled: EOS only where the sample ended with it
        assert tokenized["chosen_ids"] == row["chosen_ids"] and tokenized["rejected_ids"] == row["rejected_ids"]
        assert tokenized["prompt_ids"] == row["prompt_ids"]
    ends = [r[f"{side}_ids"][-1] == EOS for r in rows for side in ("chosen", "rejected")]
    assert any(ends) and not all(ends)
    dropped, _ = generate_pairs(model, CharTokenizer(), CodeReward(), ["ab", "cd", "ef", "gh"] * 8,
                                pairs_cfg(drop_truncated=True, completions_per_prompt=6), 0.0, seed=0)
    assert dropped["train"] and all(r[f"{s}_ids"][-1] == EOS for r in dropped["train"] for s in ("chosen", "rejected"))


def test_text_responses_get_eos_and_row_transforms_carry_the_ids():
    text_row = tokenize_pair(CharTokenizer(), {"prompt": "ab", "chosen": "cd", "rejected": "e"}, 64, 16,
                             TruncationStats())
    assert text_row["chosen_ids"] == [3, 4, EOS] and text_row["rejected_ids"] == [5, EOS]
    row = {"prompt": "ab", "chosen": "cd", "rejected": "e", "prompt_ids": [1, 2], "chosen_ids": [3, 4],
           "rejected_ids": [5, EOS], "chosen_reward": 1.0, "rejected_reward": 0.0}
    swapped = swap_preferences([row])[0]
    assert (swapped["chosen"], swapped["chosen_ids"], swapped["chosen_reward"]) == ("e", [5, EOS], 0.0)
    assert (swapped["rejected"], swapped["rejected_ids"], swapped["rejected_reward"]) == ("cd", [3, 4], 1.0)
    assert as_sequences([row], "both") == [
        {"prompt": "ab", "response": "cd", "prompt_ids": [1, 2], "response_ids": [3, 4]},
        {"prompt": "ab", "response": "e", "prompt_ids": [1, 2], "response_ids": [5, EOS]}]


def test_no_sequence_exceeds_max_length_whatever_the_prompt():
    stats = TruncationStats()
    row = {"prompt": "abcdefgh", "chosen": "c" * 20, "rejected": "d" * 20}
    assert tokenize_pair(CharTokenizer(), row, max_length=4, max_prompt_length=16, stats=stats) is None
    assert stats.dropped == 1
    kept = tokenize_pair(CharTokenizer(), row, max_length=12, max_prompt_length=16, stats=TruncationStats())
    assert len(kept["prompt_ids"]) + len(kept["chosen_ids"]) == 12 and kept["chosen_ids"][-1] != EOS


# ---- 2. dropout is one explicit setting -------------------------------------------------------------------------
def test_set_dropout_reaches_every_dropout():
    model = set_dropout(neox(0, dropout=0.3), 0.0)
    assert all(m.p == 0.0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    assert all(m.attention_dropout == 0.0 for m in model.modules() if hasattr(m, "attention_dropout"))
    assert model.config.hidden_dropout == model.config.attention_dropout == 0.0
    with pytest.raises(ConfigError, match="model.dropout"):
        set_dropout(model, 1.0)


def test_from_pretrained_policy_trains_with_the_configured_dropout(tmp_path):
    """A from_pretrained model arrives in eval mode; the start stage's trainable() puts it in train mode with
    model.dropout, so dropout acts (or not) by the setting, not by how the model was built."""
    from alignlab.pipeline.start import trainable

    neox(0, dropout=0.1).save_pretrained(tmp_path)
    cfg = OmegaConf.create({"dropout": 0.0, "activation_checkpointing": False})
    policy = trainable(AutoModelForCausalLM.from_pretrained(tmp_path), cfg)
    assert policy.training
    batch = PreferenceCollator(EOS)([{"prompt_ids": [1, 2, 3], "chosen_ids": [4, 5, EOS], "rejected_ids": [6, EOS]}])
    module = DPO(policy, freeze(AutoModelForCausalLM.from_pretrained(tmp_path)), beta=0.1)
    module.train()
    loss, _ = module.loss_and_metrics(batch)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)  # policy == reference: exactly ln 2
    noisy = trainable(AutoModelForCausalLM.from_pretrained(tmp_path), OmegaConf.create(
        {"dropout": 0.5, "activation_checkpointing": False}))
    module = DPO(noisy, freeze(AutoModelForCausalLM.from_pretrained(tmp_path)), beta=0.1)
    module.train()
    assert module.policy.training and not module.reference.training  # frozen models stay in eval mode
    assert module.loss_and_metrics(batch)[0].item() != pytest.approx(math.log(2), abs=1e-6)


# ---- 3. ties count one half ---------------------------------------------------------------------------------------
def test_pair_accuracy_counts_a_tie_as_one_half():
    chosen, rejected = torch.tensor([1.0, 0.0, 2.0, -1.0]), torch.tensor([0.0, 0.0, 3.0, -1.0])
    assert pair_accuracy(chosen, rejected).tolist() == [1.0, 0.5, 0.0, 0.5]


def test_a_policy_identical_to_the_reference_scores_one_half():
    model = freeze(neox(0))
    pairs = [{"prompt_ids": [1, 2], "chosen_ids": [3, EOS], "rejected_ids": [4, 5, EOS]},
             {"prompt_ids": [6], "chosen_ids": [7], "rejected_ids": [8, EOS]}]
    assert preference_accuracy(model, model, pairs, EOS, 8) == 0.5
    module = DPO(neox(0), freeze(neox(0)), beta=0.1)
    _, metrics = module.loss_and_metrics(PreferenceCollator(EOS)(pairs))
    assert metrics["rewards/accuracies"].tolist() == [0.5, 0.5]


# ---- 4./5./6. evaluation: eval mode, exact sampling settings, KL on the policy's own samples ----------------------
def eval_cfg(**kw):
    return OmegaConf.create({"n_prompts": 8, "max_new_tokens": 6, "temperature": 1.0, "top_p": 1.0,
                             "batch_size": 8, **kw})


def test_sampling_ignores_the_checkpoints_generation_config():
    model = neox(2)
    plain = sample_completions(model, CharTokenizer(), ["ab", "cd"], max_new_tokens=8, seed=0)
    model.generation_config.repetition_penalty = 50.0
    model.generation_config.no_repeat_ngram_size = 1
    model.generation_config.top_k = 2
    assert sample_completions(model, CharTokenizer(), ["ab", "cd"], max_new_tokens=8, seed=0) == plain


def test_evaluation_runs_in_eval_mode_and_restores_the_mode():
    policy, reference = neox(3, dropout=0.5), freeze(neox(4))
    policy.train()
    prompts = ["ab", "cd", "ef", "gh"]
    first, _ = evaluate(policy, reference, CharTokenizer(), LengthReward(), prompts, [], eval_cfg(), seed=0)
    second, _ = evaluate(policy, reference, CharTokenizer(), LengthReward(), prompts, [], eval_cfg(), seed=0)
    assert first["eval/kl"] == second["eval/kl"] and first["eval/entropy"] == second["eval/entropy"]
    assert policy.training and not reference.training


def test_sequence_kl_two_token_vocabulary_by_hand():
    p = torch.tensor([[[0.0, 0.0]]])                     # (1/2, 1/2)
    q = torch.tensor([[[math.log(3.0), 0.0]]])           # (3/4, 1/4)
    kl = sequence_kl(p, q, torch.tensor([[1]]))
    assert kl.item() == pytest.approx(0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25), abs=1e-6)
    assert sequence_kl(p, q, torch.tensor([[-100]])).item() == 0.0  # prompt/padding positions do not count


def test_eval_kl_is_measured_on_the_policys_own_samples_whatever_the_eval_temperature():
    policy, reference = neox(5), freeze(neox(6))
    prompts = ["ab", "cd", "ef", "gh"]
    hot, _ = evaluate(policy, reference, CharTokenizer(), LengthReward(), prompts, [], eval_cfg(), seed=0)
    cold, _ = evaluate(policy, reference, CharTokenizer(), LengthReward(), prompts, [], eval_cfg(temperature=0.3),
                       seed=0)
    assert cold["eval/kl"] == pytest.approx(hot["eval/kl"], abs=1e-6) and cold["eval/kl"] > 0
    assert hot["eval/kl_stderr"] > 0
    same, _ = evaluate(reference, reference, CharTokenizer(), LengthReward(), prompts, [], eval_cfg(), seed=0)
    assert same["eval/kl"] == 0.0 and same["eval/reward"] == same["eval/reward_ref"]


# ---- 7. frozen models' logits through their own head ------------------------------------------------------------
def test_logits_at_positions_apply_the_models_own_softcapping():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    config = Gemma2Config(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=2, num_key_value_heads=1, head_dim=16, final_logit_softcapping=0.5,
                          max_position_embeddings=64)
    torch.manual_seed(0)
    model = freeze(Gemma2ForCausalLM(config))
    ids = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    rows, cols = torch.tensor([0, 0, 1]), torch.tensor([1, 3, 2])
    with torch.no_grad():
        own = model(**batch).logits[:, :-1][rows, cols]
    torch.testing.assert_close(logits_at_positions(model, batch, rows, cols), own)
    assert own.abs().max() <= 0.5  # the cap is real: a bare head would give larger logits
    check_output_head(model, "method.dpo_model")


def test_an_architecture_whose_head_cannot_be_reproduced_is_refused():
    class Rescaled(GPTNeoXForCausalLM):
        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            out.logits = out.logits * 3.0
            return out

    model = Rescaled(neox(0).config)
    with pytest.raises(ConfigError, match="method.dpo_model: the gpt_neox architecture changes its logits"):
        check_output_head(model, "method.dpo_model")


# ---- 8. IPO's preference score follows its settings --------------------------------------------------------------
def test_ipo_length_normalised_preference_score_is_per_token():
    policy, ref, n = torch.tensor([-6.0, -2.0]), torch.tensor([-3.0, -3.0]), torch.tensor([6.0, 1.0])
    summed = IPO(neox(0), freeze(neox(0)), beta=0.1).preference_score(policy, ref, n)
    per_token = IPO(neox(0), freeze(neox(0)), beta=0.1, length_normalize=True).preference_score(policy, ref, n)
    assert summed.tolist() == [-3.0, 1.0] and per_token.tolist() == [-0.5, 1.0]


# ---- 9. merging defaults ------------------------------------------------------------------------------------------
def test_online_merging_is_unbiased_by_default(tmp_path):
    from hydra.utils import instantiate

    for kind in ("ondare", "onties"):
        assert instantiate(compose_config(tmp_path, [f"merge={kind}"]).merge).rescale is True


def test_hma_on_tied_embeddings_says_which_ratio_the_head_takes(tmp_path, caplog):
    from alignlab.merge import merge_checkpoints

    config = GPT2Config(vocab_size=30, n_embd=16, n_layer=3, n_head=2, n_positions=32, tie_word_embeddings=True)
    for name, seed in (("pre", 0), ("aligned", 1)):
        torch.manual_seed(seed)
        GPT2LMHeadModel(config).save_pretrained(tmp_path / name)
    with caplog.at_level(logging.WARNING):
        merge_checkpoints(tmp_path / "pre", tmp_path / "aligned", tmp_path / "merged", block_ratios=[0.2, 0.5, 0.8])
    assert "ties its input and output embeddings" in caplog.text and "block 1's ratio 0.2" in caplog.text


# ---- 10. the optimiser of the official DPO/TDPO code ----------------------------------------------------------------
def test_rmsprop_with_warmup_steps(tmp_path):
    cfg = compose_config(tmp_path, ["experiment=hh_table", "method=tdpo2"])
    assert cfg.method.optim.name == "rmsprop" and cfg.method.optim.warmup_steps == 150
    module = DPO(neox(0), freeze(neox(0)), beta=0.1, optim={"name": "rmsprop", "lr": 1e-3, "warmup_steps": 3})

    class Trainer:
        strategy = "auto"
        max_steps = 10

        class datamodule:
            @staticmethod
            def optimizer_steps(trainer):
                return 10

    module._trainer = Trainer()  # the two things configure_optimizers reads: the strategy and the step count
    out = module.configure_optimizers()
    assert isinstance(out["optimizer"], torch.optim.RMSprop)
    lrs = []
    for _ in range(5):
        lrs.append(out["lr_scheduler"]["scheduler"].get_last_lr()[0])
        out["optimizer"].step()
        out["lr_scheduler"]["scheduler"].step()
    assert lrs == pytest.approx([0.0, 1e-3 / 3, 2e-3 / 3, 1e-3, 1e-3])
    with pytest.raises(ConfigError, match="method.optim.name"):
        DPO(neox(0), freeze(neox(0)), beta=0.1, optim={"name": "sgd"})
