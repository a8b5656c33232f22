"""Tiny local stand-ins for hub datasets and models, written in the hubs' exact layouts and schemas, so the real
loading code (`datasets.load_dataset(<dir>)`, `from_pretrained(<dir>)`) runs offline on them.

- stanfordnlp/imdb: ``plain_text/{split}-00000-of-00001.parquet``, `text` string, `label` ClassLabel(neg, pos),
  and the hub's README front matter (configs).
- Anthropic/hh-rlhf: ``{subset}/{split}.jsonl.gz`` lines ``{"chosen": ..., "rejected": ...}`` (or files at the
  top level).
- HuggingFaceH4/ultrafeedback_binarized: ``data/{split}-00000-of-00001.parquet`` with `prompt`, `prompt_id`,
  `chosen`, `rejected`, `messages` (lists of {content, role}), `score_chosen`, `score_rejected`, and the README.
- sequence classifiers / reward models: a 1-layer GPT-2 with a byte-level BPE tokenizer trained here.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import random
from pathlib import Path

POSITIVE = ["wonderful", "great", "moving", "brilliant", "lovely", "superb", "delightful", "touching"]
NEGATIVE = ["awful", "boring", "dull", "terrible", "clumsy", "tedious", "bland", "painful"]
NOUNS = ["film", "movie", "plot", "cast", "script", "ending", "score", "story"]

SIMPLE_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


# ---- IMDb ------------------------------------------------------------------------------------------------------
IMDB_README = """---
dataset_info:
  config_name: plain_text
  features:
  - name: text
    dtype: string
  - name: label
    dtype:
      class_label:
        names:
          '0': neg
          '1': pos
configs:
- config_name: plain_text
  data_files:
  - split: train
    path: plain_text/train-*
  - split: test
    path: plain_text/test-*
  - split: unsupervised
    path: plain_text/unsupervised-*
  default: true
---
# IMDb stand-in (test fixture)
"""


def make_review(rng: random.Random, positive: bool, br: bool = True) -> str:
    words = POSITIVE if positive else NEGATIVE
    sentences = [f"The {rng.choice(NOUNS)} was {rng.choice(words)} and {rng.choice(words)}."
                 for _ in range(rng.randint(2, 4))]
    joiner = "<br /><br />" if br and rng.random() < 0.5 else " "
    return joiner.join(sentences)


def write_imdb(root, n_train: int = 40, n_test: int = 16, n_unsupervised: int = 8, seed: int = 0,
               columns: tuple[str, ...] = ("text", "label"), readme: bool = True) -> Path:
    """The stanfordnlp/imdb layout. Like the hub, each split is sorted by label (negatives first)."""
    import datasets

    root = Path(root)
    rng = random.Random(seed)
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos"])})
    for split, n in (("train", n_train), ("test", n_test), ("unsupervised", n_unsupervised)):
        labels = [-1] * n if split == "unsupervised" else [0] * (n // 2) + [1] * (n - n // 2)
        texts = [make_review(rng, label == 1 if label >= 0 else rng.random() < 0.5) for label in labels]
        data = {"text": texts, "label": labels}
        ds = datasets.Dataset.from_dict({c: data[c] for c in columns},
                                        features=datasets.Features({c: features[c] for c in columns}))
        out = root / "plain_text" / f"{split}-00000-of-00001.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        ds.to_parquet(str(out))
    if readme:
        (root / "README.md").write_text(IMDB_README)
    return root


# ---- HH-RLHF ---------------------------------------------------------------------------------------------------
QUESTIONS = ["How do I bake bread?", "What is a good movie?", "Can you help me write a poem?",
             "How do I fix a flat tyre?", "What should I cook tonight?", "How can I sleep better?"]
GOOD = ["Sure, here is a friendly and helpful answer.", "Happy to help: start with the basics and go slowly.",
        "Great question, here are three clear steps."]
BAD = ["No.", "I will not help with that.", "Figure it out yourself."]


def hh_transcript(turns: list[tuple[str, str]]) -> str:
    return "".join(f"\n\nHuman: {h}\n\nAssistant: {a}" for h, a in turns)


def make_hh_rows(n: int, seed: int = 0, multi_turn_share: float = 0.5) -> list[dict]:
    """Single- and multi-turn pairs whose transcripts differ only in the final assistant turn."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        history = []
        if rng.random() < multi_turn_share:
            history = [(rng.choice(QUESTIONS), rng.choice(GOOD)) for _ in range(rng.randint(1, 2))]
        question = f"{rng.choice(QUESTIONS)} (case {i})"
        rows.append({"chosen": hh_transcript(history + [(question, rng.choice(GOOD))]),
                     "rejected": hh_transcript(history + [(question, rng.choice(BAD))])})
    return rows


