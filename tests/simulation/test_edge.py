"""Devices sharing one edge (simulation.edge): the profile, the edge's rules, the controller
backing off, and the sweep's many-devices rows."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from controller.config import ConfigError
from controller.lyapunov import LyapunovConfig, LyapunovController
from controller.policy import Observation, Outcome
from simulation.baselines import make_policy
from simulation.batchsim import Lane, Schedule, simulate_batch
from simulation.edge import (
    DEFAULT_EDGE,
    EdgeProfile,
    batch_table,
    edge_completion_times,
    jain_index,
    load_edge,
    split_batches,
    summarize_devices,
)
from simulation.experiment import Experiment, build_scenario, device_inputs, run_scenario
from simulation.sweep import SweepConfig, TraceEntry, run_sweep

PROFILE = """name: test-edge
device: a test edge
source: written for the test
servers: 1
max_batch: 8
batch_overhead_s: 0.001
batch_sizes: [1, 2, 4, 8]
flops_per_s: [1.0e12, 1.5e12, 2.0e12, 2.2e12]
"""


def _write(tmp_path, text: str, name: str = "edge.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def _lanes(exp: Experiment, policy, n: int, edge: int = 0) -> list[Lane]:
    sc = build_scenario(exp)
    out = []
    for c, a in device_inputs(sc, n):
        if isinstance(policy, str):
            per = np.bincount(np.minimum((a // exp.slot_s).astype(int), exp.n_slots - 1), minlength=exp.n_slots)
            cuts, levels = make_policy(policy, sc.system).schedule(c, per)
            out.append(Lane(policy, Schedule(policy, cuts, levels), c, a, edge=edge))
        else:
            out.append(Lane("cutedge", policy, c, a, edge=edge))
    return out


# -- the profile ---------------------------------------------------------------------------------


def test_builtin_profile_is_one_device_light_and_64_heavy():
    edge = load_edge(DEFAULT_EDGE)
    sc = build_scenario(Experiment(duration_s=10, devices=2))
    flops = [c.tail_flops for c in sc.system.model.offered]
    full = edge.frames_per_s(flops[0])  # the whole model from the input: the heaviest tail
    assert 10.0 < full < 64 * 10.0, full  # one 10 fps camera cannot saturate it, 64 can
    # a lone request's tail is what the controller and the baselines plan with
    assert sc.system.tail_s[0] == pytest.approx(float(edge.batch_s(flops[0], 1)))
    assert sc.system.tail_s[-1] == 0.0


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (("max_batch: 8", "max_batch: 16"), "max_batch"),
        (("batch_sizes: [1, 2, 4, 8]", "batch_sizes: [2, 4, 8, 16]"), "batch_sizes"),
        (("batch_sizes: [1, 2, 4, 8]", "batch_sizes: [1, 2.5, 4, 8]"), "whole numbers"),
        (("flops_per_s: [1.0e12, 1.5e12, 2.0e12, 2.2e12]", "flops_per_s: [1.0e12, 1.5e12]"), "flops_per_s"),
        (("flops_per_s: [1.0e12, 1.5e12, 2.0e12, 2.2e12]", "flops_per_s: [1.0e12, 0.4e12, 2.0e12, 2.2e12]"), "costs more"),
        (("servers: 1", "servers: 0"), "servers"),
        (("servers: 1", "servers: 1\nspeed: 3"), "speed"),
    ],
)
def test_bad_profile_names_the_field(tmp_path, change, words):
    p = _write(tmp_path, PROFILE.replace(*change))
    with pytest.raises(ConfigError) as exc:
        load_edge(p)
    assert words in str(exc.value) and str(p) in str(exc.value)


def test_unknown_profile_lists_the_builtin_ones():
    with pytest.raises(ConfigError, match=DEFAULT_EDGE):
        load_edge("no-such-edge")


def test_batch_costs_follow_the_profile(tmp_path):
    edge = load_edge(_write(tmp_path, PROFILE))
    # listed sizes exactly; 3 lies between 2 and 4 on the log-log line
    assert float(edge.batch_s(1e9, 4)) == pytest.approx(0.001 + 4e9 / 2.0e12)
    f3 = float(edge.flops_at(3))
    assert 1.5e12 < f3 < 2.0e12
    assert float(edge.batch_s(1e9, 0)) == 0.0
    nb, q, r = split_batches(np.array([0, 1, 8, 9, 17]), 8)
    assert nb.tolist() == [0, 1, 1, 2, 3] and (q * nb + r).tolist() == [0, 1, 8, 9, 17]
    assert (q + (r > 0) <= 8).all()


def test_jain_index():
    assert jain_index([5, 5, 5]) == pytest.approx(1.0)
    assert jain_index([1, 0, 0, 0]) == pytest.approx(0.25)
    assert math.isnan(jain_index([]))


# -- the edge's rules ----------------------------------------------------------------------------


def test_device_inputs_shift_the_trace_and_draw_own_cameras():
    sc = build_scenario(Experiment(duration_s=20))
    ins = device_inputs(sc, 4)
    assert ins[0][0] is sc.capacity_bps and ins[0][1] is sc.arrival_times_s
    for i, (c, a) in enumerate(ins[1:], start=1):
        assert np.array_equal(c, np.roll(sc.capacity_bps, -(i * sc.experiment.n_slots) // 4))
        assert len(a) in (len(sc.arrival_times_s) - 1, len(sc.arrival_times_s), len(sc.arrival_times_s) + 1)
    phases = {round(float(a[0]), 9) for _, a in ins}
    assert len(phases) == 4


def test_edge_completions_match_a_fine_grained_fluid_server():
    """The per-batch completions against an independent time-stepped FIFO server (dt = tau/2000)."""
    rng = np.random.default_rng(7)
    tau, n_slots = 0.1, 40
    edge = EdgeProfile("t", "t", "t", servers=1, max_batch=4, batch_overhead_s=0.004, batch_sizes=(1, 4),
                       flops_per_s=(1e12, 2e12))

    class _Sys:  # only what batch_table reads
        class model:
            offered = [type("C", (), {"tail_flops": f})() for f in (3e10, 5e9, 0.0)]

    table = batch_table(edge, _Sys)
    bits = np.array([1e6, 3e5, 0.0])
    delivered = [rng.integers(0, 4, n_slots) for _ in range(3)]
    frames = []
    for dl in delivered:
        n = int(dl.sum())
        slot = np.repeat(np.arange(n_slots), dl)
        sent = (slot + rng.uniform(0, 1, n)) * tau
        sent.sort()
        frames.append({"head_done_s": sent - 0.01, "sent_s": sent, "cut": rng.integers(0, 2, n)})
    # the loop's work per slot, by the same batching rule, and a fluid server at speed 1
    from simulation.edge import slot_work

    counts = np.zeros((n_slots, 3), np.int64)
    for fr, dl in zip(frames, delivered):
        slot = np.repeat(np.arange(n_slots), dl)
        np.add.at(counts, (slot, fr["cut"]), 1)
    work = np.array([slot_work(table, counts[t], edge.max_batch) for t in range(n_slots)])
    served, backlog = np.zeros(n_slots), 0.0
    for t in range(n_slots):
        served[t] = min(tau, backlog + work[t])
        backlog += work[t] - served[t]
    jobs = edge_completion_times(edge, table, bits, tau, served, frames, delivered, rtt_s=0.0)
    assert len(jobs.lane) == sum(int(d.sum()) for d in delivered)
    # batches: one (slot, cut) each, at most max_batch requests
    for b in np.unique(jobs.batch):
        m = jobs.batch == b
        assert m.sum() <= edge.max_batch
        assert len(set(jobs.slot[m])) == 1 and len(set(jobs.cut[m])) == 1
    # the independent server: FIFO over batches, each available from its slot's start
    order = np.unique(jobs.batch)
    b_slot = np.array([jobs.slot[jobs.batch == b][0] for b in order])
    b_cut = np.array([jobs.cut[jobs.batch == b][0] for b in order])
    b_size = np.array([(jobs.batch == b).sum() for b in order])
    b_work = table[b_cut, b_size]
    b_ready = np.array([jobs.ready_s[jobs.batch == b].max() for b in order])
    dt = tau / 2000
    left = b_work.copy()
    finish = np.full(len(order), np.nan)
    i = 0
    for step in range(n_slots * 2000):
        now = step * dt
        budget = dt
        while budget > 1e-15 and i < len(order) and b_slot[i] * tau <= now + 1e-12:
            use = min(budget, left[i])
            left[i] -= use
            budget -= use
            if left[i] <= 1e-15:
                finish[i] = now + dt - budget
                i += 1
    want = np.maximum(finish, b_ready + b_work)
    got = np.array([jobs.done_s[jobs.batch == b][0] for b in order])
    both = np.isfinite(want) & np.isfinite(got)
    assert both.sum() >= 0.9 * len(order)
    assert np.allclose(got[both], want[both], atol=2 * dt)
    assert np.array_equal(np.isfinite(got), np.isfinite(want))


def test_ring_of_uplink_segments_grows_and_every_frame_is_counted():
    """A link that is down for 30 s piles up far more slot segments than the ring's first size."""
    exp = Experiment(duration_s=60, devices=2)
    lanes = _lanes(exp, "edge", 2)
    cap = lanes[0].capacity_bps.copy()
    cap[:300] = 0.0  # 300 slots of heads with nothing sent: 300 segments waiting
    lanes = [replace(lanes[0], capacity_bps=cap), lanes[1]]
    res = simulate_batch(build_scenario(exp).system, lanes, buffer_frames=1000, edge=load_edge(DEFAULT_EDGE))
    for r in res:
        fr = r.summary["frames"]
        assert fr["arrived"] == fr["completed"] + fr["dropped"] + fr["in_flight"]
    assert res[0].summary["edge"]["requests"] == sum(r.summary["frames"]["completed"] for r in res) + \
        sum(r.summary["frames"]["in_uplink_or_edge"] for r in res) - \
        sum(int(np.isnan(r.frames["sent_s"][np.isfinite(r.frames["head_done_s"])]).sum()) for r in res)
    assert res[0].summary["frames"]["completed"] > 0.9 * res[1].summary["frames"]["completed"]


