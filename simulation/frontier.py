"""The frontier report: does the controller's curve reach each baseline, and how far from the bounds.

A sweep gives, per trace, one point (energy per frame, mean latency, throughput) per baseline and
one per V on the controller's curve. :func:`frontier_report` turns ``sweep.csv`` rows (and the
``bound.csv`` rows, and optionally the hindsight bound's rows) into the figures issue 11 asks of
the controller, per trace and overall:

- **reach**: a baseline point is *reached* when some V's run has energy per frame <= 1.01x, mean
  latency <= 1.02x and throughput >= 0.99x the baseline's. A point says nothing about a curve
  between its runs, so no interpolation: one run must do all three at once. When none does, the
  miss is the smallest *excess* over V of the worst of the three normalised ratios
  (``e/(1.01 e_b)``, ``l/(1.02 l_b)``, ``0.99 t_b/t``), minus 1, with the ratio that binds.
  Targets are the online baselines; ``static-best`` (which simulates every pair on the trace) and
  ``dvfs-only`` (the best static cut in hindsight) are reported beside them, not counted.
- **lowest latency**: the controller's lowest mean latency over V against the lowest of any
  online baseline (target: ratio <= 1.1).
- **p***: among the runs that keep up with the camera (throughput >= 0.99x the offered rate,
  frames arrived / run length), the one closest to the LP bound of the load it served
  (``gap_served_pct``; target <= 5 %), and, for information, the closest to p* of the offered
  load (``gap_pct``). A run that leaves frames unserved can sit below p* of the offered load; it
  does not keep up, so it is never picked.
- **E*(L)**: with hindsight rows, the controller's energy at latency L (linear in latency along
  its keeping-up runs sorted by latency; NaN outside them) over E*(L) (linear along the
  hindsight curve), minus 1, at energy-greedy's mean latency and at L = 1 s. Information only.

Runs that drop frames are left out on both sides: their mean latency counts only the frames that
got through. Seeds are averaged per (trace, policy, V) first; a group drops frames if any seed
does. Pure: rows in, a JSON-ready dict out (NaN where a figure does not exist).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from simulation.baselines import FIXED_POLICIES

HINDSIGHT_POLICIES = ("static-best", "dvfs-only")
"""Baselines that know the trace: reported, never a target."""

ONLINE_BASELINES = tuple(p for p in FIXED_POLICIES if p not in HINDSIGHT_POLICIES)
"""Baselines that decide from the past only: the controller's curve must reach each."""

E_STAR_AT_MS = 1000.0
"""The fixed latency at which the gap to E*(L) is reported (beside energy-greedy's latency)."""

_SLACK = 1e-9  # relative: a run exactly at a tolerance edge is within it whatever the rounding


@dataclass(frozen=True)
class Tolerances:
    """What "reaches" and "meets" mean; the defaults are issue 11's figures."""

    energy_ratio: float = 1.01  # controller energy per frame <= this x the baseline's
    latency_ratio: float = 1.02  # controller mean latency <= this x the baseline's
    throughput_ratio: float = 0.99  # controller throughput >= this x the baseline's
    lowest_latency_ratio: float = 1.1  # controller's lowest mean latency <= this x any baseline's
    keeps_up_ratio: float = 0.99  # a run keeps up with the camera: throughput >= this x offered
    p_star_gap_pct: float = 5.0  # a keeping-up run within this of p* of the load it served


@dataclass(frozen=True)
class _Point:
    """One (trace, policy, V), averaged over seeds."""

    policy: str
    V: float | None
    energy_j: float
    latency_ms: float
    throughput_fps: float
    offered_fps: float
    drops: bool
    seeds: int

    @property
    def finite(self) -> bool:
        return all(math.isfinite(x) for x in (self.energy_j, self.latency_ms, self.throughput_fps))

    @property
    def usable(self) -> bool:
        return self.finite and not self.drops


def _num(v) -> float:
    if v is None or v == "":
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _V(v) -> float | None:
    x = _num(v)
    return None if math.isnan(x) else x


def _mean(xs: Iterable[float]) -> float:
    a = np.asarray(list(xs), dtype=float)
    return float(np.mean(a)) if a.size else math.nan


def seed_groups(rows: Iterable[dict]) -> dict[tuple[str, str, float | None], list[dict]]:
    """sweep.csv rows grouped per (trace, policy, V): the seeds of one point, in row order (V a
    number, None for a baseline). The frontier report and the trade-off figure both average
    over these groups."""
    groups: dict[tuple[str, str, float | None], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["trace"], r["policy"], _V(r.get("V"))), []).append(r)
    return groups


def offered_fps(row: dict) -> float:
    """Frames that arrived per second of the run (NaN without a duration)."""
    d = _num(row.get("duration_s"))
    return _num(row.get("frames_arrived")) / d if d > 0 else math.nan


