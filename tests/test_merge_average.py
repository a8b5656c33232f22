"""Weight averaging (METHODS.md section 4): theta = alpha * aligned + (1 - alpha) * pre, alpha = share of ALIGNED.

State dicts, in-memory models and streamed safetensors checkpoints (single file and sharded) must agree exactly;
the endpoints must return the inputs bit for bit; bad input must name `merge.alpha` or the offending tensor.
"""
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import (AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, GPTNeoXConfig,
                          GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM)

from alignlab.errors import ConfigError
from alignlab.merge import (MergeMismatchError, average, linear_keys, linear_keys_by_rule, merge_checkpoints,
                            merge_models)

pytestmark = pytest.mark.usefixtures("single_thread")




def neox(seed: int, layers: int = 3, intermediate: int = 64) -> GPTNeoXForCausalLM:
    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(GPTNeoXConfig(
        vocab_size=96, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
        intermediate_size=intermediate, max_position_embeddings=64, hidden_dropout=0.0, attention_dropout=0.0,
        tie_word_embeddings=False, pad_token_id=0, eos_token_id=0, bos_token_id=0))


def gpt2(seed: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=0,
                                      eos_token_id=0, bos_token_id=0))


def llama(seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
                                        pad_token_id=0, eos_token_id=0, bos_token_id=0))


def cloned(sd):
    return {k: v.detach().clone() for k, v in sd.items()}


def from_file(path):
    """A saved safetensors file with in-memory names (transformers 5 writes GPTNeoX's `lm_head` as `embed_out`)."""
    return {("lm_head.weight" if k == "embed_out.weight" else k): v for k, v in load_file(path).items()}


def tokenizer_dir(path):
    from alignlab.tokenizer import train_bpe_tokenizer

    train_bpe_tokenizer(["the weather is fine", "a good film", "the plot was dull"] * 5, 260, str(path))
    return path


# ---- state dicts ---------------------------------------------------------------------------------------------------
def test_endpoints_return_the_inputs_bit_exactly():
    pre, aligned = neox(0).state_dict(), neox(1).state_dict()
    at0, at1 = average(pre, aligned, 0.0), average(pre, aligned, 1)
    assert list(at0) == list(aligned) == list(at1)
    for key in aligned:
        assert at0[key] is pre[key] and at1[key] is aligned[key], key  # no arithmetic at all
    # scope=linear at alpha 0: linear tensors are the pre ones, the rest the aligned ones
    lin = average(pre, aligned, 0.0, scope="linear")
    keys = linear_keys_by_rule({k: v.shape for k, v in aligned.items()})
    for key in aligned:
        assert lin[key] is (pre[key] if key in keys else aligned[key]), key


def test_in_between_is_the_convex_combination_and_inputs_are_untouched():
    pre, aligned = neox(0).state_dict(), neox(1).state_dict()
    before_pre, before_aligned = cloned(pre), cloned(aligned)
    for alpha in (0.25, 0.5, 0.9):
        merged = average(pre, aligned, alpha)
        for key in aligned:
            want = alpha * aligned[key].double() + (1 - alpha) * pre[key].double()
            assert merged[key].dtype == aligned[key].dtype
            torch.testing.assert_close(merged[key].double(), want, rtol=0, atol=1e-6)
    for key in aligned:  # nothing was written in place
        assert torch.equal(pre[key], before_pre[key]) and torch.equal(aligned[key], before_aligned[key])


def test_half_precision_is_merged_in_float32_and_cast_back():
    pre = {"w": torch.tensor([1.0, 2.0, 3.0], dtype=torch.bfloat16)}
    aligned = {"w": torch.tensor([3.0, 2.0, 5.0], dtype=torch.bfloat16)}
    merged = average(pre, aligned, 0.5)
    assert merged["w"].dtype == torch.bfloat16 and merged["w"].tolist() == [2.0, 2.0, 4.0]


@pytest.mark.parametrize("build", [neox, gpt2, llama], ids=["gpt_neox", "gpt2", "llama"])
def test_linear_rule_agrees_with_module_types(build):
    model = build(0)
    by_type = linear_keys(model)
    by_rule = linear_keys_by_rule({k: v.shape for k, v in model.state_dict().items()})
    tied = {"lm_head.weight"} if build is gpt2 else set()  # GPT-2's head is the token embedding
    assert by_rule - tied == by_type
    assert by_type and all(k.endswith((".weight", ".bias")) for k in by_type)
    assert not any("embed" in k or ".wte." in k or ".wpe." in k or "norm" in k or ".ln_" in k for k in by_type)


