"""Linear chains: the forward and backward pass of an MLP by hand, batched over K members.

For a network that is a chain (``nn.Sequential``, nested allowed) of ``nn.Linear`` layers,
elementwise activations (:data:`ACTIVATIONS`) and ``nn.Dropout``, trained with the
``"cross_entropy"`` or ``"mse"`` loss, :func:`plan` lists its nodes and :func:`forward_backward`
computes one step's forward pass, per-example losses and gradient d = ∇_θL_t for K members at
once: every tensor carries a leading member dimension (parameters [K, *shape], inputs [K, B, I])
and every product with a weight is one batched matmul over the K members. Each member's slice is
computed from that member's values alone, so a member's numbers do not depend on what the other
slots hold (only on K and its slot), which is what lets a grouped run be replayed bit for bit.

Per Linear layer z = h Wᵀ + b with output gradient δ = ∂L_t/∂z [K, B, O]:
∇_W = δᵀh (+ λW, SGD's weight decay), ∇_b = Σ_n δ_n (+ λb), δ_h = δ W; per elementwise map
v = s(u): δ_u = s'(u) δ_v; at the output f, δ_f = (w_n/|B_t|) ℓ'(f_n). Dropout is v = m ⊙ u with
the member's mask for step t, drawn from its own ``dropout`` stream in layer order exactly as
``nn.Dropout`` draws it in the one-member step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dtda.train.optim import SGD, Params


def _relu(u):
    v = torch.relu(u)
    return v, torch.sign(v), None  # 1 where u > 0, else 0; (u > 0).to(dtype) is ten times slower


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
    """The node chain of ``module`` if it is a Linear chain, else None.

    Applies when ``module`` is an ``nn.Linear`` or an ``nn.Sequential`` (nested allowed) of
    ``nn.Linear``, supported activations and ``nn.Dropout``, every parameter in ``names`` is a
    Linear weight or bias, no module is used twice, and the loss is one of :data:`LOSSES`.
    """
    return plan_or_reason(module, names, loss_name)[0]


def plan_or_reason(module: nn.Module, names, loss_name: str | None) -> tuple[list[Node] | None, str]:
    """(:func:`plan`'s node chain or None, and when None a phrase saying why)."""
    if loss_name not in LOSSES:
        return None, f"the loss is {loss_name or 'a custom callable'}, not one of {', '.join(LOSSES)}"
    nodes, covered, seen = [], [], set()
    for prefix, leaf in _leaves(module):
        if id(leaf) in seen:
            return None, f"module {prefix.rstrip('.') or type(leaf).__name__} is used twice"
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
            return None, (f"{type(leaf).__name__} at {prefix.rstrip('.') or 'the top'} is not a Linear layer, "
                          "a supported activation or Dropout")
    if sorted(covered) != sorted(names) or not covered:
        return None, "some parameters are not Linear weights or biases"
    return nodes, ""


def decay(optimizer) -> float:
    """λ of the regulariser R = ½λ‖θ‖² in L_t (SGD's weight decay; AdamW decays in its update)."""
    return optimizer.weight_decay if isinstance(optimizer, SGD) else 0.0


@dataclass
class Pass:
    """One step's forward and backward pass through the chain, for K members.

    inputs[i]: node i's input [K, B, width]; slopes[i], curvatures[i]: s'(u), s''(u) of an
    elementwise node (None: 1 or 0); deltas[i] = ∂L_t/∂(node i's output) [K, B, width];
    out: f [K, B, C]; dloss: ℓ'(f_n) [K, B, C] (unweighted); scale: w_n/|B_t| [K, B];
    losses: ℓ_n [K, B]; grads: d = ∇_θL_t (regulariser included), name -> [K, *shape].
    """

    inputs: list[Tensor]
    slopes: list[Tensor | None]
    curvatures: list[Tensor | None]
    deltas: list[Tensor]
    out: Tensor
    dloss: Tensor
    scale: Tensor
    losses: Tensor
    grads: Params


#: Class counts below this are "few": torch's (log-)softmax over a last dimension shorter than one
#: vector register runs a scalar path per row (one thread, logits [8, 64, 10] float32: 80 µs;
#: along the second-to-last dimension of the transposed logits 12 µs; from 16 classes on the last
#: dimension is the faster).
FEW_CLASSES = 16


def over_classes(fn: Callable[[Tensor, int], Tensor], f: Tensor) -> Tensor:
    """``fn(f, -1)`` for ``torch.softmax`` or ``torch.log_softmax`` and logits f [..., B, C]: for
    fewer than :data:`FEW_CLASSES` classes taken over the transposed logits (the same numbers to
    rounding), returned contiguous."""
    if f.dim() >= 2 and f.shape[-1] < FEW_CLASSES:
        return fn(f.transpose(-1, -2), -2).transpose(-1, -2).contiguous()
    return fn(f, -1)


def _loss_and_gradient(loss_name: str, f: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """(ℓ(f_n) [K, B], ℓ'(f_n) [K, B, C]) for the per-example loss (:mod:`dtda.train.losses`)."""
    if loss_name == "cross_entropy":
        logp = over_classes(torch.log_softmax, f)
        losses = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)
        # p − onehot(y): −1 scattered onto p (F.one_hot validates y with three reductions first)
        target = y.unsqueeze(-1)
        return losses, logp.exp_().scatter_add_(-1, target, torch.full(target.shape, -1.0, dtype=f.dtype))
    diff = f - y.reshape(f.shape).to(f.dtype)
    return diff.square().mean(-1), (2.0 / f.shape[-1]) * diff


def dropout_masks(generators: Sequence[torch.Generator], shape: tuple[int, ...], p: float,
                  dtype: torch.dtype) -> Tensor:
    """[K, *shape]: member k's mask from ``generators[k]``, as ``F.dropout`` draws it
    (Bernoulli(1 − p) / (1 − p); all zeros for p = 1)."""
    if p == 1.0:
        return torch.zeros((len(generators),) + shape, dtype=dtype)
    return torch.stack([torch.empty(shape, dtype=dtype).bernoulli_(1.0 - p, generator=g) for g in generators]
                       ).div_(1.0 - p)


def forward_backward(nodes: list[Node], params: Params, x: Tensor, y: Tensor, w: Tensor,
                     loss_name: str, decay: float = 0.0,
                     generators: Sequence[torch.Generator] | None = None) -> Pass:
    """Forward pass (member k's dropout masks from ``generators[k]``, seeded for this step), then
    the backward pass of L_t, for K members: params name -> [K, *shape], x [K, B, I], y [K, B(, C)],
    w [K, B]. No autograd."""
    h = x
    inputs, slopes, curvatures = [], [], []
    for node in nodes:
        inputs.append(h)
        d1 = d2 = None
        if isinstance(node, Dense):
            weight = params[node.weight].transpose(1, 2)
            h = torch.baddbmm(params[node.bias].unsqueeze(1), h, weight) if node.bias else torch.bmm(h, weight)
        elif isinstance(node, Dropout):
            if generators is None:
                raise ValueError("forward_backward: the chain has Dropout but no generators were given")
            d1 = dropout_masks(generators, tuple(h.shape[1:]), node.p, h.dtype)
            h = h * d1
        else:
            h, d1, d2 = node.fn(h)
        slopes.append(d1)
        curvatures.append(d2)
    losses, dloss = _loss_and_gradient(loss_name, h, y)
    scale = w / x.shape[1]
    delta = dloss * scale.unsqueeze(-1)
    deltas: list[Tensor] = [delta] * len(nodes)
    grads: Params = {}
    first = next(i for i, n in enumerate(nodes) if isinstance(n, Dense))
    for i in range(len(nodes) - 1, first - 1, -1):
        node = nodes[i]
        deltas[i] = delta
        if isinstance(node, Dense):
            weight = params[node.weight]
            grad = torch.bmm(delta.transpose(1, 2), inputs[i])
            grads[node.weight] = grad.add_(weight, alpha=decay) if decay else grad
            if node.bias:
                grad = delta.sum(1)
                grads[node.bias] = grad.add_(params[node.bias], alpha=decay) if decay else grad
            if i > first:
                delta = torch.bmm(delta, weight)
        elif slopes[i] is not None:
            delta = delta * slopes[i]
    return Pass(inputs, slopes, curvatures, deltas, h, dloss, scale, losses, {k: grads[k] for k in params})
