"""The shared LightningModule: a trainable policy, an optional frozen reference, and an optimizer.

Subclasses only say how a batch becomes a loss (`loss_and_metrics`), using the pure functions of
alignlab.losses. Frozen models are attributes (so Lightning strategies move and shard them) but are in no
optimizer parameter group and are removed from every training checkpoint.
"""
from __future__ import annotations

import lightning as L
import torch
from transformers import get_scheduler

from alignlab import strategies
from alignlab.errors import ConfigError
from alignlab.forward import response_logps

SCHEDULERS = {"constant": "constant_with_warmup", "cosine": "cosine", "linear": "linear"}


def check_positive(**values) -> None:
    """ConfigError naming the method.* key of any value that is not > 0 (beta, beta0, ...)."""
    for key, value in values.items():
        if not value > 0:
            raise ConfigError(f"method.{key}={value} must be > 0")


class AlignmentModule(L.LightningModule):
    batch_kind = "pairs"          # "pairs": 2B rows, chosen then rejected; "sequences": SFT rows
    needs_reference = True
    frozen = ("reference",)       # attribute names of frozen models, kept out of optimizers and checkpoints

    def __init__(self, policy, reference=None, optim: dict | None = None, name: str | None = None, tokenizer=None):
        super().__init__()
        self.tokenizer = tokenizer  # for methods that generate (on-policy); not a module, never checkpointed
        if self.needs_reference and reference is None:
            raise ConfigError(f"method {name or type(self).__name__} needs a reference model")
        self.policy = policy
        self.reference = reference if self.needs_reference else None
        self.optim = {"lr": 1e-5, "weight_decay": 0.0, "warmup_ratio": 0.1, "scheduler": "constant", **(optim or {})}
        if self.optim["scheduler"] not in SCHEDULERS:
            raise ConfigError(f"method.optim.scheduler={self.optim['scheduler']!r} is not one of {sorted(SCHEDULERS)}")
        self.method_name = name or type(self).__name__.lower()
        self.strict_loading = False  # checkpoints hold the policy only; on_load_checkpoint checks it is complete

    # ---- what a subclass provides -------------------------------------------------------------------------
    def loss_and_metrics(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    @staticmethod
    def preference_score(policy_logps, ref_logps, n_tokens):
        """The implicit reward ranking a response (its sign matters, not its scale): log pi(y) - log ref(y)."""
        return policy_logps - ref_logps

    # ---- shared machinery ---------------------------------------------------------------------------------
    def reference_logps(self, batch: dict) -> torch.Tensor:
        with torch.no_grad():
            return response_logps(self.reference, batch)[0]

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def _step(self, batch: dict, split: str) -> torch.Tensor:
        loss, metrics = self.loss_and_metrics(batch)
        rows = batch.get("num_pairs", batch["input_ids"].shape[0])
        metrics = {f"{split}/{k}": v.detach().float().mean() for k, v in {"loss": loss, **metrics}.items()}
        shown = {f"{split}/loss", f"{split}/rewards/accuracies"}
        for prog_bar in (True, False):  # the progress bar shows loss and accuracy; loggers get everything
            self.log_dict({k: v for k, v in metrics.items() if (k in shown) == prog_bar}, prog_bar=prog_bar,
                          on_step=split == "train", on_epoch=split != "train", batch_size=rows,
                          sync_dist=split != "train")
        return loss

    def trainable_parameters(self):
        return [p for p in self.policy.parameters() if p.requires_grad]

    def use_online_merging(self, merge: dict, base_state_dict: dict) -> None:
        """merge=ondare|onties: the optimizer merges each update with the task vector theta_policy - theta_base.
        Plain attributes, so the base weights never enter a checkpoint; released once tau is computed."""
        self.online_merge, self.merge_base = merge, base_state_dict

    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, p in self.policy.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim < 2 else decay).append((name, p))  # no decay on biases and norms
        groups = [{"params": decay, "weight_decay": self.optim["weight_decay"]},
                  {"params": no_decay, "weight_decay": 0.0}]
        merge = getattr(self, "online_merge", None)
        if merge is not None:
            from alignlab.merge.online import build_online_optimizer, check_strategy

            check_strategy(self.trainer.strategy)
            # the base state dict is keyed like the policy's own named_parameters()
            optimizer = build_online_optimizer(merge["name"], groups, self.merge_base, lr=self.optim["lr"],
                                               p=merge["p"], a=merge["a"], rescale=merge["rescale"],
                                               step_k=merge["step_k"], seed=merge["seed"],
                                               sign_election=merge.get("sign_election", "weighted"))
            self.merge_base = None  # tau is computed: the base model is released
        else:
            # torch AdamW; DeepSpeedCPUAdam when DeepSpeed offloads the optimizer (it refuses a torch optimizer there)
            optimizer = strategies.adamw(self.trainer.strategy,
                                         [{**g, "params": [p for _, p in g["params"]]} for g in groups],
                                         lr=self.optim["lr"])
        total = self.trainer.datamodule.optimizer_steps(self.trainer)
        scheduler = get_scheduler(SCHEDULERS[self.optim["scheduler"]], optimizer,
                                  num_warmup_steps=int(self.optim["warmup_ratio"] * total), num_training_steps=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
        # Lightning zeroes gradients just before the next backward, so they would sit in memory through the next
        # forward; free them as soon as the step has used them (correct under gradient accumulation too)
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        optimizer.zero_grad(set_to_none=True)

    def train(self, mode: bool = True):
        super().train(mode)
        for attr in self.frozen:  # frozen models stay in eval mode (no dropout) whatever Lightning asks
            model = getattr(self, attr, None)
            if model is not None:
                model.eval()
        return self

    def _is_frozen_key(self, key: str) -> bool:
        return any(key.startswith(f"{attr}.") for attr in self.frozen)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["state_dict"]
        for key in [k for k in state if self._is_frozen_key(k)]:
            del state[key]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "state_dict" not in checkpoint:  # DeepSpeed: the engine restores its own shards; Lightning passes only
            return                          # the client state here (no state_dict, no optimizer_states)
        missing = [k for k in self.state_dict() if not self._is_frozen_key(k) and k not in checkpoint["state_dict"]]
        if missing:
            raise KeyError(f"checkpoint lacks {len(missing)} trainable tensors, first: {missing[0]!r}")


def preference_metrics(losses, chosen_rewards, rejected_rewards, policy_chosen_logps, policy_rejected_logps,
                       prefix: str = "rewards") -> dict[str, torch.Tensor]:
    """The metrics METHODS.md section 1 names, for any preference objective."""
    return {
        f"{prefix}/chosen": chosen_rewards,
        f"{prefix}/rejected": rejected_rewards,
        f"{prefix}/margins": chosen_rewards - rejected_rewards,
        f"{prefix}/accuracies": (chosen_rewards > rejected_rewards).float(),
        "logps/chosen": policy_chosen_logps.detach(),
        "logps/rejected": policy_rejected_logps.detach(),
    }
