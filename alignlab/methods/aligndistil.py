"""AlignDistil (Zhang et al., ACL 2025): token-level distillation into the student pi from a teacher built out of a
DPO model and a reverse-DPO model (or the reference, for the `dpo_ref` teacher). METHODS.md section 3.

    loss(x, y) = (1/|y|) sum_t m_t w_t KL(pi(.|s_t) || pi*(.|s_t))

Every model projects to the vocabulary only at the response positions, chunk by chunk, fused with the KL terms
(alignlab.forward.distillation_terms): a step holds the three models' hidden states there, never their logits.
Off-policy, y is the dataset's chosen response (or both responses); on-policy, y is sampled from the current
student for each prompt of the batch, every step.
"""
from __future__ import annotations

from dataclasses import replace

from alignlab import strategies
from alignlab.data.tokenize import IGNORE_INDEX, collate_sequences
from alignlab.errors import ConfigError
from alignlab.forward import distillation_terms
from alignlab.losses import TEACHERS
from alignlab.methods.base import AlignmentModule, check_positive
from alignlab.methods.frozen import REFERENCE, FrozenModel, Training
from alignlab.sampling import generate_from_ids

MODES = ("off_policy", "on_policy")


def default_r(mode: str) -> float:
    """r when method.r is null: METHODS.md's convention, 20 off-policy and 30 on-policy (TVD with the 1/2 factor)."""
    return 20.0 if mode == "off_policy" else 30.0


class AlignDistil(AlignmentModule):
    batch_kind = "sequences"
    needs_reference = False       # only the dpo_ref teacher uses the reference (frozen_models declares it)
    frozen = ("reference", "dpo_model", "reverse_model")
    frozen_settings = ("dpo_model", "reverse_model", "teacher_dtype", "teacher_training")
    inspect_signal = "alpha"

    @classmethod
    def frozen_models(cls, settings) -> dict[str, FrozenModel]:
        """The DPO model (method.dpo_model, else DPO with beta0 trained from the start model) and the reverse-DPO
        model (method.reverse_model, else the same DPO on swapped preferences); for the dpo_ref teacher the
        reference instead of the reverse model (METHODS.md section 3)."""
        training = settings["teacher_training"]
        dpo = Training("teacher-dpo", {"_target_": "alignlab.methods.dpo.DPO", "beta": settings["beta0"],
                                       "optim": training["optim"]}, training["max_epochs"])
        declared = {"dpo_model": FrozenModel(settings["dpo_model"], dpo, settings["teacher_dtype"])}
        if settings["teacher"] == "dpo_ref":
            return {"reference": REFERENCE, **declared}
        reverse = replace(dpo, stage="teacher-reverse", swap_preferences=True)
        return {**declared, "reverse_model": FrozenModel(settings["reverse_model"], reverse, settings["teacher_dtype"])}

    @classmethod
    def check_trainer(cls, settings, trainer_cfg) -> None:
        if settings.get("mode") == "on_policy":
            strategies.check_sampling_during_training(trainer_cfg, "method.mode=on_policy")

    def __init__(self, policy, reference=None, dpo_model=None, reverse_model=None, teacher: str = "adaptive",
                 beta: float = 0.1, beta0: float = 0.1, r: float | None = None, eps: float = 1e-3,
                 mode: str = "off_policy", responses: str = "chosen", max_new_tokens: int = 64,
                 temperature: float = 1.0, top_p: float = 1.0, chunk_size: int = 1024, **kwargs):
        super().__init__(policy, reference, **kwargs)
        if teacher not in TEACHERS:
            raise ConfigError(f"method.teacher={teacher!r} is not one of {list(TEACHERS)}")
        if mode not in MODES:
            raise ConfigError(f"method.mode={mode!r} is not one of {list(MODES)}")
        check_positive(beta=beta, beta0=beta0)
        if dpo_model is None:
            raise ConfigError("AlignDistil needs a DPO model (method.dpo_model)")
        other, key = (reference, "a reference model") if teacher == "dpo_ref" else \
            (reverse_model, "a reverse-DPO model (method.reverse_model)")
        if other is None:
            raise ConfigError(f"method.teacher={teacher} needs {key}")
        self.dpo_model = dpo_model
        self.reverse_model = reverse_model if teacher != "dpo_ref" else None
        self.reference = reference if teacher == "dpo_ref" else None
        self.teacher, self.beta, self.beta0, self.eps = teacher, beta, beta0, eps
        self.r = default_r(mode) if r is None else r
        self.mode, self.responses = mode, responses
        self.sampling = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p}
        self.chunk_size = chunk_size
        if mode == "on_policy" and self.tokenizer is None:
            raise ConfigError("method.mode=on_policy needs the tokenizer (pass tokenizer=...)")

    @property
    def supports_packing(self) -> bool:
        """On-policy batches are rebuilt from the prompts of padded rows every step."""
        return self.mode != "on_policy"

    @property
    def other_model(self):
        """The second model of the teacher: the reverse-DPO model, or the reference for `dpo_ref`."""
        return self.reference if self.teacher == "dpo_ref" else self.reverse_model

    def on_policy_batch(self, batch: dict) -> dict:
        """Replace the batch's responses with one sample of the current student per prompt."""
        prompts = []
        for ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist()):
            start = next((t for t, label in enumerate(labels) if label != IGNORE_INDEX), len(labels))
            prompts.append(ids[:start] or [self.tokenizer.eos_token_id])
        pad, eos = self.tokenizer.pad_token_id, self.tokenizer.eos_token_id
        completions = generate_from_ids(self.policy, prompts, pad, eos, **self.sampling)
        fresh = collate_sequences(prompts, [c or [eos] for c in completions], pad)
        return {k: v.to(batch["input_ids"].device) for k, v in fresh.items()}

    def loss_and_metrics(self, batch):
        if self.mode == "on_policy" and self.training:
            batch = self.on_policy_batch(batch)
        out = distillation_terms(self.policy, self.dpo_model, self.other_model, batch, self.teacher, self.beta,
                                 self.beta0, self.r, self.eps, self.chunk_size)
        contrastive = self.beta0 * (out["dpo_logps"] - out["other_logps"])
        other = "ref" if self.teacher == "dpo_ref" else "reverse"
        metrics = {"aligndistil/alpha_mean": out["alpha_mean"], "aligndistil/weight_mean": out["weight_mean"],
                   "kl/teacher": out["kl_teacher"], "kl/dpo": out["kl_dpo"], f"kl/{other}": out["kl_other"],
                   "rewards/contrastive": contrastive, "response_tokens": out["n_tokens"]}
        return out["losses"].mean(), metrics
