"""The controller's decisions against brute force, and the O(1/V) / O(V) trade-off shape."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from controller.lyapunov import FRAME_MARGIN, LyapunovConfig, LyapunovController, lambert_w0
from controller.model import SystemModel, tx_power_w
from controller.ops import ARRAY
from controller.policy import Observation, Outcome, check_policy
from controller.profiles import Cut, ModelProfile, load_board, load_network
from simulation.experiment import Experiment, build_scenario, run_scenario
from simulation.simulator import simulate


def random_profile(rng: np.random.Generator, n_cuts: int) -> ModelProfile:
    total = float(rng.uniform(1e9, 2e10))
    head = np.concatenate([[0.0], np.sort(rng.uniform(0, total, n_cuts - 2)), [total]])
    size = np.concatenate([[rng.integers(100_000, 700_000)], rng.integers(1_000, 2_000_000, n_cuts - 2), [4000]])
    cuts = tuple(
        Cut(f"c{i}", int(size[i]), 1, float(head[i]), float(total - head[i]), 0.0, float((total - head[i]) / 1e13))
        for i in range(n_cuts)
    )
    return ModelProfile("random", (3, 224, 224), "float32", 4000, cuts)


def random_observation(rng: np.random.Generator) -> Observation:
    return Observation(
        t=0,
        queue_frames=float(rng.choice([0.0, rng.uniform(0, 1), rng.uniform(0, 40)])),
        queue_bits=float(rng.choice([0.0, rng.uniform(0, 1e6), rng.uniform(0, 1e8)])),
        capacity_bps=float(rng.choice([0.0, rng.uniform(1e5, 1e8)])),
        arrivals=1,
    )


def pair_terms(system: SystemModel, ctl: LyapunovController, obs: Observation, p: int, f: int) -> tuple[float, float]:
    """(objective, heads) of running pair (p, f) this slot, written out term by term from
    docs/controller.md, with the controller's state after its decision (prices, estimate)."""
    tau = system.slot_s
    net = system.network
    V = ctl.config.V
    v_e = ctl.energy_weight()
    omega = ctl.config.latency_weight(tau)
    unit = ctl._unit
    dmax = float(system.bits.max())
    qc, qx, cap = max(obs.queue_frames, 0.0), max(obs.queue_bits, 0.0), obs.capacity_bps
    T = float(system.head_s[p, f])
    # an arriving frame's slot runs phi of its head (rho: the head time it gets there)
    phi = min(1.0, ctl.arrival_phase_s / T) if (T > 0 and ctl.config.arrival_phase) else 1.0
    supply = qc + ctl.arrival_estimate * phi
    n = min(supply, tau / T) if T > 0 else supply
    # n heads back to back (1 + 2 + ... + n), unless the pair has room for the whole supply: then
    # the queued frames back to back and each arriving frame T after its arrival
    heads = n * (n + 1) / 2 if n < supply else qc * (qc + 1) / 2 + ctl.arrival_estimate * phi
    D = float(system.bits[p])
    dE = T * float(system.busy_w[f] - system.idle_w[f])
    post = net.rtt_s + float(system.tail_s[p]) + system.result_bits / net.downlink_bps if D > 0 else 0.0
    c1 = max(cap, 1.0)
    w_bits = qx / unit**2 + V * ctl.gamma_x
    if ctl.config.multipliers:  # the price holds the frame's latency; a part-run front frame is none
        frame_weight = math.floor(qc + 1e-9) + V * ctl.gamma_c + ctl.z_throughput + ctl.z_latency
    else:
        frame_weight = qc + omega * tau + ctl.z_throughput + ctl.z_latency
    obj = (
        v_e * (n * dE + tau * float(system.idle_w[f]))
        + (w_bits + ctl.z_latency / dmax) * n * D
        - frame_weight * n
        + omega * T * heads                     # completion times of the heads
        + omega * (D / c1) * n * (n + 1) / 2   # and of their bits, sent one after the other
        + omega * n * post                      # RTT, tail and the result's trip
        + omega * (qx / c1) * n * (D > 0)       # waiting behind the bits already queued
    )
    return obj, n


def idle_objective(system: SystemModel, ctl: LyapunovController, obs: Observation, level: int) -> float:
    """An idle slot at ``level``: its idle energy, and (with multipliers, whose backlog term counts
    whole frames) the part-run front frame's remaining part waiting a slot."""
    tau = system.slot_s
    obj = ctl.energy_weight() * tau * float(system.idle_w[level])
    if ctl.config.multipliers:
        qc = max(obs.queue_frames, 0.0)
        obj += ctl.config.latency_weight(tau) * tau * (qc - math.floor(qc + 1e-9))
    return obj


