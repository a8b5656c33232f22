"""The merge plug-ins that conf/merge/*.yaml instantiate: settings checked at instantiate time, the trainer check of
the online merges, post-hoc merges on saved checkpoints, and the online optimizer factory."""
import gc
import weakref

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from safetensors.torch import load_file
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from alignlab.errors import ConfigError, ModelLoadError
from alignlab.merge import (HMA, Average, Merge, NoMerge, OnDARE, OnDAREMerge, OnTIES, OnTIESMerge,
                            build_online_optimizer)
from conftest import compose_config

pytestmark = pytest.mark.usefixtures("single_thread")


def merge_of(tmp_path, kind, *overrides):
    return instantiate(compose_config(tmp_path, [f"merge={kind}", *overrides]).merge)


def neox(seed: int, vocab: int = 96) -> GPTNeoXForCausalLM:
    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(GPTNeoXConfig(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=128, hidden_dropout=0.0, attention_dropout=0.0, tie_word_embeddings=False,
        pad_token_id=0, eos_token_id=0, bos_token_id=0))


@pytest.fixture
def checkpoints(tmp_path):
    pre, aligned = tmp_path / "pre", tmp_path / "aligned"
    neox(0).save_pretrained(pre)
    neox(1).save_pretrained(aligned)
    return pre, aligned


# ---- instantiating conf/merge/*.yaml ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,cls,posthoc", [("none", NoMerge, False), ("average", Average, True),
                                              ("hma", HMA, True), ("ondare", OnDAREMerge, False),
                                              ("onties", OnTIESMerge, False)])
def test_each_merge_config_builds_its_plugin(tmp_path, kind, cls, posthoc):
    merge = merge_of(tmp_path, kind)
    assert type(merge) is cls and isinstance(merge, Merge)
    assert merge.name == kind and merge.posthoc is posthoc
    if posthoc:
        assert merge.aligned is None and merge.pre is None  # this run's policy and start model
    else:
        with pytest.raises(NotImplementedError):
            merge.merge("pre", "aligned", tmp_path / "out", tokenizer=None, reward=None, prompts=[])


def test_command_line_overrides_and_interpolations_reach_the_plugin(tmp_path):
    cfg = compose_config(tmp_path, ["merge=hma", "merge.alpha=0.3", "merge.block_ratios=[0.1,0.3,0.5]", "seed=4",
                                    "model.dtype=bfloat16"])
    hma = instantiate(cfg.merge)
    assert hma.alpha == 0.3 and hma.block_ratios == [0.1, 0.3, 0.5] and hma.num_blocks == 3
    assert (hma.seed, hma.dtype) == (4, "bfloat16")
    assert (hma.max_length, hma.max_prompt_length) == (cfg.data.max_length, cfg.data.max_prompt_length)
    ondare = merge_of(tmp_path, "ondare", "merge.p=0.2", "merge.step_k=3", "seed=5")
    assert (ondare.p, ondare.step_k, ondare.seed, ondare.base_model) == (0.2, 3, 5, "sft_init")
    assert merge_of(tmp_path, "onties", "merge.sign_election=unweighted").sign_election == "unweighted"


@pytest.mark.parametrize("kind,bad,key", [
    ("average", "merge.alpha=1.5", "merge.alpha"), ("average", "merge.scope=conv", "merge.scope"),
    ("hma", "merge.alpha=-0.1", "merge.alpha"), ("hma", "merge.eps=2", "merge.eps"),
    ("hma", "merge.block_ratios=[0.5,0.5]", "merge.block_ratios"), ("hma", "merge.num_blocks=0", "merge.num_blocks"),
    ("hma", "merge.lr=0", "merge.lr"), ("ondare", "merge.p=0", "merge.p"), ("ondare", "merge.step_k=0", "merge.step_k"),
    ("ondare", "merge.base_model=null", "merge.base_model"), ("onties", "merge.a=2", "merge.a"),
    ("onties", "merge.sign_election=majority", "merge.sign_election")])
def test_a_bad_value_fails_at_instantiate_time_naming_the_key(tmp_path, kind, bad, key):
    """Hydra wraps what a _target_ raises in an InstantiationException; the ConfigError is its __cause__ (the entry
    point unwraps it to print the message alone)."""
    with pytest.raises(InstantiationException) as err:
        merge_of(tmp_path, kind, bad)
    assert isinstance(err.value.__cause__, ConfigError) and key in str(err.value.__cause__)


