"""AlignDistil (METHODS section 3): teachers on a hand-computed V = 3 case, the adaptive a_t, and the loss."""

import math

import pytest
import torch
import torch.nn.functional as F

from alignlab.losses import aligndistil_loss, aligndistil_teacher, shift_for_next_token

pytestmark = pytest.mark.usefixtures("single_thread")



BETA, BETA0 = 0.05, 0.1  # beta0 / beta = 2

# Hand case, V = 3: z_dpo = [1, 0, -1], z_other = [1, 2, 0]
#   dpo_ref:     2 z_dpo - z_ref             = [1, -2, -2],  w = beta = 0.05
#   contrastive: z_dpo + 2 (z_dpo - z_rev)   = [1, -4, -3],  w = 0.05
#   adaptive:    softmax(z_dpo) = [0.66524, 0.24473, 0.09003], softmax(z_rev) = [0.24473, 0.66524, 0.09003]
#                TVD = 0.5 (0.42051 + 0.42051) = 0.4205124847, a = 20 TVD + 1e-3 = 8.4112496944
#                z* = z_dpo + a [0, -2, -1] = [1, -16.8224993888, -9.4112496944], w = 0.1 / a = 0.0118888398
Z_DPO = torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)
Z_OTHER = torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64)
HAND = {
    "dpo_ref": ([1.0, -2.0, -2.0], 0.05),
    "contrastive": ([1.0, -4.0, -3.0], 0.05),
    "adaptive": ([1.0, -16.8224993888, -9.4112496944], 0.0118888398),
}


@pytest.mark.parametrize("teacher", sorted(HAND))
def test_teacher_hand_values(teacher):
    z_star, w = aligndistil_teacher(Z_DPO, Z_OTHER, teacher, beta=BETA, beta0=BETA0)
    expected_z, expected_w = HAND[teacher]
    torch.testing.assert_close(z_star, torch.tensor(expected_z, dtype=torch.float64), rtol=0, atol=1e-9)
    assert w.shape == () and w.item() == pytest.approx(expected_w, abs=1e-9)


def test_teacher_shapes_dtype_and_bad_name():
    d = torch.randn(2, 5, 7, dtype=torch.bfloat16, requires_grad=True)
    o = torch.randn(2, 5, 7, dtype=torch.bfloat16)
    z_star, w = aligndistil_teacher(d, o, "adaptive", beta=BETA, beta0=BETA0)
    assert z_star.shape == (2, 5, 7) and w.shape == (2, 5)
    assert z_star.dtype == w.dtype == torch.float32 and not z_star.requires_grad
    with pytest.raises(ValueError, match="dpo_ref.*contrastive.*adaptive"):
        aligndistil_teacher(d, o, "forward", beta=BETA, beta0=BETA0)


def test_adaptive_a_t_range():
    g = torch.Generator().manual_seed(0)
    d, o = torch.randn(2, 50, 9, generator=g) * 4, torch.randn(2, 50, 9, generator=g) * 4
    r, eps = 20.0, 1e-3
    _, w = aligndistil_teacher(d, o, "adaptive", beta=BETA, beta0=BETA0, r=r, eps=eps)
    a = BETA0 / w
    assert (a >= eps).all() and (a <= r + eps + 1e-5).all() and a.std() > 0
    # identical DPO and reverse models: TVD = 0, a_t = eps, teacher = z_dpo
    z_star, w = aligndistil_teacher(d, d.clone(), "adaptive", beta=BETA, beta0=BETA0, r=r, eps=eps)
    torch.testing.assert_close(BETA0 / w, torch.full_like(w, eps))
    torch.testing.assert_close(z_star, d)
    # disjoint distributions: TVD -> 1, a_t -> r + eps
    far = torch.tensor([[60.0, 0.0, 0.0]]), torch.tensor([[0.0, 60.0, 0.0]])
    _, w = aligndistil_teacher(*far, "adaptive", beta=BETA, beta0=BETA0, r=r, eps=eps)
    assert (BETA0 / w).item() == pytest.approx(r + eps, rel=1e-6)


# ---- the loss ----

B, T, V = 2, 6, 5


