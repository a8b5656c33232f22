"""Stage: the preference pairs, by split. The data source's own pairs (`preference_rows`), or, for sources that have
none (the IMDb protocol, METHODS.md section 6), completions sampled from the start model and labelled by the reward:
a cached stage, written as train.jsonl / validation.jsonl (rows keep the sampled token ids), with stats.json (how
many samples stopped at max_new_tokens)."""
from __future__ import annotations

import json

from omegaconf import OmegaConf

from alignlab.data.pairs import generate_pairs, read_jsonl, write_jsonl
from alignlab.errors import instantiate
from alignlab.pipeline.cache import cached_stage
from alignlab.pipeline.start import StartModel

SPLITS = ("train", "validation")
FORMAT = 2  # 2: rows carry the sampled token ids (prompt_ids, chosen_ids, rejected_ids) beside the text


def preference_rows(source, start: StartModel, tokenizer, reward_cfg, data_cfg, source_id: dict, seed: int,
                    cache_dir) -> tuple[dict, str]:
    """Rows by split ("train", "validation"), and where they came from (the data's name, or the stage's dir)."""
    train = source.preference_rows("train")
    if train is not None:
        return {"train": train, "validation": source.preference_rows("validation")}, data_cfg.name

    def build(tmp) -> None:
        splits, stats = generate_pairs(start.new(), tokenizer, instantiate(reward_cfg),
                                       source.prompts("train", tokenizer), data_cfg.pairs, data_cfg.val_fraction,
                                       seed=seed)
        for split, split_rows in splits.items():
            write_jsonl(split_rows, tmp / f"{split}.jsonl")
        (tmp / "stats.json").write_text(json.dumps(stats, indent=1))

    inputs = {"format": FORMAT, "start": start.id, "reward": OmegaConf.to_container(reward_cfg, resolve=True),
              "pairs": OmegaConf.to_container(data_cfg.pairs, resolve=True), "data": source_id,
              "val_fraction": data_cfg.val_fraction, "seed": seed}
    path = cached_stage(cache_dir, "pairs", inputs, build)
    return {split: read_jsonl(path / f"{split}.jsonl") for split in SPLITS}, str(path)