def test_an_idle_edge_changes_no_decision():
    """With an edge that never queues, every device decides as it would alone (edge_wait 0): the
    same batch engine with and without the shared edge (one code path, so exact on any CPU;
    the batch engine's agreement with the scalar simulator is tests/simulation/test_sweep.py's)."""
    fast = EdgeProfile("fast", "fast", "t", servers=1, max_batch=8, batch_overhead_s=0.0, batch_sizes=(1, 8),
                       flops_per_s=(1e18, 1e18))
    exp = Experiment(duration_s=60, seed=4)
    sc = build_scenario(exp)
    ins = device_inputs(sc, 3)
    cfg = LyapunovConfig(V=30.0)
    res = simulate_batch(sc.system, [Lane("c", cfg, c, a, edge=0) for c, a in ins], buffer_frames=300, edge=fast)
    alone = simulate_batch(sc.system, [Lane("c", cfg, c, a) for c, a in ins], buffer_frames=300)
    for a, r in zip(alone, res):
        for k in ("cut", "level", "heads_done", "sent_bits", "Qc_frames"):
            assert np.array_equal(a.slots[k], r.slots[k]), k
        assert not r.slots["edge_wait_s"].any()
        assert r.summary["frames"]["arrived"] == a.summary["frames"]["arrived"]
        assert r.summary["edge"]["requests"] > 0  # the devices did offload to it