def _batch(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    student, dpo, other = (torch.randn(B, T, V, generator=g, dtype=dtype) for _ in range(3))
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[:, :2] = -100
    labels[1, 5:] = -100
    return student, dpo, other, labels


def _reference(student, dpo, other, labels, teacher):
    """Unchunked: full-vocabulary reverse KLs at every position, float64."""
    mask = (labels != -100).double()
    z_star, w = aligndistil_teacher(dpo, other, teacher, beta=BETA, beta0=BETA0)
    ls = F.log_softmax(student.double(), -1)

    def rkl(z):
        return (ls.exp() * (ls - F.log_softmax(z.double(), -1))).sum(-1)

    n = mask.sum(1)
    return {
        "losses": (w * rkl(z_star) * mask).sum(1) / n,
        "kl_teacher": (rkl(z_star) * mask).sum(1) / n,
        "kl_dpo": (rkl(dpo) * mask).sum(1) / n,
        "kl_other": (rkl(other) * mask).sum(1) / n,
        "weight_mean": (w * mask).sum() / mask.sum(),
        "alpha_mean": (BETA0 / w * mask).sum() / mask.sum(),
    }


@pytest.mark.parametrize("teacher", ["dpo_ref", "contrastive", "adaptive"])
def test_loss_matches_unchunked_reference_at_two_chunk_sizes(teacher):
    student, dpo, other, labels = _batch()
    want = _reference(student, dpo, other, labels, teacher)
    if teacher != "adaptive":
        want["alpha_mean"] = torch.tensor(BETA0 / BETA, dtype=torch.float64)
    for chunk_size in (3, 1024):
        got = aligndistil_loss(student, dpo, other, labels, teacher, beta=BETA, beta0=BETA0, chunk_size=chunk_size)
        assert set(got) == set(want)
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=1e-10, atol=1e-12, msg=key)


def test_loss_hand_value():
    # one position, uniform student, dpo_ref teacher z* = [1, -2, -2]:
    # KL(u || softmax(z*)) = -log 3 - mean(log softmax(z*)) = 0.9963106678, loss = beta * KL = 0.0498155334
    student = torch.zeros(1, 1, 3, dtype=torch.float64)
    out = aligndistil_loss(student, Z_DPO.view(1, 1, 3), Z_OTHER.view(1, 1, 3), torch.tensor([[0]]), "dpo_ref",
                           beta=BETA, beta0=BETA0)
    assert out["losses"].item() == pytest.approx(0.0498155334, abs=1e-9)
    assert out["kl_teacher"].item() == pytest.approx(0.9963106678, abs=1e-9)


@pytest.mark.parametrize("teacher", ["dpo_ref", "contrastive", "adaptive"])
def test_zero_at_teacher_positive_elsewhere(teacher):
    _, dpo, other, labels = _batch()
    z_star, _ = aligndistil_teacher(dpo, other, teacher, beta=BETA, beta0=BETA0)
    at_teacher = aligndistil_loss(z_star + 3.0, dpo, other, labels, teacher, beta=BETA, beta0=BETA0)  # shift-invariant
    torch.testing.assert_close(at_teacher["losses"], torch.zeros(B, dtype=torch.float64), rtol=0, atol=1e-12)
    off = aligndistil_loss(z_star + 0.5 * torch.randn_like(z_star), dpo, other, labels, teacher, beta=BETA,
                           beta0=BETA0)
    assert (off["losses"] > 0).all()


@pytest.mark.parametrize("teacher", ["dpo_ref", "contrastive", "adaptive"])
def test_gradient_only_to_student_and_matches_finite_differences(teacher):
    student, dpo, other, labels = _batch()
    x = student.clone().requires_grad_()
    d, o = dpo.clone().requires_grad_(), other.clone().requires_grad_()
    out = aligndistil_loss(x, d, o, labels, teacher, beta=BETA, beta0=BETA0, chunk_size=2)
    assert all(not out[k].requires_grad for k in out if k != "losses")
    out["losses"].sum().backward()
    assert d.grad is None and o.grad is None and x.grad.abs().sum() > 0
    assert (x.grad[labels == -100] == 0).all()
    assert torch.autograd.gradcheck(
        lambda s: aligndistil_loss(s, dpo, other, labels, teacher, beta=BETA, beta0=BETA0, chunk_size=2)["losses"],
        (student.clone().requires_grad_(),),
    )


def test_ignored_positions_have_no_effect():
    student, dpo, other, labels = _batch()
    ignored = (labels == -100).unsqueeze(-1)
    before = aligndistil_loss(student, dpo, other, labels, "adaptive", beta=BETA, beta0=BETA0)
    after = aligndistil_loss(student.masked_fill(ignored, 9.0), dpo.masked_fill(ignored, -9.0),
                             other + ignored * 40.0, labels, "adaptive", beta=BETA, beta0=BETA0)
    for key in before:
        assert torch.equal(before[key], after[key]), key


