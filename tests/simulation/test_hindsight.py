"""The hindsight bound curve E*(L): hand values on the tiny system, monotone in L, below every
simulated run at its latency, above p* (its time average is a stationary point), and a clear
answer below the least feasible latency."""

from __future__ import annotations

import math

import numpy as np
import pytest
from tiny_system import tiny_system

from controller.lyapunov import LyapunovConfig, LyapunovController
from simulation.baselines import make_policy
from simulation.bounds import StationaryBound
from simulation.experiment import Experiment, build_scenario
from simulation.hindsight import HindsightBound, compute_vertices, latency_grid_s
from simulation.simulator import simulate


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_system(tmp_path_factory.mktemp("tiny-hindsight"))


def _camera(seconds: float, fps: float = 10.0, offset_s: float = 0.05) -> np.ndarray:
    return np.arange(0.0, seconds, 1.0 / fps) + offset_s


def test_hull_keeps_only_cheapest_vertices(tiny):
    # idle 0.16 J a slot (1.6 W). mid: (2.5 heads, 0.4 J) at 0.5 GHz lies above the chord from
    # idle to (5, 0.6) at 1 GHz (0.38 J at 2.5 heads: racing to idle wins); out: (1, 0.4) lies
    # above the chord from idle to (2, 0.6) (0.38 at one head). Both slow levels are pruned
    cut, heads, energy, e0 = compute_vertices(tiny)
    assert e0 == pytest.approx(0.16)
    got = sorted(zip(cut.tolist(), heads.round(9).tolist(), energy.round(9).tolist()))
    assert got == [(1, 5.0, 0.6), (2, 2.0, 0.6)]


def test_hand_values_on_the_tiny_system(tiny):
    # 10 Mbit/s: sending every input costs 0.04 J of radio on top of 0.16 J idle a frame, and it
    # is also the fastest path: 200 kbit / 10 Mbit/s + RTT 20 ms + tail 5 ms + 0.8 ms result
    hb = HindsightBound(tiny, np.full(100, 1e7), _camera(10.0), serve_fraction=1.0)
    assert hb.problem.is_dpp()
    assert hb.least_latency_s() == pytest.approx(0.0458, rel=1e-4)
    for L in (0.05, 0.2, 2.0):
        assert hb.solve(L).e_star_j_per_frame == pytest.approx(0.2, rel=1e-5)
    # 1 Mbit/s: the fastest frame runs locally at 1 GHz (50 ms): half a slot at 6 W and half idle
    # at 1.6 W = 0.38 J. With time, racing mid heads at 1 GHz reaches p* = 0.292 J (test_bounds)
    hb = HindsightBound(tiny, np.full(100, 1e6), _camera(10.0), serve_fraction=1.0)
    assert hb.least_latency_s() == pytest.approx(0.05, rel=1e-4)
    assert hb.solve(0.05).e_star_j_per_frame == pytest.approx(0.38, rel=1e-5)
    p_star = StationaryBound(tiny, tangents=16).solve(np.full(100, 1e6), 10.0).p_star_j_per_frame
    assert p_star == pytest.approx(0.292, rel=1e-6)
    assert hb.solve(5.0).e_star_j_per_frame == pytest.approx(p_star, rel=1e-4)


def test_infeasible_latency_is_nan_not_a_crash(tiny):
    hb = HindsightBound(tiny, np.full(50, 1e6), _camera(5.0), serve_fraction=1.0)
    pt = hb.solve(0.01)
    assert not pt.feasible and math.isnan(pt.e_star_j_per_frame)
    assert "infeasible" in pt.status
    with pytest.raises(ValueError, match="latency_s"):
        hb.solve(-1.0)


def test_bad_input_names_the_field(tiny):
    with pytest.raises(ValueError, match="serve_fraction"):
        HindsightBound(tiny, np.full(10, 1e6), _camera(1.0), serve_fraction=0.0)
    with pytest.raises(ValueError, match="capacity_bps"):
        HindsightBound(tiny, np.array([1e6, -1.0]), _camera(0.2))
    with pytest.raises(ValueError, match="arrival_times_s"):
        HindsightBound(tiny, np.full(10, 1e6), np.array([5.0]))
    with pytest.raises(ValueError, match="latency range"):
        latency_grid_s(0.0, 1.0)


