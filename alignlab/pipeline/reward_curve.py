"""The reward learning curve: a Lightning callback that samples the policy during training and logs val/reward
(eval.reward_every_n_steps > 0), and the steps a run needed to reach its final reward."""
from __future__ import annotations

import statistics

import lightning as L

from alignlab.sampling import sample_completions


class RewardDuringTraining(L.Callback):
    """Every `every_n_steps` optimizer steps (and before the first), sample the policy for a fixed set of held-out
    prompts and log the mean reward as `val/reward`: the learning curve in reward, from which a recipe reads how
    many steps a method needed to reach its final reward."""

    def __init__(self, reward, tokenizer, prompts: list[str], every_n_steps: int, max_new_tokens: int,
                 temperature: float = 1.0, top_p: float = 1.0, batch_size: int = 64, seed: int = 0):
        self.reward, self.tokenizer, self.prompts = reward, tokenizer, prompts
        self.every_n_steps, self.seed = every_n_steps, seed
        self.sampling = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p,
                         "batch_size": batch_size}
        self.last_step = -1
        self.curve: list[tuple[int, float]] = []  # (optimizer step, mean reward)

    def _log(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.global_step == self.last_step or not trainer.is_global_zero:
            return
        self.last_step = trainer.global_step
        samples = sample_completions(pl_module.policy, self.tokenizer, self.prompts, seed=self.seed,
                                     desc="reward during training", **self.sampling)
        rewards = self.reward.score([s["prompt"] for s in samples], [s["completion"] for s in samples])
        self.curve.append((trainer.global_step, statistics.fmean(rewards)))
        for logger in trainer.loggers:
            logger.log_metrics({"val/reward": self.curve[-1][1]}, step=trainer.global_step)

    def on_train_start(self, trainer, pl_module) -> None:
        self._log(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        if trainer.global_step % self.every_n_steps == 0:
            self._log(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._log(trainer, pl_module)


def steps_to_reach(curve: list[tuple[int, float]], tolerance: float = 0.02) -> int | None:
    """The first step whose reward is within `tolerance` of the curve's final reward."""
    if not curve:
        return None
    final = curve[-1][1]
    return next(step for step, value in curve if value >= final - tolerance)


def from_config(eval_cfg, reward, tokenizer, source, seed: int) -> list[RewardDuringTraining]:
    """[the callback] when eval.reward_every_n_steps > 0 (on the first eval.curve_prompts held-out prompts), else []."""
    every = eval_cfg.get("reward_every_n_steps", 0)
    if not every:
        return []
    prompts = source.prompts("test", tokenizer)[: eval_cfg.curve_prompts]
    return [RewardDuringTraining(reward, tokenizer, prompts, every, eval_cfg.max_new_tokens, eval_cfg.temperature,
                                 eval_cfg.top_p, eval_cfg.batch_size, seed=seed)]


def summary(callbacks: list[RewardDuringTraining]) -> dict[str, float]:
    """curve/final_reward and curve/steps_to_final_reward of the callbacks' curve ({} without one)."""
    curve = callbacks[0].curve if callbacks else []
    if not curve:
        return {}
    return {"curve/steps_to_final_reward": float(steps_to_reach(curve)), "curve/final_reward": curve[-1][1]}
