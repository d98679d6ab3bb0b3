"""Curvature-vector products of the training objective (PAPER §4.1, §6.2), with ``torch.func``.

The objective is J(θ) = (1/N) Σ_n ℓ_n(θ) + ½λ_wd‖θ‖², restricted to the *covered* parameters
(the others held fixed). For Q directions v_q (name -> [Q, *shape]) :class:`Products` gives

- ``"ggn"``: G v = (1/N) Σ_n J_nᵀ H_n J_n v + λ_wd v, with J_n = ∂z_n/∂θ the Jacobian of the
  model outputs and H_n = ∇²_z ℓ_n the Hessian of the loss in the outputs: diag(p) − ppᵀ for
  cross-entropy on logits [B, C] (p = softmax z), (2/D)·I for mse over D outputs, and for any
  other loss the forward-over-reverse product of ``loss_fn`` in z. J v comes from ``jvp``
  (vmapped over q), Jᵀ(·) from one ``vjp``.
- ``"hessian"``: H v = (1/N) Σ_n ∇²ℓ_n v + λ_wd v, forward-over-reverse (``jvp`` of ``grad``).

:meth:`Products.full` streams the whole data in fixed consecutive batches (exact and
deterministic); :meth:`Products.minibatch` averages over given indices (a multiset), as LiSSA
and ASTRA sample them. The model runs in eval mode (no dropout). :meth:`Products.matrix` builds
the explicit d × d matrix from products on the unit vectors, for small models.

Directions can also be handled flat: :meth:`Products.flatten` [Q, d] and :meth:`Products.unflatten`,
in the order of ``names`` (each parameter row-major), which is how the solvers
(:mod:`dtda.curvature.solvers`) see them.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vjp, vmap

Params = dict[str, Tensor]
KINDS = ("ggn", "hessian")


def _cross_entropy_hessian(z: Tensor, u: Tensor) -> Tensor:
    """(diag(p) − ppᵀ) u per example, p = softmax(z); z [B, C], u [Q, B, C]."""
    p = torch.softmax(z, dim=-1)
    return p * u - p * (p * u).sum(-1, keepdim=True)


class Products:
    """Curvature-vector products of J at ``params`` over the ``names`` it covers.

    module: the architecture (parameters and buffers passed functionally). params: every
    parameter (name -> tensor). X [N, ...], y [N, ...]: the training data (true labels).
    loss_fn: per-example loss ``(outputs, y) -> [B]``; loss_name: "cross_entropy", "mse" or None
    (then H_n comes from autograd of ``loss_fn``). weight_decay: λ_wd. kind: "ggn" or "hessian".
    batch_size: examples per streamed batch. dtype: cast parameters, buffers and floating inputs
    to it (e.g. float64 for an explicit matrix), or None to keep theirs. chunk_size: vmap chunk
    over the Q directions (None: all at once).
    """

    def __init__(self, module: nn.Module, params: Params, buffers: dict, names: list[str], X: Tensor,
                 y: Tensor, loss_fn: Callable[[Tensor, Tensor], Tensor], loss_name: str | None,
                 weight_decay: float = 0.0, kind: str = "ggn", batch_size: int = 256,
                 dtype: torch.dtype | None = None, chunk_size: int | None = None):
        if kind not in KINDS:
            raise ValueError(f"curvature must be one of {KINDS}, got {kind!r}")
        missing = [k for k in names if k not in params]
        if missing or not names:
            raise ValueError(f"names must be a non-empty list of parameter names; {missing} not in "
                             f"the parameters {list(params)}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")

        def cast(t: Tensor) -> Tensor:
            return t.to(dtype) if dtype is not None and torch.is_floating_point(t) else t

        self.module, self.kind, self.loss_fn, self.loss_name = module, kind, loss_fn, loss_name
        self.names = list(names)
        self.params = {k: cast(p.detach()) for k, p in params.items()}
        self.buffers = {k: cast(b) for k, b in buffers.items()}
        self.X, self.y = cast(X), (cast(y) if torch.is_floating_point(y) else y)
        self.weight_decay, self.batch_size, self.chunk_size = float(weight_decay), batch_size, chunk_size
        self.shapes = [self.params[k].shape for k in self.names]
        self.sizes = [self.params[k].numel() for k in self.names]

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def dim(self) -> int:
        """d, the number of covered scalars."""
        return sum(self.sizes)

    @property
    def dtype(self) -> torch.dtype:
        return self.params[self.names[0]].dtype

    @property
    def device(self) -> torch.device:
        return self.params[self.names[0]].device

    # -- flat views ------------------------------------------------------------------------------
    def flatten(self, v: Params) -> Tensor:
        """name -> [Q, *shape] as [Q, d] (order of ``names``)."""
        return torch.cat([v[k].reshape(v[k].shape[0], -1) for k in self.names], dim=1)

    def unflatten(self, x: Tensor) -> Params:
        """[Q, d] as name -> [Q, *shape]."""
        parts = x.split(self.sizes, dim=1)
        return {k: p.reshape((x.shape[0],) + tuple(s)) for k, p, s in zip(self.names, parts, self.shapes)}

    # -- products --------------------------------------------------------------------------------
    def _outputs(self, x: Tensor) -> Callable[[Params], Tensor]:
        fixed = {k: p for k, p in self.params.items() if k not in self.names}

        def f(covered: Params) -> Tensor:
            return functional_call(self.module, ({**fixed, **covered}, self.buffers), (x,))
        return f

    def _loss_hessian(self, z: Tensor, y: Tensor, u: Tensor) -> Tensor:
        """∇²_z ℓ_n applied to u [Q, B, *out] per example."""
        if self.loss_name == "cross_entropy" and z.dim() == 2:
            return _cross_entropy_hessian(z, u)
        if self.loss_name == "mse":
            return u * (2.0 / z[0].numel())

        def total(zz: Tensor) -> Tensor:
            return self.loss_fn(zz, y).sum()
        return vmap(lambda t: jvp(grad(total), (z,), (t,))[1], chunk_size=self.chunk_size)(u)

    def _batch_sum(self, v: Params, x: Tensor, y: Tensor) -> Params:
        """Σ_{n in batch} of the data term's product with v (name -> [Q, *shape])."""
        f = self._outputs(x)
        covered = {k: self.params[k] for k in self.names}
        if self.kind == "ggn":
            z, pull = vjp(f, covered)
            Jv = vmap(lambda t: jvp(f, (covered,), (t,))[1], chunk_size=self.chunk_size)(v)
            return vmap(pull, chunk_size=self.chunk_size)(self._loss_hessian(z.detach(), y, Jv))[0]

        def total(p: Params) -> Tensor:
            return self.loss_fn(f(p), y).sum()
        return vmap(lambda t: jvp(grad(total), (covered,), (t,))[1], chunk_size=self.chunk_size)(v)

    def _mean(self, v: Params, parts) -> Params:
        was_training = self.module.training
        self.module.eval()
        try:
            total, count = None, 0
            for idx in parts:
                got = self._batch_sum(v, self.X[idx], self.y[idx])
                total = got if total is None else {k: total[k] + got[k] for k in total}
                count += self.X[idx].shape[0]
        finally:
            self.module.train(was_training)
        return {k: total[k] / count + self.weight_decay * v[k] for k in self.names}

    def full(self, v: Params) -> Params:
        """(1/N) Σ_n (data term) v + λ_wd v over the whole data, in consecutive batches."""
        return self._mean(v, [slice(lo, min(lo + self.batch_size, self.n))
                              for lo in range(0, self.n, self.batch_size)])

    def minibatch(self, v: Params, indices: Tensor) -> Params:
        """(1/|B|) Σ_{n∈B} (data term) v + λ_wd v for the index multiset ``indices`` [|B|]."""
        return self._mean(v, [indices[lo:lo + self.batch_size]
                              for lo in range(0, indices.shape[0], self.batch_size)])

    def full_flat(self, x: Tensor) -> Tensor:
        """:meth:`full` on flat directions [Q, d] -> [Q, d]."""
        return self.flatten(self.full(self.unflatten(x.to(self.dtype))))

    def minibatch_flat(self, indices: Tensor, x: Tensor) -> Tensor:
        """:meth:`minibatch` on flat directions [Q, d] -> [Q, d]."""
        return self.flatten(self.minibatch(self.unflatten(x.to(self.dtype)), indices))

    def matrix(self, chunk: int = 256) -> Tensor:
        """The explicit symmetric d × d matrix (products on ``chunk`` unit vectors at a time)."""
        d = self.dim
        eye = torch.eye(d, dtype=self.dtype, device=self.device)
        cols = [self.full_flat(eye[lo:lo + chunk]) for lo in range(0, d, chunk)]
        M = torch.cat(cols)  # row i = M e_i = column i (M is symmetric)
        return 0.5 * (M + M.T)
