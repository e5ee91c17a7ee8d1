"""The stationary LP bound: hand values, validity against every policy, and the controller's
approach to it as V grows."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from tiny_system import tiny_system

from controller.lyapunov import LyapunovConfig
from simulation.baselines import V_POLICIES, controller_config, make_policy, static_best
from simulation.batchsim import Lane, Schedule, simulate_batch
from simulation.bounds import (
    StationaryBound,
    capacity_states,
    heads_progress,
    radio_dual,
    slot_radio_energy_j,
)
from simulation.experiment import Experiment, TraceSpec, build_scenario


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_system(tmp_path_factory.mktemp("tiny-bound"))


def test_hand_values_on_the_tiny_system(tiny):
    lp = StationaryBound(tiny, tangents=16)
    assert lp.problem.is_dpp()
    # 10 Mbit/s, 10 fps: idle at 0.5 GHz (1.6 W) and send every input (200 kbit at 1e-7 + 1/1e7
    # = 2e-7 J/bit: 0.04 J a frame) -> 1.6 + 10*0.04 = 2.0 W
    r = lp.solve(np.full(200, 1e7), 10.0)
    assert r.feasible and r.p_star_w == pytest.approx(2.0, rel=1e-6)
    assert r.mix["input"] == pytest.approx(1.0)
    # 1 Mbit/s: the input cut needs 2 Mbit/s (and its frames cost 0.22 J of radio each). Mid at
    # 0.5 GHz would cost 0.16 J idle + 0.04*(4 - 1.6) = 0.096 J compute + 40 kbit*1.1e-6 = 0.044 J
    # radio = 0.30 J a slot. Better: race to idle. At 1 GHz a mid head takes 20 ms, so 5 heads fit
    # in one slot: run them at 1 GHz in a fifth of the slots (idle 2.2 W there, 1.6 W elsewhere)
    # at 0.02*(6 - 2.2) = 0.076 J each: 0.2*0.22 + 0.8*0.16 + 0.076 + 0.044 = 0.292 J a slot
    r = lp.solve(np.full(200, 1e6), 10.0)
    assert r.p_star_w == pytest.approx(2.92, rel=1e-6)
    assert r.mix["mid"] == pytest.approx(1.0)
    assert r.p_star_j_per_frame == pytest.approx(0.292, rel=1e-6)
    # a throughput floor above the offered load raises the bound; a budget below p* is infeasible
    assert StationaryBound(tiny, throughput_floor_fps=12.0).solve(np.full(200, 1e6), 10.0).p_star_w > 2.92
    assert not StationaryBound(tiny, energy_budget_w=2.5).solve(np.full(200, 1e6), 10.0).feasible


def test_radio_tangents_lie_below_the_cost(tx2_resnet50):
    """Every dual line L(nu) + nu*B is below the least radio energy for B bits a slot."""
    rng = np.random.default_rng(2)
    s = tx2_resnet50
    caps = rng.choice([0.0, 1e6, 5e6, 2e7, 8e7, 4e8], size=300) * rng.uniform(0.5, 1.5, 300)
    prob, cap = capacity_states(caps)
    for nu in (1e-9, 3e-8, 1e-7, 1e-6):
        L, B_nu = radio_dual(s, prob, cap, nu)
        for _ in range(30):  # any feasible split of bits over the states costs at least the line
            b = rng.uniform(0, 1, len(cap)) * cap * s.slot_s
            cost = float(np.sum(prob * slot_radio_energy_j(s, b, np.where(cap > 0, cap, 1.0))))
            assert cost >= L + nu * float(np.sum(prob * b)) - 1e-12
    # more tangents: a tighter (larger) bound that converges
    sc_caps = caps
    vals = [StationaryBound(s, tangents=j).solve(sc_caps, 10.0).p_star_w for j in (4, 16, 64, 256)]
    assert all(b >= a - 1e-9 for a, b in zip(vals, vals[1:]))
    assert vals[-1] - vals[-2] < 0.01 * vals[-1]


def test_quantile_bins_are_a_coarser_valid_bound(tx2_resnet50):
    sc = build_scenario(Experiment(duration_s=300, seed=2))
    exact = StationaryBound(tx2_resnet50).solve(sc.capacity_bps, 10.0).p_star_w
    coarse = [StationaryBound(tx2_resnet50, bins=b).solve(sc.capacity_bps, 10.0).p_star_w for b in (8, 64, 512)]
    assert all(c <= exact + 1e-9 for c in coarse)
    assert coarse[0] <= coarse[1] + 1e-9 <= coarse[2] + 2e-9
    pi, cap = capacity_states(np.array([1.0, 5.0, 3.0]), bins=5)
    assert pi.sum() == pytest.approx(1.0) and cap.max() == 5.0


def test_dpp_resolve_matches_a_fresh_problem(tx2_resnet50):
    lp = StationaryBound(tx2_resnet50)
    runs = [build_scenario(Experiment(duration_s=120, seed=k, trace=TraceSpec(path=p)))
            for k, p in ((1, "synthetic:markov-lte"), (2, "synthetic:5g-mmwave"), (3, "synthetic:wifi"))]
    for sc in runs:
        again = lp.solve(sc.capacity_bps, 10.0).p_star_w
        fresh = StationaryBound(tx2_resnet50).solve(sc.capacity_bps, 10.0).p_star_w
        assert again == pytest.approx(fresh, rel=1e-7)


@pytest.mark.parametrize("network", ["lte-shannon", "lte-linear"])
def test_bound_is_below_every_policy_at_its_served_load(network):
    """Each run, put into the LP with the load it actually served, is a feasible point: its
    average power is at or above p* (unserved backlog accounted for)."""
    exp = Experiment(duration_s=240.0, seed=7, network=network, controller=LyapunovConfig(throughput_floor_fps=9.5))
    sc = build_scenario(exp)
    s = sc.system
    lp = StationaryBound(s, throughput_floor_fps=None)
    st = static_best(s, sc.capacity_bps, sc.arrival_times_s, buffer_frames=exp.buffer_frames)
    n = exp.n_slots
    per_slot = np.bincount((sc.arrival_times_s // s.slot_s).astype(int), minlength=n)[:n]
    lanes = []
    for name in V_POLICIES:
        for V in (0.5, 20.0, 2000.0):
            lanes.append(Lane(name, controller_config(name, exp.controller, V, st.cut), sc.capacity_bps, sc.arrival_times_s))
    for name in ("local", "edge", "neurosurgeon", "energy-greedy", "jointdnn"):
        c, lv = make_policy(name, s).schedule(sc.capacity_bps, per_slot)
        lanes.append(Lane(name, Schedule(name, c, lv), sc.capacity_bps, sc.arrival_times_s))
    results = simulate_batch(s, lanes, buffer_frames=exp.buffer_frames) + [st.result]
    full = lp.solve(sc.capacity_bps, len(sc.arrival_times_s) / exp.duration_s).p_star_w
    for lane, r in zip(lanes + [None], results):
        served = lp.solve_served(r)
        assert served.feasible
        power = r.summary["avg_power_w"]
        assert power >= served.p_star_w * (1 - 1e-6), (lane and lane.name, power, served.p_star_w)
        # the served load is what the run did: its heads' progress covers every completed frame
        assert heads_progress(s, r.slots).sum() >= r.summary["frames"]["completed"] - 1e-6
        if r.summary["frames"]["completed"] >= 0.999 * r.summary["frames"]["arrived"]:
            assert power >= full * 0.995  # serving everything: above the full-load bound too


@pytest.fixture(scope="module")
def long_run():
    """20 minutes of the default setup on the synthetic LTE trace, with p* for its offered load."""
    sc = build_scenario(Experiment(duration_s=1200.0, seed=3, buffer_frames=1000))
    lp = StationaryBound(sc.system)
    p = lp.solve(sc.capacity_bps, len(sc.arrival_times_s) / 1200.0)
    return sc, p


def _gaps(sc, p, cfg: LyapunovConfig, Vs):
    lanes = [Lane(f"V={V:g}", replace(cfg, V=V), sc.capacity_bps, sc.arrival_times_s) for V in Vs]
    out = []
    for V, r in zip(Vs, simulate_batch(sc.system, lanes, buffer_frames=1000)):
        fr = r.summary["frames"]
        out.append((V, r.summary["avg_power_w"] / p.p_star_w - 1.0, fr["completed"] / fr["arrived"]))
    return out


@pytest.mark.parametrize(
    "cfg",
    [LyapunovConfig(), LyapunovConfig(multipliers=False, latency_weight_per_s=0.0)],
    ids=["default", "textbook"],
)
def test_controller_approaches_p_star_as_V_grows(long_run, cfg):
    """Drift-plus-penalty (Neely): the time-average power comes within O(1/V) of p*; the gap
    shrinks with V for as long as the backlog still drains within the run. The product default
    (multipliers, latency terms) and the textbook objective (neither) both."""
    sc, p = long_run
    gaps = _gaps(sc, p, cfg, [10.0, 30.0, 100.0, 300.0, 1000.0])
    draining = [(V, g) for V, g, served in gaps if served > 0.98]
    assert len(draining) >= 4
    assert all(b < a for (_, a), (_, b) in zip(draining, draining[1:])), gaps
    assert min(g for _, g in draining) < 0.05, gaps
    assert all(g > -0.005 for _, g in draining)  # never below the bound while serving the load
