"""``dtda confirm`` and ``dtda evaluate``: retraining checks of a run, written beside its report.

Both open an existing run directory, rebuild its recipe, data and measurement from the resolved
config, read ``samples.safetensors`` and retrain on the run's executor. Retrained measurements are
cached in ``<run>/retrain/`` (one file per mode, removal and seed), so a killed check resumes and
a repeated one costs nothing. Outputs (Markdown, JSON, PNG) go to ``<run>/checks/confirm/<label>/``
and ``<run>/checks/evaluate/``, beside the report (which ``dtda report`` rewrites as a whole).
Outputs and cache are recorded in the run's manifest when a check finishes, so ``dtda verify``
covers them (a check killed midway leaves unrecorded cache files until it is rerun).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

COMMANDS = ("confirm", "evaluate")


def add_parsers(sub) -> None:
    """Add the ``confirm`` and ``evaluate`` subcommands to the ``dtda`` parser's ``sub``."""
    p = sub.add_parser("confirm", help="retrain without chosen examples; predicted against actual, with the "
                                       "chaotic floor and a verdict per measurement")
    p.add_argument("target", help="run directory (after `dtda run`)")
    pick = p.add_mutually_exclusive_group(required=True)
    pick.add_argument("--examples", help="training-example indices, comma-separated (e.g. 12,57)")
    pick.add_argument("--top", type=int, help="the top N examples by --by for --query")
    p.add_argument("--by", default="w2", help="statistic ranking --top (mean, var_increase, w2, abs_mean, ...)")
    p.add_argument("--query", type=int, help="measurement index for --top (shown alone); default: all")
    p.add_argument("--each", action="store_true", help="remove each example alone instead of all together")
    p.add_argument("--seeds", type=int, help="retrain seeds (default: the run's seeds; more adds new ones)")
    p.add_argument("--mode", choices=("masked", "subset"), default="masked")
    p.add_argument("--controls", default="tiny,random", help="null controls for the floor (tiny, random)")
    p.add_argument("--epsilon", type=float, default=1e-3, help="weight change of the tiny control")
    _common(p)
    p = sub.add_parser("evaluate", help="LDS and distributional LDS of a run against subset retraining")
    p.add_argument("target", help="run directory (after `dtda run`)")
    p.add_argument("--alpha", type=float, default=0.5, help="fraction of the data each subset keeps")
    p.add_argument("--subsets", type=int, default=100)
    p.add_argument("--seeds-per-subset", type=int, help="retrain seeds per subset (default: the run's seeds)")
    p.add_argument("--stat", default="mean,var_increase,w2,shape_w2",
                   help="comma-separated: mean, var_increase, w2, shape_w2, quantile:p")
    p.add_argument("--mode", choices=("masked", "subset"), default="subset")
    _common(p)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--executor", choices=("local", "process", "ray"), help="override execution.executor")
    p.add_argument("--workers", type=int, help="override execution.workers")
    p.add_argument("--address", help="override execution.address (ray)")


def run_command(args) -> int:
    """Run ``dtda confirm|evaluate`` from parsed arguments; prints the output folder."""
    from dtda.config import ConfigError
    from dtda.evaluate import CacheMismatch
    from dtda.pipeline import Plan, Run, RunError, read_samples
    from dtda.train.workers import torch_threads

    overrides = {k: v for k, v in (("executor", args.executor), ("workers", args.workers),
                                   ("address", args.address)) if v is not None}
    run = Run.open(args.target, quiet=args.quiet, overrides={"execution": overrides} if overrides else None)
    plan = Plan.build(run.config)
    samples = read_samples(run.dir.samples_path)
    context = dict(samples=samples, recipe=plan.recipe, train=(plan.data.X_train, plan.data.y_train),
                   measure=plan.measurement(), cache=run.dir.path / "retrain", executor=run.executor(),
                   progress=not args.quiet,
                   # the run's lockstep groups: an empty removal then reproduces its members bit for bit
                   group_size=run.config["execution"]["seeds_per_group"] or None)
    try:
        with torch_threads(run.config["train"]["threads"]):  # as the run's seed tasks: the same bits anywhere
            out = (_confirm(args, run, context) if args.command == "confirm" else _evaluate(args, run, context))
    except CacheMismatch as e:
        raise RunError(str(e)) from None
    except ValueError as e:  # bad --examples, --by, --stat, ... : one clear message, exit code 2
        raise ConfigError([str(e)], "command line") from None
    run.dir.commit_tree(context["cache"], [run.dir.config_path])
    run.dir.commit_tree(out, [run.dir.samples_path])
    print(out)
    return 0


