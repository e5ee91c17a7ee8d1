"""Every baseline on the tiny hand-checkable system (tiny_system.py): the choice worked out by hand.

Shorthand below: head times T[cut][level] = input 0/0, mid 40/20 ms, out 100/50 ms; P_busy 4/6 W;
P_idle 1.6/2.2 W; bits: input 200 kbit, mid 40 kbit, out 0; radio J/bit at full rate on C:
1e-7 + 1/C; back = RTT 20 ms + result 0.8 ms = 20.8 ms.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from tiny_system import tiny_system

from controller.lyapunov import LyapunovConfig, LyapunovController
from controller.model import SystemModel
from controller.policy import Observation, check_policy
from controller.profiles import Cut, ModelProfile, load_board, load_network
from simulation.baselines import (
    BaselineOptions,
    CapacityEstimate,
    EdgeOnly,
    EnergyGreedy,
    JointDNN,
    LocalOnly,
    Neurosurgeon,
    controller_config,
    cut_latency_s,
    energy_per_frame_table,
    jointdnn_path,
    make_policy,
    parse_policies,
    static_best,
)
from simulation.simulator import simulate

INPUT, MID, OUT = 0, 1, 2
SLOW, FAST = 0, 1


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_system(tmp_path_factory.mktemp("tiny"))


def obs(t, capacity, arrivals=1, qc=0.0, qx=0.0):
    return Observation(t, qc, qx, capacity, arrivals)


def test_local_and_edge(tiny):
    # local: the last cut at the top clock; edge: the input cut, GPU parked at its least idle power
    assert LocalOnly(tiny).decide(obs(0, 1e7)).cut == OUT
    assert LocalOnly(tiny).decide(obs(0, 1e7)).level == FAST
    d = EdgeOnly(tiny).decide(obs(0, 1e7, qx=5e5))
    assert (d.cut, d.level) == (INPUT, SLOW)  # 1.6 W < 2.2 W idle
    # both send at full rate: min(C, Q_x/slot) = min(1e7, 5e5/0.1 = 5e6)
    assert d.rate_bps == pytest.approx(5e6)


def test_latency_table_by_hand(tiny):
    # at 10 Mbit/s, f = 1 GHz: input 0.02 + 0.005 + 0.0208 = 0.0458 s; mid 0.02 + 0.004 + 0.003 +
    # 0.0208 = 0.0478 s; out 0.05 s (nothing sent)
    assert cut_latency_s(tiny, 1e7, FAST) == pytest.approx([0.0458, 0.0478, 0.05])
    # at 8 Mbit/s: input 0.025 + 0.0258 = 0.0508; mid 0.02 + 0.005 + 0.0238 = 0.0488; out 0.05
    assert cut_latency_s(tiny, 8e6, FAST) == pytest.approx([0.0508, 0.0488, 0.05])


def test_neurosurgeon_uses_only_past_capacity(tiny):
    pol = Neurosurgeon(tiny, BaselineOptions(estimate_window=2))
    caps = [8e6, 8e6, 2e6, 2e6, 10e6, 10e6, 10e6]
    # estimate before slot t (harmonic mean of the last 2 past slots):
    #   t=0 none -> link taken as down -> out; t=1: 8 -> mid (0.0488 beats 0.05 and 0.0508);
    #   t=2: 8 -> mid; t=3: 2/(1/8+1/2) = 3.2 Mbit/s -> mid 0.02 + 0.0125 + 0.0238 = 0.0563 > out 0.05
    #   -> out; t=4: 2 -> out; t=5: 2/(1/2+1/10) = 3.33 -> mid 0.0558 > 0.05 -> out;
    #   t=6: 10 -> input 0.0458 < mid 0.0478 < out 0.05 -> input
    want = [OUT, MID, MID, OUT, OUT, OUT, INPUT]
    got = [pol.decide(obs(t, c)) for t, c in enumerate(caps)]
    assert [d.cut for d in got] == want
    assert {d.level for d in got} == {FAST}


def test_harmonic_mean_estimate():
    e = CapacityEstimate(3)
    assert e.value() is None
    for c in (1e6, 2e6, 4e6, 4e6):
        e.update(c)
    assert e.value() == pytest.approx(3 / (1 / 2e6 + 1 / 4e6 + 1 / 4e6))  # last three only
    e.update(0.0)
    assert e.value() == 0.0  # a dead slot in the window: the link was just down


def test_energy_greedy_by_hand(tiny):
    # energy per frame over one frame period P = 0.1 s (one frame a slot):
    # at 10 Mbit/s (2e-7 J/bit): input@0.5 GHz 0.1*1.6 + 200e3*2e-7 = 0.2; input@1 0.26;
    #   mid@0.5 0.04*4 + 0.06*1.6 + 40e3*2e-7 = 0.264; mid@1 0.12 + 0.08*2.2 + 0.008 = 0.304;
    #   out@0.5 0.4; out@1 0.05*6 + 0.05*2.2 = 0.41  -> (input, 0.5 GHz)
    table = energy_per_frame_table(tiny, 1e7, 0.1)
    assert table == pytest.approx(np.array([[0.2, 0.26], [0.264, 0.304], [0.4, 0.41]]))
    # at 1 Mbit/s (1.1e-6 J/bit): input@0.5 0.16 + 0.22 = 0.38; mid@0.5 0.256 + 0.044 = 0.3;
    #   mid@1 0.296 + 0.044 = 0.34; out@0.5 0.4 -> (mid, 0.5 GHz)
    pol = EnergyGreedy(tiny)
    pol.decide(obs(0, 1e7, arrivals=0))  # t=0: nothing known yet
    d = pol.decide(obs(1, 1e6, arrivals=1))  # estimate 10 Mbit/s, one frame a slot
    assert (d.cut, d.level) == (INPUT, SLOW)
    for t in range(2, 14):
        d = pol.decide(obs(t, 1e6, arrivals=1))
    assert (d.cut, d.level) == (MID, SLOW)  # the window now holds only 1 Mbit/s slots


def test_jointdnn_by_hand(tiny):
    # cost = energy + 2 J/s * latency at f = 1 GHz (6 W busy):
    # 10 Mbit/s: input 0.04 + 2*0.0458 = 0.1316; mid (0.12 + 0.008) + 2*0.0478 = 0.2236;
    #   out 0.3 + 2*0.05 = 0.4 -> input
    p = jointdnn_path(tiny, 1e7, FAST, 2.0)
    assert (p.cut, p.transfers) == (INPUT, 1)
    assert p.cost == pytest.approx(0.1316)
    # 1 Mbit/s: input 0.22 + 2*0.2258 = 0.6716; mid 0.164 + 2*0.0838 = 0.3316; out 0.4 -> mid
    p = jointdnn_path(tiny, 1e6, FAST, 2.0)
    assert p.cut == MID and p.cost == pytest.approx(0.3316)
    assert p.energy_j == pytest.approx(0.164) and p.latency_s == pytest.approx(0.0838)
    # 0.2 Mbit/s (5.1e-6 J/bit): mid 0.12 + 0.204 + 2*0.2438 = 0.8116 > out 0.4 -> out, no transfer
    p = jointdnn_path(tiny, 2e5, FAST, 2.0)
    assert (p.cut, p.transfers) == (OUT, 0)
    pol = JointDNN(tiny, BaselineOptions(estimate_window=1, jointdnn_latency_weight_j_per_s=2.0))
    pol.decide(obs(0, 1e6))
    assert pol.decide(obs(1, 1e6)).cut == MID


def test_jointdnn_path_is_the_best_cut_on_chains():
    """Without edge-to-device transfers the shortest path equals brute force over cuts."""
    rng = np.random.default_rng(11)
    board, net = load_board("jetson-tx2"), load_network("lte-shannon")
    for _ in range(60):
        n = int(rng.integers(2, 9))
        total = float(rng.uniform(1e9, 2e10))
        head = np.concatenate([[0.0], np.sort(rng.uniform(0, total, n - 2)), [total]])
        size = rng.integers(1000, 2_000_000, n)
        cuts = tuple(Cut(f"c{i}", int(size[i]), 1, float(head[i]), float(total - head[i]), 0.0,
                         float((total - head[i]) / 1e13)) for i in range(n))
        s = SystemModel.build(board, ModelProfile("m", (3, 8, 8), "float32", 4000, cuts), net, 0.1)
        cap = float(10 ** rng.uniform(5, 8))
        level = int(rng.integers(0, s.n_levels))
        beta = float(rng.uniform(0, 20))
        path = jointdnn_path(s, cap, level, beta)
        e_bit = float(net.max_power_w / cap)
        energy = s.head_s[:, level] * s.busy_w[level] + s.bits * e_bit
        latency = cut_latency_s(s, cap, level)
        brute = energy + beta * latency
        assert path.transfers <= 1
        assert path.cost == pytest.approx(brute.min(), rel=1e-9)
        assert brute[path.cut] == pytest.approx(brute.min(), rel=1e-9)
        # letting tensors come back can only help
        assert jointdnn_path(s, cap, level, beta, allow_return=True).cost <= path.cost + 1e-12


def test_static_best_by_hand(tiny):
    arrivals = np.arange(0.05, 60.0, 0.1)  # one frame a slot, 60 s
    # Baselines send what is queued at the start of a slot within the slot (rate = min(C, Q_x/slot),
    # the policy contract's cap), so 200 kbit go at 2 Mbit/s for the whole slot: (1e-7*2e6 + 1 W)
    # * 0.1 s = 0.12 J. 10 Mbit/s: (input, 0.5 GHz) 0.16 J idle + 0.12 = 0.28 J a frame; input@1 GHz
    # 0.22 + 0.12 = 0.34; mid@0.5 GHz 0.16 + 0.04*(4 - 1.6) + (0.04 + 1)*0.1 = 0.36; out@0.5 GHz 0.4
    st = static_best(tiny, np.full(600, 1e7), arrivals)
    assert (st.cut, st.level, st.serves) == (INPUT, SLOW, True)
    assert st.result.summary["energy_per_frame_j"] == pytest.approx(0.28, rel=0.01)
    # 1 Mbit/s: the input cut needs 2 Mbit/s and does not serve; (mid, 0.5 GHz) does, at 0.36 J a
    # frame (40 kbit at 0.4 Mbit/s for the whole slot: 0.104 J), out@0.5 GHz would cost 0.4 J
    st = static_best(tiny, np.full(600, 1e6), arrivals)
    assert (st.cut, st.level) == (MID, SLOW)
    assert st.result.summary["energy_per_frame_j"] == pytest.approx(0.36, rel=0.01)
    row = next(r for r in st.table if (r["cut"], r["level"]) == (INPUT, SLOW))
    assert not row["serves"]


def test_dvfs_only_and_ablations(tiny):
    st = static_best(tiny, np.full(300, 1e6), np.arange(0.05, 30.0, 0.1))
    dv = make_policy("dvfs-only", tiny, V=10.0, static=st)
    rng = np.random.default_rng(0)
    levels = set()
    for t in range(300):
        d = dv.decide(obs(t, float(rng.uniform(1e5, 1e7)), qc=float(rng.integers(0, 8)), qx=float(rng.uniform(0, 1e6))))
        assert d.cut == MID  # the best static cut
        levels.add(d.level)
    assert levels == {SLOW, FAST}  # the controller still picks the clock
    base = LyapunovConfig(V=5.0, throughput_floor_fps=9.0)
    assert controller_config("cutedge-no-dvfs", base, 3.0) == LyapunovConfig(V=3.0, throughput_floor_fps=9.0, dvfs=False)
    assert not controller_config("fixed-rate", base, 3.0).rate_control
    assert controller_config("cutedge-no-rate", base, 3.0) == controller_config("fixed-rate", base, 3.0)
    assert not controller_config("cutedge-no-vq", base, 3.0).virtual_queues
    fr = make_policy("fixed-rate", tiny, V=10.0)
    d = fr.decide(obs(0, 4e6, qc=1.0, qx=3e5))
    assert d.rate_bps == pytest.approx(min(4e6, 3e5 / 0.1))  # full rate, no rate control


def test_every_policy_obeys_the_contract(tiny, tx2_resnet50):
    for system in (tiny, tx2_resnet50):
        n = 400
        st = static_best(system, np.full(n, 2e7), np.arange(0.05, n * system.slot_s, 0.1))
        for name in parse_policies("all") + ["fixed-rate"]:
            pol = make_policy(name, system, V=20.0, static=st)
            check_policy(pol, system.n_cuts, system.n_levels)


def test_schedule_matches_live_decisions_and_never_peeks(tx2_resnet50):
    """A baseline's precomputed schedule is its live decide(), and slot t's choice ignores C(t)."""
    rng = np.random.default_rng(5)
    n = 400
    cap = rng.choice([0.0, 2e6, 8e6, 2e7, 6e7], size=n) * rng.uniform(0.5, 1.5, n)
    arrivals = np.sort(rng.uniform(0, n * 0.1, 900))
    per_slot = np.bincount((arrivals // 0.1).astype(int), minlength=n)
    for name in ("neurosurgeon", "energy-greedy", "jointdnn", "local", "edge"):
        pol = make_policy(name, tx2_resnet50)
        cuts, levels = pol.schedule(cap, per_slot)
        r = simulate(tx2_resnet50, make_policy(name, tx2_resnet50), cap, arrivals, time_decisions=False)
        process = r.slots["process"]
        assert np.array_equal(r.slots["cut"][process], cuts[process])
        assert np.array_equal(r.slots["level"], levels)
        for t in (0, 57, 200, 399):
            changed = cap.copy()
            changed[t:] = rng.uniform(0, 1e8, n - t)  # the present and the future
            c2, l2 = pol.schedule(changed, per_slot)
            assert np.array_equal(c2[: t + 1], cuts[: t + 1]) and np.array_equal(l2[: t + 1], levels[: t + 1])


def test_unknown_policy_names():
    with pytest.raises(ValueError, match="unknown policy 'bogus'"):
        parse_policies("cutedge,bogus")
    with pytest.raises(ValueError, match="no policy"):
        parse_policies(" , ")
    assert "fixed-rate" not in parse_policies("all")  # the same policy as cutedge-no-rate
    with pytest.raises(ValueError, match="needs a V"):
        make_policy("cutedge", None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="static_best"):
        make_policy("static-best", None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="estimate_window"):
        BaselineOptions(estimate_window=0)


def test_names_on_the_controller(tiny):
    ctl = make_policy("cutedge-no-vq", tiny, V=1.0)
    assert isinstance(ctl, LyapunovController) and ctl.name == "cutedge-no-vq"
    assert LyapunovController.name == "cutedge"  # the class attribute is untouched
    assert math.isclose(ctl.config.V, 1.0)
