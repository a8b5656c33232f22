"""The fast path (issue 14): the fused response-only projection gives the losses and gradients of the unfused path
(full [B, T, V] logits through alignlab.losses), in float64, for every objective, with prompt and padding masked;
precomputed reference log-probs equal live ones; no vocabulary-sized tensor is saved for backward."""
import math

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from alignlab.data.tokenize import PreferenceCollator, SequenceCollator
from alignlab.forward import logits_of, response_logps
from alignlab.losses import (aligndistil_loss, dpo_loss, ipo_loss, sequence_logps, shift_for_next_token,
                             simpo_loss, sft_loss, tdpo_loss, token_logps_and_kl)
from alignlab.losses.fused import Head, fused_token_logps
from alignlab.methods.aligndistil import AlignDistil
from alignlab.methods.dpo import DPO
from alignlab.methods.ipo import IPO
from alignlab.methods.sft import SFT
from alignlab.methods.simpo import SimPO
from alignlab.methods.tdpo import TDPO
from alignlab.models import freeze

V = 37


@pytest.fixture(autouse=True)
def _single_thread(single_thread):
    yield


def model(seed: int) -> GPTNeoXForCausalLM:
    config = GPTNeoXConfig(vocab_size=V, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=32, max_position_embeddings=64, rotary_pct=0.5, hidden_dropout=0.0,
                           attention_dropout=0.0, tie_word_embeddings=False)
    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(config).double()


PAIRS = [{"prompt_ids": [1, 2, 3], "chosen_ids": [4, 5, 6, 0], "rejected_ids": [7, 0]},
         {"prompt_ids": [8], "chosen_ids": [9, 10], "rejected_ids": [11, 12, 13, 14, 0]},
         {"prompt_ids": [15, 16, 17, 18, 19], "chosen_ids": [20], "rejected_ids": [21, 22]}]


def pair_batch():
    return PreferenceCollator(0)(PAIRS)


def seq_batch():
    return SequenceCollator(0)([{"prompt_ids": p["prompt_ids"], "response_ids": p["chosen_ids"]} for p in PAIRS])


def unfused_logps(m, batch):
    return sequence_logps(*shift_for_next_token(logits_of(m, batch), batch["labels"]))


def grads(module, loss):
    module.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.clone() for n, p in module.policy.named_parameters() if p.grad is not None}


def close_grads(a, b):
    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-9, atol=1e-12, msg=name)