def test_given_ratios_need_no_valid_learning_settings(tmp_path):
    hma = merge_of(tmp_path, "hma", "merge.block_ratios=[0.2,0.5,0.8]", "merge.lr=0")  # lr is not used
    assert hma.block_ratios == [0.2, 0.5, 0.8]


# ---- the trainer check ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["ondare", "onties"])
def test_online_merges_refuse_deepspeed_and_fsdp_trainers(tmp_path, kind):
    for trainer in ("deepspeed_zero1", "deepspeed_zero3_offload"):
        cfg = compose_config(tmp_path, [f"merge={kind}", f"trainer={trainer}"])
        with pytest.raises(ConfigError, match=f"merge={kind} .*cannot run with.*DeepSpeed ZeRO") as err:
            instantiate(cfg.merge).check_trainer(cfg.trainer)
        assert "trainer=ddp" in str(err.value) and "merge=average" in str(err.value)
    with pytest.raises(ConfigError, match="FSDP hands the optimizer flattened"):
        merge_of(tmp_path, kind).check_trainer({"strategy": "fsdp"})
    for trainer in ("cpu", "ddp"):
        cfg = compose_config(tmp_path, [f"merge={kind}", f"trainer={trainer}"])
        instantiate(cfg.merge).check_trainer(cfg.trainer)


@pytest.mark.parametrize("kind", ["none", "average", "hma"])
def test_other_merges_run_with_any_trainer(tmp_path, kind):
    cfg = compose_config(tmp_path, [f"merge={kind}", "trainer=deepspeed_zero3"])
    merge = instantiate(cfg.merge)
    merge.check_trainer(cfg.trainer)
    assert merge.optimizer_factory(lambda: pytest.fail("no base model is needed")) is None


# ---- post-hoc merges ------------------------------------------------------------------------------------------------
def test_average_merges_two_checkpoints_into_the_convex_combination(tmp_path, checkpoints):
    pre, aligned = checkpoints
    metrics = merge_of(tmp_path, "average", "merge.alpha=0.25").merge(pre, aligned, tmp_path / "merged",
                                                                       tokenizer=None, reward=None, prompts=None)
    assert metrics == {"merge/alpha": 0.25}
    a, p = load_file(aligned / "model.safetensors"), load_file(pre / "model.safetensors")
    merged = load_file(tmp_path / "merged" / "model.safetensors")
    assert merged.keys() == a.keys()
    for key in merged:
        torch.testing.assert_close(merged[key], 0.25 * a[key] + 0.75 * p[key])


def test_hma_with_given_ratios_merges_block_by_block(tmp_path, checkpoints):
    pre, aligned = checkpoints
    hma = merge_of(tmp_path, "hma", "merge.block_ratios=[0.2,0.5,0.8]")
    metrics = hma.merge(pre, aligned, tmp_path / "merged")  # given ratios: nothing to sample or learn
    assert metrics == {"merge/alpha": 0.5, "merge/ratio_1": 0.2, "merge/ratio_2": 0.5, "merge/ratio_3": 0.8}
    a, p = load_file(aligned / "model.safetensors"), load_file(pre / "model.safetensors")
    merged = load_file(tmp_path / "merged" / "model.safetensors")
    for layer, ratio in enumerate((0.2, 0.5, 0.8)):  # 3 layers, 3 blocks
        key = f"gpt_neox.layers.{layer}.mlp.dense_h_to_4h.weight"
        torch.testing.assert_close(merged[key], ratio * a[key] + (1 - ratio) * p[key])
    key = "gpt_neox.final_layer_norm.weight"  # the mean ratio
    torch.testing.assert_close(merged[key], 0.5 * a[key] + 0.5 * p[key])


