"""data=imdb, data=hh_rlhf, data=ultrafeedback and the chat / message-list extension of data=preference_files,
loaded through `datasets.load_dataset(<local dir>)` from stand-ins written in the hubs' exact layouts."""
import json
import logging

import pandas as pd
import pytest
from hydra.utils import instantiate

from alignlab.data.chat import ChatRenderer, pair_from_messages, render_plain
from alignlab.data.files import PreferenceFiles
from alignlab.data.hh_rlhf import HhRlhf, split_pair
from alignlab.data.imdb import Imdb, clean_review
from alignlab.data.ultrafeedback import UltraFeedback
from alignlab.errors import ConfigError, DataError
from conftest import compose_config
from fixtures_hub import (SIMPLE_CHAT_TEMPLATE, hh_transcript, make_hh_rows, make_ultrafeedback_rows,
                          train_tokenizer, write_hh, write_imdb, write_ultrafeedback)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return train_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def chat_tokenizer(tmp_path_factory):
    return train_tokenizer(tmp_path_factory.mktemp("chat_tok"), chat_template=SIMPLE_CHAT_TEMPLATE)


@pytest.fixture(scope="module")
def imdb_dir(tmp_path_factory):
    return write_imdb(tmp_path_factory.mktemp("imdb"), n_train=40, n_test=16)


# ---- IMDb ------------------------------------------------------------------------------------------------------
def test_clean_review_strips_br_tags():
    assert clean_review("Great film.<br /><br />Loved it.") == "Great film. Loved it."
    assert clean_review("a<br/>b<BR>c<br />") == "a b c"


def test_imdb_loads_the_hub_layout_without_tags(imdb_dir):
    source = Imdb(path=str(imdb_dir))
    train, test = source.texts("train"), source.texts("test")
    assert (len(train), len(test)) == (40, 16)
    assert not any("<br" in t.lower() for t in train + test)
    assert source.corpus() == train
    assert source.sft_rows() == [{"prompt": "", "response": t} for t in train]
    assert source.preference_rows("train") is None  # pairs come from the pair stage
    # the parquet files carry the hub's schema: text string, label ClassLabel(neg, pos)
    import datasets
    ds = datasets.load_dataset(str(imdb_dir), split="train")
    assert ds.features["label"].names == ["neg", "pos"] and ds.features["text"].dtype == "string"
    assert "<br />" in "".join(ds["text"])  # the raw stand-in has tags, like the hub


def test_imdb_loads_without_readme(tmp_path):
    root = write_imdb(tmp_path / "imdb", n_train=10, n_test=6, readme=False)
    assert (len(Imdb(path=str(root)).texts("train")), len(Imdb(path=str(root)).texts("test"))) == (10, 6)


def test_imdb_prompts_are_2_to_8_token_prefixes(imdb_dir, tokenizer):
    source = Imdb(path=str(imdb_dir), n_pair_prompts=30, n_eval_prompts=12, seed=3)
    for split, n in (("train", 30), ("test", 12)):
        prompts = source.prompts(split, tokenizer)
        assert len(prompts) == n
        texts = source.texts(split)
        for p in prompts:
            assert 2 <= len(tokenizer(p, add_special_tokens=False)["input_ids"]) <= 8
            assert any(t.startswith(p) for t in texts)
    assert len({len(tokenizer(p)["input_ids"]) for p in source.prompts("train", tokenizer)}) > 3


def test_imdb_max_texts_is_a_seeded_random_subset(imdb_dir):
    a = Imdb(path=str(imdb_dir), max_texts=10, seed=1).texts("train")
    assert len(a) == 10 and a == Imdb(path=str(imdb_dir), max_texts=10, seed=1).texts("train")
    full = Imdb(path=str(imdb_dir)).texts("train")
    assert a != full[:10] and set(a) <= set(full)


def test_imdb_missing_column_names_dataset_split_and_column(tmp_path):
    root = write_imdb(tmp_path / "imdb", n_train=4, n_test=4, columns=("label",), readme=False)
    with pytest.raises(DataError, match=r"imdb.*split 'train'.*missing column 'text'"):
        Imdb(path=str(root)).texts("train")


def test_imdb_missing_split_and_missing_dataset(imdb_dir, tmp_path):
    with pytest.raises(DataError, match=r"no split 'validation'"):
        Imdb(path=str(imdb_dir), test_split="validation").texts("test")
    with pytest.raises(DataError, match=r"data.source.path=.*no such directory"):
        Imdb(path=str(tmp_path / "absent")).texts("train")
    with pytest.raises(DataError, match=r"hub is unreachable"):
        Imdb(path="stanfordnlp/imdb").texts("train")  # tests run with HF_HUB_OFFLINE=1


