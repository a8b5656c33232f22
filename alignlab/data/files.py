"""Preference pairs from local JSONL / JSON / Parquet files, a local dataset directory, or a hub dataset id,
loaded through `datasets`; plus the loading and bad-row helpers the hub sources (imdb, hh_rlhf, ultrafeedback)
share.

`prompt`, `chosen` and `rejected` are text, or chat message lists ``[{"role", "content"}, ...]`` rendered as in
:mod:`alignlab.data.chat` (the tokenizer's chat template when it has one, else a plain template). Rows whose
three fields are all strings are used exactly as stored.
"""
from __future__ import annotations

import logging
import random
from abc import abstractmethod
from pathlib import Path
from typing import Callable

from alignlab.data.chat import ChatRenderer, is_messages, pair_from_messages
from alignlab.data.rows import ON_BAD_ROW, PREFERENCE_COLUMNS, as_sequences, row_problem
from alignlab.data.source import DataSource, distinct_prompts, first_chosen
from alignlab.errors import ConfigError, DataError

log = logging.getLogger(__name__)

FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


# ---- loading ---------------------------------------------------------------------------------------------------
class BadLine(dict):
    """A line of a JSONL file that is not a JSON object (bad UTF-8, bad JSON): reported like any bad row."""

    def __init__(self, problem: str):
        super().__init__()
        self.problem = problem


def looks_local(path: str) -> bool:
    """Whether a data path names a local file (it starts with . / or ~, ends in a data file suffix, or has more
    slashes than a hub id "org/name") rather than a hub dataset id."""
    path = str(path)
    return path.startswith((".", "/", "~")) or Path(path).suffix in FORMATS or path.count("/") > 1


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSONL file, one per non-blank line; a line that is not a UTF-8 JSON object becomes a BadLine
    naming its line number and what is wrong (the data.on_bad_row policy then applies to it)."""
    import json

    rows: list[dict] = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as err:
                rows.append(BadLine(f"(line {number}) is not valid UTF-8: byte {raw[err.start]:#x} at column "
                                    f"{err.start + 1}"))
                continue
            except ValueError as err:
                rows.append(BadLine(f"(line {number}) is not valid JSON: {getattr(err, 'msg', err)} at column "
                                    f"{getattr(err, 'colno', '?')}"))
                continue
            rows.append(row if isinstance(row, dict) else BadLine(f"(line {number}) is a JSON "
                                                                  f"{type(row).__name__}, not an object"))
    return rows


def _hub_offline() -> bool:
    import os

    return any(os.environ.get(k, "0").lower() in {"1", "true", "yes"} for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def local_cache_dir(directory: Path) -> str:
    """A `datasets` cache folder for a local dataset directory, keyed by its absolute path and the names, sizes
    and mtimes of its files. (`datasets` keys the cache of a directory whose README.md declares `configs` by the
    README and the directory's base name only, so two stand-ins named alike, or a directory whose files were
    rewritten, would be served stale rows.)"""
    import hashlib
    import json

    import datasets

    directory = directory.expanduser().resolve()
    stamp = [(str(p.relative_to(directory)), p.stat().st_size, p.stat().st_mtime_ns)
             for p in sorted(directory.rglob("*")) if p.is_file()]
    digest = hashlib.sha256(json.dumps([str(directory), stamp]).encode()).hexdigest()[:16]
    return str(Path(datasets.config.HF_DATASETS_CACHE) / "alignlab-local" / f"{directory.name}-{digest}")


def load_split(path: str, split: str, *, name: str | None = None, data_dir: str | None = None,
               columns: tuple[str, ...] = (), key: str = "data.source.path"):
    """`datasets.load_dataset(path, name, data_dir=data_dir, split=split)` for a hub id or a local directory in
    the hub's layout, with errors that name the dataset, the split and a missing column (DataError)."""
    import datasets

    where = f"{path}" + (f" ({data_dir})" if data_dir else "") + (f" [{name}]" if name else "")
    local = Path(str(path)).expanduser()
    cache = {"cache_dir": local_cache_dir(local)} if local.is_dir() else {}
    try:
        ds = datasets.load_dataset(str(path), name, data_dir=data_dir, split=split, **cache)
    except ValueError as err:
        if "unknown split" in str(err).lower():
            raise DataError(f"{where}: no split {split!r}: {err}") from err
        raise DataError(f"{key}={path!r}: {where} could not be loaded: {err}") from err
    except (OSError, ConnectionError) as err:  # DatasetNotFoundError is a FileNotFoundError
        local = Path(str(path)).expanduser()
        if local.exists():
            why = "the directory exists but could not be loaded"
        elif str(path).startswith((".", "/", "~")):
            why = "no such directory"
        else:
            why = "it is not a local directory, and " + ("the Hugging Face hub is unreachable (HF_HUB_OFFLINE=1)"
                                                        if _hub_offline() else "the hub could not provide it")
        raise DataError(f"{key}={path!r}: {why}. Original error: {type(err).__name__}: {err}") from err
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise DataError(f"{where} split {split!r}: missing column {missing[0]!r} (columns: {ds.column_names})")
    return ds


