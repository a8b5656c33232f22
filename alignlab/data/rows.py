"""Preference rows as plain dicts: what a usable pair is (`row_problem`; alignlab.data.files.convert_rows reports a
bad one by file and row number), and the row transforms the pipeline applies before tokenising."""
from __future__ import annotations

from alignlab.errors import ConfigError

PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")
ON_BAD_ROW = ("error", "skip")


def row_problem(row: dict) -> str | None:
    """Why `row` is not a usable text pair (missing or non-text prompt/chosen/rejected, both responses empty), or
    None when it is."""
    for column in PREFERENCE_COLUMNS:
        if column not in row or row[column] is None:
            return f"missing {column!r}"
        if not isinstance(row[column], str):
            return f"{column!r} is a {type(row[column]).__name__}, expected text"
    if not row["chosen"] and not row["rejected"]:
        return "'chosen' and 'rejected' are both empty"
    return None


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
