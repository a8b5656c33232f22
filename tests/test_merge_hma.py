"""Heterogeneous Model Averaging (METHODS.md section 4): blocks, ratios (given and learned), part-wise merging."""
import math

import pytest
import torch
from safetensors.torch import load_file
from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

from alignlab.errors import ConfigError
from alignlab.merge import average, block_of, block_ranges, hma_ratios, learn_block_ratios, merge_checkpoints
from alignlab.merge.average import merge_models, merge_state_dicts
from alignlab.merge.blocks import block_ratio_function, check_block_ratios, layer_block
from alignlab.merge.hma import project_ratios, sample_high_reward_rows, select_high_reward_rows

pytestmark = pytest.mark.usefixtures("single_thread")




def neox(seed: int, layers: int = 4, vocab: int = 96) -> GPTNeoXForCausalLM:
    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(GPTNeoXConfig(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=128, hidden_dropout=0.0, attention_dropout=0.0, tie_word_embeddings=False,
        pad_token_id=0, eos_token_id=0, bos_token_id=0))


def gpt2(seed: int, layers: int = 3, vocab: int = 96) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=32, n_layer=layers, n_head=4, n_positions=128,
                                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=0,
                                      eos_token_id=0, bos_token_id=0))


# ---- blocks --------------------------------------------------------------------------------------------------------
def test_26_layers_in_3_blocks_as_in_methods():
    assert block_ranges(26, 3) == [(1, 8), (9, 17), (18, 26)]
    blocks = [layer_block(i, 26, 3) for i in range(26)]
    assert blocks == [0] * 8 + [1] * 9 + [2] * 9
    assert block_of("gpt_neox.layers.7.mlp.dense_h_to_4h.weight", 26, 3) == 0
    assert block_of("gpt_neox.layers.8.attention.dense.bias", 26, 3) == 1
    assert block_of("gpt_neox.layers.17.input_layernorm.weight", 26, 3) == 2


@pytest.mark.parametrize("layers,k", [(4, 3), (12, 5), (7, 7), (30, 4), (24, 1), (26, 3), (36, 5)])
def test_blocks_are_contiguous_and_as_even_as_possible(layers, k):
    ranges = block_ranges(layers, k)
    sizes = [b - a + 1 for a, b in ranges]
    assert ranges[0][0] == 1 and ranges[-1][1] == layers and sum(sizes) == layers
    assert all(ranges[j + 1][0] == ranges[j][1] + 1 for j in range(k - 1))
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes)  # larger blocks last
    assert [layer_block(i, layers, k) for i in range(layers)] == [j for j, n in enumerate(sizes) for _ in range(n)]


def test_block_mapping_on_a_tiny_gpt_neox():
    model = neox(0, layers=4)  # K=3: layers 1 | 2 | 3-4
    mapping = {k: block_of(k, 4, 3) for k in model.state_dict()}
    assert mapping["gpt_neox.embed_in.weight"] == 0
    assert mapping["gpt_neox.final_layer_norm.weight"] is None and mapping["lm_head.weight"] is None
    assert block_of("embed_out.weight", 4, 3) is None  # the name in Pythia / saved checkpoints
    for key, block in mapping.items():
        if ".layers." in key:
            assert block == [0, 1, 2, 2][int(key.split(".")[2])], key


def test_block_mapping_on_a_tiny_gpt2_and_llama_names():
    model = gpt2(0, layers=3)
    mapping = {k: block_of(k, 3, 3) for k in model.state_dict()}
    assert mapping["transformer.wte.weight"] == mapping["transformer.wpe.weight"] == 0
    assert mapping["transformer.ln_f.bias"] is None and mapping["lm_head.weight"] is None
    assert [mapping[f"transformer.h.{i}.attn.c_attn.weight"] for i in range(3)] == [0, 1, 2]
    assert block_of("model.layers.5.self_attn.q_proj.weight", 6, 2) == 1
    assert block_of("model.embed_tokens.weight", 6, 2) == 0
    assert block_of("model.norm.weight", 6, 2) is None
    assert block_of("policy.gpt_neox.layers.0.attention.dense.weight", 4, 2) == 0  # a wrapper's prefix is fine


def test_unmappable_keys_and_bad_block_counts_are_explained():
    with pytest.raises(ValueError, match=r"'encoder\.block\.0\.layer\.weight'.*GPTNeoX.*GPT-2.*Llama"):
        block_of("encoder.block.0.layer.weight", 4, 2)
    with pytest.raises(ValueError, match="layer 9 but the model has 4 layers"):
        block_of("gpt_neox.layers.9.attention.dense.weight", 4, 2)
    with pytest.raises(ConfigError, match=r"merge\.num_blocks=5 exceeds"):
        block_of("gpt_neox.layers.0.attention.dense.weight", 4, 5)


