"""The trained policy out of a training checkpoint, and `python -m alignlab.checkpoints convert`.

A checkpoint is a Lightning ``.ckpt`` file (single device, DDP) or a DeepSpeed checkpoint directory of per-rank
ZeRO shards (the fp32 master weights, read through DeepSpeed's ``zero_to_fp32``); either becomes the HF directory
users load::

    python -m alignlab.checkpoints convert <run>/checkpoints/last.ckpt <out dir> --like <HF dir with the config>

Checkpoint files are loaded weights-only (`torch.load(weights_only=True)`): a file from someone else cannot run code
on load. A checkpoint that holds arbitrary Python objects (written by other code) needs `--unsafe-full-unpickle`,
which runs whatever the file contains: use it only on files you wrote yourself.
"""
from __future__ import annotations

import argparse
import pickle
import zipfile
from pathlib import Path

import torch

from alignlab.errors import ConfigError

POLICY_PREFIX = "policy."


def _deepspeed_tag(path: Path, tag: str | None) -> str:
    if tag is not None or (path / "latest").exists():
        return tag or (path / "latest").read_text().strip()
    tags = sorted(p.name for p in path.iterdir() if p.is_dir() and any(p.glob("*optim_states.pt")))
    if len(tags) != 1:
        raise ConfigError(f"{path}: no 'latest' file and {len(tags)} checkpoint tags {tags}: pass --tag")
    return tags[0]


def check_checkpoint(path, key: str = "ckpt_path") -> None:
    """ConfigError naming `key` and the file when a checkpoint file is truncated or not a torch checkpoint (a torch
    checkpoint is a zip archive; every member's CRC is checked). DeepSpeed checkpoint directories pass."""
    path = Path(path)
    if path.is_dir():
        return
    if not path.is_file():
        raise ConfigError(f"{key}={str(path)!r}: no such file")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise ConfigError(f"{key}={str(path)!r} is truncated or not a torch checkpoint ({err}); resume from an "
                          f"earlier checkpoint or start again without {key}") from None
    if bad is not None:
        raise ConfigError(f"{key}={str(path)!r} is corrupt (member {bad!r} fails its CRC check)")


def load_checkpoint_file(path, unsafe_full_unpickle: bool = False) -> dict:
    """torch.load of a checkpoint file, weights-only unless `unsafe_full_unpickle` (which runs the file's code)."""
    check_checkpoint(path, "checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=not unsafe_full_unpickle)
    except pickle.UnpicklingError as err:
        raise ConfigError(f"{path}: refused to unpickle objects other than tensors and plain data ({err}). If you "
                          f"wrote this file yourself and trust it, pass --unsafe-full-unpickle") from None


def policy_state_dict(ckpt_path, prefix: str = POLICY_PREFIX, tag: str | None = None,
                      unsafe_full_unpickle: bool = False) -> dict[str, torch.Tensor]:
    """The policy's tensors (prefix stripped) from a Lightning .ckpt file (loaded weights-only unless
    `unsafe_full_unpickle`), or the fp32 master weights from a DeepSpeed checkpoint directory (any ZeRO stage, any
    number of ranks; frozen parameters excluded)."""
    path = Path(ckpt_path)
    if path.is_dir():
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(str(path), tag=_deepspeed_tag(path, tag),
                                                         exclude_frozen_parameters=True)
    elif path.is_file():
        state = load_checkpoint_file(path, unsafe_full_unpickle)
        state = state.get("state_dict", state)
    else:
        raise ConfigError(f"checkpoint {str(path)!r} does not exist")
    out = {}
    for key, value in state.items():
        key = key.removeprefix("_forward_module.")  # Lightning < 2.1 wrapped the module
        if key.startswith(prefix):
            out[key[len(prefix):]] = value.detach().float() if value.is_floating_point() else value
    if not out:
        raise ConfigError(f"{path} holds no tensors under {prefix!r} (first keys: {list(state)[:3]})")
    return out


def load_policy(ckpt_path, model, tag: str | None = None, unsafe_full_unpickle: bool = False):
    """Load the checkpoint's policy into `model` (same architecture); every tensor must match."""
    return load_state(model, policy_state_dict(ckpt_path, tag=tag, unsafe_full_unpickle=unsafe_full_unpickle),
                      ckpt_path)


def load_state(model, state: dict, where):
    """`state` (policy tensors) into `model`; every tensor must match."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    aliases: dict[int, list[str]] = {}  # tied weights (GPT-2's LM head) appear under one name only
    for key, param in model.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(param), []).append(key)
    covered = {k for keys in aliases.values() if any(x in state for x in keys) for k in keys}
    missing = [k for k in missing if k not in covered]
    if missing or unexpected:
        raise ConfigError(f"{where}: the policy in the checkpoint does not fit the model: missing "
                          f"{missing[:3]}{'...' if len(missing) > 3 else ''}, unexpected {unexpected[:3]}")
    return model


def convert(ckpt_path, out_dir, like, dtype: str = "float32", tag: str | None = None,
            unsafe_full_unpickle: bool = False, trust_remote_code: bool = False) -> Path:
    """Write the checkpoint's policy as an HF directory: the architecture (config.json) and the tokenizer come from
    `like` (the run's policy/ dir, its start model dir, or a hub id)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from alignlab.models import torch_dtype

    state = policy_state_dict(ckpt_path, tag=tag, unsafe_full_unpickle=unsafe_full_unpickle)  # refused first
    config = AutoConfig.from_pretrained(str(like), trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, trust_remote_code=trust_remote_code)
    load_state(model, state, ckpt_path).to(torch_dtype(dtype))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    try:
        AutoTokenizer.from_pretrained(str(like), trust_remote_code=trust_remote_code).save_pretrained(out)
    except (OSError, ValueError):
        print(f"note: {like} has no tokenizer; {out} holds the weights and config only")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m alignlab.checkpoints", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert", help="checkpoint (Lightning .ckpt file or DeepSpeed directory) -> HF directory")
    c.add_argument("checkpoint", help="e.g. <run>/checkpoints/last.ckpt (a directory under DeepSpeed)")
    c.add_argument("out_dir")
    c.add_argument("--like", required=True, help="HF dir or hub id giving config.json and the tokenizer")
    c.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    c.add_argument("--tag", default=None, help="DeepSpeed checkpoint tag (default: the 'latest' file)")
    c.add_argument("--unsafe-full-unpickle", action="store_true",
                   help="load a .ckpt holding arbitrary Python objects; this runs code stored in the file, so use it "
                        "only on checkpoints you wrote yourself (default: weights-only, tensors and plain data)")
    c.add_argument("--trust-remote-code", action="store_true",
                   help="allow an architecture whose code lives in --like's repository (runs that code)")
    args = parser.parse_args(argv)
    try:
        out = convert(args.checkpoint, args.out_dir, args.like, args.dtype, args.tag, args.unsafe_full_unpickle,
                      args.trust_remote_code)
    except ConfigError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