def test_local_directories_named_alike_do_not_share_a_cache(tmp_path):
    # datasets keys the cache of a directory with README `configs` by its base name: load_split must not
    a = write_imdb(tmp_path / "a" / "imdb", n_train=4, n_test=4)
    b = write_imdb(tmp_path / "b" / "imdb", n_train=6, n_test=4)
    assert len(Imdb(path=str(a)).texts("train")) == 4 and len(Imdb(path=str(b)).texts("train")) == 6
    write_imdb(a, n_train=8, n_test=4)  # rewritten in place
    assert len(Imdb(path=str(a)).texts("train")) == 8


def test_imdb_config(imdb_dir, tmp_path):
    cfg = compose_config(tmp_path, ["data=imdb", f"data.source.path={imdb_dir}"])
    assert cfg.data.pairs.completions_per_prompt == 4 and list(cfg.data.source.prompt_tokens) == [2, 8]
    assert compose_config(tmp_path, ["data=imdb"]).data.source.path == "stanfordnlp/imdb"
    source = instantiate(cfg.data.source)
    assert isinstance(source, Imdb) and len(source.texts("train")) == 40


# ---- HH-RLHF: splitting transcripts ----------------------------------------------------------------------------
def test_split_pair_single_turn():
    out = split_pair("\n\nHuman: Hi\n\nAssistant: Hello there!", "\n\nHuman: Hi\n\nAssistant: Go away.")
    assert out == {"prompt": "\n\nHuman: Hi\n\nAssistant:", "chosen": " Hello there!", "rejected": " Go away."}


def test_split_pair_multi_turn_differing_only_in_the_last_turn():
    history = [("How do I bake bread?", "Mix flour, water, yeast and salt."), ("How long?", "About an hour.")]
    chosen = hh_transcript(history + [("Thanks! Any tips?", "Sure, let the dough rise twice.")])
    rejected = hh_transcript(history + [("Thanks! Any tips?", "Sure, you can buy bread instead.")])
    out = split_pair(chosen, rejected)
    # the earlier assistant turns are part of the prompt; the shared "Sure," start is not
    assert out["prompt"] == hh_transcript(history) + "\n\nHuman: Thanks! Any tips?\n\nAssistant:"
    assert out["chosen"] == " Sure, let the dough rise twice."
    assert out["rejected"] == " Sure, you can buy bread instead."
    assert out["prompt"] + out["chosen"] == chosen and out["prompt"] + out["rejected"] == rejected


def test_split_pair_when_one_response_extends_the_other_or_is_empty():
    base = "\n\nHuman: Name a colour.\n\nAssistant:"
    assert split_pair(base + " Red", base + " Red, or blue.") == \
        {"prompt": base, "chosen": " Red", "rejected": " Red, or blue."}
    assert split_pair(base, base + " Blue.") == {"prompt": base, "chosen": "", "rejected": " Blue."}


def test_split_pair_transcripts_that_differ_in_an_earlier_turn():
    chosen = hh_transcript([("Hi", "Hello!"), ("Bye", "Goodbye!")])
    rejected = hh_transcript([("Hi", "What?"), ("Bye", "Goodbye!")])
    out = split_pair(chosen, rejected)
    assert out["prompt"] == "\n\nHuman: Hi\n\nAssistant:"  # the last Assistant: both share
    assert out["chosen"] == " Hello!\n\nHuman: Bye\n\nAssistant: Goodbye!"


@pytest.mark.parametrize("chosen,rejected,problem", [
    ("\n\nHuman: Hi\n\nAssistant: Hello", "\n\nHuman: Hey\n\nAssistant: Hello", "share no"),
    ("Hello", "Goodbye", "share no"),
    ("\n\nHuman: Hi\n\nAssistant: Hello", "\n\nHuman: Hi\n\nAssistant: Hello", "identical"),
    (None, "\n\nHuman: Hi\n\nAssistant: Hello", "'chosen' is a NoneType"),
])
def test_split_pair_malformed_rows_raise_value_error(chosen, rejected, problem):
    with pytest.raises(ValueError, match=problem):
        split_pair(chosen, rejected)


# ---- HH-RLHF: the source ---------------------------------------------------------------------------------------
MALFORMED = [{"chosen": "\n\nHuman: A\n\nAssistant: x", "rejected": "\n\nHuman: B\n\nAssistant: x"},
             {"chosen": "\n\nHuman: A\n\nAssistant: same", "rejected": "\n\nHuman: A\n\nAssistant: same"}]


