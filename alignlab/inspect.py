"""`python -m alignlab.inspect <run dir>`: which tokens did alignment change? A token-level view of a trained run.

Loads the run's trained policy (results.json ``policy_dir``) and its reference (the model alignment started from:
``pre_dir``, else the SFT stage ``<config.paths.cache_dir>/<stages.start>``), samples completions from the policy
for a few held-out prompts (the run's own data source, ``source.prompts("test", tokenizer)``) or for ``--prompt``
texts, and colours every response token by a token-level signal (METHODS.md sections 2-3):

* ``logratio`` (default): log pi(y_t|s_t) - log ref(y_t|s_t), the per-token term of DPO's implicit reward and of
  the eval KL estimate (their sum over t is the sequence log-ratio);
* ``kl`` (TDPO runs): KL_t = sum_v ref(v|s_t) (log ref(v|s_t) - log pi(v|s_t)), the
  full-vocabulary KL(ref || pi) at the position, whose sum is TDPO's SeqKL;
* ``alpha`` (AlignDistil runs): a_t = r * TVD_t + eps with TVD_t = 1/2 sum_v |p_dpo(v|s_t) - p_rev(v|s_t)|
  between the run's DPO and reverse-DPO teachers (results.json ``stages.dpo_model`` / ``stages.reverse_model``;
  r and eps from ``config.method``): where AlignDistil extrapolated hardest.

``--signal auto`` picks the run's method's own signal (its class attribute ``inspect_signal``). Writes ``tokens_<signal>.png``, ``tokens_<signal>.html`` (hover a
token for its value and the other signals) and ``tokens_<signal>.json`` (every value) to ``<run dir>/inspect/``
or ``--out``.

The values come from the loss functions themselves (alignlab.losses.per_token_logratio_and_kl for the log-ratio and
KL_t, alignlab.losses.adaptive_coefficient for a_t), which walk over positions in chunks, so at most a few
[chunk, V] float32 temporaries exist at once even for a 150k-token vocabulary; the models only project the response
positions through their LM head (alignlab.forward.logits_at_positions).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

import torch

from alignlab.errors import UserError
from alignlab.losses import adaptive_coefficient, per_token_logratio_and_kl

log = logging.getLogger("alignlab.inspect")

SIGNAL_CHOICES = ("auto", "logratio", "kl", "alpha")
DEFAULT_CHUNK = 256


class InspectError(UserError):
    """The run dir, a model path or an option cannot be used; the message says which."""


# ---- models ----------------------------------------------------------------------------------------------------
@torch.no_grad()
def response_logits(model, prompt_ids: Sequence[int], completion_ids: Sequence[int]) -> torch.Tensor:
    """[L, V] logits of `model` at the L positions that predict the completion's tokens (the one predicting
    completion_ids[0] is the prompt's last position). Only those positions go through the LM head."""
    from alignlab.forward import logits_at_positions

    if not prompt_ids:
        raise ValueError("prompt_ids is empty: a response needs at least one token before it")
    device = next(model.parameters()).device
    ids = torch.tensor([list(prompt_ids) + list(completion_ids)], device=device)
    n_prompt, n = len(prompt_ids), len(completion_ids)
    cols = torch.arange(n_prompt - 1, n_prompt - 1 + n, device=device)
    rows = torch.zeros_like(cols)
    backbone = getattr(model, "base_model", model)
    if backbone is not model and model.get_output_embeddings() is not None:
        return logits_at_positions(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, rows, cols)
    return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, cols]


