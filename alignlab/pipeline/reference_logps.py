"""Stage: the reference's log-probs of the training and validation pairs, computed once (method.reference=
precomputed, for objectives that read nothing else of the reference: DPO, cDPO, IPO).

The pairs are tokenised exactly as training will tokenise them (the data's max_length / max_prompt_length), the
reference scores each response, sum_t log ref(y_t|s_t), and the values are cached under a fingerprint of the
reference model and of those token ids, so every job of a beta sweep, and every later run on the same pairs,
reuses them. They are attached to the rows (chosen_ref_logps, rejected_ref_logps) and travel with each batch, so
resuming, DDP and DeepSpeed need nothing else.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from alignlab import models
from alignlab.data.tokenize import PreferenceCollator, TruncationStats, tokenize_pair
from alignlab.forward import device_of, eval_mode, response_logps, to_device
from alignlab.pipeline.cache import cached_stage, fingerprint

FILE = "reference_logps.json"


def tokenized(tokenizer, rows: list[dict], data_cfg) -> list[dict | None]:
    """Each row as training tokenises it (None where tokenisation drops the row)."""
    stats = TruncationStats()
    return [tokenize_pair(tokenizer, r, data_cfg.max_length, data_cfg.max_prompt_length, stats) for r in rows]


@torch.no_grad()
def score_pairs(model, pairs: list[dict], pad_token_id: int, batch_size: int) -> list[list[float]]:
    """[[log ref(chosen), log ref(rejected)], ...] for tokenised pairs."""
    collate, out = PreferenceCollator(pad_token_id), []
    with eval_mode(model):
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start:start + batch_size]
            logps, _ = response_logps(model, to_device(collate(chunk), device_of(model)))
            b = len(chunk)
            out += [[c, r] for c, r in zip(logps[:b].tolist(), logps[b:].tolist())]
    return out


def precompute(new_model, model_id: str, rows: dict, tokenizer, data_cfg, dtype: str, cache_dir,
               device=None) -> tuple[dict, Path]:
    """(the rows by split with chosen_ref_logps / rejected_ref_logps attached, the stage's directory)."""
    ids = {split: tokenized(tokenizer, split_rows, data_cfg) for split, split_rows in rows.items()}

    def build(tmp: Path) -> None:
        model = models.freeze(new_model())
        model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        values = {}
        for split, pairs in ids.items():
            kept = [p for p in pairs if p is not None]
            scores = iter(score_pairs(model, kept, tokenizer.pad_token_id, data_cfg.eval_batch_size))
            values[split] = [next(scores) if p is not None else None for p in pairs]
        (tmp / FILE).write_text(json.dumps(values))

    inputs = {"reference": model_id, "dtype": dtype, "pairs": {split: fingerprint(p) for split, p in ids.items()}}
    path = cached_stage(cache_dir, "reference-logps", inputs, build)
    values = json.loads((path / FILE).read_text())
    attached = {split: [row if v is None else {**row, "chosen_ref_logps": v[0], "rejected_ref_logps": v[1]}
                        for row, v in zip(split_rows, values[split])] for split, split_rows in rows.items()}
    return attached, path
