"""IPO, SimPO, TDPO1, TDPO2 LightningModules (METHODS.md sections 1-2): the wiring of models to the pure losses.

The losses themselves are checked on hand values in test_losses_*.py. Here each module's loss is compared with the
same pure loss applied to log-probs and KLs computed independently (full log_softmax in float64 on the same model
outputs), which catches a wrong shift, chosen/rejected order, reference/policy swap or length normalisation.
"""
import copy

import pytest
import torch
from hydra.utils import instantiate
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from alignlab.data.tokenize import PreferenceCollator
from alignlab.errors import ConfigError
from alignlab.losses import dpo_loss, ipo_loss, simpo_loss, tdpo_loss
from alignlab.methods.base import AlignmentModule
from alignlab.methods.dpo import DPO
from alignlab.methods.ipo import IPO
from alignlab.methods.simpo import SimPO
from alignlab.methods.tdpo import TDPO
from conftest import compose_config, one_torch_thread

SECTION1 = {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
            "logps/rejected"}
SECTION2 = {"kl/chosen", "kl/rejected", "kl/margin", "rewards_tdpo/chosen", "rewards_tdpo/rejected",
            "rewards_tdpo/accuracies"}
# every method with a constructor that covers it; TDPO1/TDPO2 are the two variants of one class
METHODS = {
    "dpo": lambda p, r: DPO(p, r, beta=0.1),
    "ipo": lambda p, r: IPO(p, r, beta=0.1),
    "ipo_norm": lambda p, r: IPO(p, r, beta=0.1, length_normalize=True),
    "simpo": lambda p, r: SimPO(p, None, beta=2.0, gamma=0.5),
    "tdpo1": lambda p, r: TDPO(p, r, beta=0.1, variant="tdpo1", chunk_size=5),
    "tdpo2": lambda p, r: TDPO(p, r, beta=0.1, alpha=0.5, variant="tdpo2", chunk_size=5),
}


@pytest.fixture(autouse=True)
def _single_thread():
    """Tiny tensors: intra-op threads only add synchronisation (pathologically slow on a loaded 2-core machine)."""
    with one_torch_thread():
        yield


def tiny_model(seed: int) -> GPTNeoXForCausalLM:
    config = GPTNeoXConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=64, rotary_pct=0.25,
                           hidden_dropout=0.0, attention_dropout=0.0, tie_word_embeddings=False,
                           pad_token_id=0, eos_token_id=1, bos_token_id=1)
    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(config)


def make_batch() -> dict:
    """3 pairs of different prompt and response lengths (so there is padding); EOS = 1 ends every response."""
    rows = [
        {"prompt_ids": [5, 6, 7], "chosen_ids": [10, 11, 12, 1], "rejected_ids": [20, 21, 1]},
        {"prompt_ids": [8, 9], "chosen_ids": [30, 31, 1], "rejected_ids": [40, 41, 42, 43, 44, 1]},
        {"prompt_ids": [3, 4, 5, 6, 7, 8], "chosen_ids": [50, 1], "rejected_ids": [51, 52, 1]},
    ]
    return PreferenceCollator(pad_token_id=0)(rows)


@pytest.fixture
def models():
    """A policy and a *different* reference, so a swap of the two changes every number."""
    return tiny_model(0), tiny_model(1)


@torch.no_grad()
def independent(policy, reference, batch) -> dict:
    """Per-sequence sums over response positions, from a full float64 log_softmax (no chunking, no shortcuts)."""
    def log_probs(model):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return torch.log_softmax(logits.double()[:, :-1], dim=-1)  # position t predicts token t + 1

    labels = batch["labels"][:, 1:]
    mask = (labels != -100).double()
    index = labels.clamp(min=0).unsqueeze(-1)
    lp_pi, lp_ref = log_probs(policy), log_probs(reference)
    kl_t = (lp_ref.exp() * (lp_ref - lp_pi)).sum(-1)
    return {"policy": (lp_pi.gather(-1, index).squeeze(-1) * mask).sum(1),
            "ref": (lp_ref.gather(-1, index).squeeze(-1) * mask).sum(1),
            "kl": (kl_t * mask).sum(1),
            "n": mask.sum(1)}


