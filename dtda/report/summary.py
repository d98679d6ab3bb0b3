"""``summary.json``: the top examples per criterion and measurement, with CIs (no timings, so reruns
give identical bytes)."""

from __future__ import annotations

import torch
from torch import Tensor

from dtda.samples import SeedSamples

#: Ranking criteria of the report: statistic name → heading. Each ranks by the signed statistic,
#: largest first, so the removed top examples push the measurement the same way.
CRITERIA = {"mean": "mean shift", "var_increase": "variance increase", "w2": "W2"}


def ranking(stats: dict[str, Tensor], by: str, q: int, k: int) -> list[int]:
    """Indices of the k examples with the largest ``stats[by][:, q]`` (ties: lower index first)."""
    order = torch.sort(stats[by][:, q], descending=True, stable=True).indices
    return order[:k].tolist()


def spread_only(stats: dict[str, Tensor], q: int, k: int) -> list[int]:
    """Examples that change the spread without moving the mean: the k largest |variance increase|
    among the examples whose |mean shift| is at most the median |mean shift| for measurement q."""
    mean, var = stats["mean"][:, q].abs(), stats["var_increase"][:, q].abs()
    quiet = mean <= mean.median()
    score = torch.where(quiet, var, torch.full_like(var, -1.0))
    order = torch.sort(score, descending=True, stable=True).indices
    return [i for i in order[:k].tolist() if quiet[i]]


def _row(stats: dict[str, Tensor], labels: list, i: int, q: int, by: str) -> dict:
    row = {"index": i, "label": labels[i], "value": float(stats[by][i, q])}
    ci = stats.get(f"ci.{by}")
    if ci is not None:
        row["ci"] = [float(ci[0, i, q]), float(ci[1, i, q])]
    for name in CRITERIA:
        row[name] = float(stats[name][i, q])
    return row


def summarize(config: dict, samples: SeedSamples, stats: dict[str, Tensor], failures: dict[int, str],
              labels: list | None = None) -> dict:
    """A JSON-able summary: sizes, seeds, failures and, per measurement, the before distribution and
    the top ``report.top`` examples per criterion with their bootstrap CIs."""
    k = config["report"]["top"]
    labels = labels if labels is not None else [None] * samples.N
    out = {"method": samples.method, "K": samples.K, "N": samples.N, "Q": samples.Q, "seeds": samples.seeds,
           "failed_seeds": {str(s): e for s, e in sorted(failures.items())}, "criteria": CRITERIA,
           "measurements": []}
    for q, name in enumerate(samples.names):
        m = samples.m[:, q].double()
        entry = {"name": name, "before": {"mean": float(m.mean()), "sd": float(m.std())},
                 "top": {by: [_row(stats, labels, i, q, by) for i in ranking(stats, by, q, k)] for by in CRITERIA},
                 "spread_only": spread_only(stats, q, k)}
        out["measurements"].append(entry)
    return out
