"""Collect a Hydra multirun into one table: one row per job, failed and missing jobs included.

A job dir is any directory under the sweep dir that holds `.hydra/` (Hydra writes `<sweep dir>/<job number>/`
with the default `hydra.sweep.subdir`; other subdir patterns, nested ones included, work too). A single run dir
(one that holds `.hydra/` itself) counts as a sweep of one job.

Columns of `collect(sweep_dir)`:

    job          the job dir relative to the sweep dir ("0", "1", ...)
    status       "ok" | "failed" | "missing"   (missing: no results.json; failed: results.json says so, or is
                 unreadable)
    <key>        one column per override key of the job's `.hydra/overrides.yaml` (`method`, `method.beta`,
                 `seed`, ...), values parsed by Hydra's override grammar (0.1 -> float, 3 -> int)
    method       the override value when `method` was overridden, else the run's config `method.name`
    method_name  the run's config `method.name` (results.json, else `.hydra/config.yaml`)
    seed         the override value when swept, else the config's `seed`
    <metric>     every flat metric of results.json ("eval/reward", "eval/kl", ...) as float
    error        the error message of a failed job ("" otherwise)
    overrides    the job's overrides joined by spaces
    job_dir      absolute path of the job dir

`df.attrs` holds "sweep_dir", "keys" (override keys in order of first appearance) and "metrics" (metric names).
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd
import yaml

RESERVED = ("job", "status", "method", "method_name", "seed", "error", "overrides", "job_dir")
STATUSES = ("ok", "failed", "missing")
SEED_KEYS = ("seed",)


# ---- finding and reading job dirs -------------------------------------------------------------------------------
def _natural_key(text: str):
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text) if part]


def sweep_name(sweep_dir: str | os.PathLike) -> str:
    """"2026-11-23/16-25-29" for Hydra's default multirun/<date>/<time>, else the dir's name."""
    path = Path(sweep_dir).resolve()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", path.parent.name):
        return f"{path.parent.name}/{path.name}"
    return path.name


def find_job_dirs(sweep_dir: str | os.PathLike) -> list[Path]:
    """Directories under `sweep_dir` that hold `.hydra/` (not descending into a job dir), naturally sorted."""
    root = Path(sweep_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"sweep dir {root} does not exist")
    if (root / ".hydra").is_dir():
        return [root]
    found = []
    for current, dirnames, _ in os.walk(root):
        if ".hydra" in dirnames and Path(current) != root:
            found.append(Path(current))
            dirnames[:] = []  # a job's checkpoints, policy, wandb dirs are not jobs
            continue
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "wandb"]
    return sorted(found, key=lambda p: _natural_key(p.relative_to(root).as_posix()))


def _plain_value(value):
    if isinstance(value, (list, dict, tuple)):
        return json.dumps(value)
    return value


def parse_overrides(lines: Iterable[str]) -> dict[str, object]:
    """{key: value} from Hydra override strings; `+`/`++`/`~` prefixes dropped, `group@pkg` kept as the key.

    Values are typed by Hydra's grammar (`0.1` -> 0.1, `3` -> 3, `null` -> None); lists and dicts become their
    JSON text so that they can be grouped on. Falls back to splitting on the first `=` if Hydra cannot parse.
    """
    lines = [str(line) for line in lines]
    out: dict[str, object] = {}
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        for o in OverridesParser.create().parse_overrides(lines):
            key = o.key_or_group + (f"@{o.package}" if o.package else "")
            out[key] = None if o.is_delete() else _plain_value(o.value())
        return out
    except Exception:  # noqa: BLE001 - the grammar rejects something: the plain split is still informative
        for line in lines:
            key, _, value = line.lstrip("+~").partition("=")
            out[key] = value
        return out


def _read_yaml(path: Path):
    try:
        return yaml.safe_load(path.read_text())
    except Exception:  # noqa: BLE001
        return None


def _get(tree, dotted: str):
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _error_text(error) -> str:
    """Accepts the proposed schema's error (a string, or {"type", "message"}) and anything else readable."""
    if error is None:
        return ""
    if isinstance(error, dict):
        kind, message = error.get("type"), error.get("message")
        if message is not None:
            return f"{kind}: {message}" if kind else str(message)
        return json.dumps(error)
    return str(error)


def read_job(job_dir: Path, root: Path) -> dict:
    """One row (see the module docstring) for one job dir."""
    overrides_list = _read_yaml(job_dir / ".hydra" / "overrides.yaml") or []
    overrides = parse_overrides(overrides_list)
    row: dict = {"job": job_dir.relative_to(root).as_posix() if job_dir != root else job_dir.name,
                 "overrides": " ".join(str(o) for o in overrides_list), "job_dir": str(job_dir.resolve())}
    config, metrics, error = None, {}, ""
    results_path = job_dir / "results.json"
    if not results_path.exists():
        status = "missing"
        error = "no results.json (the job crashed before writing it, was killed, or is still running)"
    else:
        try:
            results = json.loads(results_path.read_text())
            if not isinstance(results, dict):
                raise ValueError("results.json does not hold an object")
        except Exception as err:  # noqa: BLE001
            results, status, error = {}, "failed", f"unreadable results.json: {type(err).__name__}: {err}"
        else:
            raw_status = results.get("status", "ok")
            status = "ok" if raw_status == "ok" else "failed"
            if status == "failed":
                error = _error_text(results.get("error")) or "no error message"
                if raw_status != "failed":  # e.g. "interrupted": keep what the run said
                    error = f"status {raw_status!r}: {error}"
            config = results.get("config")
            metrics = results.get("metrics") or {}
    if not isinstance(config, dict):
        config = _read_yaml(job_dir / ".hydra" / "config.yaml")
    method_name = _get(config, "method.name") if isinstance(config, dict) else None
    seed = _get(config, "seed") if isinstance(config, dict) else None

    row["status"] = status
    for key, value in overrides.items():
        row[key if key not in RESERVED or key in ("method", "seed") else f"{key} (override)"] = value
    row.setdefault("method", method_name)
    row["method_name"] = method_name if method_name is not None else row["method"]
    row.setdefault("seed", seed)
    row["error"] = error
    row["_keys"] = list(overrides)
    row["_metrics"] = {str(k): _float(v) for k, v in metrics.items() if not isinstance(v, (dict, list))}
    return row