def write_jsonl_gz(rows: list[dict], path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


def write_hh(root, splits: dict[str, list[dict]], subset: str | None = "harmless-base") -> Path:
    """{split: rows} as ``root/{subset}/{split}.jsonl.gz`` (subset None: at the top level)."""
    root = Path(root)
    for split, rows in splits.items():
        write_jsonl_gz(rows, root / (subset or "") / f"{split}.jsonl.gz")
    return root


# ---- UltraFeedback ---------------------------------------------------------------------------------------------
ULTRAFEEDBACK_README = """---
dataset_info:
  features:
  - name: prompt
    dtype: string
  - name: prompt_id
    dtype: string
  - name: chosen
    list:
    - name: content
      dtype: string
    - name: role
      dtype: string
  - name: rejected
    list:
    - name: content
      dtype: string
    - name: role
      dtype: string
  - name: messages
    list:
    - name: content
      dtype: string
    - name: role
      dtype: string
  - name: score_chosen
    dtype: float64
  - name: score_rejected
    dtype: float64
configs:
- config_name: default
  data_files:
{splits}---
# UltraFeedback-binarized stand-in (test fixture)
"""


def make_ultrafeedback_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        prompt = f"{rng.choice(QUESTIONS)} (case {i})"
        user = {"content": prompt, "role": "user"}
        good = {"content": rng.choice(GOOD), "role": "assistant"}
        bad = {"content": rng.choice(BAD), "role": "assistant"}
        rows.append({"prompt": prompt, "prompt_id": hashlib.sha256(prompt.encode()).hexdigest(),
                     "chosen": [user, good], "rejected": [user, bad], "messages": [user, good],
                     "score_chosen": float(rng.randint(7, 10)), "score_rejected": float(rng.randint(1, 6))})
    return rows


def write_ultrafeedback(root, splits: dict[str, list[dict]]) -> Path:
    """{split: rows} as ``root/data/{split}-00000-of-00001.parquet`` with the hub's features and README."""
    import datasets

    message = datasets.List({"content": datasets.Value("string"), "role": datasets.Value("string")})
    features = datasets.Features({"prompt": datasets.Value("string"), "prompt_id": datasets.Value("string"),
                                  "chosen": message, "rejected": message, "messages": message,
                                  "score_chosen": datasets.Value("float64"),
                                  "score_rejected": datasets.Value("float64")})
    root = Path(root)
    for split, rows in splits.items():
        out = root / "data" / f"{split}-00000-of-00001.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_list(rows, features=features).to_parquet(str(out))
    # the hub's README lists train/test _prefs, _sft and _gen; the stand-in lists the splits it has
    listed = "".join(f"  - split: {split}\n    path: data/{split}-*\n" for split in splits)
    (root / "README.md").write_text(ULTRAFEEDBACK_README.replace("{splits}", listed))
    return root


# ---- tiny models -----------------------------------------------------------------------------------------------
def tiny_corpus(seed: int = 0, n: int = 200) -> list[str]:
    rng = random.Random(seed)
    return [make_review(rng, rng.random() < 0.5, br=False) for _ in range(n)] + \
        [hh_transcript([(q, a)]) for q in QUESTIONS for a in GOOD + BAD]


_TOKENIZERS: dict = {}


def train_tokenizer(path, vocab_size: int = 320, chat_template: str | None = None):
    """A byte-level BPE tokenizer trained on tiny_corpus() (once per process), saved to `path` and reloaded from
    there with AutoTokenizer."""
    from transformers import AutoTokenizer

    from alignlab.tokenizer import train_bpe_tokenizer

    if vocab_size not in _TOKENIZERS:
        _TOKENIZERS[vocab_size] = train_bpe_tokenizer(tiny_corpus(), vocab_size)
    tokenizer = _TOKENIZERS[vocab_size]
    tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(str(path))
    tokenizer.chat_template = None
    return AutoTokenizer.from_pretrained(str(path))


def make_tiny_causal_lm(path, max_positions: int = 256, seed: int = 0):
    """A random-init 1-layer GPTNeoX causal LM with its tokenizer, saved to `path` in the hub's layout (what
    `model=hf model.name_or_path=<path>` loads)."""
    from alignlab.models import build_random

    tokenizer = train_tokenizer(path)
    model = build_random({"model_type": "gpt_neox", "hidden_size": 32, "num_hidden_layers": 1,
                          "num_attention_heads": 2, "intermediate_size": 64,
                          "max_position_embeddings": max_positions}, tokenizer, seed=seed)
    model.save_pretrained(str(path))
    return path


def make_tiny_classifier(path, id2label: dict[int, str] | None = None, seed: int = 0,
                         n_positions: int = 128):
    """A random-init 1-layer GPT-2 sequence classifier with its tokenizer, saved to `path`. id2label defaults to
    {0: "NEGATIVE", 1: "POSITIVE"} (siebert's labels); {0: "LABEL_0"} with one label gives a reward model."""
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification

    id2label = id2label or {0: "NEGATIVE", 1: "POSITIVE"}
    tokenizer = train_tokenizer(path)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=n_positions, n_embd=32, n_layer=1, n_head=2,
                        num_labels=len(id2label), id2label=id2label,
                        label2id={v: k for k, v in id2label.items()}, pad_token_id=tokenizer.pad_token_id,
                        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    torch.manual_seed(seed)
    model = GPT2ForSequenceClassification(config)
    with torch.no_grad():  # larger head weights, so the scores spread over the range
        model.score.weight.normal_(0.0, 0.3)
    model.save_pretrained(str(path))
    return path
