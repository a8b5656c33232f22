"""Byte-level BPE tokenizer trained on a corpus, for the embedded "mini-IMDb" model.

The embedded default trains its own tokenizer on the generated reviews (see :mod:`alignlab.data.reviews`)
instead of downloading GPT-2's or Pythia's. It is built like theirs: byte-level BPE (ByteLevel pre-tokenizer
and decoder, so every string encodes and ``decode(encode(x)) == x`` exactly), one special token
``<|endoftext|>`` that serves as bos, eos and unk, and the pad token set to it too, as is usual for
GPT-NeoX / Pythia. No bos/eos is added by ``encode``; callers append eos where they need it. Padding side
is left at the default ("right"); callers that generate set ``padding_side="left"`` themselves.

Vocabulary size: the 256 byte symbols + the special token + learned merges. Training stops early when no pair
occurs any more, so on a tiny corpus the vocabulary can be smaller than ``vocab_size``; a few thousand
generated reviews comfortably fill 1024 (or 2048).
"""

from __future__ import annotations

import os
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

__all__ = ["train_bpe_tokenizer", "EOS_TOKEN"]

EOS_TOKEN = "<|endoftext|>"


def train_bpe_tokenizer(
    texts: Iterable[str], vocab_size: int = 1024, save_dir: str | os.PathLike | None = None
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it as a Hugging Face fast tokenizer.

    Deterministic: the same texts (in the same order) give the same vocabulary and merges.
    ``len(tokenizer) == vocab_size`` unless the corpus runs out of pairs to merge (then it is smaller).
    If ``save_dir`` is given, the tokenizer is saved there with ``save_pretrained`` and
    ``AutoTokenizer.from_pretrained(save_dir)`` reloads it.
    """
    texts = list(texts)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + 1:
        raise ValueError(f"vocab_size must be at least {len(alphabet) + 1} (256 bytes + {EOS_TOKEN}), got {vocab_size}")

    tok = Tokenizer(models.BPE())  # byte-level: every input maps to known byte symbols, no unk needed
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS_TOKEN],  # id 0
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))

    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        clean_up_tokenization_spaces=False,  # keep decode(encode(x)) == x
    )
    if save_dir is not None:
        hf.save_pretrained(os.fspath(save_dir))
    return hf
