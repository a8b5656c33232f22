"""LightningDataModule over tokenised rows: preference pairs, or SFT sequences."""
from __future__ import annotations

import logging
import math

import lightning as L
import torch
from torch.utils.data import DataLoader, DistributedSampler

from alignlab.errors import DataError
from alignlab.data.tokenize import (PreferenceCollator, SequenceCollator, TruncationStats, tokenize_pair,
                                    tokenize_text)

log = logging.getLogger(__name__)


class EpochSeededSampler(DistributedSampler):
    """Shuffles with seed + epoch, so the order depends only on (seed, epoch), never on the global RNG; `skip`
    drops the first indices of this rank's next pass (used to resume mid-epoch).

    Data parallelism: rank r of W processes takes order[r::W] of the epoch's permutation, truncated to the same
    length on every rank (n // W; at most W - 1 rows of an epoch are left out, a different few each epoch), so all
    ranks run the same number of batches. With a per-rank batch B, the W batches of step k together are exactly
    order[k*B*W:(k+1)*B*W], the batch k of one process with batch B*W: 2 x B on two processes trains as 1 x 2B.
    It is a DistributedSampler (without calling its __init__, which needs an initialised process group), so
    Lightning uses it as it is instead of wrapping it in a sampler that would reshuffle the shards and break the
    resume position. Lightning calls set_epoch at every epoch start."""

    def __init__(self, n: int, seed: int, rank: int = 0, num_replicas: int = 1, lengths: list[int] | None = None,
                 batch_size: int = 1, group: int = 0, accumulate: int = 1):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        if n < num_replicas:
            raise DataError(f"{n} training rows cannot be split over {num_replicas} data-parallel processes")
        self.n, self.seed, self.epoch, self.skip = n, seed, 0, 0
        self.lengths, self.batch_size, self.group, self.accumulate = lengths, batch_size, group, accumulate
        # DistributedSampler's attributes, for code that inspects them
        self.rank, self.num_replicas, self.shuffle, self.drop_last = rank, num_replicas, True, True
        self.num_samples = n // num_replicas
        self.total_size = self.num_samples * num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.n, generator=generator).tolist()
        if self.lengths is not None and self.group > 1:
            # grouped in blocks of one optimizer step's rows (all ranks, all accumulated micro-batches), so that
            # W ranks x B, or A micro-batches of B, train on exactly the rows of one process's batch W*A*B
            step_rows = self.batch_size * self.num_replicas * self.accumulate
            order = length_grouped(order, self.lengths, step_rows, self.group, generator)
        shard = order[self.rank::self.num_replicas][:self.num_samples]
        skip, self.skip = self.skip, 0
        return iter(shard[skip:])

    def __len__(self) -> int:
        return self.num_samples


def length_grouped(order: list[int], lengths: list[int], batch: int, group: int, generator) -> list[int]:
    """A shuffled order regrouped so that each run of `batch` consecutive indices has similar lengths: windows of
    group x batch indices of the shuffled order are sorted by length and cut into batches, then the batches are
    shuffled (seeded, so the order still depends only on seed and epoch). Padding shrinks to the length spread
    inside a batch, and the batches stay a random mix across the epoch."""
    window = batch * group
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: -lengths[i])
        batches += [chunk[k:k + batch] for k in range(0, len(chunk), batch)]
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [i for b in shuffled for i in batches[b]]


def row_length(row: dict) -> int:
    """Tokens of a tokenised row as padded (a pair: its longer side)."""
    response = max(len(row["chosen_ids"]), len(row["rejected_ids"])) if "chosen_ids" in row else len(row["response_ids"])
    return len(row["prompt_ids"]) + response


class ResumableDataLoader(DataLoader):
    """A DataLoader that Lightning checkpoints (it has state_dict/load_state_dict): it records how many batches
    of the current epoch were consumed, and after a restore the sampler skips exactly those samples, so a run
    resumed mid-epoch sees the same batches as an uninterrupted one. Under data parallelism every rank consumes
    the same number of batches of its own shard, so the one recorded count (rank 0's checkpoint) fits all."""

    def __init__(self, dataset, batch_size: int, seed: int, rank: int = 0, num_replicas: int = 1, group: int = 0,
                 accumulate: int = 1, **kwargs):
        lengths = [row_length(r) for r in dataset] if group > 1 else None
        self.epoch_sampler = EpochSeededSampler(len(dataset), seed, rank=rank, num_replicas=num_replicas,
                                                lengths=lengths, batch_size=batch_size, group=group,
                                                accumulate=accumulate)
        super().__init__(dataset, batch_size=batch_size, sampler=self.epoch_sampler, **kwargs)
        self.batches_seen = 0

    def __iter__(self):
        self.batches_seen = self.epoch_sampler.skip // self.batch_size
        for batch in super().__iter__():
            self.batches_seen += 1
            yield batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch_sampler.epoch, "batches_seen": self.batches_seen}

    def load_state_dict(self, state: dict) -> None:
        self.epoch_sampler.epoch = state["epoch"]
        self.epoch_sampler.skip = state["batches_seen"] * self.batch_size


def tokenize_rows(tokenizer, rows: list[dict], kind: str, max_length: int, max_prompt_length: int,
                  where: str) -> list[dict]:
    """kind 'pairs': {prompt, chosen, rejected} rows; 'sequences': {prompt, response} rows (each may carry the
    sampled token ids, see alignlab.data.tokenize)."""
    stats = TruncationStats()
    if kind == "pairs":
        out = [tokenize_pair(tokenizer, r, max_length, max_prompt_length, stats) for r in rows]
    else:
        out = [tokenize_text(tokenizer, r, max_length, max_prompt_length, stats) for r in rows]
    out = [r for r in out if r is not None]
    log.info("%s: %s", where, stats.summary())
    if not out:
        raise DataError(f"{where}: the dataset is empty after tokenisation and filtering ({stats.summary()})")
    return out