def _points(rows: Sequence[dict]) -> dict[tuple[str, float | None], _Point]:
    out = {}
    for (_, policy, V), g in seed_groups(rows).items():
        out[(policy, V)] = _Point(
            policy, V,
            energy_j=_mean(_num(r.get("energy_per_frame_j")) for r in g),
            latency_ms=_mean(_num(r.get("latency_ms_mean")) for r in g),
            throughput_fps=_mean(_num(r.get("throughput_fps")) for r in g),
            offered_fps=_mean(offered_fps(r) for r in g),
            drops=any(_num(r.get("frames_dropped")) > 0 for r in g),
            seeds=len({r.get("seed") for r in g}),
        )
    return out


def _ratio(a: float, b: float) -> float:
    if b > 0:
        return a / b
    return math.inf if a > 0 else 1.0


def _excess(c: _Point, b: _Point, tol: Tolerances) -> tuple[float, str]:
    """The worst normalised ratio of ``c`` against ``b`` (<= 1: reached) and which one it is."""
    parts = {
        "energy": _ratio(c.energy_j, tol.energy_ratio * b.energy_j),
        "latency": _ratio(c.latency_ms, tol.latency_ratio * b.latency_ms),
        "throughput": _ratio(tol.throughput_ratio * b.throughput_fps, c.throughput_fps),
    }
    worst = max(parts, key=parts.__getitem__)
    return parts[worst], worst


def _reach(b: _Point, curve: list[_Point], kind: str, tol: Tolerances) -> dict:
    entry = {
        "baseline": b.policy, "baseline_V": b.V, "kind": kind, "energy_per_frame_j": b.energy_j,
        "latency_ms": b.latency_ms, "throughput_fps": b.throughput_fps, "compared": False, "note": "",
        "reached": None, "V": None, "margin_pct": math.nan, "excess_pct": math.nan, "binds": None,
        "controller_energy_per_frame_j": math.nan, "controller_latency_ms": math.nan,
        "controller_throughput_fps": math.nan,
    }
    if b.drops:
        return {**entry, "note": "drops frames, not compared"}
    if not b.finite:
        return {**entry, "note": "no finite energy, latency or throughput, not compared"}
    if not curve:
        return {**entry, "note": "no controller run without drops"}
    scored = [(c, *_excess(c, b, tol)) for c in curve]
    hits = [c for c, s, _ in scored if s <= 1.0 + _SLACK]
    if hits:
        c = min(hits, key=lambda p: p.energy_j)
        entry.update(reached=True, margin_pct=100.0 * (_ratio(c.energy_j, b.energy_j) - 1.0))
    else:
        c, s, binds = min(scored, key=lambda t: t[1])
        entry.update(reached=False, excess_pct=100.0 * (s - 1.0), binds=binds)
    entry.update(compared=True, V=c.V, controller_energy_per_frame_j=c.energy_j, controller_latency_ms=c.latency_ms,
                 controller_throughput_fps=c.throughput_fps)
    return entry


def _along(x: float, xs: Sequence[float], ys: Sequence[float]) -> float:
    """y at x, linear between the points sorted by x; NaN outside them (or with no points)."""
    pts = sorted((a, b) for a, b in zip(xs, ys) if math.isfinite(a) and math.isfinite(b))
    if not pts or not math.isfinite(x) or x < pts[0][0] or x > pts[-1][0]:
        return math.nan
    # equal x (two V with the same latency): their mean, so the curve is a function of x
    merged: dict[float, list[float]] = {}
    for a, b in pts:
        merged.setdefault(a, []).append(b)
    return float(np.interp(x, list(merged), [float(np.mean(v)) for v in merged.values()]))


def _bound_gaps(bounds: Sequence[dict], trace: str, policy: str) -> dict[float, tuple[float, float]]:
    """Per V of ``policy``: (gap_served_pct, gap_pct), averaged over seeds."""
    groups: dict[float, list[dict]] = {}
    for b in bounds:
        if b.get("trace") == trace and b.get("policy") == policy and _V(b.get("V")) is not None:
            groups.setdefault(_V(b.get("V")), []).append(b)
    return {V: (_mean(_num(b.get("gap_served_pct")) for b in g), _mean(_num(b.get("gap_pct")) for b in g))
            for V, g in groups.items()}


def _best_gap(runs: list[_Point], gaps: dict, which: int) -> dict:
    scored = [(gaps[c.V][which], c) for c in runs if c.V in gaps and math.isfinite(gaps[c.V][which])]
    if not scored:
        return {"V": None, "gap_pct": math.nan, "latency_ms": math.nan, "throughput_fps": math.nan}
    g, c = min(scored, key=lambda t: t[0])
    return {"V": c.V, "gap_pct": g, "latency_ms": c.latency_ms, "throughput_fps": c.throughput_fps}


def _e_star(trace: str, hindsight: Sequence[dict], keeps: list[_Point], points: dict) -> list[dict]:
    hs = [h for h in hindsight if h.get("trace") == trace]
    if not hs:
        return []
    h_lat = [_num(h.get("latency_ms")) for h in hs]
    h_e = [_num(h.get("e_star_j_per_frame")) for h in hs]
    greedy = points.get(("energy-greedy", None))
    at = [("energy-greedy", greedy.latency_ms if greedy is not None else math.nan), ("1 s", E_STAR_AT_MS)]
    out = []
    for name, L in at:
        ce = _along(L, [c.latency_ms for c in keeps], [c.energy_j for c in keeps])
        es = _along(L, h_lat, h_e)
        gap = 100.0 * (ce / es - 1.0) if es > 0 and math.isfinite(ce) else math.nan
        out.append({"at": name, "latency_ms": L, "controller_energy_per_frame_j": ce, "e_star_j_per_frame": es,
                    "gap_pct": gap})
    return out


