"""The controller's O(1/V) energy gap and its backlog against V, on a long synthetic run.

Drift-plus-penalty promises a time-average power within O(1/V) of the stationary bound p* at an
O(V) backlog (Neely 2010); the multipliers (Huang and Neely 2011) are meant to keep the energy
side and shrink the backlog. This runs the default setup (ResNet-50 on a TX2, 10 fps camera,
100 ms slots) on a 20-minute synthetic LTE trace with a 1000-frame buffer, over V, for the
product's objective and for the textbook one (``multipliers: false, latency_weight_per_s: 0``),
and reports per run: the gap to p* of the load the run served and of the offered load, the mean
backlog (``Q_c + Q_x/D(0)``, frames), the mean latency and the share of frames served.

Prints a table and writes benchmarks/results/gap_vs_V.json; ``--plot PATH`` also draws the two
curves (gap and backlog against V, log axes, with a 1/V guide), as in docs/controller.md.

    python benchmarks/gap_vs_V.py [--duration 1200] [--plot docs/gap_vs_V.png] [--out ...]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from controller.lyapunov import LyapunovConfig
from simulation.batchsim import Lane, simulate_batch
from simulation.bounds import StationaryBound
from simulation.experiment import Experiment, build_scenario

VS = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)
OBJECTIVES = {
    "default": LyapunovConfig(),
    "textbook": LyapunovConfig(multipliers=False, latency_weight_per_s=0.0),
}


def measure(duration_s: float, seed: int, buffer_frames: int) -> dict:
    sc = build_scenario(Experiment(duration_s=duration_s, seed=seed, buffer_frames=buffer_frames))
    lp = StationaryBound(sc.system)
    offered = lp.solve(sc.capacity_bps, len(sc.arrival_times_s) / duration_s)
    unit = float(sc.system.bits[0])
    out = {}
    for name, cfg in OBJECTIVES.items():
        lanes = [Lane(f"V={V:g}", replace(cfg, V=V), sc.capacity_bps, sc.arrival_times_s) for V in VS]
        rows = []
        for V, r in zip(VS, simulate_batch(sc.system, lanes, buffer_frames=buffer_frames)):
            sm = r.summary
            served = lp.solve_served(r)
            sl = r.slots
            rows.append({
                "V": V,
                "gap_served_pct": 100.0 * (sm["avg_power_w"] / served.p_star_w - 1.0),
                "gap_offered_pct": 100.0 * (sm["avg_power_w"] / offered.p_star_w - 1.0),
                "backlog_frames": float(np.mean(sl["Qc_frames"] + sl["Qx_bits"] / unit)),
                "latency_ms": sm["latency_ms"]["mean"],
                "served_share": sm["frames"]["completed"] / sm["frames"]["arrived"],
                "energy_per_frame_j": sm["energy_per_frame_j"],
            })
        out[name] = rows
    return {"p_star_w": offered.p_star_w, "p_star_j_per_frame": offered.p_star_j_per_frame, "runs": out}


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    for name, style in (("default", "o-"), ("textbook", "s--")):
        rows = result["runs"][name]
        V = np.array([r["V"] for r in rows])
        gap = np.array([max(r["gap_served_pct"], 1e-2) for r in rows])
        a.loglog(V, gap, style, label=f"{name} objective")
        b.loglog(V, [max(r["backlog_frames"], 1e-2) for r in rows], style, label=f"{name} objective")
    V = np.array(VS)
    a.loglog(V, 30.0 / V, ":", color="0.5", label="slope -1 (the O(1/V) theorem)")
    a.set_xlabel("V (frames^2/J)")
    a.set_ylabel("gap to p* of the served load (%)")
    a.legend(fontsize=8)
    b.loglog(V, V / 30.0, ":", color="0.5", label="slope 1 (O(V))")
    b.set_xlabel("V (frames^2/J)")
    b.set_ylabel("mean backlog Q_c + Q_x/D(0) (frames)")
    b.legend(fontsize=8)
    fig.suptitle("ResNet-50 on a TX2, synthetic LTE, 20 min, 10 fps", fontsize=10)
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=1200.0)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--buffer", type=int, default=1000)
    ap.add_argument("--plot", default=None, help="also draw the curves to this PNG")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "gap_vs_V.json"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    result = measure(args.duration, args.seed, args.buffer)
    result["seconds"] = time.perf_counter() - t0
    result["setting"] = {"duration_s": args.duration, "seed": args.seed, "buffer_frames": args.buffer,
                         "trace": "synthetic:markov-lte", "experiment": "Experiment() defaults"}
    result["machine"] = {"python": platform.python_version(), "platform": platform.platform()}
    for name, rows in result["runs"].items():
        # log-log slopes over V = 10..3000 (gap) and 10..1000 (backlog: the top run drops frames)
        g = {r["V"]: r for r in rows}
        result.setdefault("slopes", {})[name] = {
            "gap_served": float(np.log(g[3000.0]["gap_served_pct"] / g[10.0]["gap_served_pct"]) / np.log(300.0)),
            "backlog": float(np.log(g[1000.0]["backlog_frames"] / g[10.0]["backlog_frames"]) / np.log(100.0)),
        }
    print(f"p* = {result['p_star_j_per_frame']:.4f} J/frame (offered load)")
    print(f"{'objective':9s} {'V':>6s} {'gap served':>10s} {'gap offered':>11s} {'backlog':>8s} {'latency':>9s} {'served':>7s}")
    for name, rows in result["runs"].items():
        for r in rows:
            print(f"{name:9s} {r['V']:6g} {r['gap_served_pct']:9.1f}% {r['gap_offered_pct']:10.1f}% "
                  f"{r['backlog_frames']:8.2f} {r['latency_ms']:7.0f}ms {r['served_share']:7.3f}")
    for name, sl in result["slopes"].items():
        print(f"{name}: gap ~ V^{sl['gap_served']:.2f} (V 10..3000), backlog ~ V^{sl['backlog']:.2f} (V 10..1000)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        plot(result, args.plot)
        print(f"wrote {args.plot}")
    print(f"wrote {args.out} ({result['seconds']:.1f} s)")


if __name__ == "__main__":
    main()
