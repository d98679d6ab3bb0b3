"""Benchmark every CPU implementation of every dtda op: ``python -m benchmarks.ops``.

Each op runs in a fresh subprocess that first calls every implementation once on a tiny shape
(lazy imports, thread pools), then for each shape (float32 inputs) and each available CPU
implementation (torch, cpp, the anchor tools' own code, then reference) measures one call's peak
memory (see :mod:`benchmarks.common`) and the median of up to ``--repeats`` timed calls. The
anchor rows (``trak``, ``dattri``, ``kronfluence``, ``bergson``; adapters in
:mod:`benchmarks.anchors`) appear where the anchor is installed; the run prints which are
unavailable and why. Printed per row:

- ``median``: median wall time of the timed calls;
- ``×torch``: speedup over the ``torch`` backend (the best pure-PyTorch formulation):
  t_torch / t_impl, above 1 is faster;
- ``rate``: achieved GFLOP/s under the op's FLOP model (or GB/s under its byte model), the model
  being stated per op in :data:`SPECS` and printed with ``--models``; the same model divides
  every implementation's time, so the rate is useful work per second, not work done;
- ``×mm``: that rate over ``torch.mm``'s GFLOP/s on a square float32 matmul of comparable FLOPs,
  measured in this run;
- ``peak``: the peak resident-memory increase during one call (outputs, intermediates and
  workspaces; inputs are excluded);
- ``note``: ``Δ``, the largest difference from the ``torch`` backend's output relative to its
  largest entry; above :data:`AGREE_RTOL` the row is flagged ``MISMATCH``. Anchors whose random
  matrices differ from dtda's (jl_project) are checked for shape and scale instead
  (:func:`benchmarks.anchors.jl_check`). Anchor rows also give t_anchor over the time of dtda's
  fastest non-reference implementation, and a summary table of those ratios closes the run.

The reference is skipped (with the reason printed) where its estimated memory exceeds 8 GiB or
its estimated time 30 s. Flags: ``--quick`` (small shapes, about a minute), ``--ops a,b``,
``--max-dim D`` (drop shapes with a layer width above D), ``--max-gflop G`` (drop shapes whose
FLOP model exceeds G GFLOP), ``--repeats R``, ``--threads K``, ``--csv PATH``, ``--no-anchors``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

import dtda
import dtda.ops
from benchmarks import anchors
from benchmarks.common import run_child

GiB = 1 << 30
REFERENCE_MAX_BYTES = 8 * GiB
REFERENCE_MAX_SECONDS = 30.0
IMPLEMENTATIONS = ("reference", "torch", "cpp")
# float32 results summed in different orders (up to N·T = 5·10⁵ terms): measured Δ ≤ 3e-6.
AGREE_RTOL = 1e-4


def _orthogonal(n: int) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(n, n))[0].contiguous()


def _ghost_dot_flops(N, T, I, O, Q) -> float:
    return 2.0 * N * I * O * min(T * Q, T + Q)


@dataclass
class Spec:
    """How to benchmark one op. ``work(shape)`` is FLOPs (``unit='GFLOP/s'``) or bytes (GB/s)."""

    make: Callable[[dict], tuple]
    work: Callable[[dict], float]
    model: str
    shapes: list[dict]
    quick: list[dict]
    reference_bytes: Callable[[dict], float]
    reference_flops: Callable[[dict], float] | None = None
    unit: str = "GFLOP/s"
    kwargs: Callable[[dict], dict] = field(default=lambda s: {})


def _tokens(s, width):
    return torch.randn(s["N"], s["T"], width)


def _grid(**fixed) -> list[dict]:
    return [dict(fixed, T=T, I=W, O=W) for W in (256, 1024) for T in (1, 128)]


SPECS: dict[str, Spec] = {
    "kron_covariance": Spec(
        make=lambda s: (_tokens(s, s["I"]), (torch.rand(s["N"], s["T"]) > 0.1) if s["T"] > 1 else None),
        work=lambda s: 2.0 * s["N"] * s["T"] * s["I"] ** 2,
        model="2·N·T·D² (a full GEMM's count; a symmetric kernel needs half); bool mask when T > 1",
        shapes=[dict(N=4096, T=T, I=D) for D in (256, 1024) for T in (1, 128)],
        quick=[dict(N=256, T=1, I=64), dict(N=256, T=16, I=64)],
        reference_bytes=lambda s: 2.0 * 4 * s["N"] * s["T"] * s["I"],
    ),
    "ghost_dot": Spec(
        make=lambda s: (_tokens(s, s["I"]), _tokens(s, s["O"]), torch.randn(s["Q"], s["O"], s["I"])),
        work=lambda s: _ghost_dot_flops(s["N"], s["T"], s["I"], s["O"], s["Q"]),
        model="2·N·I·O·min(T·Q, T+Q) (the cheaper contraction order)",
        shapes=_grid(N=4096, Q=64),
        quick=[dict(N=256, T=1, I=64, O=64, Q=8), dict(N=256, T=16, I=64, O=64, Q=8)],
        reference_bytes=lambda s: 4.0 * s["N"] * s["O"] * s["I"],
        reference_flops=lambda s: 2.0 * s["N"] * s["O"] * s["I"] * (s["T"] + s["Q"]),
    ),
    "ghost_pairwise": Spec(
        make=lambda s: (torch.randn(s["Q"], s["T"], s["I"]), torch.randn(s["Q"], s["T"], s["O"]),
                        _tokens(s, s["I"]), _tokens(s, s["O"])),
        work=lambda s: min(2.0 * s["Q"] * s["T"] * s["N"] * s["T"] * (s["I"] + s["O"]),
                           2.0 * s["Q"] * s["T"] * s["O"] * s["I"]
                           + _ghost_dot_flops(s["N"], s["T"], s["I"], s["O"], s["Q"])),
        model="min(2·Q·S·N·T·(I+O), 2·Q·S·O·I + ghost_dot's) with S = T query tokens",
        shapes=_grid(N=4096, Q=64),
        quick=[dict(N=256, T=1, I=64, O=64, Q=8), dict(N=256, T=16, I=64, O=64, Q=8)],
        reference_bytes=lambda s: 4.0 * (s["N"] + s["Q"]) * s["O"] * s["I"],
        reference_flops=lambda s: 2.0 * s["O"] * s["I"] * (s["N"] * s["T"] + s["Q"] * s["T"]
                                                           + s["Q"] * s["N"]),
    ),
    "ekfac_eigvals": Spec(
        make=lambda s: (_tokens(s, s["I"]), _tokens(s, s["O"]), _orthogonal(s["I"]), _orthogonal(s["O"])),
        work=lambda s: 2.0 * s["N"] * (
            (s["I"] ** 2 + s["O"] ** 2 + s["O"] * s["I"]) if s["T"] == 1 else
            min(s["T"] * (s["I"] ** 2 + s["O"] ** 2 + s["O"] * s["I"]),
                s["T"] * s["O"] * s["I"] + s["O"] * s["I"] * (s["O"] + s["I"]))),
        model="2·N·(I²+O²+O·I) at T = 1; else 2·N·min(T(I²+O²+OI), T·OI + OI(O+I))",
        shapes=_grid(N=4096),
        quick=[dict(N=256, T=1, I=64, O=64), dict(N=256, T=16, I=64, O=64)],
        reference_bytes=lambda s: 3 * 4.0 * s["N"] * s["O"] * s["I"],
        reference_flops=lambda s: 2.0 * s["N"] * s["O"] * s["I"] * (s["T"] + s["O"] + s["I"]),
    ),
    "kron_apply": Spec(
        make=lambda s: (torch.randn(s["Q"], s["O"], s["I"]), _orthogonal(s["I"]), _orthogonal(s["O"]),
                        torch.rand(s["O"], s["I"]) + 0.1),
        work=lambda s: 4.0 * s["Q"] * s["O"] * s["I"] * (s["O"] + s["I"]),
        model="4·Q·O·I·(O+I) (four GEMMs per query)",
        shapes=[dict(Q=64, I=W, O=W) for W in (256, 1024)],
        quick=[dict(Q=8, I=64, O=64)],
        reference_bytes=lambda s: 3 * 4.0 * s["Q"] * s["O"] * s["I"],
    ),
    "jl_project": Spec(
        make=lambda s: (torch.randn(s["N"], s["P"]), s["k"], 1234),
        work=lambda s: 2.0 * s["N"] * s["P"] * s["k"],
        model="2·N·P·k (the GEMM; generating R is extra work)",
        shapes=[dict(N=4096, P=65536, k=1024)],
        quick=[dict(N=256, P=4096, k=256)],
        reference_bytes=lambda s: 16 * 8.0 * s["P"] * s["k"],  # int64 Philox temporaries (measured)
        reference_flops=lambda s: 2.0 * s["N"] * s["P"] * s["k"] + 400.0 * s["P"] * s["k"],
    ),
    "seed_moments": Spec(
        make=lambda s: (torch.randn(s["K"], s["Q"]), torch.randn(s["K"], s["N"], s["Q"])),
        work=lambda s: 4.0 * (s["K"] + 5) * s["N"] * s["Q"],
        model="bytes 4·(K+5)·N·Q (read δ once, write five [N, Q] results)",
        shapes=[dict(K=32, N=4096, Q=64)],
        quick=[dict(K=8, N=256, Q=16)],
        reference_bytes=lambda s: 8 * 4.0 * s["K"] * s["N"] * s["Q"],
        reference_flops=lambda s: 40.0 * s["K"] * s["N"] * s["Q"],
        unit="GB/s",
    ),
}


def _label(shape: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in shape.items())


def _input_bytes(args: tuple) -> int:
    return sum(a.numel() * a.element_size() for a in args if isinstance(a, torch.Tensor))


# ---- child: all shapes of one op in a fresh process ----------------------------------------------



def _rel_diff(out, base) -> float:
    """Largest |out − base| relative to the largest |base|, over every output tensor."""
    pairs = zip(out, base) if isinstance(out, tuple) else [(out, base)]
    return max(float((o.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30))
               for o, b in pairs)


def _child(request: dict) -> list[dict]:
    from benchmarks.common import median_time, peak_rss_delta

    op = request["op"]
    spec = SPECS[op]
    fn = getattr(dtda.ops, op)
    if request["threads"]:
        torch.set_num_threads(request["threads"])

    def caller(impl: str, args: tuple) -> Callable[[], object]:
        if impl in request["anchors"]:
            return anchors.make(op, impl, *args)

        def call():
            with dtda.ops.use_backend(impl):
                return fn(*args)
        return call

    warm = spec.make(spec.quick[0])  # first calls import torch's compile machinery, start pools
    for impl in request["impls"]:
        caller(impl, warm)()
    results = []
    for shape, skip in zip(request["shapes"], request["skips"]):
        torch.manual_seed(0)
        args = spec.make(shape)
        base = None  # the first implementation's output (torch's), which the others are compared with
        for impl in request["impls"]:
            if impl == "reference" and skip:
                continue
            call = caller(impl, args)
            out, peak = peak_rss_delta(call)
            check, diff = "", None
            if op in anchors.VALUES_DIFFER:
                check = anchors.jl_check(args[0], out, args[1])
            if base is None:
                base = out
            elif not (op in anchors.VALUES_DIFFER and impl in request["anchors"]):
                diff = _rel_diff(out, base)
            del out
            seconds, runs = median_time(call, request["repeats"], request["budget_s"])
            del call  # an anchor's projector or wrapped layer
            print(f"  {op} {_label(shape)} {impl}: {seconds * 1e3:.1f} ms ({runs} runs)",
                  file=sys.stderr, flush=True)
            results.append({"shape": _label(shape), "impl": impl, "seconds": seconds, "runs": runs,
                            "peak_bytes": peak, "diff": diff, "check": check})
    return results


def _run_child(request: dict) -> list[dict] | str:
    """The child's results, or its error message."""
    return run_child("benchmarks.ops", request, "benchmark process")