def test_batch_engine_prices_the_edge_wait_as_the_scalar_controller_does():
    """Replay one device of a congested run through the scalar controller, telling it the wait
    the run told that device: the same (cut, level, process) slot by slot. Without multipliers
    no transcendental function (math.log2 against np.log2, math.exp against np.exp, which may
    differ in the last bit on some CPUs) reaches those choices or the controller's state: only
    the rate uses log2, and it is compared to a relative 1e-9. The wait term is plain
    arithmetic in both, so they agree exactly on any machine."""
    exp = Experiment(duration_s=40, devices=64, seed=2)
    sc = build_scenario(exp)
    cfg = LyapunovConfig(V=100.0, multipliers=False)
    lanes = [Lane("c", cfg, c, a, edge=0) for c, a in device_inputs(sc, exp.devices)]
    res = simulate_batch(sc.system, lanes, buffer_frames=exp.buffer_frames, edge=load_edge(DEFAULT_EDGE))
    s = res[5].slots
    assert s["edge_wait_s"].max() > 0.01  # the edge did queue
    ctl = LyapunovController(sc.system, cfg)
    ctl.reset()
    for t in range(exp.n_slots):
        obs = Observation(t, float(s["Qc_frames"][t]), float(s["Qx_bits"][t]), float(s["capacity_bps"][t]),
                          int(s["arrivals"][t - 1]) if t else 0, float(s["edge_wait_s"][t]))
        d = ctl.decide(obs)
        assert (d.cut, d.level, d.process) == (int(s["cut"][t]), int(s["level"][t]), bool(s["process"][t])), t
        if s["sent_bits"][t] > 0:
            assert d.rate_bps == pytest.approx(float(s["rate_bps"][t]), rel=1e-9)
        ctl.observe(Outcome(float(s["energy_j"][t]), int(s["heads_done"][t]), float(s["sent_bits"][t])))