def expected_loss(name: str, q: dict, b: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    pi, ref, kl, n = q["policy"], q["ref"], q["kl"], q["n"]
    if name == "dpo":
        return dpo_loss(pi[:b], pi[b:], ref[:b], ref[b:], 0.1)
    if name == "ipo":
        return ipo_loss(pi[:b], pi[b:], ref[:b], ref[b:], 0.1)
    if name == "ipo_norm":
        return ipo_loss(pi[:b] / n[:b], pi[b:] / n[b:], ref[:b] / n[:b], ref[b:] / n[b:], 0.1)
    if name == "simpo":
        return simpo_loss(pi[:b], pi[b:], n[:b], n[b:], 2.0, 0.5)
    d = pi - ref
    return tdpo_loss(d[:b], d[b:], kl[:b], kl[b:], 0.1, 0.5, name)


def close(actual, expected, **kw):
    torch.testing.assert_close(actual.double(), expected.double(), rtol=1e-5, atol=1e-6, **kw)


@pytest.mark.parametrize("name", list(METHODS))
def test_loss_equals_pure_loss_on_independent_logps(name, models):
    policy, reference = models
    module = METHODS[name](policy, reference)
    batch = make_batch()
    b = batch["num_pairs"]
    loss, metrics = module.loss_and_metrics(batch)

    assert loss.dim() == 0 and torch.isfinite(loss)
    assert set(metrics) == (SECTION1 | SECTION2 if name.startswith("tdpo") else SECTION1)
    q = independent(policy, reference, batch)
    losses, chosen_rewards, rejected_rewards = expected_loss(name, q, b)
    close(loss, losses.mean(), msg=f"{name}: loss")
    close(metrics["logps/chosen"], q["policy"][:b])
    close(metrics["logps/rejected"], q["policy"][b:])
    if name.startswith("tdpo"):
        # section 1's rewards/* are DPO's beta * logratio; the official TDPO reward has its own keys
        close(metrics["rewards/chosen"], 0.1 * (q["policy"] - q["ref"])[:b])
        close(metrics["rewards/rejected"], 0.1 * (q["policy"] - q["ref"])[b:])
        close(metrics["rewards_tdpo/chosen"], chosen_rewards)
        close(metrics["rewards_tdpo/rejected"], rejected_rewards)
        close(metrics["kl/chosen"], q["kl"][:b])
        close(metrics["kl/rejected"], q["kl"][b:])
        close(metrics["kl/margin"], q["kl"][:b] - q["kl"][b:])
        assert (q["kl"] > 0).all()  # the two models differ: a real KL is being checked, not zeros
    else:
        close(metrics["rewards/chosen"], chosen_rewards)
        close(metrics["rewards/rejected"], rejected_rewards)
    close(metrics["rewards/margins"], metrics["rewards/chosen"] - metrics["rewards/rejected"])
    assert torch.equal(metrics["rewards/accuracies"],
                       (metrics["rewards/chosen"] > metrics["rewards/rejected"]).float())


def test_simpo_reward_is_beta_times_mean_token_logp(models):
    policy, _ = models
    module = SimPO(policy, None, beta=2.0, gamma=0.5)
    batch = make_batch()
    _, metrics = module.loss_and_metrics(batch)
    q = independent(policy, policy, batch)
    close(metrics["rewards/chosen"], 2.0 * q["policy"][:3] / q["n"][:3])
    close(metrics["rewards/rejected"], 2.0 * q["policy"][3:] / q["n"][3:])
    # evaluation ranks responses by the same length-normalised log-prob (the reference does not enter)
    score = module.preference_score(q["policy"], torch.full_like(q["policy"], 123.0), q["n"])
    close(score, q["policy"] / q["n"])


def test_simpo_holds_no_reference(models):
    policy, reference = models
    assert SimPO.needs_reference is False
    module = SimPO(policy)
    assert module.reference is None
    assert not any(k.startswith("reference.") for k in module.state_dict())
    # a reference handed over anyway (run.py never does) is not kept either
    assert SimPO(policy, reference).reference is None


def test_tdpo2_with_alpha_zero_is_dpo(models):
    policy, reference = models
    batch = make_batch()
    tdpo, tdpo_metrics = TDPO(policy, reference, beta=0.1, alpha=0.0, variant="tdpo2").loss_and_metrics(batch)
    dpo, dpo_metrics = DPO(policy, reference, beta=0.1).loss_and_metrics(batch)
    close(tdpo, dpo)
    for key in SECTION1:
        close(tdpo_metrics[key], dpo_metrics[key], msg=key)


def test_tdpo_chunk_size_does_not_change_the_result(models):
    policy, reference = models
    batch = make_batch()
    results = [TDPO(policy, reference, variant="tdpo1", chunk_size=c).loss_and_metrics(batch) for c in (1, 7, 4096)]
    for loss, metrics in results[1:]:
        close(loss, results[0][0])
        close(metrics["kl/chosen"], results[0][1]["kl/chosen"])


@pytest.mark.parametrize("name", list(METHODS))
def test_reference_gets_no_gradient(name, models):
    policy, reference = models  # deliberately not frozen: the module itself must keep gradients off it
    module = METHODS[name](policy, reference)
    loss, _ = module.loss_and_metrics(make_batch())
    loss.backward()
    assert all(p.grad is not None for p in policy.parameters() if p.requires_grad)
    if name != "simpo":
        assert all(p.grad is None for p in reference.parameters())


@pytest.mark.parametrize("name", [m for m in METHODS if m != "simpo"])
def test_reference_runs_under_no_grad(name, models):
    """No autograd graph (and so no saved activations) for the frozen forward, even when its parameters would
    accept gradients: the memory a reference costs is its logits, nothing more."""
    policy, reference = models
    grad_enabled = []
    # the backbone runs on the batch, the head only at the response positions (alignlab.forward)
    reference.base_model.register_forward_hook(lambda *_: grad_enabled.append(torch.is_grad_enabled()))
    METHODS[name](policy, reference).loss_and_metrics(make_batch())
    assert grad_enabled == [False]  # one forward of the reference per step, without grad


@pytest.mark.parametrize("name", list(METHODS))
def test_a_few_steps_lower_the_loss(name):
    policy = tiny_model(0)
    reference = copy.deepcopy(policy).requires_grad_(False).eval()  # training starts from the reference
    module = METHODS[name](policy, reference)
    optimizer = torch.optim.AdamW(module.trainable_parameters(), lr=1e-2)
    batch = make_batch()
    losses = []
    for _ in range(8):
        loss, _ = module.loss_and_metrics(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    final, metrics = module.loss_and_metrics(batch)
    assert final.item() < losses[0] - 0.05 * abs(losses[0]), f"{name}: {losses} -> {final.item()}"
    assert metrics["rewards/margins"].mean() > 0  # it learned the preference, not just any change


@pytest.mark.parametrize("bad, key", [
    (lambda p, r: IPO(p, r, beta=0.0), "method.beta"),
    (lambda p, r: IPO(p, r, length_normalize="yes"), "method.length_normalize"),
    (lambda p, r: SimPO(p, beta=-1.0), "method.beta"),
    (lambda p, r: SimPO(p, gamma=-0.1), "method.gamma"),
    (lambda p, r: TDPO(p, r, variant="tdpo3"), "method.variant"),
    (lambda p, r: TDPO(p, r, beta=0.0), "method.beta"),
    (lambda p, r: TDPO(p, r, variant="tdpo2", alpha=-0.5), "method.alpha"),
    (lambda p, r: TDPO(p, r, variant="tdpo1", alpha=0.3), "method.alpha"),
    (lambda p, r: TDPO(p, r, chunk_size=0), "method.chunk_size"),
    (lambda p, r: TDPO(p, None), "needs a reference"),
])
def test_invalid_settings_name_the_config_key(bad, key, models):
    with pytest.raises(ConfigError, match=key):
        bad(*models)


@pytest.mark.parametrize("option, cls, expected", [
    ("ipo", IPO, {"beta": 0.1, "length_normalize": False}),
    ("simpo", SimPO, {"beta": 2.0, "gamma": 0.5}),
    ("tdpo1", TDPO, {"beta": 0.1, "variant": "tdpo1", "alpha": None, "chunk_size": 256}),
    ("tdpo2", TDPO, {"beta": 0.1, "variant": "tdpo2", "alpha": 0.5, "chunk_size": 256}),
])
def test_configs_build_the_modules_with_paper_defaults(option, cls, expected, tmp_path, models):
    cfg = compose_config(tmp_path, [f"method={option}"])
    assert cfg.method.name == option
    reference = models[1] if cls.needs_reference else None
    module = instantiate(cfg.method, policy=models[0], reference=reference, _convert_="all")
    assert type(module) is cls and isinstance(module, AlignmentModule)
    assert module.method_name == option
    for attr, value in expected.items():
        assert getattr(module, attr) == value, attr


def test_without_a_reference_dpo_needs_precomputed_logps_in_the_batch(models):
    policy, _ = models
    module = DPO(policy, None, beta=0.1)  # method.reference=precomputed: no reference model
    with pytest.raises(ConfigError, match="no precomputed reference log-probs"):
        module.loss_and_metrics(make_batch())
