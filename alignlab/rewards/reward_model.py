"""A scalar-head reward model (AutoModelForSequenceClassification with num_labels=1, e.g. an HH-RLHF reward
model): the reward of a response is the model's single logit on prompt and response, unbounded.

Batching, truncation, device and the input format (``concat``: ``prompt + response`` as one text; ``pair``:
(prompt, response) as a tokenizer text pair, as OpenAssistant's DeBERTa reward models expect) are those of
:class:`alignlab.rewards.hf_classifier.SequenceScorer`; the default truncation side is "left", so an over-long
dialogue keeps its end (the response being judged). The defaults (OpenAssistant/reward-model-deberta-v3-large-v2,
input_format "pair") are those of conf/reward/reward_model.yaml; a decoder reward model over whole transcripts
(e.g. HH's "\n\nHuman: ...\n\nAssistant: ...") wants input_format "concat".
"""
from __future__ import annotations

from typing import Sequence

from alignlab.errors import ConfigError
from alignlab.rewards.hf_classifier import SequenceScorer

__all__ = ["RewardModelReward"]


class RewardModelReward(SequenceScorer):
    kind = "reward_model"

    def __init__(self, model_name: str = "OpenAssistant/reward-model-deberta-v3-large-v2",
                 truncation_side: str = "left", input_format: str = "pair", **kwargs):
        super().__init__(model_name, truncation_side=truncation_side, input_format=input_format, **kwargs)
        if self.config.num_labels != 1:
            labels = list((self.config.id2label or {}).values())
            raise ConfigError(f"reward.model_name={self.model_name!r} has {self.config.num_labels} outputs "
                              f"(labels {labels}); a reward model has one (num_labels=1). For the probability of "
                              f"a class use reward=hf_classifier reward.label=...")

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        return self.logits(prompts, responses)[:, 0].tolist()

    __call__ = score
