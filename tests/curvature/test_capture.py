"""Capture of (a, g) for Linear with token dimensions and Conv2d against a per-example autograd
oracle, and the refusal of unsupported layers (float64)."""

import pytest
import torch
from curvature_oracle import per_example_gradients
from torch import nn

from dtda.curvature import capture, find_layers, fisher
from dtda.curvature.capture import capture_group


def _check_against_oracle(module, x, y, loss):
    """loss(outputs, targets) -> per-example losses; compares every layer's G_n = Σ_t g_nt ā_ntᵀ."""
    module = module.to(torch.float64).eval()
    params = {k: p.detach() for k, p in module.named_parameters()}
    layers = find_layers(module)
    cap = capture(module, params, {}, layers, x, lambda out: loss(out, y))
    want = per_example_gradients(module, params, x, y, loss)
    for layer, a, g in zip(layers, cap.a, cap.g):
        for k, v in layer.split(fisher.per_example_gradients(a, g)).items():
            torch.testing.assert_close(v, want[k], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(cap.losses, loss(module(x), y).detach())
    return layers, cap


def test_linear_with_token_dimensions():
    torch.manual_seed(1)
    module = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2, bias=False))
    x = torch.randn(5, 2, 3, 3, dtype=torch.float64)           # T = 2·3 positions
    layers, cap = _check_against_oracle(module, x, torch.zeros(5), lambda out, y: out.square().sum((1, 2, 3)))
    assert [tuple(a.shape) for a in cap.a] == [(5, 6, 4), (5, 6, 4)]
    assert layers[1].bias is None


class _ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 3, 3, stride=2, padding=1)
        self.c2 = nn.Conv2d(3, 2, (2, 3), padding="same", dilation=(1, 2), padding_mode="reflect", bias=False)
        self.head = nn.Linear(2 * 3 * 3, 4)

    def forward(self, x):
        return self.head(torch.tanh(self.c2(torch.tanh(self.c1(x)))).flatten(1))


def test_conv2d_capture_matches_autograd():
    torch.manual_seed(2)
    x = torch.randn(4, 2, 6, 5, dtype=torch.float64)
    y = torch.randint(0, 4, (4,))
    layers, cap = _check_against_oracle(
        _ConvNet(), x, y, lambda out, y: torch.nn.functional.cross_entropy(out, y, reduction="none"))
    assert [layer.name for layer in layers] == ["c1", "c2", "head"]
    assert cap.a[0].shape == (4, 9, 2 * 9 + 1)                  # 3×3 output pixels, C·kh·kw + bias


def test_unsupported_module_is_named_before_work():
    module = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"1 \(LayerNorm\).*modules="):
        find_layers(module)
    layers = find_layers(module, modules=["0", "2"])
    assert [layer.parameters for layer in layers] == [["0.weight", "0.bias"], ["2.weight", "2.bias"]]
    assert [layer.name for layer in find_layers(module, lambda n, m: isinstance(m, nn.Linear))] == ["0", "2"]
    with pytest.raises(ValueError, match="no module named"):
        find_layers(module, modules=["7"])
    with pytest.raises(ValueError, match="groups=2"):
        find_layers(nn.Conv2d(2, 2, 3, groups=2))


@pytest.mark.parametrize("tokens", [(), (2, 3)])
def test_diagonal_fisher_equals_mean_squared_per_example_gradients(tokens):
    torch.manual_seed(3)
    module = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(torch.float64).eval()
    params = {k: p.detach() for k, p in module.named_parameters()}
    x, y = torch.randn(7, *tokens, 3, dtype=torch.float64), torch.randn(7, *tokens, 2, dtype=torch.float64)

    def loss(out, y):
        return (out - y).square().reshape(out.shape[0], -1).mean(1)
    got = fisher.diagonal(module, params, {}, find_layers(module), x, y, "empirical", loss, None, 0, 3)
    want = per_example_gradients(module, params, x, y, loss)
    for k, v in want.items():
        torch.testing.assert_close(got[k], v.square().mean(0), rtol=1e-12, atol=1e-14)


def test_capture_takes_no_weight_gradients():
    """One backward to the layer outputs only: of the GEMMs of two Linear layers, the two forward
    ones and the input gradient of the second; no ∂ℓ/∂W (two more) and no gradient of the input."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(4)
    module = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(torch.float64).eval()
    params = {k: p.detach() for k, p in module.named_parameters()}
    x, y = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        cap = capture(module, params, {}, find_layers(module), x, lambda out: (out - y).square().sum(1))
    gemms = sum(e.count for e in prof.key_averages() if e.key in ("aten::mm", "aten::addmm", "aten::bmm"))
    assert gemms == 3
    want = per_example_gradients(module, params, x, y, lambda out, y: (out - y).square().sum(1))
    for layer, a, g in zip(find_layers(module), cap.a, cap.g):
        for k, v in layer.split(fisher.per_example_gradients(a, g)).items():
            torch.testing.assert_close(v, want[k], rtol=1e-12, atol=1e-12)


class _Shared(nn.Module):
    """A Linear on token inputs, then one Linear called twice (weight sharing: two calls, extra positions)."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(3, 4)
        self.shared = nn.Linear(4, 4, bias=False)

    def forward(self, x):
        return self.shared(torch.tanh(self.shared(torch.tanh(self.inp(x))))).sum(1)


@pytest.mark.parametrize("make, x_shape, classes", [(_Shared, (5, 2, 3), 4), (_ConvNet, (4, 2, 6, 5), 4)])
def test_capture_group_equals_capture_per_set(make, x_shape, classes):
    """K parameter sets captured as one vmapped computation = each captured alone (float64)."""
    torch.manual_seed(4)
    module = make().to(torch.float64).eval()
    layers = find_layers(module)
    sets = [{k: p.detach() + 0.3 * k_set * torch.randn_like(p) for k, p in module.named_parameters()}
            for k_set in range(3)]
    x = torch.randn(*x_shape, dtype=torch.float64)
    y = torch.randint(0, classes, (x_shape[0],))

    def loss(out, scale):
        return scale * torch.nn.functional.cross_entropy(out, y, reduction="none")
    together = capture_group(module, sets, {}, layers, x, [lambda out, s=s: loss(out, s + 1.0) for s in range(3)])
    assert len(together) == 3
    for s, params in enumerate(sets):
        alone = capture(module, params, {}, layers, x, lambda out: loss(out, s + 1.0))
        for got, want in zip(together[s].a + together[s].g, alone.a + alone.g):
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(together[s].losses, alone.losses, rtol=1e-12, atol=1e-12)
