"""Influence methods that solve (H + λI)u = ∇m with curvature-vector products (PAPER §4.1, §6.2–6.3).

Registered with :func:`dtda.attribute.influence.register`; each returns one term (θ_s, u) over
the covered parameters, with the solver's iterations and final relative residual
‖(H + λI)u − ∇m‖/‖∇m‖ (full-data products) in its meta.

- ``exact``: the explicit float64 matrix (d ≤ ``MAX_EXACT`` covered parameters) and an
  eigendecomposition; λ = 0 is the pseudo-inverse. The test oracle.
- ``cg``: conjugate gradients on full-data products; ``precondition="ekfac"`` uses the EK-FAC solve
  (H_EKFAC + λI)⁻¹ of the same seed as preconditioner (prefit by the core, all seeds together).
- ``lissa``: the Neumann series on minibatch products (``batch_size`` indices drawn with
  replacement per iteration); ``alpha=None`` takes 0.5/(λ̂_max + λ) from 20 power iterations on
  full-data products.
- ``astra``: EK-FAC-preconditioned SGD on minibatch products, ASTRA's settings by default.

Options ``curvature`` ("ggn", the default, or "hessian") pick the products (ASTRA uses the GGN).
``exact``, ``lissa`` and ``cg`` without preconditioner never use the sampled Fisher (a custom loss
works with any ``fisher``); ASTRA and preconditioned CG use it for the EK-FAC preconditioner only.
The common option ``batch_size`` is both the streaming batch of full-data passes and the
minibatch of LiSSA and ASTRA (capped at N).
"""

from __future__ import annotations

import math

import torch

from dtda.attribute.influence import MethodResult, SeedContext, register
from dtda.curvature import solvers
from dtda.curvature.products import KINDS, Products
from dtda.train.optim import Params

#: The largest number of covered parameters ``exact`` builds a d × d matrix for.
MAX_EXACT = 5000


def products(ctx: SeedContext, kind: str = "ggn", dtype: torch.dtype | None = None) -> Products:
    """Curvature-vector products of J at θ_s over the covered parameters of ``ctx``."""
    return Products(ctx.module, ctx.params, ctx.buffers, ctx.names, ctx.data.X, ctx.data.y, ctx.recipe.loss_fn,
                    ctx.recipe.loss_name, ctx.weight_decay, kind, ctx.batch_size, dtype)


def _curvature(method: str, options: dict) -> str:
    kind = options["curvature"]
    if kind not in KINDS:
        raise ValueError(f"influence: method {method!r}: curvature must be one of {KINDS}, got {kind!r}")
    return kind


def _count(method: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"influence: method {method!r}: {name} must be a positive int, got {value!r}")
    return value


def _positive(method: str, name: str, value, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"influence: method {method!r}: {name} must be a finite number > 0"
                         f"{' or None' if allow_none else ''}, got {value!r}")
    return float(value)


def _like(u: Params, ref: Params) -> Params:
    """u in the dtype of the query gradients ``ref``."""
    return {k: v.to(ref[k].dtype) for k, v in u.items()}


def ekfac_preconditioner(ctx: SeedContext, prods: Products, damping: float):
    """(H_EKFAC + λ̃I)⁻¹ on flat directions [Q, d], the seed's EK-FAC prefit by the core (all seeds
    fitted together: the method registers ``kronecker="ekfac"`` when it preconditions)."""
    if not damping + ctx.weight_decay > 0:
        raise ValueError("influence: the EK-FAC preconditioner (Λ + λ_wd + λ̃)⁻¹ needs λ̃ + λ_wd > 0, got "
                         f"λ̃ = {damping!r} and weight decay {ctx.weight_decay!r}; pass a positive damping")
    curvature = ctx.kronecker
    if curvature is None:
        raise ValueError("influence: the EK-FAC preconditioner needs the seed's prefit EK-FAC; register the "
                         "method with kronecker='ekfac' (or a function of its options returning 'ekfac')")
    return lambda r: prods.flatten(curvature.solve(prods.unflatten(r), damping))


def _cg_preconditioned(options: dict) -> bool:
    return options["precondition"] == "ekfac"