def _trace_report(trace: str, rows: list[dict], bounds: Sequence[dict], hindsight: Sequence[dict] | None, policy: str,
                  tol: Tolerances) -> dict:
    points = _points(rows)
    curve = sorted((p for p in points.values() if p.policy == policy and p.V is not None and p.usable),
                   key=lambda p: p.V)
    online = [_reach(p, curve, "online", tol) for (name, V), p in points.items() if name in ONLINE_BASELINES and V is None]
    hind = [_reach(p, curve, "hindsight", tol) for (name, V), p in points.items() if name in HINDSIGHT_POLICIES]
    hind.sort(key=lambda e: (HINDSIGHT_POLICIES.index(e["baseline"]), e["baseline_V"] or 0.0))

    fastest = min(curve, key=lambda p: p.latency_ms, default=None)
    rivals = [p for (name, V), p in points.items() if name in ONLINE_BASELINES and V is None and p.usable]
    quickest = min(rivals, key=lambda p: p.latency_ms, default=None)
    ratio = fastest.latency_ms / quickest.latency_ms if fastest and quickest and quickest.latency_ms > 0 else math.nan
    lowest = {
        "controller_ms": fastest.latency_ms if fastest else math.nan, "controller_V": fastest.V if fastest else None,
        "baseline_ms": quickest.latency_ms if quickest else math.nan, "baseline": quickest.policy if quickest else None,
        "ratio": ratio, "met": bool(ratio <= tol.lowest_latency_ratio * (1.0 + _SLACK)),
    }

    keeps = [p for p in curve if p.throughput_fps >= tol.keeps_up_ratio * p.offered_fps * (1.0 - _SLACK)]
    gaps = _bound_gaps(bounds, trace, policy)
    served, offered = _best_gap(keeps, gaps, 0), _best_gap(keeps, gaps, 1)
    p_star = {
        "keeping_up_runs": len(keeps), "served": served, "offered": offered,
        "met": bool(served["gap_pct"] <= tol.p_star_gap_pct * (1.0 + _SLACK)),
    }
    trace_bounds = [b for b in bounds if b.get("trace") == trace]
    offered_fps = _mean(p.offered_fps for p in points.values())
    checks = [e["reached"] for e in online if e["compared"]] + [lowest["met"], p_star["met"]]
    return {
        "trace": trace,
        "seeds": max((p.seeds for p in points.values()), default=0),
        "offered_fps": offered_fps,
        "p_star_j_per_frame": _mean(_num(b.get("p_star_j_per_frame")) for b in trace_bounds),
        "bound_status": next((str(b.get("status")) for b in trace_bounds), "no bound"),
        "baselines": online,
        "hindsight_baselines": hind,
        "lowest_latency": lowest,
        "p_star": p_star,
        "e_star": _e_star(trace, hindsight or [], keeps, points),
        "targets": len(checks),
        "targets_met": sum(bool(c) for c in checks),
        "met": all(checks),
    }


def frontier_report(
    rows: Sequence[dict],
    bounds: Sequence[dict],
    hindsight: Sequence[dict] | None = None,
    policy: str = "cutedge",
    tolerances: Tolerances = Tolerances(),
) -> dict:
    """Per trace of ``rows`` (sweep.csv rows): which baselines ``policy``'s curve reaches, its
    lowest latency, its closest keeping-up run to p* (from ``bounds``, bound.csv rows) and, with
    ``hindsight`` rows (trace, latency_ms, e_star_j_per_frame), its gap to E*(L).

    Returns ``{"policy", "tolerances", "traces": [...], "targets", "targets_met", "met"}``; each
    trace entry is described in docs/tradeoff.md ("Reading the frontier table"). Targets per
    trace: each compared online baseline reached, the lowest-latency ratio, the p* gap.
    """
    from simulation.scaling import single_device

    rows = [r for r in rows if single_device(r)]  # devices sharing an edge: simulation.scaling's report
    traces = []
    for trace in dict.fromkeys(r["trace"] for r in rows):
        traces.append(_trace_report(trace, [r for r in rows if r["trace"] == trace], bounds, hindsight, policy, tolerances))
    return {
        "policy": policy,
        "tolerances": asdict(tolerances),
        "traces": traces,
        "targets": sum(t["targets"] for t in traces),
        "targets_met": sum(t["targets_met"] for t in traces),
        "met": bool(traces) and all(t["met"] for t in traces),
    }


__all__ = ["E_STAR_AT_MS", "HINDSIGHT_POLICIES", "ONLINE_BASELINES", "Tolerances", "frontier_report", "offered_fps", "seed_groups"]
