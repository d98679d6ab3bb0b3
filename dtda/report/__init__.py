"""The run report: ``report/index.html`` and ``report/report.md`` with PNG plots.

Per shown measurement: the seed distribution before removal and predicted after removing the top
examples under each criterion (mean shift, variance increase, W2); a scatter of mean shift against
variance increase marking the examples that change the spread without moving the mean; tables of
the top examples with bootstrap confidence intervals; and, for image data, the images themselves.
The report only arranges numbers computed by ``dtda.stats`` and :meth:`SeedSamples.group`.
Without matplotlib (the ``report`` extra) it is written without plots and says so.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from torch import Tensor

from dtda.sources import TaskData
from dtda.report.render import Heading, Image, Para, Table, markdown, to_html
from dtda.report.summary import CRITERIA, ranking, spread_only
from dtda.samples import SeedSamples
from dtda.rundir import atomic_dir

SCATTER_TEXT = (
    "Each point is one training example. Horizontally: how far removing it moves the mean of the "
    "measurement over seeds (after − before); vertically: how much it changes the variance over seeds. "
    "Examples far from the vertical axis shift the average model; examples high above or below the "
    "horizontal axis with a small mean shift (red circles) change how much the trained model depends "
    "on the seed without changing it on average: a mean-only attribution ranks them low.")


PLOTS_MISSING = ("matplotlib is not installed, so the report has no plots; install the report extra for "
                 "them: pip install 'dtda[report]'")


def plots_missing() -> str | None:
    """None if matplotlib imports, else :data:`PLOTS_MISSING` (the report is then written without plots)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return PLOTS_MISSING
    return None


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _label(v) -> str:
    return str(int(v)) if float(v).is_integer() else f"{float(v):.3g}"


AGREEMENT_TEXT = (
    "Each compared method was computed on the same seeds as the main one. Per measurement: the Spearman "
    "correlation over training examples of the mean shifts and of the variance increases, the median over "
    "seeds of the per-seed Pearson correlation of the removal effects (does each seed's estimate sample "
    "that seed's effect?), and the share of the 10 examples with the largest |mean shift| the two have in "
    "common. This answers, on this run, the paper's question of what influence functions sample.")


def _agreement_blocks(agreement: dict, main: str) -> list:
    """The report section on how compared methods agree with the main one (``agreement.json``)."""
    rows = []
    for entry in agreement.values():
        for q, name in enumerate(entry["measurements"]):
            rows.append([name, entry["method"], *("n/a" if entry[k][q] is None else f"{entry[k][q]:.3f}"
                                                  for k in ("spearman_mean", "spearman_var_increase",
                                                            "median_seed_pearson", "top10_overlap"))])
    return [Heading(2, f"How the methods agree with {main}"), Para(AGREEMENT_TEXT),
            Table(["measurement", "method", "Spearman mean shift", "Spearman variance increase",
                   "median per-seed Pearson", "top-10 overlap"], rows)]


