"""A second skill for the embedded corpus: translation from a generated language, scored exactly.

The alignment tax (METHODS.md section 4; Lin et al. 2024) is the loss, after alignment, of capabilities outside
the preference task; the paper measures it on benchmarks such as WMT14 Fr-En translation. The embedded miniature
needs a capability of its own that the SFT model learns beside the movie reviews, that has nothing to do with
sentiment, and that can be scored exactly. This module provides one: word-by-word translation from Veloran, the
language of a generated world, into English.

* The lexicon (:data:`LEXICON`) maps ``N_WORDS`` made-up Veloran words to English nouns (none of them in VADER's
  lexicon or the reviews' vocabulary). It is fixed: the SFT corpus and the evaluation share it. Words are used
  with Zipfian frequencies (word k with probability ~ 1/(k+1)), as in natural language: the frequent ones are
  learnt with a wide margin, the rare ones just barely -- the part of a skill that alignment erodes first.
* An item is a sentence of ``LENGTH`` Veloran words and its translation::

      prompt  "In Veloran, kor mek vis means"
      answer  " water salt bread"

  Its text in the corpus is ``prompt + answer + DELIMITER``.
* The sentence space (N_WORDS ** LENGTH) is split once, by a hash of the sentence that no seed or setting
  changes, into a training part and a held-out part (:func:`is_held_out`: 1 in ``HELD_OUT_EVERY``). SFT texts only
  ever hold training sentences (:func:`capability_texts`), evaluation only held-out ones (:func:`held_out_items`):
  a model scores only if it has learnt the lexicon and applies it to sentences it never saw.
* An SFT text is a "worksheet" of a few items in a row, about as long as a review, so the skill's share of the
  SFT tokens follows the share of such texts and they need no more padding than reviews.

Scoring (:func:`extract_answer`, :func:`score_answer`; pure functions). The model continues the prompt (greedy
decoding); its answer is the text up to the first ``DELIMITER``, or up to EOS if the generation ended before any
delimiter, with surrounding whitespace removed; a continuation that reaches neither within the generation budget
has no answer. ``exact`` is 1 when the answer equals the reference translation character for character (a partial
or over-long answer scores 0); ``words`` is partial credit: the reference's words the answer has at their
position, divided by the longer of the two word counts.

Everything is drawn from ``random.Random`` instances seeded from the arguments; the global RNG is never touched.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Iterator, Sequence

__all__ = ["CapabilityItem", "DELIMITER", "LENGTH", "LEXICON", "capability_texts", "extract_answer",
           "held_out_items", "is_held_out", "item_from_words", "score_answer", "training_items"]

DELIMITER = "."
LENGTH = 3            # words per sentence
HELD_OUT_EVERY = 5    # 1 in 5 sentences is held out: never in an SFT text
N_WORDS = 48          # lexicon size
ZIPF = 1.0            # word k (0-based) is drawn with probability ~ 1 / (k + 1) ** ZIPF

# English nouns, not in VADER's lexicon and not in the reviews (tests/test_capability.py checks both)
ENGLISH = ["water", "bread", "horse", "salt", "door", "hill", "wolf", "rain", "iron", "milk", "tree", "bell", "snow",
           "bird", "lamp", "rope", "corn", "goat", "wool", "nail", "lake", "seed", "cloud", "apple", "chair", "glass",
           "clock", "table", "bottle", "candle", "honey", "leaf", "pear", "plum", "bean", "frog", "duck", "mouse",
           "sheep", "cow", "pig", "owl", "fox", "bear", "deer", "rock", "wheel", "cup"]
# made-up words: not English, not in VADER's lexicon, not in the reviews
VELORAN = ["kor", "vis", "dul", "mek", "zan", "pir", "gos", "ruk", "fel", "nim", "bav", "sev", "lir", "tez", "vom",
           "dak", "fim", "zul", "pes", "kel", "mov", "ril", "suv", "bek", "vak", "buk", "tek", "bos", "kov", "rik",
           "tul", "zuv", "zel", "kis", "puk", "zas", "lok", "sul", "tav", "puv", "gir", "zik", "zok", "lak", "nev",
           "sar", "pur", "pel"]
LEXICON: dict[str, str] = dict(zip(VELORAN[:N_WORDS], ENGLISH[:N_WORDS]))
_WORDS = list(LEXICON)
_WEIGHTS = [1.0 / (k + 1) ** ZIPF for k in range(len(_WORDS))]


@dataclass(frozen=True)
class CapabilityItem:
    """One translation: given `prompt`, the model should continue with `answer` (then the delimiter)."""
    prompt: str
    answer: str

    @property
    def text(self) -> str:
        return self.prompt + self.answer + DELIMITER


def item_from_words(words: Sequence[str]) -> CapabilityItem:
    """The item of a Veloran sentence (its words must be in LEXICON)."""
    unknown = [w for w in words if w not in LEXICON]
    if unknown or not words:
        raise ValueError(f"not a Veloran sentence: {list(words)} (unknown words {unknown})")
    return CapabilityItem(f"In Veloran, {' '.join(words)} means", " " + " ".join(LEXICON[w] for w in words))


def is_held_out(words: Sequence[str]) -> bool:
    """Whether a sentence is in the held-out part: a fixed hash of its words, the same for every seed."""
    digest = hashlib.sha256(" ".join(words).encode()).digest()
    return int.from_bytes(digest[:8], "big") % HELD_OUT_EVERY == 0


def _sentences(rng: random.Random, held_out: bool) -> Iterator[tuple[str, ...]]:
    """Zipf-distributed sentences of one part (rejection sampling on the hash split)."""
    while True:
        words = tuple(rng.choices(_WORDS, weights=_WEIGHTS, k=LENGTH))
        if is_held_out(words) == held_out:
            yield words


def training_items(n: int, seed: int) -> list[CapabilityItem]:
    """n items of the training part, drawn with repetition (word frequencies Zipfian)."""
    draw = _sentences(random.Random(f"capability-train-{seed}"), held_out=False)
    return [item_from_words(next(draw)) for _ in range(n)]


def held_out_items(n: int, seed: int = 0) -> list[CapabilityItem]:
    """n distinct items of the held-out part (never in an SFT text), drawn from `seed`."""
    limit = len(_WORDS) ** LENGTH // HELD_OUT_EVERY // 4
    if not 0 <= n <= limit:
        raise ValueError(f"n={n} held-out items: choose 0..{limit}")
    draw, seen, items = _sentences(random.Random(f"capability-held-out-{seed}"), held_out=True), set(), []
    while len(items) < n:
        words = next(draw)
        if words not in seen:
            seen.add(words)
            items.append(item_from_words(words))
    return items


def capability_texts(n_texts: int, items_per_text: int, seed: int) -> list[str]:
    """SFT texts, each `items_per_text` training items in a row: "In Veloran, ... means ... . In Veloran, ..."."""
    if n_texts < 0 or items_per_text < 1:
        raise ValueError(f"need n_texts >= 0 and items_per_text >= 1, got {n_texts} and {items_per_text}")
    items = training_items(n_texts * items_per_text, seed)
    return [" ".join(it.text for it in items[i:i + items_per_text])
            for i in range(0, n_texts * items_per_text, items_per_text)]


def extract_answer(continuation: str, ended: bool) -> str | None:
    """The answer in a model's continuation of a prompt: the text before the first DELIMITER, or, when the generation
    `ended` (EOS) before any delimiter, all of it; whitespace-stripped. None: neither happened (no answer)."""
    if DELIMITER in continuation:
        return continuation.split(DELIMITER, 1)[0].strip()
    return continuation.strip() if ended else None


def score_answer(predicted: str | None, reference: str) -> dict[str, float]:
    """{"exact": 1.0 iff the answer is the reference (whitespace-stripped), "words": the reference's words the answer
    has at their position / the longer word count}. `predicted` is extract_answer's result; None scores 0."""
    if predicted is None:
        return {"exact": 0.0, "words": 0.0}
    got, ref = predicted.split(), reference.split()
    exact = float(predicted.strip() == reference.strip())
    words = sum(a == b for a, b in zip(got, ref)) / max(len(got), len(ref)) if got or ref else exact
    return {"exact": exact, "words": words}