@pytest.fixture(scope="module")
def hh_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("hh")
    train = make_hh_rows(20, seed=0)
    train[3:3] = MALFORMED  # rows 3 and 4 are bad
    write_hh(root, {"train": train, "test": make_hh_rows(8, seed=1)}, subset="harmless-base")
    write_hh(root, {"train": make_hh_rows(10, seed=2), "test": make_hh_rows(4, seed=3)}, subset="helpful-base")
    return root


def test_hh_loads_every_subset_and_skips_bad_rows(hh_dir, caplog):
    with caplog.at_level(logging.WARNING):
        source = HhRlhf(path=str(hh_dir))
        train = source.preference_rows("train")
    assert len(train) == 30 and len(source.preference_rows("validation")) == 12
    assert "skipped 2 bad rows of 32" in caplog.text
    for row in train:
        assert row["prompt"].startswith("\n\nHuman:") and row["prompt"].endswith("\n\nAssistant:")
        assert row["chosen"] != row["rejected"]
    assert any(r["prompt"].count("\n\nAssistant:") > 1 for r in train)  # multi-turn prompts


def test_hh_data_dir_picks_a_subset(hh_dir):
    source = HhRlhf(path=str(hh_dir), data_dir="helpful-base")
    assert (len(source.preference_rows("train")), len(source.preference_rows("test"))) == (10, 4)


def test_hh_top_level_files(tmp_path):
    root = write_hh(tmp_path, {"train": make_hh_rows(6), "test": make_hh_rows(3, seed=1)}, subset=None)
    assert len(HhRlhf(path=str(root)).preference_rows("train")) == 6


def test_hh_on_bad_row_error_names_split_and_row(hh_dir):
    with pytest.raises(DataError, match=r"harmless-base\) split 'train' row 3: the transcripts share no"):
        HhRlhf(path=str(hh_dir), data_dir="harmless-base", on_bad_row="error").preference_rows("train")


def test_hh_missing_column(tmp_path):
    root = tmp_path / "hh"
    write_hh(root, {"train": [{"chosen": "\n\nHuman: a\n\nAssistant: b", "answer": "x"}]}, subset=None)
    with pytest.raises(DataError, match=r"split 'train': missing column 'rejected'"):
        HhRlhf(path=str(root)).preference_rows("train")


def test_hh_sft_rows_prompts_and_chosen_responses(hh_dir):
    source = HhRlhf(path=str(hh_dir), n_eval_prompts=5)
    train = source.preference_rows("train")
    pairs = list(dict.fromkeys((r["prompt"], r["chosen"]) for r in train))  # each (prompt, chosen) once
    assert source.sft_rows() == [{"prompt": p, "response": c} for p, c in pairs]
    assert HhRlhf(path=str(hh_dir), sft=False).sft_rows() is None
    prompts = source.prompts("test")
    test_prompts = {r["prompt"] for r in source.preference_rows("test")}
    assert len(prompts) == 5 == len(set(prompts)) and set(prompts) <= test_prompts
    assert prompts == HhRlhf(path=str(hh_dir), n_eval_prompts=5).prompts("test", None)  # seeded
    chosen = source.chosen_responses("test")
    assert set(chosen) == test_prompts
    assert source.corpus() == [r["prompt"] + r["chosen"] for r in train]


def test_hh_subsets_of_rows(hh_dir):
    a = HhRlhf(path=str(hh_dir), n_train=7, n_test=3, seed=1, on_bad_row="skip")
    assert len(a.raw_rows("train")) == 7 and len(a.preference_rows("test")) == 3


def test_hh_config(hh_dir, tmp_path):
    cfg = compose_config(tmp_path, ["data=hh_rlhf", f"data.source.path={hh_dir}", "data.on_bad_row=error",
                                    "data.source.data_dir=helpful-base"])
    source = instantiate(cfg.data.source)
    assert isinstance(source, HhRlhf) and source.on_bad_row == "error" and source.sft
    assert len(source.preference_rows("train")) == 10
    assert compose_config(tmp_path, ["data=hh_rlhf"]).data.on_bad_row == "skip"


# ---- chat rendering --------------------------------------------------------------------------------------------
CONVERSATION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Name a fruit."}]


