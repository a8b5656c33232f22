"""Pure tensor math for alignlab's objectives (METHODS.md sections 1-3): tensors in, tensors out.

LightningModules wire models to these functions; nothing here knows about models, configs or logging.
"""

from .aligndistil import TEACHERS, adaptive_coefficient, aligndistil_loss, aligndistil_teacher
from .logps import (per_token_logratio_and_kl, sequence_kl, sequence_logps, shift_for_next_token, token_entropy,
                    token_logps_and_kl)
from .preference import dpo_loss, ipo_loss, logratio_score, pair_accuracy, sft_loss, simpo_loss
from .tdpo import TDPO_VARIANTS, tdpo_loss

__all__ = [
    "TDPO_VARIANTS",
    "TEACHERS",
    "adaptive_coefficient",
    "aligndistil_loss",
    "aligndistil_teacher",
    "dpo_loss",
    "ipo_loss",
    "logratio_score",
    "pair_accuracy",
    "per_token_logratio_and_kl",
    "sequence_kl",
    "sequence_logps",
    "sft_loss",
    "shift_for_next_token",
    "simpo_loss",
    "tdpo_loss",
    "token_entropy",
    "token_logps_and_kl",
]