def test_scope_linear_keeps_non_linear_tensors_at_the_aligned_values():
    pre_model, aligned_model = neox(0), neox(1)
    pre, aligned = pre_model.state_dict(), aligned_model.state_dict()
    keys = linear_keys(aligned_model)
    merged = average(pre, aligned, 0.4, scope="linear", linear_keys=keys)
    non_linear = [k for k in aligned if k not in keys]
    assert {"gpt_neox.embed_in.weight", "gpt_neox.final_layer_norm.weight",
            "gpt_neox.layers.0.input_layernorm.bias"} <= set(non_linear)
    assert {"lm_head.weight", "gpt_neox.layers.0.attention.query_key_value.bias"} <= keys
    for key in aligned:
        if key in keys:
            torch.testing.assert_close(merged[key], 0.4 * aligned[key] + 0.6 * pre[key])
        else:
            assert torch.equal(merged[key], aligned[key]), key
    # the default (name/shape rule) gives the same merge on GPTNeoX
    by_rule = average(pre, aligned, 0.4, scope="linear")
    assert all(torch.equal(by_rule[k], merged[k]) for k in aligned)


def test_tied_gpt2_head_is_merged_once_consistently():
    pre_model, aligned_model = gpt2(0), gpt2(1)
    pre, aligned = pre_model.state_dict(), aligned_model.state_dict()
    for scope in ("all", "linear"):
        merged = average(pre, aligned, 0.3, scope=scope, linear_keys=linear_keys(aligned_model))
        assert merged["lm_head.weight"] is merged["transformer.wte.weight"]
        expected = aligned["transformer.wte.weight"] if scope == "linear" else \
            0.3 * aligned["transformer.wte.weight"] + 0.7 * pre["transformer.wte.weight"]
        torch.testing.assert_close(merged["transformer.wte.weight"], expected)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan"), float("inf"), "0.5", None, True])
def test_alpha_outside_unit_interval_is_rejected(alpha):
    sd = neox(0).state_dict()
    with pytest.raises(ConfigError, match=r"merge\.alpha") as info:
        average(sd, sd, alpha)
    assert isinstance(info.value, ValueError)


def test_unknown_scope_is_rejected():
    sd = {"w": torch.zeros(2, 2)}
    with pytest.raises(ConfigError, match=r"merge\.scope"):
        average(sd, sd, 0.5, scope="attention")


def test_mismatched_shapes_name_the_first_offending_tensor():
    pre, aligned = neox(0, intermediate=64).state_dict(), neox(1, intermediate=48).state_dict()
    with pytest.raises(MergeMismatchError) as info:
        average(pre, aligned, 0.5)
    msg = str(info.value)
    assert "'gpt_neox.layers.0.mlp.dense_h_to_4h.weight'" in msg and "[64, 32]" in msg and "[48, 32]" in msg
    assert isinstance(info.value, ValueError)


def test_missing_keys_name_the_tensor_and_the_side():
    pre, aligned = neox(0).state_dict(), neox(1).state_dict()
    del pre["gpt_neox.layers.1.attention.dense.bias"]
    with pytest.raises(MergeMismatchError, match=r"'gpt_neox\.layers\.1\.attention\.dense\.bias'.*not in the pre"):
        average(pre, aligned, 0.5)
    pre2, aligned2 = neox(0, layers=4).state_dict(), neox(1, layers=3).state_dict()
    with pytest.raises(MergeMismatchError, match=r"'gpt_neox\.layers\.3\..*in the pre model but not in the aligned"):
        average(pre2, aligned2, 0.5)


def test_merge_models_in_memory_equals_average():
    pre_model, aligned_model = neox(0), neox(1)
    want = average(cloned(pre_model.state_dict()), cloned(aligned_model.state_dict()), 0.7)
    merged = merge_models(pre_model, aligned_model, 0.7)
    assert merged is aligned_model
    assert all(torch.equal(merged.state_dict()[k], want[k]) for k in want)


# ---- streamed checkpoints ------------------------------------------------------------------------------------------
def save(model, path, tokenizer=True, **kwargs):
    model.save_pretrained(path, **kwargs)
    if tokenizer:
        tokenizer_dir(path)
    return path


def test_merge_checkpoints_equals_average_and_reloads(tmp_path):
    pre_model, aligned_model = neox(0), neox(1)
    pre_dir, aligned_dir = save(pre_model, tmp_path / "pre", tokenizer=False), save(aligned_model, tmp_path / "al")
    out = merge_checkpoints(pre_dir, aligned_dir, tmp_path / "merged", alpha=0.3)
    want = average(pre_model.state_dict(), aligned_model.state_dict(), 0.3)
    got = from_file(out / "model.safetensors")
    assert set(got) == set(want)
    for key in want:
        assert torch.equal(got[key], want[key]), key  # one mechanism: bit-identical to the in-memory merge
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    for key, value in reloaded.state_dict().items():
        assert torch.equal(value, want[key]), key
    tok = AutoTokenizer.from_pretrained(out)  # tokenizer and config come from the aligned directory
    assert tok.decode(tok("a good film")["input_ids"]) == "a good film"
    assert json.loads((out / "config.json").read_text()) == json.loads((aligned_dir / "config.json").read_text())
    info = json.loads((out / "merge_config.json").read_text())
    assert info["alpha"] == 0.3 and info["scope"] == "all"
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert f.metadata()["format"] == "pt"