def brute_force_pair(system: SystemModel, ctl: LyapunovController, obs: Observation) -> float:
    """Best objective over (cut, level) with a plain Python loop, idling included."""
    best = idle_objective(system, ctl, obs, int(np.argmin(system.idle_w)))
    if max(obs.queue_frames, 0.0) + ctl.arrival_estimate <= 0:
        return best
    for p in range(system.n_cuts):
        for f in range(system.n_levels):
            best = min(best, pair_terms(system, ctl, obs, p, f)[0])
    return best


def objective_of(system, ctl, obs, d) -> float:
    if not d.process:
        return idle_objective(system, ctl, obs, d.level)
    return pair_terms(system, ctl, obs, d.cut, d.level)[0]


def brute_force_frame_price(system: SystemModel, ctl: LyapunovController, obs: Observation) -> float:
    """V*gamma_c written out: the cheapest full cost of one frame now (energy, bits at their
    price, latency at the capacity now, the idle premium shared by lambda frames) over the pairs
    that keep up with the arrival estimate, plus the margin, capped."""
    lam = max(ctl.arrival_estimate, 0.05)
    tau = system.slot_s
    net = system.network
    v_e = ctl.energy_weight()
    omega = ctl.config.latency_weight(tau)
    cap = max(obs.capacity_bps, 1.0)
    w_bits = ctl.config.V * ctl.gamma_x + ctl.z_latency / float(system.bits.max())  # no queue: a price
    idle_min = float(system.idle_w.min())
    best_keep, best_any = np.inf, np.inf
    e_max = i_max = l_max = t_max = 0.0
    for p in range(system.n_cuts):
        D = float(system.bits[p])
        post = net.rtt_s + float(system.tail_s[p]) + system.result_bits / net.downlink_bps if D > 0 else 0.0
        l_max = max(l_max, post)
        for f in range(system.n_levels):
            T = float(system.head_s[p, f])
            dE = T * float(system.busy_w[f] - system.idle_w[f])
            premium = tau * (float(system.idle_w[f]) - idle_min)
            e_max, i_max, t_max = max(e_max, dE), max(i_max, premium), max(t_max, T)
            c = v_e * (dE + premium / lam) + w_bits * D + omega * (post + T + D / cap)
            best_any = min(best_any, c)
            if T <= 0 or tau / T >= ctl.arrival_estimate:
                best_keep = min(best_keep, c)
    price = (best_keep if np.isfinite(best_keep) else best_any) + FRAME_MARGIN
    return min(price, v_e * (e_max + i_max / lam) + omega * (tau + 2 * t_max + l_max))


@pytest.mark.parametrize("network", ["lte-shannon", "lte-linear"])
@pytest.mark.parametrize("board", ["jetson-tx2", "jetson-nano", "jetson-orin-nano"])
def test_pair_choice_matches_brute_force(network, board):
    rng = np.random.default_rng(hash((network, board)) % 2**32)
    for trial in range(40):
        system = SystemModel.build(load_board(board), random_profile(rng, int(rng.integers(2, 12))), load_network(network), 0.1)
        ctl = LyapunovController(system, LyapunovConfig(V=float(10 ** rng.uniform(-2, 4)), energy_budget_w=6.0))
        ctl.z_energy = float(rng.uniform(0, 5))
        for i in range(5):
            obs = random_observation(rng)
            d = ctl.decide(obs)
            if i == 0:  # the keep-up set is refreshed on the first decision, then every PRICE_EVERY_SLOTS
                want = brute_force_frame_price(system, ctl, obs)
                assert ctl.gamma_c * ctl.config.V == pytest.approx(want, rel=1e-9, abs=1e-9)
            got = objective_of(system, ctl, obs, d)
            want = brute_force_pair(system, ctl, obs)
            assert got == pytest.approx(want, rel=1e-9, abs=1e-9), (trial, obs, d)
            ctl.observe(Outcome(0.5, int(rng.integers(0, 3)), float(rng.uniform(0, 1e6))))


def brute_force_rate(system: SystemModel, ctl: LyapunovController, obs: Observation, r_max: float, grid: int = 20001) -> float:
    """Best value of v_e*P_tx(r) - w_r*r over a fine grid of feasible rates."""
    v_e = ctl.energy_weight()
    w_r = rate_weight(system, ctl, obs)
    if r_max <= 0:
        return 0.0
    rates = np.linspace(0.0, r_max, grid)
    vals = [v_e * tx_power_w(system.network, r, obs.capacity_bps) - w_r * r for r in rates]
    return float(min(vals))