def test_plain_template():
    assert render_plain(CONVERSATION) == "System: Be brief.\n\nUser: Hi\n\nAssistant: Hello!\n\nUser: Name a fruit." \
                                         "\n\nAssistant:"
    plain = ChatRenderer(None)
    assert not plain.uses_chat_template
    assert plain.response("Apple.") == " Apple." and plain.response(" Pear.") == " Pear." and plain.response("") == ""


def test_chat_template_rendering(chat_tokenizer, tokenizer):
    renderer = ChatRenderer(chat_tokenizer)
    assert renderer.uses_chat_template
    expected = chat_tokenizer.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True)
    assert renderer.prompt(CONVERSATION) == expected
    assert expected.endswith("<|user|>\nName a fruit.\n<|assistant|>\n")
    assert renderer.response("Apple.") == "Apple."
    assert not ChatRenderer(chat_tokenizer, "plain").uses_chat_template
    assert not ChatRenderer(tokenizer, "auto").uses_chat_template  # no chat_template: plain fallback
    with pytest.raises(ConfigError, match="has no chat_template"):
        ChatRenderer(tokenizer, "tokenizer")
    with pytest.raises(ConfigError, match="not one of"):
        ChatRenderer(None, "jinja")


def test_pair_from_messages_shapes():
    plain = ChatRenderer(None)
    user, good, bad = ({"role": "user", "content": "Q?"}, {"role": "assistant", "content": "Yes."},
                       {"role": "assistant", "content": "No."})
    expected = {"prompt": "User: Q?\n\nAssistant:", "chosen": " Yes.", "rejected": " No."}
    assert pair_from_messages("Q?", [user, good], [user, bad], plain) == expected      # ultrafeedback
    assert pair_from_messages("Q?", [good], [bad], plain) == expected                  # responses only
    assert pair_from_messages([user], "Yes.", "No.", plain) == expected               # prompt messages
    with pytest.raises(ValueError, match="does not end with an assistant message"):
        pair_from_messages("Q?", [user], [user, bad], plain)
    with pytest.raises(ValueError, match="differ before their final assistant message"):
        pair_from_messages("Q?", [user, good], [{"role": "user", "content": "Other?"}, bad], plain)
    with pytest.raises(ValueError, match="not a"):
        pair_from_messages("Q?", [{"role": "user"}, good], [user, bad], plain)


# ---- UltraFeedback ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def uf_dir(tmp_path_factory):
    train = make_ultrafeedback_rows(16, seed=0)
    multi = make_ultrafeedback_rows(1, seed=9)[0]
    turn = [{"content": "Earlier question", "role": "user"}, {"content": "Earlier answer", "role": "assistant"}]
    multi["chosen"] = turn + multi["chosen"]
    multi["rejected"] = turn + multi["rejected"]
    broken = make_ultrafeedback_rows(1, seed=10)[0]
    broken["chosen"] = broken["chosen"][:1]  # no assistant message
    train += [multi, broken]
    return write_ultrafeedback(tmp_path_factory.mktemp("uf"), {"train_prefs": train,
                                                               "test_prefs": make_ultrafeedback_rows(6, seed=1)})


def test_ultrafeedback_plain_template_without_tokenizer(uf_dir, caplog):
    with caplog.at_level(logging.WARNING):
        source = UltraFeedback(path=str(uf_dir))
        train = source.preference_rows("train")
    assert len(train) == 17 and "skipped 1 bad rows of 18" in caplog.text
    row = train[0]
    assert row["prompt"].startswith("User: ") and row["prompt"].endswith("\n\nAssistant:")
    assert row["chosen"].startswith(" ") and {"prompt_id", "score_chosen", "score_rejected"} <= set(row)
    assert row["score_chosen"] > row["score_rejected"]
    multi = train[-1]
    assert multi["prompt"].startswith("User: Earlier question\n\nAssistant: Earlier answer\n\nUser: ")
    assert source.sft_rows() is None
    assert UltraFeedback(path=str(uf_dir), sft=True).sft_rows()[0] == {"prompt": row["prompt"],
                                                                       "response": row["chosen"]}
    assert len(source.preference_rows("test")) == 6


