"""The demo's chaotic floor at its full size (issue 10): which highlighted effects stand above it.

Runs ``dtda demo`` (64 seeds, 10 epochs; ``--quick``: the quick demo), then ``dtda confirm RUN
--examples ... --each`` in masked and in subset mode with the null controls ``tiny`` (weights of
the example at 1 − ε, masked) and ``random`` (random low-effect examples removed, same mode).
The examples are those the report highlights for its first ``report.measurements`` measurements:
the top ``--per`` by mean shift, by variance increase, and the "spread without mean shift" ones.
For each (example, measurement that highlighted it) and statistic it compares the predicted effect
with the floor (the largest |CI bound| of the null controls) and reads confirm's verdict.

    python examples/reproduce_demo_floor.py           # docs/results/demo_floor.{md,json}
    python examples/reproduce_demo_floor.py --quick   # CI (a temporary folder)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATS = ("mean", "var_increase", "w2")
CRITERIA = {"mean": "top mean shift", "var_increase": "top variance increase", "spread_only": "spread without mean"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the quick demo (4 seeds): seconds, for CI")
    ap.add_argument("--out", help="output folder (default docs/results; --quick: a temp folder)")
    ap.add_argument("--run", help="run directory (default: <out>/demo_floor-run)")
    ap.add_argument("--per", type=int, default=2, help="examples per criterion and measurement (2)")
    args = ap.parse_args(argv)

    from dtda.cli import main as dtda

    t0 = time.perf_counter()
    out = Path(args.out) if args.out else (Path(tempfile.mkdtemp(prefix="floor-")) if args.quick
                                           else ROOT / "docs" / "results")
    run = Path(args.run) if args.run else out / "demo_floor-run"
    _call(dtda, ["demo", "--out", str(run), "--quiet"] + (["--quick"] if args.quick else []))
    t_demo = time.perf_counter() - t0
    summary = json.loads((run / "summary.json").read_text())
    highlights: dict[tuple[int, int], list[str]] = {}  # (example, measurement) -> criteria
    for q, entry in enumerate(summary["measurements"][:_shown(run)]):
        picks = {"mean": [r["index"] for r in entry["top"]["mean"]], "var_increase":
                 [r["index"] for r in entry["top"]["var_increase"]], "spread_only": entry["spread_only"]}
        for criterion, indices in picks.items():
            for k in indices[:args.per]:
                highlights.setdefault((k, q), []).append(criterion)
    examples = sorted({k for k, _ in highlights})
    checks, timings = {}, {}
    for mode in ("masked", "subset"):
        t = time.perf_counter()
        _call(dtda, ["confirm", str(run), "--examples", ",".join(map(str, examples)), "--each", "--mode", mode,
                     "--quiet"])
        timings[mode] = round(time.perf_counter() - t, 1)
        found = sorted((run / "checks" / "confirm").glob(f"examples-*-{mode}-each/confirm.json"))
        checks[mode] = json.loads(found[-1].read_text())
    wall = time.perf_counter() - t0

    rows = []
    for (k, q), criteria in sorted(highlights.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        name = summary["measurements"][q]["name"]
        row = {"example": k, "measurement": name, "criteria": criteria}
        for mode, check in checks.items():
            got = next(r for r in check["rows"] if r["examples"] == [k] and r["measurement"] == name)
            row[mode] = {s: {key: got[s][key] for key in ("predicted", "actual", "floor", "verdict")} for s in STATS}
            row[mode]["quotient_corr"] = got.get("quotient_corr")
            row[mode]["per_seed_corr"] = got.get("per_seed_corr")
        rows.append(row)
    result = {"quick": args.quick, "seeds": summary["K"], "examples": examples, "wall_s": round(wall, 1),
              "demo_s": round(t_demo, 1), "confirm_s": timings, "rows": rows, "overview": _overview(rows, checks)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo_floor.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "demo_floor.md").write_text(_markdown(result) + "\n")
    print(f"demo floor: {len(examples)} examples, {wall:.0f} s ({out / 'demo_floor.md'})", file=sys.stderr)
    return 0


def _call(dtda, argv: list[str]) -> None:
    code = dtda(argv)
    if code:
        raise SystemExit(f"dtda {' '.join(argv)} failed with exit code {code}")


def _shown(run: Path) -> int:
    """report.measurements of the run (the measurements the report shows)."""
    import tomllib

    return tomllib.loads((run / "config.toml").read_text())["report"]["measurements"]


def _overview(rows: list[dict], checks: dict) -> dict:
    """Per mode and statistic: the median floor over every (example, measurement) confirm checked,
    and how many highlighted predictions stand above the floor / were confirmed."""
    out = {}
    for mode, check in checks.items():
        out[mode] = {}
        for s in STATS:
            floors = [r[s]["floor"] for r in check["rows"] if r[s]["floor"] is not None]
            preds = [abs(r[mode][s]["predicted"]) for r in rows]
            out[mode][s] = {"floor_median": statistics.median(floors), "floor_max": max(floors),
                            "highlighted": len(rows),
                            "predicted_above_floor": sum(abs(r[mode][s]["predicted"]) > r[mode][s]["floor"]
                                                         for r in rows),
                            "predicted_median": statistics.median(preds),
                            "confirmed": sum(r[mode][s]["verdict"] == "confirmed" for r in rows),
                            "sign": sum(r[mode][s]["verdict"] == "sign" for r in rows),
                            "below_floor": sum(r[mode][s]["verdict"] == "below-floor" for r in rows)}
    return out


def _markdown(r: dict) -> str:
    lines = [f"# The demo's chaotic floor ({r['seeds']} seeds)", "",
             f"Wall time {r['wall_s']} s (demo {r['demo_s']} s, confirm {r['confirm_s']}). Floor: the largest "
             "|95% CI bound| of the null controls (masked: tiny and random; subset: tiny and random).", "",
             "| mode | statistic | median floor | max floor | median predicted (highlighted) | predicted above floor "
             "| confirmed | sign only | below floor |", "|---|---|---|---|---|---|---|---|---|"]
    for mode, per in r["overview"].items():
        for s, o in per.items():
            lines.append(f"| {mode} | {s} | {o['floor_median']:.3g} | {o['floor_max']:.3g} | {o['predicted_median']:.3g} "
                         f"| {o['predicted_above_floor']}/{o['highlighted']} | {o['confirmed']} | {o['sign']} "
                         f"| {o['below_floor']} |")
    lines += ["", "| example | measurement | highlighted as | statistic | predicted | masked actual (floor): verdict "
              "| subset actual (floor): verdict |", "|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        for s in STATS:
            cells = [f"{row[m][s]['actual']:+.3g} ({row[m][s]['floor']:.3g}): {row[m][s]['verdict']}"
                     for m in ("masked", "subset")]
            lines.append(f"| #{row['example']} | {row['measurement']} | {', '.join(CRITERIA[c] for c in row['criteria'])} "
                         f"| {s} | {row['masked'][s]['predicted']:+.3g} | {cells[0]} | {cells[1]} |")
    corr = [(row["example"], row["masked"]["per_seed_corr"], row["masked"]["quotient_corr"]) for row in r["rows"]]
    lines += ["", "Masked mode, per (example, measurement): per-seed r of predicted and actual change; r of the "
              "tiny control's difference quotient with δ_s: "
              + "; ".join(f"#{k}: {a:.2f}, {b:.2f}" for k, a, b in corr if a is not None and b is not None)]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
