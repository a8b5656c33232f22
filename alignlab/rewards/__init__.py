"""Reward functions: ``score(prompts, responses) -> list[float]``."""

from alignlab.rewards.vader import VaderReward

__all__ = ["VaderReward"]