def test_ultrafeedback_chat_template(uf_dir, chat_tokenizer):
    source = UltraFeedback(path=str(uf_dir))
    corpus = source.corpus()
    assert corpus[0].startswith("User: ")  # the embedded tokenizer is trained on plain text
    source.bind_tokenizer(chat_tokenizer)
    row = source.preference_rows("test")[0]
    raw = source.raw_rows("test")[0]
    assert row["prompt"] == chat_tokenizer.apply_chat_template(raw["chosen"][:-1], tokenize=False,
                                                               add_generation_prompt=True)
    assert row["chosen"] == raw["chosen"][-1]["content"] and row["rejected"] == raw["rejected"][-1]["content"]
    assert all(p.startswith("<|user|>\n") for p in source.prompts("test", chat_tokenizer))
    forced = UltraFeedback(path=str(uf_dir), template="plain")
    forced.bind_tokenizer(chat_tokenizer)
    assert forced.preference_rows("test")[0]["prompt"].startswith("User: ")


def test_ultrafeedback_prompts_bind_the_tokenizer_when_unbound(uf_dir, chat_tokenizer):
    source = UltraFeedback(path=str(uf_dir), n_eval_prompts=4)
    prompts = source.prompts("test", chat_tokenizer)
    assert len(prompts) == 4 and all(p.startswith("<|user|>") for p in prompts)


def test_ultrafeedback_error_names_split_and_row(uf_dir):
    with pytest.raises(DataError, match=r"split 'train_prefs' row 17: 'chosen' does not end with an assistant"):
        UltraFeedback(path=str(uf_dir), on_bad_row="error").preference_rows("train")


def test_ultrafeedback_config(uf_dir, tmp_path):
    cfg = compose_config(tmp_path, ["data=ultrafeedback", f"data.source.path={uf_dir}"])
    source = instantiate(cfg.data.source)
    assert isinstance(source, UltraFeedback) and source.splits == {"train": "train_prefs", "test": "test_prefs"}
    assert len(source.preference_rows("validation")) == 6


# ---- preference_files: messages, JSON, directories -------------------------------------------------------------
def message_rows(n):
    rows = make_ultrafeedback_rows(n)
    return [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows]


def test_preference_files_message_lists_plain_and_chat(tmp_path, chat_tokenizer):
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in message_rows(10)))
    source = PreferenceFiles(str(path), val_fraction=0.2)
    rows = source.preference_rows("train") + source.preference_rows("validation")
    assert len(rows) == 10 and all(r["prompt"].startswith("User: ") and r["chosen"][0] == " " for r in rows)
    val_prompts = {r["prompt"] for r in source.preference_rows("validation")}
    source.bind_tokenizer(chat_tokenizer)
    chat_val = source.preference_rows("validation")
    assert all(r["prompt"].startswith("<|user|>") for r in chat_val)
    assert {p.replace("<|user|>\n", "User: ").replace("\n<|assistant|>\n", "\n\nAssistant:")
            for p in (r["prompt"] for r in chat_val)} == val_prompts  # the same held-out prompts


def test_preference_files_prompt_messages_with_string_responses(tmp_path):
    rows = [{"prompt": [{"role": "user", "content": f"Q{i}?"}], "chosen": "Yes.", "rejected": "No."}
            for i in range(4)]
    (tmp_path / "p.json").write_text(json.dumps(rows))
    out = PreferenceFiles(str(tmp_path / "p.json"), val_fraction=0.0).preference_rows("train")
    assert out[0]["prompt"] == "User: Q0?\n\nAssistant:" and out[0]["chosen"] == " Yes."


def test_preference_files_json_array_and_object(tmp_path):
    rows = [{"prompt": f"P{i}", "chosen": " good", "rejected": " bad"} for i in range(6)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "b.json").write_text(json.dumps(rows))
    (tmp_path / "c.json").write_text(json.dumps({"rows": rows}))
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet")
    loaded = [PreferenceFiles(str(tmp_path / f), val_fraction=0.0).preference_rows("train")
              for f in ("a.jsonl", "b.json", "c.json", "d.parquet")]
    assert loaded[0] == rows and all(x == rows for x in loaded)


def test_preference_files_dataset_directory_with_splits(uf_dir):
    source = PreferenceFiles(str(uf_dir), validation=str(uf_dir), train_split="train_prefs",
                             validation_split="test_prefs", on_bad_row="skip", sft=True)
    assert len(source.preference_rows("train")) == 17 and len(source.preference_rows("validation")) == 6
    assert len(source.sft_rows()) == 17
    assert PreferenceFiles(str(uf_dir), validation=str(uf_dir)).splits["validation"] == "test"
    with pytest.raises(DataError, match=r"split 'train_prefs' row 17"):
        PreferenceFiles(str(uf_dir), train_split="train_prefs").preference_rows("train")
    chosen = source.chosen_responses("validation")
    assert set(chosen) == set(source.prompts("validation"))


