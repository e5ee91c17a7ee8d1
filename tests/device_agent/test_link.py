"""The device's uplink (paced FIFO shaped by a trace) and its bandwidth estimator."""

from __future__ import annotations

import random

import numpy as np
import pytest

from device_agent.link import BandwidthEstimator, CapacityCurve, Message, Uplink
from simulation.traces import load_trace


def _steps(rates_bps, step_s=1.0) -> CapacityCurve:
    rates = np.asarray(rates_bps, dtype=float)
    return CapacityCurve(np.arange(len(rates) + 1) * step_s, rates)


def test_paced_message_leaves_at_the_pacing_rate_below_capacity():
    link = Uplink(_steps([10e6, 10e6]))
    link.set_rate(2e6, 0.0)
    link.push(Message(1e6, "a", 0.0))
    assert link.advance(0.4) == []
    (msg, t_dep, paced), = link.advance(1.0)
    assert t_dep == pytest.approx(0.5, abs=1e-6)
    assert paced and msg.active_s == pytest.approx(0.5, abs=1e-6)


def test_link_bound_message_follows_the_trace_and_is_a_capacity_sample():
    # 1 Mbit/s for a second, then 4 Mbit/s: 3 Mbit paced at 100 Mbit/s leave at 1.5 s
    link = Uplink(_steps([1e6, 4e6]))
    link.set_rate(100e6, 0.0)
    link.push(Message(3e6, "a", 0.0))
    (msg, t_dep, paced), = link.advance(3.0)
    assert t_dep == pytest.approx(1.5, abs=1e-6)
    assert not paced
    assert msg.bits / msg.active_s == pytest.approx(2e6, rel=1e-6)


def test_unpaced_probe_goes_at_link_speed_even_at_rate_zero():
    link = Uplink(_steps([8e6]))
    link.set_rate(0.0, 0.0)
    link.push(Message(1e6, "held", 0.0))
    link.push(Message(8e5, "probe", 0.0, unpaced=True))
    # FIFO: the probe waits behind a message paced at 0 ...
    assert link.advance(1.0) == []
    link.drain()
    link.push(Message(8e5, "probe", 1.0, unpaced=True))
    (msg, t_dep, paced), = link.advance(2.0)
    assert msg.payload == "probe" and not paced
    assert t_dep == pytest.approx(1.1, abs=1e-6)


def test_unshaped_link_paces_only():
    link = Uplink(None)
    link.set_rate(1e6, 0.0)
    link.push(Message(5e5, "a", 0.0))
    link.push(Message(1e3, "p", 0.0, unpaced=True))
    out = link.advance(1.0)
    assert [m.payload for m, _, _ in out] == ["a", "p"]
    assert out[0][1] == pytest.approx(0.5, abs=1e-6)
    assert out[1][1] == pytest.approx(0.5, abs=1e-6)  # a probe leaves at once behind it


def test_message_does_not_use_capacity_from_before_it_was_queued():
    link = Uplink(_steps([1e6] * 10))
    link.set_rate(1e9, 0.0)
    link.advance(2.0)
    link.push(Message(1e6, "a", 5.0))
    (msg, t_dep, _), = link.advance(9.0)
    assert t_dep == pytest.approx(6.0, abs=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_no_message_is_lost_or_duplicated_whatever_the_call_order(seed, traces_dir):
    """Pushes, rate changes (which advance the link too) and advances in random order: every
    message leaves exactly once, in FIFO order, or is still queued."""
    trace = load_trace(traces_dir / "mahimahi" / "TMobile-LTE-short.up", scale=4)
    link = Uplink(CapacityCurve.from_trace(trace, 0.1))
    rng = random.Random(seed)
    now, pushed, left = 0.0, 0, []
    for _ in range(5000):
        now += rng.choice([0.0, 0.0005, 0.002, 0.01])
        r = rng.random()
        if r < 0.05:
            link.push(Message(rng.choice([393216.0, 1000.0]), pushed, now, unpaced=rng.random() < 0.1))
            pushed += 1
        elif r < 0.1:
            link.set_rate(rng.choice([0.0, 1e6, 5e6, 50e6]), now)
        else:
            left += [m.payload for m, _, _ in link.advance(now)]
    still = [m.payload for m in link.queue]
    assert left + still == list(range(pushed))
    assert pushed > 100


def test_drain_returns_messages_that_left_during_a_rate_change():
    link = Uplink(_steps([1e6]))
    link.set_rate(1e9, 0.0)
    link.push(Message(1e5, "a", 0.0))
    link.set_rate(0.0, 1.0)  # "a" left at 0.1 s, inside this call
    assert [m.payload for m in link.drain()] == ["a"]
    assert link.advance(2.0) == []


def test_from_trace_keeps_the_volume_and_averages_packets_per_slot(traces_dir):
    trace = load_trace(traces_dir / "mahimahi" / "TMobile-LTE-short.up")
    curve = CapacityCurve.from_trace(trace, 0.1)
    assert curve.volume == pytest.approx(trace.volume_bits, rel=1e-3)
    assert np.allclose(np.diff(curve.edges), 0.1)
    assert curve.bits_until(curve.duration + 1.0) == pytest.approx(curve.volume + curve.bits_until(1.0))


def test_estimator_follows_link_samples_and_censored_samples_only_probe_up():
    est = BandwidthEstimator(5e6, alpha=0.5, probe=1.25)
    est.add(1e6, 0.1, paced=False)  # 10 Mbit/s measured
    assert est.estimate_bps == pytest.approx(7.5e6)
    est.add(1e5, 0.1, paced=True)  # 1 Mbit/s while pacing bound: says nothing about capacity
    assert est.estimate_bps == pytest.approx(7.5e6)
    est.add(1e6, 0.1, paced=True)  # 10 Mbit/s paced: capacity >= 10
    assert est.estimate_bps == pytest.approx(10e6)
    est.add(0.95e6, 0.1, paced=True)  # pacing near the estimate: probe 25 % above it
    assert est.estimate_bps == pytest.approx(11.875e6)
    with pytest.raises(ValueError, match="initial_bps"):
        BandwidthEstimator(0.0)
