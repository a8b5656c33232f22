"""Chunked log-probs / KL / entropy against a straightforward float64 full-log_softmax reference."""

import pytest
import torch
import torch.nn.functional as F

from alignlab.losses import sequence_logps, shift_for_next_token, token_entropy, token_logps_and_kl

pytestmark = pytest.mark.usefixtures("single_thread")



B, T, V = 3, 7, 11


def _batch(dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    policy = torch.randn(B, T, V, generator=g).mul(3).to(dtype)
    ref = torch.randn(B, T, V, generator=g).mul(3).to(dtype)
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[:, :2] = -100  # prompt
    labels[0, :4] = -100  # longer prompt
    labels[1, 5:] = -100  # padding
    return policy, ref, labels


def _reference(policy, ref, labels):
    """Unchunked float64: full log_softmax over [B, T, V]."""
    mask = labels != -100
    y = labels.clamp(min=0).unsqueeze(-1)
    lp = F.log_softmax(policy.double(), -1)
    lq = F.log_softmax(ref.double(), -1)
    logps = (lp.gather(-1, y).squeeze(-1) * mask).sum(1)
    ref_logps = (lq.gather(-1, y).squeeze(-1) * mask).sum(1)
    kl = ((lq.exp() * (lq - lp)).sum(-1) * mask).sum(1)
    entropy = (-(lp.exp() * lp).sum(-1) * mask).sum(1)
    return logps, ref_logps, kl, entropy, mask.sum(1).double()


@pytest.mark.parametrize("chunk_size", [1, 3, 1024])
def test_values_match_reference(chunk_size):
    policy, ref, labels = _batch()
    e_logps, e_ref, e_kl, e_ent, e_n = _reference(policy, ref, labels)
    logps, n = sequence_logps(policy, labels, chunk_size=chunk_size)
    pol, rl, kl = token_logps_and_kl(policy, ref, labels, chunk_size=chunk_size)
    ent, n2 = token_entropy(policy, labels, chunk_size=chunk_size)
    for got, want in [(logps, e_logps), (pol, e_logps), (rl, e_ref), (kl, e_kl), (ent, e_ent), (n, e_n), (n2, e_n)]:
        assert got.shape == (B,) and got.dtype == torch.float32
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    assert (kl > 0).all() and n.tolist() == [3.0, 3.0, 5.0]


def test_chunk_sizes_agree_values_and_gradients():
    policy, ref, labels = _batch()
    results = []
    for chunk_size in (3, 1024):
        x = policy.clone().requires_grad_()
        pol, _, kl = token_logps_and_kl(x, ref, labels, chunk_size=chunk_size)
        s, _ = sequence_logps(x, labels, chunk_size=chunk_size)
        (pol.sum() + 2 * kl.sum() - 0.5 * s.sum()).backward()
        results.append((pol.detach(), kl.detach(), x.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_gradients_match_unchunked_autograd():
    policy, ref, labels = _batch()
    w = torch.tensor([0.3, -1.0, 2.0])
    x = policy.clone().requires_grad_()
    pol, _, kl = token_logps_and_kl(x, ref, labels, chunk_size=2)
    s, _ = sequence_logps(x, labels, chunk_size=2)
    ((w * pol).sum() + (w.flip(0) * kl).sum() + s.sum()).backward()

    xr = policy.double().requires_grad_()
    e_logps, _, e_kl, _, _ = _reference(xr, ref, labels)
    ((w.double() * e_logps).sum() + (w.flip(0).double() * e_kl).sum() + e_logps.sum()).backward()
    torch.testing.assert_close(x.grad.double(), xr.grad, rtol=1e-5, atol=1e-6)


def test_gradcheck_float64():
    policy, ref, labels = _batch(torch.float64)
    x = policy[:, :, :5].clone().requires_grad_()
    labels = labels.clamp(max=4)  # keep targets inside the 5-token vocabulary; -100 stays -100
    r = ref[:, :, :5]
    assert torch.autograd.gradcheck(lambda z: token_logps_and_kl(z, r, labels, chunk_size=2)[::2], (x,))
    assert torch.autograd.gradcheck(lambda z: sequence_logps(z, labels, chunk_size=2)[0], (x,))


def test_ignored_positions_have_no_effect():
    policy, ref, labels = _batch()
    before = [*token_logps_and_kl(policy, ref, labels), *token_entropy(policy, labels)]
    ignored = (labels == -100).unsqueeze(-1)
    policy2 = policy.masked_fill(ignored, 123.0) + ignored * torch.randn(B, T, V) * 50
    ref2 = ref.masked_fill(ignored, -77.0)
    x = policy2.clone().requires_grad_()
    after = [*token_logps_and_kl(x, ref2, labels), *token_entropy(policy2, labels)]
    for a, b in zip(before, after):
        assert torch.equal(a, b)
    after[0].sum().add(after[2].sum()).backward()
    assert (x.grad[labels == -100] == 0).all() and (x.grad[labels != -100] != 0).any()


def test_ref_gets_no_gradient():
    policy, ref, labels = _batch()
    x, r = policy.clone().requires_grad_(), ref.clone().requires_grad_()
    pol, rl, kl = token_logps_and_kl(x, r, labels)
    assert not rl.requires_grad
    (pol + rl + kl).sum().backward()
    assert r.grad is None and x.grad is not None


def test_bf16_logits_are_upcast():
    policy, ref, labels = _batch(torch.bfloat16)
    e_logps, _, e_kl, e_ent, _ = _reference(policy, ref, labels)  # same bf16 values, in float64
    x = policy.clone().requires_grad_()
    pol, _, kl = token_logps_and_kl(x, ref, labels)
    logps, _ = sequence_logps(x, labels)
    ent, _ = token_entropy(policy, labels)
    assert pol.dtype == torch.float32
    for got, want in [(pol, e_logps), (kl, e_kl), (logps, e_logps), (ent, e_ent)]:
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    (pol + kl).sum().backward()
    assert x.grad.dtype == torch.bfloat16


def test_shift_for_next_token_matches_hf_cross_entropy():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 6, V, generator=g)
    input_ids = torch.randint(0, V, (2, 6), generator=g)
    labels = input_ids.clone()
    labels[:, :3] = -100  # prompt
    labels[1, 5] = -100  # padding
    s_logits, s_labels = shift_for_next_token(logits, labels)
    assert s_logits._base is logits and s_labels._base is labels  # views, no copies
    logps, n = sequence_logps(s_logits, s_labels)
    hf = F.cross_entropy(s_logits.reshape(-1, V), s_labels.reshape(-1), ignore_index=-100, reduction="sum")
    torch.testing.assert_close(-logps.sum(), hf)
    # the position before the first response token (index 2 of the logits) predicts it and is counted
    assert n.tolist() == [3.0, 2.0] and s_labels[0, 2] == input_ids[0, 3]


def test_all_positions_ignored():
    policy, ref, _ = _batch()
    labels = torch.full((B, T), -100)
    x = policy.clone().requires_grad_()
    pol, rl, kl = token_logps_and_kl(x, ref, labels)
    (pol + kl).sum().backward()
    assert pol.tolist() == rl.tolist() == kl.tolist() == [0.0] * B
    assert (x.grad == 0).all()


def test_autograd_saves_no_vocabulary_sized_intermediates():
    """Memory-lean without timing: everything autograd keeps for backward is either an input or O(positions).

    A naive implementation (full log_softmax) would save [B, T, V] float32 tensors here.
    """
    policy, ref, labels = _batch(torch.bfloat16)
    x = policy.clone().requires_grad_()
    saved = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        pol, _, kl = token_logps_and_kl(x, ref, labels, chunk_size=2)
        s, _ = sequence_logps(x, labels, chunk_size=2)
        loss = (pol + kl + s).sum()
    inputs = {x.untyped_storage().data_ptr(), ref.untyped_storage().data_ptr()}
    large = [s for s in saved if s.numel() >= V and s.untyped_storage().data_ptr() not in inputs]
    assert saved and all(s.numel() <= B * T for s in large), [tuple(s.shape) for s in large]
    loss.backward()