# ---- parent ------------------------------------------------------------------------------------

_MM_CACHE: dict[int, float] = {}


def mm_gflops(n: int) -> float:
    """torch.mm GFLOP/s on float32 [n, n] @ [n, n] in this process (median of 5)."""
    if n not in _MM_CACHE:
        from benchmarks.common import median_time

        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)
        seconds, _ = median_time(lambda: torch.mm(a, b), 5, 10.0)
        _MM_CACHE[n] = 2.0 * n ** 3 / seconds / 1e9
    return _MM_CACHE[n]


def _mm_size(flops: float) -> int:
    """A square matmul of comparable FLOPs: n ≈ (flops / 2)^(1/3), a multiple of 128 in [256, 2048]."""
    n = round((flops / 2.0) ** (1.0 / 3.0) / 128) * 128
    return int(min(2048, max(256, n)))


def _skip_reference(spec: Spec, shape: dict) -> str:
    """Why the reference is not run on ``shape`` ('' when it is)."""
    with torch.device("meta"):  # shapes only, nothing allocated
        need = spec.reference_bytes(shape) + _input_bytes(spec.make(shape))
    if need > REFERENCE_MAX_BYTES:
        return f"reference skipped: needs about {need / GiB:.1f} GiB (> {REFERENCE_MAX_BYTES / GiB:.0f} GiB)"
    seconds = (spec.reference_flops or spec.work)(shape) / (mm_gflops(1024) * 1e9)
    if seconds > REFERENCE_MAX_SECONDS:
        return (f"reference skipped: about {seconds:.0f} s per call at torch.mm's rate "
                f"(> {REFERENCE_MAX_SECONDS:.0f} s)")
    return ""