def test_first_response_position_is_distilled():
    # HF-style labels: prompt of 3 tokens, response of 3. After the shift, logits position 2 (the prompt's last
    # token) predicts the first response token; changing only that position must change the loss.
    g = torch.Generator().manual_seed(5)
    input_ids = torch.randint(0, V, (1, 6), generator=g)
    labels = input_ids.clone()
    labels[:, :3] = -100
    student, dpo, other = (torch.randn(1, 6, V, generator=g, dtype=torch.float64) for _ in range(3))

    def loss(s):
        (s, lab), (d, _), (o, _) = (shift_for_next_token(z, labels) for z in (s, dpo, other))
        return aligndistil_loss(s, d, o, lab, "adaptive", beta=BETA, beta0=BETA0)["losses"]

    moved = student.clone()
    moved[0, 2] += torch.tensor([3.0, -1.0, 0.0, 2.0, -2.0], dtype=torch.float64)
    assert not torch.allclose(loss(student), loss(moved))
    prompt_only = student.clone()
    prompt_only[0, :2] += 5.0 * torch.randn(2, V, generator=g, dtype=torch.float64)
    assert torch.equal(loss(student), loss(prompt_only))


def test_bf16_inputs_and_bad_teacher():
    student, dpo, other, labels = _batch(dtype=torch.float32)
    x = student.bfloat16().requires_grad_()
    out = aligndistil_loss(x, dpo.bfloat16(), other.bfloat16(), labels, "adaptive", beta=BETA, beta0=BETA0)
    want = _reference(student.bfloat16(), dpo.bfloat16(), other.bfloat16(), labels, "adaptive")
    assert out["losses"].dtype == torch.float32
    torch.testing.assert_close(out["losses"].double(), want["losses"], rtol=1e-5, atol=1e-6)
    out["losses"].sum().backward()
    assert x.grad.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="dpo_ref.*contrastive.*adaptive"):
        aligndistil_loss(student, dpo, other, labels, "forward", beta=BETA, beta0=BETA0)


def test_no_response_positions():
    student, dpo, other, _ = _batch()
    labels = torch.full((B, T), -100)
    out = aligndistil_loss(student, dpo, other, labels, "adaptive", beta=BETA, beta0=BETA0)
    assert all(torch.isfinite(v).all() for v in out.values())
    assert out["losses"].tolist() == [0.0, 0.0]


def test_alpha_mean_for_adaptive_is_mean_a_t():
    student, dpo, other, labels = _batch()
    out = aligndistil_loss(student, dpo, other, labels, "adaptive", beta=BETA, beta0=BETA0)
    m = labels != -100
    tvd = 0.5 * (dpo.softmax(-1) - other.softmax(-1)).abs().sum(-1)
    assert out["alpha_mean"].item() == pytest.approx((20.0 * tvd[m] + 1e-3).mean().item(), rel=1e-10)
    assert out["weight_mean"].item() == pytest.approx((BETA0 / (20.0 * tvd[m] + 1e-3)).mean().item(), rel=1e-10)
    assert math.isfinite(out["alpha_mean"].item())


def test_teacher_logits_at_response_positions_only_give_the_same_loss():
    """The packed form ([N, V] teacher rows at the response positions) equals the full [B, T, V] form."""
    from alignlab.losses import aligndistil_loss

    torch.manual_seed(3)
    B, T, V = 2, 5, 7
    student = torch.randn(B, T, V, dtype=torch.float64, requires_grad=True)
    dpo, rev = torch.randn(B, T, V, dtype=torch.float64), torch.randn(B, T, V, dtype=torch.float64)
    labels = torch.tensor([[-100, 1, 2, -100, -100], [-100, -100, 3, 4, 5]])
    mask = labels != -100
    full = aligndistil_loss(student, dpo, rev, labels, "adaptive", beta=0.1, beta0=0.1, chunk_size=2)
    packed = aligndistil_loss(student, dpo[mask], rev[mask], labels, "adaptive", beta=0.1, beta0=0.1, chunk_size=2,
                              teacher_at_positions=True)
    for key in full:
        torch.testing.assert_close(full[key], packed[key])
    g_full, = torch.autograd.grad(full["losses"].sum(), student)
    g_packed, = torch.autograd.grad(packed["losses"].sum(), student)
    torch.testing.assert_close(g_full, g_packed)
