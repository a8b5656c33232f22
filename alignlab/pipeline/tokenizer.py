"""Stage: the tokenizer. A hub id or local path (`model.tokenizer`), or "embedded": byte-level BPE trained on the data
source's own texts, cached by a fingerprint of the source's settings and the vocabulary size."""
from __future__ import annotations

from alignlab import models
from alignlab.pipeline.cache import cached_stage
from alignlab.tokenizer import train_bpe_tokenizer

EMBEDDED_VOCAB_SIZE = 1024  # model.tokenizer_vocab_size: null (hub models' configs) with model.tokenizer=embedded


def prepare_tokenizer(model_cfg, source, source_id: dict, cache_dir) -> tuple[object, str]:
    """Returns (tokenizer, its identity for later stages' fingerprints)."""
    name = model_cfg.tokenizer
    if name != "embedded":
        key = "model.tokenizer (= model.name_or_path)" if name == model_cfg.get("name_or_path") else "model.tokenizer"
        return models.load_tokenizer(name, key=key), str(name)
    vocab_size = model_cfg.tokenizer_vocab_size or EMBEDDED_VOCAB_SIZE
    path = cached_stage(cache_dir, "tokenizer", {"corpus": source_id, "vocab_size": vocab_size},
                        lambda tmp: train_bpe_tokenizer(source.corpus(), vocab_size, str(tmp)))
    return models.load_tokenizer(str(path)), path.name
