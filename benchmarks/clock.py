"""How long the clock backends take to pin a level and to read power.

The live agent pins a clock and reads power every slot, so both must stay far below a slot
(tens of ms). This measures, per call, the sysfs backend on fake Jetson trees (the layouts of
``tests/device_agent/fake_sysfs.py``, with the fake kernel confirming ``cur_freq``), and NVML
where a GPU answers it. On a fake tree the figures are the backend's own cost (Python, file
I/O); on a board add the kernel's devfreq work and the clock's settling time.

    python benchmarks/clock.py [--repeat N]

Prints a table and writes ``benchmarks/results/clock.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "device_agent"))

from fake_sysfs import FakeKernel, make_tree  # noqa: E402

from device_agent.clock import BackendError, Capability  # noqa: E402
from device_agent.clock import sysfs as sysfs_mod  # noqa: E402
from device_agent.clock.sysfs import SysfsBackend  # noqa: E402

LAYOUTS = ("tx2-jp4", "xavier-nx-jp4", "orin-jp5", "orin-nano-jp6")


def timed_us(fn: Callable[[], object], repeat: int) -> dict[str, float]:
    """p50 / p95 / mean of ``repeat`` calls, in microseconds (after 10 warm-up calls)."""
    for _ in range(10):
        fn()
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1e6)
    samples.sort()
    return {
        "p50_us": round(samples[len(samples) // 2], 1),
        "p95_us": round(samples[int(len(samples) * 0.95) - 1], 1),
        "mean_us": round(statistics.fmean(samples), 1),
        "n": repeat,
    }


def tree_dir() -> str | None:
    """sysfs lives in memory: build the fake tree on tmpfs where there is one, so file-system
    journaling (ms per write on ext4) does not swamp what is measured."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def bench_sysfs(layout: str, repeat: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(dir=tree_dir()) as tmp:
        board = make_tree(tmp, layout)
        kernel = FakeKernel(board)
        real_store = sysfs_mod.store
        sysfs_mod.store = kernel.store  # the kernel's part of a store: validate, move cur_freq
        try:
            b = SysfsBackend(board.root, settle_s=0.5)
            lv = board.levels_hz
            cycle = iter(lv[i % len(lv)] for i in range(10**9))
            out = {
                "rails": len(b.rails),
                "rail_layout": board.layout.rail_layout,
                "pin": timed_us(lambda: b.pin(next(cycle)), repeat),
                "current_hz": timed_us(b.current_hz, repeat),
                "power_w": timed_us(b.power_w, repeat),
                "board_power_w": timed_us(b.board_power_w, repeat),
            }
            b.pin(lv[0])
            out["restore"] = timed_us(lambda: (b.pin(lv[0]), b.restore()), repeat // 4)
            meter = b.energy_meter(interval_s=0.001).start()
            time.sleep(1.0)
            meter.stop()
            out["energy_samples_per_s_at_1ms"] = round(meter.samples / max(meter.elapsed_s, 1e-9))
        finally:
            sysfs_mod.store = real_store
    return out


def bench_nvml(repeat: int) -> dict[str, object]:
    try:
        from device_agent.clock.nvml_backend import NvmlBackend

        b = NvmlBackend()
    except BackendError as exc:
        return {"available": False, "reason": str(exc)}
    out: dict[str, object] = {"available": True, "device": b.device}
    try:
        if Capability.POWER in b.capabilities:
            out["power_w"] = timed_us(b.power_w, repeat)
        if Capability.READ_CLOCK in b.capabilities:
            out["current_hz"] = timed_us(b.current_hz, repeat)
        if Capability.PIN in b.capabilities:
            lv = b.levels_hz()
            pick = iter(lv[-1 - (i % 2) * (len(lv) // 2)] for i in range(10**9))
            try:
                out["pin"] = timed_us(lambda: b.pin(next(pick)), max(repeat // 10, 20))
            except BackendError as exc:
                out["pin"] = {"error": str(exc)}
    finally:
        b.restore()
        b.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=400)
    args = ap.parse_args()
    logging.getLogger("device_agent").setLevel(logging.ERROR)

    results: dict[str, object] = {
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu": platform.processor(),
        },
        "note": "sysfs: fake trees on "
        + (tree_dir() or tempfile.gettempdir())
        + "; pin includes the fake "
        "kernel's store (validate, move cur_freq): the backend's own cost plus a little, "
        "no real clock change",
        "sysfs": {layout: bench_sysfs(layout, args.repeat) for layout in LAYOUTS},
        "nvml": bench_nvml(args.repeat),
    }
    print(
        f"{'sysfs layout':<16}{'rails':>6}{'pin p50/p95 us':>18}{'restore p50':>13}"
        f"{'power p50/p95 us':>19}{'cur p50 us':>12}{'meter Hz@1ms':>14}"
    )
    for layout, r in results["sysfs"].items():
        pin, power = r["pin"], r["power_w"]
        print(
            f"{layout:<16}{r['rails']:>6}{pin['p50_us']:>10.0f}/{pin['p95_us']:<7.0f}"
            f"{r['restore']['p50_us']:>13.0f}{power['p50_us']:>11.0f}/{power['p95_us']:<7.0f}"
            f"{r['current_hz']['p50_us']:>12.0f}{r['energy_samples_per_s_at_1ms']:>14}"
        )
    nv = results["nvml"]
    if nv.get("available"):
        print(
            f"nvml {nv['device']}: "
            + ", ".join(
                f"{k} p50 {v['p50_us']:.0f} us"
                for k, v in nv.items()
                if isinstance(v, dict) and "p50_us" in v
            )
        )
    else:
        print(f"nvml: not measured ({nv['reason']})")
    path = REPO / "benchmarks" / "results" / "clock.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
