"""Built-in model factories: ``mlp:W1,W2,...`` and ``linear``, picklable for process and Ray workers."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


@dataclass(frozen=True)
class MLP:
    """Zero-argument factory of ``Linear(d_in, W1) → act → … → Linear(W_last, d_out)``.

    A dataclass rather than a closure so that it pickles by value to other processes and machines.
    """

    d_in: int
    widths: tuple[int, ...]
    d_out: int
    activation: str = "relu"

    def __call__(self) -> nn.Module:
        layers: list[nn.Module] = []
        d = self.d_in
        for w in self.widths:
            layers += [nn.Linear(d, w), _ACTIVATIONS[self.activation]()]
            d = w
        layers.append(nn.Linear(d, self.d_out))
        return nn.Sequential(*layers)


def factory(name: str, d_in: int, d_out: int, activation: str = "relu"):
    """The factory named by ``model.name`` (``linear`` or ``mlp:W1,W2,...``) for d_in → d_out."""
    if name == "linear":
        return MLP(d_in, (), d_out, activation)
    if name.startswith("mlp:"):
        return MLP(d_in, tuple(int(w) for w in name[4:].split(",")), d_out, activation)
    raise ValueError(f"model.name: expected 'linear' or 'mlp:W1,W2,...', got {name!r}")
