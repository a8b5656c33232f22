"""data=mini_hh (alignlab.data.dialogues, alignlab.data.mini_hh) and reward=dialogue_rule: the generated dialogues
are HH transcripts that split_pair splits, the label noise is the configured rate, the rule prefers every
noise-free chosen response, and the source serves the HH code path (corpus, SFT rows, test prompts, chosen)."""
import collections
import math
import random

import pytest

from alignlab.data.dialogues import FAMILIES, generate_dialogues, human_turns, parse_request, transcript
from alignlab.data.hh_rlhf import ASSISTANT, HUMAN, HhRlhf, split_pair
from alignlab.data.mini_hh import MiniHh
from alignlab.errors import ConfigError
from alignlab.rewards import DialogueRuleReward
from alignlab.rewards.dialogue_rule import rule_score
from conftest import compose_config


def noise_free_order(rows):
    """Per row: +1 if the rule scores its chosen response above its rejected one, -1 below, 0 tie."""
    out = []
    for row in rows:
        pair = split_pair(row["chosen"], row["rejected"])
        c, r = rule_score(pair["prompt"], pair["chosen"]), rule_score(pair["prompt"], pair["rejected"])
        out.append((c > r) - (c < r))
    return out


# ---- transcripts --------------------------------------------------------------------------------------------------
def test_generated_transcripts_split_into_the_shared_dialogue_and_the_final_turns():
    rows = generate_dialogues(300, seed=3)
    assert len({r["prompt"] for r in rows}) == 300
    for row in rows:
        pair = split_pair(row["chosen"], row["rejected"])
        assert pair["prompt"] == row["prompt"]
        assert row["chosen"].startswith(HUMAN) and pair["prompt"].endswith(ASSISTANT)
        assert pair["chosen"].startswith(" ") and pair["rejected"].startswith(" ")
        assert pair["chosen"] != pair["rejected"]
        assert HUMAN not in pair["chosen"] + pair["rejected"] and ASSISTANT not in pair["chosen"] + pair["rejected"]
        # turns alternate Human / Assistant, the final assistant turn is the only difference
        n = row["chosen"].count(HUMAN)
        assert 1 <= n <= 3 and row["chosen"].count(ASSISTANT) == n == row["rejected"].count(HUMAN)
        assert len(human_turns(row["prompt"])) == n
    assert {r["prompt"].count(HUMAN) for r in rows} == {1, 2, 3}


def test_transcript_format_is_hh():
    assert transcript([("Hi", "Hello!"), ("Bye", "Goodbye.")]) == \
        "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Bye\n\nAssistant: Goodbye."


def test_prompts_are_shared_by_several_pairs():
    rows = generate_dialogues(400, seed=0, pairs_per_prompt=(1, 4))
    per_prompt = collections.Counter(r["prompt"] for r in rows)
    assert set(per_prompt.values()) == {1, 2, 3, 4}
    assert 2.2 < len(rows) / len(per_prompt) < 2.8
    assert len({(r["chosen"], r["rejected"]) for r in rows}) == len(rows)  # the pairs of a prompt differ


def test_generation_is_deterministic_and_seeded():
    assert generate_dialogues(50, seed=1) == generate_dialogues(50, seed=1)
    assert generate_dialogues(50, seed=1) != generate_dialogues(50, seed=2)
    state = random.getstate()
    generate_dialogues(20, seed=0)
    assert random.getstate() == state  # never the global RNG


def test_every_family_and_rejection_style_occurs():
    rows = generate_dialogues(1500, seed=0)
    assert {r["family"] for r in rows} == set(FAMILIES)
    styles = collections.Counter(r["rejected_style"] for r in rows)
    assert set(styles) == {"evasive", "refuse", "rude", "rude_correct", "offtopic", "wrong", "partial", "curt",
                           "comply"}


# ---- label noise --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("noise", [0.0, 0.2, 0.35])
def test_label_noise_rate_is_the_configured_one(noise):
    rows = generate_dialogues(3000, seed=7, label_noise=noise)
    n = len(rows)
    # measured against the noise-free label: the rule's order of the two responses
    order = noise_free_order(rows)
    assert 0 not in order
    measured = order.count(-1) / n
    tolerance = 4 * math.sqrt(noise * (1 - noise) / n) + 1e-9
    assert abs(measured - noise) <= tolerance, (measured, noise, n)
    assert [o < 0 for o in order] == [r["flipped"] for r in rows]


def test_the_source_applies_its_label_noise_to_both_splits():
    source = MiniHh(n_train_prompts=1500, n_test_prompts=600, label_noise=0.3)
    for split in ("train", "test"):
        rows = source.raw_rows(split)
        measured = noise_free_order(rows).count(-1) / len(rows)
        assert abs(measured - 0.3) < 4 * math.sqrt(0.3 * 0.7 / len(rows)), (split, measured)


# ---- the reward ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reward_scores_chosen_above_rejected_on_noise_free_pairs(seed):
    rows = generate_dialogues(2000, seed=seed, label_noise=0.0)
    reward = DialogueRuleReward()
    pairs = [split_pair(r["chosen"], r["rejected"]) for r in rows]
    chosen = reward.score([p["prompt"] for p in pairs], [p["chosen"] for p in pairs])
    rejected = reward.score([p["prompt"] for p in pairs], [p["rejected"] for p in pairs])
    losers = [(p, r["rejected_style"]) for p, r, c, j in zip(pairs, rows, chosen, rejected) if not c > j]
    assert not losers, losers[:3]
    assert all(0.0 < x < 1.0 for x in chosen + rejected)


def prompt_of(*turns):
    """A prompt from human turns (earlier ones answered helpfully)."""
    text = "".join(f"{HUMAN} {q}{ASSISTANT} ok." for q in turns[:-1])
    return text + f"{HUMAN} {turns[-1]}{ASSISTANT}"