@register("exact", options={"curvature": "ggn"}, uses_fisher=False)
def exact(ctx: SeedContext, grad_m: Params, options: dict) -> MethodResult:
    kind = _curvature("exact", options)
    prods = products(ctx, kind, torch.float64)
    if prods.dim > MAX_EXACT:
        raise ValueError(f"influence: method 'exact' builds a d × d matrix; the covered parameters have "
                         f"d = {prods.dim} > {MAX_EXACT}. Use method='cg' (same numbers, iteratively) or "
                         "cover fewer modules with modules=")
    sol = solvers.exact(prods.matrix(), prods.flatten(grad_m), ctx.damping)
    return MethodResult([(ctx.params, _like(prods.unflatten(sol.x), grad_m))],
                        {"curvature": kind, "dim": prods.dim, **sol.meta()})


@register("cg", options={"curvature": "ggn", "max_iter": 200, "tol": 1e-6, "precondition": None},
          kronecker=lambda o: "ekfac" if _cg_preconditioned(o) else None, uses_fisher=_cg_preconditioned)
def cg(ctx: SeedContext, grad_m: Params, options: dict) -> MethodResult:
    kind = _curvature("cg", options)
    max_iter = _count("cg", "max_iter", options["max_iter"])
    tol = _positive("cg", "tol", options["tol"])
    if options["precondition"] not in (None, "ekfac"):
        raise ValueError(f"influence: method 'cg': precondition must be None or 'ekfac', got "
                         f"{options['precondition']!r}")
    prods = products(ctx, kind)
    pre = ekfac_preconditioner(ctx, prods, ctx.damping) if _cg_preconditioned(options) else None
    sol = solvers.cg(prods.full_flat, prods.flatten(grad_m), ctx.damping, max_iter=max_iter, tol=tol,
                     precondition=pre)
    return MethodResult([(ctx.params, _like(prods.unflatten(sol.x), grad_m))],
                        {"curvature": kind, "precondition": options["precondition"], **sol.meta()})


@register("lissa", options={"curvature": "ggn", "alpha": None, "iterations": 1000, "repeats": 1}, uses_fisher=False)
def lissa(ctx: SeedContext, grad_m: Params, options: dict) -> MethodResult:
    kind = _curvature("lissa", options)
    alpha = _positive("lissa", "alpha", options["alpha"], allow_none=True)
    iterations = _count("lissa", "iterations", options["iterations"])
    repeats = _count("lissa", "repeats", options["repeats"])
    prods = products(ctx, kind)
    if alpha is None:
        top = solvers.power_iteration(prods.full_flat, prods.dim, prods.dtype, seed=ctx.generator_seed,
                                      device=prods.device)
        alpha = 0.5 / (top + ctx.damping)
    sol = solvers.lissa(prods.minibatch_flat, prods.n, prods.flatten(grad_m), ctx.damping, alpha=alpha,
                        iterations=iterations, repeats=repeats, batch_size=ctx.batch_size,
                        seed=ctx.generator_seed, full_matvec=prods.full_flat)
    return MethodResult([(ctx.params, _like(prods.unflatten(sol.x), grad_m))],
                        {"curvature": kind, "alpha": alpha, "repeats": repeats, **sol.meta()})


@register("astra", kronecker="ekfac", options={"iterations": 200, "lr": None, "momentum": 0.9, "lr_decay": 0.5,
                                               "decay_every": 50, "preconditioner_damping": None})
def astra(ctx: SeedContext, grad_m: Params, options: dict) -> MethodResult:
    lr = _positive("astra", "lr", options["lr"], allow_none=True)
    pre_damping = _positive("astra", "preconditioner_damping", options["preconditioner_damping"], allow_none=True)
    pre_damping = ctx.damping if pre_damping is None else pre_damping
    prods = products(ctx, "ggn")
    pre = ekfac_preconditioner(ctx, prods, pre_damping)
    sol = solvers.astra(prods.minibatch_flat, prods.n, prods.flatten(grad_m), ctx.damping, pre,
                        iterations=options["iterations"], lr=lr, momentum=options["momentum"],
                        lr_decay=options["lr_decay"], decay_every=options["decay_every"],
                        batch_size=ctx.batch_size, seed=ctx.generator_seed, full_matvec=prods.full_flat)
    return MethodResult([(ctx.params, _like(prods.unflatten(sol.x), grad_m))],
                        {"preconditioner_damping": pre_damping,
                         "lr": 0.1 * ctx.damping if lr is None else lr, **sol.meta()})
