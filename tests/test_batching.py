"""Batches without wasted compute: packed rows (several sequences, no padding inside), length-grouped padded
batches, and data.packing=auto choosing whichever computes fewer tokens."""
import copy

import torch

from alignlab.data.module import AlignmentDataModule, ResumableDataLoader, computed_tokens
from alignlab.data.tokenize import IGNORE_INDEX, PreferenceCollator, pack_sequences
from alignlab.forward import packs_correctly
from alignlab.methods.dpo import DPO
from alignlab.models import build_random, freeze

ARCH = {"model_type": "gpt_neox", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 64, "vocab_size": 50, "max_position_embeddings": 64}


class IdTokenizer:
    pad_token_id = 0
    eos_token_id = 1


def test_pack_sequences_lays_rows_out_first_fit_decreasing():
    prompts, responses = [[5, 6], [7], [8, 9, 10]], [[11, 12, 13], [14], [15]]  # lengths 5, 2, 4
    batch = pack_sequences(prompts, responses, pad_token_id=0, width=7)
    # decreasing: 5 opens row 0, 4 does not fit there (9 > 7) and opens row 1, 2 fits row 0 (7)
    assert batch["input_ids"].tolist() == [[5, 6, 11, 12, 13, 7, 14], [8, 9, 10, 15, 0, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0, 1], [0, 1, 2, 3, 0, 1, 2]]
    assert batch["sequence_index"].tolist() == [[0, 0, 0, 0, 0, 1, 1], [2, 2, 2, 2, -1, -1, -1]]
    i = IGNORE_INDEX
    # prompt tokens and each sequence's first token are never predicted, as in a padded batch
    assert batch["labels"].tolist() == [[i, i, 11, 12, 13, i, 14], [i, i, i, 15, i, i, i]]


def test_a_dpo_step_on_packed_rows_equals_the_padded_step():
    policy = build_random(ARCH, None, "float32", seed=0)
    assert packs_correctly(policy)
    module = DPO(policy, freeze(copy.deepcopy(policy)), beta=0.1)
    g = torch.Generator().manual_seed(0)
    rows = [{"prompt_ids": torch.randint(2, 50, (p,), generator=g).tolist(),
             "chosen_ids": torch.randint(2, 50, (c,), generator=g).tolist(),
             "rejected_ids": torch.randint(2, 50, (r,), generator=g).tolist()}
            for p, c, r in [(3, 4, 2), (2, 6, 5), (5, 1, 3)]]
    results = {}
    for name, width in (("padded", None), ("packed", 24)):
        batch = PreferenceCollator(0, pack_width=width)(rows)
        if width:
            assert batch["input_ids"].shape[0] < 6  # several sequences share a row
        module.zero_grad()
        loss, _ = module.loss_and_metrics(batch)
        loss.backward()
        results[name] = (loss.detach(), [p.grad.clone() for p in module.policy.parameters()])
    torch.testing.assert_close(results["packed"][0], results["padded"][0], rtol=1e-5, atol=1e-6)
    for a, b in zip(results["packed"][1], results["padded"][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def pairs(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"prompt": "p", "chosen": "c", "rejected": "r", "prompt_ids": [2] * p, "chosen_ids": [3] * c,
             "rejected_ids": [4] * max(1, c - int(torch.randint(0, 2, (1,), generator=g)))} for p, c in lengths]


def test_length_grouping_pads_less_and_keeps_the_seeded_order():
    g = torch.Generator().manual_seed(1)
    rows = pairs([(int(torch.randint(2, 16, (1,), generator=g)), int(torch.randint(2, 48, (1,), generator=g)))
                  for _ in range(400)])
    collate = PreferenceCollator(0)
    random_order = computed_tokens(rows, collate, batch_size=8, group=0, seed=0)
    grouped = computed_tokens(rows, collate, batch_size=8, group=10, seed=0)
    assert grouped["real"] == random_order["real"]  # the same tokens, less padding around them
    assert grouped["padding_share"] < random_order["padding_share"] / 2
    order = [b["input_ids"].shape for b in ResumableDataLoader(rows, batch_size=8, seed=0, group=10,
                                                               collate_fn=collate)]
    again = [b["input_ids"].shape for b in ResumableDataLoader(rows, batch_size=8, seed=0, group=10,
                                                               collate_fn=collate)]
    assert order == again


def datamodule(rows, max_length):
    return AlignmentDataModule(IdTokenizer(), rows, [], "pairs", batch_size=8, eval_batch_size=8,
                               max_length=max_length, max_prompt_length=16, group=10, pack="auto")


def test_packing_auto_packs_only_where_it_computes_fewer_tokens():
    # chosen and rejected lengths independent and spread (as in HH-RLHF): a padded pair is as long as its longer
    # side whatever the grouping, while packed rows of 128 hold several sequences each
    g = torch.Generator().manual_seed(0)
    spread = [{"prompt": "p", "chosen": "c", "rejected": "r", "prompt_ids": [2] * 4,
               "chosen_ids": [3] * int(torch.randint(2, 60, (1,), generator=g)),
               "rejected_ids": [4] * int(torch.randint(2, 60, (1,), generator=g))} for _ in range(200)]
    mixed = datamodule(spread, max_length=128)
    assert mixed.collate.pack_width == 128 and mixed.group == 10  # the same grouped rows, packed
    # sequences over half of max_length: one to a row, so a packed batch computes what the padded one does
    long = datamodule(pairs([(8, 26 + k % 30) for k in range(200)]), max_length=64)
    assert long.collate.pack_width is None and long.group == 10
