"""Why AlignDistil's adaptive teacher does what it does on a pair of teachers: the distribution of TVD_t between the
DPO and reverse-DPO teachers, the coefficient a_t = r * TVD_t + eps it gives for several r, how far each teacher
lies from the reference, all without training anything; and, from the run's csv, the student's KL to its teacher,
the DPO model and the reverse model over training.

    python experiments/aligndistil/diagnose.py <aligndistil run dir> [--r 20 10 5 2 1] [--n 128]

The run dir is any finished `method=aligndistil` run with the adaptive or contrastive teacher (its results.json names
the teachers in `stages`, the SFT model as `pre_dir` and the pair stage). Positions are those AlignDistil distils
on: off-policy, the response tokens of the first n distinct chosen responses of the training pairs; on-policy (at
step 0), one sample of the SFT model for each of the first n distinct training prompts.

Per position t (METHODS.md section 3): TVD_t = 1/2 sum_v |p_dpo - p_rev|; a_t = r TVD_t + eps; w_t = beta0 / a_t;
the teacher pi*_t = softmax(z_dpo + a_t (z_dpo - z_rev)) (adaptive), or z_dpo + (beta0/beta)(z_dpo - z_rev)
(contrastive), or (beta0/beta) z_dpo + (1 - beta0/beta) z_ref (dpo_ref). KL_t(pi* || ref) summed over a response
is the KL a student that matched the teacher exactly would have on these responses (eval/kl is taken on the
policy's own samples, so this is only a guide to its scale).

Writes `<run dir>/aligndistil_diagnosis.json` and prints a table.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9, 0.99)
TRAIN_KEYS = ("train/kl/teacher", "train/kl/dpo", "train/kl/reverse", "train/aligndistil/alpha_mean",
              "train/aligndistil/weight_mean", "val/reward")


def _load(path: str):
    from alignlab import models

    return models.freeze(models.load_pretrained(path, "float32", key=path))


def _response_logits(models_, prompts: list[list[int]], responses: list[list[int]], pad: int, batch_size: int = 32):
    """For each model, [N, V] float32 logits at the positions predicting the response tokens (same order)."""
    from alignlab.data.tokenize import collate_sequences
    from alignlab.forward import logits_of
    from alignlab.forward import responses as where_responses

    out = [[] for _ in models_]
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            batch = collate_sequences(prompts[start:start + batch_size], responses[start:start + batch_size], pad)
            where = where_responses(batch)
            for k, model in enumerate(models_):
                logits = logits_of(model, batch)[:, :-1].float()
                out[k].append(logits[where.rows, where.cols])
    return [torch.cat(chunks) for chunks in out]


def _kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row."""
    lp, lq = p_logits.log_softmax(-1), q_logits.log_softmax(-1)
    return (lp.exp() * (lp - lq)).sum(-1)


def stats(values: torch.Tensor) -> dict:
    """{"mean", "p10", "p25", "p50", "p75", "p90", "p99"} of a 1-D tensor."""
    v = values.double().cpu().numpy()
    return {"mean": float(v.mean()), **{f"p{round(q * 100)}": float(np.quantile(v, q)) for q in QUANTILES}}


def diagnose_positions(z_dpo, z_rev, z_ref, n_responses: int, rs, beta: float, beta0: float, eps: float) -> dict:
    """The statistics of one set of positions (logits [N, V] of each model; see the module docstring)."""
    from alignlab.losses import aligndistil_teacher

    tvd = 0.5 * (z_dpo.softmax(-1) - z_rev.softmax(-1)).abs().sum(-1)
    out = {"positions": int(tvd.numel()), "responses": n_responses, "tvd": stats(tvd),
           "tvd_share_above": {str(c): float((tvd > c).float().mean()) for c in (0.05, 0.1, 0.25, 0.5)},
           "kl_dpo_ref_per_response": float(_kl(z_dpo, z_ref).sum() / n_responses),
           "kl_rev_ref_per_response": float(_kl(z_rev, z_ref).sum() / n_responses),
           "kl_dpo_rev_per_token": float(_kl(z_dpo, z_rev).mean())}
    per_r = {}
    for r in rs:
        a = r * tvd.clamp(0, 1) + eps
        teacher, weights = aligndistil_teacher(z_dpo, z_rev, "adaptive", beta, beta0, r=r, eps=eps)
        per_r[f"{r:g}"] = {"a": stats(a), "a_share_below_1": float((a < 1).float().mean()),
                           "a_share_above_contrastive": float((a > beta0 / beta).float().mean()),
                           "w_mean": float(weights.mean()),
                           "kl_teacher_ref_per_response": float(_kl(teacher.float(), z_ref).sum() / n_responses)}
    out["adaptive"] = per_r
    for name, other in (("contrastive", z_rev), ("dpo_ref", z_ref)):
        teacher, _ = aligndistil_teacher(z_dpo, other, name, beta, beta0)
        out[f"kl_{name}_teacher_ref_per_response"] = float(_kl(teacher.float(), z_ref).sum() / n_responses)
    return out