def load_rows(path: str, split: str = "train", name: str | None = None, data_dir: str | None = None) -> list[dict]:
    """Rows of a local file (format from its suffix: .jsonl, .json (an array of objects, JSON lines, or one
    object holding such an array), .parquet), or of a split of a local dataset directory or hub dataset id."""
    import datasets

    local = Path(path).expanduser()
    if local.is_file():
        if local.suffix not in FORMATS:
            raise DataError(f"{path}: unknown format {local.suffix!r}; expected one of {sorted(FORMATS)}")
        if local.suffix == ".jsonl":
            return read_jsonl(local)
        try:
            ds = datasets.load_dataset(FORMATS[local.suffix], data_files={"data": str(local)}, split="data")
            if local.suffix == ".json" and len(ds.column_names) == 1 and len(ds) == 1 \
                    and isinstance(ds[0][ds.column_names[0]], list):  # {"rows": [{...}, ...]}
                ds = datasets.load_dataset("json", data_files={"data": str(local)}, field=ds.column_names[0],
                                           split="data")
        except Exception as err:  # noqa: BLE001 - datasets wraps parse errors in its own types, or StopIteration
            cause = err.__cause__ or err.__context__ or err
            raise DataError(f"{path}: cannot be read as {local.suffix[1:].upper()} ({type(cause).__name__}: "
                            f"{str(cause)[:300] or 'the file is empty'})") from None
    elif local.is_dir() or not looks_local(path):
        ds = load_split(path, split, name=name, data_dir=data_dir, key="data.source.train/validation")
    else:
        where = "" if Path(path).is_absolute() else f" (relative to the working directory {Path.cwd()})"
        raise DataError(f"{path}: no such file{where}")
    return ds.to_list()


# ---- bad rows --------------------------------------------------------------------------------------------------
def convert_rows(rows, where: str, on_bad_row: str, convert: Callable[[dict], dict]) -> list[dict]:
    """`convert(row)` for each row; a row for which it raises ValueError is bad: with on_bad_row='error' a DataError
    names `where` (dataset and split) and the row number (0-based, as stored), with 'skip' it is dropped and
    counted in a warning."""
    if on_bad_row not in ON_BAD_ROW:
        raise ConfigError(f"data.on_bad_row={on_bad_row!r} is not one of {ON_BAD_ROW}")
    good, skipped, n = [], [], 0
    for i, row in enumerate(rows):
        n += 1
        try:
            good.append(convert(row))
        except ValueError as err:
            if on_bad_row == "error":
                raise DataError(f"{where} row {i}: {err} (set data.on_bad_row=skip to skip and count such rows)") \
                    from None
            skipped.append(i)
    if skipped:
        log.warning("%s: skipped %d bad rows of %d (first: %s)", where, len(skipped), n, skipped[:5])
    if not good:
        empty = " (it is empty)" if not n else ""
        raise DataError(f"{where}: no usable rows ({n} read, {len(skipped)} bad){empty}")
    return good


def text_pair(row: dict, renderer: ChatRenderer) -> dict:
    """The row with prompt/chosen/rejected as text (message lists rendered); ValueError for a bad row."""
    if isinstance(row, BadLine):
        raise ValueError(row.problem)
    values = [row.get(c) for c in PREFERENCE_COLUMNS]
    if any(isinstance(v, (list, tuple)) and is_messages(v) for v in values):
        row = {**row, **pair_from_messages(*values, renderer)}
    problem = row_problem(row)
    if problem is not None:
        raise ValueError(problem)
    return row


def seeded_subset(items: list, n: int | None, seed, what: str) -> list:
    """A seeded random subset of n items in their original order (all of them when n is None or >= len)."""
    if n is None or n >= len(items):
        return items
    if n < 1:
        raise ConfigError(f"{what}={n} must be >= 1 or null")
    keep = sorted(random.Random(f"{seed}-{what}").sample(range(len(items)), n))
    return [items[i] for i in keep]


