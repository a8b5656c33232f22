"""Reward functions: ``score(prompts, responses) -> list[float]``.

- :class:`VaderReward` (reward=vader): VADER sentiment of prompt + response, in [0, 1];
- :class:`HFClassifierReward` (reward=hf_classifier): probability of a label of a sequence classifier;
- :class:`RewardModelReward` (reward=reward_model): the scalar logit of a reward model;
- :class:`DialogueRuleReward` (reward=dialogue_rule): a rule over the embedded dialogue world (data=mini_hh).

Importing this package is cheap: the Hugging Face models load on their first ``score`` call.
"""

from alignlab.rewards.dialogue_rule import DialogueRuleReward
from alignlab.rewards.hf_classifier import HFClassifierReward
from alignlab.rewards.reward_model import RewardModelReward
from alignlab.rewards.vader import VaderReward

__all__ = ["VaderReward", "HFClassifierReward", "RewardModelReward", "DialogueRuleReward"]