def training_curve(metrics_csv: Path, keys=TRAIN_KEYS, points: int = 5) -> dict:
    """The student's KL (to its teacher, the DPO model, the reverse model), a_t and w_t over training, from the run's
    csv/metrics.csv: {key: [[step, value], ...]} at up to `points` evenly spread logged steps (first and last kept)."""
    if not metrics_csv.exists():
        return {}
    series: dict[str, list[tuple[int, float]]] = {k: [] for k in keys}
    with open(metrics_csv, newline="") as f:
        for row in csv.DictReader(f):
            for k in keys:
                if row.get(k) not in (None, ""):
                    series[k].append((int(float(row.get("step") or 0)), float(row[k])))
    out = {}
    for k, values in series.items():
        if values:
            idx = sorted({round(i * (len(values) - 1) / max(points - 1, 1)) for i in range(points)})
            out[k] = [list(values[i]) for i in idx]
    return out


def _distinct(pairs: list[tuple[list[int], list[int]]], n: int) -> list[tuple[list[int], list[int]]]:
    seen, out = set(), []
    for prompt, response in pairs:
        key = (tuple(prompt), tuple(response))
        if key not in seen:
            seen.add(key)
            out.append((prompt, response))
        if len(out) == n:
            break
    return out


def diagnose(run_dir: Path, rs=(20.0, 10.0, 5.0, 2.0, 1.0), n: int = 128, beta: float | None = None) -> dict:
    from alignlab import models
    from alignlab.data.pairs import read_jsonl
    from alignlab.sampling import generate_from_ids

    results = json.loads((run_dir / "results.json").read_text())
    stages, config = results["stages"], results["config"]
    method = config["method"]
    if not (stages.get("dpo_model") and stages.get("reverse_model")):
        raise SystemExit(f"{run_dir}: needs a run with a DPO and a reverse-DPO teacher (method.teacher=adaptive or "
                         f"contrastive); its stages are {sorted(stages)}")
    beta = float(method["beta"] if beta is None else beta)
    beta0, eps = float(method["beta0"]), float(method["eps"])
    run_r = method.get("r") or (20.0 if method.get("mode", "off_policy") == "off_policy" else 30.0)
    rs = tuple(dict.fromkeys([*rs, float(run_r)]))
    tok = models.load_tokenizer(results["policy_dir"])
    dpo, rev, ref = _load(stages["dpo_model"]), _load(stages["reverse_model"]), _load(results["pre_dir"])
    pairs_dir = Path(stages["pairs"])
    if not pairs_dir.is_absolute():
        pairs_dir = Path(config["paths"]["cache_dir"]) / pairs_dir
    rows = read_jsonl(pairs_dir / "train.jsonl")
    chosen = _distinct([(list(r["prompt_ids"]), list(r["chosen_ids"])) for r in rows], n)
    prompts = [p for p, _ in _distinct([(list(r["prompt_ids"]), []) for r in rows], n)]
    torch.manual_seed(0)
    sampled = generate_from_ids(ref, prompts, tok.pad_token_id, tok.eos_token_id,
                                max_new_tokens=int(method.get("max_new_tokens", 32)), temperature=1.0, top_p=1.0)
    sampled = [s or [tok.eos_token_id] for s in sampled]
    out = {"run_dir": str(run_dir), "beta": beta, "beta0": beta0, "eps": eps, "run_r": float(run_r), "r": list(rs),
           "teacher_training": method.get("teacher_training"),
           "teachers": {k: stages[k] for k in ("dpo_model", "reverse_model")},
           "run_metrics": {k: v for k, v in results.get("metrics", {}).items()
                           if k.startswith(("eval/reward", "eval/kl", "curve/"))}}
    for name, prompts_, responses in (("off_policy", [p for p, _ in chosen], [r for _, r in chosen]),
                                      ("on_policy_step0", prompts, sampled)):
        z_dpo, z_rev, z_ref = _response_logits((dpo, rev, ref), prompts_, responses, tok.pad_token_id)
        out[name] = diagnose_positions(z_dpo, z_rev, z_ref, len(responses), rs, beta, beta0, eps)
    out["training"] = training_curve(run_dir / "csv" / "metrics.csv")
    return out