def test_merge_checkpoints_endpoints_are_bit_exact(tmp_path):
    pre_model, aligned_model = neox(0), neox(1)
    pre_dir, aligned_dir = save(pre_model, tmp_path / "pre", False), save(aligned_model, tmp_path / "al", False)
    for alpha, source in ((0.0, pre_model), (1.0, aligned_model)):
        got = from_file(merge_checkpoints(pre_dir, aligned_dir, tmp_path / f"m{alpha}", alpha) / "model.safetensors")
        assert all(torch.equal(got[k], v) for k, v in source.state_dict().items())


def test_merge_checkpoints_sharded(tmp_path):
    pre_model, aligned_model = neox(0), neox(1)
    pre_dir = save(pre_model, tmp_path / "pre", False, max_shard_size="40KB")
    aligned_dir = save(aligned_model, tmp_path / "al", False, max_shard_size="25KB")
    shards = sorted(p.name for p in aligned_dir.glob("*.safetensors"))
    assert len(shards) > 1 and (aligned_dir / "model.safetensors.index.json").exists()
    out = merge_checkpoints(pre_dir, aligned_dir, tmp_path / "merged", alpha=0.6, scope="linear")
    assert sorted(p.name for p in out.glob("*.safetensors")) == shards  # the aligned layout is kept
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert index["weight_map"] == json.loads((aligned_dir / "model.safetensors.index.json").read_text())["weight_map"]
    want = average(pre_model.state_dict(), aligned_model.state_dict(), 0.6, scope="linear")
    assert index["metadata"]["total_size"] == sum(v.numel() * v.element_size() for v in want.values())
    reloaded = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert all(torch.equal(reloaded[k], want[k]) for k in want)


def test_merge_checkpoints_gpt2_tied_head_reloads_like_merge_models(tmp_path):
    pre_model, aligned_model = gpt2(0), gpt2(1)
    pre_dir, aligned_dir = save(pre_model, tmp_path / "pre", False), save(aligned_model, tmp_path / "al", False)
    out = merge_checkpoints(pre_dir, aligned_dir, tmp_path / "merged", alpha=0.5)
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    in_memory = merge_models(pre_model, aligned_model, 0.5)
    for key, value in in_memory.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key


def test_merge_checkpoints_mismatch_names_first_tensor(tmp_path):
    pre_dir = save(neox(0, intermediate=64), tmp_path / "pre", False)
    aligned_dir = save(neox(1, intermediate=48), tmp_path / "al", False)
    with pytest.raises(MergeMismatchError) as info:
        merge_checkpoints(pre_dir, aligned_dir, tmp_path / "merged", alpha=0.5)
    msg = str(info.value)
    assert "'gpt_neox.layers.0.mlp.dense_4h_to_h.weight'" in msg and "[32, 64]" in msg and "[32, 48]" in msg
    assert not (tmp_path / "merged" / "model.safetensors").exists()  # validated before writing anything
    with pytest.raises(ConfigError, match=r"merge\.alpha"):
        merge_checkpoints(pre_dir, pre_dir, tmp_path / "x", alpha=2.0)


def test_merge_checkpoints_matches_the_other_gpt_neox_head_name(tmp_path):
    """transformers 5 writes GPTNeoX's head as `embed_out` (like the Pythia hub files); a checkpoint written with
    the in-memory name `lm_head` (another writer or version) still matches it."""
    pre_model, aligned_model = neox(0), neox(1)
    aligned_dir = save(aligned_model, tmp_path / "al", False)
    assert "embed_out.weight" in load_file(aligned_dir / "model.safetensors")
    pre_dir = tmp_path / "pre"
    pre_dir.mkdir()
    save_file({k: v.contiguous() for k, v in pre_model.state_dict().items()}, str(pre_dir / "model.safetensors"),
              metadata={"format": "pt"})
    got = from_file(merge_checkpoints(pre_dir, aligned_dir, tmp_path / "m", alpha=0.5) / "model.safetensors")
    want = average(pre_model.state_dict(), aligned_model.state_dict(), 0.5)
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)


def test_merge_checkpoints_refuses_to_overwrite_an_input_and_explains_missing_weights(tmp_path):
    from alignlab.errors import ModelLoadError

    d = save(neox(0), tmp_path / "a", False)
    with pytest.raises(ConfigError, match="one of the inputs"):
        merge_checkpoints(d, d, d, alpha=0.5)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="model.safetensors"):
        merge_checkpoints(empty, d, tmp_path / "o", alpha=0.5)
