"""LightningDataModule over tokenised rows: preference pairs, or SFT sequences."""
from __future__ import annotations

import logging

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler

from alignlab.errors import DataError
from alignlab.data.tokenize import (PreferenceCollator, SequenceCollator, TruncationStats, tokenize_pair,
                                    tokenize_text)

log = logging.getLogger(__name__)


class EpochSeededSampler(Sampler):
    """Shuffles with seed + epoch. The order depends only on (seed, epoch), never on the global RNG, so a run
    resumed from a checkpoint sees the same batches as an uninterrupted one. Lightning calls set_epoch (and
    wraps this in a distributed sampler under DDP)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=generator).tolist())

    def __len__(self) -> int:
        return self.n


def tokenize_rows(tokenizer, rows: list[dict], kind: str, max_length: int, max_prompt_length: int,
                  where: str) -> list[dict]:
    """kind 'pairs': {prompt, chosen, rejected} rows; 'sequences': {prompt, response} rows."""
    stats = TruncationStats()
    if kind == "pairs":
        out = [tokenize_pair(tokenizer, r, max_length, max_prompt_length, stats) for r in rows]
    else:
        out = [tokenize_text(tokenizer, r["prompt"], r["response"], max_length, max_prompt_length, stats)
               for r in rows]
    out = [r for r in out if r is not None]
    log.info("%s: %s", where, stats.summary())
    if not out:
        raise DataError(f"{where}: the dataset is empty after tokenisation and filtering ({stats.summary()})")
    return out


class AlignmentDataModule(L.LightningDataModule):
    def __init__(self, tokenizer, train_rows: list[dict], val_rows: list[dict], kind: str, batch_size: int,
                 eval_batch_size: int, max_length: int, max_prompt_length: int, seed: int = 0,
                 num_workers: int = 0, name: str = "data"):
        super().__init__()
        if kind not in ("pairs", "sequences"):
            raise ValueError(f"unknown batch kind {kind!r}")
        self.kind, self.batch_size, self.eval_batch_size = kind, batch_size, eval_batch_size
        self.seed, self.num_workers = seed, num_workers
        self.train = tokenize_rows(tokenizer, train_rows, kind, max_length, max_prompt_length, f"{name}/train")
        self.val = tokenize_rows(tokenizer, val_rows, kind, max_length, max_prompt_length, f"{name}/validation") \
            if val_rows else []
        collator = PreferenceCollator if kind == "pairs" else SequenceCollator
        self.collate = collator(tokenizer.pad_token_id)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=self.batch_size, sampler=EpochSeededSampler(len(self.train), self.seed),
                          collate_fn=self.collate, num_workers=self.num_workers, drop_last=False)

    def val_dataloader(self) -> DataLoader | list:
        if not self.val:
            return []
        return DataLoader(self.val, batch_size=self.eval_batch_size, shuffle=False, collate_fn=self.collate,
                          num_workers=self.num_workers)
