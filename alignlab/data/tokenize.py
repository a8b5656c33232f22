"""From text rows to token ids, and from token ids to padded batches.

Every training example is a (prompt_ids, response_ids) pair. A response given as text (a dataset's response, a
complete text) gets EOS appended, and EOS counts as a response token; a response given as token ids (a sample of
the model, `*_ids` in the row) is used exactly as sampled: it ends with EOS only if the sample did. Labels are
HF-style (unshifted): a copy of input_ids with prompt and padding set to IGNORE_INDEX, so only
response tokens are scored. A preference batch holds the B chosen sequences followed by the B rejected ones, so
the policy sees both in one forward pass.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

IGNORE_INDEX = -100


@dataclass
class TruncationStats:
    """How many rows tokenisation changed; logged so that silent data loss is visible."""
    rows: int = 0
    prompt_truncated: int = 0
    response_truncated: int = 0
    dropped: int = 0
    dropped_reasons: dict = field(default_factory=dict)

    def drop(self, reason: str) -> None:
        self.dropped += 1
        self.dropped_reasons[reason] = self.dropped_reasons.get(reason, 0) + 1

    def summary(self) -> str:
        return (f"{self.rows} rows: {self.prompt_truncated} prompts truncated (kept their end), "
                f"{self.response_truncated} responses truncated, {self.dropped} dropped {self.dropped_reasons or ''}")


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def fit_lengths(prompt: list[int], responses: list[list[int]], max_length: int, max_prompt_length: int,
                stats: TruncationStats) -> tuple[list[int], list[list[int]]]:
    """Prompts longer than max_prompt_length keep their end (the part next to the response); then responses
    are cut so that prompt + response fits max_length. A prompt that leaves no room gives empty responses (the
    caller drops the row): a sequence never exceeds max_length."""
    if len(prompt) > max_prompt_length:
        prompt = prompt[-max_prompt_length:] if max_prompt_length > 0 else []
        stats.prompt_truncated += 1
    room = max(max_length - len(prompt), 0)
    if any(len(r) > room for r in responses):
        stats.response_truncated += 1
        responses = [r[:room] for r in responses]
    return prompt, responses


def response_ids(tokenizer, row: dict, key: str) -> list[int]:
    """The response `key` of a row as token ids: the sampled ids `<key>_ids` when the row has them (EOS only if the
    sample ended with it), else its text encoded with EOS appended."""
    ids = row.get(f"{key}_ids")
    return list(ids) if ids is not None else encode(tokenizer, row[key]) + [tokenizer.eos_token_id]


def prompt_ids(tokenizer, row: dict) -> list[int]:
    """The prompt's token ids as the samples were conditioned on (`prompt_ids`), else its text encoded."""
    ids = row.get("prompt_ids")
    if ids is not None:
        return list(ids)
    return encode(tokenizer, row["prompt"]) if row["prompt"] else []


def tokenize_pair(tokenizer, row: dict, max_length: int, max_prompt_length: int,
                  stats: TruncationStats) -> dict | None:
    """A preference row {prompt, chosen, rejected} -> ids, or None (counted in stats) when it carries no signal."""
    stats.rows += 1
    prompt, (chosen, rejected) = fit_lengths(prompt_ids(tokenizer, row), [response_ids(tokenizer, row, "chosen"),
                                                                          response_ids(tokenizer, row, "rejected")],
                                             max_length, max_prompt_length, stats)
    if not chosen and not rejected:
        stats.drop("no room for the responses")
        return None
    if chosen == rejected:
        stats.drop("chosen equals rejected after truncation")
        return None
    return {"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected}


def tokenize_text(tokenizer, row: dict, max_length: int, max_prompt_length: int,
                  stats: TruncationStats) -> dict | None:
    """An SFT example {prompt, response}: the prompt (may be empty) is context, the response is scored."""
    stats.rows += 1
    prompt, (response,) = fit_lengths(prompt_ids(tokenizer, row), [response_ids(tokenizer, row, "response")],
                                      max_length, max_prompt_length, stats)
    if not response:
        stats.drop("no room for the response")
        return None
    return {"prompt_ids": prompt, "response_ids": response}


def collate_sequences(prompts: list[list[int]], responses: list[list[int]], pad_token_id: int) -> dict:
    """Right-padded input_ids, attention_mask, and labels with prompt and padding set to IGNORE_INDEX."""
    lengths = [len(p) + len(r) for p, r in zip(prompts, responses)]
    width = max(lengths)
    input_ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(prompts), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        n = len(p) + len(r)
        input_ids[i, :n] = torch.tensor(p + r, dtype=torch.long)
        labels[i, len(p):n] = torch.tensor(r, dtype=torch.long)
        attention_mask[i, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


@dataclass
class PreferenceCollator:
    """Batch of B pairs -> 2B sequences: rows [0, B) are the chosen responses, rows [B, 2B) the rejected ones."""
    pad_token_id: int

    def __call__(self, rows: list[dict]) -> dict:
        prompts = [r["prompt_ids"] for r in rows]
        batch = collate_sequences(prompts + prompts, [r["chosen_ids"] for r in rows] +
                                  [r["rejected_ids"] for r in rows], self.pad_token_id)
        batch["num_pairs"] = len(rows)
        return batch


@dataclass
class SequenceCollator:
    """Batch of SFT examples -> B sequences."""
    pad_token_id: int

    def __call__(self, rows: list[dict]) -> dict:
        return collate_sequences([r["prompt_ids"] for r in rows], [r["response_ids"] for r in rows],
                                 self.pad_token_id)