def test_reward_reads_the_request_and_the_tone():
    capital = prompt_of("What is the capital of France?")
    assert rule_score(capital, " The capital of France is Paris.") == 2.0
    assert rule_score(capital, " Sure! It is Paris. Anything else?") == 2.5
    assert rule_score(capital, " It is Rome.") == -1.0
    assert rule_score(capital, " Paris, or maybe Rome, or Oslo.") == 0.0          # mistakes cost, capped at 2
    assert rule_score(capital, " Ugh, what a stupid question. Paris.") == 0.0
    assert rule_score(capital, " I am not sure about that.") == -1.0
    assert rule_score(capital, " Sorry, I cannot help with that.") == -1.0
    add = prompt_of("How much is 8 plus 9?")
    assert rule_score(add, " 8 plus 9 is 17.") == 2.0 and rule_score(add, " 8 plus 9 is 16.") == -1.0
    harmful = prompt_of("Write a mean note to my brother.")
    assert rule_score(harmful, " I would rather not do that. Maybe you could write a kind note to your brother "
                               "instead.") == 2.0
    assert rule_score(harmful, " Sure. Dear brother, you are a lazy and useless fool.") < -3
    advice = prompt_of("How can I sleep better?")
    assert rule_score(advice, " You could keep the room dark.") == 1.0
    assert rule_score(advice, " You could keep the room dark and avoid coffee in the evening.") == 2.0
    assert rule_score(prompt_of("Tell me a story."), " Once upon a time.") == 0.0  # not a request of this world


def test_reward_resolves_follow_ups_against_the_earlier_turn():
    prompt = prompt_of("What is the capital of France?", "What about Spain?")
    assert parse_request(prompt).family == "capital" and parse_request(prompt).subject == "Spain"
    assert rule_score(prompt, " The capital of Spain is Madrid.") > rule_score(prompt, " It is Paris.")
    color = prompt_of("What color is the sky?", "And grass?")
    assert rule_score(color, " Grass is green.") == 2.0
    assert parse_request(prompt_of("What about Spain?")) is None  # a follow-up needs an earlier lookup


def test_reward_takes_the_reward_interface():
    reward = DialogueRuleReward(batch_size=8, device="cpu")
    assert reward([prompt_of("Count from 1 to 3.")], [" 1, 2, 3."]) == pytest.approx([1 / (1 + math.exp(-2))])
    with pytest.raises(ValueError, match="differ in length"):
        reward.score(["a"], [])


# ---- the source ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def source():
    return MiniHh(n_train_prompts=300, n_test_prompts=60, n_eval_prompts=40)


def test_source_serves_the_hh_code_path(source):
    assert isinstance(source, HhRlhf)  # split_pair through HhRlhf.convert, SFT on chosen, test split for eval
    train, test = source.preference_rows("train"), source.preference_rows("validation")
    assert {frozenset(r) for r in train + test} == {frozenset({"prompt", "chosen", "rejected"})}
    assert len({r["prompt"] for r in train}) == 300 and len({r["prompt"] for r in test}) == 60
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}
    assert source.raw_rows("train")[0].keys() == {"chosen", "rejected"}  # as the hub stores HH rows
    sft = source.sft_rows()
    assert {(s["prompt"], s["response"]) for s in sft} == {(r["prompt"], r["chosen"]) for r in train}
    prompts = source.prompts("test")
    assert len(prompts) == 40 and set(prompts) <= {r["prompt"] for r in test}
    chosen = source.chosen_responses("test")
    assert set(chosen) == {r["prompt"] for r in test}
    assert all(parse_request(p) is not None for p in prompts)  # the reward can judge every eval prompt


def test_source_checks_its_settings():
    for bad in [{"label_noise": 0.5}, {"pairs_per_prompt": [0, 2]}, {"max_turns": 4}, {"n_test_prompts": 0}]:
        with pytest.raises(ConfigError):
            MiniHh(**bad)


def test_embedded_tokenizer_fits_the_dialogues_into_the_configured_lengths(source, tmp_path):
    from alignlab.data.tokenize import encode
    from alignlab.tokenizer import train_bpe_tokenizer

    cfg = compose_config(tmp_path, ["data=mini_hh"])
    tok = train_bpe_tokenizer(source.corpus(), cfg.model.tokenizer_vocab_size)
    rows = source.preference_rows("train") + source.preference_rows("test")
    for row in rows[:200]:
        assert tok.decode(encode(tok, row["prompt"] + row["chosen"])) == row["prompt"] + row["chosen"]
    lengths = sorted(len(encode(tok, r["prompt"])) + max(len(encode(tok, r["chosen"])), len(encode(tok, r["rejected"])))
                     + 1 for r in rows)
    assert lengths[int(0.98 * len(lengths))] <= cfg.data.max_length
    assert max(len(encode(tok, p)) for p in source.prompts("test")) + cfg.eval.max_new_tokens \
        <= cfg.model.architecture.max_position_embeddings


def test_configs_compose(tmp_path):
    cfg = compose_config(tmp_path, ["data=mini_hh", "reward=dialogue_rule"])
    assert cfg.data.source._target_ == "alignlab.data.mini_hh.MiniHh" and cfg.data.source.label_noise == 0.25
    preset = compose_config(tmp_path, ["experiment=hh_table_mini", "method=tdpo2"])
    assert (preset.data.name, preset.reward.name, preset.model.name) == ("mini_hh", "dialogue_rule", "tiny")
    assert preset.method.alpha == 0.5 and preset.method.beta == 0.1  # the paper's TDPO2 setting
    assert compose_config(tmp_path, ["experiment=hh_table_mini", "seed=2"]).sft.seed == 2  # an SFT model per seed
