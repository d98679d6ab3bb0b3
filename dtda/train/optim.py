"""Optimisers as pure functions of (parameters, state, gradient), with PyTorch's update rules.

Parameters, gradients and state slots are dicts ``name -> Tensor``; a state is a dict
``slot -> {name: Tensor}``. ``update`` never writes in place, so a training step can be replayed,
checkpointed by reference and differentiated with ``torch.func`` (jvp and vjp).

- :class:`SGD` = ``torch.optim.SGD`` with dampening 0: the weight decay λ is the regulariser
  R(θ) = ½λ‖θ‖² in the loss (PyTorch adds λθ to the gradient), so the gradient d passed to
  ``update`` already contains it. Heavy ball: v ← μv + d (v₀ = 0, which equals PyTorch's first
  buffer d₀); θ ← θ − η v, or θ ← θ − η (d + μv) with Nesterov.
- :class:`AdamW` = ``torch.optim.AdamW`` (amsgrad is refused: max is not differentiable):
  θ ← (1 − ηλ)θ; m ← β₁m + (1−β₁)d; v ← β₂v + (1−β₂)d²;
  θ ← θ − (η / (1−β₁ᵗ)) m / (√v / √(1−β₂ᵗ) + ε), with t the 1-based step.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

Params = dict[str, Tensor]
State = dict[str, dict[str, Tensor]]


def _check_float(cls: str, name: str, value, low: float, high: float = math.inf,
                 open_low: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{cls}: {name} must be a number, got {value!r}")
    ok = (value > low if open_low else value >= low) and value < high
    if not ok or not math.isfinite(value):
        side = "(" if open_low else "["
        raise ValueError(f"{cls}: {name} must be in {side}{low}, {high}), got {value!r}")
    return float(value)


def _safe_sqrt(v: Tensor) -> Tensor:
    """√v whose derivative is 0 (not inf·0 = NaN) where v = 0; there v's tangent is 0 too."""
    positive = v > 0
    return torch.where(positive, v, torch.ones_like(v)).sqrt() * positive


