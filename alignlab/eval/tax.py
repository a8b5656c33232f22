"""Alignment-tax metrics (METHODS.md section 4): capability outside the preference task, relative to the
pre-alignment model.

The embedded experiment cannot download ARC / RACE / SQuAD / WMT, so it measures what it can generate:

* ``tax/capability``: exact-match accuracy, with greedy decoding, on held-out items of the second skill the
  embedded SFT corpus teaches besides reviews: word-by-word translation from a generated language
  (:mod:`alignlab.data.capability`; the items' sentences are never in the SFT corpus). ``tax/capability_ref`` is
  the pre-alignment model's accuracy, ``tax/capability_drop`` = ref - policy (> 0: capability lost), and
  ``tax/capability_words`` / ``tax/capability_words_ref`` give partial credit (share of the translation's words
  right at their position). A model that was never taught the skill (any data source but mini-IMDb) scores
  about 0 on both: set ``n_capability=0`` to leave these keys out.

* ``tax/ppl_out_of_task``: perplexity (exp of the mean NLL per token) on generated text of a different kind than
  movie reviews (weather reports, recipes, timetables, geography, household instructions;
  :func:`alignlab.data.probe.generate_out_of_task_texts`). Each text follows a BOS (= EOS) token, so every text
  token is predicted; ``tax/ppl_ratio`` = policy / pre (> 1: capability lost).
* ``tax/probe_accuracy``: a word-order probe the SFT model can do: for held-out reviews, does the model give the
  real continuation of a prefix a higher log-likelihood (summed over its tokens) than the same words shuffled
  (:func:`alignlab.data.probe.review_probe_items`; ties count one half, so a constant model scores 0.5).
  ``tax/probe_drop`` = pre - policy (> 0: capability lost); ``tax/probe_margin`` is the mean log-likelihood gap.

Optional: tasks of EleutherAI's lm-evaluation-harness (``lm_eval_tasks=["arc_easy", ...]``), the paper's
benchmarks at real scale. ``lm_eval`` is imported only when tasks are asked for. **That code path is untested in
this repository** (lm_eval is not installed here and its tasks need downloads); keys are
``tax/lm_eval/<task>/<metric>`` (and ``..._pre``, ``.../<metric>_drop``).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from alignlab.data.capability import CapabilityItem, extract_answer, held_out_items, score_answer
from alignlab.data.probe import generate_out_of_task_texts, review_probe_items
from alignlab.data.tokenize import collate_sequences, encode
from alignlab.forward import device_of, response_logps, to_device

__all__ = ["alignment_tax", "capability_scores", "continuation_logps", "greedy_completions", "lm_eval_scores",
           "perplexity", "probe_scores"]


class _EvalMode:
    def __init__(self, model):
        self.model, self.was_training = model, model.training

    def __enter__(self):
        self.model.eval()
        return self.model

    def __exit__(self, *exc):
        self.model.train(self.was_training)


@torch.no_grad()
def _summed_logps(model, prompts: list[list[int]], responses: list[list[int]], pad_token_id: int,
                  batch_size: int) -> tuple[list[float], list[float]]:
    logps, counts = [], []
    with _EvalMode(model):
        device = device_of(model)
        for start in range(0, len(prompts), batch_size):
            batch = collate_sequences(prompts[start:start + batch_size], responses[start:start + batch_size],
                                      pad_token_id)
            lp, n = response_logps(model, to_device(batch, device))
            logps += lp.double().tolist()
            counts += n.tolist()
    return logps, counts


def _bos(tokenizer) -> int:
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def perplexity(model, tokenizer, texts: Sequence[str], batch_size: int = 32, max_length: int = 128) -> float:
    """exp(total NLL / total tokens) of the texts, each after a BOS token and cut to max_length tokens."""
    bos = _bos(tokenizer)
    responses = [encode(tokenizer, t)[: max_length - 1] for t in texts]
    keep = [i for i, r in enumerate(responses) if r]
    logps, counts = _summed_logps(model, [[bos]] * len(keep), [responses[i] for i in keep],
                                  tokenizer.pad_token_id, batch_size)
    return math.exp(-sum(logps) / max(sum(counts), 1.0))


def continuation_logps(model, tokenizer, prefixes: Sequence[str], continuations: Sequence[str],
                       batch_size: int = 32, max_length: int = 128) -> list[float]:
    """log p(continuation | BOS + prefix), summed over the continuation's tokens."""
    bos = _bos(tokenizer)
    prompts = [[bos] + encode(tokenizer, p) for p in prefixes]
    responses = [encode(tokenizer, c)[: max(1, max_length - len(p))] for p, c in zip(prompts, continuations)]
    return _summed_logps(model, prompts, responses, tokenizer.pad_token_id, batch_size)[0]