def test_a_busy_edge_makes_the_controller_offload_less():
    ctl = LyapunovController(build_scenario(Experiment(duration_s=1)).system, LyapunovConfig(V=30.0))
    offloads = []
    for wait in (0.0, 5.0):
        ctl.reset()
        for t in range(30):
            d = ctl.decide(Observation(t, 2.0, 0.0, 40e6, 1, wait))
            ctl.observe(Outcome(0.5, 1, 0.0))
        offloads.append(d.cut != ctl.system.n_cuts - 1)
    assert offloads == [True, False]


def test_the_controller_keeps_a_shared_edge_stable_where_edge_does_not():
    exp = Experiment(duration_s=60, devices=64)
    sc = build_scenario(exp)
    edge = load_edge(DEFAULT_EDGE)
    lanes = _lanes(exp, LyapunovConfig(V=30.0), 64, edge=0) + _lanes(exp, "edge", 64, edge=1)
    res = simulate_batch(sc.system, lanes, buffer_frames=exp.buffer_frames, edge=edge)
    ctl = summarize_devices(res[:64], "cutedge", sc.system.cut_names)
    off = summarize_devices(res[64:], "edge", sc.system.cut_names)
    assert ctl["edge"]["utilisation"] < 0.95
    assert ctl["edge"]["end_backlog_s"] < 1.0
    assert ctl["throughput_fps"] > 0.98 * 10.0 and ctl["frames"]["dropped"] == 0
    assert ctl["latency_ms"]["mean"] < 1000.0
    # `edge` ignores the load: the edge saturates and its backlog grows all run long
    assert off["edge"]["utilisation"] > 0.99
    assert off["edge"]["end_backlog_s"] > 1.5 * off["edge"]["mean_backlog_s"] > 1.0
    assert off["latency_ms"]["mean"] > 10 * ctl["latency_ms"]["mean"]
    assert 0.99 < ctl["jain_fairness"] <= 1.0


