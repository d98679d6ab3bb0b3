"""The ``torch.library`` registrations: schema, fake kernel and backward of every op.

Each custom op's kernel is :func:`dtda.ops.registry.dispatch`, so one schema serves every
backend and device. Backward formulas are explicit where they are cheap and used (ghost_dot,
kron_covariance, kron_apply); the other ops differentiate their float-exact reference.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from dtda.ops import reference
from dtda.ops.reference import result_dtype
from dtda.ops.registry import dispatch


def _empty(like: Tensor, *shape: int) -> Tensor:
    return like.new_empty(shape, dtype=result_dtype(like.dtype))


def _reference_backward(fn: Callable, inputs: tuple, grads: tuple, needs: tuple) -> tuple:
    """Gradients of ``fn(*inputs)`` contracted with ``grads``, by autograd on the reference."""
    with torch.enable_grad():
        leaves = [x.detach().requires_grad_(bool(n)) if isinstance(x, Tensor) else x
                  for x, n in zip(inputs, needs)]
        outputs = fn(*leaves)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        wrt = [x for x, n in zip(leaves, needs) if n]
        pairs = [(o, g) for o, g in zip(outputs, grads) if g is not None]
        got = iter(torch.autograd.grad([o for o, _ in pairs], wrt, [g for _, g in pairs], allow_unused=True))
    return tuple(next(got) if n else None for n in needs)


_SAVED = object()  # marks an input kept with save_for_backward


def _save_inputs(ctx, inputs, output) -> None:
    ctx.save_for_backward(*[x for x in inputs if isinstance(x, Tensor)])
    ctx.static = [_SAVED if isinstance(x, Tensor) else x for x in inputs]


def _restore_inputs(ctx) -> tuple:
    saved = iter(ctx.saved_tensors)
    return tuple(next(saved) if s is _SAVED else s for s in ctx.static)


# ---- kron_covariance ---------------------------------------------------------------------------

@torch.library.custom_op("dtda::kron_covariance", mutates_args=())
def kron_covariance(x: Tensor, mask: Optional[Tensor]) -> Tensor:
    return dispatch("kron_covariance", x, mask)


@kron_covariance.register_fake
def _(x, mask):
    return _empty(x, x.shape[2], x.shape[2])


def _kron_covariance_backward(ctx, grad):
    x, mask = _restore_inputs(ctx)
    x = reference.unmasked(x, mask)  # masked positions are not read: their gradient is 0
    sym = (grad + grad.T).to(x.dtype)
    weight = None if mask is None else mask.to(x.dtype).unsqueeze(-1)
    grad_x = x @ sym if weight is None else weight * (x @ sym)
    grad_mask = None
    if mask is not None and ctx.needs_input_grad[1]:
        grad_mask = torch.einsum("ntd,de,nte->nt", x, grad.to(x.dtype), x)
    return grad_x, grad_mask


# ---- ghost_dot -----------------------------------------------------------------------------------

@torch.library.custom_op("dtda::ghost_dot", mutates_args=())
def ghost_dot(a: Tensor, g: Tensor, M: Tensor) -> Tensor:
    return dispatch("ghost_dot", a, g, M)


@ghost_dot.register_fake
def _(a, g, M):
    return _empty(a, a.shape[0], M.shape[0])


def _ghost_dot_backward(ctx, grad):
    a, g, M = _restore_inputs(ctx)
    grad = grad.to(a.dtype)
    grad_a = torch.einsum("nq,nto,qoi->nti", grad, g, M) if ctx.needs_input_grad[0] else None
    grad_g = torch.einsum("nq,nti,qoi->nto", grad, a, M) if ctx.needs_input_grad[1] else None
    grad_M = torch.einsum("nq,nto,nti->qoi", grad, g, a) if ctx.needs_input_grad[2] else None
    return grad_a, grad_g, grad_M


# ---- ghost_pairwise ------------------------------------------------------------------------------

@torch.library.custom_op("dtda::ghost_pairwise", mutates_args=())
def ghost_pairwise(a_q: Tensor, g_q: Tensor, a: Tensor, g: Tensor) -> Tensor:
    return dispatch("ghost_pairwise", a_q, g_q, a, g)


@ghost_pairwise.register_fake
def _(a_q, g_q, a, g):
    return _empty(a, a_q.shape[0], a.shape[0])


# ---- ekfac_eigvals -------------------------------------------------------------------------------

@torch.library.custom_op("dtda::ekfac_eigvals", mutates_args=())
def ekfac_eigvals(a: Tensor, g: Tensor, QA: Tensor, QS: Tensor) -> Tensor:
    return dispatch("ekfac_eigvals", a, g, QA, QS)


@ekfac_eigvals.register_fake
def _(a, g, QA, QS):
    return _empty(a, g.shape[2], a.shape[2])


# ---- kron_apply ----------------------------------------------------------------------------------

@torch.library.custom_op("dtda::kron_apply", mutates_args=())
def kron_apply(V: Tensor, QA: Tensor, QS: Tensor, scale: Tensor) -> Tensor:
    return dispatch("kron_apply", V, QA, QS, scale)


@kron_apply.register_fake
def _(V, QA, QS, scale):
    return _empty(V, *V.shape)


def _kron_apply_backward(ctx, grad):
    V, QA, QS, scale = _restore_inputs(ctx)
    needs = ctx.needs_input_grad
    # V ↦ QS (s ∘ (QSᵀ V QA)) QAᵀ is self-adjoint in the Frobenius inner product.
    grad_V = kron_apply(grad.to(V.dtype), QA, QS, scale) if needs[0] else None
    grad_scale = None
    if needs[3]:
        grad_scale = ((QS.T @ grad.to(V.dtype) @ QA) * (QS.T @ V @ QA)).sum(0)
    grad_QA = grad_QS = None
    if needs[1] or needs[2]:
        _, grad_QA, grad_QS, _ = _reference_backward(
            reference.kron_apply, (V, QA, QS, scale), (grad,), (False, needs[1], needs[2], False))
    return grad_V, grad_QA, grad_QS, grad_scale


# ---- jl_project ----------------------------------------------------------------------------------

@torch.library.custom_op("dtda::jl_project", mutates_args=())
def jl_project(x: Tensor, k: int, seed: int, kind: str) -> Tensor:
    return dispatch("jl_project", x, k, seed, kind)


@jl_project.register_fake
def _(x, k, seed, kind):
    return _empty(x, x.shape[0], k)


# ---- seed_moments --------------------------------------------------------------------------------

@torch.library.custom_op("dtda::seed_moments", mutates_args=())
def seed_moments(m: Tensor, delta: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    return tuple(dispatch("seed_moments", m, delta))


@seed_moments.register_fake
def _(m, delta):
    return tuple(_empty(delta, delta.shape[1], delta.shape[2]) for _ in range(5))


# ---- autograd registration -----------------------------------------------------------------------

def _generic_backward(ref_fn: Callable) -> Callable:
    def backward(ctx, *grads):
        inputs = _restore_inputs(ctx)
        needs = tuple(ctx.needs_input_grad)
        return _reference_backward(ref_fn, inputs, grads, needs)
    return backward


def _wrap_seed_moments(m, delta):
    return tuple(reference.seed_moments(m, delta))


_BACKWARDS = {
    kron_covariance: _kron_covariance_backward,
    ghost_dot: _ghost_dot_backward,
    ghost_pairwise: _generic_backward(reference.ghost_pairwise),
    ekfac_eigvals: _generic_backward(reference.ekfac_eigvals),
    kron_apply: _kron_apply_backward,
    jl_project: _generic_backward(reference.jl_project),
    seed_moments: _generic_backward(_wrap_seed_moments),
}


def _setup_context(ctx, inputs, output):
    _save_inputs(ctx, inputs, output)


for _op, _bw in _BACKWARDS.items():
    _op.register_autograd(_bw, setup_context=_setup_context)

_CUSTOM_OPS = {op._name: op for op in _BACKWARDS}


def call(op: str, *args):
    """Run ``op`` through its custom op when autograd or torch.compile needs the schema, else
    dispatch directly: torch wraps custom-op kernels in a dynamo guard whose first use imports
    torch._dynamo (seconds) and every call pays the dispatcher, which hot loops should not."""
    if torch.compiler.is_compiling() or (torch.is_grad_enabled() and any(
            isinstance(a, Tensor) and a.requires_grad for a in args)):
        return _CUSTOM_OPS[op](*args)
    return dispatch(op, *args)
