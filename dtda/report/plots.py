"""PNG plots of a run (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from dtda.report.summary import ranking, spread_only  # noqa: E402

# A fixed PNG metadata (no "Software" version, no date) keeps reruns byte-identical.
_META = {"Software": None}


def _save(fig, path: Path) -> None:
    fig.savefig(path, dpi=90, metadata=_META)
    plt.close(fig)


def distributions(path: Path, name: str, before: Tensor, after: dict[str, Tensor], n_removed: int) -> None:
    """Seed distribution of one measurement before, and predicted after removing the top
    ``n_removed`` examples under each criterion (``after``: label → [K] samples m_s + δ_s(G))."""
    labels = ["before"] + [f"after −top {n_removed}\nby {c}" for c in after]
    data = [before.double().numpy()] + [a.double().numpy() for a in after.values()]
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(data), 4.2))
    ax.violinplot(data, showmedians=True)
    gen = torch.Generator().manual_seed(0)
    for i, d in enumerate(data, start=1):
        jitter = (torch.rand(len(d), generator=gen).numpy() - 0.5) * 0.25
        ax.scatter(i + jitter, d, s=8, color="k", alpha=0.6, zorder=3)
    ax.set_xticks(range(1, len(data) + 1), labels, fontsize=8)
    ax.set_ylabel(f"{name} over seeds (K = {len(before)})")
    ax.set_title(f"{name}: before and predicted after removal", fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def scatter(path: Path, names: list[str], stats: dict[str, Tensor], queries: list[int], k: int) -> None:
    """Mean shift against variance increase, one panel per measurement; marks the ``k`` examples that
    change the spread without moving the mean (:func:`dtda.report.summary.spread_only`) and the
    top ``k`` by mean shift."""
    cols = min(len(queries), 2)
    rows = (len(queries) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.2 * rows), squeeze=False)
    for ax, q in zip(axes.flat, queries):
        x, y = stats["mean"][:, q].numpy(), stats["var_increase"][:, q].numpy()
        ax.scatter(x, y, s=6, color="0.6", label="training examples")
        top_mean = ranking(stats, "mean", q, k)
        ax.scatter(x[top_mean], y[top_mean], s=30, color="tab:blue", label=f"top {k} by mean shift")
        quiet = spread_only(stats, q, k)
        ax.scatter(x[quiet], y[quiet], s=40, facecolors="none", edgecolors="tab:red", linewidths=1.5,
                   label="spread without mean shift")
        ax.axhline(0, color="k", lw=0.5)
        ax.axvline(0, color="k", lw=0.5)
        ax.set_xlabel("mean shift (after − before)")
        ax.set_ylabel("variance increase")
        ax.set_title(names[q], fontsize=10)
    for ax in list(axes.flat)[len(queries):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8, loc="best")
    fig.tight_layout()
    _save(fig, path)


def images(path: Path, pictures: Tensor, labels: list, rows: dict[str, list[int]]) -> None:
    """A grid of training images (``pictures`` [N, h, w]): one row per criterion (``rows``: title →
    example indices), each image scaled to its own range as ``imshow`` alone would.

    One mosaic in one axes, with the captions as text: a separate axes per image made this plot
    cost ≈ 1.7 s (axes creation, title placement and layout grow with the number of axes)."""
    width = max(len(v) for v in rows.values())
    h, w = pictures.shape[1:]
    pad = max(1, round(0.15 * w))
    cell_h, cell_w = h + 3 * pad, w + pad  # room above each image for its caption
    mosaic = torch.full((len(rows) * cell_h, width * cell_w), float("nan"))
    fig = plt.figure(figsize=(1.1 * width, 1.35 * len(rows)))
    ax = fig.add_axes((0.14, 0.0, 0.86, 1.0))
    ax.axis("off")
    for r, (title, idx) in enumerate(rows.items()):
        top = r * cell_h + 3 * pad
        for c, i in enumerate(idx):
            picture = pictures[i].double()
            low = picture.min()
            span = (picture.max() - low).clamp_min(torch.finfo(torch.float64).tiny)
            mosaic[top:top + h, c * cell_w:c * cell_w + w] = (picture - low) / span
            ax.text(c * cell_w + (w - 1) / 2, top - pad, f"#{i} ({labels[i]})", ha="center", va="bottom",
                    fontsize=7)
        ax.text(-pad, top + (h - 1) / 2, title, ha="right", va="center", fontsize=8)
    cmap = matplotlib.colormaps["gray_r"].with_extremes(bad="white")
    ax.imshow(mosaic.numpy(), cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest", aspect="equal")
    _save(fig, path)
