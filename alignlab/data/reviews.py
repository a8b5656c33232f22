"""Seeded generator of short movie reviews: the text of the embedded "mini-IMDb" experiment.

The real-scale sentiment experiment (IMDb) takes prefixes of movie reviews as prompts, lets the policy complete
them, and scores the full text with a sentiment classifier; the reward model prefers positive reviews. The
embedded default keeps that shape with parts that need no download:

* this module writes a few thousand short reviews from a small grammar (sentence templates whose slots are
  filled from word lists: films and genres, parts of a film, actors and their parts, plot summaries, sentiment
  adjectives, adverbs and verbs, intensifiers, connectives such as "but" and "although");
* a byte-level BPE tokenizer is trained on them (:mod:`alignlab.tokenizer`) and a tiny GPT-NeoX is SFT-trained
  on them, so that it writes review-like text;
* a 2-8 token prefix of a review is a prompt, and VADER (:class:`alignlab.rewards.VaderReward`) scores
  prompt + completion, as the IMDb classifier does at full scale.

The sentiment words come from VADER's lexicon (great, wonderful, boring, awful, loved, hated, ...), so the
reward can actually tell the classes apart; the neutral words (plot summaries, film parts, names, places) are
chosen outside the lexicon, so they carry content without moving the score. Many reviews open with a neutral
sentence (who plays whom, what the story is about), which makes short prefixes neutral prompts whose sentiment
the completion decides, as with IMDb prefixes.

Classes: "positive" and "negative" reviews hold opinions of one polarity (the negative ones sometimes through
negation: "not very funny"); "mixed" reviews hold both, usually joined by a connective. Text is natural case
(sentences capitalised, names capitalised, otherwise lower case), 1-4 sentences, 15-60 words.

Everything is drawn from ``random.Random(seed)``; the global RNG is never touched, so
``generate_reviews(n, seed)`` is a pure function of its arguments.
"""

from __future__ import annotations

import random
import re
from typing import Sequence

__all__ = ["generate_reviews", "SENTIMENTS", "MIN_WORDS", "MAX_WORDS", "MAX_SENTENCES"]

SENTIMENTS = ("positive", "negative", "mixed")
MIN_WORDS, MAX_WORDS = 15, 60
MAX_SENTENCES = 4

# --------------------------------------------------------------------------------------------- neutral words
# (none of these is in the VADER lexicon; tests/test_reviews.py checks it)

MOVIES = ["film", "movie", "picture", "feature"]

GENRES = [
    "thriller", "drama", "sitcom spinoff", "western", "documentary", "musical", "mystery", "gangster film", "road story",
    "period piece", "road movie", "heist movie", "family film", "sequel", "remake", "biopic", "animated feature",
    "detective story", "spy film", "courtroom drama", "coming-of-age story", "science fiction film", "epic",
    "satire", "sports drama", "chamber piece", "space opera", "political drama", "caper", "melodrama",
]

PARTS = [
    "plot", "script", "dialogue", "soundtrack", "score", "cinematography", "camera work", "editing", "ending",
    "opening scene", "final act", "second half", "first hour", "pacing", "cast", "ensemble", "direction",
    "screenplay", "costume design", "set design", "effects work", "lighting", "story", "premise", "main character",
    "climax", "acting", "music", "photography", "production design", "middle section", "last half hour",
    "chase sequence", "dance sequence", "voice work", "theme song", "color palette", "sound design", "pace",
]

FIRST_NAMES = [
    "Anna", "Marcus", "Elena", "Tom", "Greta", "Omar", "Lucy", "Victor", "Nadia", "Paul", "Ingrid", "Sam",
    "Rosa", "Daniel", "Mei", "Oscar", "Clara", "Hugo", "Priya", "Felix", "Maria", "Jonas", "Alice", "Ivan",
    "Leila", "Robert", "Hannah", "Diego", "Sofia", "Arthur", "Yuki", "Ben",
]
LAST_NAMES = [
    "Morrow", "Castillo", "Lindqvist", "Baker", "Okafor", "Novak", "Harper", "Duval", "Tanaka", "Whitfield",
    "Moreau", "Kowalski", "Reyes", "Brennan", "Holt", "Sandoval", "Fischer", "Adeyemi", "Garner", "Petrov",
    "Lowell", "Marsh", "Ferreira", "Quinn", "Albright", "Nakamura", "Stone", "Varga",
]

