"""Influence functions per seed as samples of the after-removal distribution (PAPER §4, §6).

For each member s of an ensemble, with θ_s its trained parameters (PAPER §4.1):

    δ_s(k, q) = + (1/N) ∇m_q(θ_s)ᵀ (H_s + λI)⁻¹ ∇ℓ_k(θ_s)

H_s is the curvature of J = (1/N)Σ_n ℓ_n + R at θ_s: weight decay λ_wd of SGD (R = ½λ_wd‖θ‖²)
is curvature, added as λ_wd·I (AdamW's decoupled decay is not part of J). ∇ℓ_k excludes R and
uses the true label; the model is in eval mode (no dropout). λ ≥ 0 is the damping.

The work is split in two: a *method* turns the query gradients ∇m (name -> [Q, *shape], the
covered parameters) into directions u = (H + λI)⁻¹∇m (a :class:`MethodResult`, possibly several
terms at different parameters, as SOURCE has), and the core scores every training example
against them with ``dtda.ops.ghost_dot`` on captured layer factors, streamed in batches (no
per-example gradient is ever formed): δ_s(k, q) = (1/N) Σ_terms u_qᵀ ∇ℓ_k(θ_term).

Methods here: ``identity`` (u = ∇m: the gradient dot product, no damping), ``diagonal``
(u = ∇m ⊘ (diag F + λ_wd + λ)), ``kfac`` and ``ekfac`` (:mod:`dtda.curvature.kronecker`). Others
register with :func:`register`.

Damping λ: a number ≥ 0; ``"heuristic"`` (Kronecker methods: 0.1 × the mean eigenvalue of F per
layer, Kronfluence's default; others: 0.1·tr(F)/d over the d covered parameters);
``"training-time"`` (PAPER §4.3, the default): λ = (1 − μ)/Σ_t η_t over the member's T steps, the
value for which the IF is the limit of unrolling (SGD only). Each method declares at registration
what it does with λ and whether it uses the sampled Fisher (:func:`register`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn

from dtda.attribute.reverse import measurement_gradient
from dtda.curvature import fisher as fisher_mod
from dtda.curvature.capture import Layer, find_layers, queries, query_scores, row_gradients
from dtda.curvature.kronecker import fit
from dtda.measure import as_measurement
from dtda.samples import SeedSamples
from dtda.train.data import Data, as_data
from dtda.train.optim import SGD, Params
from dtda.train.recipe import Recipe
from dtda.train.record import Member
from dtda.train.seeds import stream_seed
from dtda.train.step import Step

DAMPING_RULES = ("heuristic", "training-time")
#: Options every method accepts: the streaming batch size of data passes (default: 256) and the
#: rank r of the query compression (None: none; per layer, truncated SVD of u's matrix, scored in
#: factored form).
COMMON_OPTIONS: dict[str, object] = {"batch_size": 256, "query_rank": None}


@dataclass
class SeedContext:
    """One seed, built by :func:`influence` before its method runs."""

    seed: int
    recipe: Recipe
    member: Member
    module: nn.Module           # the architecture; parameters are passed functionally
    params: Params              # θ_s, every parameter
    buffers: dict
    names: list[str]            # covered parameter names (the ones scores and u live on)
    layers: list[Layer]         # covered layers
    data: Data                  # training data, true labels
    damping: float              # λ ≥ 0 resolved (0 where the method takes none or builds its own in)
    layer_damping: dict | None  # per-layer λ (layer name -> λ) for damping="layer" methods under "heuristic"
    weight_decay: float         # λ_wd, part of H (SGD weight decay; 0 for AdamW)
    fisher: str                 # "true" | "empirical"
    batch_size: int             # streaming batch size of data passes
    kronecker: object | None    # prefit KroneckerCurvature when the method asked for one
    generator_seed: int         # seed of any sampling the method does (from the member's seed)
    diagonal: Params | None = None  # diag F when already computed (the "heuristic" damping's pass)
    state: object | None = None     # the method's prefit state for this seed (see register's prefit)

    def fisher_diagonal(self) -> Params:
        """diag F over the covered parameters (float64), computed once."""
        if self.diagonal is None:
            self.diagonal = fisher_mod.diagonal(
                self.module, self.params, self.buffers, self.layers, self.data.X, self.data.y, self.fisher,
                self.recipe.loss_fn, self.recipe.loss_name, self.generator_seed, self.batch_size)
        return self.diagonal


@dataclass
class MethodResult:
    """[(θ where training gradients are taken, u = name -> [Q, *shape])] and JSON-able meta."""

    terms: list[tuple[Params, Params]]
    meta: dict = field(default_factory=dict)


Method = Callable[[SeedContext, Params, dict], MethodResult]


#: What a method does with the damping λ: "layer" (one λ per layer under "heuristic": the Kronecker
#: methods), "global" (one λ), "none" (no curvature, no damping) or "built-in" (the method damps by
#: its own construction, as SOURCE's 1/c per segment, and returns those values in its meta's
#: ``"damping"``; the requested rule is recorded as ignored).
DAMPING_USES = ("layer", "global", "none", "built-in")

Prefit = Callable[[list[SeedContext], dict], list]


@dataclass(frozen=True)
class _Registered:
    fn: Method
    kronecker: str | None | Callable[[dict], str | None]
    options: dict
    damping: str
    uses_fisher: bool | Callable[[dict], bool]
    prefit: Prefit | None

    def kronecker_kind(self, options: dict) -> str | None:
        """The Kronecker curvature to prefit for these options (None: none)."""
        return self.kronecker(options) if callable(self.kronecker) else self.kronecker

    def fisher_uses(self, options: dict, rule) -> list[str]:
        """What the sampled Fisher is used for with these options and damping rule: "method" (its
        curvature or preconditioner) and/or "damping" (the "heuristic" rule's 0.1·tr(F)/d)."""
        uses = []
        if self.uses_fisher(options) if callable(self.uses_fisher) else self.uses_fisher:
            uses.append("method")
        if rule == "heuristic" and self.damping in ("layer", "global"):
            uses.append("damping")
        return uses


METHODS: dict[str, _Registered] = {}


def register(name: str, *, kronecker: str | None | Callable[[dict], str | None] = None,
             options: dict[str, object] | None = None, damping: str = "global",
             uses_fisher: bool | Callable[[dict], bool] = True, prefit: Prefit | None = None):
    """Decorator registering ``fn(ctx, grad_m, options) -> MethodResult`` as method ``name``.

    kronecker: None, "kfac" or "ekfac" (or a function of the method's options giving one): the
    curvature to prefit, all seeds together, into ``ctx.kronecker``. options: the method's option
    names -> defaults (unknown ones raise before work). damping: one of :data:`DAMPING_USES`.
    uses_fisher: whether the method's curvature (or preconditioner) is the sampled Fisher of
    ``fisher=`` (or a function of its options saying so); methods on GGN or Hessian products
    say False, and a custom loss then works with any ``fisher``. prefit: ``(contexts, options)
    -> [state per seed]``, run once for all seeds after every context is built and before the
    per-seed calls (e.g. curvature at several parameter points fitted for all seeds in one
    ``kronecker.fit``); each state lands in ``ctx.state``. It validates the options first.
    """
    if not callable(kronecker) and kronecker not in (None, "kfac", "ekfac"):
        raise ValueError(f"register: kronecker must be None, 'kfac', 'ekfac' or a function of the options, "
                         f"got {kronecker!r}")
    if damping not in DAMPING_USES:
        raise ValueError(f"register: damping must be one of {DAMPING_USES}, got {damping!r}")
    clash = set(options or {}) & set(COMMON_OPTIONS)
    if clash:
        raise ValueError(f"register: options {sorted(clash)} are common to every method")

    def decorate(fn: Method) -> Method:
        METHODS[name] = _Registered(fn, kronecker, dict(options or {}), damping, uses_fisher, prefit)
        return fn
    return decorate


@register("identity", damping="none", uses_fisher=False)
def _identity(ctx: SeedContext, grad_m: Params, options: dict) -> MethodResult:
    return MethodResult([(ctx.params, grad_m)])


@register("diagonal")
def _diagonal(ctx: SeedContext, grad_m: Params, options: dict) -> MethodResult:
    diag = ctx.fisher_diagonal()
    shift = ctx.weight_decay + ctx.damping
    return MethodResult([(ctx.params, {k: (v / (diag[k] + shift)).to(v.dtype) for k, v in grad_m.items()})])


def _kronecker(ctx: SeedContext, grad_m: Params, options: dict) -> MethodResult:
    return MethodResult([(ctx.params, ctx.kronecker.solve(grad_m, ctx.layer_damping or ctx.damping))])


register("kfac", kronecker="kfac", damping="layer")(_kronecker)
register("ekfac", kronecker="ekfac", damping="layer")(_kronecker)


def _check_options(method: str, spec: _Registered, given: dict) -> dict:
    allowed = {**COMMON_OPTIONS, **spec.options}
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ValueError(f"influence: method {method!r} takes options {sorted(allowed)}, got unknown "
                         f"{unknown}")
    options = {**allowed, **given}
    b = options["batch_size"]
    if isinstance(b, bool) or not isinstance(b, int) or b < 1:
        raise ValueError(f"influence: batch_size must be a positive int, got {b!r}")
    r = options["query_rank"]
    if r is not None and (isinstance(r, bool) or not isinstance(r, int) or r < 1):
        raise ValueError(f"influence: query_rank must be None or a positive int (the rank r of each "
                         f"layer's query matrix), got {r!r}")
    return options


def _check_damping(damping) -> float | str:
    if isinstance(damping, str):
        if damping not in DAMPING_RULES:
            raise ValueError(f"influence: damping must be a number ≥ 0 or one of {DAMPING_RULES}, "
                             f"got {damping!r}")
        return damping
    if isinstance(damping, bool) or not isinstance(damping, (int, float)) or not math.isfinite(damping) \
            or damping < 0:
        raise ValueError(f"influence: damping must be a finite number ≥ 0 or one of {DAMPING_RULES}, "
                         f"got {damping!r}")
    return float(damping)


def training_time_damping(recipe: Recipe, steps: int) -> float:
    """λ = (1 − μ)/Σ_t η_t over ``steps`` steps of ``recipe``'s schedule (PAPER §4.3, SGD)."""
    opt = recipe.optimizer
    if not isinstance(opt, SGD):
        raise ValueError(f"influence: damping='training-time' is derived for SGD (λ = (1 − μ)/Σ_t η_t); "
                         f"this recipe uses {type(opt).__name__}. Pass a number or damping='heuristic'")
    total = sum(recipe.lr(t, steps) for t in range(steps))
    return (1.0 - opt.momentum) / total


def _resolve_damping(rule: float | str, ctx: SeedContext, spec: _Registered) -> None:
    """Set ctx.damping (and ctx.layer_damping for damping="layer" methods under "heuristic")."""
    if spec.damping in ("none", "built-in"):
        ctx.damping = 0.0
    elif rule == "training-time":
        ctx.damping = training_time_damping(ctx.recipe, ctx.member.record.steps)
    elif rule == "heuristic" and ctx.kronecker is not None:
        lams = ctx.kronecker.eigenvalues()
        if spec.damping == "layer":
            ctx.layer_damping = {name: 0.1 * float(lam.mean()) for name, lam in lams.items()}
        ctx.damping = 0.1 * float(sum(lam.sum() for lam in lams.values())) / _count(ctx)
    elif rule == "heuristic":
        ctx.damping = 0.1 * float(sum(v.sum() for v in ctx.fisher_diagonal().values())) / _count(ctx)
    else:
        ctx.damping = float(rule)


def _damping_meta(rule: float | str, spec: _Registered, dampings: list, layer_dampings: list,
                  metas: list[dict]) -> dict:
    """meta["damping"]: the rule and the values the method actually used (per seed)."""
    requested = rule if isinstance(rule, str) else "number"
    if spec.damping == "none":
        return {"rule": None, "value": None, "layers": None}
    if spec.damping == "built-in":
        return {"rule": "built-in", "value": [meta.get("damping") for meta in metas], "layers": None,
                "ignored": rule}
    return {"rule": requested, "value": dampings,
            "layers": layer_dampings if any(d is not None for d in layer_dampings) else None}


def _count(ctx: SeedContext) -> int:
    return sum(ctx.params[k].numel() for k in ctx.names)


def query_gradient(step: Step, measure, params: Params, layers: list[Layer]) -> tuple[Tensor, Params]:
    """(m(θ) [Q], ∇m(θ) as name -> [Q, *shape] over ``layers``' parameters). A per-row measurement
    (``measure.per_row``: per-query losses and margins) takes one forward and one backward of
    Σ_q m_q with the layer capture scoring uses (:func:`dtda.curvature.capture.row_gradients`);
    any other, or one whose rows the capture cannot tell apart, takes ``torch.func.jacrev``
    (:func:`dtda.attribute.reverse.measurement_gradient`: one backward per query)."""
    names = [k for layer in layers for k in layer.parameters]
    if measure.per_row:
        found = row_gradients(layers, params, lambda p: measure.check_gradient_path(
            measure.functional(p, step.buffers, step.module)))
        if found is not None:
            return found
    m, grad_m = measurement_gradient(step, measure, params)
    return m, {k: grad_m[k] for k in names}


def score(contexts: list[SeedContext], terms: list[list[tuple[Params, Params]]], rank: int | None = None
          ) -> list[Tensor]:
    """δ_s [N, Q] = (1/N) Σ_terms u_qᵀ∇ℓ_k(θ_term) for each seed s of ``contexts`` (one architecture),
    ``terms[s]`` its (θ, u) pairs (every seed has as many): true labels, eval mode, batches of the
    contexts' batch size, the seeds' j-th terms captured together per batch
    (:func:`dtda.curvature.fisher.grouped_passes`). ``rank``: query compression
    (:func:`dtda.curvature.capture.queries`)."""
    first = contexts[0]
    X, y = first.data.X, first.data.y
    N = X.shape[0]
    deltas: list[Tensor | None] = [None] * len(contexts)
    for j in range(len(terms[0])):
        prepared = [queries(first.layers, per_seed[j][1], rank) for per_seed in terms]
        for chunk, part, caps in fisher_mod.grouped_passes(
                first.module, [per_seed[j][0] for per_seed in terms], first.buffers, first.layers, X, y,
                "empirical", first.recipe.loss_fn, first.recipe.loss_name, [ctx.seed for ctx in contexts],
                first.batch_size):
            for s, cap in zip(chunk, caps):
                scores = query_scores(cap.a, cap.g, prepared[s])
                if deltas[s] is None:
                    deltas[s] = scores.new_zeros(N, scores.shape[1])
                deltas[s][part] += scores
            del caps, cap  # this batch's factors go before the next batch is captured (peak memory)
    return [delta / N for delta in deltas]


def influence(ensemble, measure, method: str = "ekfac", damping: float | str = "training-time",
              fisher: str = "true", train=None, modules=None, **solver_options) -> SeedSamples:
    """Per-seed influence-function removal effects of every member of ``ensemble``.

    measure: a ``dtda.measure`` object or a callable ``model -> [Q]``. method: a registered name
    (``sorted(METHODS)``). damping: a number ≥ 0, "heuristic" or "training-time" (see the module
    docstring). fisher: "true" (targets sampled from the model; cross-entropy or mse) or
    "empirical" (the true labels; any loss). train: the training data (default: the ensemble's).
    modules: None (every parameterised module must be an nn.Linear or nn.Conv2d), a list of module
    names or a predicate ``(name, module) -> bool``: the layers the scores cover.
    solver_options: ``batch_size`` (streaming, default 256), ``query_rank`` (None) and the method's own.

    Returns :class:`SeedSamples` with m [K, Q], δ [K, N, Q] and method "influence-<name>"; meta
    records the damping the method used (see :data:`DAMPING_USES`; SOURCE's built-in 1/c per
    segment, with the requested rule as "ignored"), the Fisher kind where something used it
    ("fisher_used_for": "method" and/or "damping"; the Fisher is checked against the loss only
    then), covered modules and parameters, N and each seed's method meta. Every argument is
    checked before any work.
    The K seeds share one architecture instance (its buffers, taken from the first seed's build, are
    treated as constants); Kronecker curvature is fitted for all seeds together and the training
    examples are scored for all seeds together (each data pass captures the seeds as one vmapped
    computation, as many seeds per pass as memory allows; eigendecompositions batched).
    """
    if method not in METHODS:
        raise ValueError(f"influence: method must be one of {sorted(METHODS)}, got {method!r}")
    spec = METHODS[method]
    options = _check_options(method, spec, solver_options)
    method_options = {k: options[k] for k in spec.options}
    rule = _check_damping(damping)
    recipe = ensemble.recipe
    fisher_uses = spec.fisher_uses(method_options, rule)
    if fisher_uses:
        fisher_mod.check_fisher(fisher, recipe.loss_name)
    if rule == "training-time" and spec.damping in ("layer", "global"):
        training_time_damping(recipe, 1)  # raises for optimisers without the rule
    data = ensemble.data if train is None else as_data(train, recipe.dtype, recipe.loss_name)
    measure = as_measurement(measure)
    members = list(ensemble.members)
    module = recipe.build(members[0].seed)
    layers = find_layers(module, modules, list(members[0].params))
    names = [k for layer in layers for k in layer.parameters]
    buffers = dict(module.named_buffers())
    weight_decay = recipe.optimizer.weight_decay if isinstance(recipe.optimizer, SGD) else 0.0
    contexts = [SeedContext(m.seed, recipe, m, module, m.params, buffers, names, layers, data, 0.0, None,
                            weight_decay, fisher, options["batch_size"], None, stream_seed(m.seed, "fisher"))
                for m in members]
    states = spec.prefit(contexts, method_options) if spec.prefit is not None else [None] * len(contexts)
    kind = spec.kronecker_kind(method_options)
    if kind is not None:
        curvatures = fit(module, [m.params for m in members], buffers, data, layers, fisher, recipe.loss_name,
                         [ctx.generator_seed for ctx in contexts], kind, options["batch_size"],
                         loss_fn=recipe.loss_fn, weight_decay=weight_decay)
        for ctx, curvature in zip(contexts, curvatures):
            ctx.kronecker = curvature
    ms, terms, metas = [], [], []
    for ctx, state in zip(contexts, states):
        ctx.state = state
        _resolve_damping(rule, ctx, spec)
        step = Step(recipe, module, ctx.seed, ctx.member.record.steps)
        m, grad_m = query_gradient(step, measure, ctx.params, ctx.layers)
        result = spec.fn(ctx, grad_m, method_options)
        ms.append(m)
        terms.append(result.terms)
        metas.append(result.meta)
    deltas = score(contexts, terms, options["query_rank"])
    m = torch.stack(ms)
    meta = {"recipe": recipe.describe(), "method": method, "options": options,
            "damping": _damping_meta(rule, spec, [ctx.damping for ctx in contexts],
                                     [ctx.layer_damping for ctx in contexts], metas),
            "weight_decay": weight_decay, "fisher": fisher if fisher_uses else None, "fisher_used_for": fisher_uses,
            "modules": [layer.name for layer in layers], "parameters": names,
            "uncovered": [k for k in members[0].params if k not in names],
            "N": len(data), "seeds": metas}
    return SeedSamples(m=m, delta=torch.stack(deltas), seeds=[ctx.seed for ctx in contexts],
                       names=measure.names_for(m.shape[1]), method=f"influence-{method}", meta=meta)