def _available(op: str) -> list[str]:
    found = dtda.ops.candidates(op, torch.device("cpu"), torch.float32)
    return [name for name in IMPLEMENTATIONS if name in found]


def anchor_status() -> dict[str, str]:
    """anchor -> '' when usable here, else why not (imports each anchor once)."""
    return {name: anchors.unavailable(name) for name in anchors.ANCHORS}


def _note(r: dict, is_anchor: bool, best: tuple[str, float] | None) -> str:
    parts = []
    if r["diff"] is not None:
        parts.append(f"Δ {r['diff']:.0e}" + (" MISMATCH" if r["diff"] > AGREE_RTOL else ""))
    elif is_anchor and not r["check"]:
        parts.append("JL check ok (its own R)")
    if r["check"]:
        parts.append(r["check"])
    if is_anchor and best:
        parts.append(f"{r['seconds'] / best[1]:.2f}× dtda {best[0]}'s time")
    return "; ".join(parts)


def benchmark(ops: list[str], quick: bool, max_dim: int | None, repeats: int,
              threads: int | None = None, max_gflop: float | None = None,
              usable: list[str] = ()) -> list[dict]:
    """Rows of the table; ``usable`` names the anchors to time beside dtda where they have an adapter."""
    rows: list[dict] = []
    for op in ops:
        spec = SPECS[op]
        shapes = spec.quick if quick else spec.shapes
        if max_dim is not None:
            shapes = [s for s in shapes if max(s.get("I", 0), s.get("O", 0)) <= max_dim]
        if max_gflop is not None and spec.unit == "GFLOP/s":
            shapes = [s for s in shapes if spec.work(s) <= max_gflop * 1e9]
        skips = [_skip_reference(spec, s) for s in shapes]
        for shape, skip in zip(shapes, skips):
            if skip:
                print(f"  {op} {_label(shape)}: {skip}", flush=True)
        # The reference runs last on each shape: the fast implementations and anchors are timed first.
        op_anchors = [name for name in anchors.ADAPTERS.get(op, {}) if name in usable]
        native = [name for name in _available(op) if name != "reference"]
        impls = native + op_anchors + ["reference"] * ("reference" in _available(op))
        request = {"op": op, "shapes": shapes, "skips": skips, "impls": impls, "anchors": op_anchors,
                   "repeats": repeats, "budget_s": 3.0 if quick else 30.0, "threads": threads}
        results = _run_child(request)
        if isinstance(results, str):
            rows.append({"op": op, "shape": "*", "impl": "*", "note": results})
            continue
        for shape in shapes:
            label = _label(shape)
            here = {r["impl"]: r for r in results if r["shape"] == label}
            base = here.get("torch", {}).get("seconds")
            native = [(impl, r["seconds"]) for impl, r in here.items()
                      if impl not in op_anchors and impl != "reference"]
            best = min(native, key=lambda item: item[1]) if native else None
            work = spec.work(shape)
            mm = mm_gflops(_mm_size(work)) if spec.unit == "GFLOP/s" else None
            for impl in [*IMPLEMENTATIONS, *op_anchors]:
                if impl not in here:
                    continue
                r = here[impl]
                rate = work / r["seconds"] / 1e9
                rows.append({
                    "op": op, "shape": label, "impl": impl, "ms": r["seconds"] * 1e3,
                    "vs_torch": (base / r["seconds"]) if base else None, "rate": rate,
                    "unit": spec.unit, "vs_mm": (rate / mm) if mm else None,
                    "peak_mib": r["peak_bytes"] / 2**20, "runs": r["runs"],
                    "anchor": impl in op_anchors, "best": best,
                    "note": _note(r, impl in op_anchors, best)})
    return rows


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[dict]) -> None:
    header = (f"{'op':<16}{'shape':<34}{'impl':<12}{'median ms':>11}{'×torch':>8}{'rate':>18}{'×mm':>7}"
              f"{'peak MiB':>10}  note")
    print(header)
    print("-" * len(header))
    for r in rows:
        rate = f"{r['rate']:.1f} {r['unit']}" if "rate" in r else "-"
        print(f"{r['op']:<16}{r['shape']:<34}{r['impl']:<12}{_fmt(r.get('ms'), '.1f'):>11}"
              f"{_fmt(r.get('vs_torch'), '.2f'):>8}{rate:>18}{_fmt(r.get('vs_mm'), '.2f'):>7}"
              f"{_fmt(r.get('peak_mib'), '.1f'):>10}  {r.get('note', '')}")


