"""The layers curvature and scores cover, and the capture of their factors (a, g) for a batch.

A covered layer computes s = W ā per position t, with W ∈ ℝ^{O×(I+1)} (bias as the last column)
and ā = [a; 1]. Per example n the gradient is G_n = Σ_t g_nt ā_ntᵀ, g_nt = ∂ℓ_n/∂s_nt (PAPER
§6.1), so every product with G_n runs on the factors a [B, T, I(+1)] and g [B, T, O] (``dtda.ops``).

- ``nn.Linear`` on inputs [B, ..., I]: the positions are the middle dimensions (T = their product).
- ``nn.Conv2d`` (groups = 1, any stride, padding, padding mode, dilation): ā_nt is the unfolded input
  patch of output pixel t (C·kh·kw values, channel-major like ``weight.reshape(O, -1)``), g_nt the
  output gradient at that pixel; T = H'·W'.
- A layer called several times (weight sharing) contributes its calls as extra positions.

Any other module holding parameters is refused (naming it and its type) unless ``modules=``
selects the modules to cover; the scores then cover only the selected layers' parameters.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

import dtda.ops as ops

Params = dict[str, Tensor]
SUPPORTED = (nn.Linear, nn.Conv2d)


@dataclass(frozen=True)
class Layer:
    """A covered layer: its module path ``name``, the module, and its parameter names."""

    name: str
    module: nn.Module
    weight: str
    bias: str | None

    @property
    def shape(self) -> tuple[int, int]:
        """(O, I(+1)): the layer's weight as a matrix, bias column included."""
        w = self.module.weight
        return w.shape[0], w[0].numel() + (self.bias is not None)

    def factors(self, inp: Tensor, grad_out: Tensor) -> tuple[Tensor, Tensor]:
        """(a [B, T, I(+1)], g [B, T, O]) of one call from its input and output gradient."""
        B = inp.shape[0]
        if isinstance(self.module, nn.Conv2d):
            conv = self.module
            pad_mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
            # _reversed_padding_repeated_twice is how Conv2d itself pads ('same' included)
            padded = F.pad(inp, conv._reversed_padding_repeated_twice, mode=pad_mode)
            a = F.unfold(padded, conv.kernel_size, conv.dilation, 0, conv.stride).transpose(1, 2)
            g = grad_out.reshape(B, grad_out.shape[1], -1).transpose(1, 2)
        else:
            a = inp.reshape(B, -1, inp.shape[-1])
            g = grad_out.reshape(B, -1, grad_out.shape[-1])
        if self.bias is not None:
            a = torch.cat([a, a.new_ones(a.shape[:-1] + (1,))], dim=-1)
        return a.detach(), g.detach()

    def matrix(self, v: Params) -> Tensor:
        """This layer's part of directions v (name -> [Q, *shape]) as [Q, O, I(+1)]."""
        W = v[self.weight]
        M = W.reshape(W.shape[0], W.shape[1], -1)
        if self.bias is not None:
            M = torch.cat([M, v[self.bias].unsqueeze(-1)], dim=-1)
        return M

    def split(self, M: Tensor) -> Params:
        """Inverse of :meth:`matrix`: [Q, O, I(+1)] -> {weight: [Q, *shape], bias: [Q, O]}."""
        Q = M.shape[0]
        shape = self.module.weight.shape
        if self.bias is None:
            return {self.weight: M.reshape(Q, *shape)}
        return {self.weight: M[..., :-1].reshape(Q, *shape), self.bias: M[..., -1]}

    @property
    def parameters(self) -> list[str]:
        return [self.weight] + ([self.bias] if self.bias is not None else [])


def _describe(name: str, module: nn.Module) -> str:
    return f"{name or '<root>'} ({type(module).__name__})"


