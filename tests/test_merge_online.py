"""Online merging optimizers OnDARE / OnTIES (METHODS.md section 5).

* p = 1, a = 0 is torch.optim.AdamW, step for step, with weight decay and two parameter groups;
* hand cases with a linear loss L = sum(c * theta), whose Adam update is known in closed form at every step:
  m_hat = c and v_hat = c^2, so Delta = -lr * c / (|c| + eps);
* the task vector is computed once, and nothing of the base model stays referenced.
"""
import copy
import gc
import weakref

import pytest
import torch

from alignlab.errors import ConfigError
from alignlab.merge.online import (OnDARE, OnTIES, build_online_optimizer, check_strategy, dare_merge,
                                   task_vectors, ties_merge, top_p_mask)

pytestmark = pytest.mark.usefixtures("single_thread")




def small_net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


def groups(net, wd):
    decay = [p for p in net.parameters() if p.ndim >= 2]
    no_decay = [p for p in net.parameters() if p.ndim < 2]
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


def run_steps(net, opt, steps=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    trajectory = []
    for _ in range(steps):
        x, y = torch.randn(5, 6, generator=g), torch.randn(5, 3, generator=g)
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        opt.step()
        trajectory.append([p.detach().clone() for p in net.parameters()])
    return trajectory


@pytest.mark.parametrize("cls,step_k", [(OnDARE, 1), (OnTIES, 1), (OnDARE, 3), (OnTIES, 2)])
def test_p1_a0_is_adamw_step_for_step(cls, step_k):
    ref_net, net = small_net(), small_net()
    ours_groups = groups(net, 0.1)
    # base tensors follow the optimizer's order of parameters (the groups' lists concatenated); any base will do,
    # a = 0 ignores tau
    base = [torch.randn_like(p) for g in ours_groups for p in g["params"]]
    adamw = torch.optim.AdamW(groups(ref_net, 0.1), lr=0.01, betas=(0.9, 0.95), eps=1e-8)
    ours = cls(ours_groups, base, lr=0.01, betas=(0.9, 0.95), eps=1e-8, p=1.0, a=0.0, step_k=step_k)
    scheduler_a = torch.optim.lr_scheduler.LambdaLR(adamw, lambda s: 1.0 / (1 + s))
    scheduler_b = torch.optim.lr_scheduler.LambdaLR(ours, lambda s: 1.0 / (1 + s))
    g = torch.Generator().manual_seed(1)
    for _ in range(7):
        x, y = torch.randn(5, 6, generator=g), torch.randn(5, 3, generator=g)
        for model, opt, sched in ((ref_net, adamw, scheduler_a), (net, ours, scheduler_b)):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            sched.step()
        for a, b in zip(ref_net.parameters(), net.parameters()):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)
    moved = [(a - b).abs().max() for a, b in zip(small_net().parameters(), net.parameters())]
    assert min(moved) > 1e-3  # the comparison is not vacuous


def linear_loss_step(opt, param, c):
    opt.zero_grad()
    (param * c).sum().backward()
    opt.step()


def test_ondare_hand_case_merges_the_task_vector():
    theta0 = torch.tensor([0.5, -0.2, 0.1, 0.0])
    base = torch.tensor([0.4, 0.1, 0.1, -0.3])  # tau = [0.1, -0.3, 0.0, 0.3]
    c = torch.tensor([1.0, -2.0, 0.5, 3.0])
    lr, eps, a = 0.1, 1e-8, 0.25
    delta = -lr * c / (c.abs() + eps)
    tau = theta0 - base
    param = torch.nn.Parameter(theta0.clone())
    opt = OnDARE([param], [base], lr=lr, eps=eps, weight_decay=0.0, p=1.0, a=a)
    linear_loss_step(opt, param, c)
    torch.testing.assert_close(param.detach(), theta0 + (1 - a) * delta + a * tau)
    linear_loss_step(opt, param, c)  # tau is fixed: the same increment again
    torch.testing.assert_close(param.detach(), theta0 + 2 * ((1 - a) * delta + a * tau))

    # weight decay is decoupled: theta_t * (1 - lr * wd) + merged update
    param = torch.nn.Parameter(theta0.clone())
    opt = OnDARE([param], [base], lr=lr, eps=eps, weight_decay=0.5, p=1.0, a=a)
    linear_loss_step(opt, param, c)
    torch.testing.assert_close(param.detach(), theta0 * (1 - lr * 0.5) + (1 - a) * delta + a * tau)


