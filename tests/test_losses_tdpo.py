"""TDPO (METHODS section 2): hand values, the TDPO2 stop-gradient, and gradients through token_logps_and_kl."""

import math

import pytest
import torch

from alignlab.losses import dpo_loss, tdpo_loss, token_logps_and_kl

pytestmark = pytest.mark.usefixtures("single_thread")




def t(*values, grad=False):
    return torch.tensor(values, dtype=torch.float64, requires_grad=grad)


# Hand case: D_w = 0.5, D_l = -0.5, K_w = 0.2, K_l = 0.6, beta = 0.5, alpha = 0.5
#   TDPO1: u = 1 - (0.6 - 0.2) = 0.6        loss = log(1 + e^-0.3) = 0.5543552445
#   TDPO2: u = 1 - 0.5 (0.6 - 0.2) = 0.8    loss = log(1 + e^-0.4) = 0.5130152524
#   rewards beta (D + K): 0.5 * 0.7 = 0.35 and 0.5 * 0.1 = 0.05
@pytest.mark.parametrize("variant, expected", [("tdpo1", 0.5543552445), ("tdpo2", 0.5130152524)])
def test_tdpo_hand_values(variant, expected):
    losses, chosen, rejected = tdpo_loss(t(0.5), t(-0.5), t(0.2), t(0.6), beta=0.5, alpha=0.5, variant=variant)
    assert losses.item() == pytest.approx(expected, abs=1e-9)
    assert chosen.item() == pytest.approx(0.35)
    assert rejected.item() == pytest.approx(0.05)


def test_tdpo2_alpha_zero_is_dpo():
    g = torch.Generator().manual_seed(1)
    pc, pr, rc, rr, kw, kl = torch.randn(6, 8, dtype=torch.float64, generator=g)
    tdpo, _, _ = tdpo_loss(pc - rc, pr - rr, kw.abs(), kl.abs(), beta=0.3, alpha=0.0, variant="tdpo2")
    dpo, _, _ = dpo_loss(pc, pr, rc, rr, beta=0.3)
    torch.testing.assert_close(tdpo, dpo)


def test_tdpo2_stop_gradient_on_chosen_kl():
    beta, alpha = 0.5, 0.5
    grads = {}
    for variant in ("tdpo1", "tdpo2"):
        kw, kl = t(0.2, grad=True), t(0.6, grad=True)
        losses, _, _ = tdpo_loss(t(0.5), t(-0.5), kw, kl, beta=beta, alpha=alpha, variant=variant)
        g_kw, g_kl = torch.autograd.grad(losses.sum(), (kw, kl), allow_unused=True)
        grads[variant] = (0.0 if g_kw is None else g_kw.item(), g_kl.item())
    # d/dK_w of -log sigmoid(beta u) = -beta sigmoid(-beta u) du/dK_w; TDPO1 du/dK_w = 1 at u = 0.6
    assert grads["tdpo1"][0] == pytest.approx(-beta / (1 + math.exp(beta * 0.6)))
    assert grads["tdpo2"][0] == 0.0
    # the rejected KL still gets a gradient in TDPO2: beta alpha sigmoid(-beta u) at u = 0.8
    assert grads["tdpo2"][1] == pytest.approx(beta * alpha / (1 + math.exp(beta * 0.8)))


def test_tdpo_bad_variant():
    with pytest.raises(ValueError, match="tdpo1.*tdpo2"):
        tdpo_loss(t(0.0), t(0.0), t(0.0), t(0.0), beta=0.1, alpha=0.5, variant="tdpo3")


# ---- gradients wrt the policy logits through token_logps_and_kl ----

B, T, V = 4, 5, 6  # rows 0-1 chosen, rows 2-3 rejected


def _tiny():
    g = torch.Generator().manual_seed(0)
    policy = torch.randn(B, T, V, dtype=torch.float64, generator=g, requires_grad=True)
    ref = torch.randn(B, T, V, dtype=torch.float64, generator=g)
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[:, :2] = -100
    labels[2, 4:] = -100
    return policy, ref, labels


def _tdpo(x, ref, labels, variant, frozen_chosen_kl=None):
    pol, rl, kl = token_logps_and_kl(x, ref, labels, chunk_size=3)
    d = pol - rl
    kw = kl[:2] if frozen_chosen_kl is None else frozen_chosen_kl
    return tdpo_loss(d[:2], d[2:], kw, kl[2:], beta=0.4, alpha=0.7, variant=variant)[0]


def test_tdpo1_gradient_matches_finite_differences():
    policy, ref, labels = _tiny()
    assert torch.autograd.gradcheck(lambda x: _tdpo(x, ref, labels, "tdpo1"), (policy,), eps=1e-6, atol=1e-6)


def test_tdpo2_gradient_matches_finite_differences_with_frozen_chosen_kl():
    # stopgrad(K_w) means: the gradient equals that of the same loss with K_w held at its current value.
    policy, ref, labels = _tiny()
    analytic = torch.autograd.grad(_tdpo(policy, ref, labels, "tdpo2").sum(), policy)[0]
    with torch.no_grad():
        k_w = token_logps_and_kl(policy, ref, labels)[2][:2]
    assert torch.autograd.gradcheck(
        lambda x: _tdpo(x, ref, labels, "tdpo2", frozen_chosen_kl=k_w), (policy,), eps=1e-6, atol=1e-6
    )
    frozen = torch.autograd.grad(_tdpo(policy, ref, labels, "tdpo2", frozen_chosen_kl=k_w).sum(), policy)[0]
    torch.testing.assert_close(analytic, frozen)
    # and the stop-gradient matters: without it the gradient differs
    dw, dl, kw, kl = _split(policy, ref, labels)
    no_stop = -torch.nn.functional.logsigmoid(0.4 * ((dw - dl) - 0.7 * (kl - kw)))
    assert not torch.allclose(analytic, torch.autograd.grad(no_stop.sum(), policy)[0])


def _split(x, ref, labels):
    pol, rl, kl = token_logps_and_kl(x, ref, labels)
    d = pol - rl
    return d[:2], d[2:], kl[:2], kl[2:]
