"""The merges a run can ask for (conf/merge/*.yaml ``_target_``), each behind :class:`~alignlab.merge.base.Merge`.

* :class:`NoMerge` (merge=none): the trained policy is the result;
* :class:`Average` (merge=average) and :class:`HMA` (merge=hma): post-hoc, on the saved checkpoints
  (METHODS.md section 4);
* :class:`OnDAREMerge` (merge=ondare) and :class:`OnTIESMerge` (merge=onties): online merging optimizers that
  replace AdamW during alignment (METHODS.md section 5).

Every constructor validates its settings with a :class:`~alignlab.errors.ConfigError` naming the ``merge.*`` key.
"""
from __future__ import annotations

import logging

from alignlab import models, strategies
from alignlab.errors import ConfigError
from alignlab.merge.average import merge_checkpoints
from alignlab.merge.base import Merge
from alignlab.merge.blocks import check_block_ratios, check_num_blocks
from alignlab.merge.checks import check_alpha, check_scope
from alignlab.merge.hma import check_eps, check_learning, learn_block_ratios, sample_high_reward_rows
from alignlab.merge.online import (OnDARE, OnlineMergingAdamW, OnTIES, build_online_optimizer, check_merge_hparams,
                                   check_sign_election, check_strategy)

__all__ = ["HMA", "Average", "NoMerge", "OnDAREMerge", "OnTIESMerge", "OnlineMerge"]

log = logging.getLogger(__name__)


class NoMerge(Merge):
    """merge=none: no merging; the trained policy is the result."""


class Average(Merge):
    """merge=average: theta = alpha * aligned + (1 - alpha) * pre, streamed over the two checkpoints.

    ``aligned`` / ``pre``: given checkpoint dirs (None: this run's policy / its start model)."""

    posthoc = True

    def __init__(self, name: str = "average", alpha: float = 0.5, scope: str = "all", aligned: str | None = None,
                 pre: str | None = None):
        super().__init__(name)
        self.alpha = check_alpha(alpha)
        self.scope = check_scope(scope)
        self.aligned, self.pre = aligned, pre

    def merge(self, pre_dir, aligned_dir, out_dir, *, tokenizer=None, reward=None, prompts=None,
              device="cpu") -> dict:
        merge_checkpoints(pre_dir, aligned_dir, out_dir, alpha=self.alpha, scope=self.scope)
        return {"merge/alpha": self.alpha}


class HMA(Average):
    """merge=hma: per-block ratios, given (``block_ratios``) or learned with their mean pinned to ``alpha`` from
    the high-reward samples of the aligned policy (which needs ``tokenizer``, ``reward`` and ``prompts``).

    ``seed``, ``dtype``, ``max_length`` and ``max_prompt_length`` come from the root config by interpolation
    (conf/merge/hma.yaml): the sampling and learning seed, the dtype the two models are loaded in, and the
    tokenisation limits of the data."""

    def __init__(self, name: str = "hma", alpha: float = 0.5, scope: str = "all", num_blocks: int = 3,
                 block_ratios=None, eps: float = 0.2, bound: bool = True, lr: float = 2e-5, batch_size: int = 8,
                 epochs: int = 1, warmup_ratio: float = 0.03, samples_per_prompt: int = 1, top: int = 256,
                 n_keep: int | None = 200, max_new_tokens: int = 32, temperature: float = 1.0,
                 aligned: str | None = None, pre: str | None = None, seed: int = 0, dtype: str = "float32",
                 max_length: int = 512, max_prompt_length: int = 256):
        super().__init__(name, alpha, scope, aligned, pre)
        self.num_blocks = check_num_blocks(num_blocks)
        self.block_ratios = None if block_ratios is None else check_block_ratios(block_ratios, num_blocks)
        if self.block_ratios is None:
            check_learning(eps, lr, batch_size, epochs)
        else:
            check_eps(eps)
        self.eps, self.bound, self.lr, self.batch_size, self.epochs = eps, bound, lr, batch_size, epochs
        self.warmup_ratio, self.samples_per_prompt = warmup_ratio, samples_per_prompt
        self.top, self.n_keep, self.max_new_tokens, self.temperature = top, n_keep, max_new_tokens, temperature
        self.seed, self.dtype, self.max_length, self.max_prompt_length = seed, dtype, max_length, max_prompt_length

    def merge(self, pre_dir, aligned_dir, out_dir, *, tokenizer=None, reward=None, prompts=None,
              device="cpu") -> dict:
        ratios = self.block_ratios
        if ratios is None:
            ratios = self.learn_ratios(pre_dir, aligned_dir, tokenizer, reward, prompts, device)
        merge_checkpoints(pre_dir, aligned_dir, out_dir, alpha=None, scope=self.scope, block_ratios=ratios)
        return {"merge/alpha": self.alpha, **{f"merge/ratio_{k + 1}": float(r) for k, r in enumerate(ratios)}}

    def learn_ratios(self, pre_dir, aligned_dir, tokenizer, reward, prompts, device="cpu") -> list[float]:
        """Sample the aligned policy on ``prompts``, keep the high-reward samples, learn the K ratios on them."""
        if tokenizer is None or reward is None or prompts is None:
            raise ValueError(f"merge={self.name} without merge.block_ratios learns them: it needs the tokenizer, the "
                             f"reward and the training prompts")
        pre = models.freeze(models.load_pretrained(str(pre_dir), self.dtype, key="merge.pre")).to(device)
        aligned = models.freeze(models.load_pretrained(str(aligned_dir), self.dtype, key="merge.aligned")).to(device)
        rows = sample_high_reward_rows(aligned, tokenizer, reward, prompts, top=self.top, n_keep=self.n_keep,
                                       max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                                       num_return_sequences=self.samples_per_prompt, seed=self.seed)
        ratios = learn_block_ratios(pre, aligned, tokenizer, rows, self.alpha, self.num_blocks, self.eps, self.lr,
                                    self.batch_size, self.epochs, self.warmup_ratio, self.max_length,
                                    self.max_prompt_length, self.scope, self.bound, seed=self.seed)
        log.info("hma: learned block ratios %s (mean %.3f)", ratios, sum(ratios) / len(ratios))
        return ratios