@pytest.fixture(scope="module")
def short_runs(tx2_resnet50):
    """45 s of the default setup (synthetic LTE): baselines and the controller at several V."""
    sc = build_scenario(Experiment(duration_s=45.0, seed=5))
    s = sc.system
    policies = [make_policy(name, s) for name in ("local", "edge", "neurosurgeon", "energy-greedy", "jointdnn")]
    policies += [LyapunovController(s, LyapunovConfig(V=V)) for V in (1.0, 30.0, 300.0)]
    runs = [simulate(s, pol, sc.capacity_bps, sc.arrival_times_s, time_decisions=False) for pol in policies]
    return sc, runs


def test_curve_is_below_every_run_and_non_increasing(short_runs):
    sc, runs = short_runs
    served = [r.summary["frames"]["completed"] / r.summary["frames"]["arrived"] for r in runs]
    hb = HindsightBound(sc.system, sc.capacity_bps, sc.arrival_times_s, serve_fraction=min(served) - 1e-9)
    lo = hb.least_latency_s()
    assert math.isfinite(lo) and lo > 0.0
    grid = latency_grid_s(lo * 1.001, 3.0, 8)
    curve = [p.e_star_j_per_frame for p in hb.curve(grid)]
    assert all(math.isfinite(v) for v in curve)
    assert all(b <= a * (1 + 1e-6) for a, b in zip(curve, curve[1:])), curve
    for r in runs:
        lat = r.summary["latency_ms"]["mean"] / 1e3
        energy = r.summary["energy_per_frame_j"]
        assert lat >= lo * (1 - 1e-6), (r.summary["policy"], lat, lo)
        bound = hb.solve(lat).e_star_j_per_frame
        assert bound <= energy * (1 + 1e-6), (r.summary["policy"], lat, bound, energy)


def test_large_latency_sits_at_or_above_p_star(short_runs):
    """Time-averaging a point of the hindsight LP gives a point of the stationary LP with the same
    energy per frame, so E*(L) >= p* of the load it serves at every L; with all frames served
    and a long budget it comes within a few per cent of p* of the offered load."""
    sc, _ = short_runs
    hb = HindsightBound(sc.system, sc.capacity_bps, sc.arrival_times_s, serve_fraction=1.0)
    far = hb.solve(30.0).e_star_j_per_frame
    rate = len(sc.arrival_times_s) / (len(sc.capacity_bps) * sc.system.slot_s)
    p_star = StationaryBound(sc.system).solve(sc.capacity_bps, rate).p_star_j_per_frame
    assert far >= p_star * (1 - 2e-3)
    assert far <= p_star * 1.15  # 45 s: the order of the capacities still costs (p* ignores it)


def test_sweep_hindsight_cli_writes_and_draws_the_curve(tmp_path):
    import csv

    from test_sweep import cutedge

    out = tmp_path / "sw"
    r = cutedge("sweep", "--duration", "20", "--V", "1,100", "--policies", "cutedge,local", "--workers", "2",
                "--out", str(out), "--quiet", "--hindsight", timeout=600)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(open(out / "hindsight.csv")))
    assert {"trace", "latency_ms", "e_star_j_per_frame"} <= set(rows[0])
    sweep_rows = list(csv.DictReader(open(out / "sweep.csv")))
    for trace in {s["trace"] for s in sweep_rows}:
        mine = [h for h in rows if h["trace"] == trace]
        assert len(mine) >= 8
        lat = [float(h["latency_ms"]) for h in mine]
        ctl = [float(s["latency_ms_mean"]) for s in sweep_rows if s["trace"] == trace and s["policy"] == "cutedge"]
        assert min(lat) <= min(ctl) and max(lat) >= max(ctl)  # spans the controller's curve
        vals = [float(h["e_star_j_per_frame"]) for h in mine if h["e_star_j_per_frame"]]
        assert vals and all(b <= a * (1 + 1e-6) for a, b in zip(vals, vals[1:]))
    assert (out / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"
    (out / "tradeoff.png").unlink()
    r = cutedge("plot", str(out))
    assert r.returncode == 0, r.stderr
    assert (out / "tradeoff.png").exists()
