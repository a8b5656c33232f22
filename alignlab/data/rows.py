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
    """Reverse preferences: chosen and rejected exchanged, with everything that belongs to each (their token ids
    and rewards). The 'reverse DPO' model is ordinary DPO on these."""
    def swapped(row: dict) -> dict:
        out = dict(row)
        for key in row:
            if key.startswith("chosen"):
                other = "rejected" + key[len("chosen"):]
                out[key], out[other] = row.get(other), row[key]
        return out

    return [swapped(row) for row in rows]


def as_sequences(pairs: list[dict], responses: str = "chosen") -> list[dict]:
    """Sequence rows {prompt, response} (with prompt_ids / response_ids when the pairs carry sampled ids) from
    preference pairs: each distinct (prompt, chosen) once, and with responses='both' each distinct rejected
    response too."""
    if responses not in ("chosen", "both"):
        raise ConfigError(f"method.responses={responses!r} is not one of ['both', 'chosen']")
    sides = ["chosen", "rejected"] if responses == "both" else ["chosen"]
    out: dict[tuple, dict] = {}
    for side in sides:
        for row in pairs:
            seq = {"prompt": row["prompt"], "response": row[side]}
            if row.get(f"{side}_ids") is not None:
                seq.update(prompt_ids=row["prompt_ids"], response_ids=row[f"{side}_ids"])
            key = (row["prompt"], row[side], tuple(seq.get("response_ids", ())))
            out.setdefault(key, seq)
    return list(out.values())
