"""results.json (flat metrics, where each stage came from, the resolved config, provenance) and the summary printed at
the end; the run dir's record of attempts.

- results.json is strict JSON: a non-finite metric is written as null and named in "notes".
- A successful result is never replaced by a failure: when a later attempt in the same run dir (a failed resume)
  fails, results.json keeps the success and the failure goes to attempts.jsonl, which records every attempt's start
  and outcome (an attempt killed with kill -9 shows as started and never ended).
- `already_done` lets a rerun of a multirun skip the jobs whose results.json says ok for the same config.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import math
import subprocess
from pathlib import Path

import alignlab

log = logging.getLogger(__name__)

SUMMARY_KEYS = ["eval/reward", "eval/reward_ref", "eval/kl", "eval/entropy", "eval/pref_accuracy",
                "eval/winrate_vs_chosen", "tax/capability", "tax/capability_ref", "tax/ppl_ratio", "tax/probe_drop",
                "val/loss", "val/rewards/accuracies", "time/seconds"]
# What each summary metric measures, and per what (written into results.json next to the values).
METRIC_DEFINITIONS = {
    "eval/reward": "mean reward of the policy's samples for the held-out prompts (per sequence, the reward's scale)",
    "eval/reward_ref": "mean reward of the reference (start) model's samples for the same prompts (per sequence)",
    "eval/kl": "KL(policy || reference) summed over the response tokens of the policy's samples, mean over samples "
               "(nats per sequence)",
    "eval/entropy": "the policy's predictive entropy on its samples (nats per token)",
    "eval/pref_accuracy": "share of held-out pairs whose chosen response gets the higher implicit reward (per pair)",
    "eval/winrate_vs_chosen": "share of prompts whose policy sample out-scores the dataset's chosen response",
    "tax/capability": "exact-match accuracy of the policy's greedy answers on held-out items of the corpus' second "
                      "skill (per item)",
    "tax/capability_ref": "the same for the start model (per item); tax/capability_drop is the difference",
    "tax/ppl_ratio": "perplexity on out-of-task text, policy / start model (per token, ratio)",
    "tax/probe_drop": "accuracy drop of a linear probe on the policy's features vs the start model's (per example)",
    "val/loss": "the method's loss on the held-out pairs (mean per pair)",
    "val/rewards/accuracies": "share of held-out pairs with a positive implicit reward margin (per pair)",
    "time/seconds": "wall-clock seconds of the run over all its attempts (stages, training, evaluation)",
}
RESULTS, ATTEMPTS = "results.json", "attempts.jsonl"
IGNORED_FOR_RERUN = ("ckpt_path",)  # settings that say how to get the result, not what it is


def timestamp(seconds: float | None = None) -> str:
    """Local time with its UTC offset, ISO 8601 (now, or the given time.time() value)."""
    when = dt.datetime.now() if seconds is None else dt.datetime.fromtimestamp(seconds)
    return when.astimezone().isoformat(timespec="seconds")


def now() -> str:
    return timestamp()


# ---- strict JSON ---------------------------------------------------------------------------------------------
def finite_json(value, path: str = "", bad: list | None = None):
    """`value` with every non-finite float replaced by None; the dotted paths of the replaced values go to `bad`."""
    bad = [] if bad is None else bad
    if isinstance(value, float) and not math.isfinite(value):
        bad.append(path)
        return None
    if isinstance(value, dict):
        return {k: finite_json(v, f"{path}.{k}" if path else str(k), bad) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v, f"{path}[{i}]", bad) for i, v in enumerate(value)]
    return value


def dump(results: dict) -> str:
    """Strict JSON text (allow_nan=False): non-finite values as null, listed in results["notes"]."""
    bad: list[str] = []
    clean = finite_json(results, bad=bad)
    if bad:
        clean.setdefault("notes", []).append(f"non-finite values written as null: {', '.join(bad)}")
    return json.dumps(clean, indent=2, allow_nan=False, default=str)


# ---- provenance ----------------------------------------------------------------------------------------------
def provenance() -> dict:
    """alignlab's version and the git commit of its source tree (null outside a git checkout)."""
    info = {"version": alignlab.__version__, "commit": None, "dirty": None}
    src = Path(alignlab.__file__).resolve().parent.parent
    try:
        git = ["git", "-C", str(src)]
        info["commit"] = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                        check=True).stdout.strip() or None
        status = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                text=True, timeout=10, check=True).stdout
        info["dirty"] = bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return info


