"""Evaluation after training (METHODS.md section 6).

- reward: mean reward of the policy's samples for held-out prompts (reward_ref: the reference's samples);
- kl: mean over the policy's samples of sum_t [log pi(y_t|s_t) - log ref(y_t|s_t)], a Monte-Carlo estimate of
  KL(pi || ref) per response;
- entropy: mean per-token predictive entropy of pi on its own samples;
- pref_accuracy: share of held-out pairs whose chosen response gets the higher implicit reward.
"""
from __future__ import annotations

import statistics

import torch

from alignlab.data.tokenize import PreferenceCollator, collate_sequences
from alignlab.sampling import sample_completions
from alignlab.forward import device_of, logits_of, response_logps, to_device
from alignlab.losses import sequence_logps, shift_for_next_token, token_entropy


def _batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def logratio_score(policy_logps, ref_logps, n_tokens):
    """The implicit reward of reference-based objectives, up to a positive factor: log pi(y) - log ref(y)."""
    return policy_logps - ref_logps


@torch.no_grad()
def sample_statistics(policy, reference, samples: list[dict], pad_token_id: int, batch_size: int) -> dict:
    """Per-sample KL estimate and per-token entropy of the policy on its own samples."""
    kls, entropy_sum, tokens = [], 0.0, 0.0
    for chunk in _batches(samples, batch_size):
        batch = collate_sequences([s["prompt_ids"] for s in chunk], [s["completion_ids"] for s in chunk],
                                  pad_token_id)
        batch = to_device(batch, device_of(policy))
        logits, labels = shift_for_next_token(logits_of(policy, batch), batch["labels"])
        policy_logps, n_tokens = sequence_logps(logits, labels)
        entropy, _ = token_entropy(logits, labels)
        ref_logps, _ = response_logps(reference, to_device(batch, device_of(reference)))
        kls += (policy_logps - ref_logps).tolist()
        entropy_sum += entropy.sum().item()
        tokens += n_tokens.sum().item()
    return {"kl": statistics.fmean(kls), "entropy": entropy_sum / max(tokens, 1.0)}


@torch.no_grad()
def preference_accuracy(policy, reference, pairs: list[dict], pad_token_id: int, batch_size: int,
                        preference_score=None) -> float:
    """pairs: tokenised {prompt_ids, chosen_ids, rejected_ids}; preference_score(policy_logps, ref_logps,
    n_tokens) is the method's implicit reward (None: the log-ratio log pi(y) - log ref(y))."""
    preference_score = preference_score or logratio_score
    collate, correct = PreferenceCollator(pad_token_id), 0
    for chunk in _batches(pairs, batch_size):
        batch = collate(chunk)
        policy_logps, n_tokens = response_logps(policy, to_device(batch, device_of(policy)))
        ref_logps, _ = response_logps(reference, to_device(batch, device_of(reference)))
        score = preference_score(policy_logps, ref_logps, n_tokens)
        b = len(chunk)
        correct += (score[:b] > score[b:]).sum().item()
    return correct / len(pairs)


def evaluate(policy, reference, tokenizer, reward, prompts: list[str], val_pairs: list[dict], eval_cfg,
             preference_score=None, seed: int = 0) -> tuple[dict, list[dict]]:
    """Returns the flat `eval/*` metrics and the policy's scored samples."""
    settings = dict(max_new_tokens=eval_cfg.max_new_tokens, temperature=eval_cfg.temperature, top_p=eval_cfg.top_p,
                    batch_size=eval_cfg.batch_size, seed=seed)
    prompts = prompts[: eval_cfg.n_prompts]
    policy_samples = sample_completions(policy, tokenizer, prompts, desc="eval: sampling policy", **settings)
    ref_samples = sample_completions(reference, tokenizer, prompts, desc="eval: sampling reference", **settings)
    policy_rewards = reward.score([s["prompt"] for s in policy_samples], [s["completion"] for s in policy_samples])
    ref_rewards = reward.score([s["prompt"] for s in ref_samples], [s["completion"] for s in ref_samples])
    for sample, r in zip(policy_samples, policy_rewards):
        sample["reward"] = r
    stats = sample_statistics(policy, reference, policy_samples, tokenizer.pad_token_id, eval_cfg.batch_size)
    metrics = {
        "eval/reward": statistics.fmean(policy_rewards),
        "eval/reward_ref": statistics.fmean(ref_rewards),
        "eval/kl": stats["kl"],
        "eval/entropy": stats["entropy"],
        "eval/response_tokens": statistics.fmean(len(s["completion_ids"]) for s in policy_samples),
    }
    if val_pairs:
        metrics["eval/pref_accuracy"] = preference_accuracy(policy, reference, val_pairs, tokenizer.pad_token_id,
                                                            eval_cfg.batch_size, preference_score)
    return metrics, policy_samples
