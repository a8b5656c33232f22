"""Evaluation after training (METHODS.md section 6).

- reward: mean reward of the policy's samples for held-out prompts (reward_ref: the reference's samples), drawn at
  eval.temperature / eval.top_p;
- kl: KL(pi || ref) per response, the mean over samples drawn from the policy's own distribution (temperature 1,
  top_p 1, whatever the reward samples use) of the exact sum_t KL(pi(.|s_t) || ref(.|s_t)) over the full
  vocabulary; kl_stderr is its standard error over the samples;
- entropy: mean per-token predictive entropy of pi on the reward samples;
- pref_accuracy: share of held-out pairs whose chosen response gets the higher implicit reward (a tie counts 1/2).

Every model is evaluated in eval mode (no dropout), and left in the mode it came in.
"""
from __future__ import annotations

import math
import statistics

import torch

from alignlab.data.tokenize import PreferenceCollator, collate_sequences
from alignlab.forward import device_of, eval_mode, logits_of, response_logps, to_device
from alignlab.losses import logratio_score, pair_accuracy, sequence_kl, shift_for_next_token, token_entropy
from alignlab.sampling import sample_completions


def _batches(items: list, size: int, length):
    """Batches of items taken in order of length (the statistics here are sums: the order does not matter, and
    similar lengths pad less)."""
    ordered = sorted(items, key=length)
    for start in range(0, len(ordered), size):
        yield ordered[start:start + size]


def mean_and_stderr(values: list[float]) -> tuple[float, float]:
    """The mean and its standard error (sample std / sqrt(n); 0 for one value)."""
    if len(values) < 2:
        return statistics.fmean(values), 0.0
    return statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values))


@torch.no_grad()
def sample_statistics(policy, reference, samples: list[dict], pad_token_id: int, batch_size: int,
                      kl: bool = True, entropy: bool = True) -> dict:
    """On the given samples: per-sample exact KL(pi || ref) summed over each response ("kl", a list) and the
    per-token predictive entropy of pi ("entropy")."""
    kls, entropy_sum, tokens = [], 0.0, 0.0
    with eval_mode(policy, reference):
        for chunk in _batches(samples, batch_size, lambda s: len(s["prompt_ids"]) + len(s["completion_ids"])):
            batch = collate_sequences([s["prompt_ids"] for s in chunk], [s["completion_ids"] for s in chunk],
                                      pad_token_id)
            batch = to_device(batch, device_of(policy))
            logits, labels = shift_for_next_token(logits_of(policy, batch), batch["labels"])
            if kl:
                ref_logits, _ = shift_for_next_token(logits_of(reference, to_device(batch, device_of(reference))),
                                                     batch["labels"])
                kls += sequence_kl(logits, ref_logits.to(logits.device), labels).tolist()
            if entropy:
                ent, n_tokens = token_entropy(logits, labels)
                entropy_sum += ent.sum().item()
                tokens += n_tokens.sum().item()
    return {"kl": kls, "entropy": entropy_sum / max(tokens, 1.0)}


@torch.no_grad()
def preference_accuracy(policy, reference, pairs: list[dict], pad_token_id: int, batch_size: int,
                        preference_score=None) -> float:
    """pairs: tokenised {prompt_ids, chosen_ids, rejected_ids}; preference_score(policy_logps, ref_logps,
    n_tokens) is the method's implicit reward (None: the log-ratio log pi(y) - log ref(y)). Ties count 1/2."""
    preference_score = preference_score or logratio_score
    collate, correct = PreferenceCollator(pad_token_id), 0.0
    with eval_mode(policy, reference):
        for chunk in _batches(pairs, batch_size, lambda p: len(p["prompt_ids"]) + max(len(p["chosen_ids"]),
                                                                                 len(p["rejected_ids"]))):
            batch = collate(chunk)
            policy_logps, n_tokens = response_logps(policy, to_device(batch, device_of(policy)))
            ref_logps, _ = response_logps(reference, to_device(batch, device_of(reference)))
            score = preference_score(policy_logps, ref_logps.to(policy_logps.device), n_tokens)
            b = len(chunk)
            correct += pair_accuracy(score[:b], score[b:]).sum().item()
    return correct / len(pairs)


def evaluate(policy, reference, tokenizer, reward, prompts: list[str], val_pairs: list[dict], eval_cfg,
             preference_score=None, seed: int = 0) -> tuple[dict, list[dict]]:
    """Returns the flat `eval/*` metrics and the policy's scored samples."""
    settings = dict(max_new_tokens=eval_cfg.max_new_tokens, batch_size=eval_cfg.batch_size, seed=seed)
    at_eval = dict(temperature=eval_cfg.temperature, top_p=eval_cfg.top_p)
    prompts = prompts[: eval_cfg.n_prompts]
    policy_samples = sample_completions(policy, tokenizer, prompts, desc="eval: sampling policy", **settings, **at_eval)
    ref_samples = sample_completions(reference, tokenizer, prompts, desc="eval: sampling reference", **settings,
                                     **at_eval)
    policy_rewards = reward.score([s["prompt"] for s in policy_samples], [s["completion"] for s in policy_samples])
    ref_rewards = reward.score([s["prompt"] for s in ref_samples], [s["completion"] for s in ref_samples])
    for sample, r in zip(policy_samples, policy_rewards):
        sample["reward"] = r
    # KL(pi || ref) is an expectation under pi itself: samples at temperature 1, top_p 1
    own = at_eval == {"temperature": 1.0, "top_p": 1.0}
    kl_samples = policy_samples if own else sample_completions(
        policy, tokenizer, prompts, desc="eval: sampling policy for KL", temperature=1.0, top_p=1.0, **settings)
    stats = sample_statistics(policy, reference, policy_samples, tokenizer.pad_token_id, eval_cfg.batch_size,
                              kl=own)
    kls = stats["kl"] if own else sample_statistics(policy, reference, kl_samples, tokenizer.pad_token_id,
                                                    eval_cfg.batch_size, entropy=False)["kl"]
    kl, kl_stderr = mean_and_stderr(kls)
    metrics = {
        "eval/reward": statistics.fmean(policy_rewards),
        "eval/reward_ref": statistics.fmean(ref_rewards),
        "eval/kl": kl,
        "eval/kl_stderr": kl_stderr,
        "eval/entropy": stats["entropy"],
        "eval/response_tokens": statistics.fmean(len(s["completion_ids"]) for s in policy_samples),
        "eval/ended_share": statistics.fmean(float(s["ended"]) for s in policy_samples),
    }
    if val_pairs:
        metrics["eval/pref_accuracy"] = preference_accuracy(policy, reference, val_pairs, tokenizer.pad_token_id,
                                                            eval_cfg.batch_size, preference_score)
    return metrics, policy_samples
