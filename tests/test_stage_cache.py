"""Cached stages: fingerprints by content, verified reuse, exclusive and clean builds (alignlab.pipeline.cache)."""
import json
import multiprocessing as mp
import os
import stat

import pytest

from alignlab.pipeline import cache
from alignlab.pipeline.cache import DONE_MARKER, cached_stage, fingerprint, identity


def write_rows(path, n):
    path.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(n)))
    return path


def test_editing_a_local_file_in_place_builds_a_new_stage(tmp_path):
    data = tmp_path / "pairs.jsonl"
    write_rows(data, 3)
    inputs = {"data": {"train": str(data), "sft": True}}
    first = cached_stage(tmp_path / "cache", "sft", inputs, lambda d: (d / "x").write_text("a"))
    assert cached_stage(tmp_path / "cache", "sft", inputs, lambda d: pytest.fail("rebuilt")) == first
    write_rows(data, 4)  # same path, new content
    second = cached_stage(tmp_path / "cache", "sft", inputs, lambda d: (d / "x").write_text("b"))
    assert second != first


def test_a_local_model_directory_is_identified_by_its_files(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"\0" * 64)
    before = fingerprint(identity({"model": {"name_or_path": str(model)}}))
    (model / "model.safetensors").write_bytes(b"\1" * 64)
    assert fingerprint(identity({"model": {"name_or_path": str(model)}})) != before


def test_identity_keeps_values_that_name_no_local_file(tmp_path):
    node = {"name_or_path": "EleutherAI/pythia-70m", "scheduler": "cosine", "n": 3, "paths": [None, "x/y/z"]}
    assert identity(node) == node
    # trust_remote_code permits loading; it does not change what a stage builds
    assert fingerprint({**node, "trust_remote_code": False}) == fingerprint(node)


def test_digests_are_remembered_until_the_file_changes(tmp_path, monkeypatch):
    f = tmp_path / "big.bin"
    f.write_bytes(b"x" * 1000)
    first = identity(str(f), memo_dir=tmp_path)
    reads = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda p, *a, **k: (reads.append(p), real_open(p, *a, **k))[1])
    assert identity(str(f), memo_dir=tmp_path) == first and str(f) not in map(str, reads)
    monkeypatch.undo()
    f.write_bytes(b"y" * 1000)  # same size
    assert identity(str(f), memo_dir=tmp_path) != first


@pytest.mark.parametrize("damage", ["truncate_rows", "overwrite", "delete"])
def test_a_damaged_stage_is_rebuilt(tmp_path, damage, caplog):
    builds = []

    def build(d):
        builds.append(d)
        write_rows(d / "train.jsonl", 402)

    stage = cached_stage(tmp_path, "pairs", {"a": 1}, build)
    recorded = json.loads((stage / DONE_MARKER).read_text())["files"]
    assert recorded["train.jsonl"]["rows"] == 402 and len(recorded["train.jsonl"]["sha256"]) == 64
    f = stage / "train.jsonl"
    if damage == "truncate_rows":  # cut at a line boundary: still valid JSONL
        f.write_text("".join(f.read_text().splitlines(keepends=True)[:100]))
    elif damage == "overwrite":  # same size, garbage
        f.write_bytes(os.urandom(f.stat().st_size))
    else:
        f.unlink()
    again = cached_stage(tmp_path, "pairs", {"a": 1}, build)
    assert again == stage and len(builds) == 2
    assert len((again / "train.jsonl").read_text().splitlines()) == 402
    assert f"{stage} is damaged" in caplog.text


def test_unfinished_builds_of_killed_jobs_are_removed(tmp_path):
    name = f"sft-{fingerprint({'a': 1})}"
    stale = tmp_path / f".{name}-12345-deadbeef"  # left by a build killed with kill -9
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"half")
    other = tmp_path / f".pairs-{'0' * 16}-999-cafe"  # another stage's leftover, its lock free
    other.mkdir()
    cached_stage(tmp_path, "sft", {"a": 1}, lambda d: (d / "x").write_text("a"))
    assert not stale.exists() and not other.exists()


def test_stage_directories_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        stage = cached_stage(tmp_path, "tokenizer", {"a": 1}, lambda d: (d / "x").write_text("a"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(stage.stat().st_mode) == 0o755


def _build_slowly(root, log_path, barrier):
    import time

    def build(d):
        with open(log_path, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(1.0)
        (d / "x").write_text("built")

    barrier.wait()
    print(cached_stage(root, "sft", {"same": "inputs"}, build))


def test_two_jobs_needing_the_same_stage_build_it_once(tmp_path):
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    log_path = tmp_path / "builds.log"
    jobs = [ctx.Process(target=_build_slowly, args=(tmp_path / "cache", log_path, barrier)) for _ in range(2)]
    for j in jobs:
        j.start()
    for j in jobs:
        j.join(120)
    assert [j.exitcode for j in jobs] == [0, 0]
    assert len(log_path.read_text().splitlines()) == 1  # the second job waited on the lock, then reused it
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")] == \
        [f"sft-{fingerprint({'same': 'inputs'})}"]


def test_stages_built_before_files_were_recorded_are_reused_and_recorded(tmp_path):
    final = tmp_path / f"sft-{fingerprint({'a': 1})}"
    final.mkdir()
    (final / "x").write_text("old")
    (final / DONE_MARKER).write_text(json.dumps({"stage": "sft", "inputs": {"a": 1}}))
    assert cached_stage(tmp_path, "sft", {"a": 1}, lambda d: pytest.fail("rebuilt")) == final
    assert "x" in json.loads((final / DONE_MARKER).read_text())["files"]
    assert cache.DONE_MARKER == "STAGE_DONE.json"