ROLES = [
    "a retired detective", "a young teacher", "an old farmer", "a ship captain", "a small-town mayor",
    "a jazz pianist", "a night nurse", "a taxi driver", "a country doctor", "a newspaper editor",
    "a chess player", "a factory worker", "a lighthouse keeper", "a piano tuner", "a train conductor",
    "a young widow", "a circus acrobat", "a radio host", "a diplomat", "a mountain guide", "a baker",
    "a museum guard", "a lawyer", "a high school coach", "a translator", "an astronaut", "a painter",
    "a postman", "a fisherman", "a professor",
]

ACTIONS = [
    "returns home after twenty years", "searches for an old painting", "opens a small restaurant",
    "trains for a marathon", "looks for her brother", "plans a long journey north", "inherits an old hotel",
    "takes over the family farm", "moves to a new city", "writes a letter every day", "builds a boat",
    "follows a stranger", "tries to sell a house", "teaches a class of teenagers", "joins a travelling band",
    "goes back to school", "keeps a secret from his family", "waits for a train", "repairs an old car",
    "looks after a neighbour's dog", "enters a cooking contest", "runs for office", "starts a small newspaper",
    "crosses the country by bus", "learns to sail",
]

PLACES = [
    "in a small town", "on a fishing island", "in Chicago", "in a mountain village", "in northern Canada",
    "across the desert", "in a coastal city", "at a boarding school", "on a farm in Iowa", "in Vienna",
    "in a quiet suburb", "on a river barge", "in a border town", "in modern Tokyo", "in rural Ireland",
    "in a crowded apartment building", "on a remote station", "in a seaside hotel", "in the Scottish highlands",
    "in Paris",
]

WHEN = [
    "last night", "over the weekend", "on a long flight", "at a late screening", "with my family", "with my cousins",
    "on a Sunday afternoon", "in a half-empty theater", "after reading the book", "on television",
    "for the second time", "at the cinema", "on a weekday evening", "with my brother", "last month",
]

AUDIENCES = [
    "anyone", "families", "fans of the genre", "my parents", "anyone who watches {genres}", "older viewers",
    "teenagers", "anyone with two hours to spare", "fans of {actor}", "everyone I know",
]

TIME_SPANS = ["two hours", "an evening", "ninety minutes", "a Saturday night", "the ticket price"]

# -------------------------------------------------------------------------------------------- sentiment words
# (all of these are VADER lexicon entries, or VADER-negated ones)

POS_ADJ = [
    "great", "wonderful", "brilliant", "superb", "excellent", "amazing", "fantastic", "beautiful", "charming",
    "delightful", "clever", "funny", "enjoyable", "perfect", "lovely", "impressive", "entertaining", "hilarious",
    "good", "nice", "powerful", "fresh", "stunning", "fun", "sweet", "smart", "warm", "gorgeous", "elegant",
    "exciting", "inspiring", "thoughtful", "honest", "original", "engaging", "terrific", "marvelous",
    "outstanding", "remarkable", "magnificent", "splendid", "pleasant",
]
NEG_ADJ = [
    "boring", "awful", "terrible", "dull", "bad", "horrible", "dreadful", "weak", "disappointing", "stupid",
    "lame", "ugly", "annoying", "poor", "confusing", "painful", "messy", "dumb", "pathetic", "lousy",
    "ridiculous", "clumsy and boring", "lifeless and dull", "depressing", "unpleasant", "tedious and awful",
    "embarrassing", "miserable", "worthless", "horrid", "repetitive", "inferior",
]
# positive adjectives used after "not" in negative reviews ("not very funny")
NEGATABLE = ["funny", "good", "interesting", "clever", "exciting", "enjoyable", "original", "entertaining", "great"]

