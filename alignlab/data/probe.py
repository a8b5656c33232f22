"""Generated text for alignment-tax probes (alignlab.eval.tax): out-of-task sentences and word-order items.

* :func:`generate_out_of_task_texts`: short weather reports, recipe steps, travel timetables, geography notes and
  household instructions -- text of a different kind than the movie reviews the embedded model is trained on,
  so its perplexity measures capability outside the preference task (a capability the alignment objective never
  rewards; at real scale the same metric runs on any held-out text).
* :func:`word_order_items`: a prefix, a continuation, and the continuation with its words shuffled. A language
  model that has learnt its training text assigns the real continuation the higher likelihood; accuracy over
  items is a probe task the SFT model can do (measured on held-out reviews by default), whose drop after
  alignment is a tax.

Everything is drawn from ``random.Random(seed)``: pure functions of their arguments.
"""
from __future__ import annotations

import random
from typing import Sequence

__all__ = ["KINDS", "generate_out_of_task_texts", "review_probe_items", "word_order_items"]

CITIES = ["Oslo", "Lisbon", "Denver", "Nairobi", "Osaka", "Quito", "Perth", "Krakow", "Halifax", "Tunis", "Hanoi",
          "Bergen", "Cordoba", "Tallinn", "Adelaide", "Cusco"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
SKIES = ["cloudy", "sunny", "overcast", "foggy in the morning", "partly cloudy", "clear", "rainy", "windy"]
WIND = ["north", "south", "east", "west", "northwest", "southeast"]
DISHES = ["pancakes", "vegetable soup", "bread rolls", "a lemon cake", "rice with beans", "tomato sauce",
          "oat cookies", "a potato salad", "fried eggs", "a pot of lentils"]
INGREDIENTS = ["flour", "milk", "butter", "sugar", "rice", "onions", "carrots", "salt", "water", "olive oil",
               "garlic", "beans", "oats", "lemon juice", "potatoes", "eggs"]
AMOUNTS = ["two cups of", "one spoon of", "half a cup of", "three pinches of", "a handful of", "200 grams of",
           "a litre of", "four slices of"]
TOOLS = ["a large pan", "a deep pot", "the oven", "a mixing bowl", "a small saucepan", "a baking tray"]
TRANSPORT = ["train", "bus", "ferry", "tram", "night train", "coach"]
RIVERS = ["Danube", "Rhine", "Nile", "Mekong", "Loire", "Volga", "Amazon", "Tagus"]
REGIONS = ["the north", "the south", "the coast", "the mountains", "the central plain", "the eastern valley"]
SEAS = ["the Black Sea", "the North Sea", "the Atlantic", "the Mediterranean", "the South China Sea", "the Caspian"]
CHORES = ["the washing machine", "the kitchen tap", "the smoke alarm", "the garden hose", "the bicycle chain",
          "the window frame"]
NUMBERS = ["two", "three", "four", "five", "six", "seven", "eight", "ten", "twelve", "fifteen", "twenty"]

TEMPLATES = {
    "weather": [
        "On {day} the weather in {city} will be {sky} with a high of {t1} degrees and a light wind from the {wind}.",
        "The forecast for {city} says {sky} skies on {day}, and the temperature will fall to {t2} degrees at night.",
        "Expect {mm} millimetres of rain in {city} on {day}, with winds from the {wind} of up to {kmh} kilometres "
        "per hour.",
    ],
    "recipe": [
        "To make {dish}, mix {amount} {ing} with {amount2} {ing2} and cook it in {tool} for {n} minutes.",
        "Put {amount} {ing} into {tool}, add {amount2} {ing2}, and stir slowly until it is warm.",
        "For {dish} you need {ing}, {ing2} and {ing3}; heat {tool} first and keep it on a low flame.",
    ],
    "travel": [
        "The {mode} to {city} leaves platform {plat} at {hh}:{mi} and arrives at {hh2}:{mi2} every {day}.",
        "Tickets for the {mode} from {city} to {city2} cost {price} euros, and the trip takes about {n} hours.",
        "On {day} the first {mode} to {city2} departs at {hh}:{mi}; passengers should board ten minutes early.",
    ],
    "geography": [
        "The river {river} flows through {city} before it reaches {sea}.",
        "{city} lies in {region} of the country, about {km} kilometres from {city2}.",
        "Most of the rain in {region} falls in spring, and the river {river} floods its banks every few years.",
    ],
    "household": [
        "To clean {chore}, switch it off, wipe it with warm water and let it dry for {n} hours.",
        "Check {chore} every {n} weeks and replace the old parts when they wear out.",
        "If {chore} makes a strange noise, turn it off and call a technician before using it again.",
    ],
}
KINDS = tuple(TEMPLATES)


def _slots(rng: random.Random) -> dict[str, str]:
    city, city2 = rng.sample(CITIES, 2)
    ing, ing2, ing3 = rng.sample(INGREDIENTS, 3)
    amount, amount2 = rng.sample(AMOUNTS, 2)
    hh = rng.randint(5, 20)
    return {
        "day": rng.choice(DAYS), "city": city, "city2": city2, "sky": rng.choice(SKIES), "wind": rng.choice(WIND),
        "t1": str(rng.randint(-5, 35)), "t2": str(rng.randint(-15, 20)), "mm": str(rng.randint(1, 60)),
        "kmh": str(rng.randint(10, 90)), "dish": rng.choice(DISHES), "ing": ing, "ing2": ing2, "ing3": ing3,
        "amount": amount, "amount2": amount2, "tool": rng.choice(TOOLS), "n": rng.choice(NUMBERS),
        "mode": rng.choice(TRANSPORT), "plat": str(rng.randint(1, 12)), "hh": f"{hh:02d}",
        "mi": f"{rng.choice(range(0, 60, 5)):02d}", "hh2": f"{min(hh + rng.randint(1, 4), 23):02d}",
        "mi2": f"{rng.choice(range(0, 60, 5)):02d}", "price": str(rng.randint(5, 120)), "river": rng.choice(RIVERS),
        "sea": rng.choice(SEAS), "region": rng.choice(REGIONS), "km": str(rng.randint(20, 900)),
        "chore": rng.choice(CHORES),
    }


def generate_out_of_task_texts(n: int, seed: int = 0, kinds: Sequence[str] = KINDS,
                               sentences: tuple[int, int] = (1, 3)) -> list[str]:
    """n short texts, each 1-3 sentences of one kind (weather, recipe, travel, geography, household)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    unknown = [k for k in kinds if k not in TEMPLATES]
    if unknown or not kinds:
        raise ValueError(f"unknown out-of-task kinds {unknown or list(kinds)}; choose from {list(KINDS)}")
    rng = random.Random(f"out-of-task-{seed}")
    texts = []
    for _ in range(n):
        kind = rng.choice(list(kinds))
        k = rng.randint(*sentences)
        texts.append(" ".join(rng.choice(TEMPLATES[kind]).format(**_slots(rng)) for _ in range(k)))
    return texts


def word_order_items(texts: Sequence[str], n: int, seed: int = 0, prefix_words: tuple[int, int] = (3, 6),
                     continuation_words: tuple[int, int] = (6, 12)) -> list[dict]:
    """Items {prefix, good, bad}: `good` is the real continuation of `prefix` in a text (with its leading space),
    `bad` the same words in a shuffled order (always different from `good`). Texts too short are skipped."""
    rng = random.Random(f"word-order-{seed}")
    items = []
    pool = list(texts)
    rng.shuffle(pool)
    for text in pool:
        if len(items) >= n:
            break
        words = text.split()
        k, m = rng.randint(*prefix_words), rng.randint(*continuation_words)
        if len(words) < k + m or len(set(words[k:k + m])) < 2:
            continue
        cont = words[k:k + m]
        shuffled = cont[:]
        while shuffled == cont:
            rng.shuffle(shuffled)
        items.append({"prefix": " ".join(words[:k]), "good": " " + " ".join(cont), "bad": " " + " ".join(shuffled)})
    if len(items) < n:
        raise ValueError(f"only {len(items)} word-order items could be built from {len(texts)} texts (asked {n})")
    return items


def review_probe_items(n: int, seed: int = 0) -> list[dict]:
    """Word-order items on freshly generated reviews (a seed stream apart from the training reviews')."""
    from alignlab.data.reviews import generate_reviews

    reviews = [r["text"] for r in generate_reviews(n + n // 4 + 8, seed=1_000_003 + seed)]
    return word_order_items(reviews, n, seed)
