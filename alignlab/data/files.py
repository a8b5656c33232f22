"""Preference pairs from local JSONL / JSON / Parquet files or a hub dataset id, loaded through `datasets`."""
from __future__ import annotations

import random
from pathlib import Path

from alignlab.data.rows import check_preference_rows
from alignlab.errors import DataError

FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def load_rows(path: str, split: str = "train") -> list[dict]:
    """Rows of a local file (format from its suffix) or of a hub dataset id's split."""
    import datasets

    local = Path(path).expanduser()
    if local.is_file():
        if local.suffix not in FORMATS:
            raise DataError(f"{path}: unknown format {local.suffix!r}; expected one of {sorted(FORMATS)}")
        ds = datasets.load_dataset(FORMATS[local.suffix], data_files={"data": str(local)}, split="data")
    elif local.exists() or path.startswith((".", "/", "~")):
        raise DataError(f"{path}: not a file")
    else:
        ds = datasets.load_dataset(path, split=split)
    return ds.to_list()


class PreferenceFiles:
    """Pairs of {prompt, chosen, rejected}. With no validation file, a seeded share of train is held out."""

    def __init__(self, train: str, validation: str | None = None, eval_prompts: int = 128, seed: int = 0,
                 val_fraction: float = 0.1, on_bad_row: str = "error"):
        self.paths = {"train": train, "validation": validation}
        self.eval_prompts, self.seed = eval_prompts, seed
        self.val_fraction, self.on_bad_row = val_fraction, on_bad_row
        self._rows: dict[str, list[dict]] = {}

    def _load(self) -> None:
        if self._rows:
            return
        train = check_preference_rows(load_rows(self.paths["train"]), self.paths["train"], self.on_bad_row)
        if self.paths["validation"]:
            val = check_preference_rows(load_rows(self.paths["validation"]), self.paths["validation"],
                                        self.on_bad_row)
        else:  # hold out whole prompts, so validation pairs never share a prompt with training pairs
            prompts = sorted({r["prompt"] for r in train})
            random.Random(self.seed).shuffle(prompts)
            n_val = round(len(prompts) * self.val_fraction)
            if self.val_fraction > 0 and len(prompts) > 1:
                n_val = min(max(n_val, 1), len(prompts) - 1)  # keep at least one prompt on each side
            held = set(prompts[:n_val])
            val = [r for r in train if r["prompt"] in held]
            train = [r for r in train if r["prompt"] not in held]
        self._rows = {"train": train, "validation": val}

    def corpus(self) -> list[str]:
        self._load()
        return [r["prompt"] + r["chosen"] for r in self._rows["train"]]

    def sft_rows(self) -> None:
        return None  # pairs are used as given; SFT the model beforehand (or use method=sft)

    def preference_rows(self, split: str) -> list[dict]:
        self._load()
        return self._rows["train" if split == "train" else "validation"]

    def prompts(self, split: str, tokenizer=None) -> list[str]:
        rows = self.preference_rows(split)
        unique = list(dict.fromkeys(r["prompt"] for r in rows))
        return unique[: self.eval_prompts]
