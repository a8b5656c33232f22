"""Cached pipeline stages.

A stage (train the tokenizer, SFT the base model, generate preference pairs, train a teacher) writes a directory.
Its name is the stage plus a fingerprint of everything that determines its content, so a later run or a sweep job
with the same inputs reuses it instead of recomputing, and a change to any input builds a new one.

Builds are atomic: a stage is built in a private temporary directory and renamed into place, so parallel sweep
jobs never see a half-written stage; if two jobs build the same stage at once, the first rename wins and the
other copy is discarded.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

# Bump when a stage's code changes what it produces, so old caches are not reused.
STAGE_VERSION = 1
DONE_MARKER = "STAGE_DONE.json"


def fingerprint(inputs: Any) -> str:
    """A short stable hash of JSON-serialisable inputs (dict key order does not matter)."""
    blob = json.dumps({"v": STAGE_VERSION, "inputs": inputs}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cached_stage(cache_dir: str | Path, name: str, inputs: Any, build: Callable[[Path], None]) -> Path:
    """Return `cache_dir/name-<fingerprint(inputs)>`, calling `build(tmp_dir)` to create it when absent."""
    final = Path(cache_dir).expanduser() / f"{name}-{fingerprint(inputs)}"
    if (final / DONE_MARKER).exists():
        log.info("stage %s: reusing %s", name, final)
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        log.info("stage %s: building %s", name, final)
        build(tmp)
        (tmp / DONE_MARKER).write_text(json.dumps({"stage": name, "inputs": inputs}, indent=1, default=str))
        if final.exists():  # a stale, unfinished directory from an interrupted build
            if (final / DONE_MARKER).exists():
                shutil.rmtree(tmp)
                return final
            shutil.rmtree(final)
        try:
            tmp.rename(final)
        except OSError:  # another job renamed its copy first
            if not (final / DONE_MARKER).exists():
                raise
            shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
