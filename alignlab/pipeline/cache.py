"""Cached pipeline stages.

A stage (train the tokenizer, SFT the base model, generate preference pairs, train a teacher) writes a directory.
Its name is the stage plus a fingerprint of everything that determines its content, so a later run or a sweep job
with the same inputs reuses it instead of recomputing, and a change to any input builds a new one.

- Inputs are identified by content: every string in a stage's inputs that names an existing local file or
  directory (a data file, a local model) enters the fingerprint with a digest of its bytes (`identity`), so
  editing a file in place builds new stages. Digests are remembered per file by size, mtime, ctime and inode
  (`.digests.json` in the cache), so an unchanged multi-GB model is not re-read by every run.
- A finished stage records its files (size, sha256, rows of .jsonl files) in STAGE_DONE.json; reuse checks them,
  and a damaged stage (truncated, overwritten) is rebuilt with a warning naming its directory.
- Builds are atomic and exclusive: a stage is built under a file lock (`.locks/<stage dir>.lock`; a second job
  needing it waits, then reuses it) in a temporary directory that is renamed into place. Temporary directories
  of killed builds are removed by the next build. Stage directories are created with the user's umask.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

# Bump when a stage's code changes what it produces, so old caches are not reused.
STAGE_VERSION = 1
DONE_MARKER = "STAGE_DONE.json"
DIGESTS = ".digests.json"
LOCKS = ".locks"
# settings that permit something without changing what a stage produces: left out of fingerprints, so that
# adding them to a config keeps existing stages valid
NOT_CONTENT = frozenset({"trust_remote_code"})
_TMP = re.compile(r"^\.(?P<final>.+-[0-9a-f]{16})-.+$")  # .<stage>-<fingerprint>-<pid>-<random>


class DamagedStage(Exception):
    """A stage directory whose files differ from what its build recorded."""


def _content(inputs: Any) -> Any:
    if isinstance(inputs, dict):
        return {k: _content(v) for k, v in inputs.items() if k not in NOT_CONTENT}
    if isinstance(inputs, (list, tuple)):
        return [_content(v) for v in inputs]
    return inputs


def fingerprint(inputs: Any) -> str:
    """A short stable hash of JSON-serialisable inputs (dict key order does not matter)."""
    blob = json.dumps({"v": STAGE_VERSION, "inputs": _content(inputs)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---- content digests ---------------------------------------------------------------------------------------
class Digests:
    """sha256 of files, remembered in `<memo_dir>/.digests.json` by (size, mtime, ctime, inode): a file is read
    again only when any of these changed (ctime changes on every write, even one that restores the mtime)."""

    def __init__(self, memo_dir: str | Path | None = None):
        self.path = Path(memo_dir) / DIGESTS if memo_dir is not None else None
        self.memo: dict[str, list] = {}
        self.dirty = False
        if self.path is not None and self.path.exists():
            try:
                self.memo = json.loads(self.path.read_text())
            except (OSError, ValueError):
                self.memo = {}

    def file(self, path: Path) -> str:
        st = path.stat()
        stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]
        key = str(path.resolve())
        known = self.memo.get(key)
        if known is not None and known[0] == stamp:
            return known[1]
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        self.memo[key] = [stamp, h.hexdigest()]
        self.dirty = True
        return h.hexdigest()

    def path_digest(self, path: Path) -> str:
        """A file's sha256, or a directory's: the hash of its files' relative paths and digests."""
        if path.is_file():
            return self.file(path)
        h = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(f"{f.relative_to(path)}\0{self.file(f)}\n".encode())
        return h.hexdigest()

    def save(self) -> None:
        if not self.dirty or self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{DIGESTS}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
        tmp.write_text(json.dumps(self.memo))
        tmp.replace(self.path)  # concurrent writers: the last one wins; a lost entry is only recomputed
        self.dirty = False


def _local_path(value: str) -> Path | None:
    """The existing file or directory a string names, if any (never a root, home or working directory)."""
    if not value or "\n" in value or len(value) > 4096:
        return None
    try:
        path = Path(value).expanduser()
        if not path.exists():
            return None
        resolved = path.resolve()
        if resolved in (Path(resolved.anchor), Path.home().resolve(), Path.cwd().resolve()):
            return None
        return path
    except (OSError, ValueError, RuntimeError):
        return None


def identity(value: Any, memo_dir: str | Path | None = None, digests: Digests | None = None) -> Any:
    """`value` (a plain config node: dicts, lists, scalars) with every string that names an existing local file or
    directory replaced by "<string> @sha256:<digest of its content>". Strings that name nothing on disk (hub ids,
    option names) are kept, so the identity of a config without local files is the config itself."""
    own = digests is None
    digests = digests or Digests(memo_dir)
    if isinstance(value, dict):
        out = {k: identity(v, digests=digests) for k, v in value.items()}
    elif isinstance(value, (list, tuple)):
        out = [identity(v, digests=digests) for v in value]
    elif isinstance(value, str) and (path := _local_path(value)) is not None:
        out = f"{value} @sha256:{digests.path_digest(path)[:16]}"
    else:
        out = value
    if own:
        digests.save()
    return out