def rate_weight(system, ctl, obs) -> float:
    omega = ctl.config.latency_weight(system.slot_s)
    age = omega * ctl.uplink_age_s / ctl._flow_bits if (ctl.config.uplink_age and obs.queue_bits > 0.5) else 0.0
    return (max(obs.queue_bits, 0.0) / ctl._unit**2 + ctl.config.V * ctl.gamma_x + omega * system.slot_s / ctl._unit
            + ctl.z_latency / float(system.bits.max()) + age)


def available_bits(system, ctl, obs, d) -> float:
    """Bits the slot can send: queued, plus what its heads make."""
    made = pair_terms(system, ctl, obs, d.cut, d.level)[1] * float(system.bits[d.cut]) if d.process else 0.0
    return max(obs.queue_bits, 0.0) + made


def fast_send_objective(system, ctl, bits: float, r: float, capacity: float) -> float:
    """v_e*bits*P(r)/r + omega*H/r: sending all of ``bits`` this slot at r >= bits/tau, the k-th
    of the m = bits/D frames they hold leaving at k*D/r (docs/controller.md)."""
    omega = ctl.config.latency_weight(system.slot_s)
    m = bits / ctl._flow_bits
    return ctl.energy_weight() * bits * tx_power_w(system.network, r, capacity) / r + omega * bits * (m + 1) / 2 / r


@pytest.mark.parametrize("network", ["lte-shannon", "lte-linear"])
def test_closed_form_rate_matches_brute_force(network):
    rng = np.random.default_rng(7 if network == "lte-shannon" else 8)
    system = SystemModel.build(load_board("jetson-tx2"), random_profile(rng, 5), load_network(network), 0.1)
    history = np.random.default_rng(9)  # its own stream: the checked instances stay as they were
    checked = fast = aged = 0
    for _ in range(300):
        ctl = LyapunovController(system, LyapunovConfig(V=float(10 ** rng.uniform(-2, 4))))
        for _ in range(int(history.integers(0, 6))):  # a history, so the uplink's bits have an age
            ctl.decide(random_observation(history))
            ctl.observe(Outcome(1.0, int(history.integers(0, 3)), 0.0, 0, 0))  # input frames: bits made
        obs = random_observation(rng)
        d = ctl.decide(obs)
        aged += ctl.uplink_age_s > 0.0
        bits = available_bits(system, ctl, obs, d)
        cap = obs.capacity_bps
        r_max = min(cap, bits / system.slot_s)
        assert 0.0 <= d.rate_bps <= cap * (1 + 1e-12)
        v_e = ctl.energy_weight()
        w_r = rate_weight(system, ctl, obs)
        want = brute_force_rate(system, ctl, obs, r_max)
        slow = v_e * tx_power_w(system.network, min(d.rate_bps, r_max), cap) - w_r * min(d.rate_bps, r_max)
        # the grid can only be worse than the true optimum
        assert slow <= want + 1e-9 * max(1.0, abs(want)), (obs, d)
        if d.rate_bps > r_max * (1 + 1e-12):
            # everything leaves this slot, faster than bits/tau: the least energy + completion
            # times over [bits/tau, C]
            fast += 1
            grid = np.linspace(r_max, cap, 4001)
            best = min(fast_send_objective(system, ctl, bits, r, cap) for r in grid)
            got = fast_send_objective(system, ctl, bits, d.rate_bps, cap)
            assert got <= best + 1e-9 * abs(best), (obs, d)
        checked += r_max > 0
    assert checked > 50 and fast > 10 and aged > 30, (checked, fast, aged)


def test_lambert_w0_on_floats_and_arrays():
    xs = np.concatenate([-1 / math.e + np.logspace(-14, -0.5, 60), np.linspace(-0.3, 0.0, 30), np.logspace(-8, 250, 200)])
    for x in xs:
        w = lambert_w0(float(x))
        # w*e^w = x, checked in log space where e^w would overflow
        if w > 1.0:
            assert math.log(w) + w == pytest.approx(math.log(x), rel=1e-9)
        else:
            assert w * math.exp(w) == pytest.approx(x, rel=1e-7, abs=1e-9)
    got = lambert_w0(xs, ARRAY)
    want = np.array([lambert_w0(float(x)) for x in xs])
    assert np.allclose(got, want, rtol=1e-8, atol=1e-8)
    assert lambert_w0(-1 / math.e) == pytest.approx(-1.0, abs=1e-6)
    assert lambert_w0(math.e) == pytest.approx(1.0, rel=1e-12)


