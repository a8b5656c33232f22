"""Checking preference rows before they are tokenised, so a bad row is reported by file and row number."""
from __future__ import annotations

import logging

from alignlab.errors import ConfigError, DataError

log = logging.getLogger(__name__)

PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")
ON_BAD_ROW = ("error", "skip")


def row_problem(row: dict) -> str | None:
    for column in PREFERENCE_COLUMNS:
        if column not in row or row[column] is None:
            return f"missing {column!r}"
        if not isinstance(row[column], str):
            return f"{column!r} is a {type(row[column]).__name__}, expected text"
    if not row["chosen"] and not row["rejected"]:
        return "'chosen' and 'rejected' are both empty"
    return None


def check_preference_rows(rows: list[dict], where: str, on_bad_row: str = "error") -> list[dict]:
    """Return the good rows. A bad row raises DataError naming `where` and the row number (0-based, as in the
    file), or with on_bad_row='skip' is dropped and counted in a warning."""
    if on_bad_row not in ON_BAD_ROW:
        raise ConfigError(f"data.on_bad_row={on_bad_row!r} is not one of {ON_BAD_ROW}")
    good, skipped = [], []
    for i, row in enumerate(rows):
        problem = row_problem(row)
        if problem is None:
            good.append(row)
        elif on_bad_row == "error":
            raise DataError(f"{where} row {i}: {problem} (set data.on_bad_row=skip to skip and count such rows)")
        else:
            skipped.append(i)
    if skipped:
        log.warning("%s: skipped %d bad rows (first: %s)", where, len(skipped), skipped[:5])
    if not good:
        raise DataError(f"{where}: no usable rows ({len(rows)} read, {len(skipped)} bad)")
    return good


def swap_preferences(rows: list[dict]) -> list[dict]:
    """Reverse preferences: chosen and rejected exchanged (the 'reverse DPO' model is ordinary DPO on these)."""
    return [{**row, "chosen": row["rejected"], "rejected": row["chosen"]} for row in rows]


def as_sequences(pairs: list[dict], responses: str = "chosen") -> list[dict]:
    """Sequence rows from preference pairs: each distinct (prompt, chosen) once, and with responses='both' each
    distinct rejected response too."""
    if responses not in ("chosen", "both"):
        raise ConfigError(f"method.responses={responses!r} is not one of ['both', 'chosen']")
    keys = [(r["prompt"], r["chosen"]) for r in pairs]
    if responses == "both":
        keys += [(r["prompt"], r["rejected"]) for r in pairs]
    return [{"prompt": p, "response": c} for p, c in dict.fromkeys(keys)]