def _confirm(args, run, context) -> Path:
    from dtda.evaluate import confirm

    samples = context["samples"]
    queries = None
    if args.examples is not None:
        try:
            examples = [int(v) for v in args.examples.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"--examples: expected comma-separated integers, got {args.examples!r}") from None
        label = "examples-" + "-".join(map(str, examples[:8]))
    else:
        if args.top < 1:
            raise ValueError(f"--top: expected a positive number of examples, got {args.top}")
        if args.query is not None and not 0 <= args.query < samples.Q:
            raise ValueError(f"--query: expected a measurement index in [0, {samples.Q}), got {args.query}")
        examples = samples.top(args.top, by=args.by, query=args.query).indices.tolist()
        queries = None if args.query is None else [args.query]
        label = f"top{args.top}-{args.by}" + (f"-q{args.query}" if args.query is not None else "")
    controls = [c.strip() for c in args.controls.split(",") if c.strip()]
    result = confirm(**context, examples=examples, seeds=args.seeds, mode=args.mode, each=args.each,
                     controls=controls, epsilon=args.epsilon)
    out = run.dir.path / "checks" / "confirm" / f"{label}-{args.mode}{'-each' if args.each else ''}"
    write_confirm(out, result, queries)
    for g in range(len(result.groups)):
        for q in queries if queries is not None else range(samples.Q):
            print(result.line(g, q), file=sys.stderr)
    return out


def _evaluate(args, run, context) -> Path:
    from dtda.evaluate import lds

    stats = [s.strip() for s in args.stat.split(",") if s.strip()]
    results = [lds(**context, alpha=args.alpha, subsets=args.subsets, seeds_per_subset=args.seeds_per_subset,
                   stat=s, mode=args.mode) for s in stats]
    out = run.dir.path / "checks" / "evaluate"
    write_lds(out, results)
    for r in results:
        print(r, file=sys.stderr)
    return out


# ---- writing -------------------------------------------------------------------------------------

