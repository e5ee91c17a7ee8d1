"""The simulator: frames are conserved, per-frame times are consistent, timing checked by hand."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.lyapunov import LyapunovConfig, LyapunovController
from controller.model import SystemModel
from controller.policy import Decision
from controller.profiles import Cut, ModelProfile, load_board, load_network
from simulation.simulator import simulate


class Fixed:
    """A policy that always does the same thing (for hand-checked timing)."""

    name = "fixed"

    def __init__(self, cut, level, rate=None):
        self.cut, self.level, self.rate = cut, level, rate

    def reset(self):
        pass

    def decide(self, obs):
        rate = min(obs.capacity_bps, obs.queue_bits / 0.1) if self.rate is None else self.rate
        return Decision(self.cut, self.level, rate, True, True)

    def observe(self, outcome):
        pass


def two_cut_system(head_flops=4e9, input_bytes=100_000, network="lte-linear", board="jetson-tx2") -> SystemModel:
    cuts = (
        Cut("input", input_bytes, 1, 0.0, head_flops, 0.0, 0.004),
        Cut("output", 4000, 1, head_flops, 0.0, 0.0, 0.0),
    )
    return SystemModel.build(load_board(board), ModelProfile("two", (3, 8, 8), "float32", 4000, cuts), load_network(network), 0.1)


def test_local_timing_by_hand():
    system = two_cut_system()
    T = float(system.head_s[1, -1])  # local head at the top clock
    assert 0 < T < 0.1
    arrivals = np.array([0.05, 0.25])  # slots 0 and 2
    r = simulate(system, Fixed(cut=1, level=system.n_levels - 1), np.full(6, 1e7), arrivals)
    fr = r.frames
    # each frame joins the queue at the end of its slot, runs at the start of the next
    assert fr["head_done_s"] == pytest.approx([0.1 + T, 0.3 + T])
    assert fr["result_s"] == pytest.approx(fr["head_done_s"])  # local: the result is on the device
    s = r.summary
    assert s["frames"] == {"arrived": 2, "completed": 2, "dropped": 0, "in_flight": 0}
    # energy: two busy stretches of T at P_busy, idle power otherwise
    e = 2 * T * system.busy_w[-1] + (0.6 - 2 * T) * system.idle_w[-1]
    assert s["energy_j"] == pytest.approx(e)
    assert s["latency_ms"]["mean"] == pytest.approx(((0.1 + T - 0.05) + (0.3 + T - 0.25)) / 2 * 1e3)


def test_offload_timing_by_hand():
    system = two_cut_system(input_bytes=125_000)  # 1 Mbit a frame
    net = system.network
    arrivals = np.array([0.01])
    r = simulate(system, Fixed(cut=0, level=0), np.full(5, 4e6), arrivals)
    fr = r.frames
    # slot 1: cut 0 moves the frame to the uplink queue at once (its bits join at the slot's end)
    assert fr["head_done_s"][0] == pytest.approx(0.1)
    # slots 2 and 3 send 0.4 Mbit each at 4 Mbit/s; slot 4 has 0.2 Mbit left, and this policy
    # spreads it over the slot (rate = backlog / slot = 2 Mbit/s): the last bit leaves at 0.5 s
    assert fr["sent_s"][0] == pytest.approx(0.5)
    back = fr["sent_s"][0] + net.rtt_s + system.tail_s[0] + system.result_bits / net.downlink_bps
    assert fr["result_s"][0] == pytest.approx(back)
    assert list(r.slots["rate_bps"]) == pytest.approx([0, 0, 4e6, 4e6, 2e6])
    tx = 2 * (net.alpha_w_per_bps * 4e6 + net.beta_w) * 0.1 + (net.alpha_w_per_bps * 2e6 + net.beta_w) * 0.1
    assert r.summary["tx_energy_j"] == pytest.approx(tx)


def test_heads_longer_than_a_slot_still_finish():
    system = two_cut_system(head_flops=1e11, board="jetson-nano")  # seconds per frame
    T = float(system.head_s[1, 0])
    assert T > 1.0
    n_slots = int(np.ceil((T + 0.3) / 0.1)) + 2
    r = simulate(system, Fixed(cut=1, level=0), np.full(n_slots, 1e7), np.array([0.0]))
    assert r.frames["head_done_s"][0] == pytest.approx(0.1 + T)
    assert r.summary["frames"]["completed"] == 1


def test_buffer_overflow_is_counted_as_dropped():
    system = two_cut_system(head_flops=1e11, board="jetson-nano")
    arrivals = np.linspace(0, 0.99, 40)
    r = simulate(system, Fixed(cut=1, level=0), np.full(10, 1e7), arrivals, buffer_frames=5)
    f = r.summary["frames"]
    assert f["dropped"] == 35 and f["arrived"] == 40
    assert f["arrived"] == f["completed"] + f["dropped"] + f["in_flight"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    board=st.sampled_from(["jetson-tx2", "jetson-nano", "jetson-orin-nano", "jetson-xavier-nx"]),
    network=st.sampled_from(["lte-shannon", "lte-linear"]),
    n_cuts=st.integers(2, 8),
    fps=st.floats(0.5, 60.0),
    V=st.floats(0.0, 1e4),
    buffer=st.integers(1, 200),
    slot_s=st.sampled_from([0.02, 0.05, 0.1, 0.5]),
    budget=st.one_of(st.none(), st.floats(2.0, 15.0)),
)
def test_frames_are_conserved(seed, board, network, n_cuts, fps, V, buffer, slot_s, budget):
    rng = np.random.default_rng(seed)
    total = float(rng.uniform(1e8, 5e10))
    head = np.concatenate([[0.0], np.sort(rng.uniform(0, total, n_cuts - 2)), [total]])
    size = rng.integers(1000, 2_000_000, n_cuts)
    cuts = tuple(Cut(f"c{i}", int(size[i]), 1, float(head[i]), float(total - head[i]), 0.0, float((total - head[i]) / 1e13)) for i in range(n_cuts))
    system = SystemModel.build(load_board(board), ModelProfile("m", (3, 8, 8), "float32", 4000, cuts), load_network(network), slot_s)
    n_slots = int(rng.integers(20, 400))
    cap = rng.choice([0.0, 1e5, 1e6, 2e7, 1e8], size=n_slots)
    arrivals = np.sort(rng.uniform(0, n_slots * slot_s, size=rng.poisson(fps * n_slots * slot_s)))
    ctl = LyapunovController(system, LyapunovConfig(V=V, energy_budget_w=budget))
    r = simulate(system, ctl, cap, arrivals, buffer_frames=buffer, time_decisions=False)
    f = r.summary["frames"]
    assert f["arrived"] == len(arrivals)
    assert f["arrived"] == f["completed"] + f["dropped"] + f["in_flight"]
    assert min(f.values()) >= 0
    fr = r.frames
    done = fr["completed"]
    # causality for every completed frame
    assert np.all(fr["head_done_s"][done] >= fr["arrival_s"][done] - 1e-9)
    assert np.all(fr["sent_s"][done] >= fr["head_done_s"][done] - 1e-9)
    assert np.all(fr["tail_done_s"][done] >= fr["sent_s"][done] - 1e-9)
    assert np.all(fr["result_s"][done] >= fr["tail_done_s"][done] - 1e-9)
    assert np.all(fr["result_s"][done] <= n_slots * slot_s + 1e-9)
    # the uplink never sends more than capacity or than was queued
    s = r.slots
    assert np.all(s["sent_bits"] <= s["capacity_bps"] * slot_s * (1 + 1e-9) + 1e-6)
    assert np.all(s["sent_bits"] <= s["Qx_bits"] + 1e-6)
    assert np.all(s["Qc_frames"] <= buffer + 1e-9)
    assert np.isfinite(r.summary["energy_j"]) and r.summary["energy_j"] > 0
