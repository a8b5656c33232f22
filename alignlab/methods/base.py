"""The shared LightningModule: a trainable policy, optional frozen models, and an optimizer.

Subclasses only say how a batch becomes a loss (`loss_and_metrics`), using the pure functions of
alignlab.losses, and declare what the pipeline must give them: the frozen models (`frozen_models`), the rows they
train on (`batch_kind`, `responses`), and any trainer they cannot run under (`check_trainer`). Frozen models are
attributes (so Lightning strategies move and shard them) but are in no optimizer parameter group and are removed
from every training checkpoint. The optimizer comes from `optimizer_factory` (AdamW unless a merge plug-in gives
an online merging optimizer).
"""
from __future__ import annotations

import lightning as L
import torch
from transformers import get_scheduler

from alignlab import strategies
from alignlab.data.rows import as_sequences
from alignlab.errors import ConfigError
from alignlab.forward import response_logps
from alignlab.losses import logratio_score, pair_accuracy
from alignlab.methods.frozen import REFERENCE, REFERENCE_LOGPS, FrozenModel

SCHEDULERS = {"constant": "constant_with_warmup", "cosine": "cosine", "linear": "linear"}


def check_positive(**values) -> None:
    """ConfigError naming the method.* key of any value that is not > 0 (beta, beta0, ...)."""
    for key, value in values.items():
        if not value > 0:
            raise ConfigError(f"method.{key}={value} must be > 0")


def _plain_groups(named_groups: list[dict]) -> list[dict]:
    return [{**g, "params": [p for _, p in g["params"]]} for g in named_groups]


def adamw_factory(named_groups: list[dict], lr: float, strategy) -> torch.optim.Optimizer:
    """optim.name=adamw: AdamW over the policy's parameter groups (see strategies.adamw)."""
    return strategies.adamw(strategy, _plain_groups(named_groups), lr=lr)


def rmsprop_factory(named_groups: list[dict], lr: float, strategy) -> torch.optim.Optimizer:
    """optim.name=rmsprop: torch's RMSprop with its defaults, as the official DPO and TDPO code train."""
    return torch.optim.RMSprop(_plain_groups(named_groups), lr=lr)


OPTIMIZERS = {"adamw": adamw_factory, "rmsprop": rmsprop_factory}