def probe_scores(model, tokenizer, items: Sequence[dict], batch_size: int = 32,
                 max_length: int = 128) -> dict[str, float]:
    """Word-order probe: accuracy (real continuation more likely than the shuffled one; ties = 1/2) and the mean
    log-likelihood margin."""
    prefixes = [it["prefix"] for it in items]
    good = continuation_logps(model, tokenizer, prefixes, [it["good"] for it in items], batch_size, max_length)
    bad = continuation_logps(model, tokenizer, prefixes, [it["bad"] for it in items], batch_size, max_length)
    wins = sum(1.0 if g > b else 0.5 if g == b else 0.0 for g, b in zip(good, bad))
    return {"accuracy": wins / len(items), "margin": sum(g - b for g, b in zip(good, bad)) / len(items)}


@torch.no_grad()
def greedy_completions(model, tokenizer, prompts: Sequence[str], max_new_tokens: int,
                       batch_size: int = 32) -> list[tuple[str, bool]]:
    """(decoded continuation, whether it ended with EOS) of each prompt under greedy decoding. Prompts are encoded
    without BOS (as the SFT texts and the review prompts are) and left-padded; the continuation stops at EOS."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    out = []
    with _EvalMode(model):
        device = device_of(model)
        for start in range(0, len(prompts), batch_size):
            encoded = [encode(tokenizer, p) or [eos] for p in prompts[start:start + batch_size]]
            width = max(map(len, encoded))
            ids = torch.full((len(encoded), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, p in enumerate(encoded):
                ids[i, width - len(p):] = torch.tensor(p)
                mask[i, width - len(p):] = 1
            generated = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                                       max_new_tokens=max_new_tokens, pad_token_id=pad, eos_token_id=eos)
            for row in generated[:, width:].tolist():
                ended = eos in row
                out.append((tokenizer.decode(row[: row.index(eos)] if ended else row), ended))
    return out


def capability_scores(model, tokenizer, items: Sequence[CapabilityItem], max_new_tokens: int = 16,
                      batch_size: int = 32) -> dict[str, float]:
    """Mean exact match ("exact") and word-level partial credit ("words") of the model's greedy answers to the
    items (alignlab.data.capability.extract_answer / score_answer)."""
    completions = greedy_completions(model, tokenizer, [it.prompt for it in items], max_new_tokens, batch_size)
    scores = [score_answer(extract_answer(text, ended), it.answer) for (text, ended), it in zip(completions, items)]
    return {k: sum(s[k] for s in scores) / len(scores) for k in ("exact", "words")}


def lm_eval_scores(model, tokenizer, tasks: Sequence[str], limit: int | None = None,
                   num_fewshot: int | None = None, batch_size: int = 8) -> dict[str, float]:
    """{"<task>/<metric>": value} from lm-evaluation-harness on an in-memory HF model. UNTESTED here (lm_eval
    is not installed in this repository's environment, and its tasks download their datasets)."""
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
    except ImportError as err:
        raise ImportError("eval.tax.lm_eval_tasks needs EleutherAI's lm-evaluation-harness: pip install "
                          "'lm_eval[hf]' (and network access to download the tasks' datasets)") from err
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    out = lm_eval.simple_evaluate(model=lm, tasks=list(tasks), num_fewshot=num_fewshot, limit=limit)
    scores = {}
    for task, metrics in out["results"].items():
        for name, value in metrics.items():
            metric = name.split(",")[0]
            if isinstance(value, (int, float)) and not isinstance(value, bool) and not metric.endswith("_stderr"):
                scores[f"{task}/{metric}"] = float(value)
    return scores


def alignment_tax(policy, pre_model, tokenizer, n_texts: int = 256, n_probe: int = 256, seed: int = 0,
                  batch_size: int = 32, max_length: int = 128, out_of_task_texts: Sequence[str] | None = None,
                  probe_items: Sequence[dict] | None = None, n_capability: int = 256,
                  capability_items: Sequence[CapabilityItem] | None = None, capability_max_new_tokens: int = 16,
                  lm_eval_tasks: Sequence[str] | None = None, lm_eval_limit: int | None = None,
                  lm_eval_num_fewshot: int | None = None) -> dict[str, float]:
    """Flat ``tax/*`` metrics of the policy relative to the pre-alignment model (both share the tokenizer).

    Keys: tax/capability, tax/capability_ref, tax/capability_drop (ref - policy), tax/capability_words,
    tax/capability_words_ref (unless n_capability=0 and no capability_items are given), tax/ppl_out_of_task,
    tax/ppl_out_of_task_pre, tax/ppl_ratio (policy/pre), tax/probe_accuracy, tax/probe_accuracy_pre,
    tax/probe_drop (pre - policy), tax/probe_margin, tax/probe_margin_pre, and the lm-evaluation-harness keys when
    ``lm_eval_tasks`` is given. Texts, probe and capability items default to the generated ones (``n_texts`` /
    ``n_probe`` / ``n_capability`` of them, from ``seed``); pass your own to measure other text."""
    texts = list(out_of_task_texts) if out_of_task_texts is not None else generate_out_of_task_texts(n_texts, seed)
    items = list(probe_items) if probe_items is not None else review_probe_items(n_probe, seed)
    ppl = perplexity(policy, tokenizer, texts, batch_size, max_length)
    ppl_pre = perplexity(pre_model, tokenizer, texts, batch_size, max_length)
    probe = probe_scores(policy, tokenizer, items, batch_size, max_length)
    probe_pre = probe_scores(pre_model, tokenizer, items, batch_size, max_length)
    metrics = {
        "tax/ppl_out_of_task": ppl,
        "tax/ppl_out_of_task_pre": ppl_pre,
        "tax/ppl_ratio": ppl / ppl_pre,
        "tax/probe_accuracy": probe["accuracy"],
        "tax/probe_accuracy_pre": probe_pre["accuracy"],
        "tax/probe_drop": probe_pre["accuracy"] - probe["accuracy"],
        "tax/probe_margin": probe["margin"],
        "tax/probe_margin_pre": probe_pre["margin"],
    }
    cap_items = list(capability_items) if capability_items is not None else \
        held_out_items(n_capability, seed) if n_capability > 0 else []
    if cap_items:
        cap = capability_scores(policy, tokenizer, cap_items, capability_max_new_tokens, batch_size)
        cap_ref = capability_scores(pre_model, tokenizer, cap_items, capability_max_new_tokens, batch_size)
        metrics.update({"tax/capability": cap["exact"], "tax/capability_ref": cap_ref["exact"],
                        "tax/capability_drop": cap_ref["exact"] - cap["exact"],
                        "tax/capability_words": cap["words"], "tax/capability_words_ref": cap_ref["words"]})
    if lm_eval_tasks:
        ours = lm_eval_scores(policy, tokenizer, lm_eval_tasks, lm_eval_limit, lm_eval_num_fewshot)
        theirs = lm_eval_scores(pre_model, tokenizer, lm_eval_tasks, lm_eval_limit, lm_eval_num_fewshot)
        for key, value in ours.items():
            metrics[f"tax/lm_eval/{key}"] = value
            if key in theirs:
                metrics[f"tax/lm_eval/{key}_pre"] = theirs[key]
                metrics[f"tax/lm_eval/{key}_drop"] = theirs[key] - value
    return metrics