POS_VERBS = ["loved", "enjoyed", "adored", "admired", "liked", "appreciated", "really liked", "loved"]
NEG_VERBS = ["hated", "disliked", "really disliked", "was annoyed by", "was bored by", "hated", "was irritated by"]

POS_NOUNS = ["masterpiece", "triumph", "treasure", "delight", "joy", "gem"]
NEG_NOUNS = ["mess", "disaster", "failure", "disappointment", "waste of time", "bore"]

INTENSIFIERS = ["", "", "", "very ", "really ", "truly ", "quite ", "absolutely ", "incredibly ", "extremely ",
                "genuinely ", "so "]
ATTRIBUTIVE_INTENSIFIERS = ["", "", "", "very ", "really ", "truly ", "genuinely ", "incredibly ", "thoroughly "]
POS_ADVERBS = ["beautifully", "wonderfully", "brilliantly", "perfectly", "gracefully", "nicely"]
NEG_ADVERBS = ["badly", "terribly", "horribly", "lazily and badly", "clumsily and badly"]

POS_FEELINGS = ["smile", "laugh", "cheer", "laugh out loud", "smile all the way home"]
NEG_FEELINGS = ["sad", "angry", "feel sick", "feel bored", "want to leave in disgust", "feel frustrated"]

CONTRAST_CONNECTIVES = ["but", "but", "yet", "although", "even though", "while", "however"]

# ------------------------------------------------------------------------------------------------- templates
# Placeholders: {movie} {genre} {part} {part2} {actor} {role} {action} {place} {when} {year} {minutes}
# {director} {audience} {span} and, for opinions, {adj} {adj2} {verb} {noun} {adverb} {feeling} {int}.

NEUTRAL_TEMPLATES = [
    "I watched this {genre} {when}.",
    "I saw this {movie} {when}.",
    "This {genre} from {year} follows {role} who {action} {place}.",
    "{actor} is cast as {role} who {action} {place}.",
    "The {movie} is about {role} who {action}.",
    "It was directed by {director} and runs about {minutes} minutes.",
    "The story is set {place}.",
    "{actor} stars as {role}, and {actor2} is the neighbour.",
    "It is a {genre} about {role} who {action} {place}.",
    "The {movie} came out in {year} and was shot {place}.",
    "Most of the {movie} takes place {place}.",
    "{director} made this {genre} in {year}.",
    "In this {genre}, {role} {action}.",
]

POS_TEMPLATES = [
    "The {part} is {int}{adj}.",
    "The {part} was {int}{adj} and the {part2} was {adj2}.",
    "{actor} is {int}{adj} as {role}.",
    "{actor} gives a {aint}{adj} performance.",
    "I {verb} the {part}.",
    "I {verb} this {movie} and the {part} is {int}{adj}.",
    "This is a {aint}{adj} {genre} with a {adj2} {part}.",
    "It is one of the best {genres} I have seen in years.",
    "The {part} and the {part2} are both {int}{adj}.",
    "What a {adj} {movie}!",
    "A {aint}{adj} {genre}, and a real {noun}.",
    "The {part} made me {feeling}.",
    "Every scene is {adverb} shot and the {part} is {adj}.",
    "{director} directs with a {adj} eye for detail.",
    "This {movie} is a {noun}.",
    "The {part} is {adverb} done.",
    "I {verb} every minute of it.",
]

NEG_TEMPLATES = [
    "The {part} is {int}{adj}.",
    "The {part} was {int}{adj} and the {part2} was {adj2}.",
    "{actor} is {int}{adj} as {role}.",
    "{actor} gives a {aint}{adj} performance.",
    "I {verb} the {part}.",
    "I {verb} this {movie} and the {part} is {int}{adj}.",
    "This is a {aint}{adj} {genre} with a {adj2} {part}.",
    "It is one of the worst {genres} I have seen in years.",
    "The {part} and the {part2} are both {int}{adj}.",
    "What a {adj} {movie}.",
    "The {part} made me {feeling}.",
    "The {part} is not very {neg_pos}.",
    "The {part} is {adverb} done.",
    "This {movie} is a {noun}.",
    "The direction by {director} is {adj}.",
    "The {part} is not {neg_pos} at all, and the {part2} is {adj2}.",
]