def render(d: dict) -> str:
    lines = [(f"teachers: {d['teachers']['dpo_model']} (DPO), {d['teachers']['reverse_model']} (reverse); "
              f"beta {d['beta']:g}, beta0 {d['beta0']:g}, eps {d['eps']:g}, the run's r {d['run_r']:g}; "
              f"teacher training {d['teacher_training']}")]
    for name in ("off_policy", "on_policy_step0"):
        s = d[name]
        t = s["tvd"]
        lines += ["", f"{name}: {s['positions']} positions of {s['responses']} responses",
                  (f"  TVD(dpo, rev): mean {t['mean']:.3f}, p10 {t['p10']:.3f}, p25 {t['p25']:.3f}, median "
                   f"{t['p50']:.3f}, p75 {t['p75']:.3f}, p90 {t['p90']:.3f}; share > 0.05: "
                   f"{s['tvd_share_above']['0.05']:.2f}, > 0.1: {s['tvd_share_above']['0.1']:.2f}, "
                   f"> 0.25: {s['tvd_share_above']['0.25']:.2f}"),
                  (f"  KL per response to ref: dpo {s['kl_dpo_ref_per_response']:.2f}, reverse "
                   f"{s['kl_rev_ref_per_response']:.2f}; teachers' KL(dpo||rev) per token "
                   f"{s['kl_dpo_rev_per_token']:.3f}"),
                  (f"  teacher KL to ref per response: contrastive {s['kl_contrastive_teacher_ref_per_response']:.2f},"
                   f" dpo_ref {s['kl_dpo_ref_teacher_ref_per_response']:.2f}"),
                  ("  r     | a_t mean | a_t p10 | a_t p50 | a_t p90 | a_t p99 | share a_t < 1 | w_t mean | "
                   "adaptive teacher KL to ref / response")]
        for r, a in s["adaptive"].items():
            q = a["a"]
            lines.append(f"  {float(r):<5g} | {q['mean']:8.3f} | {q['p10']:7.3f} | {q['p50']:7.3f} | {q['p90']:7.3f} "
                         f"| {q['p99']:7.3f} | {a['a_share_below_1']:13.2f} | {a['w_mean']:8.3f} | "
                         f"{a['kl_teacher_ref_per_response']:.2f}")
    if d.get("training"):
        lines += ["", "student over training (step: value)"]
        for k, values in d["training"].items():
            lines.append(f"  {k}: " + ", ".join(f"{int(s)}: {v:.3g}" for s, v in values))
    if d.get("run_metrics"):
        lines += ["", "run: " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(d["run_metrics"].items())
                                          if isinstance(v, (int, float)))]
    return "\n".join(lines)


def _clean(obj):
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--r", type=float, nargs="+", default=[20.0, 10.0, 5.0, 2.0, 1.0])
    p.add_argument("--beta", type=float, default=None, help="default: the run's method.beta")
    p.add_argument("--n", type=int, default=128, help="distinct training responses / prompts to use")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    d = diagnose(args.run_dir, tuple(args.r), args.n, args.beta)
    (args.run_dir / "aligndistil_diagnosis.json").write_text(json.dumps(_clean(d), indent=2) + "\n")
    print(render(d))
    return 0


if __name__ == "__main__":
    sys.exit(main())
