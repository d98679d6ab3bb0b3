"""Exact batched Hessian-vector products and per-example scores for MLPs, derived by hand.

For a network that is a chain (``nn.Sequential``, nested allowed) of ``nn.Linear`` layers,
elementwise activations (:data:`ACTIVATIONS`) and ``nn.Dropout``, trained with the
``"cross_entropy"`` or ``"mse"`` loss, one reverse-mode step (PAPER §3.4) needs, for Q adjoint
directions c_q = (V_q, b_q) (per layer: V [Q, O, I], b [Q, O]):

- H_t c_q, with H_t = ∇²_θ L_t(θ; w) including the regulariser's λI (SGD's weight decay), and
- the per-example scores c_qᵀ∇ℓ_n for n in the batch.

Both come from the forward-mode derivative R(·) := d/dε (·)(θ + εc) of the forward pass and of
the backward pass (Pearlmutter's R-operator), batched over the Q directions as matmuls with Q·B
rows. Per Linear layer z = h Wᵀ + b with input h [B, I] and output gradient δ = ∂L_t/∂z [B, O]:

    R(z)  = R(h) Wᵀ + h Vᵀ + b_c                      (R-forward; R(x) = 0 for the inputs)
    R(δ_h) = R(δ) W + δ V                             (R-backward, δ_h := ∂L_t/∂h)
    (H c)_W = R(δ)ᵀ h + δᵀ R(h),   (H c)_b = Σ_n R(δ)_n

and per elementwise map v = s(u): R(v) = s'(u) R(u), R(δ_u) = s'(u) R(δ_v) + s''(u) R(u) δ_v
(Dropout is s(u) = m ⊙ u with the step's mask m). At the output f [B, K], with weights w_n:
δ_f = (w_n/|B_t|) ℓ'(f_n) and R(δ_f) = (w_n/|B_t|) ∇²ℓ(f_n) R(f_n), where for cross-entropy
∇²ℓ R = p ⊙ R − p (pᵀR) (p = softmax f) and for mse (mean over K) ∇²ℓ = (2/K) I.
The scores are c_qᵀ∇ℓ_n = ℓ'(f_n)ᵀ R(f_n): a by-product of the R-forward, with no per-example
gradients. Work per step: ≈ 6·Q·B·(Linear weights) multiply-adds (two matmuls in each of the
R-forward, R-backward and Hessian accumulation), against ≈ 3·B·(weights) for a training step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dtda.train.optim import SGD, Params
from dtda.train.step import Step


def _relu(u):
    return torch.relu(u), (u > 0).to(u.dtype), None


def _tanh(u):
    v = torch.tanh(u)
    d1 = 1.0 - v * v
    return v, d1, -2.0 * v * d1


def _sigmoid(u):
    v = torch.sigmoid(u)
    d1 = v * (1.0 - v)
    return v, d1, d1 * (1.0 - 2.0 * v)


def _gelu(u):
    cdf = 0.5 * (1.0 + torch.erf(u * (1.0 / math.sqrt(2.0))))
    pdf = torch.exp(-0.5 * u * u) * (1.0 / math.sqrt(2.0 * math.pi))
    return F.gelu(u), cdf + u * pdf, pdf * (2.0 - u * u)


def _silu(u):
    s = torch.sigmoid(u)
    return F.silu(u), s * (1.0 + u * (1.0 - s)), s * (1.0 - s) * (2.0 + u * (1.0 - 2.0 * s))


def _leaky(slope: float):
    def f(u):
        return F.leaky_relu(u, slope), torch.full_like(u, slope).masked_fill_(u > 0, 1.0), None
    return f


def _identity(u):
    return u, None, None


#: Supported elementwise modules -> u ↦ (s(u), s'(u), s''(u)); None stands for 1 (s') or 0 (s'').
ACTIVATIONS: dict[type, Callable[[nn.Module], Callable]] = {
    nn.ReLU: lambda m: _relu,
    nn.Tanh: lambda m: _tanh,
    nn.Sigmoid: lambda m: _sigmoid,
    nn.GELU: lambda m: _gelu if m.approximate == "none" else None,
    nn.SiLU: lambda m: _silu,
    nn.LeakyReLU: lambda m: _leaky(m.negative_slope),
    nn.Identity: lambda m: _identity,
}
LOSSES = ("cross_entropy", "mse")


@dataclass(frozen=True)
class Dense:
    """An ``nn.Linear``: parameter names of its weight [O, I] and bias [O] (or None)."""

    weight: str
    bias: str | None


@dataclass(frozen=True)
class Pointwise:
    """An elementwise map u ↦ (s(u), s'(u), s''(u))."""

    fn: Callable[[Tensor], tuple[Tensor, Tensor | None, Tensor | None]]


@dataclass(frozen=True)
class Dropout:
    """``nn.Dropout(p)`` in train mode: v = m ⊙ u with the step's mask m (from its dropout seed)."""

    p: float


Node = Dense | Pointwise | Dropout


def _leaves(module: nn.Module, prefix: str = ""):
    if type(module) is nn.Sequential:
        for name, child in module._modules.items():
            yield from _leaves(child, f"{prefix}{name}.")
    else:
        yield prefix, module


def plan(module: nn.Module, names, loss_name: str | None) -> list[Node] | None:
    """The node chain of ``module`` if this route applies, else None.

    Applies when ``module`` is an ``nn.Linear`` or an ``nn.Sequential`` (nested allowed) of
    ``nn.Linear``, supported activations and ``nn.Dropout``, every parameter in ``names`` is a Linear weight or bias, no
    module is used twice, and the loss is one of :data:`LOSSES`.
    """
    if loss_name not in LOSSES:
        return None
    nodes, covered, seen = [], [], set()
    for prefix, leaf in _leaves(module):
        if id(leaf) in seen:
            return None  # a module called twice shares parameters across positions
        seen.add(id(leaf))
        if type(leaf) is nn.Linear:
            bias = prefix + "bias" if leaf.bias is not None else None
            nodes.append(Dense(prefix + "weight", bias))
            covered += [prefix + "weight"] + ([bias] if bias else [])
        elif type(leaf) is nn.Dropout:
            nodes.append(Dropout(leaf.p))
        elif type(leaf) in ACTIVATIONS and (fn := ACTIVATIONS[type(leaf)](leaf)) is not None:
            nodes.append(Pointwise(fn))
        else:
            return None
    if sorted(covered) != sorted(names) or not covered:
        return None
    return nodes


def decay(step: Step) -> float:
    """λ of the regulariser R = ½λ‖θ‖² in L_t (SGD's weight decay; AdamW decays in its update)."""
    opt = step.recipe.optimizer
    return opt.weight_decay if isinstance(opt, SGD) else 0.0


@dataclass
class Pass:
    """One step's forward and backward pass through the chain.

    inputs[i]: node i's input (2-D [B, width]); slopes[i], curvatures[i]: s'(u), s''(u) of an
    elementwise node (None: 1 or 0); deltas[i] = ∂L_t/∂(node i's output) [B, width];
    out: f [B, K]; dloss: ℓ'(f_n) [B, K] (unweighted); scale: w_n/|B_t| [B];
    grads: d = ∇_θL_t (regulariser included).
    """

    inputs: list[Tensor]
    slopes: list[Tensor | None]
    curvatures: list[Tensor | None]
    deltas: list[Tensor]
    out: Tensor
    dloss: Tensor
    scale: Tensor
    grads: Params


def _loss_gradient(loss_name: str, f: Tensor, y: Tensor) -> Tensor:
    """ℓ'(f_n) [B, K] for the per-example loss (:mod:`dtda.train.losses`)."""
    if loss_name == "cross_entropy":
        return torch.softmax(f, 1) - F.one_hot(y, f.shape[1]).to(f.dtype)
    return (2.0 / f.shape[1]) * (f - y.reshape(f.shape).to(f.dtype))


def _loss_hvp(loss_name: str, f: Tensor, r: Tensor) -> Tensor:
    """∇²ℓ(f_n) r_qn for r [Q, B, K]."""
    if loss_name == "cross_entropy":
        p = torch.softmax(f, 1)
        return p * (r - (r * p).sum(-1, keepdim=True))
    return (2.0 / f.shape[1]) * r


def forward_backward(nodes: list[Node], step: Step, params: Params, x: Tensor, y: Tensor,
                     w: Tensor, t: int) -> Pass:
    """Forward pass with step t's dropout masks, then the backward pass of L_t (no autograd)."""
    h = x
    inputs, slopes, curvatures = [], [], []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(step.dropout_seed(t))  # draws the masks as the training step did
        for node in nodes:
            inputs.append(h)
            d1 = d2 = None
            if isinstance(node, Dense):
                h = F.linear(h, params[node.weight], params[node.bias] if node.bias else None)
            elif isinstance(node, Dropout):
                d1 = F.dropout(torch.ones_like(h), node.p, training=True)
                h = h * d1
            else:
                h, d1, d2 = node.fn(h)
            slopes.append(d1)
            curvatures.append(d2)
    loss_name = step.recipe.loss_name
    dloss = _loss_gradient(loss_name, h, y)
    scale = w / x.shape[0]
    delta = dloss * scale.unsqueeze(1)
    deltas: list[Tensor] = [delta] * len(nodes)
    grads: Params = {}
    lam = decay(step)
    first = next(i for i, n in enumerate(nodes) if isinstance(n, Dense))
    for i in range(len(nodes) - 1, first - 1, -1):
        node = nodes[i]
        deltas[i] = delta
        if isinstance(node, Dense):
            weight = params[node.weight]
            grads[node.weight] = delta.T @ inputs[i] + lam * weight if lam else delta.T @ inputs[i]
            if node.bias:
                bias = params[node.bias]
                grads[node.bias] = delta.sum(0) + lam * bias if lam else delta.sum(0)
            if i > first:
                delta = delta @ weight
        elif slopes[i] is not None:
            delta = delta * slopes[i]
    return Pass(inputs, slopes, curvatures, deltas, h, dloss, scale, {k: grads[k] for k in params})


def hvp_and_scores(nodes: list[Node], step: Step, params: Params, fb: Pass, c: Params,
                   out: Params) -> Tensor:
    """For Q directions c (name -> [Q, *shape]) adds H_t c_q to ``out`` (name -> [Q, *shape],
    updated in place) and returns the scores S [Q, B], S[q, n] = c_qᵀ∇ℓ_n.

    R-tensors are [Q, B, width]; every product with a weight is one matmul over all Q·B rows or
    one batched matmul over q, and (H c)_W is accumulated into ``out`` by batched matmuls."""
    first = next(i for i, n in enumerate(nodes) if isinstance(n, Dense))
    q = next(iter(c.values())).shape[0]
    r_in: list[Tensor | None] = [None] * len(nodes)  # R(node input)
    r = None
    for i in range(first, len(nodes)):
        node = nodes[i]
        r_in[i] = r
        if isinstance(node, Dense):
            h, v, weight = fb.inputs[i], c[node.weight], params[node.weight]
            z = torch.bmm(h.expand(q, *h.shape), v.transpose(1, 2))  # h Vᵀ: [Q, B, O]
            if r is not None:
                z.view(-1, z.shape[-1]).addmm_(r.view(-1, r.shape[-1]), weight.T)  # + R(h) Wᵀ
            if node.bias:
                z += c[node.bias].unsqueeze(1)
            r = z
        elif fb.slopes[i] is not None:
            # r is this function's own tensor: scale it in place (fresh [Q, B, width] tensors
            # cost page faults) unless the curvature term still needs R(u)
            r = r.mul_(fb.slopes[i]) if fb.curvatures[i] is None else r * fb.slopes[i]
    scores = (r * fb.dloss).sum(-1)  # ℓ'(f_n)ᵀ R(f_n)
    rd = _loss_hvp(step.recipe.loss_name, fb.out, r) * fb.scale.unsqueeze(1)  # R(δ_f)
    lam = decay(step)
    for i in range(len(nodes) - 1, first - 1, -1):
        node = nodes[i]
        if isinstance(node, Dense):
            h, v, weight, delta = fb.inputs[i], c[node.weight], params[node.weight], fb.deltas[i]
            out[node.weight].baddbmm_(rd.transpose(1, 2), h.expand(q, *h.shape))  # R(δ)ᵀ h
            if r_in[i] is not None:
                out[node.weight].baddbmm_(delta.T.expand(q, *delta.T.shape), r_in[i])  # δᵀ R(h)
            if lam:
                out[node.weight].add_(v, alpha=lam)
            if node.bias:
                out[node.bias].add_(rd.sum(1))
                if lam:
                    out[node.bias].add_(c[node.bias], alpha=lam)
            if i > first:  # R(δ_h) = R(δ) W + δ V
                rd = torch.mm(rd.view(-1, rd.shape[-1]), weight).view(q, -1, weight.shape[1])
                rd.baddbmm_(delta.expand(q, *delta.shape), v)
        else:
            if fb.curvatures[i] is not None:
                term = fb.curvatures[i] * fb.deltas[i] * r_in[i]  # s''(u) R(u) δ_v
            if fb.slopes[i] is not None:
                rd = rd.mul_(fb.slopes[i])
            if fb.curvatures[i] is not None:
                rd = rd.add_(term)
    return scores
