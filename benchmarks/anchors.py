"""The anchor tools' own implementations of dtda's ops, timed beside dtda's by ``benchmarks/ops.py``.

One adapter per (op, anchor): ``make(op, anchor, *args)`` takes the benchmark's inputs (the tuple
``SPECS[op].make`` returns) and returns a zero-argument callable that runs the anchor's code on
them and returns the result in dtda's layout and scale. Setup (building a projector, wrapping a
layer, storing eigenvectors) happens in the adapter, outside the timed call, as a user of the tool
would do it once. ``unavailable(anchor)`` says why an anchor cannot run here ('' when it can).

What each adapter calls (as of traker 0.3.2, dattri 0.3.0, kronfluence 1.0.1, bergson 2.5.1):

- ``jl_project``/trak: ``trak.projectors.BasicProjector(...).project(x, model_id=0)`` (TRAK's CPU
  projector, Rademacher, default ``block_size=100``), divided by √k (TRAK leaves R unscaled).
- ``jl_project``/dattri: the function returned by ``dattri.func.projection.random_project(...,
  proj_type="rademacher", device="cpu")`` (a ``BasicProjector``, which already divides by √k).
- ``kron_covariance``/kronfluence: ``TrackedLinear.get_flattened_activation`` (mask applied to a
  copy, as the forward hook does) then ``CovarianceTracker._update_activation_covariance_matrix``
  (``addmm_``): the body of Kronfluence's covariance forward hook.
- ``ekfac_eigvals``/kronfluence: ``TrackedLinear.compute_per_sample_gradient`` then
  ``LambdaTracker._update_lambda_matrix`` (strategy "ekfac"): the body of the Lambda backward hook.
- ``kron_apply``/kronfluence: ``FactorConfig.CONFIGS["ekfac"].precondition_gradient`` with QA, QS
  and Λ⁻¹ = scale in its storage: the query preconditioning step.
- ``kron_apply``/bergson: ``bergson.hessians.preconditioner.FactoredPreconditioner(QA, QS, scale,
  apply_fn=identity).apply`` on the flattened [Q, O·I] gradients (``apply_fn`` replaces Bergson's
  damped inversion of the eigenvalues by the given ``scale``).
- ``ghost_dot``/kronfluence: ``TrackedLinear.compute_pairwise_score(M, a, g)`` (opt_einsum path
  chosen by Kronfluence, cached in the module as Kronfluence does), transposed to [N, Q].
- ``ghost_pairwise``/kronfluence: query gradients by ``compute_per_sample_gradient(a_q, g_q)``
  (strategy "identity", whose preconditioning returns them unchanged), then
  ``compute_pairwise_score`` against the training side.

Kronfluence's hooks see one data-loader batch at a time and form [B, O, I] per-example tensors, so
its adapters run on batches of B = ⌊512 MiB / (4·O·I)⌋ examples (4·T·D for the covariance's masked
copy): at most 512 MiB per per-example tensor, the way a user's ``per_device_batch_size`` bounds it.

The projections draw R from other generators (torch's CPU generator, per 100-column block), so
their values cannot match dtda's; ``jl_check`` checks their shape and scale instead.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import math
import sys
from typing import Callable

import torch

BATCH_BYTES = 512 << 20
# anchor -> (PyPI distribution, module whose import proves it usable)
ANCHORS = {
    "trak": ("traker", "trak.projectors"),
    "dattri": ("dattri", "dattri.func.projection"),
    "kronfluence": ("kronfluence", "kronfluence.module.linear"),
    "bergson": ("bergson", "bergson.hessians.preconditioner"),
}
INSTALL = ("python -m venv --system-site-packages VENV && VENV/bin/pip install torch==<this torch> "
           "traker dattri kronfluence bergson")
# Kronfluence requires torchvision and Bergson torchaudio, and pip installs releases built for
# another torch (torchvision 0.28.0 and torchaudio 2.11.1 beside torch 2.13.0) that fail to import;
# Bergson imports transformers, which imports torchvision whenever one is installed. No code called
# here needs either, so a broken one is hidden: with sys.modules[name] = None, importlib.util.find_spec
# reports it absent and ``import`` raises ModuleNotFoundError.
UNUSED_DEPENDENCIES = ("torchvision", "torchaudio")
# Ops whose anchors use other random matrices: compared by jl_check, not by value.
VALUES_DIFFER = {"jl_project"}


def _hide_broken_unused_dependencies() -> None:
    for name in UNUSED_DEPENDENCIES:
        if name in sys.modules or importlib.util.find_spec(name) is None:
            continue
        try:
            importlib.import_module(name)
        except Exception:  # built for another torch
            sys.modules[name] = None


def unavailable(anchor: str) -> str:
    """Why ``anchor`` cannot run in this environment ('' when it can)."""
    _hide_broken_unused_dependencies()
    dist, module = ANCHORS[anchor]
    try:
        importlib.import_module(module)
    except Exception as err:  # a missing package, or a broken dependency of an installed one
        return f"{dist} not usable ({type(err).__name__}: {err})"
    return ""


def version(anchor: str) -> str:
    dist = ANCHORS[anchor][0]
    return f"{dist} {importlib.metadata.version(dist)}"


def _batches(n: int, per_example_bytes: int) -> list[slice]:
    size = max(1, min(n, BATCH_BYTES // per_example_bytes))
    return [slice(i, min(n, i + size)) for i in range(0, n, size)]


# ---- TRAK and dattri: random projection -------------------------------------------------------

def _trak_jl(x: torch.Tensor, k: int, seed: int) -> Callable[[], torch.Tensor]:
    from trak.projectors import BasicProjector, ProjectionType

    projector = BasicProjector(grad_dim=x.shape[1], proj_dim=k, seed=seed,
                               proj_type=ProjectionType.rademacher, device=torch.device("cpu"), dtype=x.dtype)
    return lambda: projector.project(x, model_id=0).div_(math.sqrt(k))


def _dattri_jl(x: torch.Tensor, k: int, seed: int) -> Callable[[], torch.Tensor]:
    from dattri.func.projection import random_project

    project = random_project(x, x.shape[0], proj_dim=k, proj_max_batch_size=32, proj_seed=seed,
                             proj_type="rademacher", device="cpu")
    return lambda: project(x)


def jl_check(x: torch.Tensor, y: torch.Tensor, k: int, rows: int = 64) -> str:
    """'' when y [N, k] looks like x R/√k for a random sign matrix R, else what is wrong.

    Scale: ‖Y‖²/‖X‖² must be within 5% of 1 (its spread is about √(2/(N·k)) here). Geometry: the Gram
    matrix of the first ``rows`` projected rows must match x's within 6/√k of the mean squared row
    norm (each entry's JL error has a standard deviation of about ‖x‖²/√k).
    """
    if y.shape != (x.shape[0], k):
        return f"JL check failed: shape {tuple(y.shape)}, expected {(x.shape[0], k)}"
    # Row norms first: a float32 sum over all N·P entries loses several percent at N·P = 2.7·10⁸.
    scale = float(y.norm(dim=1).double().square().sum() / x.norm(dim=1).double().square().sum())
    x64, y64 = x[:rows].double(), y[:rows].double()
    gx, gy = x64 @ x64.T, y64 @ y64.T
    gram = float((gy - gx).abs().max() / gx.diagonal().mean())
    limit = 6 / math.sqrt(k)
    if abs(scale - 1) <= 0.05 and gram <= limit:
        return ""
    return f"JL check failed: ‖Y‖²/‖X‖² = {scale:.3f} (1 ± 0.05), Gram error {gram:.3f} (≤ {limit:.3f})"


# ---- Kronfluence: a TrackedLinear fed the benchmark's activations and output gradients --------

def _tracked_linear(inputs: int, outputs: int, strategy: str = "ekfac"):
    from kronfluence.arguments import FactorArguments
    from kronfluence.module.linear import TrackedLinear

    layer = torch.nn.Linear(inputs, outputs, bias=False)
    return TrackedLinear(name="bench", original_module=layer,
                         factor_args=FactorArguments(strategy=strategy))


def _kf_covariance(x: torch.Tensor, mask: torch.Tensor | None) -> Callable[[], torch.Tensor]:
    from kronfluence.module.tracked_module import ModuleMode
    from kronfluence.utils.constants import ACTIVATION_COVARIANCE_MATRIX_NAME

    module = _tracked_linear(x.shape[-1], x.shape[-1])
    tracker = module._trackers[ModuleMode.COVARIANCE]
    dtype = module.factor_args.activation_covariance_dtype

    def call():
        tracker.release_memory()
        for part in _batches(x.shape[0], 4 * x[0].numel()):
            module.set_attention_mask(None if mask is None else mask[part])
            flat, count = module.get_flattened_activation(x[part].to(dtype=dtype, copy=mask is not None))
            tracker._update_activation_covariance_matrix(input_activation=flat, count=count)
        return module.storage[ACTIVATION_COVARIANCE_MATRIX_NAME]
    return call


def _kf_lambda(a, g, QA, QS) -> Callable[[], torch.Tensor]:
    from kronfluence.module.tracked_module import ModuleMode
    from kronfluence.utils import constants as names

    module = _tracked_linear(QA.shape[0], QS.shape[0])
    module.storage[names.ACTIVATION_EIGENVECTORS_NAME] = QA
    module.storage[names.GRADIENT_EIGENVECTORS_NAME] = QS
    # The eigenvalues are not used for Λ, but the tracker checks that the eigendecomposition exists.
    module.storage[names.ACTIVATION_EIGENVALUES_NAME] = torch.ones(QA.shape[0])
    module.storage[names.GRADIENT_EIGENVALUES_NAME] = torch.ones(QS.shape[0])
    tracker = module._trackers[ModuleMode.LAMBDA]

    def call():
        module.storage[names.LAMBDA_MATRIX_NAME] = module.storage[names.NUM_LAMBDA_PROCESSED] = None
        for part in _batches(a.shape[0], 4 * QA.shape[0] * QS.shape[0]):
            psg = module.compute_per_sample_gradient(input_activation=a[part], output_gradient=g[part])
            tracker._update_lambda_matrix(per_sample_gradient=psg.to(dtype=module.factor_args.lambda_dtype))
        return module.storage[names.LAMBDA_MATRIX_NAME]
    return call


def _kf_precondition(V, QA, QS, scale) -> Callable[[], torch.Tensor]:
    from kronfluence.factor.config import FactorConfig
    from kronfluence.utils import constants as names

    storage = {names.ACTIVATION_EIGENVECTORS_NAME: QA, names.GRADIENT_EIGENVECTORS_NAME: QS,
               names.LAMBDA_MATRIX_NAME: scale}
    return lambda: FactorConfig.CONFIGS["ekfac"].precondition_gradient(gradient=V, storage=storage)


def _bergson_precondition(V, QA, QS, scale) -> Callable[[], torch.Tensor]:
    from bergson.hessians.preconditioner import FactoredPreconditioner

    preconditioner = FactoredPreconditioner({"m": QA}, {"m": QS}, {"m": scale}, apply_fn=lambda lam: lam)
    grads = {"m": V.reshape(V.shape[0], -1)}
    return lambda: preconditioner.apply(grads)["m"].view(V.shape)


def _kf_scores(module, M: torch.Tensor, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """[Q, N] scores of M [Q, O, I] against the examples (a, g), batch by batch."""
    parts = _batches(a.shape[0], 4 * M.shape[1] * M.shape[2])
    return torch.cat([module.compute_pairwise_score(preconditioned_gradient=M, input_activation=a[part],
                                                    output_gradient=g[part]) for part in parts], dim=1)


def _kf_ghost_dot(a, g, M) -> Callable[[], torch.Tensor]:
    module = _tracked_linear(a.shape[-1], g.shape[-1])
    return lambda: _kf_scores(module, M, a, g).T


def _kf_ghost_pairwise(a_q, g_q, a, g) -> Callable[[], torch.Tensor]:
    from kronfluence.factor.config import FactorConfig

    module = _tracked_linear(a.shape[-1], g.shape[-1], strategy="identity")

    def call():
        queries = module.compute_per_sample_gradient(input_activation=a_q, output_gradient=g_q)
        queries = FactorConfig.CONFIGS["identity"].precondition_gradient(gradient=queries,
                                                                         storage=module.storage)
        return _kf_scores(module, queries, a, g)
    return call


ADAPTERS: dict[str, dict[str, Callable[..., Callable[[], torch.Tensor]]]] = {
    "jl_project": {"trak": _trak_jl, "dattri": _dattri_jl},
    "kron_covariance": {"kronfluence": _kf_covariance},
    "ekfac_eigvals": {"kronfluence": _kf_lambda},
    "kron_apply": {"kronfluence": _kf_precondition, "bergson": _bergson_precondition},
    "ghost_dot": {"kronfluence": _kf_ghost_dot},
    "ghost_pairwise": {"kronfluence": _kf_ghost_pairwise},
}


def make(op: str, anchor: str, *args) -> Callable[[], torch.Tensor]:
    """``anchor``'s implementation of ``op`` as a zero-argument callable on the inputs ``args``."""
    _hide_broken_unused_dependencies()
    return ADAPTERS[op][anchor](*args)
