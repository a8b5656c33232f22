"""Rewards from Hugging Face sequence classifiers: the probability of one label (IMDb sentiment,
siebert/sentiment-roberta-large-english's P(POSITIVE)), see :class:`HFClassifierReward`; the scalar head of a
reward model lives in :mod:`alignlab.rewards.reward_model` and shares :class:`SequenceScorer`.

Like VADER, the classifier sees ``prompt + response`` (the whole review) by default; ``input_format="pair"``
passes (prompt, response) as a tokenizer text pair instead (for models trained on question/answer pairs).
Texts are scored in batches of ``batch_size`` (longest first, so batches pad little; the order of the result
is the order of the input), truncated to ``max_length`` tokens (``truncation_side`` "right" keeps the start,
"left" keeps the end, i.e. the response). ``device=None`` picks cuda when available, else the cpu. The model
config is read at construction (so a wrong label fails before any sampling); the weights load on the first
``score`` call, and :meth:`close` frees them.
"""
from __future__ import annotations

from typing import Sequence

from alignlab.errors import ConfigError

__all__ = ["SequenceScorer", "HFClassifierReward"]

INPUT_FORMATS = ("concat", "pair")


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class SequenceScorer:
    """Batched logits of an AutoModelForSequenceClassification on prompt/response pairs."""

    kind = "reward"

    def __init__(self, model_name: str, batch_size: int = 32, max_length: int = 512, device: str | None = None,
                 dtype: str = "float32", truncation_side: str = "right", input_format: str = "concat",
                 progress: bool = True, name: str | None = None, key: str = "reward.model_name"):
        from alignlab import models

        if batch_size < 1:
            raise ConfigError(f"reward.batch_size={batch_size} must be >= 1")
        if max_length < 2:
            raise ConfigError(f"reward.max_length={max_length} must be >= 2")
        if truncation_side not in ("left", "right"):
            raise ConfigError(f"reward.truncation_side={truncation_side!r} is not one of ('left', 'right')")
        if input_format not in INPUT_FORMATS:
            raise ConfigError(f"reward.input_format={input_format!r} is not one of {INPUT_FORMATS}")
        models.torch_dtype(dtype)  # validates
        self.model_name, self.key, self.name = str(model_name), key, name or self.kind
        self.batch_size, self.max_length = int(batch_size), int(max_length)
        self.device, self.dtype = device or default_device(), dtype
        self.truncation_side, self.input_format, self.progress = truncation_side, input_format, progress
        self.config = self._load_config()
        self._model = self._tokenizer = None

    def _load_config(self):
        from transformers import AutoConfig

        from alignlab.models import _explain_missing, remote_code_trusted

        try:
            return AutoConfig.from_pretrained(self.model_name, trust_remote_code=remote_code_trusted())
        except (OSError, ValueError) as err:
            raise _explain_missing(self.key, self.model_name, err) from err

    def load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from alignlab.models import _explain_missing, remote_code_trusted, torch_dtype

        try:
            tokenizer = AutoTokenizer.from_pretrained(self.model_name, trust_remote_code=remote_code_trusted())
            model = AutoModelForSequenceClassification.from_pretrained(
                self.model_name, dtype=torch_dtype(self.dtype), trust_remote_code=remote_code_trusted())
        except (OSError, ValueError) as err:
            raise _explain_missing(self.key, self.model_name, err) from err
        if tokenizer.pad_token is None:  # GPT-2 / Pythia based models ship without one; padding is masked
            tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
        if model.config.pad_token_id is None:  # decoder classifiers find the last token through the pad id
            model.config.pad_token_id = tokenizer.pad_token_id
        tokenizer.truncation_side = self.truncation_side
        tokenizer.padding_side = "right"
        model.eval().requires_grad_(False)
        self._tokenizer, self._model = tokenizer, model.to(self.device)

    def close(self) -> None:
        """Free the weights (they reload on the next score call)."""
        self._model = self._tokenizer = None

    def logits(self, prompts: Sequence[str], responses: Sequence[str]):
        """Float32 logits [N, num_labels] on the cpu, in input order."""
        import torch
        from tqdm.auto import tqdm

        prompts, responses = list(prompts), list(responses)
        if len(prompts) != len(responses):
            raise ValueError(f"prompts and responses differ in length: {len(prompts)} prompts vs "
                             f"{len(responses)} responses")
        n = len(prompts)
        out = torch.zeros(n, self.config.num_labels, dtype=torch.float32)
        if n == 0:
            return out
        self.load()
        tok, model = self._tokenizer, self._model
        filler = tok.eos_token or tok.unk_token or " "
        order = sorted(range(n), key=lambda i: -(len(prompts[i]) + len(responses[i])))
        with torch.no_grad(), tqdm(total=n, desc=f"{self.kind}: {self.model_name}", unit="text", leave=False,
                                   disable=not self.progress or n <= self.batch_size) as bar:
            for start in range(0, n, self.batch_size):
                idx = order[start:start + self.batch_size]
                if self.input_format == "pair":  # an all-empty pair would give a row of no tokens
                    args = ([prompts[i] for i in idx],
                            [responses[i] or ("" if prompts[i] else filler) for i in idx])
                else:
                    args = ([(prompts[i] + responses[i]) or filler for i in idx],)
                enc = tok(*args, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
                enc = {k: v.to(model.device) for k, v in enc.items()}
                out[idx] = model(**enc).logits.float().cpu()
                bar.update(len(idx))
        return out


class HFClassifierReward(SequenceScorer):
    """Reward = softmax probability of `label` (a name in the model's config.id2label, e.g. "POSITIVE"), in
    [0, 1], of ``prompt + response``. An unknown label raises ConfigError listing the model's labels."""

    kind = "hf_classifier"

    def __init__(self, model_name: str = "siebert/sentiment-roberta-large-english", label: str = "POSITIVE",
                 **kwargs):
        super().__init__(model_name, **kwargs)
        id2label = {int(i): str(name) for i, name in (self.config.id2label or {}).items()}
        names = [id2label[i] for i in sorted(id2label)]
        matches = [i for i, name in id2label.items() if name == label] or \
            [i for i, name in id2label.items() if name.lower() == str(label).lower()]
        if len(matches) != 1 or self.config.num_labels < 2:
            raise ConfigError(f"reward.label={label!r} is not a label of {self.model_name}: its labels are {names}"
                              + (" (a single-output model: use reward=reward_model)" if self.config.num_labels < 2
                                 else ""))
        self.label, self.label_index, self.labels = label, matches[0], names

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        probs = self.logits(prompts, responses).softmax(dim=-1)
        return probs[:, self.label_index].tolist()

    __call__ = score
