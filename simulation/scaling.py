"""The many-devices report of a sweep: per trace, policy (x V) and device count N, what the
devices got from one shared edge (``simulation.edge``), and whether the edge stayed stable.

A run is **stable** when the edge's backlog at the end is no more than a second of work or no
more than 1.5x its mean over the run (a stable queue ends near its mean; one whose arrivals
exceed its service grows linearly, ending near twice its mean), and the devices kept up with
their cameras (throughput >= ``serve_fraction`` of the offered rate, no frame dropped).
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def stable(row: dict, serve_fraction: float = 0.99) -> bool:
    end, mean = _num(row.get("edge_end_backlog_s")), _num(row.get("edge_mean_backlog_s"))
    edge_ok = not math.isfinite(end) or end <= 1.0 or end <= 1.5 * mean
    arrived = _num(row["frames_arrived"])
    keeps_up = _num(row["frames_completed"]) >= serve_fraction * arrived and _num(row["frames_dropped"]) == 0
    return bool(edge_ok and keeps_up)


def single_device(row: dict) -> bool:
    """A run of one device whose edge is never a bottleneck (the frontier's and the bound's kind)."""
    n = _num(row.get("devices", 1))
    return (not math.isfinite(n) or n == 1) and not math.isfinite(_num(row.get("edge_utilisation")))


def has_devices(rows: Sequence[dict]) -> bool:
    return any(not single_device(r) for r in rows)


def devices_report(rows: Sequence[dict], serve_fraction: float = 0.99) -> dict:
    """{trace: [{policy, V, devices, energy_per_frame_j, latency_ms_mean, latency_ms_p95, throughput_fps,
    jain_fairness, edge_utilisation, edge_mean_backlog_s, frames_dropped, stable}]}, seeds averaged."""
    groups: dict[tuple, list[dict]] = {}
    for r in (r for r in rows if not single_device(r)):
        key = (r["trace"], r["policy"], _num(r.get("V")), int(_num(r.get("devices", 1)) or 1))
        groups.setdefault(key, []).append(r)
    out: dict[str, list[dict]] = {}
    for (trace, policy, V, n), rs in groups.items():
        def mean(k, rs=rs):
            vals = [_num(x.get(k)) for x in rs]
            vals = [v for v in vals if math.isfinite(v)]
            return sum(vals) / len(vals) if vals else math.nan
        out.setdefault(trace, []).append({
            "policy": policy, "V": V if math.isfinite(V) else None, "devices": n,
            "energy_per_frame_j": mean("energy_per_frame_j"), "latency_ms_mean": mean("latency_ms_mean"),
            "latency_ms_p95": mean("latency_ms_p95"), "throughput_fps": mean("throughput_fps"),
            "jain_fairness": mean("jain_fairness"), "edge_utilisation": mean("edge_utilisation"),
            "edge_mean_backlog_s": mean("edge_mean_backlog_s"), "frames_dropped": mean("frames_dropped"),
            "stable": all(stable(x, serve_fraction) for x in rs),
        })
    for entries in out.values():
        entries.sort(key=lambda e: (e["policy"], -1.0 if e["V"] is None else e["V"], e["devices"]))
    return out


def format_devices(report: dict) -> str:
    """The report as a table (100 columns)."""
    lines = ["devices sharing one edge: per policy and device count N, energy per frame (all devices), mean and",
             "p95 latency, throughput per device, Jain's fairness, edge utilisation, and whether the edge stayed stable"]
    for trace, entries in report.items():
        lines.append(trace)
        lines.append(f"  {'policy':<15} {'V':>6} {'N':>5} {'J/frame':>8} {'lat ms':>8} {'p95 ms':>8} {'fps/dev':>7} "
                     f"{'jain':>5} {'edge':>5}  stable")
        for e in entries:
            V = "-" if e["V"] is None else f"{e['V']:g}"
            util = e["edge_utilisation"]
            lines.append(
                f"  {e['policy']:<15} {V:>6} {e['devices']:>5} {e['energy_per_frame_j']:8.3f} {e['latency_ms_mean']:8.0f} "
                f"{e['latency_ms_p95']:8.0f} {e['throughput_fps']:7.2f} {e['jain_fairness']:5.2f} "
                f"{'-' if not math.isfinite(util) else f'{util:.2f}':>5}  {'yes' if e['stable'] else 'NO: grows'}"
            )
    return "\n".join(lines)