@dataclass(frozen=True)
class SGD:
    """``torch.optim.SGD(lr, momentum, nesterov=..., weight_decay=...)`` with dampening 0."""

    lr: float
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0

    def __post_init__(self):
        _check_float("SGD", "lr", self.lr, 0.0, open_low=True)
        _check_float("SGD", "momentum", self.momentum, 0.0, 1.0)
        _check_float("SGD", "weight_decay", self.weight_decay, 0.0)
        if not isinstance(self.nesterov, bool):
            raise TypeError(f"SGD: nesterov must be a bool, got {self.nesterov!r}")
        if self.nesterov and self.momentum == 0.0:
            raise ValueError("SGD: nesterov=True needs momentum > 0, got momentum=0.0")

    def describe(self) -> dict:
        return {"name": "SGD", **asdict(self)}

    def init(self, params: Params) -> State:
        if self.momentum == 0.0:
            return {}
        return {"v": {k: torch.zeros_like(p) for k, p in params.items()}}

    def regulariser(self, params: Params) -> Tensor | float:
        """R(θ) = ½λ‖θ‖², part of every step's loss."""
        if self.weight_decay == 0.0:
            return 0.0
        return 0.5 * self.weight_decay * sum(p.square().sum() for p in params.values())

    def update(self, params: Params, state: State, grads: Params, lr: float, t: int):
        """One step at 0-based step ``t`` with learning rate ``lr``; ``grads`` include ∇R."""
        # one ``add`` with alpha per term, as torch.optim.SGD's foreach path (one pass, not two)
        if self.momentum == 0.0:
            return {k: torch.add(p, grads[k], alpha=-lr) for k, p in params.items()}, {}
        mu = self.momentum
        v = {k: torch.add(grads[k], state["v"][k], alpha=mu) for k in params}
        if self.nesterov:
            direction = {k: torch.add(grads[k], v[k], alpha=mu) for k in params}
        else:
            direction = v
        return {k: torch.add(p, direction[k], alpha=-lr) for k, p in params.items()}, {"v": v}

    def adjoint(self, params: Params, state: State, grads: Params, lr: float, t: int,
                cot_params: Params, cot_state: State, scratch: dict | None = None):
        """The vjp of :meth:`update` in closed form, for cotangents with a leading batch dim [Q]:
        returns the cotangents of (params, state, grads). ``scratch``: see :func:`adjoint_buffers`."""
        cot_params, cot_state, scratch = adjoint_buffers(cot_params, cot_state, scratch)
        if self.momentum == 0.0:
            return cot_params, {}, {k: torch.mul(c, -lr, out=_buffer(scratch, k, c)) for k, c in cot_params.items()}
        mu = self.momentum
        new_v, cot_grads = {}, {}
        for k, c in cot_params.items():
            # v' feeds θ' (through −ηv', or −ημv' with Nesterov) and the next step's state
            cv = cot_state["v"][k].add_(c, alpha=-(lr * mu if self.nesterov else lr))
            if self.nesterov:
                cot_grads[k] = torch.add(cv, c, alpha=-lr, out=_buffer(scratch, k, c))
                new_v[k] = cv.mul_(mu)
            else:
                # cv is the gradient cotangent and μ·cv the state's: the two buffers swap roles
                # every call (cv is free again once the caller is done with this step)
                cot_grads[k] = cv
                new_v[k] = torch.mul(cv, mu, out=_buffer(scratch, k, c))
                scratch[k] = cv
        return cot_params, {"v": new_v}, cot_grads

    def sweep_adjoint(self, params: Params, state: State, grads: Params, lr: float, lr_next: float | None,
                      t: int, cot_params: Params, cot_state: State, scratch: dict):
        """:meth:`adjoint` in the form a reverse sweep consumes, in place: (cot_params, cot_state,
        u, γ) with the gradient cotangent γ·u. ``lr_next``: the learning rate of step t + 1 (None
        when t is the last step, where the state cotangent is 0).

        Heavy ball (momentum, no Nesterov) keeps u in the state slot instead of the state
        cotangent s = μ·γ'·u' (primes: step t + 1): the gradient cotangent is s − ηc, so with
        γ = −η, u = c + (μγ'/(−η))·u' is one pass over each tensor, where :meth:`adjoint` takes
        two and a second buffer (γ = 1, u = μγ'·u' where η = 0). Other settings: :meth:`adjoint`
        with γ = 1. ``cot_state`` is then only valid as the next call's argument."""
        if self.momentum == 0.0 or self.nesterov:
            return (*self.adjoint(params, state, grads, lr, t, cot_params, cot_state, scratch), 1.0)
        scale = _direction_scale(lr)
        carry = 0.0 if lr_next is None else self.momentum * _direction_scale(lr_next) / scale
        u = cot_state["v"]
        for k, c in cot_params.items():
            if lr:
                torch.add(c, u[k], alpha=carry, out=u[k])
            else:
                u[k].mul_(carry)
        return cot_params, cot_state, u, scale


