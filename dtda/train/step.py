"""The training step as a pure function, built on ``torch.func.functional_call``.

``Step.phi(params, state, x, y, w, t) -> (params', state', losses)`` is Φ_t of PAPER §3.4: it
depends only on its arguments (dropout masks come from the member's ``dropout`` stream at step
t) and is differentiated with ``torch.func.jvp`` / ``vjp`` in (params, state, w). Calling the
``Step`` itself runs the same maths with eager autograd for the gradient (less Python overhead
than ``torch.func.grad``); training and replay both use it, so replay is bit-identical.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.func import functional_call

from dtda.train.optim import Params, State
from dtda.train.recipe import Recipe
from dtda.train.seeds import stream_seed


@contextmanager
def mode(module: nn.Module, training: bool):
    """Temporarily set ``module``'s train/eval mode."""
    before = module.training
    module.train(training)
    try:
        yield module
    finally:
        module.train(before)


class Step:
    """Φ_t for one member: ``recipe`` and ``seed`` fixed, T steps in all.

    ``module`` supplies the architecture and buffers (constants); parameters are passed in.
    """

    def __init__(self, recipe: Recipe, module: nn.Module, seed: int, T: int):
        self.recipe, self.module, self.seed, self.T = recipe, module, seed, T
        self.buffers = {k: b for k, b in module.named_buffers()}
        self.stochastic = any(isinstance(m, nn.modules.dropout._DropoutNd) for m in module.modules())

    def lr(self, t: int) -> float:
        return self.recipe.lr(t, self.T)

    def dropout_seed(self, t: int) -> int:
        return stream_seed(self.seed, "dropout", t)

    def outputs(self, params: Params, x: Tensor, t: int) -> Tensor:
        """Model outputs in train mode, with step t's dropout masks."""
        with mode(self.module, True):
            if not self.stochastic:
                return functional_call(self.module, (params, self.buffers), (x,))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.dropout_seed(t))
                return functional_call(self.module, (params, self.buffers), (x,))

    def losses(self, params: Params, x: Tensor, y: Tensor, t: int) -> Tensor:
        """Per-example losses ℓ_n(θ) [B]."""
        losses = self.recipe.loss_fn(self.outputs(params, x, t), y)
        if losses.shape != (x.shape[0],):
            raise ValueError(f"Recipe: loss must return per-example losses of shape [{x.shape[0]}], "
                             f"got {tuple(losses.shape)}")
        return losses

    def objective(self, params: Params, x: Tensor, y: Tensor, w: Tensor, t: int):
        """(L_t = (1/|B_t|) Σ w_n ℓ_n + R(θ), per-example losses [B])."""
        losses = self.losses(params, x, y, t)
        total = (w * losses).sum() / w.shape[0] + self.recipe.optimizer.regulariser(params)
        return total, losses

    def gradient(self, params: Params, x: Tensor, y: Tensor, w: Tensor, t: int):
        """(∇_θ L_t, per-example losses), composable with ``torch.func`` transforms."""
        return torch.func.grad(self.objective, has_aux=True)(params, x, y, w, t)

    def eager_gradient(self, params: Params, x: Tensor, y: Tensor, w: Tensor, t: int):
        """(∇_θ L_t, per-example losses) by eager autograd (not inside ``torch.func`` transforms)."""
        with torch.enable_grad():
            leaves = {k: p.detach().requires_grad_() for k, p in params.items()}
            total, losses = self.objective(leaves, x, y, w, t)
            grads = torch.autograd.grad(total, list(leaves.values()))
        return dict(zip(leaves, grads)), losses.detach()

    def update(self, params: Params, state: State, grads: Params, t: int):
        """The optimiser's part of Φ_t: (θ, state, d) -> (θ', state')."""
        return self.recipe.optimizer.update(params, state, grads, self.lr(t), t)

    def update_adjoint(self, params: Params, state: State, grads: Params, t: int,
                       cot_params: Params, cot_state: State, scratch: dict | None = None):
        """Cotangents of (θ, state, d) from those of (θ', state') [Q, ...]: the optimiser's vjp
        (with ``scratch``, in place: :func:`dtda.train.optim.adjoint_buffers`)."""
        return self.recipe.optimizer.adjoint(params, state, grads, self.lr(t), t, cot_params, cot_state,
                                             scratch)

    def phi(self, params: Params, state: State, x: Tensor, y: Tensor, w: Tensor, t: int):
        """Φ_t for ``torch.func``: (θ_t, state_t, w_B) -> (θ_{t+1}, state_{t+1}, losses [B])."""
        grads, losses = self.gradient(params, x, y, w, t)
        new_params, new_state = self.update(params, state, grads, t)
        return new_params, new_state, losses

    def __call__(self, params: Params, state: State, x: Tensor, y: Tensor, w: Tensor, t: int):
        """Φ_t with eager autograd: training and replay."""
        grads, losses = self.eager_gradient(params, x, y, w, t)
        with torch.no_grad():
            new_params, new_state = self.update(params, state, grads, t)
        return new_params, new_state, losses
