"""Online calibration: robust head-time estimates, the power fit, the structure fill, drift
events, exploration, and a calibrating controller against a world its tables do not match."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from controller.calibration import CalibratingController, CalibrationConfig, Calibrator
from controller.lyapunov import LyapunovController
from controller.model import SystemModel
from controller.policy import Outcome
from controller.profiles import load_board, load_model, load_network


@pytest.fixture(scope="module")
def system() -> SystemModel:
    return SystemModel.build(load_board("jetson-tx2"), load_model("resnet50"), load_network("lte-shannon"), 0.1,
                             input_bytes=3 * 224 * 224)


def head_slot(p, f, h, n=1, busy_w=10.0, idle_w=4.0, tau=0.1):
    busy = n * h
    return Outcome(0.0, n, 0.0, p, f, h, busy, busy * busy_w + (tau - busy) * idle_w)


def test_head_time_estimate_shrugs_off_warm_up_and_outliers(system):
    cal = Calibrator(system)
    p, f = system.n_cuts - 1, 3
    samples = [0.5, 0.02, 0.021] + [0.02 if i % 10 else 1.0 for i in range(60)]  # a warm-up, then 6 outliers
    for h in samples:
        cal.add(head_slot(p, f, h))
    assert cal.head_table()[p, f] == pytest.approx(0.02, rel=0.05)
    # a real change (the board slowed down) is followed, not clipped away
    for _ in range(60):
        cal.add(head_slot(p, f, 0.03))
    assert cal.head_table()[p, f] == pytest.approx(0.03, rel=0.03)


def test_pairs_never_run_follow_the_structure_of_the_measured_ones(system):
    # the truth: a cut's work times a level's speed; the start tables: every entry off at random
    P, F = system.head_s.shape
    rng = np.random.default_rng(3)
    truth = system.head_s
    start = replace(system, head_s=truth * rng.uniform(0.7, 1.3, truth.shape))
    cal = Calibrator(start)
    measured = [(p, F - 1) for p in range(1, P)] + [(P - 1, f) for f in range(F)]
    for p, f in measured:
        for _ in range(3):
            cal.add(head_slot(p, f, truth[p, f]))
    est = cal.head_table()
    unmeasured = [(p, f) for p in range(1, P) for f in range(F) if (p, f) not in measured]
    err = max(abs(est[p, f] / truth[p, f] - 1) for p, f in unmeasured)
    assert err < 0.01  # the fitted structure, not the start table's 30 % noise
    assert np.all(est[0] == 0)  # the input cut runs no head


def test_power_fit_recovers_busy_and_idle_power_per_level(system):
    rng = np.random.default_rng(0)
    true_busy = system.busy_w * 1.15
    true_idle = system.idle_w * 0.9
    cal = Calibrator(system)
    tau = system.slot_s
    for _ in range(400):
        f = int(rng.integers(system.n_levels))
        x = float(rng.uniform(0, tau))
        e = tau * true_idle[f] + x * (true_busy[f] - true_idle[f])
        cal.add(Outcome(e, 0, 0.0, 0, f, math.nan, x, e * (1 + rng.normal(0, 0.002))))
    busy, idle = cal.power_tables()
    np.testing.assert_allclose(busy, true_busy, rtol=0.02)
    np.testing.assert_allclose(idle, true_idle, rtol=0.02)


def test_a_slowdown_is_one_drift_event(system):
    cal = Calibrator(system, CalibrationConfig(drift_s=2.0))
    p, f = system.n_cuts - 1, system.n_levels - 1
    for _ in range(100):  # 10 s of heads 40 % slower than the tables
        cal.add(head_slot(p, f, system.head_s[p, f] * 1.4))
    assert len(cal.events) == 1 and "1.40x" in cal.events[0][1] and "slower" in cal.events[0][1]


def test_retable_keeps_the_controller_state(system):
    """Refreshing the tables with the same values changes nothing: queues, multipliers and
    estimates carry over (a controller rebuilt from scratch would decide differently)."""
    from simulation.simulator import simulate
    from simulation.traces import load_trace

    caps, _ = load_trace("synthetic:markov-lte", seed=2, duration_s=30).resample(0.1, 300)
    arrivals = np.arange(300) / 10.0

    class Retabling(LyapunovController):
        def observe(self, outcome):
            super().observe(outcome)
            self.retable(self.system)

    a = simulate(system, LyapunovController(system), caps, arrivals, time_decisions=False)
    b = simulate(system, Retabling(system), caps, arrivals, time_decisions=False)
    for k in ("cut", "level", "rate_bps", "heads_done"):
        np.testing.assert_array_equal(a.slots[k], b.slots[k])


def test_calibrating_controller_catches_up_with_a_world_its_tables_miss(system):
    from simulation.simulator import simulate
    from simulation.traces import load_trace

    n = 900
    caps, _ = load_trace("synthetic:markov-lte", seed=1, duration_s=n / 10).resample(0.1, n)
    arrivals = np.arange(n) / 10.0
    rng = np.random.default_rng(5)
    wrong = replace(system, head_s=system.head_s * rng.uniform(0.7, 1.3, system.head_s.shape),
                    busy_w=system.busy_w * rng.uniform(0.75, 1.25, system.n_levels),
                    idle_w=system.idle_w * rng.uniform(0.75, 0.9, system.n_levels))
    ref = simulate(system, LyapunovController(system), caps, arrivals, time_decisions=False)
    cal_policy = CalibratingController(LyapunovController(wrong))
    cal = simulate(system, cal_policy, caps, arrivals, time_decisions=False)
    plain = simulate(system, LyapunovController(wrong), caps, arrivals, time_decisions=False)

    def epf(r):
        s = r.slots
        return s["energy_j"][n // 2:].sum() / s["heads_done"][n // 2:].sum()

    gap_cal = epf(cal) / epf(ref) - 1
    gap_plain = epf(plain) / epf(ref) - 1
    assert gap_cal < 0.02 and gap_cal < gap_plain, (gap_cal, gap_plain)
    c = cal_policy.calibrator
    before, after = c.error(system, wrong), c.error(system)
    assert after["busy_w"] < 0.5 * before["busy_w"] and after["head_j"] < before["head_j"]
    ran = c.count >= 2  # the pairs the controller ran: their times are the world's
    assert ran.sum() >= 2
    np.testing.assert_allclose(c.head_table()[ran], system.head_s[ran], rtol=0.01)
    assert cal.summary["frames"]["completed"] >= 0.98 * n


def test_exploration_tries_the_unmeasured_neighbours_of_the_decision(system):
    from controller.policy import Observation

    pol = CalibratingController(LyapunovController(system), CalibrationConfig(explore_every=2))
    pol.reset()
    seen = []
    for t in range(400):
        d = pol.decide(Observation(t, 3.0, 0.0, 20e6, 1))
        seen.append(d)
        T = system.head_s[d.cut, d.level]
        n = 1 if d.process and T > 0 else 0
        pol.observe(Outcome(0.5, n, 0.0, d.cut, d.level, T if n else math.nan, n * T, 0.4))
    plain = LyapunovController(system)
    plain.reset()
    base = plain.decide(Observation(0, 3.0, 0.0, 20e6, 1))
    tried = {(d.cut, d.level) for d in seen}
    assert len(tried) > 1  # it left the decision, one slot in two at most
    assert all(abs(p - base.cut) <= 2 and abs(f - base.level) <= 2 for p, f in tried)
    cuts, levels = pol.calibrator.unmeasured()
    assert all(abs(f - base.level) > 1 for f in levels)  # every neighbouring level measured
