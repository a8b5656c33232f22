"""Sequence-level objectives (METHODS section 1) on hand-computed cases, and their gradients through the logits."""

import math

import pytest
import torch

from alignlab.losses import dpo_loss, ipo_loss, sequence_logps, sft_loss, simpo_loss

pytestmark = pytest.mark.usefixtures("single_thread")




def t(*values):
    return torch.tensor(values, dtype=torch.float64)


# Hand case: log pi(y_w) = -1, log pi(y_l) = -2, log ref(y_w) = log ref(y_l) = -1.5, beta = 0.5
#   logratio(y_w) = 0.5, logratio(y_l) = -0.5, h = 1, beta h = 0.5
#   DPO loss = -log sigmoid(0.5) = log(1 + e^-0.5) = 0.4740769842
#   cDPO (eps = 0.1) = 0.9 * 0.4740769842 + 0.1 * log(1 + e^0.5) = 0.4740769842 + 0.1 * 0.5 = 0.5240769842
HAND = dict(
    policy_chosen_logps=t(-1.0),
    policy_rejected_logps=t(-2.0),
    ref_chosen_logps=t(-1.5),
    ref_rejected_logps=t(-1.5),
)


def test_dpo_hand_value_and_rewards():
    losses, chosen, rejected = dpo_loss(**HAND, beta=0.5)
    assert losses.item() == pytest.approx(0.4740769842, abs=1e-9)
    assert chosen.item() == pytest.approx(0.25)  # beta * logratio(y_w) = 0.5 * 0.5
    assert rejected.item() == pytest.approx(-0.25)


def test_dpo_label_smoothing_hand_value():
    losses, _, _ = dpo_loss(**HAND, beta=0.5, label_smoothing=0.1)
    assert losses.item() == pytest.approx(0.5240769842, abs=1e-9)


def test_dpo_rewards_detached_and_batched():
    pc = torch.tensor([-1.0, -3.0], requires_grad=True)
    losses, chosen, rejected = dpo_loss(pc, t(-2.0, -1.0).float(), t(-1.5, -2.0).float(), t(-1.5, -2.0).float(), 0.1)
    assert losses.shape == (2,) and losses.requires_grad
    assert not chosen.requires_grad and not rejected.requires_grad
    # second pair: h = (-3 + 2) - (-1 + 2) = -2 -> loss = log(1 + e^{0.2})
    assert losses[1].item() == pytest.approx(math.log1p(math.exp(0.2)), abs=1e-6)


def test_dpo_large_margin_no_underflow():
    losses, _, _ = dpo_loss(t(0.0), t(-1e4), t(0.0), t(0.0), beta=1.0)
    assert torch.isfinite(losses).all() and losses.item() == pytest.approx(0.0, abs=1e-12)
    losses, _, _ = dpo_loss(t(-1e4), t(0.0), t(0.0), t(0.0), beta=1.0)
    assert losses.item() == pytest.approx(1e4)  # -log sigmoid(-1e4) = 1e4, not inf


def test_ipo_target_and_hand_value():
    # h = 1 is exactly the target 1/(2 beta) for beta = 0.5
    losses, chosen, rejected = ipo_loss(**HAND, beta=0.5)
    assert losses.item() == pytest.approx(0.0, abs=1e-12)
    assert (chosen.item(), rejected.item()) == pytest.approx((0.25, -0.25))
    # beta = 0.1: target 5, (1 - 5)^2 = 16
    losses, _, _ = ipo_loss(**HAND, beta=0.1)
    assert losses.item() == pytest.approx(16.0)


def test_simpo_length_normalisation_and_margin():
    # log pi(y_w) = -6 over 3 tokens (-2 per token), log pi(y_l) = -12 over 4 tokens (-3 per token), beta = 2
    # rewards -4 and -6, margin 2 - gamma 0.5 = 1.5, loss = log(1 + e^-1.5) = 0.2014132780
    losses, chosen, rejected = simpo_loss(t(-6.0), t(-12.0), t(3.0), t(4.0), beta=2.0, gamma=0.5)
    assert losses.item() == pytest.approx(0.2014132780, abs=1e-9)
    assert (chosen.item(), rejected.item()) == pytest.approx((-4.0, -6.0))
    # without normalisation the chosen would look worse: the length division is what makes chosen win here
    losses_long, _, _ = simpo_loss(t(-6.0), t(-12.0), t(3.0), t(40.0), beta=2.0, gamma=0.5)
    assert losses_long.item() > losses.item()


def test_sft_sum_mean_and_bad_value():
    logps, n = t(-6.0, -2.0), t(3.0, 4.0)
    assert sft_loss(logps, n).tolist() == [6.0, 2.0]
    assert sft_loss(logps, n, average="mean").tolist() == [2.0, 0.5]
    with pytest.raises(ValueError, match="'median'"):
        sft_loss(logps, n, average="median")


# ---- gradients wrt the policy logits vs finite differences (float64, tiny case) ----

B, T, V = 4, 5, 6  # rows 0-1 chosen, rows 2-3 rejected


def _tiny():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(B, T, V, dtype=torch.float64, generator=g, requires_grad=True)
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[:, :2] = -100  # prompt
    labels[1, 4:] = -100  # padding
    labels[3, 3:] = -100
    ref_logps = torch.randn(B, dtype=torch.float64, generator=g)
    return logits, labels, ref_logps


@pytest.mark.parametrize("method", ["dpo", "cdpo", "ipo", "simpo", "sft_sum", "sft_mean"])
def test_loss_gradient_wrt_logits_matches_finite_differences(method):
    logits, labels, ref = _tiny()

    def f(x):
        logps, n = sequence_logps(x, labels, chunk_size=3)
        pc, pr, nc, nr = logps[:2], logps[2:], n[:2], n[2:]
        if method == "dpo":
            return dpo_loss(pc, pr, ref[:2], ref[2:], beta=0.7)[0]
        if method == "cdpo":
            return dpo_loss(pc, pr, ref[:2], ref[2:], beta=0.7, label_smoothing=0.2)[0]
        if method == "ipo":
            return ipo_loss(pc / nc, pr / nr, ref[:2] / nc, ref[2:] / nr, beta=0.5)[0]
        if method == "simpo":
            return simpo_loss(pc, pr, nc, nr, beta=2.0, gamma=0.5)[0]
        return sft_loss(logps, n, average=method.split("_")[1])

    assert torch.autograd.gradcheck(f, (logits,), eps=1e-6, atol=1e-6)
