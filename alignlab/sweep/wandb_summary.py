"""Log a sweep's summary as one wandb run: job_type "sweep-summary", group = the sweep's name.

The run holds the per-setting table (`sweep/summary`, a wandb.Table), the front image (`sweep/front`), and in
run.summary the hypervolumes (`hypervolume/<group>`), the reference point (`reference/<metric>`) and the job
counts (`sweep/n_jobs`, ...). Offline by default: the run lives under `<dir>/wandb/offline-run-*/` and can be
uploaded later with `wandb sync`.

wandb 0.31 writes no `files/wandb-summary.json` for an offline run (wandb/wandb#9646; fix pending in
wandb/wandb#11279): the summary lives only in the run's `.wandb` transaction log. `log_summary` then writes that
file itself from the log (`read_offline_summary`), so offline runs look like online ones on disk.
"""
from __future__ import annotations

import json
import math
import os
import struct
import time
from pathlib import Path
from typing import Mapping

import pandas as pd

from alignlab.sweep.collect import sweep_name


def _table_frame(df: pd.DataFrame) -> pd.DataFrame:
    """wandb.Table wants one type per column: numbers stay numbers, everything else becomes text."""
    out = pd.DataFrame(index=df.index)
    for column in df.columns:
        series = df[column]
        if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
            out[str(column)] = series
        else:
            out[str(column)] = ["" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
                                for v in series]
    return out.reset_index(drop=True)


def log_summary(sweep_dir: str | os.PathLike, df: pd.DataFrame, front_png: str | os.PathLike | None,
                project: str = "alignlab", group: str | None = None, offline: bool = True,
                hypervolumes: Mapping[str, float] | None = None, reference: Mapping[str, float] | None = None,
                counts: Mapping[str, int] | None = None, dir: str | os.PathLike | None = None,
                name: str | None = None) -> Path:
    """Log `df` (usually the per-setting summary), the front PNG and the hypervolumes; returns the run's dir
    (`.../wandb/offline-run-<time>-<id>` offline). dir: where wandb writes (default: the sweep dir).
    offline=False leaves the mode to wandb (WANDB_MODE, login)."""
    import wandb

    sweep_dir = Path(sweep_dir)
    if group is None:
        group = sweep_name(sweep_dir).replace("/", "_")
    root = Path(dir) if dir is not None else sweep_dir
    root.mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=project, group=group, job_type="sweep-summary", name=name or f"sweep-summary-{group}",
                     dir=str(root), mode="offline" if offline else None, reinit="create_new",
                     config={"sweep_dir": str(sweep_dir.resolve())},
                     settings=wandb.Settings(console="off", silent=True, x_disable_stats=True, disable_git=True,
                                             save_code=False))
    try:
        payload = {"sweep/summary": wandb.Table(dataframe=_table_frame(df))}
        if front_png is not None and Path(front_png).exists():
            payload["sweep/front"] = wandb.Image(str(front_png))
        run.log(payload)
        for key, value in (hypervolumes or {}).items():
            run.summary[f"hypervolume/{key}"] = float(value)
        for key, value in (reference or {}).items():
            run.summary[f"reference/{key}"] = float(value)
        for key, value in (counts or {}).items():
            run.summary[f"sweep/{key}"] = int(value)
        run.summary["sweep/dir"] = str(sweep_dir.resolve())
        run_dir = Path(run.dir).parent  # run.dir is <run dir>/files
    finally:
        run.finish()
    summary_file = run_dir / "files" / "wandb-summary.json"
    if not summary_file.exists() and list(run_dir.glob("run-*.wandb")):
        wait_for_log(run_dir)
        summary_file.parent.mkdir(parents=True, exist_ok=True)
        summary_file.write_text(json.dumps(read_offline_summary(run_dir), indent=1))
    return run_dir


# ---- reading an offline run back --------------------------------------------------------------------------------
_BLOCK, _HEADER, _CHUNK_HEADER = 32768, 7, 7  # the .wandb file: a 7-byte header, then a LevelDB-style log


def _records(path: Path):
    """The raw protobuf records of a .wandb transaction log (LevelDB log format: 32 KiB blocks of chunks, each
    chunk a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last) and its bytes)."""
    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a wandb transaction log")
    pos, pending = _HEADER, b""
    while pos + _CHUNK_HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _CHUNK_HEADER:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + _CHUNK_HEADER])
        chunk = data[pos + _CHUNK_HEADER:pos + _CHUNK_HEADER + length]
        pos += _CHUNK_HEADER + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk
            pending = b""


def _kinds(run_dir: Path) -> list[str]:
    from wandb.proto import wandb_internal_pb2 as pb

    kinds = []
    for path in Path(run_dir).glob("run-*.wandb"):
        for raw in _records(path):
            record = pb.Record()
            record.ParseFromString(raw)
            kinds.append(record.WhichOneof("record_type"))
    return kinds


def wait_for_log(run_dir: str | os.PathLike, timeout: float = 15.0) -> bool:
    """Wait until the run's .wandb log holds its final `exit` record: wandb's core process may still be writing
    the log for a moment after run.finish() returns. True when it does, False on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if "exit" in _kinds(Path(run_dir)):
                return True
        except Exception:  # noqa: BLE001 - a half-written chunk: read again
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def read_offline_summary(run_dir: str | os.PathLike) -> dict:
    """The final run.summary of an offline run, replayed from its `run-*.wandb` log ({key: value})."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = Path(run_dir).glob("run-*.wandb")
    summary: dict = {}
    for raw in _records(path):
        record = pb.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") != "summary":
            continue
        for item in record.summary.update:
            keys = list(item.nested_key) or [item.key]
            node = summary
            for key in keys[:-1]:
                node = node.setdefault(key, {})
            node[keys[-1]] = json.loads(item.value_json)
        for item in record.summary.remove:
            keys = list(item.nested_key) or [item.key]
            node = summary
            for key in keys[:-1]:
                node = node.get(key, {})
            node.pop(keys[-1], None)
    return summary