def test_step_k_merges_the_accumulated_update_every_k_steps():
    theta0 = torch.tensor([0.5, -0.2, 0.1])
    base = torch.tensor([0.3, 0.2, -0.1])
    c = torch.tensor([1.0, -1.0, 2.0])
    lr, eps, a = 0.1, 1e-8, 0.5
    delta = -lr * c / (c.abs() + eps)
    tau = theta0 - base
    param = torch.nn.Parameter(theta0.clone())
    opt = OnDARE([param], [base], lr=lr, eps=eps, weight_decay=0.0, p=1.0, a=a, step_k=2)
    linear_loss_step(opt, param, c)  # step 1: plain AdamW
    torch.testing.assert_close(param.detach(), theta0 + delta)
    linear_loss_step(opt, param, c)  # step 2: roll back, merge both steps' update with tau
    torch.testing.assert_close(param.detach(), theta0 + (1 - a) * 2 * delta + a * tau)


def test_ondare_masks_are_fresh_seeded_and_optionally_rescaled():
    n, p, lr = 4000, 0.3, 0.1
    c = torch.ones(n)
    updates = []
    for seed, rescale in ((0, False), (0, False), (1, False), (0, True)):
        param = torch.nn.Parameter(torch.zeros(n))
        opt = OnDARE([param], [torch.zeros(n)], lr=lr, eps=0.0, weight_decay=0.0, p=p, a=0.0, rescale=rescale,
                     seed=seed)
        steps = []
        for _ in range(2):
            before = param.detach().clone()
            linear_loss_step(opt, param, c)
            steps.append(param.detach() - before)
        updates.append(steps)
    (s1, s2), (t1, _), (u1, _), (r1, _) = updates
    kept = s1 != 0
    assert abs(kept.float().mean().item() - p) < 0.04  # each coordinate kept with probability p
    torch.testing.assert_close(s1[kept], torch.full_like(s1[kept], -lr))
    assert not torch.equal(s1 != 0, s2 != 0)  # fresh mask every step
    assert torch.equal(s1, t1)  # same seed, same masks
    assert not torch.equal(s1 != 0, u1 != 0)  # another seed, other masks
    assert torch.equal(r1 != 0, kept)
    torch.testing.assert_close(r1[kept], torch.full_like(r1[kept], -lr / p))  # rescale divides the kept by p


def test_top_p_mask_and_ties_consensus_hand_cases():
    x = torch.tensor([0.1, -0.5, 0.3, -0.05])
    assert top_p_mask(x, 0.5).tolist() == [False, True, True, False]
    assert top_p_mask(x, 0.2).tolist() == [False, True, False, False]  # ceil(0.8) = 1 entry
    assert top_p_mask(x, 1.0).all()
    assert int(top_p_mask(torch.arange(10.0), 0.7).sum()) == 7  # not 8: 0.7 * 10 = 7.000000000000001

    # A = (1-a) delta, B = a tau with a = 0.5 (p = 1: no trimming)
    delta = torch.tensor([-0.1, 0.1, -0.1, 0.1, -0.1])
    tau = torch.tensor([0.04, 0.3, 0.3, -0.02, 0.0])
    # A = [-.05, .05, -.05, .05, -.05], B = [.02, .15, .15, -.01, 0], sign(A+B) = [-, +, +, +, -]
    want = torch.tensor([-0.05, 0.2, 0.15, 0.05, -0.05])
    torch.testing.assert_close(ties_merge(delta, tau, 1.0, 0.5), want)
    # the released code elects the sign of the unweighted sum: with a small a the result differs
    a = 0.1  # A = 0.9 delta, B = 0.1 tau; weighted sum A+B = [-.086, .12, -.06, .088, -.09]
    torch.testing.assert_close(ties_merge(delta, tau, 1.0, a),
                               torch.tensor([-0.09, 0.12, -0.09, 0.09, -0.09]))
    # unweighted: sign(delta + tau) = [-, +, +, +, -] -> entry 2 keeps B = 0.03 instead of A
    torch.testing.assert_close(ties_merge(delta, tau, 1.0, a, sign_election="unweighted"),
                               torch.tensor([-0.09, 0.12, 0.03, 0.09, -0.09]))
    # trimming: p = 0.4 keeps the 2 largest entries of each side before the consensus
    torch.testing.assert_close(ties_merge(torch.tensor([0.3, -0.1, 0.2, 0.05, -0.4]),
                                          torch.tensor([-1.0, 0.5, 0.1, 0.8, 0.0]), 0.4, 0.5, rescale=False),
                               torch.tensor([-0.5, 0.0, 0.0, 0.4, -0.2]))
    # by default the kept entries are divided by p (unbiased): the same entries, 1/0.4 times larger
    torch.testing.assert_close(ties_merge(torch.tensor([0.3, -0.1, 0.2, 0.05, -0.4]),
                                          torch.tensor([-1.0, 0.5, 0.1, 0.8, 0.0]), 0.4, 0.5),
                               torch.tensor([-0.5, 0.0, 0.0, 0.4, -0.2]) / 0.4)


