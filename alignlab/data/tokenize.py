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
    out = {"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected}
    if row.get("chosen_ref_logps") is not None:  # precomputed by the reference_logps stage, for exactly these ids
        out["ref_logps"] = (row["chosen_ref_logps"], row["rejected_ref_logps"])
    return out


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


def pack_sequences(prompts: list[list[int]], responses: list[list[int]], pad_token_id: int, width: int) -> dict:
    """The sequences (prompt + response) placed first-fit-decreasing into rows of at most `width` tokens (wider ones
    get a row of their own): input_ids, position_ids restarting at 0 for each sequence, labels (prompt, padding and
    each sequence's first token set to IGNORE_INDEX: it is never predicted, as in a padded batch), sequence_index
    (the sequence of each token) and num_sequences. No attention_mask: transformers keeps packed sequences apart
    from their position ids (the padding at a row's end is a sequence of its own)."""
    lengths = [len(p) + len(r) for p, r in zip(prompts, responses)]
    rows: list[list[int]] = []
    used: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda k: -lengths[k]):
        fit = next((k for k, u in enumerate(used) if u + lengths[i] <= width), None)
        if fit is None:
            rows.append([i])
            used.append(lengths[i])
        else:
            rows[fit].append(i)
            used[fit] += lengths[i]
    shape = (len(rows), max(used))
    input_ids = torch.full(shape, pad_token_id, dtype=torch.long)
    labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.arange(shape[1]).repeat(shape[0], 1)
    sequence_index = torch.full(shape, -1, dtype=torch.long)
    for k, row in enumerate(rows):
        offset = 0
        for i in row:
            p, r, n = prompts[i], responses[i], lengths[i]
            input_ids[k, offset:offset + n] = torch.tensor(p + r, dtype=torch.long)
            labels[k, offset + len(p):offset + n] = torch.tensor(r, dtype=torch.long)
            labels[k, offset] = IGNORE_INDEX
            position_ids[k, offset:offset + n] = torch.arange(n)
            sequence_index[k, offset:offset + n] = i
            offset += n
        position_ids[k, offset:] = torch.arange(shape[1] - offset)
    return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids,
            "sequence_index": sequence_index, "num_sequences": len(lengths)}


def collate(prompts: list[list[int]], responses: list[list[int]], pad_token_id: int, pack_width: int | None) -> dict:
    """A padded batch (one sequence per row), or a packed one when pack_width is given."""
    if pack_width:
        return pack_sequences(prompts, responses, pad_token_id, pack_width)
    return collate_sequences(prompts, responses, pad_token_id)


@dataclass
class PreferenceCollator:
    """Batch of B pairs -> 2B sequences: sequences [0, B) are the chosen responses, [B, 2B) the rejected ones (one
    per row, right-padded; or packed several per row with pack_width)."""
    pad_token_id: int
    pack_width: int | None = None

    def __call__(self, rows: list[dict]) -> dict:
        prompts = [r["prompt_ids"] for r in rows]
        batch = collate(prompts + prompts, [r["chosen_ids"] for r in rows] + [r["rejected_ids"] for r in rows],
                        self.pad_token_id, self.pack_width)
        batch["num_pairs"] = len(rows)
        if all("ref_logps" in r for r in rows):  # the reference's log-probs travel with the batch (2B, same order)
            batch["ref_logps"] = torch.tensor([r["ref_logps"][0] for r in rows] + [r["ref_logps"][1] for r in rows],
                                              dtype=torch.float64)
        return batch


@dataclass
class SequenceCollator:
    """Batch of SFT examples -> B sequences (padded, or packed with pack_width)."""
    pad_token_id: int
    pack_width: int | None = None

    def __call__(self, rows: list[dict]) -> dict:
        return collate([r["prompt_ids"] for r in rows], [r["response_ids"] for r in rows], self.pad_token_id,
                       self.pack_width)
