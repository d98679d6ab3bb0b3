"""Variance without mean on digits (issue 10, reproduction 3; PAPER §9 E4), checked by retraining.

The demo's setting (``dtda.demo.config()``: sklearn digits, MLP 64-128-128-10, SGD momentum 0.9,
lr 0.03, weight decay 1e-3, batch 64, 10 epochs; m = the margins of 20 test digits) with 32 seeds,
attributed by reverse unrolling (``dtda run``). For the measurement whose strongest candidate is
clearest, it picks the report's "spread without mean shift" examples (the largest |variance
increase| among the examples with at most the median |mean shift|), two controls with a large
mean shift (the top by |mean shift|) and two random low-effect examples, and retrains without
each one alone, and without the group of the ``--group`` examples of largest positive variance
increase among those with at most the median |mean shift| removed together
(``dtda.evaluate.confirm``): subset mode (from scratch on D∖k, the target of
d-TDA) with the run's 32 seeds and, with ``--masked``, masked mode (same batches, weight 0) too,
each with null controls for the chaotic floor. The verdict per example says whether its mean
shift and variance increase were confirmed, contradicted or below what retraining resolves.

    python examples/reproduce_variance_without_mean.py           # 32 seeds (docs/results/variance_without_mean.*)
    python examples/reproduce_variance_without_mean.py --quick   # 4 seeds, 300 images (CI; a temp folder)

    # subset retraining with 256 seeds (the 32 attributed ones and 224 new full-data runs):
    python examples/reproduce_variance_without_mean.py --retrain-seeds 256 --spread 2 --name variance_without_mean-256

Writes ``<name>.md``, ``.json`` and ``.png`` under ``--out`` (default docs/results; --quick: a
temporary folder; ``--name`` default variance_without_mean), ``confirm`` tables per mode in
``<name>-<mode>/`` and the run directory under ``--run``. Prints the wall time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("spread without mean", "top mean shift", "random low effect", "spread group")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 seeds, 300 images, 2 epochs: seconds, for CI")
    ap.add_argument("--out", help="output folder (default docs/results; --quick: a temp folder)")
    ap.add_argument("--run", help="run directory (default: <out>/variance_without_mean-run)")
    ap.add_argument("--seeds", type=int, help="attributed seeds (32; --quick 4)")
    ap.add_argument("--retrain-seeds", type=int, help="retrain seeds (default: the attributed ones)")
    ap.add_argument("--spread", type=int, default=4, help="spread-without-mean examples checked (4)")
    ap.add_argument("--group", type=int, help="size of the spread-without-mean group removed together (32; --quick 8)")
    ap.add_argument("--masked", action="store_true", help="check in masked mode too")
    ap.add_argument("--name", default="variance_without_mean", help="stem of the output files")
    ap.add_argument("--workers", type=int, help="processes for training, attribution and retraining (2; --quick 1)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    from dtda import config as cfgmod
    from dtda import demo
    from dtda.evaluate import confirm
    from dtda.evaluate.confirm import low_effect_examples
    from dtda.pipeline import Plan, Run, read_samples
    from dtda.report.summary import spread_only
    from dtda.retrain_checks import write_confirm

    t0 = time.perf_counter()
    name = args.name
    out = Path(args.out) if args.out else (Path(tempfile.mkdtemp(prefix="vwm-")) if args.quick
                                           else ROOT / "docs" / "results")
    config = demo.config(quick=args.quick)
    config["train"]["seeds"] = args.seeds or (4 if args.quick else 32)
    config["statistics"]["bootstrap"] = 1000
    workers = args.workers or (1 if args.quick else 2)  # spawning workers costs more than quick mode's work
    config["execution"] = {"executor": "process", "workers": workers} if workers > 1 else {"executor": "local"}
    if args.quick:
        config["measure"]["test"] = 4
    run = Run.create(cfgmod.validate(config, source="reproduction config"), args.run or out / "variance_without_mean-run",
                     quiet=True)
    run.all()
    t_run = time.perf_counter() - t0
    samples = read_samples(run.dir.samples_path)
    plan = Plan.build(run.config)
    stats = samples.distributional(bootstrap=0)
    raw = {"mean": stats.mean, "var_increase": stats.var_increase}

    # The measurement whose top spread-without-mean candidate moves the variance most, relative to
    # the variance itself (the clearest case the report would circle).
    q = max(range(samples.Q), key=lambda j: float(stats.var_increase[spread_only(raw, j, 1)[0], j].abs()
                                                  / samples.m[:, j].double().var()))
    spread = spread_only(raw, q, args.spread)
    by_mean = [i for i in stats.top(4, by="abs_mean", query=q).indices.tolist() if i not in spread][:2]
    randoms = low_effect_examples(samples, set(spread + by_mean), 2, seed=1)
    kinds = {**{k: KINDS[0] for k in spread}, **{k: KINDS[1] for k in by_mean}, **{k: KINDS[2] for k in randoms}}
    chosen = list(kinds)
    quiet = spread_only(raw, q, samples.N)
    group = [k for k in quiet if stats.var_increase[k, q] > 0][:args.group or (8 if args.quick else 32)]
    common = dict(samples=samples, recipe=plan.recipe, train=(plan.data.X_train, plan.data.y_train),
                  measure=plan.measurement(), seeds=args.retrain_seeds,
                  cache=run.dir.path / "retrain", executor=run.executor(),
                  group_size=run.config["execution"]["seeds_per_group"])
    checks = {}
    timings = {}
    for mode in ("subset", "masked") if args.masked else ("subset",):
        t = time.perf_counter()
        controls = ["tiny", "random"] if mode == "masked" else ["random"]
        checks[mode] = confirm(**common, examples=chosen, each=True, mode=mode, controls=controls)
        write_confirm(out / f"{name}-{mode}", checks[mode], [q])
        checks[f"{mode} group"] = confirm(**common, examples=group, mode=mode, controls=controls)
        timings[mode] = round(time.perf_counter() - t, 1)
    contrasts = _contrasts(samples, common, chosen, group, q)
    run.close()
    wall = time.perf_counter() - t0

    sd = float(samples.m[:, q].double().std())
    result = {"quick": args.quick, "seeds": samples.K, "retrain_seeds": len(next(iter(checks.values())).actual.seeds),
              "measurement": samples.names[q], "query": q, "sd_before": sd, "var_before": sd ** 2,
              "wall_s": round(wall, 1), "run_s": round(t_run, 1), "confirm_s": timings,
              "group_size": run.config["execution"]["seeds_per_group"],
              "examples": {str(k): {"kind": kinds[k], "rank_abs_mean": _rank(stats.mean[:, q], k),
                                    "rank_abs_var_increase": _rank(stats.var_increase[:, q], k)} for k in chosen},
              "group": group, "contrasts_subset": contrasts,
              "confirm": {mode: [{**r, "kind": KINDS[3] if len(r["examples"]) > 1 else kinds[r["examples"][0]]}
                                 for r in checks[mode].rows() + checks[f"{mode} group"].rows()
                                 if r["measurement"] == samples.names[q]] for mode in timings}}
    result["counts"] = {mode: _counts(rows) for mode, rows in result["confirm"].items()}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"{name}.md").write_text(_markdown(result) + "\n")
    _figure(out / f"{name}.png", result)
    print(f"{name}: {samples.names[q]}, {len(chosen)} examples, {wall:.0f} s ({out / (name + '.md')})", file=sys.stderr)
    for mode, c in result["counts"].items():
        print(f"[{mode}] {c}", file=sys.stderr)
    return 0


def _contrasts(samples, common: dict, singles: list[int], group: list[int], q: int) -> list[dict]:
    """Each removal against its own ``random`` null control in subset mode (the one confirm drew,
    so the retrainings come from the cache), paired by seed: differences of the retrained means and
    variances, predicted and actual, with 95% seed-bootstrap CIs. Subset retraining moves every
    removal of one size alike (PAPER §8.1: the batches of every seed change); the contrast cancels
    that common part, which the floor against the full-data runs contains."""
    from dtda.evaluate import retrained_samples
    from dtda.evaluate.confirm import low_effect_examples

    pairs = [([k], low_effect_examples(samples, set(singles), 1, g)) for g, k in enumerate(singles)]
    pairs.append((sorted(group), low_effect_examples(samples, set(group), len(group), 0)))
    removals = [r for pair in pairs for r in pair]
    actual = retrained_samples(samples, common["recipe"], common["train"], common["measure"], removals,
                               common["seeds"], "subset", group_size=common["group_size"], cache=common["cache"],
                               executor=common["executor"])
    predicted = samples.group(removals)
    rows = []
    for i, (removal, control) in enumerate(pairs):
        row = {"examples": removal, "control": control}
        for label, s in (("predicted", predicted), ("actual", actual)):
            row[label] = _paired(s.m[:, q, None].double() + s.delta[:, 2 * i:2 * i + 2, q].double())
        rows.append(row)
    return rows


def _paired(after) -> dict:
    """after [K, 2] (removal, control): mean and variance differences with seed-bootstrap CIs."""
    def stat(a):
        return torch.stack([a[:, 0].mean() - a[:, 1].mean(), a[:, 0].var() - a[:, 1].var()])

    idx = torch.randint(0, len(after), (1000, len(after)), generator=torch.Generator().manual_seed(0))
    lo, hi = torch.quantile(torch.stack([stat(after[i]) for i in idx]), torch.tensor([0.025, 0.975],
                                                                                     dtype=after.dtype), dim=0)
    v = stat(after)
    return {"mean": float(v[0]), "mean_ci": [float(lo[0]), float(hi[0])],
            "var": float(v[1]), "var_ci": [float(lo[1]), float(hi[1])]}


def _rank(values, k: int) -> int:
    return int((values.abs() > values[k].abs()).sum()) + 1


def _label(row: dict) -> str:
    return f"#{row['examples'][0]}" if len(row["examples"]) == 1 else f"group of {len(row['examples'])}"


def _counts(rows: list[dict]) -> dict:
    """Per kind of example: how many had their variance increase / mean shift confirmed."""
    out = {}
    for kind in KINDS:
        mine = [r for r in rows if r["kind"] == kind]
        out[kind] = {s: {"confirmed": sum(r[s]["verdict"] == "confirmed" for r in mine),
                         "sign": sum(r[s]["verdict"] in ("confirmed", "sign") for r in mine), "of": len(mine)}
                     for s in ("mean", "var_increase")}
    return out


def _ci(v, ci) -> str:
    return f"{v:+.3g}" + (f" [{ci[0]:+.3g}, {ci[1]:+.3g}]" if ci else "")


def _markdown(r: dict) -> str:
    lines = [f"# Variance without mean on digits: {r['measurement']}", "",
             f"{r['seeds']} attributed seeds (reverse unrolling), {r['retrain_seeds']} retrain seeds in lockstep "
             f"groups of {r['group_size']}; sd of the measurement before removal {r['sd_before']:.3g} (variance "
             f"{r['var_before']:.3g}). Wall time {r['wall_s']} s (run {r['run_s']} s, checks {r['confirm_s']}).", "",
             "| example | kind | rank by abs. mean shift | rank by abs. variance increase |", "|---|---|---|---|"]
    lines += [f"| #{k} | {e['kind']} | {e['rank_abs_mean']} | {e['rank_abs_var_increase']} |"
              for k, e in r["examples"].items()]
    lines += ["", f"The spread group: {len(r['group'])} examples removed together ("
              + ", ".join(map(str, r["group"])) + ")."]
    for mode, rows in r["confirm"].items():
        lines += ["", f"## Retrained ({mode} mode)", "",
                  "| example | kind | statistic | predicted [CI] | actual [CI] | floor | verdict |",
                  "|---|---|---|---|---|---|---|"]
        for row in rows:
            for s in ("mean", "var_increase", "w2"):
                v = row[s]
                lines.append(f"| {_label(row)} | {row['kind']} | {s} | {_ci(v['predicted'], v['predicted_ci'])} "
                             f"| {_ci(v['actual'], v['actual_ci'])} | {v['floor']:.3g} | {v['verdict']} |")
        lines += ["", "Confirmed (sign and magnitude) / sign right, per kind:", ""]
        for kind, c in r["counts"][mode].items():
            lines.append(f"- {kind}: variance increase {c['var_increase']['confirmed']}/{c['var_increase']['sign']}"
                         f" of {c['var_increase']['of']}; mean shift {c['mean']['confirmed']}/{c['mean']['sign']}"
                         f" of {c['mean']['of']}")
    lines += ["", "## Against the random control (subset mode, paired by seed)", "",
              "Removal minus its own random null control (same size, same mode, same seeds): the part of "
              "subset retraining's shift common to every removal cancels.", "",
              "| removed | control | predicted mean / var. difference | actual mean difference [CI] "
              "| actual var. difference [CI] |", "|---|---|---|---|---|"]
    for c in r["contrasts_subset"]:
        a, pr = c["actual"], c["predicted"]
        lines.append(f"| {_label(c)} | {len(c['control'])} random | {pr['mean']:+.3g} / {pr['var']:+.3g} "
                     f"| {_ci(a['mean'], a['mean_ci'])} | {_ci(a['var'], a['var_ci'])} |")
    return "\n".join(lines)


def _figure(path: Path, r: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(r["confirm"])
    fig, axes = plt.subplots(len(modes), 2, figsize=(10, 4 * len(modes)), squeeze=False)
    colors = dict(zip(KINDS, ("tab:red", "tab:blue", "tab:grey", "tab:purple")))
    for row, mode in enumerate(modes):
        for col, s in enumerate(("var_increase", "mean")):
            ax = axes[row, col]
            for item in r["confirm"][mode]:
                v, kind = item[s], item["kind"]
                pl, ph = v["predicted_ci"] or (v["predicted"],) * 2
                al, ah = v["actual_ci"]
                ax.errorbar(v["predicted"], v["actual"], xerr=[[v["predicted"] - pl], [ph - v["predicted"]]],
                            yerr=[[v["actual"] - al], [ah - v["actual"]]], fmt="o", color=colors[kind], ms=5,
                            capsize=2, label=kind)
                ax.annotate(_label(item), (v["predicted"], v["actual"]), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
            floor = max(item[s]["floor"] for item in r["confirm"][mode])
            ax.axhspan(-floor, floor, color="k", alpha=0.08, label="chaotic floor (null controls, max)")
            lim = ax.get_xlim()
            ax.plot(lim, lim, color="grey", lw=0.8)
            ax.axhline(0, color="k", lw=0.5)
            ax.axvline(0, color="k", lw=0.5)
            ax.set_xlabel(f"predicted {'variance increase' if s == 'var_increase' else 'mean shift'}")
            ax.set_ylabel(f"retrained ({mode}), {r['retrain_seeds']} seeds")
            ax.set_title(f"{r['measurement']}: {'variance increase' if s == 'var_increase' else 'mean shift'}",
                         fontsize=10)
            handles, labels = ax.get_legend_handles_labels()
            keep = dict(zip(labels, handles))
            ax.legend(keep.values(), keep.keys(), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
