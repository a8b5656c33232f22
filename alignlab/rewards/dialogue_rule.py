"""A rule that scores an assistant's reply in the embedded dialogue world (data=mini_hh, alignlab.data.dialogues),
with no model: the reward of the mini-HH experiment, as VADER is that of mini-IMDb.

The rule reads the final human request of the prompt (follow-ups such as "What about Spain?" resolved against the
earlier turn) and scores the response on what makes HH's chosen answers better than its rejected ones:

    score = 2 * quality                 the requested answer is there (a share for advice with fewer tips; for a
                                        toy-harmful request: a polite decline, 0.75, and the kind alternative, 0.25)
            - min(mistakes, 2)          wrong or unrelated answers (another capital, a wrong sum, a phrase or name
                                        nobody asked for, an insult ...: alignlab.data.dialogues.mistakes)
            - 2 * rude                  rude phrases ("figure it out yourself", "stupid", ...)
            - 1 * evasive               evasions ("not sure", "ask someone else", ...)
            - 1 * declined              refusing a harmless request ("cannot help", "would rather not", ...)
            + 0.25 * polite (at most 2) polite openers and closers ("Sure", "Anything else?", ...)

and the reward is ``sigmoid(score)`` in (0, 1). A response to a prompt the rule cannot parse (not a request of the
dialogue world) is scored on its tone alone. Phrases match as whole words, case-insensitively.

By construction every noise-free pair of the generator scores its chosen response above its rejected one
(tests/test_mini_hh.py checks it on thousands of pairs), so the rule is also the noise-free label.
"""
from __future__ import annotations

import math
import re
from typing import Sequence

from alignlab.data.dialogues import (DECLINE_KEYS, EVASIVE_KEYS, FAMILIES, RUDE_KEYS, has_phrase, mistakes,
                                     parse_request)

__all__ = ["DialogueRuleReward", "rule_score"]

POLITE_KEYS = ["sure", "of course", "happy to help", "good question", "anything else", "hope that helps",
               "let me know"]
# whole words, case-insensitive; "sure" is polite unless it is "not sure" (an evasion)
_POLITE = [re.compile(("(?<!not )" if k == "sure" else "") + r"(?<![\w-])" + re.escape(k) + r"(?![\w-])",
                      re.IGNORECASE) for k in POLITE_KEYS]


def rule_score(prompt: str, response: str) -> float:
    """The unbounded score above (higher is better)."""
    request = parse_request(prompt)
    family = FAMILIES[request.family] if request is not None else None
    score = 0.0
    if family is not None:
        score += 2.0 * family.quality(request.subject, response)
        score -= min(mistakes(request, response), 2)
    if any(has_phrase(response, k) for k in RUDE_KEYS):
        score -= 2.0
    if any(has_phrase(response, k) for k in EVASIVE_KEYS):
        score -= 1.0
    if (family is None or not family.harmful) and any(has_phrase(response, k) for k in DECLINE_KEYS):
        score -= 1.0
    score += 0.25 * min(sum(bool(p.search(response)) for p in _POLITE), 2)
    return score


class DialogueRuleReward:
    """reward=dialogue_rule: ``sigmoid(rule_score(prompt, response))`` in (0, 1).

    Other keyword arguments (``batch_size``, ``device``, ... that other reward configs take) are accepted and
    ignored, so reward configs are interchangeable."""

    def __init__(self, **unused):
        pass

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        if len(prompts) != len(responses):
            raise ValueError(
                f"prompts and responses differ in length: {len(prompts)} prompts vs {len(responses)} responses")
        return [1.0 / (1.0 + math.exp(-rule_score(p, r))) for p, r in zip(prompts, responses)]

    __call__ = score
