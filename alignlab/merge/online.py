"""Online merging optimizers OnDARE and OnTIES (Lu et al. 2024; METHODS.md section 5).

Both are AdamW whose proposed update is merged with the SFT task vector before it is applied. Per parameter, at
step t (grad g, Adam moments m, v over the FULL gradient):

    m <- b1 m + (1-b1) g ;  v <- b2 v + (1-b2) g^2
    Delta = -lr * m_hat / (sqrt(v_hat) + eps)                   (m_hat = m/(1-b1^t), v_hat = v/(1-b2^t))
    OnDARE:  U = (1-a) * D_p(Delta) + a * D_p(tau)           D_p: keep each entry with prob. p (fresh masks)
    OnTIES:  A = (1-a) * T_p(Delta), B = a * T_p(tau)        T_p: keep the top-p fraction by magnitude
             e = sign(A + B);  U = A * [sign(A) == e] + B * [sign(B) == e]
    theta <- theta - lr * wd * theta + U                      (decoupled weight decay)

tau = theta_sft - theta_base is computed once per parameter at construction (theta_sft = the parameter's value
then) and kept in the optimizer state (``state[p]["tau"]``, so it is saved and restored with the optimizer for
resume); the base weights are not referenced afterwards. Memory: one dense parameter-sized tensor per parameter
(tau) on top of AdamW's two, plus one more with step_k > 1.

Conventions and options (``p``, ``a``, ``rescale``, ``step_k``, ``seed`` are per-group hyperparameters):

* p = 1 and a = 0 is exactly torch.optim.AdamW (tests check step for step, with weight decay). Weight decay is
  applied as AdamW does, to theta_t (the released code decays the already-updated theta, which differs by
  lr*wd*U, a second-order term); we keep AdamW's form so the p=1, a=0 equivalence is exact.
* Fresh masks every step for both Delta and tau (METHODS; the released OnDARE drops tau once at setup). Masks come
  from a ``torch.Generator`` per device seeded with ``seed`` (identical on every data-parallel rank, so replicated
  parameters stay identical); its state is saved in ``state_dict()`` so resumed runs continue the same stream.
* ``rescale=True`` (default): kept entries are divided by p, so that E[D_p(x)] = x and an OnDARE step is on average
  an AdamW step: the released OnDARE rescales through F.dropout, the paper's section 5.3 calls OnDARE unbiased, and
  its learning rates were tuned that way. ``False`` is the unscaled Eq. 4, whose expected step is p times an AdamW
  step (1% at p = 0.01), so the papers' learning rates do not transfer to it. It applies to D_p and T_p alike.
* T_p keeps ceil(p * n) entries of an n-entry tensor (at least one). Since tau is constant, T_p(tau) is computed
  once, in place, at the first merge step.
* OnTIES elects the sign of the *weighted* sum A + B, as METHODS writes it. ``sign_election="unweighted"`` elects
  the sign of T_p(Delta) + T_p(tau) instead (the released OTAdamW). A coordinate whose sum is exactly 0 keeps
  nothing.
* ``step_k = K > 1`` (the released k-step variant): steps that are not multiples of K are plain AdamW steps whose
  updates are also accumulated; on every K-th step those accumulated updates are rolled back and merged together
  with the current one, so the merge acts on the K-step update.

Not combinable with DeepSpeed ZeRO, whose optimizer works on flattened, partitioned copies of the parameters
(tau could not be matched to them): :func:`check_strategy` raises a clear error.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Mapping, Sequence

import torch

from alignlab.errors import ConfigError

__all__ = ["SIGN_ELECTIONS", "OnDARE", "OnTIES", "OnlineMergingAdamW", "build_online_optimizer", "check_merge_hparams",
           "check_sign_election", "check_strategy", "dare_merge", "task_vectors", "ties_merge", "top_p_mask"]


# ---- task vectors --------------------------------------------------------------------------------------------------
@torch.no_grad()
def task_vectors(named_params: Iterable[tuple[str, torch.Tensor]],
                 base_state_dict: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
    """tau = theta - theta_base for each (name, parameter), in order, on the parameter's device and dtype.

    Raises ValueError naming the first parameter the base lacks or whose shape differs (the names are the
    policy's ``named_parameters()`` names; pass the base model's ``state_dict()``)."""
    out = []
    for name, p in named_params:
        if name not in base_state_dict:
            raise ValueError(f"merge.base_model has no tensor {name!r} (shape {list(p.shape)}) of the trained "
                             f"model: is it the same architecture?")
        base = base_state_dict[name]
        if tuple(base.shape) != tuple(p.shape):
            raise ValueError(f"merge.base_model tensor {name!r} has shape {list(base.shape)} but the trained model's "
                             f"has {list(p.shape)}")
        out.append(p.detach() - base.to(device=p.device, dtype=p.dtype))
    return out


# ---- the merge operators (pure functions on tensors) ---------------------------------------------------------------
def top_p_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    """Boolean mask of the ceil(p * numel) entries of largest magnitude (all entries when p >= 1)."""
    n = x.numel()
    k = max(1, math.ceil(round(p * n, 6))) if n else 0  # round: 0.7 * 10 is 7.000000000000001 in floats
    if k >= n:
        return torch.ones_like(x, dtype=torch.bool)
    mask = torch.zeros(n, dtype=torch.bool, device=x.device)
    mask[x.reshape(-1).abs().topk(k, sorted=False).indices] = True
    return mask.view_as(x)


def _keep(x: torch.Tensor, mask: torch.Tensor | None, p: float, rescale: bool) -> torch.Tensor:
    if mask is None:
        return x
    kept = x * mask
    return kept.div_(p) if rescale else kept


def _bernoulli_mask(x: torch.Tensor, p: float, generator: torch.Generator | None) -> torch.Tensor | None:
    if p >= 1.0:
        return None
    return torch.rand(x.shape, generator=generator, device=x.device) < p


def dare_merge(delta: torch.Tensor, tau: torch.Tensor, p: float, a: float, rescale: bool = True,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """(1 - a) * D_p(delta) + a * D_p(tau), with independent fresh Bernoulli(p) keep-masks."""
    kept_delta = _keep(delta, _bernoulli_mask(delta, p, generator), p, rescale)
    if a == 0.0:
        return kept_delta
    kept_tau = _keep(tau, _bernoulli_mask(tau, p, generator), p, rescale)
    return kept_delta.mul(1.0 - a).add_(kept_tau, alpha=a)


SIGN_ELECTIONS = ("weighted", "unweighted")


def check_sign_election(sign_election: str) -> str:
    if sign_election not in SIGN_ELECTIONS:
        raise ConfigError(f"merge.sign_election={sign_election!r} is not one of {list(SIGN_ELECTIONS)}")
    return sign_election


def ties_merge(delta: torch.Tensor, tau: torch.Tensor, p: float, a: float, rescale: bool = True,
               tau_trimmed: bool = False, sign_election: str = "weighted") -> torch.Tensor:
    """TIES consensus of A = (1-a) T_p(delta) and B = a T_p(tau): keep the entries whose sign equals the sign of
    A + B ("weighted", METHODS) or of T_p(delta) + T_p(tau) ("unweighted", released code); return their sum.
    tau_trimmed=True: tau is already T_p(tau)."""
    td = _keep(delta, None if p >= 1 else top_p_mask(delta, p), p, rescale)
    tt = tau if tau_trimmed else _keep(tau, None if p >= 1 else top_p_mask(tau, p), p, rescale)
    A, B = td * (1.0 - a), tt * a
    elected = torch.sign(A + B) if check_sign_election(sign_election) == "weighted" else torch.sign(td + tt)
    return A * (torch.sign(A) == elected) + B * (torch.sign(B) == elected)


# ---- the optimizers ------------------------------------------------------------------------------------------------
def check_merge_hparams(p, a, step_k) -> None:
    """The merging hyperparameters (merge.p, merge.a, merge.step_k), or a ConfigError naming the key."""
    if not 0.0 < p <= 1.0:
        raise ConfigError(f"merge.p={p} must be in (0, 1] (the keep probability / kept top fraction)")
    if not 0.0 <= a <= 1.0:
        raise ConfigError(f"merge.a={a} must be in [0, 1] (the weight of the task vector)")
    if isinstance(step_k, bool) or not isinstance(step_k, int) or step_k < 1:
        raise ConfigError(f"merge.step_k={step_k!r} must be a positive integer")


def _check_hparams(lr, betas, eps, weight_decay, p, a, step_k) -> None:
    if not lr >= 0:
        raise ConfigError(f"learning rate {lr} must be >= 0")
    if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
        raise ConfigError(f"betas {tuple(betas)} must be in [0, 1)")
    if not eps >= 0:
        raise ConfigError(f"eps {eps} must be >= 0")
    if not weight_decay >= 0:
        raise ConfigError(f"weight_decay {weight_decay} must be >= 0")
    check_merge_hparams(p, a, step_k)


class OnlineMergingAdamW(torch.optim.Optimizer):
    """AdamW whose update is merged with the SFT task vector (subclasses define :meth:`merge_update`).

    ``params``: tensors or parameter groups, as for torch.optim.AdamW. The task vector comes from exactly one of

    * ``base_params``: base-model tensors aligned one to one with the parameters in the order the optimizer holds
      them (the groups' ``params`` lists concatenated, in order); tau = param - base, computed here;
    * ``task_vectors``: precomputed tau tensors in that same order (see :func:`task_vectors`); the optimizer takes
      them over (no copy when device and dtype already match; OnTIES trims them in place).

    Nothing of the base is kept: only tau (a new tensor) is stored, in ``state[param]["tau"]``.
    """

    def __init__(self, params, base_params: Iterable[torch.Tensor] | None = None, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01,
                 p: float = 0.01, a: float = 1e-7, rescale: bool = True, step_k: int = 1, seed: int = 0,
                 task_vectors: Iterable[torch.Tensor] | None = None):
        _check_hparams(lr, betas, eps, weight_decay, p, a, step_k)
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay, "p": p, "a": a,
                    "rescale": bool(rescale), "step_k": step_k}
        super().__init__(params, defaults)
        for group in self.param_groups:
            _check_hparams(group["lr"], group["betas"], group["eps"], group["weight_decay"], group["p"], group["a"],
                           group["step_k"])
        if (base_params is None) == (task_vectors is None):
            raise ConfigError("online merging needs exactly one of base_params (the base model's tensors) or "
                              "task_vectors (merge.base_model is required for merge=ondare/onties)")
        self.seed = int(seed)
        self._generators: dict[str, torch.Generator] = {}
        params_in_order = [q for group in self.param_groups for q in group["params"]]
        source = iter(base_params if base_params is not None else task_vectors)
        with torch.no_grad():
            for i, param in enumerate(params_in_order):
                try:
                    given = next(source)
                except StopIteration:
                    raise ValueError(f"{'base_params' if task_vectors is None else 'task_vectors'} has {i} tensors "
                                     f"but the optimizer has {len(params_in_order)} parameters") from None
                if tuple(given.shape) != tuple(param.shape):
                    raise ValueError(f"tensor {i} of {'base_params' if task_vectors is None else 'task_vectors'} "
                                     f"has shape {list(given.shape)} but parameter {i} has {list(param.shape)}")
                given = given.to(device=param.device, dtype=param.dtype)
                self.state[param]["tau"] = param.detach() - given if task_vectors is None else given
                del given
            if next(source, None) is not None:
                raise ValueError(f"more base tensors than the optimizer's {len(params_in_order)} parameters")
        del source

    # ---- subclass hook ----
    def merge_update(self, delta: torch.Tensor, state: dict, group: dict,
                     generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    # ---- machinery ----
    def _generator(self, device: torch.device) -> torch.Generator:
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[key]

    def state_dict(self):
        out = super().state_dict()
        out["merge_rng"] = {"seed": self.seed, "generators": {k: g.get_state() for k, g in self._generators.items()}}
        return out

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        rng = state_dict.pop("merge_rng", None)
        super().load_state_dict(state_dict)
        if rng is not None:
            self.seed = int(rng["seed"])
            self._generators = {}
            for key, gen_state in rng["generators"].items():
                self._generator(torch.device(key)).set_state(gen_state)

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, wd, eps, step_k = group["lr"], group["weight_decay"], group["eps"], group["step_k"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                if grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                state = self.state[param]
                if "tau" not in state:
                    raise RuntimeError(f"{type(self).__name__}: a parameter has no task vector (was it added with "
                                       f"add_param_group after construction?)")
                if "step" not in state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    if step_k > 1:
                        state["pending"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                state["step"] += 1
                t = state["step"]
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.lerp_(grad, 1.0 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                bias_correction1 = 1.0 - beta1 ** t
                bias_correction2 = 1.0 - beta2 ** t
                denom = (exp_avg_sq.sqrt() / math.sqrt(bias_correction2)).add_(eps)
                delta = (exp_avg / denom).mul_(-lr / bias_correction1)  # -lr * m_hat / (sqrt(v_hat) + eps)

                if wd != 0.0:
                    param.mul_(1.0 - lr * wd)  # decoupled weight decay of theta_t, as torch.optim.AdamW
                if step_k > 1:
                    pending = state.setdefault("pending", torch.zeros_like(param))
                    if t % step_k != 0:  # a plain AdamW step, remembered for the next merge
                        pending.add_(delta)
                        param.add_(delta)
                        continue
                    param.sub_(pending)  # roll back the K-1 plain steps and merge them with this one
                    delta.add_(pending)
                    pending.zero_()
                param.add_(self.merge_update(delta, state, group, self._generator(param.device)))
        return loss


class OnDARE(OnlineMergingAdamW):
    """theta <- theta + (1 - a) D_p(Delta) + a D_p(tau) (then decoupled weight decay); defaults p=0.01, a=1e-7.

    ``OnDARE(params, base_params, lr, betas, eps, weight_decay, p, a, rescale, step_k, seed)``; see
    :class:`OnlineMergingAdamW` for base_params / task_vectors."""

    def merge_update(self, delta, state, group, generator):
        return dare_merge(delta, state["tau"], group["p"], group["a"], group["rescale"], generator)


class OnTIES(OnlineMergingAdamW):
    """A = (1-a) T_p(Delta), B = a T_p(tau); keep the entries agreeing with sign(A + B); theta <- theta + A + B
    (then decoupled weight decay). ``sign_election="unweighted"`` reproduces the released code's election."""

    def __init__(self, params, base_params=None, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, p: float = 0.01, a: float = 1e-7, rescale: bool = True,
                 step_k: int = 1, seed: int = 0, task_vectors=None, sign_election: str = "weighted"):
        self.sign_election = check_sign_election(sign_election)
        super().__init__(params, base_params, lr, betas, eps, weight_decay, p, a, rescale, step_k, seed,
                         task_vectors=task_vectors)

    def merge_update(self, delta, state, group, generator):
        p = group["p"]
        if p < 1.0:  # T_p(tau) never changes: trim tau once, in place (no second dense copy)
            done = state.get("tau_trimmed_p")
            if done is None:
                tau = state["tau"]
                tau.mul_(top_p_mask(tau, p))
                if group["rescale"]:
                    tau.div_(p)
                state["tau_trimmed_p"] = p
            elif done != p:
                raise RuntimeError(f"OnTIES: merge.p changed from {done} to {p} after tau was trimmed")
        return ties_merge(delta, state["tau"], p, group["a"], group["rescale"], tau_trimmed=True,
                          sign_election=self.sign_election)


# ---- integration helpers -------------------------------------------------------------------------------------------
def check_strategy(strategy) -> None:
    """Raise a ConfigError if the Lightning strategy hands the optimizer flattened parameters: DeepSpeed (ZeRO
    partitions flat fp32 copies) or FSDP (flat parameters). Single device and DDP are fine."""
    name = type(strategy).__name__
    if "DeepSpeed" in name:
        config = getattr(strategy, "config", None)
        stage = (config.get("zero_optimization") or {}).get("stage") if isinstance(config, dict) else None
        raise ConfigError(f"merge=ondare/onties (online merging optimizers) cannot run under DeepSpeed ZeRO "
                          f"(strategy {name}, zero stage {stage}): DeepSpeed's optimizer works on flattened, "
                          f"partitioned copies of the parameters, so the per-parameter task vectors cannot be "
                          f"matched to them. Use a single-device or DDP trainer (e.g. trainer=gpu or trainer=ddp), "
                          f"or a post-hoc merge (merge=average / merge=hma)")
    if "FSDP" in name:
        raise ConfigError(f"merge=ondare/onties cannot run under {name}: FSDP flattens the parameters the optimizer "
                          f"sees. Use a single-device or DDP trainer, or a post-hoc merge (merge=average / hma)")


def build_online_optimizer(optimizer_class: type[OnlineMergingAdamW], named_groups: Sequence[dict],
                           base_state_dict: Mapping[str, torch.Tensor], lr: float, betas=(0.9, 0.999),
                           eps: float = 1e-8, **merge_hparams) -> OnlineMergingAdamW:
    """An online merging optimizer (``optimizer_class``: :class:`OnDARE`, :class:`OnTIES`, or another
    :class:`OnlineMergingAdamW`) for named parameter groups.

    named_groups: ``[{"params": [(name, param), ...], "weight_decay": wd}, ...]`` with the policy's
    ``named_parameters()`` names; base_state_dict: the base model's ``state_dict()`` (tau is computed now and
    the caller can drop the base afterwards); merge_hparams: ``p``, ``a``, ``rescale``, ``step_k``, ``seed`` and
    whatever else the class takes (OnTIES: ``sign_election``)."""
    if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, OnlineMergingAdamW)):
        raise TypeError(f"{optimizer_class!r} is not an online merging optimizer (a subclass of OnlineMergingAdamW "
                        f"such as OnDARE or OnTIES)")
    groups, taus = [], []
    for g in named_groups:
        named = list(g["params"])
        taus += task_vectors(named, base_state_dict)
        groups.append({**{k: v for k, v in g.items() if k != "params"}, "params": [q for _, q in named]})
    return optimizer_class(groups, lr=lr, betas=tuple(betas), eps=eps, task_vectors=taus, **merge_hparams)
