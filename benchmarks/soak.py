"""Soak: a long device run against a loopback edge, and how much the agent's memory grows.

Starts ``cutedge edge`` on a free loopback port and ``cutedge device run`` against it (simulated
clock backend, synthetic 224x224 frames) as real processes, samples both processes' resident
memory (``VmRSS`` from /proc) while the run goes, and writes benchmarks/results/soak.json:

- ``frames``: frames the device run completed (its summary.json);
- ``rss_growth_mb``: the device agent's RSS at the end of its run (the highest sample of the
  run's last tenth) less its RSS once it is warm (the median sample of the run's second tenth:
  the model, the torch runtime and the first buffers are in by then); target <= 50 MB. The run
  is the agent's slot loop: it ends when summary.json is written (its mtime) and lasted
  ``slots * slot_s``; writing the outputs after it (the time-series figure imports matplotlib,
  about 90 MB once) is reported apart, as ``device_rss_peak_mb``;
- ``edge_rss_growth_mb``: the same for the edge over the same window; sample counts and the
  run's figures.

The model is a small convolutional net defined here (:func:`tiny_net`, loaded by both agents as
``benchmarks.soak:tiny_net``): what is measured is the agent's bookkeeping per frame (inputs,
results, records), which does not depend on the model, and a small model lets 20 000 frames of
224x224 run in minutes on a CPU. The camera rate must stay below what the machine sustains, or
the queue itself grows.

    python benchmarks/soak.py [--frames 20000] [--fps 50] [--out benchmarks/results/soak.json]

Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODEL = "benchmarks.soak:tiny_net"


def tiny_net():
    """Four small conv blocks and a classifier: a few cuts, about 1 ms a frame on a CPU."""
    from torch import nn

    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.ReLU())

    return nn.Sequential(block(3, 8), block(8, 16), block(16, 16), block(16, 32),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def growth(samples: list[tuple[float, float]], t0: float, t_end: float) -> tuple[float, float, float]:
    """(warm RSS, end RSS, growth) from (time, MB) samples of a run from ``t0`` to ``t_end``."""
    span = max(t_end - t0, 1e-9)
    phase = [((t - t0) / span, m) for t, m in samples if t0 <= t <= t_end]
    warm = [m for x, m in phase if 0.1 <= x < 0.2]
    end = [m for x, m in phase if x >= 0.9]
    if len(warm) < 2 or len(end) < 2:
        raise SystemExit(f"{len(phase)} RSS samples in the run: too short to measure growth")
    w, e = statistics.median(warm), max(end)
    return w, e, e - w


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=20000)
    ap.add_argument("--fps", type=float, default=50.0)
    ap.add_argument("--every-s", type=float, default=0.5, help="RSS sampling period")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "soak.json"))
    args = ap.parse_args()
    if not Path("/proc/self/status").exists():
        raise SystemExit("benchmarks/soak.py reads /proc: Linux only")
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    cli = [sys.executable, "-m", "cutedge"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        edge = subprocess.Popen(
            [*cli, "edge", "--bind", endpoint, "--models", f"{MODEL}@3x224x224", "--log-interval-s", "30"],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        device = None
        try:
            time.sleep(3.0)  # the edge imports torch and builds the model
            if edge.poll() is not None:
                raise SystemExit(f"cutedge edge exited: {edge.stderr.read()}")
            t_start = time.monotonic()
            device = subprocess.Popen(
                [*cli, "device", "run", "--edge", endpoint, "--model", MODEL, "--input-shape", "3,224,224",
                 "--backend", "simulated", "--board", "jetson-orin-nano", "--device", "cpu",
                 "--frames", str(args.frames), "--fps", str(args.fps), "--out", str(out)],
                cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            dev_samples: list[tuple[float, float]] = []
            edge_samples: list[tuple[float, float]] = []
            t_wall0 = last_print = time.time()
            while device.poll() is None:
                now = time.time()
                for pid, samples in ((device.pid, dev_samples), (edge.pid, edge_samples)):
                    m = rss_mb(pid)
                    if m is not None:
                        samples.append((now, m))
                if now - last_print > 30 and dev_samples:
                    print(f"  {now - t_wall0:6.0f} s: device RSS {dev_samples[-1][1]:.0f} MB, "
                          f"edge RSS {edge_samples[-1][1]:.0f} MB", flush=True)
                    last_print = now
                time.sleep(args.every_s)
            t_end = time.monotonic()
            err = device.stderr.read()
            if device.returncode != 0:
                raise SystemExit(f"cutedge device run failed ({device.returncode}):\n{err[-2000:]}")
            summary = json.loads((out / "summary.json").read_text())
            run_end = (out / "summary.json").stat().st_mtime
            run_start = run_end - summary["slots"] * summary["slot_s"]
        finally:
            for p in (device, edge):
                if p is not None and p.poll() is None:
                    p.terminate()
                    try:
                        p.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        p.kill()
    d_warm, d_end, d_growth = growth(dev_samples, run_start, run_end)
    e_warm, e_end, e_growth = growth(edge_samples, run_start, run_end)
    f = summary["frames"]
    result = {
        "frames": f["completed"],
        "rss_growth_mb": round(d_growth, 1),
        "target": "rss_growth_mb <= 50 over >= 20000 frames",
        "device_rss_warm_mb": round(d_warm, 1),
        "device_rss_end_mb": round(d_end, 1),
        "device_rss_peak_mb": round(max(m for _, m in dev_samples), 1),
        "edge_rss_growth_mb": round(e_growth, 1),
        "edge_rss_warm_mb": round(e_warm, 1),
        "edge_rss_peak_mb": round(max(m for _, m in edge_samples), 1),
        "samples": len(dev_samples),
        "arrived": f["arrived"], "offloaded": f["offloaded"], "local": f["local"], "in_flight": f["in_flight"],
        "fps": args.fps, "wall_s": round(t_end - t_start, 1),
        "throughput_fps": round(summary["throughput_fps"], 2),
        "latency_ms_mean": round(summary["latency_ms"]["mean"], 1),
        "max_Qc_frames": summary["queues"]["max_Qc_frames"],
        "model": MODEL, "input_shape": [3, 224, 224], "backend": "simulated", "board": "jetson-orin-nano",
        "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
    }
    for k, v in result.items():
        print(f"{k:>22}: {v}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
