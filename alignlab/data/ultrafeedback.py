"""UltraFeedback-binarized (`HuggingFaceH4/ultrafeedback_binarized`), used by AlignDistil and the online merging
optimizers (METHODS.md section 6).

Columns: `prompt` (string), `chosen` / `rejected` (message lists ``[{"role": "user", ...}, {"role":
"assistant", ...}]`` that include the user turn), `prompt_id`, `score_chosen`, `score_rejected` (and
`messages`). The preference splits are `train_prefs` and `test_prefs` (the hub stores them as
``data/train_prefs-00000-of-00001.parquet`` etc.).

Rendering needs the tokenizer: call ``source.bind_tokenizer(tokenizer)`` before asking for rows, and the prompt
is the conversation before the final assistant message rendered with the tokenizer's chat template
(``add_generation_prompt=True``), the responses the assistant messages' content. Without a bound tokenizer, or
with one that has no chat template, the plain template of :mod:`alignlab.data.chat` is used
("User: ...\\n\\nAssistant:" and " " + content). The embedded tokenizer is trained on the plain rendering
(`corpus()`). No SFT stage by default (the model is assumed to be SFT'd already); ``sft=true`` adds one on the
train split's chosen responses.
"""
from __future__ import annotations

import logging

from alignlab.data.chat import ChatRenderer, pair_from_messages
from alignlab.data.files import SplitPairSource

log = logging.getLogger(__name__)


class UltraFeedback(SplitPairSource):
    columns = ("prompt", "chosen", "rejected")
    extra_columns = ("prompt_id", "score_chosen", "score_rejected")

    def __init__(self, path: str = "HuggingFaceH4/ultrafeedback_binarized", train_split: str = "train_prefs",
                 test_split: str = "test_prefs", template: str = "auto", sft: bool = False, **kwargs):
        super().__init__(path, train_split=train_split, test_split=test_split, sft=sft, **kwargs)
        self.template = template
        self.renderer = ChatRenderer(None, template)

    def bind_tokenizer(self, tokenizer) -> None:
        """Render with this tokenizer's chat template (when it has one and template != plain)."""
        self.renderer = ChatRenderer(tokenizer, self.template)
        self._rows = {}

    def convert(self, row: dict, renderer: ChatRenderer | None = None) -> dict:
        out = pair_from_messages(row["prompt"], row["chosen"], row["rejected"], renderer or self.renderer)
        out.update({k: row[k] for k in self.extra_columns if k in row})
        if not out["chosen"] and not out["rejected"]:
            raise ValueError("'chosen' and 'rejected' are both empty")
        return out

    def corpus(self) -> list[str]:
        """Plain-template texts (prompt + chosen) of the train split, for an embedded tokenizer."""
        plain = ChatRenderer(None, "plain")
        rows = self.raw_rows("train")
        out = []
        for row in rows:
            try:
                pair = self.convert(row, plain)
            except ValueError:
                continue  # counted when the rows themselves are converted
            out.append(pair["prompt"] + pair["chosen"])
        return out

    def prompts(self, split: str, tokenizer=None) -> list[str]:
        """The split's distinct rendered prompts (binds `tokenizer` first if none is bound and no rows were
        rendered yet)."""
        if tokenizer is not None and self.renderer.tokenizer is None:
            if not self._rows:
                self.bind_tokenizer(tokenizer)
            elif getattr(tokenizer, "chat_template", None) and self.template != "plain":
                log.warning("rows were rendered with the plain template because no tokenizer was bound before "
                            "preference_rows(); call source.bind_tokenizer(tokenizer) first to use its chat "
                            "template")
        return super().prompts(split, tokenizer)