def token_strings(tokenizer, ids: Sequence[int]) -> list[str]:
    """Display text of each token: the growth of the decoded text, so byte-level pieces of one character do not
    show as replacement characters (the character appears on the token that completes it). Falls back to decoding
    the token alone where the decoded prefix is not a prefix of the next one."""
    out, prev = [], ""
    for i in range(len(ids)):
        text = tokenizer.decode(list(ids[: i + 1]), skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if text.startswith(prev) and not text.endswith("\ufffd"):
            out.append(text[len(prev):])
            prev = text
        else:
            out.append(tokenizer.decode([ids[i]], skip_special_tokens=False, clean_up_tokenization_spaces=False))
            if not text.endswith("\ufffd"):
                prev = text
    return out


# ---- the run ---------------------------------------------------------------------------------------------------
def read_results(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise InspectError(f"{path} does not exist: give the dir of a finished alignlab run (it has results.json)")
    results = json.loads(path.read_text())
    if results.get("status") != "ok":
        raise InspectError(f"{path}: status={results.get('status')!r} ({results.get('error', 'no error recorded')});"
                           " only finished runs can be inspected")
    return results


def _exists_or_hub(path: str) -> bool:
    """A local dir that exists, or something that does not look like a local path (a hub id)."""
    return Path(path).expanduser().is_dir() or not (path.startswith(("/", ".", "~")) or Path(path).exists())


def policy_path(results: dict, override: str | None = None) -> str:
    path = override or results.get("policy_dir") or results.get("merged_dir")
    if not path:
        raise InspectError("results.json has no policy_dir (nor merged_dir): pass --policy DIR")
    if not Path(path).expanduser().is_dir():
        raise InspectError(f"the policy dir {path} does not exist (moved or deleted?): pass --policy DIR")
    return str(path)


def reference_path(results: dict, override: str | None = None) -> str:
    """The model alignment started from: --reference, else results.json pre_dir, else the SFT stage dir
    <config.paths.cache_dir>/<stages.start>, else stages.start itself when it is a hub id or local path of a
    pretrained start model."""
    if override:
        return override
    if results.get("pre_dir") and Path(results["pre_dir"]).expanduser().is_dir():
        return str(results["pre_dir"])
    config, start = results.get("config") or {}, (results.get("stages") or {}).get("start")
    cache = (config.get("paths") or {}).get("cache_dir")
    tried = [results["pre_dir"]] if results.get("pre_dir") else []
    if start and cache:
        sft = Path(cache).expanduser() / start
        if sft.is_dir():
            return str(sft)
        tried.append(str(sft))
    model = config.get("model") or {}
    if start and not model.get("random_init") and not str(start).startswith(("sft-", "random-")) \
            and _exists_or_hub(str(start)):
        return str(start)
    raise InspectError("cannot find the run's reference (start) model; tried "
                       f"{tried or ['pre_dir (null)', 'stages.start (none)']}. Pass --reference DIR")


def teacher_paths(results: dict) -> tuple[str, str] | None:
    stages = results.get("stages") or {}
    if stages.get("dpo_model") and stages.get("reverse_model"):
        return str(stages["dpo_model"]), str(stages["reverse_model"])
    return None


def method_class(results: dict):
    """The run's method class (config.method._target_), or None when it cannot be imported."""
    from hydra.utils import get_class

    target = ((results.get("config") or {}).get("method") or {}).get("_target_")
    try:
        return get_class(target) if target else None
    except Exception:  # noqa: BLE001 - a run of another alignlab version: fall back to the log-ratio
        return None


def choose_signal(results: dict, requested: str = "auto") -> str:
    if requested not in SIGNAL_CHOICES:
        raise InspectError(f"--signal={requested!r} is not one of {list(SIGNAL_CHOICES)}")
    method = ((results.get("config") or {}).get("method") or {}).get("name")
    has_teachers = teacher_paths(results) is not None
    if requested == "alpha" and not has_teachers:
        raise InspectError(f"--signal=alpha needs an AlignDistil run with a DPO and a reverse-DPO teacher "
                           f"(results.json stages.dpo_model / stages.reverse_model); this run is method={method}"
                           + (" with teacher=dpo_ref (no reverse model)" if method == "aligndistil" else ""))
    if requested != "auto":
        return requested
    cls = method_class(results)
    signal = cls.inspect_signal if cls is not None else "logratio"
    return "logratio" if signal == "alpha" and not has_teachers else signal


def resolve_r(method: dict) -> float:
    """config.method.r, or when null the default the run used (alignlab.methods.aligndistil.default_r)."""
    from alignlab.methods.aligndistil import default_r

    if method.get("r") is not None:
        return float(method["r"])
    return default_r(method.get("mode", "off_policy"))


def held_out_prompts(config: dict, tokenizer, n: int) -> list[str]:
    """The first n of the run's data source's held-out prompts (source.prompts("test", tokenizer))."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    spec = (config.get("data") or {}).get("source")
    if not spec:
        raise InspectError("results.json config has no data.source: pass --prompt TEXT")
    try:
        source = instantiate(OmegaConf.create(spec))
        source.bind_tokenizer(tokenizer)  # chat data renders prompts with the tokenizer's template
        prompts = source.prompts("test", tokenizer)
    except UserError:
        raise
    except Exception as err:  # e.g. a hub dataset that is not cached offline
        raise InspectError(f"could not get held-out prompts from data.source ({spec.get('_target_')}): "
                           f"{type(err).__name__}: {err}. Pass --prompt TEXT instead") from err
    return list(prompts[:n])


def _load(path: str, dtype: str, key: str, device):
    from alignlab import models

    return models.freeze(models.load_pretrained(path, dtype, key=key)).to(device)


def inspect_run(run_dir: str | Path, prompts: Sequence[str] | None = None, n_prompts: int = 4,
                max_new_tokens: int = 48, signal: str = "auto", out: str | Path | None = None,
                temperature: float = 1.0, seed: int = 0, device: str | None = None, dtype: str | None = None,
                policy: str | None = None, reference: str | None = None,
                chunk_size: int = DEFAULT_CHUNK, vmax: float | None = None) -> dict:
    """Sample, score and render. Returns {"signal", "png", "html", "json", "rows"} (rows as written to the JSON)."""
    from alignlab import models
    from alignlab.sampling import sample_completions
    from alignlab.viz.tokens import SIGNALS, TokenRow, render_html, render_png

    run_dir = Path(run_dir)
    results = read_results(run_dir)
    config = results.get("config") or {}
    signal = choose_signal(results, signal)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = dtype or (config.get("model") or {}).get("dtype") or "float32"
    policy_dir, ref_dir = policy_path(results, policy), reference_path(results, reference)
    tokenizer = models.load_tokenizer(policy_dir, key="policy_dir")
    if prompts is None:
        prompts = held_out_prompts(config, tokenizer, n_prompts)
    if not prompts:
        raise InspectError("no prompts to sample from")

    pi = _load(policy_dir, dtype, "policy_dir", device)
    samples = sample_completions(pi, tokenizer, list(prompts), max_new_tokens, temperature=temperature, seed=seed,
                                 desc="inspect: sampling")
    ref = _load(ref_dir, dtype, "reference", device)
    models.check_same_vocabulary(pi, ref, f"the policy ({policy_dir})", f"the reference ({ref_dir})")
    per_sample = []
    for s in samples:
        if not s["completion_ids"]:
            per_sample.append({})
            continue
        targets = torch.tensor(s["completion_ids"], device=device)
        z_pi = response_logits(pi, s["prompt_ids"], s["completion_ids"])
        z_ref = response_logits(ref, s["prompt_ids"], s["completion_ids"])
        logratio, kl = per_token_logratio_and_kl(z_pi, z_ref, targets, chunk_size)
        per_sample.append({"logratio": logratio.tolist(), "kl": kl.tolist()})
    del ref
    teachers = None
    if signal == "alpha":
        method = config.get("method") or {}
        r, eps = resolve_r(method), float(method.get("eps") if method.get("eps") is not None else 1e-3)
        dpo_dir, rev_dir = teacher_paths(results)
        teacher_dtype = method.get("teacher_dtype") or dtype
        dpo, rev = _load(dpo_dir, teacher_dtype, "stages.dpo_model", device), _load(rev_dir, teacher_dtype,
                                                                                      "stages.reverse_model", device)
        teachers = {"dpo_model": dpo_dir, "reverse_model": rev_dir, "r": r, "eps": eps,
                    "teacher": method.get("teacher")}
        for s, values in zip(samples, per_sample):
            if s["completion_ids"]:
                values["alpha"] = adaptive_coefficient(response_logits(dpo, s["prompt_ids"], s["completion_ids"]),
                                                       response_logits(rev, s["prompt_ids"], s["completion_ids"]),
                                                       r, eps, chunk_size).tolist()
        del dpo, rev

    rows, records = [], []
    for s, values in zip(samples, per_sample):
        tokens = token_strings(tokenizer, s["completion_ids"])
        rows.append(TokenRow(s["prompt"], tokens, values.get(signal, []),
                             {k: v for k, v in values.items() if k != signal}))
        records.append({"prompt": s["prompt"], "completion": s["completion"], "prompt_ids": s["prompt_ids"],
                        "token_ids": s["completion_ids"], "tokens": tokens, "values": values,
                        "sums": {k: float(sum(v)) for k, v in values.items()}})

    out = Path(out) if out is not None else run_dir / "inspect"
    out.mkdir(parents=True, exist_ok=True)
    method_name = (config.get("method") or {}).get("name", "?")
    title = f"{run_dir.name}  (method={method_name}): {SIGNALS[signal][0]} per response token"
    notes = [f"policy: {policy_dir}", f"reference: {ref_dir}",
             f"sampling: temperature={temperature}, max_new_tokens={max_new_tokens}, seed={seed}"]
    if teachers:
        notes.append(f"teachers: dpo={teachers['dpo_model']}, reverse={teachers['reverse_model']}, "
                     f"r={teachers['r']}, eps={teachers['eps']}"
                     + ("" if teachers["teacher"] in (None, "adaptive") else
                        f" (this run's teacher={teachers['teacher']} does not use a_t; shown as a diagnostic)"))
    stem = f"tokens_{signal}"
    html_path = render_html(rows, signal, out / f"{stem}.html", title=title, vmax=vmax, notes=notes)
    png_path = render_png(rows, signal, out / f"{stem}.png", title=title, vmax=vmax)
    json_path = out / f"{stem}.json"
    json_path.write_text(json.dumps({"run_dir": str(run_dir), "signal": signal, "method": method_name,
                                     "policy": policy_dir, "reference": ref_dir, "teachers": teachers,
                                     "sampling": {"temperature": temperature, "max_new_tokens": max_new_tokens,
                                                  "seed": seed},
                                     "rows": records}, indent=1))
    return {"signal": signal, "png": png_path, "html": html_path, "json": json_path, "rows": records}


# ---- CLI -------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m alignlab.inspect",
        description="Colour the tokens of sampled responses by a token-level signal of a trained run: "
                    "log pi - log ref (default), TDPO's KL_t, or AlignDistil's a_t. Writes "
                    "tokens_<signal>.png/.html/.json to <run dir>/inspect/ (or --out).")
    p.add_argument("run_dir", help="a finished run's dir (it holds results.json)")
    p.add_argument("--prompts", type=int, default=4, metavar="N",
                   help="how many of the data source's held-out prompts (default 4; ignored with --prompt)")
    p.add_argument("--prompt", action="append", default=None, metavar="TEXT",
                   help="a prompt to sample from instead (repeatable)")
    p.add_argument("--max-new-tokens", type=int, default=48, metavar="M", help="response length cap (default 48)")
    p.add_argument("--signal", choices=SIGNAL_CHOICES, default="auto",
                   help="auto (default): kl for tdpo1/tdpo2 runs, alpha for AlignDistil runs with both teachers, "
                        "logratio otherwise")
    p.add_argument("--out", default=None, metavar="DIR", help="output dir (default <run dir>/inspect)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1.0, as eval)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--dtype", default=None, help="model dtype (default: the run's model.dtype)")
    p.add_argument("--policy", default=None, metavar="DIR", help="inspect this model instead of policy_dir "
                   "(e.g. the run's merged/ dir)")
    p.add_argument("--reference", default=None, metavar="DIR", help="reference model (default: pre_dir, else the "
                   "SFT stage dir)")
    p.add_argument("--vmax", type=float, default=None, help="fix the colour scale's upper end (and -vmax for "
                   "logratio) so that several runs' figures compare")
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK, help="positions per vocabulary-sized chunk")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.prompts < 1 or args.max_new_tokens < 1 or args.chunk_size < 1:
        parser.error("--prompts, --max-new-tokens and --chunk-size must be >= 1")
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    try:
        result = inspect_run(args.run_dir, prompts=args.prompt, n_prompts=args.prompts,
                             max_new_tokens=args.max_new_tokens, signal=args.signal, out=args.out,
                             temperature=args.temperature, seed=args.seed, device=args.device, dtype=args.dtype,
                             policy=args.policy, reference=args.reference, chunk_size=args.chunk_size,
                             vmax=args.vmax)
    except UserError as err:
        print(f"alignlab.inspect: error: {err}", file=sys.stderr)
        return 2
    print(f"signal: {result['signal']}")
    for row in result["rows"]:
        sums = ", ".join(f"{k}={v:.3f}" for k, v in row["sums"].items())
        print(f"  {row['prompt']!r} -> {len(row['tokens'])} tokens; sums: {sums}")
    for key in ("png", "html", "json"):
        print(f"{key}: {result[key]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
