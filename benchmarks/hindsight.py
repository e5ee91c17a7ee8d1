"""Hindsight bound speed: E*(L) on the default 10-minute setting (ResNet-50 on a TX2, synthetic
LTE, 10 fps camera, 100 ms slots: 6000 slots), one compiled LP, solved per latency budget.

Prints and writes benchmarks/results/hindsight.json: the build (compile happens on the first
solve), the least feasible latency, and per L the seconds and E*(L) in J per frame.

    python benchmarks/hindsight.py [--duration 600] [--points 8] [--solver CLARABEL] [--out ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from simulation.experiment import Experiment, build_scenario
from simulation.hindsight import DEFAULT_SOLVER, HindsightBound, latency_grid_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=600.0)
    ap.add_argument("--points", type=int, default=8)
    ap.add_argument("--hi", type=float, default=3.0, help="largest L (s)")
    ap.add_argument("--solver", default=DEFAULT_SOLVER)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "hindsight.json"))
    args = ap.parse_args()

    sc = build_scenario(Experiment(duration_s=args.duration))
    t0 = time.perf_counter()
    hb = HindsightBound(sc.system, sc.capacity_bps, sc.arrival_times_s)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    lo = hb.least_latency_s(solver=args.solver)
    least_s = time.perf_counter() - t0
    print(f"{len(sc.capacity_bps)} slots, {hb.vertices} compute vertices; build {build_s:.1f} s; "
          f"least latency {lo * 1e3:.1f} ms ({least_s:.1f} s, compile included)")
    points = []
    for L in latency_grid_s(lo * 1.001, args.hi, args.points):
        pt = hb.solve(float(L), solver=args.solver)
        points.append({"latency_ms": pt.latency_s * 1e3, "e_star_j_per_frame": pt.e_star_j_per_frame,
                       "status": pt.status, "solve_s": pt.solve_s})
        print(f"  L = {pt.latency_s * 1e3:8.1f} ms  E* = {pt.e_star_j_per_frame:.4f} J/frame  {pt.status}  {pt.solve_s:.1f} s")
    vals = [p["e_star_j_per_frame"] for p in points]
    solves = [p["solve_s"] for p in points]
    out = {
        "setting": {"duration_s": args.duration, "slots": len(sc.capacity_bps), "trace": "synthetic (markov LTE)",
                    "experiment": "Experiment() defaults", "serve_fraction": hb.serve_fraction, "solver": args.solver},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "build_s": build_s,
        "least_latency_ms": lo * 1e3,
        "least_latency_solve_s": least_s,
        "solve_s_per_L": {"median": float(np.median(solves)), "max": float(np.max(solves))},
        "non_increasing": all(b <= a * (1 + 1e-6) for a, b in zip(vals, vals[1:])),
        "curve": points,
    }
    print(f"per L: median {out['solve_s_per_L']['median']:.1f} s, max {out['solve_s_per_L']['max']:.1f} s; "
          f"non-increasing: {out['non_increasing']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