# ---- the building block on hand-made tensors --------------------------------------------------------------------
@pytest.mark.parametrize("scale,softcap", [(1.0, None), (0.5, None), (1.0, 3.0), (2.0, 1.5)])
def test_fused_token_logps_equals_log_softmax_of_the_head_with_its_gradients(scale, softcap):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(7, 5, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(11, 5, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(11, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.randint(0, 11, (7,), generator=g)

    def reference():
        z = (h @ w.T + b) * scale
        z = torch.tanh(z / softcap) * softcap if softcap else z
        return torch.log_softmax(z, -1).gather(1, y[:, None]).squeeze(1)

    weights = torch.randn(7, dtype=torch.float64, generator=g)
    want = reference()
    (want * weights).sum().backward()
    expected = [t.grad.clone() for t in (h, w, b)]
    for t in (h, w, b):
        t.grad = None
    got = fused_token_logps(h, Head(w, b, scale, softcap), y, chunk_size=3)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    (got * weights).sum().backward()
    for t, e in zip((h, w, b), expected):
        torch.testing.assert_close(t.grad, e, rtol=1e-10, atol=1e-12)


def test_the_fused_path_saves_no_vocabulary_sized_tensor():
    """Autograd keeps h, the head's parameters and indices: nothing of size V x positions."""
    m = model(0)
    batch = pair_batch()
    saved = []

    def pack(t):
        saved.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        response_logps(m, batch)
    positions = int((batch["labels"][:, 1:] != -100).sum())
    assert not any(len(s) >= 2 and s[-1] == V and s[0] in (positions, batch["input_ids"].shape[0]) for s in saved
                   if s != tuple(m.get_output_embeddings().weight.shape))
    assert not any(len(s) == 3 and s[-1] == V for s in saved)


# ---- every objective: the module's fused loss and gradients equal the pure losses on full logits ---------------
def test_dpo_live_and_ipo_match_the_unfused_path():
    ref = freeze(model(1))
    for make, loss_fn in ((lambda p: DPO(p, ref, beta=0.1, label_smoothing=0.1),
                           lambda pc, pr, rc, rr: dpo_loss(pc, pr, rc, rr, 0.1, 0.1)[0]),
                          (lambda p: IPO(p, ref, beta=0.1), lambda pc, pr, rc, rr: ipo_loss(pc, pr, rc, rr, 0.1)[0])):
        module = make(model(0))
        batch = pair_batch()
        loss, _ = module.loss_and_metrics(batch)
        fused = grads(module, loss)
        with torch.no_grad():
            r, _ = unfused_logps(ref, batch)
        p, _ = unfused_logps(module.policy, batch)
        want = loss_fn(p[:3], p[3:], r[:3], r[3:]).mean()
        torch.testing.assert_close(loss, want, rtol=1e-10, atol=1e-12)
        close_grads(fused, grads(module, want))


def test_simpo_and_sft_match_the_unfused_path():
    module = SimPO(model(0), beta=2.0, gamma=0.5)
    batch = pair_batch()
    loss, _ = module.loss_and_metrics(batch)
    fused = grads(module, loss)
    p, n = unfused_logps(module.policy, batch)
    want = simpo_loss(p[:3], p[3:], n[:3], n[3:], 2.0, 0.5)[0].mean()
    torch.testing.assert_close(loss, want, rtol=1e-10, atol=1e-12)
    close_grads(fused, grads(module, want))

    module = SFT(model(0))
    batch = seq_batch()
    loss, _ = module.loss_and_metrics(batch)
    fused = grads(module, loss)
    p, n = unfused_logps(module.policy, batch)
    want = sft_loss(p, n, "sum").mean()
    torch.testing.assert_close(loss, want, rtol=1e-10, atol=1e-12)
    close_grads(fused, grads(module, want))


@pytest.mark.parametrize("variant", ["tdpo1", "tdpo2"])
def test_tdpo_matches_the_unfused_path(variant):
    ref = freeze(model(1))
    module = TDPO(model(0), ref, beta=0.1, alpha=0.5 if variant == "tdpo2" else None, variant=variant, chunk_size=4)
    batch = pair_batch()
    loss, _ = module.loss_and_metrics(batch)
    fused = grads(module, loss)
    logits, labels = shift_for_next_token(logits_of(module.policy, batch), batch["labels"])
    with torch.no_grad():
        ref_logits, _ = shift_for_next_token(logits_of(ref, batch), batch["labels"])
    p, r, kl = token_logps_and_kl(logits, ref_logits, labels)
    lr = p - r
    want = tdpo_loss(lr[:3], lr[3:], kl[:3], kl[3:], 0.1, 0.5, variant)[0].mean()
    torch.testing.assert_close(loss, want, rtol=1e-10, atol=1e-12)
    close_grads(fused, grads(module, want))


@pytest.mark.parametrize("teacher", ["adaptive", "contrastive", "dpo_ref"])
def test_aligndistil_matches_the_unfused_path(teacher):
    dpo, other = freeze(model(1)), freeze(model(2))
    kwargs = {"reference": other} if teacher == "dpo_ref" else {"reverse_model": other}
    module = AlignDistil(model(0), dpo_model=dpo, teacher=teacher, beta=0.05, beta0=0.1, chunk_size=4, **kwargs)
    batch = seq_batch()
    loss, metrics = module.loss_and_metrics(batch)
    fused = grads(module, loss)
    logits, labels = shift_for_next_token(logits_of(module.policy, batch), batch["labels"])
    with torch.no_grad():
        z_dpo, _ = shift_for_next_token(logits_of(dpo, batch), batch["labels"])
        z_other, _ = shift_for_next_token(logits_of(other, batch), batch["labels"])
    out = aligndistil_loss(logits, z_dpo, z_other, labels, teacher, 0.05, 0.1, 20.0, 1e-3)
    want = out["losses"].mean()
    torch.testing.assert_close(loss, want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(metrics["aligndistil/alpha_mean"], out["alpha_mean"], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(metrics["kl/teacher"], out["kl_teacher"], rtol=1e-10, atol=1e-12)
    close_grads(fused, grads(module, want))


def test_the_zero3_fallback_gives_the_same_numbers(monkeypatch):
    """Under DeepSpeed ZeRO-3 the head's parameters can only be read inside its forward, so the head module is called
    (holding [N, V] for autograd): same losses and gradients."""
    import alignlab.forward as forward

    ref = freeze(model(1))
    results = []
    for fusable in (True, False):
        monkeypatch.setattr(forward, "_fusable", lambda m, f=fusable: f)
        module = TDPO(model(0), ref, beta=0.1, alpha=0.5, variant="tdpo2", chunk_size=4)
        loss, _ = module.loss_and_metrics(pair_batch())
        results.append((loss.detach(), grads(module, loss)))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-10, atol=1e-12)
    close_grads(results[0][1], results[1][1])


# ---- precomputed reference log-probs ----------------------------------------------------------------------------
def test_precomputed_reference_logps_equal_live_ones(tmp_path):
    from omegaconf import OmegaConf

    from alignlab.pipeline.reference_logps import precompute

    class Tok:
        eos_token_id = pad_token_id = 0

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [ord(c) - 96 for c in text]}

    rows = {"train": [{"prompt": "abc", "chosen": "de", "rejected": "f"},
                      {"prompt": "g", "chosen": "hij", "rejected": "kl"}],
            "validation": [{"prompt": "m", "chosen": "no", "rejected": "p"}]}
    data_cfg = OmegaConf.create({"max_length": 16, "max_prompt_length": 8, "eval_batch_size": 2})
    ref = freeze(model(3))
    attached, stage = precompute(lambda: ref, "ref-3", rows, Tok(), data_cfg, "float64", tmp_path, device="cpu")
    again, stage2 = precompute(lambda: pytest.fail("the cached stage is reused"), "ref-3", rows, Tok(), data_cfg,
                               "float64", tmp_path)
    assert stage == stage2 and again == attached
    from alignlab.data.tokenize import TruncationStats, tokenize_pair

    for split in rows:
        pairs = [tokenize_pair(Tok(), r, 16, 8, TruncationStats()) for r in attached[split]]
        batch = PreferenceCollator(0)(pairs)
        with torch.no_grad():
            live, _ = response_logps(ref, batch)
        torch.testing.assert_close(batch["ref_logps"], live, rtol=1e-12, atol=1e-12)
        module = DPO(model(0), beta=0.1)  # no reference model at all
        assert module.reference is None and math.isfinite(module.loss_and_metrics(batch)[0].item())


@pytest.mark.slow
def test_a_beta_sweep_computes_the_reference_logps_once(tmp_path):
    """Jobs that differ only in the method's beta share the reference log-probs stage (same pairs, same reference),
    and the live reference gives the same first-step loss (ln 2: policy == reference)."""
    from alignlab.run import run
    from conftest import compose_config

    common = ["experiment=smoke", "trainer.max_steps=2", "eval.enabled=false"]
    first = run(compose_config(tmp_path / "a", [*common, "method.beta=0.1"]))
    second = run(compose_config(tmp_path / "b", [*common, "method.beta=0.5"]))
    live = run(compose_config(tmp_path / "c", [*common, "method.reference=live"]))
    assert first["stages"]["reference_logps"] == second["stages"]["reference_logps"]
    assert "reference_logps" not in live["stages"]