def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("the plots of dtda confirm and dtda evaluate need matplotlib: "
                           "pip install 'dtda[report]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _g(v) -> str:
    return "–" if v is None else f"{v:.3g}"


def _with_ci(value, ci) -> str:
    return _g(value) + (f" [{_g(ci[0])}, {_g(ci[1])}]" if ci else "")


def _write_text(path: Path, text: str) -> None:
    from dtda.rundir import atomic_write_text

    atomic_write_text(path, text)


def write_confirm(out: Path, result, queries: list[int] | None = None) -> Path:
    """``confirm.md``, ``confirm.json`` and ``confirm.png`` (per shown measurement: the seed
    distributions before, predicted and actual; in masked mode the per-seed scatter) in ``out``."""
    from dtda.evaluate.confirm import COMPARED, LABELS

    qs = list(range(len(result.names))) if queries is None else list(queries)
    rows = [r for r in result.rows() if result.names.index(r["measurement"]) in qs]
    header = ["examples", "measurement"] + [f"{LABELS[s]}: {part}" for s in COMPARED
                                             for part in ("predicted", "actual", "floor")]
    header += ["per-seed r"] if result.per_seed_corr is not None else []
    body = []
    for r in rows:
        cells = [",".join(map(str, r["examples"][:6])) + ("…" if len(r["examples"]) > 6 else ""), r["measurement"]]
        for s in COMPARED:
            c = r[s]
            cells += [_with_ci(c["predicted"], c["predicted_ci"]), _with_ci(c["actual"], c["actual_ci"]),
                      _g(c["floor"])]
        if result.per_seed_corr is not None:
            cells.append(_g(r["per_seed_corr"]))
        body.append(cells)
    text = [f"# dtda confirm ({result.mode} retraining)", "",
            f"Attributed seeds K = {len(result.predicted.seeds)}; retrain seeds S = {len(result.actual.seeds)}; "
            f"null controls: {', '.join(sorted(result.controls)) or 'none'} (ε = {result.epsilon:g}); "
            f"{result.actual_stats.confidence:.0%} seed-bootstrap intervals; magnitude tolerance "
            f"×{result.tolerance:g}. Every number is after removal minus before; the prediction is the "
            f"linearised one, m_s + Σ_{{k∈G}} δ_s(k).", "",
            _table(header, body), "",
            "## Verdicts", ""] + [f"- {r['line']}" for r in rows]
    if result.quotient_corr is not None:
        text += ["", "The `tiny` control's difference quotient (m(w = 1 − ε) − m)/ε correlates with δ_s "
                 "over seeds "
                 "at r = " + ", ".join(_g(r.get("quotient_corr")) for r in rows)
                 + " (near 1: smooth training; near 0: chaotic at this learning rate)."]
    out.mkdir(parents=True, exist_ok=True)
    _write_text(out / "confirm.md", "\n".join(text) + "\n")
    _write_text(out / "confirm.json", json.dumps(result.to_dict(), indent=1, allow_nan=False) + "\n")
    _confirm_plot(out / "confirm.png", result, qs)
    return out


def _confirm_plot(path: Path, result, qs: list[int]) -> None:
    from dtda.rundir import atomic_path

    plt = _pyplot()
    shown = [(g, q) for g in range(len(result.groups)) for q in qs][:6]
    cols = 2 if result.per_seed_corr is not None else 1
    fig, axes = plt.subplots(len(shown), cols, figsize=(5.2 * cols, 2.8 * len(shown)), squeeze=False)
    pred, act = result.predicted, result.actual
    for row, (g, q) in enumerate(shown):
        ax = axes[row, 0]
        data = [pred.m[:, q], pred.m[:, q] + pred.delta[:, g, q], act.m[:, q] + act.delta[:, g, q]]
        ax.violinplot([d.double().numpy() for d in data], showmedians=True)
        ax.set_xticks([1, 2, 3], ["before", "predicted after", f"retrained ({result.mode})"], fontsize=8)
        ax.set_title(f"{result.names[q]} without {len(result.groups[g])} example(s)", fontsize=9)
        if cols == 2:
            ax = axes[row, 1]
            shared = [s for s in pred.seeds if s in act.seeds]
            x = pred.delta[[pred.seeds.index(s) for s in shared], g, q].double().numpy()
            y = act.delta[[act.seeds.index(s) for s in shared], g, q].double().numpy()
            ax.scatter(x, y, s=12)
            lim = [min(x.min(), y.min()), max(x.max(), y.max())]
            ax.plot(lim, lim, color="grey", lw=0.8)
            ax.set_xlabel("predicted change δ_s(G)", fontsize=8)
            ax.set_ylabel("actual change (masked)", fontsize=8)
            ax.set_title(f"per seed, r = {_g(_none(float(result.per_seed_corr[g, q])))}", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90, metadata={"Software": None})
    plt.close(fig)


def _none(v: float) -> float | None:
    return None if v != v else v


def write_lds(out: Path, results: list) -> Path:
    """``evaluate.md``, ``evaluate.json`` and ``evaluate.png`` (score against ensemble size, with
    the noise ceiling) for LDS results of one method."""
    from dtda.rundir import atomic_path

    rows = [[r.stat, r.mode, f"{r.alpha:g}", f"{r.score:.3f} [{r.ci[0]:.3f}, {r.ci[1]:.3f}]", f"{r.ceiling:.3f}",
             ", ".join(f"{k}: {v:.3f}" for k, v in r.curve.items()), str(r.removed.shape[0]), str(len(r.seeds))]
            for r in results]
    text = ["# dtda evaluate: (distributional) LDS", "",
            f"Method {results[0].method}; Spearman over subsets per measurement, mean over "
            f"{len(results[0].names)} measurements with a {results[0].confidence:.0%} bootstrap interval over "
            "measurements; noise ceiling: split-half agreement of the retrained ground truth, Spearman–Brown "
            "corrected; ensemble curve: the score with the first K attributed seeds.", "",
            _table(["statistic", "mode", "α", "LDS [CI]", "noise ceiling", "score by K", "subsets", "retrain seeds"],
                   rows)]
    out.mkdir(parents=True, exist_ok=True)
    _write_text(out / "evaluate.md", "\n".join(text) + "\n")
    _write_text(out / "evaluate.json", json.dumps([r.to_dict() for r in results], indent=1, allow_nan=False) + "\n")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for r in results:
        line, = ax.plot(list(r.curve), list(r.curve.values()), marker="o", label=f"{r.stat}")
        ax.axhline(r.ceiling, color=line.get_color(), ls=":", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("attributed seeds K")
    ax.set_ylabel("LDS (dotted: noise ceiling)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out / "evaluate.png") as tmp:
        fig.savefig(tmp, format="png", dpi=90, metadata={"Software": None})
    plt.close(fig)
    return out


__all__ = ["COMMANDS", "add_parsers", "run_command", "write_confirm", "write_lds"]