POS_CLOSERS = [
    "I would {int}recommend it to {audience}.",
    "Highly recommended.",
    "Go and see it.",
    "I will watch it again.",
    "Easily worth {span}.",
    "One of the best films of {year}.",
    "A {adj} way to spend {span}.",
    "{rating} out of ten.",
]
NEG_CLOSERS = [
    "I would not recommend it to {audience}.",
    "Avoid this one.",
    "Skip it.",
    "What a waste of {span}.",
    "One of the worst films of {year}.",
    "I want my money back.",
    "Not worth {span}.",
    "{low_rating} out of ten, and a bad one.",
]
MIXED_CLOSERS = [
    "Worth a look if you have {span} to spare.",
    "It is fine for a slow afternoon.",
    "{mid_rating} out of ten.",
    "Some of it works and some of it does not.",
    "I am still not sure what I think of it.",
    "Watch it for the {part}, not for the {part2}.",
]

NUMBER_WORDS = ["One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine", "Ten"]


# ------------------------------------------------------------------------------------------------- generator


class _Writer:
    """Fills templates from one ``random.Random``; every choice goes through ``self.rng``."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def pick(self, seq: Sequence[str]) -> str:
        return seq[self.rng.randrange(len(seq))]

    def name(self) -> str:
        return f"{self.pick(FIRST_NAMES)} {self.pick(LAST_NAMES)}"

    def slots(self, polarity: str | None) -> dict[str, str]:
        """Draw every slot a template may use (unused draws still advance the RNG, which keeps it simple)."""
        part, part2 = self.rng.sample(PARTS, 2)
        actor, actor2 = self.name(), self.name()
        s = {
            "movie": self.pick(MOVIES), "genre": self.pick(GENRES), "part": part, "part2": part2,
            "actor": actor, "actor2": actor2, "role": self.pick(ROLES), "action": self.pick(ACTIONS),
            "place": self.pick(PLACES), "when": self.pick(WHEN), "year": str(self.rng.randint(1935, 2023)),
            "minutes": str(self.rng.choice(range(80, 181, 5))), "director": self.name(),
            "span": self.pick(TIME_SPANS), "int": self.pick(INTENSIFIERS),
            "aint": self.pick(ATTRIBUTIVE_INTENSIFIERS),
            "rating": self.pick(NUMBER_WORDS[7:]), "low_rating": self.pick(NUMBER_WORDS[:3]),
            "mid_rating": self.pick(NUMBER_WORDS[4:7]), "neg_pos": self.pick(NEGATABLE),
        }
        s["genres"] = _plural(s["genre"])
        s["audience"] = self.pick(AUDIENCES).format(genres=s["genres"], actor=actor)
        if polarity == "positive":
            a, a2 = self.rng.sample(POS_ADJ, 2)
            s.update(adj=a, adj2=a2, verb=self.pick(POS_VERBS), noun=self.pick(POS_NOUNS),
                     adverb=self.pick(POS_ADVERBS), feeling=self.pick(POS_FEELINGS))
        elif polarity == "negative":
            a, a2 = self.rng.sample(NEG_ADJ, 2)
            s.update(adj=a, adj2=a2, verb=self.pick(NEG_VERBS), noun=self.pick(NEG_NOUNS),
                     adverb=self.pick(NEG_ADVERBS), feeling=self.pick(NEG_FEELINGS))
        return s

    def fill(self, templates: Sequence[str], polarity: str | None) -> str:
        return _articles(self.pick(templates).format(**self.slots(polarity)))

    def opinion(self, polarity: str) -> str:
        return self.fill(POS_TEMPLATES if polarity == "positive" else NEG_TEMPLATES, polarity)

    def contrast(self) -> str:
        """One sentence holding both polarities, joined by a connective."""
        first, second = self.rng.sample(["positive", "negative"], 2)
        conn = self.pick(CONTRAST_CONNECTIVES)
        a = _clause(self.opinion(first))
        b = _clause(self.opinion(second))
        if conn in ("although", "even though", "while"):
            return f"{conn} {a}, {b}."
        if conn == "however":
            return f"{a}; however, {b}."
        return f"{a}, {conn} {b}."

    def review(self, sentiment: str) -> str:
        rng = self.rng
        sentences: list[str] = []
        neutral = rng.sample(NEUTRAL_TEMPLATES, 2)  # two different ones, in case both are used
        if rng.random() < 0.55:
            sentences.append(self.fill(neutral[:1], None))
        if sentiment == "mixed":
            if rng.random() < 0.6:
                body = [self.contrast()]
                if rng.random() < 0.3:
                    body.append(self.opinion(rng.choice(["positive", "negative"])))
            else:
                body = [self.opinion("positive"), self.opinion("negative")]
                rng.shuffle(body)
        else:
            body = [self.opinion(sentiment) for _ in range(rng.choice([1, 1, 2, 2, 3]))]
        sentences.extend(body)
        if rng.random() < 0.25:
            sentences.insert(rng.randrange(len(sentences) + 1), self.fill(neutral[1:], None))
        if rng.random() < 0.45:
            closers = {"positive": POS_CLOSERS, "negative": NEG_CLOSERS, "mixed": MIXED_CLOSERS}[sentiment]
            polarity = None if sentiment == "mixed" else sentiment
            sentences.append(self.fill(closers, polarity))
        return " ".join(_capitalise(s) for s in sentences)


_A_BEFORE_VOWEL = re.compile(r"\b([Aa]) (?=[aeiouAEIOU])")


def _articles(text: str) -> str:
    """'a excellent' -> 'an excellent' (the word lists hold no 'a university'-type exceptions)."""
    return _A_BEFORE_VOWEL.sub(lambda m: m.group(1) + "n ", text)


def _plural(noun: str) -> str:
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def _clause(sentence: str) -> str:
    """A sentence as a lower-initial clause without its final punctuation (names keep their capital)."""
    s = sentence.rstrip(".!")
    first = s.split(" ", 1)[0]
    if first in ("The", "This", "It", "What", "Every", "Nothing", "A"):
        s = s[0].lower() + s[1:]
    return s


def _capitalise(sentence: str) -> str:
    return sentence[0].upper() + sentence[1:]


def _n_sentences(text: str) -> int:
    return sum(text.count(c) for c in ".!?") - text.count("...")


def generate_reviews(n: int, seed: int, *, mix: Sequence[float] = (0.4, 0.4, 0.2)) -> list[dict]:
    """``n`` short movie reviews, deterministic for ``seed``.

    Returns a list of ``{"text": str, "sentiment": "positive" | "negative" | "mixed"}``. Classes are drawn
    independently with probabilities ``mix`` (positive, negative, mixed). Each review has 1-4 sentences and
    ``MIN_WORDS``-``MAX_WORDS`` words (drafts outside those bounds are redrawn). Only ``random.Random(seed)``
    is used, never the global RNG.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if len(mix) != 3 or any(p < 0 for p in mix) or sum(mix) <= 0:
        raise ValueError(f"mix must be three non-negative weights (positive, negative, mixed), got {mix!r}")
    rng = random.Random(seed)
    writer = _Writer(rng)
    out = []
    for _ in range(n):
        sentiment = rng.choices(SENTIMENTS, weights=mix)[0]
        while True:
            text = writer.review(sentiment)
            if MIN_WORDS <= len(text.split()) <= MAX_WORDS and 1 <= _n_sentences(text) <= MAX_SENTENCES:
                break
        out.append({"text": text, "sentiment": sentiment})
    return out
