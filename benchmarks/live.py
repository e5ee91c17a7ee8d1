"""Live system on one machine against the simulator's prediction for the same setting.

What is run: ``cutedge edge`` and ``cutedge device run`` as two processes over loopback, the
uplink shaped by a trace (``--link-trace``), the simulated clock backend with a board profile;
then the trace-driven simulator on the same system model (the device agent's FLOPs-estimated
profile of the same model and input, the same board, network, trace, frame rate, V and slot).

Figures, live vs simulated: throughput, latency mean/p50/p95, energy per frame, the share of
frames completed through the edge, and the live agent's wall time per slot spent outside
sleeping (decision, pinning, bookkeeping; heads excluded). They differ where the emulation
is real and the model is not: heads and tails here run on this machine's CPU (the
profile says Jetson GPU and edge GPU), and the bandwidth estimate is learnt, not read from
the trace. Writes ``benchmarks/results/live.json``.

    python benchmarks/live.py [--model vgg16 --input-shape 3,64,64 --board jetson-nano]
        [--trace PATH] [--trace-scale 4] [--frames 200] [--fps 5] [--V 30]

The default trace is Mahimahi's T-Mobile LTE uplink from the shared trace sets
(``$CUTEDGE_TRACES`` or ../shared/traces); without them a seeded synthetic LTE trace is used.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _start_edge(model: str, shape: str, log: Path) -> tuple[subprocess.Popen, str]:
    fh = log.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cutedge", "edge", "--bind", "tcp://127.0.0.1:0",
         "--models", f"{model}@{shape.replace(',', 'x')}", "--log-interval-s", "5"],
        cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        m = re.search(r"serving .* on (tcp://127\.0\.0\.1:\d+)", log.read_text())
        if m:
            return proc, m.group(1)
        if proc.poll() is not None:
            raise SystemExit(f"edge exited:\n{log.read_text()}")
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"edge did not start:\n{log.read_text()}")


def _simulate(args, profile_yaml: Path, trace: str) -> dict:
    from simulation.experiment import Experiment, TraceSpec, build_scenario, run_scenario

    exp = Experiment()
    exp = replace(
        exp, name="live-prediction", board=args.board, model=str(profile_yaml), input_bytes="tensor",
        slot_s=args.slot, duration_s=args.frames / args.fps,
        arrivals=replace(exp.arrivals, rate_fps=args.fps),
        trace=TraceSpec(path=trace, scale=args.trace_scale),
        controller=replace(exp.controller, V=args.V),
    )
    return run_scenario(build_scenario(exp)).summary


def _figures(s: dict) -> dict:
    f = s["frames"]
    done = f["completed"] or 1
    return {
        "throughput_fps": s["throughput_fps"],
        "latency_ms_mean": s["latency_ms"]["mean"],
        "latency_ms_p50": s["latency_ms"].get("p50"),
        "latency_ms_p95": s["latency_ms"]["p95"],
        "energy_per_frame_j": s["energy_per_frame_j"],
        "completed": f["completed"],
        "arrived": f["arrived"],
        "edge_share": f.get("offloaded", f["completed"] - f.get("local", 0)) / done,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="vgg16")
    ap.add_argument("--input-shape", default="3,64,64")
    ap.add_argument("--board", default="jetson-nano")
    ap.add_argument("--trace", default=None)
    ap.add_argument("--trace-scale", type=float, default=4.0)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--fps", type=float, default=5.0)
    ap.add_argument("--V", type=float, default=30.0)
    ap.add_argument("--slot", type=float, default=0.1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "live.json"))
    args = ap.parse_args()

    from controller.profiles import load_board
    from dnn_split.models import parse_input_shape
    from dnn_split.partition import partition
    from dnn_split.profile import dump_profile, estimate_profile
    from simulation.traces import shared_traces_dir

    trace = args.trace
    if trace is None:
        shared = shared_traces_dir() / "mahimahi" / "TMobile-LTE-short.up"
        trace = str(shared) if shared.is_file() else "synthetic:markov-lte"
    work = Path(tempfile.mkdtemp(prefix="cutedge-live-bench-"))
    part = partition(args.model, parse_input_shape(args.input_shape), announce=lambda m: None)
    profile_yaml = work / "profile.yaml"
    dump_profile(estimate_profile(part, load_board(args.board)), profile_yaml)

    edge, endpoint = _start_edge(args.model, args.input_shape, work / "edge.log")
    try:
        cmd = [sys.executable, "-m", "cutedge", "device", "run", "--edge", endpoint, "--model", args.model,
               "--input-shape", args.input_shape, "--backend", "simulated", "--board", args.board,
               "--profile", str(profile_yaml), "--frames", str(args.frames), "--fps", str(args.fps),
               "--V", str(args.V), "--slot", str(args.slot), "--verify-every", "10", "--out", str(work / "run")]
        if not trace.startswith("synthetic"):
            cmd += ["--link-trace", trace, "--trace-scale", str(args.trace_scale)]
        else:
            cmd += ["--link-trace", _write_synthetic(trace, work), "--trace-scale", str(args.trace_scale)]
        t0 = time.monotonic()
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.monotonic() - t0
        if done.returncode != 0:
            raise SystemExit(f"device run failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    finally:
        edge.terminate()
        edge.wait(30)
    live = json.loads((work / "run" / "summary.json").read_text())
    sim = _simulate(args, profile_yaml, trace)

    lf, sf = _figures(live), _figures(sim)
    print(f"{args.model} {args.input_shape} on {args.board}, trace {Path(trace).name} x{args.trace_scale:g}, "
          f"{args.frames} frames at {args.fps:g} fps, V={args.V:g}")
    print(f"{'':22s}{'live':>12s}{'simulated':>12s}")
    for k in lf:
        a, b = lf[k], sf[k]
        print(f"{k:22s}{a:12.3f}{b:12.3f}" if isinstance(a, float) else f"{k:22s}{a:>12}{b:>12}")
    print(f"verify: {live['verify']}; probes {live['probes']}; bandwidth estimate at the end "
          f"{live['bandwidth_estimate_bps'] / 1e6:.2f} Mbit/s; wall {wall:.1f} s")
    result = {
        "benchmark": "live",
        "setup": {"model": args.model, "input_shape": args.input_shape, "board": args.board, "trace": trace,
                  "trace_scale": args.trace_scale, "frames": args.frames, "fps": args.fps, "V": args.V,
                  "slot_s": args.slot},
        "live": lf, "simulated": sf,
        "live_extra": {"verify": live["verify"], "probes": live["probes"],
                       "bandwidth_estimate_bps": live["bandwidth_estimate_bps"], "wall_s": wall},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "command": "python benchmarks/live.py " + " ".join(sys.argv[1:]),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


def _write_synthetic(spec: str, work: Path) -> str:
    """A synthetic trace as a two-column file the device agent can shape its link by."""
    from simulation.traces import load_trace

    tr = load_trace(spec, seed=1)
    path = work / "synthetic-uplink.txt"
    lines = [f"{t:.3f} {r / 1e6:.6f}" for t, r in zip(tr.edges_s[1:], tr.rate_bps)]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


if __name__ == "__main__":
    main()