# ---- the manifest of a stage's files -------------------------------------------------------------------------
def _rows(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def manifest(stage_dir: Path, digests: Digests) -> dict[str, dict]:
    """{relative path: {size, sha256[, rows]}} of every file of a stage (its marker excluded)."""
    files = {}
    for f in sorted(p for p in stage_dir.rglob("*") if p.is_file()):
        rel = str(f.relative_to(stage_dir))
        if rel == DONE_MARKER:
            continue
        files[rel] = {"size": f.stat().st_size, "sha256": digests.file(f)}
        if f.suffix == ".jsonl":
            files[rel]["rows"] = _rows(f)
    return files


def check_stage(stage_dir: Path, recorded: dict[str, dict], digests: Digests) -> None:
    """Raise DamagedStage naming the first file that is missing or differs from what the build recorded."""
    for rel, want in recorded.items():
        f = stage_dir / rel
        if not f.is_file():
            raise DamagedStage(f"{rel} is missing")
        size = f.stat().st_size
        if size != want["size"]:
            rows = f" ({_rows(f)} rows, recorded {want['rows']})" if "rows" in want else ""
            raise DamagedStage(f"{rel} has {size} bytes, recorded {want['size']}{rows}")
        if digests.file(f) != want["sha256"]:
            raise DamagedStage(f"{rel} changed since the stage was built (sha256 differs)")


def _ready(final: Path, name: str, digests: Digests) -> bool:
    """True when `final` is a finished stage whose files are as recorded; a damaged one is moved aside."""
    marker = final / DONE_MARKER
    if not marker.exists():
        return False
    try:
        done = json.loads(marker.read_text())
        recorded = done.get("files")
        if recorded is None:  # built before stages recorded their files: record them now
            done["files"] = manifest(final, digests)
            _write_json(marker, done)
        else:
            check_stage(final, recorded, digests)
        return True
    except (DamagedStage, OSError, ValueError) as err:
        log.warning("stage %s: %s is damaged (%s); rebuilding it", name, final, err)
        _discard(final)
        return False


# ---- building ------------------------------------------------------------------------------------------------
def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    tmp.replace(path)


def _discard(path: Path) -> None:
    """Remove a directory; rename it first so that no reader sees it half-deleted under its real name."""
    if not path.exists():
        return
    aside = path.with_name(f".{path.name}-discard-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        path.rename(aside)
    except OSError:
        aside = path
    shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def stage_lock(root: Path, stage: str, name: str = "", wait: bool = True):
    """An exclusive lock on one stage directory name (fcntl.flock: released by the OS when its holder dies).
    Yields True when held; with wait=False, yields False instead of waiting."""
    locks = root / LOCKS
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{stage}.lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                yield False
                return
            log.info("stage %s: another job is building %s; waiting for it", name or stage, root / stage)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def clean_stale_builds(root: Path, held: str = "") -> list[Path]:
    """Remove the temporary directories of builds whose process is gone: their stage's lock is free, or is the
    lock this process holds (`held`, a stage directory name)."""
    removed = []
    for tmp in root.glob(".*-*"):
        m = _TMP.match(tmp.name)
        if not tmp.is_dir() or m is None:
            continue
        if "-discard-" in tmp.name or m["final"] == held:
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
            continue
        with stage_lock(root, m["final"], wait=False) as free:
            if free and tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
                removed.append(tmp)
    if removed:
        log.info("stage cache: removed %d unfinished build(s) of killed jobs", len(removed))
    return removed


def cached_stage(cache_dir: str | Path, name: str, inputs: Any, build: Callable[[Path], None]) -> Path:
    """Return `cache_dir/name-<fingerprint>`, calling `build(tmp_dir)` to create it when absent or damaged. The
    fingerprint covers `inputs` with the content of every local file or directory they name (`identity`)."""
    root = Path(cache_dir).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    digests = Digests(root)
    final = root / f"{name}-{fingerprint(identity(inputs, digests=digests))}"
    try:
        if _ready(final, name, digests):
            log.info("stage %s: reusing %s", name, final)
            return final
        with stage_lock(root, final.name, name):
            if _ready(final, name, digests):  # another job built it while this one waited
                log.info("stage %s: reusing %s", name, final)
                return final
            clean_stale_builds(root, held=final.name)
            _discard(final)  # an unfinished directory (no marker) of an older build
            tmp = root / f".{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            tmp.mkdir()  # mode 0o777 & ~umask, like any directory the user creates
            try:
                log.info("stage %s: building %s", name, final)
                started = time.time()
                build(tmp)
                _write_json(tmp / DONE_MARKER, {"stage": name, "inputs": inputs, "files": manifest(tmp, digests),
                                                "seconds": round(time.time() - started, 1)})
                tmp.rename(final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            log.info("stage %s: built in %.0f s", name, time.time() - started)
            return final
    finally:
        digests.save()