# ---- ratios --------------------------------------------------------------------------------------------------------
def test_hma_ratios_formula_and_mean():
    s = torch.tensor([0.3, -1.0, 2.0])
    sig = torch.sigmoid(s) + 0.2
    raw = 0.4 * 3 * sig / sig.sum()
    assert torch.allclose(hma_ratios(s, 0.4, 0.2, bound=False), raw)
    assert torch.allclose(hma_ratios(s, 0.4, 0.2), raw)  # already in [0, 1]: the projection changes nothing
    assert math.isclose(float(raw.mean()), 0.4, rel_tol=1e-6)
    assert torch.allclose(hma_ratios(torch.zeros(4), 0.7, 0.2), torch.full((4,), 0.7))


def test_ratios_above_one_are_projected_keeping_the_mean():
    s = torch.tensor([6.0, -6.0, -6.0])
    raw = hma_ratios(s, 0.9, 0.2, bound=False)
    assert raw.max() > 1 and math.isclose(float(raw.mean()), 0.9, rel_tol=1e-6)  # METHODS' formula extrapolates
    bounded = hma_ratios(s, 0.9, 0.2)
    assert bool(((bounded >= 0) & (bounded <= 1)).all())
    assert math.isclose(float(bounded.mean()), 0.9, abs_tol=1e-6)
    assert bounded[0] == 1.0 and math.isclose(float(bounded[1]), float(bounded[2]), abs_tol=1e-7)
    assert torch.equal(hma_ratios(s, 1.0, 0.2), torch.ones(3))  # alpha = 1 is the aligned model, exactly
    assert torch.equal(hma_ratios(s, 0.0, 0.2), torch.zeros(3))
    # the projection is the Euclidean one, clamp(r - tau, 0, 1) with the mean kept: hand cases
    assert torch.allclose(project_ratios(torch.tensor([1.6, 0.7, 0.4]), 0.9), torch.tensor([1.0, 1.0, 0.7]))
    assert torch.allclose(project_ratios(torch.tensor([1.9, 0.1, 0.1, 0.3]), 0.6), torch.tensor([1.0, 0.4, 0.4, 0.6]))


def test_projection_passes_gradients_to_the_free_blocks():
    s = torch.tensor([6.0, -1.0, -2.0], requires_grad=True)
    r = hma_ratios(s, 0.9, 0.2)
    (r * torch.tensor([0.0, 1.0, -1.0])).sum().backward()
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_given_ratios_are_validated():
    assert check_block_ratios([0.2, 0.4, 0.6], 3, alpha=0.4) == [0.2, 0.4, 0.6]
    with pytest.raises(ConfigError, match=r"merge\.block_ratios has 2 ratios but merge\.num_blocks=3"):
        check_block_ratios([0.2, 0.4], 3)
    with pytest.raises(ConfigError, match=r"merge\.block_ratios\[1\]=1\.2"):
        check_block_ratios([0.2, 1.2, 0.5], 3)
    with pytest.raises(ConfigError, match=r"merge\.block_ratios=.*mean 0\.4.*merge\.alpha=0\.5"):
        check_block_ratios([0.2, 0.4, 0.6], 3, alpha=0.5)
    with pytest.raises(ConfigError, match=r"merge\.block_ratios"):
        check_block_ratios(["a", 0.3], 2)


def test_given_ratios_reproduce_part_wise_averaging(tmp_path):
    """Each block's tensors equal plain averaging with that block's ratio; embeddings block 1's; head the mean."""
    pre_model, aligned_model = neox(0), neox(1)
    pre, aligned = pre_model.state_dict(), aligned_model.state_dict()
    ratios = [0.2, 0.5, 0.8]
    merged = merge_state_dicts(pre, aligned, block_ratio_function(ratios, 4))
    per_ratio = {r: average(pre, aligned, r) for r in (0.2, 0.5, 0.8)}
    expect = {"gpt_neox.embed_in.weight": 0.2, "gpt_neox.layers.0.attention.dense.weight": 0.2,
              "gpt_neox.layers.1.mlp.dense_4h_to_h.bias": 0.5, "gpt_neox.layers.2.input_layernorm.weight": 0.8,
              "gpt_neox.layers.3.attention.query_key_value.weight": 0.8, "gpt_neox.final_layer_norm.bias": 0.5,
              "lm_head.weight": 0.5}
    for key, r in expect.items():
        assert torch.equal(merged[key], per_ratio[r][key]), key
    for key in aligned:
        block = block_of(key, 4, 3)
        r = 0.5 if block is None else ratios[block]
        assert torch.equal(merged[key], per_ratio[r][key]), key

    # the streamed checkpoint merge and the in-memory model merge give the very same tensors
    pre_model.save_pretrained(tmp_path / "pre")
    aligned_model.save_pretrained(tmp_path / "al")
    out = merge_checkpoints(tmp_path / "pre", tmp_path / "al", tmp_path / "hma", block_ratios=ratios, alpha=0.5)
    got = {("lm_head.weight" if k == "embed_out.weight" else k): v
           for k, v in load_file(out / "model.safetensors").items()}
    assert all(torch.equal(got[k], merged[k]) for k in merged)
    in_memory = merge_models(pre_model, aligned_model, block_ratios=ratios).state_dict()
    assert all(torch.equal(in_memory[k], merged[k]) for k in merged)
    with pytest.raises(ConfigError, match=r"merge\.alpha=0\.3"):
        merge_checkpoints(tmp_path / "pre", tmp_path / "al", tmp_path / "x", block_ratios=ratios, alpha=0.3)


