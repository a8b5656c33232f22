"""Sampling completions for prompts: pair generation, evaluation, on-policy training and HMA share this.

Every sample is drawn from exactly the configured distribution: softmax(z / temperature), cut to the top_p
nucleus, and nothing else. A checkpoint's own generation_config (a repetition_penalty, top_k,
no_repeat_ngram_size, ...) is set aside while sampling, because `generate` would otherwise merge it into every call.
A completion keeps the token ids that were sampled, up to and including the first EOS; one that stopped at
max_new_tokens has no EOS (``ended`` False), and is trained and scored as the unfinished text it is.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig

from alignlab.forward import eval_mode


@contextmanager
def only_given_settings(model):
    """Set the model's generation_config aside, so generate() uses exactly the arguments it is given."""
    saved = model.generation_config
    model.generation_config = GenerationConfig()
    try:
        yield model
    finally:
        model.generation_config = saved


@torch.no_grad()
def generate_from_ids(model, prompts: list[list[int]], pad_token_id: int, eos_token_id: int, max_new_tokens: int,
                      temperature: float = 1.0, top_p: float = 1.0, num_return_sequences: int = 1) -> list[list[int]]:
    """Sampled continuations of token-id prompts (one batch), each cut after its first EOS (kept); the model samples
    in eval mode and is left in the mode it came in."""
    device = next(model.parameters()).device
    width = max(map(len, prompts))
    # left padding: every prompt ends at the same position, so generation continues each one directly
    ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    with eval_mode(model), only_given_settings(model):  # sampling never uses dropout
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=True,
                             temperature=temperature, top_p=top_p, top_k=0, max_new_tokens=max_new_tokens,
                             num_return_sequences=num_return_sequences, pad_token_id=pad_token_id,
                             eos_token_id=eos_token_id)
    completions = []
    for completion in out[:, width:].tolist():
        if eos_token_id in completion:
            completion = completion[: completion.index(eos_token_id) + 1]
        completions.append(completion)
    return completions


@torch.no_grad()
def sample_completions(model, tokenizer, prompts: list[str], max_new_tokens: int, temperature: float = 1.0,
                       top_p: float = 1.0, batch_size: int = 64, seed: int = 0, num_return_sequences: int = 1,
                       desc: str = "sampling") -> list[dict]:
    """For each prompt, `num_return_sequences` samples. Returns rows {prompt, completion, prompt_ids,
    completion_ids, ended} in prompt order: completion_ids are the sampled ids, up to and including the first EOS;
    ended says whether the sample ended with EOS (False: it stopped at max_new_tokens)."""
    eos = tokenizer.eos_token_id
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] or [eos] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))  # batches of similar length pad less
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    by_prompt: dict[int, list[dict]] = {}
    try:
        for start in tqdm(range(0, len(order), batch_size), desc=desc, leave=False):
            chunk = order[start:start + batch_size]
            new = generate_from_ids(model, [encoded[i] for i in chunk], tokenizer.pad_token_id, eos, max_new_tokens,
                                    temperature, top_p, num_return_sequences)
            for j, completion in enumerate(new):
                i = chunk[j // num_return_sequences]
                by_prompt.setdefault(i, []).append({
                    "prompt": prompts[i], "prompt_ids": encoded[i], "completion_ids": completion,
                    "ended": bool(completion) and completion[-1] == eos,
                    "completion": tokenizer.decode(completion, skip_special_tokens=True)})
    finally:
        torch.random.set_rng_state(generator_state)
    return [row for i in range(len(prompts)) for row in by_prompt.get(i, [])]