def test_onties_optimizer_hand_case():
    c = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0])
    tau = torch.tensor([0.04, 0.3, 0.3, -0.02, 0.0])
    theta0 = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    param = torch.nn.Parameter(theta0.clone())
    opt = OnTIES([param], [theta0 - tau], lr=0.1, eps=1e-8, weight_decay=0.0, p=1.0, a=0.5)
    linear_loss_step(opt, param, c)  # Delta = -0.1 * sign(c)
    torch.testing.assert_close(param.detach(), theta0 + torch.tensor([-0.05, 0.2, 0.15, 0.05, -0.05]))


def test_dare_merge_with_p1_is_the_weighted_sum():
    d, t = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 0.5])
    torch.testing.assert_close(dare_merge(d, t, 1.0, 0.2), 0.8 * d + 0.2 * t)


def test_task_vector_is_computed_once_and_the_base_is_released():
    net = small_net()
    base_net = small_net(seed=7)
    want = [p.detach() - b.detach() for p, b in zip(net.parameters(), base_net.parameters())]
    refs = [weakref.ref(b) for b in base_net.parameters()]
    base_ptrs = {b.data_ptr() for b in base_net.parameters()}
    opt = OnDARE(net.parameters(), (b.detach() for b in base_net.parameters()), lr=1e-3, p=0.5, a=0.1)
    taus = [opt.state[p]["tau"] for p in net.parameters()]
    for tau, w in zip(taus, want):
        assert torch.equal(tau, w)
    state_tensors = [v for s in opt.state.values() for v in s.values() if torch.is_tensor(v)]
    assert not base_ptrs & {t.data_ptr() for t in state_tensors}
    del base_net
    gc.collect()
    assert all(r() is None for r in refs)  # nothing in the optimizer kept the base alive
    run_steps(net, opt, steps=2)
    for p, tau, w in zip(net.parameters(), taus, want):
        assert opt.state[p]["tau"] is tau and torch.equal(tau, w)  # never recomputed nor modified


