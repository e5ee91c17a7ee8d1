"""Time to trace, partition and verify ResNet-50 and GoogLeNet on the CPU (3x224x224).

``partition_s`` is one ``Partition(model, shape)``: torch.fx trace, shape pass (meta device),
live sets per position, FLOPs and the reduction; building the model is not part of it (it is
reported as ``build_s``). ``trace_s`` is the fx trace alone. The first partition of a process
pays one-off costs (imports, dispatcher warm-up), so ``partition_cold_s`` is reported beside the
median of the later runs. ``verify_s`` builds the head and tail of every offered cut and checks
``tail(*head(x)) == model(x)``; ``verify_all_s`` does the same for every candidate cut.

    python benchmarks/partition.py [--repeat 5] [--out benchmarks/results/partition.json]

Target: ``partition_s`` under 0.5 s per model.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from dnn_split.models import build_model  # noqa: E402
from dnn_split.partition import Partition, max_split_error, trace  # noqa: E402

MODELS = ("resnet50", "googlenet")
SHAPE = (3, 224, 224)
TARGET_S = 0.5


def bench(name: str, repeat: int) -> dict:
    t = time.perf_counter()
    model = build_model(name, announce=lambda line: None)
    build_s = time.perf_counter() - t

    t = time.perf_counter()
    part = Partition(model, SHAPE, name=name)
    cold_s = time.perf_counter() - t
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        part = Partition(model, SHAPE, name=name)
        runs.append(time.perf_counter() - t)
    traces = []
    for _ in range(repeat):
        t = time.perf_counter()
        trace(model, name)
        traces.append(time.perf_counter() - t)

    x = part.example_input()
    t = time.perf_counter()
    err = max_split_error(part, part.offered, x)
    verify_s = time.perf_counter() - t
    fresh = Partition(model, SHAPE, name=name)  # empty module caches
    t = time.perf_counter()
    err_all = max_split_error(fresh, fresh.cuts, x)
    verify_all_s = time.perf_counter() - t
    return {
        "input_shape": list(SHAPE),
        "build_s": round(build_s, 4),
        "trace_s": round(statistics.median(traces), 4),
        "partition_s": round(statistics.median(runs), 4),
        "partition_max_s": round(max(runs), 4),
        "partition_cold_s": round(cold_s, 4),
        "verify_s": round(verify_s, 4),
        "verify_all_s": round(verify_all_s, 4),
        "candidate_cuts": len(part.cuts),
        "offered_cuts": len(part.offered),
        "dropped_cuts": part.dropped,
        "max_abs_error_offered": err,
        "max_abs_error_all": err_all,
        "total_gflops": round(part.total_flops / 1e9, 4),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "partition.json")
    args = ap.parse_args(argv)
    results = {name: bench(name, args.repeat) for name in MODELS}
    cols = ("trace", "partition", "(cold)", "verify", "verify all")
    print(f"{'model':<10} " + " ".join(f"{c:>10}" for c in cols) + "  cuts")
    for name, r in results.items():
        keys = ("trace_s", "partition_s", "partition_cold_s", "verify_s", "verify_all_s")
        err = max(r["max_abs_error_offered"], r["max_abs_error_all"])
        print(
            f"{name:<10} "
            + " ".join(f"{r[k]:>9.3f}s" for k in keys)
            + f"  {r['offered_cuts']}/{r['candidate_cuts']} offered, max err {err:g}"
        )
    ok = all(r["partition_s"] < TARGET_S for r in results.values())
    print(f"target: partition under {TARGET_S} s per model: {'met' if ok else 'MISSED'}")
    doc = {
        "benchmark": "partition",
        "device": "cpu",
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": str(torch.__version__),
        "repeat": args.repeat,
        "target_partition_s": TARGET_S,
        "target_met": ok,
        "models": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
