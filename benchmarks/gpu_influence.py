"""End-to-end EK-FAC influence on a device, for ``benchmarks/gpu_check.py``'s GPU session.

A small digits-sized MLP ensemble (64-128-128-10, K seeds) is trained on the CPU; its members and the
training and query data are then moved to ``device`` and ``dtda.influence(..., method="ekfac")`` runs
there (capture, covariances, float64 eigendecompositions, the eigenvalue correction, query
preconditioning and ghost scores, all on device tensors through the ops' device backends). The
result is compared with the same call on the CPU (float64 references inside are the same maths):

    max|δ_device − δ_cpu| ≤ RTOL · max|δ_cpu|

and both are timed (the device one after a warm-up call, so compilation and CUDA context set-up
are not counted). ``python -m benchmarks.gpu_influence [--device cuda]`` runs it alone.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

# float32 on both sides; reductions run in other orders on a GPU (and TF32 is off in torch by default
# for matmuls), so allow the float32 accumulation error of a few thousand terms.
RTOL = 1e-3


def _ensemble(seeds: int, n_train: int, epochs: int):
    import dtda

    # Digits-shaped synthetic data (the GPU machine may lack scikit-learn): 64 features, 10 classes
    # from a random linear teacher with label noise.
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n_train + 20, 64, generator=g)
    y = (X @ torch.randn(64, 10, generator=g) + 2.0 * torch.randn(n_train + 20, 10, generator=g)).argmax(1)
    recipe = dtda.Recipe(model=lambda: nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                                                     nn.Linear(128, 10)),
                         loss="cross_entropy", optimizer=dtda.SGD(lr=0.03, momentum=0.9, weight_decay=1e-3),
                         batch_size=64, epochs=epochs)
    ensemble = dtda.train_ensemble(recipe, (X[:n_train], y[:n_train]), seeds=seeds)
    return ensemble, X[n_train:n_train + 20], y[n_train:n_train + 20]


def _on(ensemble, device: str):
    """The ensemble with every member's checkpoints and the training data on ``device``."""
    from dtda.train import Data, Ensemble, Member, Record

    def move(d):
        return {k: v.to(device) for k, v in d.items()}

    members = []
    for m in ensemble.members:
        rec = m.record
        ckpts = {t: (move(p), {slot: move(v) for slot, v in s.items()}) for t, (p, s) in rec.checkpoints.items()}
        members.append(Member(m.seed, Record(rec.batches, ckpts, rec.weights, rec.every)))
    data = Data(ensemble.data.X.to(device), ensemble.data.y.to(device))
    return Ensemble(ensemble.recipe, data, members)


def influence_check(device: str = "cuda", seeds: int = 4, n_train: int = 1437, epochs: int = 2) -> dict:
    """Run the device-vs-CPU comparison; returns a JSON-able result with status PASS or FAIL."""
    import dtda

    ensemble, Xq, yq = _ensemble(seeds, n_train, epochs)

    def run(ens, X, y):
        t0 = time.perf_counter()
        s = dtda.influence(ens, dtda.measure.margin(X, y), method="ekfac", damping="heuristic")
        if str(device).startswith("cuda"):
            torch.cuda.synchronize()
        return s, time.perf_counter() - t0

    cpu, cpu_s = run(ensemble, Xq, yq)
    dev_ensemble = _on(ensemble, device)
    run(dev_ensemble, Xq.to(device), yq.to(device))  # warm-up: context, kernels, caches
    dev, dev_s = run(dev_ensemble, Xq.to(device), yq.to(device))
    delta = dev.delta.detach().to("cpu", torch.float64)
    ref = cpu.delta.detach().double()
    err = float((delta - ref).abs().max())
    scale = float(ref.abs().max())
    ok = bool(torch.isfinite(delta).all()) and err <= RTOL * scale
    return {"id": "influence/ekfac", "status": "PASS" if ok else "FAIL", "device": str(device), "K": seeds,
            "N": n_train, "Q": int(Xq.shape[0]), "max_abs_err": err, "scale": scale, "rtol": RTOL,
            "cpu_s": cpu_s, "device_s": dev_s, "speedup": cpu_s / dev_s if dev_s > 0 else None}


def describe(result: dict) -> str:
    """One line for the summary table."""
    return (f"influence (ekfac, K={result['K']}, N={result['N']}, Q={result['Q']}) on {result['device']}: "
            f"{result['status']} max|Δδ| = {result['max_abs_err']:.3g} (bound {result['rtol']:g} × "
            f"{result['scale']:.3g}); {result['device_s']:.3f} s vs {result['cpu_s']:.3f} s on the CPU "
            f"({result['speedup']:.1f}×)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)
    result = influence_check(args.device)
    print(describe(result))
    return 0 if result["status"] == "PASS" else 1


if __name__ == "__main__":
    raise SystemExit(main())