def find_layers(module: nn.Module, modules=None, names=None) -> list[Layer]:
    """The layers of ``module`` to cover, in module order.

    modules: None (every module with parameters must be a supported layer), a list of module
    names (``dict(module.named_modules())`` keys) or a predicate ``(name, module) -> bool``.
    names: the parameter names available (default: ``module.named_parameters()``); a covered
    parameter outside them (tied to another module) is refused.
    Raises ValueError naming the first unsupported module and its type, before any work.
    """
    named = dict(module.named_modules())
    if modules is None:
        select = None
    elif callable(modules):
        select = modules
    else:
        wanted = [modules] if isinstance(modules, str) else list(modules)
        unknown = [m for m in wanted if m not in named]
        if unknown:
            raise ValueError(f"modules: no module named {unknown} in the model; its modules with "
                             f"parameters are {[n for n, m in named.items() if _own_params(m)]}")
        chosen = set(wanted)
        def select(n, m):
            return n in chosen
    available = set(names) if names is not None else {k for k, _ in module.named_parameters()}
    layers = []
    for name, sub in named.items():
        own = _own_params(sub)
        if not own or (select is not None and not select(name, sub)):
            continue
        if not isinstance(sub, SUPPORTED):
            raise ValueError(
                f"influence covers nn.Linear and nn.Conv2d layers; module {_describe(name, sub)} holds "
                f"parameters {own}. Pass modules= (a list of module names or a predicate) to cover "
                "only supported layers")
        if isinstance(sub, nn.Conv2d) and sub.groups != 1:
            raise ValueError(f"influence covers nn.Conv2d with groups=1; module {_describe(name, sub)} "
                             f"has groups={sub.groups}. Exclude it with modules=")
        pre = f"{name}." if name else ""
        layer = Layer(name, sub, pre + "weight", pre + "bias" if sub.bias is not None else None)
        missing = [p for p in layer.parameters if p not in available]
        if missing:
            raise ValueError(f"module {_describe(name, sub)}: parameters {missing} are tied to another "
                             "module; exclude it with modules=")
        layers.append(layer)
    if not layers:
        raise ValueError(f"modules={modules!r} selects no nn.Linear or nn.Conv2d layer with parameters")
    return layers


def _own_params(module: nn.Module) -> list[str]:
    return [k for k, _ in module.named_parameters(recurse=False)]