class AlignmentModule(L.LightningModule):
    batch_kind = "pairs"          # "pairs": 2B rows, chosen then rejected; "sequences": SFT rows
    responses = "chosen"          # sequence objectives: the responses of the pairs they train on (chosen | both)
    needs_reference = True
    frozen = ("reference",)       # attribute names of frozen models, kept out of optimizers and checkpoints
    frozen_settings: tuple[str, ...] = ()  # method.* keys that describe frozen models, not constructor arguments
    inspect_signal = "logratio"   # the token-level signal `python -m alignlab.inspect` shows by default
    reads_reference_logps_only = False  # True: batches may carry the reference's log-probs instead (ref_logps)
    supports_packing = True       # the loss reads batches through alignlab.forward, which handles packed rows

    def __init__(self, policy, reference=None, optim: dict | None = None, name: str | None = None, tokenizer=None,
                 optimizer_factory=None):
        super().__init__()
        self.tokenizer = tokenizer  # for methods that generate (on-policy); not a module, never checkpointed
        if self.needs_reference and reference is None and not self.reads_reference_logps_only:
            raise ConfigError(f"method {name or type(self).__name__} needs a reference model")
        self.policy = policy
        self.reference = reference
        self.optim = {"name": "adamw", "lr": 1e-5, "weight_decay": 0.0, "warmup_ratio": 0.1, "warmup_steps": None,
                      "scheduler": "constant", **(optim or {})}
        if self.optim["scheduler"] not in SCHEDULERS:
            raise ConfigError(f"method.optim.scheduler={self.optim['scheduler']!r} is not one of {sorted(SCHEDULERS)}")
        if self.optim["name"] not in OPTIMIZERS:
            raise ConfigError(f"method.optim.name={self.optim['name']!r} is not one of {sorted(OPTIMIZERS)}")
        if optimizer_factory is not None and self.optim["name"] != "adamw":
            raise ConfigError(f"method.optim.name={self.optim['name']} cannot be combined with an online merging "
                              f"optimizer (merge=ondare/onties merge AdamW's updates): use optim.name=adamw")
        self.optimizer_factory = optimizer_factory or OPTIMIZERS[self.optim["name"]]
        self.method_name = name or type(self).__name__.lower()
        self.strict_loading = False  # checkpoints hold the policy only; on_load_checkpoint checks it is complete

    # ---- what a subclass declares to the pipeline ----------------------------------------------------------
    @classmethod
    def frozen_models(cls, settings) -> dict[str, FrozenModel]:
        """The frozen models this objective needs, by constructor argument (METHODS.md: the reference)."""
        return {"reference": REFERENCE} if cls.needs_reference else {}

    @staticmethod
    def reference_from_settings(settings) -> dict[str, FrozenModel]:
        """For objectives that read only the reference's sequence log-probs: method.reference=precomputed (a cached
        stage, no reference model in training) or live (a forward of the frozen reference every step)."""
        how = settings.get("reference", "live")
        if how not in ("precomputed", "live"):
            raise ConfigError(f"method.reference={how!r} is not one of ['live', 'precomputed']")
        return {"reference": REFERENCE_LOGPS if how == "precomputed" else REFERENCE}

    @classmethod
    def check_trainer(cls, settings, trainer_cfg) -> None:
        """Raise a ConfigError for a trainer this objective cannot run under (before anything is built)."""
        name = (settings.get("optim") or {}).get("name", "adamw")
        if name != "adamw" and strategies.offloads_optimizer_config(trainer_cfg):
            raise ConfigError(f"method.optim.name={name} with {strategies.trainer_name(trainer_cfg)}: ZeRO-Offload "
                              f"runs DeepSpeed's own CPU AdamW; use optim.name=adamw or a trainer without offload")

    def training_rows(self, pairs: list[dict]) -> list[dict]:
        """The rows this objective trains on, from preference pairs: the pairs, or their responses as sequences."""
        return as_sequences(pairs, self.responses) if self.batch_kind == "sequences" else pairs

    # ---- what a subclass provides -------------------------------------------------------------------------
    def loss_and_metrics(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def preference_score(self, policy_logps, ref_logps, n_tokens):
        """The implicit reward this objective ranks a response by (its order matters, not its scale), as configured:
        log pi(y) - log ref(y) here; length-normalised objectives divide by |y|."""
        return logratio_score(policy_logps, ref_logps, n_tokens)

    # ---- shared machinery ---------------------------------------------------------------------------------
    def reference_logps(self, batch: dict) -> torch.Tensor:
        """log ref(y) per sequence: precomputed ones carried by the batch (method.reference=precomputed), else a
        forward of the frozen reference."""
        if "ref_logps" in batch:
            return batch["ref_logps"].to(torch.float32)
        if self.reference is None:
            raise ConfigError(f"method {self.method_name}: the batch carries no precomputed reference log-probs and no "
                              f"reference model was given (method.reference=live loads one)")
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

    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, p in self.policy.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim < 2 else decay).append((name, p))  # no decay on biases and norms
        groups = [{"params": decay, "weight_decay": self.optim["weight_decay"]},
                  {"params": no_decay, "weight_decay": 0.0}]
        optimizer = self.optimizer_factory(groups, self.optim["lr"], self.trainer.strategy)
        total = self.trainer.datamodule.optimizer_steps(self.trainer)
        warmup = self.optim["warmup_steps"]  # a step count (the official DPO/TDPO recipes) wins over the ratio
        warmup = int(self.optim["warmup_ratio"] * total) if warmup is None else min(int(warmup), total)
        scheduler = get_scheduler(SCHEDULERS[self.optim["scheduler"]], optimizer, num_warmup_steps=warmup,
                                  num_training_steps=total)
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
        f"{prefix}/accuracies": pair_accuracy(chosen_rewards, rejected_rewards),
        "logps/chosen": policy_chosen_logps.detach(),
        "logps/rejected": policy_rejected_logps.detach(),
    }