# ---- the source ------------------------------------------------------------------------------------------------
class PreferenceFiles(DataSource):
    """Pairs of {prompt, chosen, rejected}. With no validation file, a seeded share of train is held out (whole
    prompts). Message-list rows are rendered with the bound tokenizer's chat template (`bind_tokenizer`), or
    the plain template when none is bound or it has none (`template`: auto | plain | tokenizer).

    `train`/`validation` are files, dataset directories or hub ids; for the latter two `train_split` and
    `validation_split` pick the split (validation_split null: "test" when validation is the same dataset as
    train, else "train"). `sft=true` gives an SFT stage on the (prompt, chosen) pairs of train."""

    def __init__(self, train: str, validation: str | None = None, eval_prompts: int = 128, seed: int = 0,
                 val_fraction: float = 0.1, on_bad_row: str = "error", train_split: str = "train",
                 validation_split: str | None = None, name: str | None = None, data_dir: str | None = None,
                 template: str = "auto", sft: bool = False):
        self.paths = {"train": train, "validation": validation}
        if validation_split is None:
            validation_split = "test" if validation == train else "train"
        self.splits = {"train": train_split, "validation": validation_split}
        self.name, self.data_dir = name, data_dir
        self.eval_prompts, self.seed = eval_prompts, seed
        self.val_fraction, self.on_bad_row = val_fraction, on_bad_row
        self.template, self.sft = template, sft
        self.renderer = ChatRenderer(None, template)
        self._raw: dict[str, list[dict]] = {}      # rows as stored (checked with the plain template)
        self._rows: dict[str, list[dict]] = {}     # rows as text under the current renderer

    def bind_tokenizer(self, tokenizer) -> None:
        """Render message lists with this tokenizer's chat template from now on (see alignlab.data.chat)."""
        renderer = ChatRenderer(tokenizer, self.template)
        if renderer.uses_chat_template != self.renderer.uses_chat_template or renderer.uses_chat_template:
            self._rows = {}
        self.renderer = renderer

    def _where(self, split: str) -> str:
        path = self.paths[split]
        return path if Path(path).expanduser().is_file() else f"{path} split {self.splits[split]!r}"

    def _read(self, split: str) -> tuple[list[dict], list[dict]]:
        """(raw rows, plain-text rows) of the good rows of a file/split."""
        raw = load_rows(self.paths[split], self.splits[split], self.name, self.data_dir)
        plain = ChatRenderer(None, "plain")
        pairs = convert_rows(raw, self._where(split), self.on_bad_row, lambda r: (r, text_pair(r, plain)))
        return [r for r, _ in pairs], [t for _, t in pairs]

    def _load(self) -> None:
        if self._raw:
            return
        raw, text = self._read("train")
        if self.paths["validation"]:
            val_raw, val_text = self._read("validation")
        else:  # hold out whole prompts, so validation pairs never share a prompt with training pairs
            prompts = sorted({r["prompt"] for r in text})
            random.Random(self.seed).shuffle(prompts)
            n_val = round(len(prompts) * self.val_fraction)
            if self.val_fraction > 0 and len(prompts) > 1:
                n_val = min(max(n_val, 1), len(prompts) - 1)  # keep at least one prompt on each side
            held = set(prompts[:n_val])
            val_raw = [r for r, t in zip(raw, text) if t["prompt"] in held]
            val_text = [t for t in text if t["prompt"] in held]
            raw = [r for r, t in zip(raw, text) if t["prompt"] not in held]
            text = [t for t in text if t["prompt"] not in held]
        self._raw = {"train": raw, "validation": val_raw}
        self._plain = {"train": text, "validation": val_text}

    def _rendered(self, split: str) -> list[dict]:
        self._load()
        if split not in self._rows:
            if not self.renderer.uses_chat_template or not self._raw[split]:
                self._rows[split] = self._plain[split]
            else:
                where = self._where(split) if split == "train" or self.paths["validation"] \
                    else f"{self.paths['train']} (held-out share)"
                self._rows[split] = convert_rows(self._raw[split], where, self.on_bad_row,
                                                 lambda r: text_pair(r, self.renderer))
        return self._rows[split]

    def _bind_if_unbound(self, tokenizer) -> None:
        """prompts(split, tokenizer) binds the tokenizer only when no tokenizer is bound and no rows were handed
        out yet, so prompts never change format within a run (call bind_tokenizer first)."""
        if tokenizer is None or self.renderer.tokenizer is not None:
            return
        if not self._rows:
            self.bind_tokenizer(tokenizer)
        elif getattr(tokenizer, "chat_template", None) and self.template != "plain":
            log.warning("rows were rendered with the plain template because no tokenizer was bound before "
                        "preference_rows(); call source.bind_tokenizer(tokenizer) first to use its chat template")

    def corpus(self) -> list[str]:
        """Texts for an embedded tokenizer: prompt + chosen under the plain template (no tokenizer exists yet)."""
        self._load()
        return [r["prompt"] + r["chosen"] for r in self._plain["train"]]

    def sft_rows(self) -> list[dict] | None:
        """None by default: the pairs are used as given (SFT the model beforehand, or set sft=true)."""
        if not self.sft:
            return None
        return as_sequences(self._rendered("train"))

    def preference_rows(self, split: str) -> list[dict]:
        return self._rendered("train" if split == "train" else "validation")

    def prompts(self, split: str, tokenizer=None) -> list[str]:
        self._bind_if_unbound(tokenizer)
        return distinct_prompts(self.preference_rows(split))[: self.eval_prompts]

    def chosen_responses(self, split: str = "test") -> dict[str, str]:
        """prompt -> its (first) chosen response, for the win rate against the dataset (alignlab.eval.winrate)."""
        return first_chosen(self.preference_rows(split))


