"""Trace reading speed: parse time of the biggest shared file of each public set.

Also times resampling the biggest (1 ms resolution) Mahimahi trace into 100 ms slots for one
hour of run, and generating one hour of each synthetic trace. Prints the figures and writes
benchmarks/results/traces.json. Reads the shared sets from ``$CUTEDGE_TRACES`` (default
``../shared/traces``).

    python benchmarks/traces.py [--repeat 5] [--out benchmarks/results/traces.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from simulation.traces import SYNTHETIC_KINDS, read_trace, shared_traces_dir, synthetic_uplink

SETS = ("mahimahi", "pensieve", "lumos5g", "ucc-5g-cork", "nuwins-5g-mmwave-uplink")


def timed(fn, repeat: int) -> tuple[float, list[float]]:
    """(first call, all calls) in seconds; the first call includes a cold page cache."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times[0], times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "traces.json"))
    args = ap.parse_args()
    root = shared_traces_dir()
    if not root.is_dir():
        print(f"shared traces not found at {root} (set CUTEDGE_TRACES)", file=sys.stderr)
        return 2

    parse = {}
    for name in SETS:
        files = [p for p in (root / name).rglob("*") if p.is_file()]
        if not files:
            continue
        biggest = max(files, key=lambda p: p.stat().st_size)
        trace = read_trace(biggest)
        first, times = timed(lambda p=biggest: read_trace(p), args.repeat)
        parse[name] = {
            "file": str(biggest.relative_to(root)),
            "bytes": biggest.stat().st_size,
            "format": trace.format,
            "segments": int(trace.rate_bps.size),
            "duration_s": round(trace.duration_s, 3),
            "mean_mbps": round(trace.mean_bps / 1e6, 4),
            "first_ms": round(first * 1e3, 2),
            "median_ms": round(float(np.median(times)) * 1e3, 2),
        }

    resample = {}
    mahimahi = [p for p in (root / "mahimahi").glob("*") if p.is_file()]
    if mahimahi:
        biggest = max(mahimahi, key=lambda p: p.stat().st_size)
        trace = read_trace(biggest)
        n = 36_000  # one hour of 100 ms slots: the trace wraps several times
        _, times = timed(lambda: trace.resample(0.1, n), args.repeat)
        resample = {
            "file": str(biggest.relative_to(root)),
            "segments": int(trace.rate_bps.size),
            "slots": n,
            "median_ms": round(float(np.median(times)) * 1e3, 2),
        }

    synthetic = {}
    for kind in SYNTHETIC_KINDS:
        _, times = timed(lambda k=kind: synthetic_uplink(3600.0, 0, kind=k), args.repeat)
        synthetic[kind] = {
            "duration_s": 3600.0,
            "median_ms": round(float(np.median(times)) * 1e3, 2),
        }

    result = {
        "benchmark": "traces",
        "parse_biggest_file": parse,
        "resample_mahimahi_1h_100ms": resample,
        "synthetic_1h": synthetic,
        "repeat": args.repeat,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for name, r in parse.items():
        print(
            f"parse {name:<24} {r['file']:<58} {r['bytes'] / 1e6:6.2f} MB  "
            f"first {r['first_ms']:7.1f} ms  median {r['median_ms']:7.1f} ms"
        )
    if resample:
        print(
            f"resample {resample['file']} ({resample['segments']} segments) into "
            f"{resample['slots']} slots: median {resample['median_ms']:.1f} ms"
        )
    for kind, r in synthetic.items():
        print(f"synthetic {kind:<12} 1 h: median {r['median_ms']:.1f} ms")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
