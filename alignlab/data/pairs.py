"""The pair generation stage (IMDb protocol, METHODS.md section 6): sample k completions per prompt from the SFT
model, score each with the reward model, and label all k(k-1)/2 pairs by reward (ties carry no preference and
are dropped). Prompts are split into train and validation before pairing, so no prompt is in both."""
from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

from alignlab.sampling import sample_completions


def label_pairs(prompt: str, completions: list[str], rewards: list[float]) -> list[dict]:
    pairs = []
    for i, j in itertools.combinations(range(len(completions)), 2):
        if rewards[i] == rewards[j] or completions[i] == completions[j]:
            continue
        hi, lo = (i, j) if rewards[i] > rewards[j] else (j, i)
        pairs.append({"prompt": prompt, "chosen": completions[hi], "rejected": completions[lo],
                      "chosen_reward": rewards[hi], "rejected_reward": rewards[lo]})
    return pairs


def generate_pairs(model, tokenizer, reward, prompts: list[str], pairs_cfg, val_fraction: float,
                   seed: int) -> dict[str, list[dict]]:
    k = pairs_cfg.completions_per_prompt
    samples = sample_completions(model, tokenizer, prompts, max_new_tokens=pairs_cfg.max_new_tokens,
                                 temperature=pairs_cfg.temperature, top_p=pairs_cfg.top_p,
                                 batch_size=pairs_cfg.batch_size, seed=seed, num_return_sequences=k,
                                 desc="pairs: sampling")
    rewards = reward.score([s["prompt"] for s in samples], [s["completion"] for s in samples])
    order = list(range(len(prompts)))
    random.Random(seed).shuffle(order)
    n_val = int(round(len(prompts) * val_fraction))
    val_prompts = set(order[:n_val])
    splits = {"train": [], "validation": []}
    for p, prompt in enumerate(prompts):
        group = slice(p * k, (p + 1) * k)
        rows = label_pairs(prompt, [s["completion"] for s in samples[group]], rewards[group])
        splits["validation" if p in val_prompts else "train"].extend(rows)
    return splits


def write_jsonl(rows: list[dict], path: Path) -> None:
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