def collect(sweep_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per job dir of a multirun (see the module docstring); never drops a failed or missing job."""
    root = Path(sweep_dir)
    rows = [read_job(job_dir, root) for job_dir in find_job_dirs(root)]
    keys: list[str] = []
    metric_names: list[str] = []
    for row in rows:
        keys += [k for k in row.pop("_keys") if k not in keys]
        row["_metric_values"] = row.pop("_metrics")
        metric_names += [m for m in row["_metric_values"] if m not in metric_names]
    metric_names = sorted(metric_names)
    key_columns = [k if k not in RESERVED or k in ("method", "seed") else f"{k} (override)" for k in keys]
    records = []
    for row in rows:
        values = row.pop("_metric_values")
        record = {c: row.get(c) for c in ("job", "status")}
        record.update({c: row.get(c) for c in key_columns})
        record.update({c: row.get(c) for c in ("method", "method_name", "seed")})
        record.update({m: values.get(m, math.nan) for m in metric_names})
        record.update({c: row.get(c) for c in ("error", "overrides", "job_dir")})
        records.append(record)
    columns = ["job", "status", *[c for c in key_columns if c not in ("method", "seed")], "method", "method_name",
               "seed", *metric_names, "error", "overrides", "job_dir"]
    df = pd.DataFrame.from_records(records, columns=columns)
    for m in metric_names:
        df[m] = df[m].astype(float)
    df.attrs.update({"sweep_dir": str(root.resolve()), "keys": key_columns, "metrics": metric_names})
    return df


# ---- helpers that also work on a table read back from sweep.csv (attrs lost) ------------------------------------
def metric_columns(df: pd.DataFrame) -> list[str]:
    if df.attrs.get("metrics") is not None:
        return [m for m in df.attrs["metrics"] if m in df.columns]
    return [c for c in df.columns if "/" in c and c not in RESERVED and pd.api.types.is_numeric_dtype(df[c])]


def key_columns(df: pd.DataFrame) -> list[str]:
    """The override keys (all of them, swept or fixed)."""
    if df.attrs.get("keys") is not None:
        return [k for k in df.attrs["keys"] if k in df.columns]
    metrics = set(metric_columns(df))
    return [c for c in df.columns if c not in RESERVED and c not in metrics] + \
        [c for c in ("method", "seed") if c in df.columns]


def _hashable(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ("<nan>",)
    return value


def swept_keys(df: pd.DataFrame, keys: Sequence[str] | None = None) -> list[str]:
    """The override keys (or `keys`) whose value differs between jobs."""
    keys = key_columns(df) if keys is None else keys
    return [k for k in keys if k in df.columns and len({_hashable(v) for v in df[k]}) > 1]


def default_group_keys(df: pd.DataFrame) -> list[str]:
    """`method` first, then every override key except the seed keys."""
    keys = [k for k in key_columns(df) if k not in SEED_KEYS and k != "method"]
    return (["method"] if "method" in df.columns else []) + keys


def aggregate(df: pd.DataFrame, by: Sequence[str] | str | None = None,
              metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean and sample std (ddof=1; NaN for one seed) of each metric over the ok jobs of each setting.

    by: the keys that define a setting; default `method` + every override key except `seed`. Rows come in order
    of first appearance in the sweep; settings whose jobs all failed are kept with n_seeds = 0 and NaN metrics.
    Columns: <by...>, n_seeds (ok jobs), n_jobs, n_failed (failed + missing), seeds (of the ok jobs),
    then `<metric>_mean`, `<metric>_std` for each metric. attrs: "by", "metrics", and the input's attrs.
    """
    by = [by] if isinstance(by, str) else list(by) if by is not None else default_group_keys(df)
    missing = [k for k in by if k not in df.columns]
    if missing:
        raise KeyError(f"cannot group by {missing}: columns are {list(df.columns)}")
    metrics = list(metrics) if metrics is not None else metric_columns(df)
    groups: dict[tuple, list[int]] = {}
    for i, row in enumerate(df[by].itertuples(index=False, name=None)):
        groups.setdefault(tuple(_hashable(v) for v in row), []).append(i)
    records = []
    for positions in groups.values():
        part = df.iloc[positions]
        ok = part[part["status"] == "ok"]
        record = {k: part[k].iloc[0] for k in by}
        record.update({"n_seeds": len(ok), "n_jobs": len(part), "n_failed": int((part["status"] != "ok").sum()),
                       "seeds": " ".join(str(s) for s in ok["seed"]) if "seed" in ok else ""})
        for m in metrics:
            values = ok[m].astype(float) if m in ok else pd.Series(dtype=float)
            values = values[values.notna()]
            record[f"{m}_mean"] = float(values.mean()) if len(values) else math.nan
            record[f"{m}_std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        records.append(record)
    columns = [*by, "n_seeds", "n_jobs", "n_failed", "seeds", *[f"{m}_{s}" for m in metrics for s in ("mean", "std")]]
    out = pd.DataFrame.from_records(records, columns=columns)
    out.attrs.update(df.attrs)
    out.attrs.update({"by": by, "metrics": metrics})
    return out