def print_anchor_summary(rows: list[dict]) -> None:
    """One line per anchor row: its time against dtda's fastest non-reference implementation."""
    lines = [r for r in rows if r.get("anchor") and r.get("best")]
    if not lines:
        return
    print("\nAgainst the anchor tools (same run, same inputs; × = t_anchor / t_dtda):")
    header = f"{'op':<16}{'shape':<34}{'anchor':<12}{'anchor ms':>11}{'dtda':>6}{'dtda ms':>10}{'×':>8}"
    print(header)
    print("-" * len(header))
    for r in lines:
        impl, seconds = r["best"]
        print(f"{r['op']:<16}{r['shape']:<34}{r['impl']:<12}{r['ms']:>11.1f}{impl:>6}{seconds * 1e3:>10.1f}"
              f"{r['ms'] / (seconds * 1e3):>8.2f}")


def write_csv(rows: list[dict], path: str, anchor_versions: str = "") -> None:
    context = {"torch": torch.__version__, "dtda": getattr(dtda, "__version__", "?"),
               "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
               "anchors": anchor_versions}
    fields = ["op", "shape", "impl", "ms", "vs_torch", "rate", "unit", "vs_mm", "peak_mib", "runs", "note",
              *context]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            writer.writerow({**{k: r.get(k, "") for k in fields}, **context})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ops", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes (about a minute)")
    parser.add_argument("--ops", default=",".join(SPECS), help="comma-separated ops (default: all)")
    parser.add_argument("--max-dim", type=int, default=None, help="drop shapes with I, O or D above this")
    parser.add_argument("--max-gflop", type=float, default=None,
                        help="drop shapes whose FLOP model exceeds this many GFLOP")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per implementation (median)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads for the timed processes (default: torch's)")
    parser.add_argument("--csv", default=None, help="also write the rows to this CSV file")
    parser.add_argument("--models", action="store_true", help="print each op's FLOP/byte model")
    parser.add_argument("--no-anchors", action="store_true",
                        help="time dtda's implementations only (skip TRAK, dattri, Kronfluence, Bergson)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(_child(json.loads(args.child))))
        return
    if args.threads:
        torch.set_num_threads(args.threads)  # the torch.mm baseline uses the same count
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    unknown = [o for o in ops if o not in SPECS]
    if unknown:
        parser.error(f"unknown ops {unknown}; ops are {list(SPECS)}")
    print(f"dtda {getattr(dtda, '__version__', '?')}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, float32, {os.cpu_count()} CPUs", flush=True)
    if args.models:
        for op in ops:
            print(f"  {op}: {SPECS[op].model}")
    usable: list[str] = []
    if not args.no_anchors and any(op in anchors.ADAPTERS for op in ops):
        for name, why in anchor_status().items():
            if why:
                print(f"  anchor {name} unavailable: {why}")
            else:
                usable.append(name)
        if len(usable) < len(anchors.ANCHORS):
            print(f"  (to time the anchors, install them beside this torch: {anchors.INSTALL})")
        if usable:
            print("  anchors: " + ", ".join(anchors.version(name) for name in usable), flush=True)
    start = time.perf_counter()
    rows = benchmark(ops, args.quick, args.max_dim, args.repeats, args.threads, args.max_gflop, usable)
    print(f"\n(×torch = t_torch / t_impl; ×mm = rate / torch.mm GFLOP/s at comparable size; "
          f"peak = peak RSS increase during one call; Δ = max |out − torch's| / max |torch's|; "
          f"{time.perf_counter() - start:.0f} s)")
    print_table(rows)
    print_anchor_summary(rows)
    if args.csv:
        write_csv(rows, args.csv, ", ".join(anchors.version(name) for name in usable))


if __name__ == "__main__":
    main()
