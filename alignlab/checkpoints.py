"""The trained policy out of a training checkpoint, and `python -m alignlab.checkpoints convert`.

A checkpoint is a Lightning ``.ckpt`` file (single device, DDP) or a DeepSpeed checkpoint directory of per-rank
ZeRO shards (the fp32 master weights, read through DeepSpeed's ``zero_to_fp32``); either becomes the HF directory
users load::

    python -m alignlab.checkpoints convert <run>/checkpoints/last.ckpt <out dir> --like <HF dir with the config>
"""
from __future__ import annotations

import argparse
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


def policy_state_dict(ckpt_path, prefix: str = POLICY_PREFIX, tag: str | None = None) -> dict[str, torch.Tensor]:
    """The policy's tensors (prefix stripped) from a Lightning .ckpt file, or the fp32 master weights from a
    DeepSpeed checkpoint directory (any ZeRO stage, any number of ranks; frozen parameters excluded)."""
    path = Path(ckpt_path)
    if path.is_dir():
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(str(path), tag=_deepspeed_tag(path, tag),
                                                         exclude_frozen_parameters=True)
    elif path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=False)
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


def load_policy(ckpt_path, model, tag: str | None = None):
    """Load the checkpoint's policy into `model` (same architecture); every tensor must match."""
    state = policy_state_dict(ckpt_path, tag=tag)
    missing, unexpected = model.load_state_dict(state, strict=False)
    aliases: dict[int, list[str]] = {}  # tied weights (GPT-2's LM head) appear under one name only
    for key, param in model.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(param), []).append(key)
    covered = {k for keys in aliases.values() if any(x in state for x in keys) for k in keys}
    missing = [k for k in missing if k not in covered]
    if missing or unexpected:
        raise ConfigError(f"{ckpt_path}: the policy in the checkpoint does not fit the model: missing "
                          f"{missing[:3]}{'...' if len(missing) > 3 else ''}, unexpected {unexpected[:3]}")
    return model


def convert(ckpt_path, out_dir, like, dtype: str = "float32", tag: str | None = None) -> Path:
    """Write the checkpoint's policy as an HF directory: the architecture (config.json) and the tokenizer come from
    `like` (the run's policy/ dir, its start model dir, or a hub id)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from alignlab.models import torch_dtype

    config = AutoConfig.from_pretrained(str(like))
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    load_policy(ckpt_path, model, tag=tag).to(torch_dtype(dtype))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    try:
        AutoTokenizer.from_pretrained(str(like)).save_pretrained(out)
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
    args = parser.parse_args(argv)
    out = convert(args.checkpoint, args.out_dir, args.like, args.dtype, args.tag)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
