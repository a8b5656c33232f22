"""AlignDistil as a pipeline: teachers trained as cached stages, off- and on-policy distillation, clear errors."""
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from alignlab import models
from alignlab.data.module import tokenize_rows
from alignlab.data.pairs import read_jsonl
from alignlab.errors import ConfigError, ModelLoadError
from alignlab.eval.metrics import preference_accuracy
from alignlab.methods.aligndistil import AlignDistil
from alignlab.run import run
from conftest import compose_config

pytestmark = pytest.mark.slow
SMALL = ["experiment=smoke", "method=aligndistil", "trainer.max_steps=12", "eval.n_prompts=16"]


@pytest.fixture(scope="module")
def off_policy(tmp_path_factory):
    out = tmp_path_factory.mktemp("aligndistil")
    return run(compose_config(out, SMALL)), out


def test_pipeline_trains_teachers_once_and_distils(off_policy, tmp_path):
    results, _ = off_policy
    m = results["metrics"]
    for key in ("train/aligndistil/alpha_mean", "train/aligndistil/weight_mean", "train/kl/teacher",
                "train/kl/dpo", "train/kl/reverse", "train/rewards/contrastive", "eval/reward", "eval/kl"):
        assert key in m, key
    assert 1e-3 <= m["train/aligndistil/alpha_mean"] <= 20.0 + 1e-3
    stages = results["stages"]
    assert "teacher-dpo-" in stages["dpo_model"] and "teacher-reverse-" in stages["reverse_model"]
    # a second run (another teacher variant, on-policy) reuses the cached teachers
    again = run(compose_config(tmp_path, [*SMALL, "method.mode=on_policy", "method.teacher=contrastive",
                                          "trainer.max_steps=4"]))
    assert again["stages"]["dpo_model"] == stages["dpo_model"]
    assert again["stages"]["reverse_model"] == stages["reverse_model"]
    assert "train/kl/teacher" in again["metrics"]


def test_reverse_dpo_ranks_rejected_above_chosen(off_policy):
    results, _ = off_policy
    start = f"{results['config']['paths']['cache_dir']}/{results['stages']['start']}"
    tokenizer = models.load_tokenizer(start)
    reference = models.freeze(AutoModelForCausalLM.from_pretrained(start))
    # the pairs both teachers were trained on: each must have learned its direction (on held-out smoke pairs
    # even the forward DPO model ranks at chance; the default miniature's pairs are 9x as many)
    train = read_jsonl(Path(results["stages"]["pairs"]) / "train.jsonl")
    pairs = tokenize_rows(tokenizer, train, "pairs", 64, 16, "train")
    score = None  # the log-ratio, as for every reference-based objective
    forward = preference_accuracy(models.freeze(AutoModelForCausalLM.from_pretrained(results["stages"]["dpo_model"])),
                                  reference, pairs, tokenizer.pad_token_id, 64, score)
    reverse = preference_accuracy(models.freeze(AutoModelForCausalLM.from_pretrained(
        results["stages"]["reverse_model"])), reference, pairs, tokenizer.pad_token_id, 64, score)
    assert forward > 0.5 > reverse


def test_missing_teacher_path_names_key_and_path(tmp_path):
    with pytest.raises(ModelLoadError, match=r"method.dpo_model='/no/such/teacher'"):
        run(compose_config(tmp_path, [*SMALL, "method.dpo_model=/no/such/teacher"]))


def test_teacher_with_another_vocabulary_is_rejected(off_policy, tmp_path):
    results, _ = off_policy
    other = models.build_random({"model_type": "gpt_neox", "hidden_size": 32, "num_hidden_layers": 1,
                                 "num_attention_heads": 2, "intermediate_size": 64, "vocab_size": 77,
                                 "max_position_embeddings": 128})
    other.save_pretrained(tmp_path / "teacher")
    with pytest.raises(ConfigError, match=r"vocabulary of \d+ logits but method.dpo_model has 77"):
        run(compose_config(tmp_path / "run", [*SMALL, f"method.dpo_model={tmp_path / 'teacher'}"]))


def test_gradients_reach_only_the_student():
    def tiny(seed):
        return models.build_random({"model_type": "gpt_neox", "hidden_size": 16, "num_hidden_layers": 1,
                                    "num_attention_heads": 2, "intermediate_size": 32, "vocab_size": 11,
                                    "max_position_embeddings": 32}, seed=seed)

    module = AlignDistil(tiny(0), dpo_model=models.freeze(tiny(1)), reverse_model=models.freeze(tiny(2)))
    batch = {"input_ids": torch.tensor([[1, 2, 3, 4, 5]]), "attention_mask": torch.ones(1, 5, dtype=torch.long),
             "labels": torch.tensor([[-100, -100, 3, 4, 5]])}
    loss, metrics = module.loss_and_metrics(batch)
    loss.backward()
    assert loss.item() > 0
    assert all(p.grad is not None for p in module.policy.parameters() if p.requires_grad)
    for frozen in (module.dpo_model, module.reverse_model):
        assert all(p.grad is None and not p.requires_grad for p in frozen.parameters())
    assert module.reference is None  # the adaptive teacher needs no reference: none is kept in memory