def test_policy_contract_and_determinism(tx2_resnet50, tx2_resnet50_linear):
    for system in (tx2_resnet50, tx2_resnet50_linear):
        for cfg in (LyapunovConfig(), LyapunovConfig(V=1e3, energy_budget_w=5.0, throughput_floor_fps=5.0, latency_epsilon=0.5),
                    LyapunovConfig(dvfs=False, rate_control=False, virtual_queues=False)):
            check_policy(LyapunovController(system, cfg), system.n_cuts, system.n_levels)


def test_ablation_flags_restrict_choices(tx2_resnet50):
    rng = np.random.default_rng(3)
    no_dvfs = LyapunovController(tx2_resnet50, LyapunovConfig(dvfs=False))
    no_rate = LyapunovController(tx2_resnet50, LyapunovConfig(rate_control=False))
    fixed = LyapunovController(tx2_resnet50, LyapunovConfig(fixed_cut=tx2_resnet50.local_cut))
    for _ in range(200):
        obs = random_observation(rng)
        assert no_dvfs.decide(obs).level == tx2_resnet50.n_levels - 1
        d = no_rate.decide(obs)
        assert d.rate_bps == pytest.approx(min(obs.capacity_bps, available_bits(tx2_resnet50, no_rate, obs, d) / tx2_resnet50.slot_s))
        assert fixed.decide(obs).cut == tx2_resnet50.local_cut


@pytest.fixture(scope="module")
def long_scenario():
    return build_scenario(Experiment(duration_s=1200.0, seed=4))


def test_energy_falls_and_backlog_grows_with_V(long_scenario):
    """O(1/V) penalty, O(V) backlog: over the useful V range both move monotonically."""
    sc = long_scenario
    runs = {}
    for V in (1.0, 10.0, 100.0, 1000.0):
        ctl = LyapunovController(sc.system, LyapunovConfig(V=V))
        runs[V] = run_scenario(sc, ctl, time_decisions=False).summary
    Vs = sorted(runs)
    power = [runs[v]["avg_power_w"] for v in Vs]
    per_frame = [runs[v]["energy_per_frame_j"] for v in Vs]
    backlog = [runs[v]["queues"]["mean_Qc_frames"] + runs[v]["queues"]["mean_Qx_bits"] / sc.system.bits[0] for v in Vs]
    assert all(b < a for a, b in zip(power, power[1:])), power
    assert all(b < a for a, b in zip(per_frame, per_frame[1:])), per_frame
    assert all(b > a for a, b in zip(backlog, backlog[1:])), backlog
    # backlog grows roughly linearly in V at the top of the range
    assert backlog[-1] / backlog[-2] > 3.0
    for v in Vs:  # every run still serves the camera
        assert runs[v]["throughput_fps"] > 0.95 * 10.0


@pytest.mark.parametrize("budget_w", [5.4, 5.8])
def test_energy_budget_met_on_average(long_scenario, budget_w):
    sc = long_scenario
    free = run_scenario(sc, LyapunovController(sc.system, LyapunovConfig(V=1.0)), time_decisions=False).summary
    assert free["avg_power_w"] > budget_w  # the budget binds
    ctl = LyapunovController(sc.system, LyapunovConfig(V=1.0, energy_budget_w=budget_w))
    s = run_scenario(sc, ctl, time_decisions=False).summary
    assert s["avg_power_w"] <= budget_w * 1.01
    assert s["throughput_fps"] > 0.9 * 10.0


def test_throughput_floor_raises_service(long_scenario):
    sc = long_scenario
    # a controller that holds frames for the energy (about 5.4 of 10 fps); the uplink's age
    # term alone would push it to 8.8 fps, so it is off here
    lazy = LyapunovConfig(V=5000.0, uplink_age=False)
    base = run_scenario(sc, LyapunovController(sc.system, lazy), time_decisions=False).summary
    floor = run_scenario(sc, LyapunovController(sc.system, replace(lazy, throughput_floor_fps=8.0)), time_decisions=False).summary
    assert base["throughput_fps"] < 8.0
    assert floor["throughput_fps"] >= 8.0 * 0.97