def test_preference_files_bad_message_row(tmp_path):
    rows = message_rows(3)
    rows[1]["rejected"] = [{"role": "user", "content": "something else"}, rows[1]["rejected"][1]]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"m.jsonl row 1: 'chosen' and 'rejected' differ"):
        PreferenceFiles(str(tmp_path / "m.jsonl")).preference_rows("train")
    assert len(PreferenceFiles(str(tmp_path / "m.jsonl"), on_bad_row="skip", val_fraction=0.0)
               .preference_rows("train")) == 2


# ---- end to end: SFT stage (imdb, hh_rlhf) -> [pairs] -> DPO -> eval on each stand-in ------------------------------
SMALL_RUN = ["sft.max_epochs=1", "sft.batch_size=16", "sft.max_length=64", "trainer.max_steps=10",
             "data.batch_size=4", "data.eval_batch_size=16", "data.max_length=64", "data.max_prompt_length=48",
             "eval.n_prompts=8", "eval.max_new_tokens=8", "eval.batch_size=8", "method.optim.lr=3e-3",
             "trainer.enable_progress_bar=false", "logger=none"]




def read_samples(out):
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_dpo_end_to_end_on_imdb_with_classifier_reward(tmp_path, single_thread):
    from alignlab.run import run
    from fixtures_hub import make_tiny_classifier

    data = write_imdb(tmp_path / "imdb", n_train=48, n_test=16)
    classifier = make_tiny_classifier(tmp_path / "clf")
    cfg = compose_config(tmp_path / "run", [
        "data=imdb", f"data.source.path={data}", "data.source.n_pair_prompts=16", "data.source.n_eval_prompts=8",
        "data.pairs.max_new_tokens=8", "data.pairs.batch_size=16", "data.val_fraction=0.25",
        "reward=hf_classifier", f"reward.model_name={classifier}", "reward.device=cpu", "reward.max_length=64",
        *SMALL_RUN])
    results = run(cfg)
    m = results["metrics"]
    assert results["status"] == "ok" and 0.0 <= m["eval/reward"] <= 1.0 and "eval/pref_accuracy" in m
    samples = read_samples(tmp_path / "run")
    assert len(samples) == 8 and all(0.0 <= s["reward"] <= 1.0 for s in samples)
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(results["policy_dir"])
    for s in samples:
        assert 2 <= len(tokenizer(s["prompt"], add_special_tokens=False)["input_ids"]) <= 8
        assert "<br" not in s["prompt"]


@pytest.mark.slow
def test_dpo_end_to_end_on_hh_rlhf(tmp_path, single_thread):
    from alignlab.eval.winrate import winrate_vs_chosen
    from alignlab.rewards import VaderReward
    from alignlab.run import run

    data = write_hh(tmp_path / "hh", {"train": make_hh_rows(48, seed=0) + MALFORMED,
                                      "test": make_hh_rows(12, seed=1)})
    cfg = compose_config(tmp_path / "run", ["data=hh_rlhf", f"data.source.path={data}", *SMALL_RUN])
    results = run(cfg)
    m = results["metrics"]
    assert results["status"] == "ok" and "eval/pref_accuracy" in m and m["eval/entropy"] > 0
    assert results["stages"]["start"].startswith("sft-")  # SFT on the chosen responses first
    samples = read_samples(tmp_path / "run")
    source = instantiate(cfg.data.source)
    test_prompts = set(source.prompts("test"))
    assert len(samples) == 8 and all(s["prompt"] in test_prompts for s in samples)
    win = winrate_vs_chosen(VaderReward(), samples, source.chosen_responses("test"))
    assert win["eval/winrate_n"] == 8 and 0.0 <= win["eval/winrate_vs_chosen"] <= 1.0


@pytest.mark.slow
def test_dpo_end_to_end_on_ultrafeedback(tmp_path, single_thread):
    from alignlab.run import run

    data = write_ultrafeedback(tmp_path / "uf", {"train_prefs": make_ultrafeedback_rows(48, seed=0),
                                                 "test_prefs": make_ultrafeedback_rows(12, seed=1)})
    cfg = compose_config(tmp_path / "run", ["data=ultrafeedback", f"data.source.path={data}", *SMALL_RUN])
    results = run(cfg)
    m = results["metrics"]
    assert results["status"] == "ok" and "eval/pref_accuracy" in m
    assert not results["stages"]["start"].startswith("sft-")  # no SFT stage by default
    samples = read_samples(tmp_path / "run")
    assert len(samples) == 8 and all(s["prompt"].startswith("User: ") for s in samples)  # plain template
