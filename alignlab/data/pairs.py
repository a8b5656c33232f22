"""The pair generation stage (IMDb protocol, METHODS.md section 6): sample k completions per prompt from the SFT
model, score each with the reward model, and label all k(k-1)/2 pairs by reward (ties carry no preference and
are dropped). Prompts are split into train and validation before pairing, so no prompt is in both.

Each pair keeps the token ids that were sampled (`prompt_ids`, `chosen_ids`, `rejected_ids`) beside the decoded
text: training and scoring use the ids, so a response is trained on exactly the tokens the model produced, and it
ends with EOS only when the sample did. A sample that stopped at max_new_tokens is trained without EOS, or left out
with `drop_truncated: true`. The text stays in the files for reading."""
from __future__ import annotations

import itertools
import json
import logging
import random
from pathlib import Path

from alignlab.sampling import sample_completions

log = logging.getLogger(__name__)


def label_pairs(prompt: str, samples: list[dict], rewards: list[float]) -> list[dict]:
    """All pairs of one prompt's samples ({completion, completion_ids, prompt_ids}) with different rewards and
    different token ids, the higher reward chosen."""
    pairs = []
    for i, j in itertools.combinations(range(len(samples)), 2):
        if rewards[i] == rewards[j] or samples[i]["completion_ids"] == samples[j]["completion_ids"]:
            continue
        hi, lo = (i, j) if rewards[i] > rewards[j] else (j, i)
        pairs.append({"prompt": prompt, "chosen": samples[hi]["completion"], "rejected": samples[lo]["completion"],
                      "chosen_reward": rewards[hi], "rejected_reward": rewards[lo],
                      "prompt_ids": samples[hi]["prompt_ids"], "chosen_ids": samples[hi]["completion_ids"],
                      "rejected_ids": samples[lo]["completion_ids"]})
    return pairs


def generate_pairs(model, tokenizer, reward, prompts: list[str], pairs_cfg, val_fraction: float,
                   seed: int) -> tuple[dict[str, list[dict]], dict]:
    """({"train": pairs, "validation": pairs}, statistics of the samples: how many ended with EOS)."""
    k = pairs_cfg.completions_per_prompt
    samples = sample_completions(model, tokenizer, prompts, max_new_tokens=pairs_cfg.max_new_tokens,
                                 temperature=pairs_cfg.temperature, top_p=pairs_cfg.top_p,
                                 batch_size=pairs_cfg.batch_size, seed=seed, num_return_sequences=k,
                                 desc="pairs: sampling")
    rewards = reward.score([s["prompt"] for s in samples], [s["completion"] for s in samples])
    truncated = sum(not s["ended"] for s in samples)
    stats = {"samples": len(samples), "truncated": truncated,
             "mean_response_tokens": sum(len(s["completion_ids"]) for s in samples) / max(len(samples), 1)}
    drop = pairs_cfg.get("drop_truncated", False)
    log.info("pairs: %d of %d samples stopped at max_new_tokens=%d (%s)", truncated, len(samples),
             pairs_cfg.max_new_tokens, "left out" if drop else "trained without EOS")
    order = list(range(len(prompts)))
    random.Random(seed).shuffle(order)
    n_val = int(round(len(prompts) * val_fraction))
    val_prompts = set(order[:n_val])
    splits = {"train": [], "validation": []}
    for p, prompt in enumerate(prompts):
        group = [i for i in range(p * k, (p + 1) * k) if samples[i]["ended"] or not drop]
        rows = label_pairs(prompt, [samples[i] for i in group], [rewards[i] for i in group])
        splits["validation" if p in val_prompts else "train"].extend(rows)
    stats.update({f"{split}_pairs": len(rows) for split, rows in splits.items()})
    return splits, stats


def write_jsonl(rows: list[dict], path: Path) -> None:
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