class OnlineMerge(Merge):
    """An online merging optimizer (subclasses set :attr:`optimizer_class`): AdamW whose every update is merged
    with the SFT task vector tau = theta_sft - theta_base, where theta_base is ``base_model`` (a path or hub id,
    loaded in ``dtype``; ``sft_init``: the model the SFT stage started from)."""

    optimizer_class: type[OnlineMergingAdamW] = OnlineMergingAdamW

    def __init__(self, name: str, base_model: str = "sft_init", p: float = 0.01, a: float = 1e-7,
                 rescale: bool = True, step_k: int = 1, seed: int = 0, dtype: str = "float32"):
        super().__init__(name)
        if base_model in (None, "", "???"):
            raise ConfigError(f"merge={name} needs merge.base_model (a path, hub id, or sft_init)")
        check_merge_hparams(p, a, step_k)
        self.base_model, self.dtype = str(base_model), dtype
        self.p, self.a, self.rescale, self.step_k, self.seed = p, a, rescale, step_k, seed

    def hyperparameters(self) -> dict:
        """The optimizer's merging keyword arguments."""
        return {"p": self.p, "a": self.a, "rescale": self.rescale, "step_k": self.step_k, "seed": self.seed}

    def check_trainer(self, trainer_cfg) -> None:
        kind = strategies.strategy_kind(trainer_cfg)
        if kind in ("deepspeed", "fsdp"):
            raise ConfigError(
                f"merge={self.name} (an online merging optimizer) cannot run with "
                f"{strategies.trainer_name(trainer_cfg)}: "
                f"{'DeepSpeed ZeRO' if kind == 'deepspeed' else 'FSDP'} hands the optimizer flattened, partitioned "
                f"copies of the parameters, so the per-parameter task vectors cannot be matched to them. Use "
                f"trainer=ddp, trainer=gpu or trainer=cpu, or a post-hoc merge (merge=average / merge=hma)")

    def base_state_dict(self, new_base_model) -> dict:
        if self.base_model == "sft_init":
            return new_base_model().state_dict()
        return models.load_pretrained(self.base_model, self.dtype, key="merge.base_model").state_dict()

    def optimizer_factory(self, new_base_model):
        """Loads the base now (a bad merge.base_model fails before training); the returned ``make`` computes tau
        from it and releases it, so it can be called once."""
        held = [self.base_state_dict(new_base_model)]

        def make(named_groups, lr, strategy):
            check_strategy(strategy)
            if not held:
                raise RuntimeError(f"merge={self.name}: this optimizer factory was already used (the base model is "
                                   f"released once the task vectors are computed); call optimizer_factory again")
            # the base state dict is keyed like the policy's own named_parameters(); dropped once tau is computed
            return build_online_optimizer(self.optimizer_class, named_groups, held.pop(), lr,
                                          **self.hyperparameters())

        return make


class OnDAREMerge(OnlineMerge):
    """merge=ondare: :class:`~alignlab.merge.online.OnDARE` (random keep-masks with probability p)."""

    optimizer_class = OnDARE

    def __init__(self, name: str = "ondare", **settings):
        super().__init__(name, **settings)


class OnTIESMerge(OnlineMerge):
    """merge=onties: :class:`~alignlab.merge.online.OnTIES` (top-p by magnitude, sign election)."""

    optimizer_class = OnTIES

    def __init__(self, name: str = "onties", sign_election: str = "weighted", **settings):
        super().__init__(name, **settings)
        self.sign_election = check_sign_election(sign_election)

    def hyperparameters(self) -> dict:
        return {**super().hyperparameters(), "sign_election": self.sign_election}