# ---- attempts ------------------------------------------------------------------------------------------------
def _events(out: Path) -> list[dict]:
    path = Path(out) / ATTEMPTS
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:  # a line cut by a kill
            continue
    return events


def _append(out: Path, event: dict) -> None:
    Path(out).mkdir(parents=True, exist_ok=True)
    with open(Path(out) / ATTEMPTS, "a") as f:
        f.write(json.dumps(finite_json(event), default=str) + "\n")


def begin_attempt(out: Path, command: str | None = None, resume: str | None = None) -> int:
    """Record that an attempt starts in run dir `out`; returns its number (1, 2, ...)."""
    n = 1 + sum(1 for e in _events(out) if e.get("event") == "start")
    _append(out, {"event": "start", "attempt": n, "time": now(), "command": command, "ckpt_path": resume})
    return n


def attempts(out: Path) -> list[dict]:
    """Every attempt in the run dir: number, start and end times, status ("killed" when it never ended)."""
    runs: dict[int, dict] = {}
    for e in _events(out):
        a = runs.setdefault(int(e.get("attempt", 0)), {"attempt": int(e.get("attempt", 0)), "status": "killed"})
        if e.get("event") == "start":
            a.update(started=e.get("time"), command=e.get("command"), ckpt_path=e.get("ckpt_path"))
        else:
            a.update({k: v for k, v in e.items() if k not in ("event", "attempt", "time")}, ended=e.get("time"))
    return [runs[k] for k in sorted(runs)]


def _current_attempt(out: Path) -> int:
    return max([int(e.get("attempt", 0)) for e in _events(out) if e.get("event") == "start"] or [0])


# ---- results.json --------------------------------------------------------------------------------------------
def read(out: Path) -> dict | None:
    try:
        return json.loads((Path(out) / RESULTS).read_text())
    except (OSError, ValueError):
        return None


def record(results: dict, out: Path) -> Path:
    """Write results.json, unless it holds a success and `results` is not one: then the success stays and this
    outcome is only in attempts.jsonl (returned: the file that holds it)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results.setdefault("alignlab", provenance())
    results.setdefault("ended", now())
    attempt = _current_attempt(out)
    _append(out, {"event": "end", "attempt": attempt, "time": results["ended"], "status": results.get("status"),
                  "error": results.get("error"), "global_step": results.get("global_step")})
    results["attempts"] = attempts(out)
    previous = read(out)
    if results.get("status") != "ok" and previous is not None and previous.get("status") == "ok":
        log.warning("attempt %d %s; %s keeps the earlier successful result (every attempt: %s)", attempt,
                    results.get("status"), out / RESULTS, out / ATTEMPTS)
        return out / ATTEMPTS
    tmp = out / f".{RESULTS}.tmp"
    tmp.write_text(dump(results))
    tmp.replace(out / RESULTS)
    return out / RESULTS


def write_results(results: dict, out: Path, title: str) -> dict:
    """Record a successful run's results (with provenance and the definitions of its metrics) and print the
    summary table."""
    metrics = results["metrics"]
    results.setdefault("metric_definitions", {k: METRIC_DEFINITIONS[k] for k in metrics if k in METRIC_DEFINITIONS})
    record(results, out)
    print(summary(title, metrics, out))
    return results


def summary(title: str, metrics: dict, out: Path) -> str:
    lines = [f"alignlab  {title}"]
    for k in SUMMARY_KEYS:
        if k in metrics:
            v = metrics[k]
            lines.append(f"  {k:<24} {v:>10.4f}" if isinstance(v, (int, float)) and math.isfinite(v)
                         else f"  {k:<24} {'n/a':>10}")
    lines.append(f"  results: {Path(out) / RESULTS}")
    return "\n".join(lines)


def already_done(out: Path, config: dict) -> dict | None:
    """The stored results when `out/results.json` says ok for this same config (settings in IGNORED_FOR_RERUN
    aside), else None."""
    previous = read(out)
    if previous is None or previous.get("status") != "ok":
        return None

    def key(c):
        c = json.loads(json.dumps(finite_json(c or {}), default=str))
        return {k: v for k, v in c.items() if k not in IGNORED_FOR_RERUN}

    return previous if key(previous.get("config")) == key(config) else None