# ---- learning ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer():
    from alignlab.data.reviews import generate_reviews
    from alignlab.tokenizer import train_bpe_tokenizer

    return train_bpe_tokenizer([r["text"] for r in generate_reviews(200, 0)], 300)


@pytest.fixture(scope="module")
def rows():
    from alignlab.data.reviews import generate_reviews

    texts = [r["text"] for r in generate_reviews(16, 5)]
    return [{"prompt": t[:15], "response": t[15:]} for t in texts]


def mean_nll(model, tokenizer, rows) -> float:
    from alignlab.data.tokenize import TruncationStats, collate_sequences, tokenize_text
    from alignlab.losses import sequence_logps, shift_for_next_token

    ex = [tokenize_text(tokenizer, r, 512, 256, TruncationStats()) for r in rows]
    batch = collate_sequences([e["prompt_ids"] for e in ex], [e["response_ids"] for e in ex], tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        lp, n = sequence_logps(*shift_for_next_token(logits, batch["labels"]))
    return float(-lp.sum() / n.sum())


def test_learned_ratios_keep_the_mean_and_improve_the_objective(tokenizer, rows):
    pre_model, aligned_model = neox(0, vocab=len(tokenizer)), neox(1, vocab=len(tokenizer))
    pre_before = {k: v.clone() for k, v in pre_model.state_dict().items()}
    history = []
    ratios = learn_block_ratios(pre_model, aligned_model, tokenizer, rows, alpha=0.4, num_blocks=3, eps=0.2,
                                lr=0.3, batch_size=8, epochs=8, history=history)
    assert len(ratios) == 3 and len(history) == 16
    assert math.isclose(sum(ratios) / 3, 0.4, abs_tol=1e-6)  # pinned after training
    assert max(ratios) - min(ratios) > 0.02  # they moved apart from the start (all 0.4)
    assert all(math.isclose(sum(h["ratios"]) / 3, 0.4, abs_tol=1e-6) for h in history)
    # the frozen weights were not touched, and the learned merge fits the data better than uniform averaging
    assert all(torch.equal(v, pre_before[k]) for k, v in pre_model.state_dict().items())
    assert all(p.requires_grad for p in aligned_model.parameters())  # flags restored
    uniform = mean_nll(merge_models(pre_model, neox(1, vocab=len(tokenizer)), 0.4), tokenizer, rows)
    learned = mean_nll(merge_models(pre_model, neox(1, vocab=len(tokenizer)), block_ratios=ratios), tokenizer, rows)
    assert learned < uniform
    assert history[0]["ratios"] == pytest.approx([0.4] * 3, abs=1e-6)  # s starts at 0: uniform averaging


def test_learned_ratios_at_alpha_one_are_the_aligned_model(tokenizer, rows):
    pre_model, aligned_model = gpt2(0, vocab=len(tokenizer)), gpt2(1, vocab=len(tokenizer))  # tied head too
    ratios = learn_block_ratios(pre_model, aligned_model, tokenizer, rows[:4], alpha=1.0, num_blocks=3, lr=0.5,
                                batch_size=4, epochs=2, max_length=100, max_prompt_length=50)
    assert ratios == [1.0, 1.0, 1.0]
    with pytest.raises(ConfigError, match=r"merge\.eps"):
        learn_block_ratios(pre_model, aligned_model, tokenizer, rows, alpha=0.5, eps=0.95)


def test_high_reward_rows_are_the_best_samples(tokenizer):
    samples = [{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(6)]
    rewards = [0.1, 0.9, 0.5, 0.7, 0.2, 0.8]
    assert select_high_reward_rows(samples, rewards, top=3) == [
        {"prompt": "p1", "response": "c1"}, {"prompt": "p5", "response": "c5"}, {"prompt": "p3", "response": "c3"}]
    kept = select_high_reward_rows(samples, rewards, top=3, n_keep=2, seed=1)
    assert len(kept) == 2 and {r["prompt"] for r in kept} <= {"p1", "p5", "p3"}

    class LengthReward:  # longer completions score higher
        def score(self, prompts, responses):
            return [float(len(r)) for r in responses]

    policy = neox(0, vocab=len(tokenizer))
    rows = sample_high_reward_rows(policy, tokenizer, LengthReward(), ["The film", "A movie"], top=2,
                                   max_new_tokens=6, num_return_sequences=3)
    assert len(rows) == 2 and all(set(r) == {"prompt", "response", "prompt_ids", "response_ids"} for r in rows)
    # the sampled token ids travel with the text: a response is learned exactly as sampled (no EOS appended)
    assert all(r["response"] == tokenizer.decode(r["response_ids"], skip_special_tokens=True) for r in rows)