def test_hma_learns_ratios_from_high_reward_samples(tmp_path):
    from alignlab.data.reviews import generate_reviews
    from alignlab.tokenizer import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer([r["text"] for r in generate_reviews(200, 0)], 300)
    pre, aligned = tmp_path / "pre", tmp_path / "aligned"
    neox(0, len(tokenizer)).save_pretrained(pre)
    neox(1, len(tokenizer)).save_pretrained(aligned)

    class LengthReward:
        def score(self, prompts, responses):
            return [float(len(r)) for r in responses]

    hma = merge_of(tmp_path, "hma", "merge.alpha=0.4", "merge.lr=0.3", "merge.top=12", "merge.n_keep=8",
                   "merge.batch_size=4", "merge.epochs=2", "merge.max_new_tokens=8")
    with pytest.raises(ValueError, match="needs the tokenizer, the reward and the training prompts"):
        hma.merge(pre, aligned, tmp_path / "merged")
    prompts = [r["text"][:12] for r in generate_reviews(12, 3)]
    metrics = hma.merge(pre, aligned, tmp_path / "merged", tokenizer=tokenizer, reward=LengthReward(),
                        prompts=prompts)
    ratios = [metrics[f"merge/ratio_{k}"] for k in (1, 2, 3)]
    assert metrics["merge/alpha"] == 0.4 and sum(ratios) / 3 == pytest.approx(0.4, abs=1e-6)
    assert max(ratios) - min(ratios) > 1e-4  # learned, not the uniform start
    assert (tmp_path / "merged" / "model.safetensors").exists()


# ---- the online optimizer factory -----------------------------------------------------------------------------------
def small_net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


def named_groups(net):
    named = list(net.named_parameters())
    return [{"params": [(n, p) for n, p in named if p.ndim >= 2], "weight_decay": 0.01},
            {"params": [(n, p) for n, p in named if p.ndim < 2], "weight_decay": 0.0}]


def train(net, opt, steps=3):
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        loss = net(torch.randn(4, 6, generator=g)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return [p.detach().clone() for p in net.parameters()]


class SingleDeviceStrategy:
    pass


class DeepSpeedStrategy:
    config = {"zero_optimization": {"stage": 2}}


@pytest.mark.parametrize("kind,cls,extra", [("ondare", OnDARE, {}),
                                            ("onties", OnTIES, {"sign_election": "unweighted"})])
def test_online_factory_builds_the_optimizer_of_the_config(tmp_path, kind, cls, extra):
    overrides = ["merge.p=0.5", "merge.a=0.3", "merge.rescale=true", "merge.step_k=2", "seed=7",
                 *(f"merge.{k}={v}" for k, v in extra.items())]
    make = merge_of(tmp_path, kind, *overrides).optimizer_factory(lambda: small_net(seed=3))
    net, twin = small_net(), small_net()
    opt = make(named_groups(net), 0.01, SingleDeviceStrategy())
    want = build_online_optimizer(cls, named_groups(twin), small_net(seed=3).state_dict(), lr=0.01, p=0.5, a=0.3,
                                  rescale=True, step_k=2, seed=7, **extra)
    assert type(opt) is cls and [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]
    for got, expected in zip(train(net, opt), train(twin, want)):
        assert torch.equal(got, expected)


def test_online_factory_checks_the_strategy_and_releases_the_base(tmp_path):
    refs = []

    def new_base_model():
        base = small_net(seed=3)
        state = base.state_dict()
        refs.extend(weakref.ref(t) for t in state.values())
        base.state_dict = lambda: state
        return base

    make = merge_of(tmp_path, "ondare").optimizer_factory(new_base_model)
    net = small_net()
    with pytest.raises(ConfigError, match="DeepSpeed ZeRO"):
        make(named_groups(net), 0.01, DeepSpeedStrategy())
    gc.collect()
    assert refs and all(r() is not None for r in refs)  # held until the optimizer is built
    make(named_groups(net), 0.01, SingleDeviceStrategy())
    gc.collect()
    assert refs and all(r() is None for r in refs)  # tau is computed: nothing of the base model is left
    with pytest.raises(RuntimeError, match="already used"):
        make(named_groups(net), 0.01, SingleDeviceStrategy())


def test_online_factory_loads_a_base_model_path(tmp_path):
    base_dir = tmp_path / "base"
    neox(0).save_pretrained(base_dir)
    policy = neox(1)
    make = merge_of(tmp_path, "onties", f"merge.base_model={base_dir}").optimizer_factory(
        lambda: pytest.fail("sft_init is not asked for"))
    named = list(policy.named_parameters())
    opt = make([{"params": named, "weight_decay": 0.0}], 1e-3, SingleDeviceStrategy())
    base = neox(0).state_dict()
    for name, p in named:
        assert torch.equal(opt.state[p]["tau"], p.detach() - base[name]), name
    with pytest.raises(ModelLoadError, match="merge.base_model"):
        merge_of(tmp_path, "ondare", f"merge.base_model={tmp_path / 'missing'}").optimizer_factory(lambda: None)