def computed_tokens(rows: list[dict], collate, batch_size: int, group: int, seed: int, max_batches: int = 200) -> dict:
    """Tokens the model computes (real + padding) over the first `max_batches` training batches built as training
    builds them, and the real ones among them: {"computed", "real", "padding_share"}."""
    loader = ResumableDataLoader(rows, batch_size=batch_size, seed=seed, group=group, collate_fn=collate)
    real = computed = 0
    for k, batch in enumerate(loader):
        if k == max_batches:
            break
        computed += batch["input_ids"].numel()
        real += int((batch["sequence_index"] >= 0).sum()) if "sequence_index" in batch \
            else int(batch["attention_mask"].sum())
    return {"computed": computed, "real": real, "padding_share": 1 - real / max(computed, 1)}


class AlignmentDataModule(L.LightningDataModule):
    def __init__(self, tokenizer, train_rows: list[dict], val_rows: list[dict], kind: str, batch_size: int,
                 eval_batch_size: int, max_length: int, max_prompt_length: int, seed: int = 0,
                 num_workers: int = 0, name: str = "data", group: int = 0, pack: bool | str = False):
        """group > 1: training batches of similar length (windows of `group` batches sorted by length, seeded);
        pack: several sequences per row of at most max_length tokens, no padding inside (alignlab.data.tokenize.pack;
        only for models whose attention keeps packed sequences apart, see alignlab.forward.packs_correctly);
        "auto": packed only where that computes fewer tokens than length-grouped padded batches on these rows.
        Validation batches are always taken in length order."""
        super().__init__()
        if kind not in ("pairs", "sequences"):
            raise ValueError(f"unknown batch kind {kind!r}")
        self.kind, self.batch_size, self.eval_batch_size = kind, batch_size, eval_batch_size
        self.train = tokenize_rows(tokenizer, train_rows, kind, max_length, max_prompt_length, f"{name}/train")
        self.val = tokenize_rows(tokenizer, val_rows, kind, max_length, max_prompt_length, f"{name}/validation") \
            if val_rows else []
        self.val.sort(key=row_length)  # evaluation order does not matter; similar lengths pad less
        collator = PreferenceCollator if kind == "pairs" else SequenceCollator
        padded, packed = collator(tokenizer.pad_token_id), collator(tokenizer.pad_token_id, pack_width=max_length)
        if pack == "auto":
            pack = self.packing_pays(padded, packed, group, seed, name)
        # the batches hold the same rows packed or not (grouping applies to both): packing changes only their layout,
        # so the auto choice never changes what a step trains on
        self.seed, self.num_workers, self.group = seed, num_workers, group
        self.collate = packed if pack else padded

    def packing_pays(self, padded, packed, group: int, seed: int, name: str) -> bool:
        """Whether packed batches compute fewer tokens than padded ones (same rows, same grouping). Sequences longer
        than half of max_length pack about one to a row, and then a packed batch is as wide as its longest row: more
        padding, not less (the default mini-IMDb pairs: 34.8% packed vs 6.6% padded, both length-grouped)."""
        as_padded = computed_tokens(self.train, padded, self.batch_size, group, seed)
        as_packed = computed_tokens(self.train, packed, self.batch_size, group, seed)
        pays = as_packed["computed"] < as_padded["computed"]
        log.info("%s: data.packing=auto -> %s (padding %.1f%% packed vs %.1f%% length-grouped)", name,
                 "packed" if pays else "padded", 100 * as_packed["padding_share"], 100 * as_padded["padding_share"])
        return pays

    def optimizer_steps(self, trainer) -> int:
        """Total optimizer steps of the fit, for LR schedules. Lightning's `estimated_stepping_batches` would build
        the train dataloader before a checkpoint is restored, and the restored loader state would be skipped."""
        if trainer.max_steps is not None and trainer.max_steps > 0:
            return trainer.max_steps
        batches = math.ceil((len(self.train) // trainer.world_size) / self.batch_size)  # per rank, as sharded
        return max(1, math.ceil(batches / trainer.accumulate_grad_batches) * max(1, trainer.max_epochs))

    def shard(self) -> dict:
        """This process's place among the data-parallel ranks: {"rank": r, "num_replicas": W} (W = 1 alone)."""
        trainer = getattr(self, "trainer", None)
        kwargs = (trainer.distributed_sampler_kwargs if trainer is not None else None) or {}
        return {"rank": int(kwargs.get("rank", 0)), "num_replicas": int(kwargs.get("num_replicas", 1))}

    def train_dataloader(self) -> DataLoader:
        trainer = getattr(self, "trainer", None)
        accumulate = int(getattr(trainer, "accumulate_grad_batches", 1) or 1) if trainer is not None else 1
        return ResumableDataLoader(self.train, batch_size=self.batch_size, seed=self.seed, collate_fn=self.collate,
                                   num_workers=self.num_workers, group=self.group, accumulate=accumulate,
                                   **self.shard())

    def val_dataloader(self) -> DataLoader | list:
        if not self.val:
            return []
        return DataLoader(self.val, batch_size=self.eval_batch_size, shuffle=False, collate_fn=self.collate,
                          num_workers=self.num_workers)
