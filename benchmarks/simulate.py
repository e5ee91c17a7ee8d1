"""Simulator speed: one scenario on one core, a batch of scenarios stepped together, and the wall
time of the default sweep from a cold start.

Prints and writes benchmarks/results/simulate.json:

- ``slot_steps_per_s_single``: ``simulate()`` + ``LyapunovController`` on the default scenario
  (ResNet-50 on a TX2, synthetic LTE, 10 fps, 100 ms slots), decisions not timed; best of 3.
- ``slot_steps_per_s_batch``: slot-steps summed over ``batch_lanes`` scenarios (V values x seeds x
  the three synthetic traces) run by ``simulation.batchsim.simulate_batch``, end to end: the
  stepping, the per-frame times and every lane's summary; best of 2. BLAS is held to one thread,
  so this is per core. ``slot_steps_per_s_batch_64`` is the same for 64 lanes.
- ``devices_1000_s``: 1000 devices sharing 16 edges of 64 (``simulation.edge``, the default
  ``agx-orin-fp32`` profile), each with its own camera, shifted trace and controller (V = 30),
  600 s of 100 ms slots (6 M device-slots) in one ``simulate_batch`` on one core, end to end
  (the per-frame edge completions and every device's summary included); best of 2.
- ``default_sweep_s``: ``cutedge sweep`` with the default config (sweep-default.yaml) and
  ``--workers 2``, in a fresh interpreter (imports, LP compilation and the figure included).

    python benchmarks/simulate.py [--out benchmarks/results/simulate.json] [--skip-sweep]
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core: before numpy is imported

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from controller.lyapunov import LyapunovConfig, LyapunovController  # noqa: E402
from simulation.batchsim import Lane, simulate_batch  # noqa: E402
from simulation.experiment import Experiment, TraceSpec, build_scenario  # noqa: E402
from simulation.simulator import simulate  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TRACES = ("synthetic:markov-lte", "synthetic:5g-mmwave", "synthetic:wifi")


def single(duration_s: float = 600.0, repeats: int = 3) -> float:
    sc = build_scenario(Experiment(duration_s=duration_s, seed=1))
    best = float("inf")
    for _ in range(repeats):
        ctl = LyapunovController(sc.system, LyapunovConfig(V=30.0))
        t0 = time.perf_counter()
        simulate(sc.system, ctl, sc.capacity_bps, sc.arrival_times_s, buffer_frames=300, time_decisions=False)
        best = min(best, time.perf_counter() - t0)
    return len(sc.capacity_bps) / best


def batch(n_V: int, n_seeds: int, duration_s: float = 300.0, repeats: int = 3) -> tuple[float, int]:
    lanes = []
    system = None
    for trace in TRACES:
        for seed in range(n_seeds):
            sc = build_scenario(Experiment(duration_s=duration_s, seed=seed + 1, trace=TraceSpec(path=trace)))
            system = sc.system
            for V in np.logspace(0, 3, n_V):
                lanes.append(Lane(f"V={V:g}", LyapunovConfig(V=float(V)), sc.capacity_bps, sc.arrival_times_s))
    steps = len(lanes) * len(lanes[0].capacity_bps)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        simulate_batch(system, lanes, buffer_frames=300)
        best = min(best, time.perf_counter() - t0)
    return steps / best, len(lanes)


def devices(n: int = 1000, per_edge: int = 64, duration_s: float = 600.0, repeats: int = 2) -> float:
    from simulation.edge import DEFAULT_EDGE, load_edge
    from simulation.experiment import device_inputs

    sc = build_scenario(Experiment(duration_s=duration_s, seed=1, devices=n))
    lanes = [Lane(f"device {i}", LyapunovConfig(V=30.0), c, a, edge=i // per_edge)
             for i, (c, a) in enumerate(device_inputs(sc, n))]
    edge = load_edge(DEFAULT_EDGE)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        simulate_batch(sc.system, lanes, buffer_frames=300, edge=edge)
        best = min(best, time.perf_counter() - t0)
    return best


def default_sweep(workers: int = 2) -> float:
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        r = subprocess.run(
            [sys.executable, "-m", "cutedge", "sweep", "--workers", str(workers), "--quiet", "--out", out],
            cwd=REPO, capture_output=True, text=True,
        )
        wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"cutedge sweep failed:\n{r.stderr}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "simulate.json"))
    ap.add_argument("--seeds", type=int, default=12, help="seeds per trace in the batch (x 20 V x 3 traces)")
    ap.add_argument("--skip-sweep", action="store_true")
    args = ap.parse_args()

    s1 = single()
    print(f"single scenario (simulate + LyapunovController): {s1:,.0f} slot-steps/s")
    b64, n64 = batch(n_V=8, n_seeds=3)
    print(f"batch of {n64} scenarios: {b64:,.0f} slot-steps/s (end to end)")
    bN, nN = batch(n_V=20, n_seeds=args.seeds)
    print(f"batch of {nN} scenarios: {bN:,.0f} slot-steps/s (end to end)")
    dev_s = devices()
    print(f"1000 devices on 16 shared edges, 6000 slots: {dev_s:.2f} s (one core, end to end)")
    sweep_s = None
    if not args.skip_sweep:
        sweep_s = default_sweep()
        print(f"default sweep (cutedge sweep, 2 workers, cold start): {sweep_s:.1f} s")
    result = {
        "slot_steps_per_s_single": round(s1),
        "slot_steps_per_s_batch": round(bN),
        "batch_lanes": nN,
        "slot_steps_per_s_batch_64": round(b64),
        "devices_1000_s": round(dev_s, 2),
        "default_sweep_s": None if sweep_s is None else round(sweep_s, 2),
        "default_sweep_workers": 2,
        "targets": "single >= 50 000; batch >= 1 000 000 per core; devices_1000_s <= 10; default sweep <= 60 s on 2 cores",
        "scenario": "resnet50 on jetson-tx2, lte-shannon, 10 fps camera, 100 ms slots",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