def test_simulate_devices_runs_the_controller_on_a_shared_edge():
    sc = build_scenario(Experiment(duration_s=20, devices=8))
    r = run_scenario(sc)
    assert r.summary["devices"] == 8 and r.summary["edge"]["profile"] == DEFAULT_EDGE
    assert r.summary["frames"]["arrived"] == pytest.approx(8 * 200, abs=8)
    with pytest.raises(ConfigError, match="controller only"):
        run_scenario(sc, LyapunovController(sc.system, LyapunovConfig()))


# -- the sweep -----------------------------------------------------------------------------------


def test_sweep_over_device_counts_writes_the_columns():
    cfg = SweepConfig(
        experiment=Experiment(duration_s=20),
        policies=("cutedge", "edge", "local", "static-best"),
        V=(10.0, 100.0),
        traces=(TraceEntry("synthetic:markov-lte", label="LTE"),),
        devices=(1, 4),
    )
    out = run_sweep(cfg)
    assert {int(r["devices"]) for r in out.rows} == {1, 4}
    assert not out.bounds  # the LP bound is a lone device's
    assert any("static-best" in n for n in out.notes)
    for r in out.rows:
        assert 0.0 <= r["edge_utilisation"] <= 1.0
        assert 0.0 < r["jain_fairness"] <= 1.0 + 1e-12
        assert r["frames_arrived"] == pytest.approx(int(r["devices"]) * 200, abs=int(r["devices"]))
    local = [r for r in out.rows if r["policy"] == "local"]
    assert all(r["edge_utilisation"] == 0.0 for r in local)
    from simulation.frontier import frontier_report
    from simulation.scaling import devices_report, format_devices

    assert frontier_report(out.rows, out.bounds)["traces"] == []
    text = format_devices(devices_report(out.rows))
    assert "LTE" in text and "cutedge" in text


def test_sweep_config_devices_field(tmp_path):
    from simulation.sweep import SweepError, load_sweep

    good = _write(tmp_path, "experiment: default\nV: [10]\npolicies: [cutedge]\ndevices: [1, 8]\n", "s.yaml")
    assert load_sweep(good).devices == (1, 8)
    assert load_sweep(_write(tmp_path, "experiment: default\nV: [10]\ndevices: 4\n", "one.yaml")).devices == (4,)
    for bad, words in (("[0, 4]", "whole number"), ("[2, 2]", "repeated"), ("[1.5]", "whole number"), ("many", "device count")):
        with pytest.raises(SweepError, match=words):
            load_sweep(_write(tmp_path, f"experiment: default\nV: [10]\ndevices: {bad}\n", "b.yaml"))
    with pytest.raises(ConfigError, match="no-such-edge"):
        load_sweep(_write(tmp_path, "experiment: default\nV: [10]\nedge: no-such-edge\n", "e.yaml"))


def test_bad_edge_in_an_experiment_names_the_field(tmp_path):
    from simulation.experiment import load_experiment

    bad = _write(tmp_path, PROFILE.replace("max_batch: 8", "max_batch: 16"), "bad-edge.yaml")
    exp = _write(tmp_path, "name: x\ndevices: 4\nedge: bad-edge.yaml\n", "exp.yaml")
    with pytest.raises(ConfigError) as exc:
        load_experiment(exp)
    text = str(exc.value)
    assert str(exp) in text and str(bad) in text and "max_batch" in text
    assert load_experiment(_write(tmp_path, "devices: 4\nedge: agx-orin-fp32\n", "ok.yaml")).edge_profile == DEFAULT_EDGE
    for bad_n in ("0", "2.5", "many"):
        with pytest.raises(ConfigError, match="devices"):
            load_experiment(_write(tmp_path, f"devices: {bad_n}\n", "n.yaml"))


@pytest.mark.parametrize("command", ["simulate", "sweep"])
def test_bad_edge_option_is_one_line(command, tmp_path, capsys):
    from cutedge.cli import main

    rc = main([command, "--edge", "no-such-edge", "--duration", "1", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "--edge" in err and "no-such-edge" in err and "Traceback" not in err