@contextmanager
def recording(layers: list[Layer], perturb: Callable[[int, int], Tensor] | None = None
              ) -> Iterator[list[list[tuple[Tensor, Tensor]]]]:
    """Within the block, each forward call of layer i appends (input, output) to ``calls[i]``. With
    ``perturb``, the j-th call of layer i returns its output plus ``perturb(i, j)`` (a zero whose
    gradient is the output gradient: :func:`capture_group`)."""
    calls: list[list[tuple[Tensor, Tensor]]] = [[] for _ in layers]

    def hook(i: int):
        def record_call(mod, inp, out):
            calls[i].append((inp[0], out))
            return None if perturb is None else out + perturb(i, len(calls[i]) - 1)
        return record_call

    handles = [layer.module.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()


def factors_of(layers: list[Layer], calls, grads_out, batch: int, params: Params):
    """(a list, g list) per layer from recorded ``calls`` and the output gradients ``grads_out``
    (one per call, in call order; None for an output the loss does not reach). A layer not
    called contributes one zero position."""
    grads = iter(grads_out)
    a_all, g_all = [], []
    for layer, layer_calls in zip(layers, calls):
        a_parts, g_parts = [], []
        for inp, out in layer_calls:
            g = next(grads)
            a, g = layer.factors(inp, torch.zeros_like(out) if g is None else g)
            a_parts.append(a)
            g_parts.append(g)
        if not a_parts:
            O, I = layer.shape
            weight = params[layer.weight]
            a_parts, g_parts = [weight.new_zeros(batch, 1, I)], [weight.new_zeros(batch, 1, O)]
        # one call (the common case) is used as captured: a copy of [B, T, ·] costs page faults
        a_all.append(a_parts[0] if len(a_parts) == 1 else torch.cat(a_parts, 1))
        g_all.append(g_parts[0] if len(g_parts) == 1 else torch.cat(g_parts, 1))
    return a_all, g_all


@dataclass
class Captured:
    """One batch: per covered layer a [B, T, I(+1)] and g [B, T, O] (g_nt = ∂ℓ_n/∂s_nt), and ℓ [B]."""

    a: list[Tensor]
    g: list[Tensor]
    losses: Tensor


def record(layers: list[Layer], params: Params, values_of: Callable[[Params], Tensor]) -> Captured:
    """Evaluate ``values_of(θ)`` [B] at ``params`` and capture every layer's (a, g) by one backward
    of Σ_b values_b. Row b of each factor is example b's as long as value b depends on row b of each
    layer call only (rows do not interact, as in any model applied per example)."""
    with torch.enable_grad(), recording(layers) as calls:
        leaves = {k: p.detach().requires_grad_() for k, p in params.items()}
        values = values_of(leaves)
        outs = [out for layer_calls in calls for _, out in layer_calls]
        # only the layer outputs are asked for: no ∂/∂W GEMMs, no gradient of the model's input
        grads = torch.autograd.grad(values.sum(), outs, allow_unused=True) if outs else ()
        del outs
    a, g = factors_of(layers, calls, grads, values.shape[0], params)
    return Captured(a, g, values.detach())


def capture(module: nn.Module, params: Params, buffers: dict, layers: list[Layer], x: Tensor,
            losses_of: Callable[[Tensor], Tensor]) -> Captured:
    """Run ``module`` (in its current train/eval mode) on x with ``params``, take the per-example
    losses ``losses_of(outputs)`` [B] and capture every layer's (a, g) by one backward of Σ_n ℓ_n
    (examples do not interact, so g is per example)."""
    return record(layers, params, lambda leaves: losses_of(functional_call(module, (leaves, buffers), (x,))))


def capture_group(module: nn.Module, params_list: Sequence[Params], buffers: dict, layers: list[Layer],
                  x: Tensor, losses_of: Sequence[Callable[[Tensor], Tensor]]) -> list[Captured]:
    """:func:`capture` for K parameter sets of one architecture on the same x, as one computation:
    ``torch.func.vmap`` of ``functional_call`` over the stacked parameters [K, *shape], every layer
    call's output plus a zero ε [K, *output shape] (shapes from a no-grad forward of the first set),
    then one backward of Σ_k Σ_n ℓ_kn with ℓ_k = ``losses_of[k](outputs[k])``: ∂/∂ε is g, and the
    factors of all K sets come from one unfold over [K·B, ...]. Equal to :func:`capture` per set up
    to rounding (batched matmuls sum in another order). K = 1 is :func:`capture` itself. Raises
    what vmap raises for a model it refuses (in-place writes into inputs, ``.item()``, ...)."""
    if len(params_list) == 1:
        return [capture(module, params_list[0], buffers, layers, x, losses_of[0])]
    K, B = len(params_list), x.shape[0]
    with torch.no_grad(), recording(layers) as probe:
        functional_call(module, (params_list[0], buffers), (x,))
    eps = [[torch.zeros((K,) + out.shape, dtype=out.dtype, device=out.device, requires_grad=True)
            for _, out in layer_calls] for layer_calls in probe]
    del probe
    stacked = {k: torch.stack([p[k].detach() for p in params_list]) for k in params_list[0]}

    def run(p: Params, e: list[list[Tensor]]):
        with recording(layers, perturb=lambda i, j: e[i][j]) as calls:
            out = functional_call(module, (p, buffers), (x,))
        return out, [[inp for inp, _ in layer_calls] for layer_calls in calls]

    with torch.enable_grad():
        outputs, inputs = vmap(run)(stacked, eps)
        losses = torch.stack([losses_of[k](outputs[k]) for k in range(K)])
        flat_eps = [e for layer_eps in eps for e in layer_eps]
        grads = torch.autograd.grad(losses.sum(), flat_eps, allow_unused=True) if flat_eps else ()
    # (input, ε) of every call with the K sets as K·B rows: one factors() call per layer
    calls = [[(inp.flatten(0, 1), e.detach().flatten(0, 1)) for inp, e in zip(layer_inputs, layer_eps)]
             for layer_inputs, layer_eps in zip(inputs, eps)]
    a, g = factors_of(layers, calls, [None if d is None else d.flatten(0, 1) for d in grads], K * B,
                      params_list[0])
    a = [t.unflatten(0, (K, B)) for t in a]
    g = [t.unflatten(0, (K, B)) for t in g]
    return [Captured([t[k] for t in a], [t[k] for t in g], losses[k].detach()) for k in range(K)]


def row_gradients(layers: list[Layer], params: Params, values_of: Callable[[Params], Tensor]
                  ) -> tuple[Tensor, Params] | None:
    """(v [Q], ∇v as name -> [Q, *shape] over the covered parameters) for ``values_of(θ)`` [Q]
    whose entry q depends on row q of every layer call only (a per-query loss or margin): one
    forward and one backward of Σ_q v_q give every ∇v_q = Σ_t g_qt ā_qtᵀ per layer, instead of
    one backward per entry. None when some layer call's leading dimension is not Q (the rows
    cannot be told apart; take the Jacobian instead)."""
    cap = record(layers, params, values_of)
    Q = cap.losses.shape[0]
    if any(a.shape[0] != Q for a in cap.a):
        return None
    grads: Params = {}
    for layer, a, g in zip(layers, cap.a, cap.g):
        grads.update(layer.split(torch.einsum("qto,qti->qoi", g, a)))
    return cap.losses, grads


Query = Tensor | tuple[Tensor, Tensor]


def queries(layers: list[Layer], u: Params, rank: int | None = None) -> list[Query]:
    """Each layer's part of directions u (name -> [Q, *shape]) ready for scoring: the matrices
    U_q [Q, O, I(+1)], or with ``rank`` r their truncated SVDs U_q ≈ P_q V_qᵀ as (P [Q, O, r'],
    V [Q, I(+1), r']) with σ folded into P, r' = min(r, O, I(+1)) (query compression, PAPER §6.1)."""
    out: list[Query] = []
    for layer in layers:
        M = layer.matrix(u)
        if rank is None:
            out.append(M.contiguous())
            continue
        U, S, Vh = torch.linalg.svd(M, full_matrices=False)
        r = min(rank, S.shape[-1])
        out.append(((U[..., :r] * S[..., None, :r]).contiguous(), Vh[..., :r, :].transpose(-1, -2).contiguous()))
    return out


def query_scores(a: list[Tensor], g: list[Tensor], prepared: list[Query]) -> Tensor:
    """S[n, q] = Σ_layers ⟨G_n, U_q⟩ [B, Q] from captured factors and :func:`queries`: ``ops.ghost_dot``
    for a full matrix; Σ_{t,r} (P_qᵀ g_nt)_r (V_qᵀ ā_nt)_r for a compressed one (cost T·Q·r·(O+I))."""
    total = None
    for a_l, g_l, query in zip(a, g, prepared):
        if isinstance(query, Tensor):
            s = ops.ghost_dot(a_l, g_l, query.to(a_l.dtype))
        else:
            P, V = query
            s = (torch.einsum("bto,qor->bqtr", g_l, P.to(g_l.dtype))
                 * torch.einsum("bti,qir->bqtr", a_l, V.to(a_l.dtype))).sum((2, 3))
        total = s if total is None else total + s
    return total


def scores(layers: list[Layer], a: list[Tensor], g: list[Tensor], u: Params) -> Tensor:
    """S[n, q] = u_qᵀ∇ℓ_n = Σ_layers ⟨G_n, U_q⟩ from captured factors, u: name -> [Q, *shape]. [B, Q]."""
    return query_scores(a, g, queries(layers, u))