@pytest.mark.parametrize("offset_s", [0.016, 0.084])
def test_arrival_phase_learnt_from_the_queue(tx2_resnet50, offset_s):
    """A camera whose frames arrive ``offset_s`` into every slot: an arriving frame's head gets
    ``tau - offset_s`` of its own slot, and the controller learns that from its queue alone."""
    from simulation.simulator import simulate

    s = tx2_resnet50
    tau = s.slot_s
    n = 600
    arrivals = np.arange(n) * tau + offset_s
    local = s.n_cuts - 1
    # the slowest clock that keeps up (T < tau) and still runs into the next slot
    level = next(f for f in range(s.n_levels) if tau - offset_s < s.head_s[local, f] < tau)
    ctl = LyapunovController(s, LyapunovConfig(V=30.0, fixed_cut=local, fixed_level=level))
    simulate(s, ctl, np.full(n, 2e7), arrivals, time_decisions=False)
    assert ctl.arrival_phase_s == pytest.approx(tau - offset_s, rel=0.05)
    # a backlogged GPU gives an arrival nothing in its slot
    slow = LyapunovController(s, LyapunovConfig(V=30.0, fixed_cut=local, fixed_level=0))
    simulate(s, slow, np.full(n, 2e7), arrivals, time_decisions=False)
    assert slow.arrival_phase_s < 0.1 * (tau - offset_s)
    off = LyapunovController(s, LyapunovConfig(V=30.0, fixed_cut=local, fixed_level=level, arrival_phase=False))
    simulate(s, off, np.full(n, 2e7), arrivals, time_decisions=False)
    assert off.arrival_phase_s == tau  # switched off: never learnt


def test_uplink_age_is_the_oldest_waiting_bits_age(tx2_resnet50):
    """The head-of-line age the rate is weighed by, against a FIFO of the bits each slot's heads
    made, sent from the front (an independent count: chunks by slot, not the ring)."""
    s = tx2_resnet50
    rng = np.random.default_rng(11)
    ctl = LyapunovController(s, LyapunovConfig(V=30.0))
    fifo: list[list[float]] = []  # [slot made, bits left]
    waiting = 0
    for t in range(600):
        qx = sum(b for _, b in fifo)
        obs = Observation(t, float(rng.integers(0, 4)), qx, float(10 ** rng.uniform(5.5, 7.5)), int(rng.integers(0, 3)))
        d = ctl.decide(obs)
        want = (t - 1 - fifo[0][0]) * s.slot_s if qx > 0.5 else 0.0
        assert ctl.uplink_age_s == pytest.approx(want, abs=1e-9), t
        waiting += want > 0.0
        done = int(rng.integers(0, 3)) if d.process else 0
        made = done * float(s.bits[d.cut])
        sent = float(qx * rng.choice([0.0, 0.3, 1.0], p=[0.5, 0.3, 0.2]))
        left = sent
        while fifo and left >= fifo[0][1]:
            left -= fifo.pop(0)[1]
        if fifo:
            fifo[0][1] -= left
        if made > 0.0:
            fifo.append([t, made])
        ctl.observe(Outcome(1.0, done, sent))
    assert waiting > 100


def test_uplink_age_sends_the_bits_a_fade_holds(tx2_resnet50):
    """Bits that met a fade leave within a bounded wait, instead of waiting for the link to come
    back: good 10-s spells (25 Mbit/s) between 60-s fades (2 Mbit/s, enough for a few frames)."""
    s = tx2_resnet50
    tau = s.slot_s
    n = int(600 / tau)
    t = np.arange(n) * tau
    cap = np.where((t % 70.0) < 10.0, 25e6, 2e6)
    arrivals = np.arange(0.0, 600.0, 0.1) + 0.003
    waits = {}
    for age in (True, False):
        ctl = LyapunovController(s, LyapunovConfig(V=30.0, uplink_age=age))
        f = simulate(s, ctl, cap, arrivals, time_decisions=False).frames
        up = f["completed"] & (s.bits[np.maximum(f["cut"], 0)] > 0)
        waits[age] = (f["sent_s"] - f["head_done_s"])[up]
    assert waits[False].max() > 30.0  # held until the next good spell
    assert waits[True].max() < 10.0, np.sort(waits[True])[-5:]


def test_uplink_age_counts_bits_at_the_cut_that_ran(tx2_resnet50):
    """A live slot that kept its frames local (the edge went down) made no bits, whatever the
    decision's cut: the bits still queued are the older ones, and their age says so."""
    s = tx2_resnet50
    tau, local, cut = s.slot_s, s.local_cut, 2
    d = float(s.bits[cut])
    ctl = LyapunovController(s, LyapunovConfig(V=30.0, fixed_cut=cut))
    assert ctl.decide(Observation(0, 3.0, 0.0, 1e8, 1)).process
    ctl.observe(Outcome(1.0, 1, 0.0, cut, 0))  # one frame made its bits
    assert ctl.decide(Observation(1, 3.0, d, 1e8, 1)).process
    ctl.observe(Outcome(1.0, 2, 0.0, local, 0))  # two frames, run locally: no bits
    ctl.decide(Observation(2, 0.0, d, 1e8, 1))
    assert ctl.uplink_age_s == pytest.approx(tau)  # the bits of slot 0, one slot old