def test_task_vectors_helper_and_builder_check_names_and_shapes():
    net, base = small_net(), small_net(seed=3).state_dict()
    named = list(net.named_parameters())
    taus = task_vectors(named, base)
    assert all(torch.equal(t, p.detach() - base[n]) for t, (n, p) in zip(taus, named))
    with pytest.raises(ValueError, match=r"merge\.base_model has no tensor '2\.bias'"):
        task_vectors(named, {k: v for k, v in base.items() if k != "2.bias"})
    with pytest.raises(ValueError, match=r"'0\.weight' has shape \[8, 5\] but the trained model's has \[8, 6\]"):
        task_vectors(named, {**base, "0.weight": torch.zeros(8, 5)})
    decay = [(n, p) for n, p in named if p.ndim >= 2]
    no_decay = [(n, p) for n, p in named if p.ndim < 2]
    opt = build_online_optimizer(OnTIES, [{"params": decay, "weight_decay": 0.1},
                                          {"params": no_decay, "weight_decay": 0.0}], base, lr=1e-3, p=0.5)
    assert isinstance(opt, OnTIES) and [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert torch.equal(opt.state[dict(named)["0.weight"]]["tau"], dict(named)["0.weight"].detach() - base["0.weight"])
    with pytest.raises(TypeError, match="not an online merging optimizer"):
        build_online_optimizer(torch.optim.AdamW, [], base, lr=1e-3)


def test_hyperparameters_are_validated():
    net = small_net()
    base = [p.detach().clone() for p in net.parameters()]
    for kwargs, key in (({"p": 0.0}, "merge.p"), ({"p": 1.5}, "merge.p"), ({"a": -0.1}, "merge.a"),
                        ({"step_k": 0}, "merge.step_k")):
        with pytest.raises(ConfigError, match=key):
            OnDARE(net.parameters(), base, **kwargs)
    with pytest.raises(ConfigError, match="merge.base_model is required"):
        OnDARE(net.parameters())
    with pytest.raises(ValueError, match="base_params has 2 tensors"):
        OnDARE(net.parameters(), base[:2])


def test_deepspeed_and_fsdp_strategies_are_refused():
    class DeepSpeedStrategy:
        config = {"zero_optimization": {"stage": 2}}

    class FSDPStrategy:
        pass

    class SingleDeviceStrategy:
        pass

    with pytest.raises(ConfigError, match="DeepSpeed ZeRO.*zero stage 2"):
        check_strategy(DeepSpeedStrategy())
    with pytest.raises(ConfigError, match="FSDP"):
        check_strategy(FSDPStrategy())
    check_strategy(SingleDeviceStrategy())


def test_state_dict_round_trip_resumes_the_same_mask_stream():
    net = small_net()
    base = [torch.zeros_like(p) for p in net.parameters()]
    opt = OnDARE(net.parameters(), base, lr=0.01, p=0.5, a=0.3, seed=4)
    run_steps(net, opt, steps=2, seed=1)
    saved_net, saved_state = copy.deepcopy(net), copy.deepcopy(opt.state_dict())
    uninterrupted = run_steps(net, opt, steps=3, seed=2)

    resumed = OnDARE(saved_net.parameters(), [torch.ones_like(p) for p in saved_net.parameters()], lr=0.01, p=0.5,
                     a=0.3, seed=99)
    resumed.load_state_dict(saved_state)  # restores tau, the moments and the mask generator
    again = run_steps(saved_net, resumed, steps=3, seed=2)
    for a, b in zip(uninterrupted, again):
        for x, y in zip(a, b):
            assert torch.equal(x, y)


def test_lightning_fit_and_resume_keep_the_original_task_vector(tmp_path):
    """On resume Lightning restores the weights before configure_optimizers, so a tau recomputed there would be
    wrong; the optimizer state (which holds tau) is loaded afterwards and restores the original one."""
    import lightning as L

    base = small_net(seed=5).state_dict()

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = small_net()

        def training_step(self, batch, _):
            x, y = batch
            return torch.nn.functional.mse_loss(self.net(x), y)

        def configure_optimizers(self):
            check_strategy(self.trainer.strategy)
            named = [(f"{n}", p) for n, p in self.net.named_parameters()]
            opt = build_online_optimizer(OnDARE, [{"params": named, "weight_decay": 0.01}], base, lr=0.05, p=0.5,
                                         a=0.2)
            return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)}

        def train_dataloader(self):
            g = torch.Generator().manual_seed(0)
            data = torch.utils.data.TensorDataset(torch.randn(12, 6, generator=g), torch.randn(12, 3, generator=g))
            return torch.utils.data.DataLoader(data, batch_size=4)

    def trainer(steps):
        return L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))

    module = Module()
    start = {n: p.detach().clone() for n, p in module.net.named_parameters()}
    first = trainer(3)
    first.fit(module)
    assert any(not torch.equal(p, start[n]) for n, p in module.net.named_parameters())
    first.save_checkpoint(tmp_path / "last.ckpt")

    resumed_module = Module()
    resumed = trainer(5)
    resumed.fit(resumed_module, ckpt_path=str(tmp_path / "last.ckpt"))
    opt = resumed.optimizers[0]
    assert isinstance(opt, OnDARE) and resumed.global_step == 5
    for n, p in resumed_module.net.named_parameters():
        assert torch.equal(opt.state[p]["tau"], start[n] - base[n]), n