def write_report(out: Path, config: dict, data: TaskData, samples: SeedSamples, stats: dict[str, Tensor],
                 failures: dict[int, str], agreement: dict | None = None) -> Path:
    """Write the report directory ``out`` atomically (replacing an older report); returns ``out``.

    ``agreement``: the run's ``agreement.json`` (compared methods), shown in its own section."""
    r = config["report"]
    k, n_remove = r["top"], r["remove"]
    shown = list(range(min(r["measurements"], samples.Q)))
    labels = [_label(v) for v in data.y_train.tolist()]
    t = config["train"]
    blocks = [
        Heading(1, "dtda report"),
        Para(f"Data {config['data']['source']} (N = {samples.N} training examples, {data.task}); model "
             f"{config['model']['name']}; {t['optimizer']} lr {t['lr']}, batch {t['batch_size']}, "
             + (f"{t['steps']} steps" if t["steps"] else f"{t['epochs']} epochs")
             + f"; K = {samples.K} seeds; method {samples.method}; Q = {samples.Q} measurements "
             f"({config['measure']['kind']})."),
        Para("Every statistic is after removal minus before, over the seed distribution; "
             "intervals are 95% seed-bootstrap percentile intervals."
             if "ci.mean" in stats else "Every statistic is after removal minus before, over seeds."),
    ]
    if failures:
        blocks.append(Para("Failed seeds (left out): " + "; ".join(f"{s}: {e}" for s, e in sorted(failures.items()))))
    blocks.append(Para("These are linearised predictions: the 'after' samples are m_s + Σ_{k∈G} δ_s(k), first order "
                       "in the removed examples' weights (the second-order correction of "
                       "`dtda.evaluate.predictions` is not used here; docs/evaluation.md). "
                       "Before believing a surprising one, check it by retraining on the same "
                       "seeds: `dtda confirm RUN_DIR --top 10 --by var_increase --query 0` (or `--examples 12,57`) "
                       "shows predicted against actual effects and the chaotic floor; `dtda evaluate RUN_DIR` "
                       "scores the ranking (LDS) with its noise ceiling (docs/cli.md)."))
    missing = plots_missing()
    if missing:
        blocks.append(Para(f"Note: {missing}."))
    plots = None if missing else importlib.import_module("dtda.report.plots")
    with atomic_dir(out) as tmp:
        if plots:
            plots.scatter(tmp / "scatter.png", samples.names, stats, shown, k)
            blocks += [Heading(2, "Mean shift against variance increase"), Para(SCATTER_TEXT),
                       Image("scatter.png", "mean shift against variance increase")]
        for q in shown:
            name = samples.names[q]
            blocks.append(Heading(2, f"Measurement {name}"))
            removed = samples.group([ranking(stats, by, q, n_remove) for by in CRITERIA])
            after = {title: removed.m[:, q] + removed.delta[:, j, q] for j, title in enumerate(CRITERIA.values())}
            if plots:
                plots.distributions(tmp / f"distribution_{q}.png", name, samples.m[:, q], after, n_remove)
                blocks.append(Image(f"distribution_{q}.png", f"seed distribution of {name}"))
            for by, title in CRITERIA.items():
                idx = ranking(stats, by, q, k)
                ci = stats.get(f"ci.{by}")
                rows = [[str(rank + 1), f"#{i}", labels[i],
                         _fmt(stats[by][i, q]) + (f" [{_fmt(ci[0, i, q])}, {_fmt(ci[1, i, q])}]" if ci is not None else ""),
                         _fmt(stats["mean"][i, q]), _fmt(stats["var_increase"][i, q]), _fmt(stats["w2"][i, q])]
                        for rank, i in enumerate(idx)]
                blocks += [Heading(3, f"Top {len(idx)} by {title}"),
                           Table(["rank", "example", "label", f"{title} [CI]", "mean shift", "variance increase",
                                  "W2"], rows)]
            if data.images_train is not None and plots:
                rows = {CRITERIA[by]: ranking(stats, by, q, k) for by in CRITERIA}
                rows["spread only"] = spread_only(stats, q, k)
                plots.images(tmp / f"examples_{q}.png", data.images_train, labels, rows)
                blocks += [Heading(3, "The top training examples"),
                           Image(f"examples_{q}.png", f"top training examples for {name}")]
        summary = [[name, _fmt(samples.m[:, q].mean()), _fmt(samples.m[:, q].std()),
                    *(f"#{ranking(stats, by, q, 1)[0]}" for by in CRITERIA)] for q, name in enumerate(samples.names)]
        if agreement:
            blocks += _agreement_blocks(agreement, samples.method)
        blocks += [Heading(2, "All measurements"),
                   Table(["measurement", "mean", "sd", *(f"top by {c}" for c in CRITERIA.values())], summary)]
        (tmp / "report.md").write_text(markdown(blocks))
        (tmp / "index.html").write_text(to_html(blocks, "dtda report"))
    return out


__all__ = ["write_report"]