class SplitPairSource(DataSource):
    """Base of the hub preference sources (hh_rlhf, ultrafeedback): pairs from a train split and a test split.
    preference_rows('train') is the train split, any other split name the test split (validation during
    training, preference accuracy in eval); prompts(split) are the split's distinct prompts in a seeded order
    (at most n_eval_prompts); with sft=true the SFT stage trains on the train split's (prompt, chosen) pairs.
    `n_train` / `n_test` keep a seeded random subset of a split (null: all rows).

    Subclasses set `columns` and implement `convert(row) -> {prompt, chosen, rejected, ...}` (ValueError for a
    bad row; counted and skipped, or a DataError naming the split and row with on_bad_row=error)."""

    columns: tuple[str, ...] = ()          # required columns (a missing one is a DataError)
    extra_columns: tuple[str, ...] = ()    # kept when present

    def __init__(self, path: str, train_split: str = "train", test_split: str = "test", name: str | None = None,
                 data_dir: str | None = None, n_train: int | None = None, n_test: int | None = None,
                 n_eval_prompts: int = 128, seed: int = 0, on_bad_row: str = "skip", sft: bool = False):
        if on_bad_row not in ON_BAD_ROW:
            raise ConfigError(f"data.on_bad_row={on_bad_row!r} is not one of {ON_BAD_ROW}")
        self.path, self.name, self.data_dir = str(path), name, data_dir
        self.splits = {"train": train_split, "test": test_split}
        self.limits = {"train": n_train, "test": n_test}
        self.n_eval_prompts, self.seed, self.on_bad_row, self.sft = n_eval_prompts, seed, on_bad_row, sft
        self._raw: dict[str, list[dict]] = {}
        self._rows: dict[str, list[dict]] = {}

    def where(self, split: str) -> str:
        sub = f" ({self.data_dir})" if self.data_dir else ""
        return f"{self.path}{sub} split {self.splits[split]!r}"

    def raw_rows(self, split: str) -> list[dict]:
        """The stored rows of 'train' or 'test' (after the n_train / n_test subset)."""
        if split not in self._raw:
            ds = load_split(self.path, self.splits[split], name=self.name, data_dir=self.data_dir,
                            columns=self.columns)
            limit = self.limits[split]
            if limit is not None and limit < len(ds):
                ds = ds.select(seeded_subset(list(range(len(ds))), limit, self.seed, f"data.source.n_{split}"))
            keep = [*self.columns, *(c for c in self.extra_columns if c in ds.column_names)]
            self._raw[split] = ds.select_columns(keep).to_list()
        return self._raw[split]

    @abstractmethod
    def convert(self, row: dict) -> dict:
        """{prompt, chosen, rejected, ...} of a stored row; ValueError for a bad row."""

    def pairs(self, split: str) -> list[dict]:
        if split not in self._rows:
            self._rows[split] = convert_rows(self.raw_rows(split), self.where(split), self.on_bad_row, self.convert)
        return self._rows[split]

    def corpus(self) -> list[str]:
        return [r["prompt"] + r["chosen"] for r in self.pairs("train")]

    def sft_rows(self) -> list[dict] | None:
        if not self.sft:
            return None
        return as_sequences(self.pairs("train"))

    def preference_rows(self, split: str) -> list[dict]:
        return self.pairs("train" if split == "train" else "test")

    def prompts(self, split: str, tokenizer=None) -> list[str]:
        unique = distinct_prompts(self.preference_rows(split))
        random.Random(f"{self.seed}-{split}-prompts").shuffle(unique)
        return unique[: self.n_eval_prompts]

    def chosen_responses(self, split: str = "test") -> dict[str, str]:
        """prompt -> its (first) chosen response, for the win rate against the dataset (alignlab.eval.winrate)."""
        return first_chosen(self.preference_rows(split))