@dataclass(frozen=True)
class AdamW:
    """``torch.optim.AdamW(lr, betas, eps, weight_decay)`` (decoupled decay, no AMSGrad)."""

    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.01
    amsgrad: bool = False

    def __post_init__(self):
        _check_float("AdamW", "lr", self.lr, 0.0, open_low=True)
        if not (isinstance(self.betas, (tuple, list)) and len(self.betas) == 2):
            raise TypeError(f"AdamW: betas must be a pair (beta1, beta2), got {self.betas!r}")
        object.__setattr__(self, "betas", (_check_float("AdamW", "betas[0]", self.betas[0], 0.0, 1.0),
                                           _check_float("AdamW", "betas[1]", self.betas[1], 0.0, 1.0)))
        _check_float("AdamW", "eps", self.eps, 0.0, open_low=True)
        _check_float("AdamW", "weight_decay", self.weight_decay, 0.0)
        if self.amsgrad:
            raise ValueError("AdamW: amsgrad=True is not supported: its running max is not "
                             "differentiable, so unrolled differentiation is undefined")

    def describe(self) -> dict:
        d = asdict(self)
        d.pop("amsgrad")
        return {"name": "AdamW", **d, "betas": list(self.betas)}

    def init(self, params: Params) -> State:
        return {"m": {k: torch.zeros_like(p) for k, p in params.items()},
                "v": {k: torch.zeros_like(p) for k, p in params.items()}}

    def regulariser(self, params: Params) -> float:
        return 0.0  # the decay sits in the update

    def update(self, params: Params, state: State, grads: Params, lr: float, t: int):
        b1, b2 = self.betas
        step = t + 1
        bias1 = 1.0 - b1**step
        root_bias2 = math.sqrt(1.0 - b2**step)
        m = {k: b1 * state["m"][k] + (1.0 - b1) * grads[k] for k in params}
        v = {k: b2 * state["v"][k] + (1.0 - b2) * grads[k].square() for k in params}
        new = {}
        for k, p in params.items():
            decayed = p * (1.0 - lr * self.weight_decay)
            denom = _safe_sqrt(v[k]) / root_bias2 + self.eps
            new[k] = decayed - (lr / bias1) * (m[k] / denom)
        return new, {"m": m, "v": v}

    def adjoint(self, params: Params, state: State, grads: Params, lr: float, t: int,
                cot_params: Params, cot_state: State, scratch: dict | None = None):
        """The vjp of :meth:`update` in closed form, for cotangents with a leading batch dim [Q]:
        returns the cotangents of (params, state, grads). Where v' = 0 the √v' term is masked.
        ``scratch``: see :func:`adjoint_buffers`."""
        cot_params, cot_state, scratch = adjoint_buffers(cot_params, cot_state, scratch)
        b1, b2 = self.betas
        step = t + 1
        scale = lr / (1.0 - b1**step)
        root_bias2 = math.sqrt(1.0 - b2**step)
        cot_m, cot_v, cot_d = {}, {}, {}
        for k, c in cot_params.items():
            d = grads[k]
            m = b1 * state["m"][k] + (1.0 - b1) * d
            v = b2 * state["v"][k] + (1.0 - b2) * d.square()
            positive = v > 0
            root = _safe_sqrt(v)
            denom = root / root_bias2 + self.eps
            cm = cot_state["m"][k].addcmul_(c, scale / denom, value=-1.0)
            # ∂θ'/∂v' = scale · m' / denom² · 1/(2 √v' √(1−β₂ᵗ)), 0 where v' = 0
            dv = torch.where(positive, scale * m / (denom.square() * 2.0 * root_bias2 *
                                                     torch.where(positive, root, torch.ones_like(root))),
                             torch.zeros_like(v))
            cv = cot_state["v"][k].addcmul_(c, dv)
            cot_d[k] = torch.mul(cm, 1.0 - b1, out=_buffer(scratch, k, c)).addcmul_(cv, d, value=2.0 * (1.0 - b2))
            c.mul_(1.0 - lr * self.weight_decay)
            cot_m[k] = cm.mul_(b1)
            cot_v[k] = cv.mul_(b2)
        return cot_params, {"m": cot_m, "v": cot_v}, cot_d

    def sweep_adjoint(self, params: Params, state: State, grads: Params, lr: float, lr_next: float | None,
                      t: int, cot_params: Params, cot_state: State, scratch: dict):
        """:meth:`adjoint` with γ = 1 (see :meth:`SGD.sweep_adjoint`)."""
        return (*self.adjoint(params, state, grads, lr, t, cot_params, cot_state, scratch), 1.0)


def _direction_scale(lr: float) -> float:
    """γ of :meth:`SGD.sweep_adjoint` at learning rate ``lr``."""
    return -lr if lr else 1.0


def adjoint_buffers(cot_params: Params, cot_state: State, scratch: dict | None):
    """The buffers an optimiser's ``adjoint`` computes in.

    The adjoints of reverse mode are Q·|θ| tensors: allocating fresh ones every step costs more
    than the arithmetic (page faults on large allocations). With ``scratch`` (a dict the caller
    keeps across the calls of one sweep, initially empty) ``adjoint`` consumes its cotangent
    arguments, writing the results into their storage and into buffers kept in ``scratch``; the
    returned gradient cotangent is valid until the next call. Without it the arguments are left
    untouched (copied first), with bit-identical results.
    """
    if scratch is not None:
        return cot_params, cot_state, scratch
    copy = {k: c.clone() for k, c in cot_params.items()}
    return copy, {slot: {k: c.clone() for k, c in vals.items()} for slot, vals in cot_state.items()}, {}


def _buffer(scratch: dict, key: str, like: Tensor) -> Tensor:
    if key not in scratch:
        scratch[key] = torch.empty_like(like)
    return scratch[key]


Optimizer = SGD | AdamW
