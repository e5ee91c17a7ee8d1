"""Sweeps: the batched engine agrees with the scalar simulator, rows are complete and the same
with 1 and 2 workers, and `cutedge sweep` / `cutedge plot` work end to end with one-line errors."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from tiny_system import tiny_system

from controller.lyapunov import AGE_RING_CHUNKS, LyapunovConfig, LyapunovController
from controller.model import shannon_log2_k, tx_power_w
from simulation.baselines import make_policy
from simulation.batchsim import (
    Lane,
    Schedule,
    shannon_log2_k_array,
    simulate_batch,
    tx_power_w_array,
)
from simulation.experiment import Experiment, TraceSpec, build_scenario
from simulation.simulator import simulate
from simulation.sweep import (
    BOUND_FIELDS,
    ROW_FIELDS,
    SweepConfig,
    TraceEntry,
    load_sweep,
    read_csv,
    run_sweep,
    write_csv,
)

REPO = Path(__file__).resolve().parents[2]

CONFIGS = [
    LyapunovConfig(V=0.5),
    LyapunovConfig(V=30.0),
    LyapunovConfig(V=3000.0),
    LyapunovConfig(V=30.0, dvfs=False),
    LyapunovConfig(V=30.0, rate_control=False),
    LyapunovConfig(V=100.0, energy_budget_w=5.0, throughput_floor_fps=9.0, latency_epsilon=0.5),
    LyapunovConfig(V=100.0, energy_budget_w=5.0, throughput_floor_fps=9.0, latency_epsilon=0.5, virtual_queues=False),
    LyapunovConfig(V=100.0, fixed_cut=1),
    LyapunovConfig(V=50.0, admission_frame_value_j=0.2, multipliers=False),
    LyapunovConfig(V=5.0, latency_weight_per_s=0.0, multiplier_window_slots=1.0, arrival_ewma=1.0),
    LyapunovConfig(V=10.0, fixed_level=3, queue_unit_bits=2e5),
    LyapunovConfig(V=20.0, arrival_phase=False),
    LyapunovConfig(V=30.0, uplink_age=False),
]


def _same(a: dict, b: dict) -> list[str]:
    bad = []
    for k, x in a.items():
        if k == "decision_ns":
            continue
        y = b[k]
        if x.dtype.kind in "biu":
            if not np.array_equal(x, y):
                bad.append(f"{k} first differs at slot {int(np.argmax(x != y))}")
        elif not np.allclose(x, y, rtol=1e-9, atol=1e-9):
            bad.append(f"{k} first differs at slot {int(np.argmax(~np.isclose(x, y, rtol=1e-9, atol=1e-9)))}")
    return bad


@pytest.mark.parametrize(
    "exp",
    [
        Experiment(duration_s=150.0, seed=3),
        Experiment(duration_s=150.0, seed=5, network="lte-linear", buffer_frames=40),
        Experiment(duration_s=150.0, seed=8, trace=TraceSpec(path="synthetic:5g-mmwave?mean_mbps=8")),
    ],
    ids=["lte-shannon", "linear-small-buffer", "mmwave-starved"],
)
def test_batched_engine_agrees_with_scalar_simulator(exp):
    """Same decisions and queues, slot by slot, as simulate() + LyapunovController / the baselines."""
    sc = build_scenario(exp)
    s = sc.system
    n = exp.n_slots
    per_slot = np.bincount((sc.arrival_times_s // s.slot_s).astype(int), minlength=n)[:n]
    lanes = [Lane(f"c{i}", cfg, sc.capacity_bps, sc.arrival_times_s) for i, cfg in enumerate(CONFIGS)]
    policies = [LyapunovController(s, cfg) for cfg in CONFIGS]
    for name in ("neurosurgeon", "energy-greedy", "jointdnn", "local", "edge"):
        c, lv = make_policy(name, s).schedule(sc.capacity_bps, per_slot)
        lanes.append(Lane(name, Schedule(name, c, lv), sc.capacity_bps, sc.arrival_times_s))
        policies.append(make_policy(name, s))
    batch = simulate_batch(s, lanes, buffer_frames=exp.buffer_frames)
    for lane, pol, rb in zip(lanes, policies, batch):
        ra = simulate(s, pol, sc.capacity_bps, sc.arrival_times_s, buffer_frames=exp.buffer_frames, time_decisions=False)
        assert not _same(ra.slots, rb.slots), (lane.name, _same(ra.slots, rb.slots))
        assert ra.summary["frames"] == rb.summary["frames"]
        assert rb.summary["energy_j"] == pytest.approx(ra.summary["energy_j"], rel=1e-9)
        assert rb.summary["latency_ms"]["mean"] == pytest.approx(ra.summary["latency_ms"]["mean"], rel=1e-9, nan_ok=True)


def test_array_twins_of_the_model_formulas(tx2_resnet50, tx2_resnet50_linear):
    rng = np.random.default_rng(1)
    caps = np.concatenate([10 ** rng.uniform(3, 10, 400), [1e9, 6e8, 5.0001e8]])
    want = np.array([shannon_log2_k(c, 1e7) for c in caps])
    # math.log2 and np.log2 may differ in the last bit on some CPUs: agree to rounding, not bits
    assert np.allclose(shannon_log2_k_array(caps, 1e7), want, rtol=1e-12, atol=1e-12)
    rates = caps * rng.uniform(0, 1, caps.size)
    rates[:5] = 0.0
    for s in (tx2_resnet50, tx2_resnet50_linear):
        got = tx_power_w_array(s, rates, caps)
        ref = np.array([tx_power_w(s.network, r, c) for r, c in zip(rates, caps)])
        assert np.allclose(got, ref, rtol=1e-12, atol=0.0)


def test_batch_input_checks(tx2_resnet50, tmp_path):
    cap = np.full(10, 1e7)
    with pytest.raises(ValueError, match="same number of slots"):
        simulate_batch(tx2_resnet50, [Lane("a", LyapunovConfig(), cap, []), Lane("b", LyapunovConfig(), cap[:5], [])])
    with pytest.raises(TypeError, match="LyapunovConfig or a Schedule"):
        simulate_batch(tx2_resnet50, [Lane("a", "cutedge", cap, [])])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="outside the tables"):
        simulate_batch(tx2_resnet50, [Lane("a", Schedule("a", np.full(10, 99), np.zeros(10, int)), cap, [])])
    assert simulate_batch(tx2_resnet50, []) == []
    tiny = tiny_system(tmp_path)
    (r,) = simulate_batch(tiny, [Lane("a", LyapunovConfig(V=1.0), cap, np.arange(0.05, 1.0, 0.1))])
    assert r.summary["frames"]["arrived"] == 10


def small_sweep(**kw) -> SweepConfig:
    return SweepConfig(
        experiment=Experiment(duration_s=40.0, seed=4, controller=LyapunovConfig(throughput_floor_fps=9.0)),
        policies=("cutedge", "cutedge-no-vq", "dvfs-only", "local", "static-best", "energy-greedy"),
        V=(1.0, 100.0),
        traces=(TraceEntry("synthetic:markov-lte", label="lte"), TraceEntry("synthetic:wifi?mean_mbps=15", label="wifi")),
        seeds=2,
        **kw,
    )


def test_sweep_rows_complete_and_reproducible(tmp_path):
    cfg = small_sweep()
    one = run_sweep(cfg, workers=1)
    two = run_sweep(cfg, workers=2)
    # 2 traces x 2 seeds x (3 V policies x 2 V + 3 fixed policies)
    assert len(one.rows) == 2 * 2 * (3 * 2 + 3)
    keys = {(r["policy"], r["V"], r["trace"], r["seed"]) for r in one.rows}
    assert len(keys) == len(one.rows)
    for r in one.rows:
        assert set(ROW_FIELDS) <= set(r)
        for k in ("throughput_fps", "energy_per_frame_j", "avg_power_w", "latency_ms_mean", "latency_ms_p95",
                  "latency_ms_p99", "frames_dropped", "mean_Qc_frames", "mean_Qx_bits"):
            assert r[k] is not None and math.isfinite(r[k]), (r["policy"], k)
        assert (r["V"] is None) == (r["policy"] in ("local", "static-best", "energy-greedy"))
        assert r["frames_arrived"] == r["frames_completed"] + r["frames_dropped"] + r["frames_in_flight"]
    assert {r["seed"] for r in one.rows} == {4, 5}
    assert len(one.bounds) == 2 * 2 * 3 * 2
    for b in one.bounds:
        assert b["p_star_w"] > 0 and b["status"] == "optimal"
        assert b["avg_power_w"] >= b["p_star_served_w"] * (1 - 1e-6)
    # same seed, same numbers, whatever the number of workers
    for a, b in ((one.rows, two.rows), (one.bounds, two.bounds)):
        write_csv(tmp_path / "a.csv", a, ROW_FIELDS if a is one.rows else BOUND_FIELDS)
        write_csv(tmp_path / "b.csv", b, ROW_FIELDS if a is one.rows else BOUND_FIELDS)
        assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
    # and a different seed gives different numbers
    other = run_sweep(replace(cfg, experiment=replace(cfg.experiment, seed=9), seeds=1), workers=1)
    assert other.rows[0]["energy_j"] != one.rows[0]["energy_j"]


def test_csv_round_trip(tmp_path):
    out = run_sweep(replace(small_sweep(), seeds=1, traces=small_sweep().traces[:1]), workers=1)
    write_csv(tmp_path / "sweep.csv", out.rows, ROW_FIELDS)
    back = read_csv(tmp_path / "sweep.csv")
    assert len(back) == len(out.rows)
    for a, b in zip(out.rows, back):
        assert a["policy"] == b["policy"] and a["V"] == b["V"]
        assert b["energy_per_frame_j"] == pytest.approx(a["energy_per_frame_j"], rel=1e-7)


# -- the command line ---------------------------------------------------------------------------

# Run the CLI with torch and zmq unimportable (a finder that refuses them: scipy, under cvxpy,
# trips over the sys.modules[name] = None idiom) and check that neither got imported.
NO_TORCH = """
import os, sys
REFUSED = {'torch', 'torchvision', 'zmq', *filter(None, os.environ.get('REFUSE_MODULES', '').split(','))}
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in REFUSED:
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Refuse())
from cutedge.cli import main
rc = main(sys.argv[1:])
assert not [m for m in sys.modules if m.split('.')[0] in ('torch', 'zmq')]
sys.exit(rc)
"""


def cutedge(*args: str, timeout: float = 240, refuse: str = "") -> subprocess.CompletedProcess:
    """Run the CLI in a fresh interpreter; ``refuse`` names more modules to make unimportable."""
    env = {**os.environ, "REFUSE_MODULES": refuse}
    return subprocess.run([sys.executable, "-c", NO_TORCH, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_sweep_and_plot_cli(tmp_path):
    out = tmp_path / "sw"
    r = cutedge("sweep", "--duration", "30", "--V", "1,30,1000", "--workers", "2", "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    assert "p* = " in r.stdout and "targets met" in r.stdout
    assert "HiGHS" not in r.stdout + r.stderr  # the LP solver's banner is muted in the workers
    rows = list(csv.DictReader(open(out / "sweep.csv")))
    header = list(rows[0])
    for col in ("policy", "V", "trace", "seed", "throughput_fps", "energy_per_frame_j", "avg_power_w", "latency_ms_mean",
                "latency_ms_p95", "latency_ms_p99", "frames_dropped", "mean_Qc_frames", "mean_Qx_bits"):
        assert col in header
    policies = {row["policy"] for row in rows}
    assert {"cutedge", "cutedge-no-dvfs", "cutedge-no-rate", "cutedge-no-vq", "dvfs-only", "local", "edge",
            "neurosurgeon", "energy-greedy", "static-best", "jointdnn"} <= policies
    assert len({row["trace"] for row in rows}) == 3  # the three built-in synthetic traces
    bounds = list(csv.DictReader(open(out / "bound.csv")))
    assert {b["V"] for b in bounds if b["policy"] == "cutedge"} == {"1", "30", "1000"}
    meta = json.loads((out / "sweep.json").read_text())
    assert meta["workers"] == 2 and meta["V"] == [1.0, 30.0, 1000.0]
    png = (out / "tradeoff.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000
    (out / "tradeoff.png").unlink()
    r = cutedge("plot", str(out))
    assert r.returncode == 0, r.stderr
    assert (out / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"
    assert "frontier:" in r.stdout and r.stdout.count("lowest latency") == 3  # the table, from the files
    (out / "bound.csv").unlink()  # the bound is optional for a redraw
    r = cutedge("plot", str(out), "--out", str(tmp_path / "again.png"))
    assert r.returncode == 0, r.stderr and (tmp_path / "again.png").exists()
    # a hindsight.csv that cannot be used is one line naming the file, the line and the value
    (out / "hindsight.csv").write_text("trace,latency_ms,e_star_j_per_frame\nt,100,zz\n")
    r = cutedge("plot", str(out), "--out", str(tmp_path / "again.png"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "hindsight.csv: line 2: e_star_j_per_frame: not a number: 'zz'" in r.stderr, r.stderr
    (out / "hindsight.csv").write_text("trace,latency_ms\nt,100\n")
    r = cutedge("plot", str(out), "--out", str(tmp_path / "again.png"))
    assert r.returncode == 2 and "hindsight.csv: missing columns e_star_j_per_frame" in r.stderr, r.stderr


def test_default_config_sweeps_enough():
    cfg = load_sweep("sweep-default")
    assert len(cfg.V) >= 10 and min(cfg.V) <= 1.0 and max(cfg.V) >= 1000.0
    assert len(cfg.traces) == 3 and all(t.path.startswith("synthetic") for t in cfg.traces)
    assert {"cutedge", "local", "edge", "neurosurgeon", "energy-greedy", "static-best", "dvfs-only", "jointdnn",
            "cutedge-no-dvfs", "cutedge-no-rate", "cutedge-no-vq"} <= set(cfg.policies)


def test_real_trace_config_resolves_against_trace_root(traces_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("CUTEDGE_TRACES", raising=False)
    cfg = load_sweep("sweep-real-traces", trace_root=traces_dir)
    assert len(cfg.traces) >= 6
    for t in cfg.traces:
        assert Path(t.path).is_file() and Path(t.path).is_relative_to(traces_dir.resolve())
    assert any(t.path.endswith(".up") for t in cfg.traces) and any(t.scale != 1.0 for t in cfg.traces)
    elsewhere = tmp_path / "empty"
    elsewhere.mkdir()
    from controller.config import ConfigError

    with pytest.raises(ConfigError, match="--trace-root"):
        load_sweep("sweep-real-traces", trace_root=elsewhere)


def test_sweep_over_a_real_uplink_file(traces_dir, tmp_path):
    r = cutedge("sweep", "--trace", "mahimahi/TMobile-LTE-short.up", "--trace-root", str(traces_dir), "--policies",
                "cutedge,edge,local", "--V", "10", "--duration", "20", "--workers", "1", "--out", str(tmp_path), "--no-plot")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(open(tmp_path / "sweep.csv")))
    assert {row["trace"] for row in rows} == {"TMobile-LTE-short.up"} and len(rows) == 3


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--policies", "cutedge,bogus"], "bogus"),
        (["--V", "1,abc"], "abc"),
        (["--V", "-3"], "V must be"),
        (["--trace", "no/such/file.up"], "no/such/file.up"),
        (["--executor", "dask"], "dask"),
        (["--executor", "ray"], "ray"),
        (["--executor", "mpi"], "mpi"),
        (["--workers", "0"], "workers"),
        (["--config", "no-such-sweep"], "no-such-sweep"),
        (["--config", "default"], "not a sweep config"),
        (["--trace-root", "/no/such/folder", "--trace", "x.up"], "/no/such/folder"),
        (["--duration", "-5"], "duration"),
    ],
)
def test_sweep_bad_arguments_one_line(tmp_path, args, words):
    # dask and ray are made unimportable here, so their missing-package errors show either way
    r = cutedge("sweep", "--duration", "5", "--V", "1", "--policies", "cutedge", "--out", str(tmp_path / "o"), *args,
                refuse="dask,distributed,ray")
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    assert words in r.stderr
    assert len([ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("sweep ")]) <= 3, r.stderr


def test_bad_sweep_config_files(tmp_path):
    from controller.config import ConfigError

    bad = tmp_path / "s.yaml"
    cases = {
        "experiment: default\nV: [1, 2]\npolicy: [cutedge]\n": "policy",
        "experiment: default\nV: [1, x]\n": "V[1]",
        "experiment: default\npolicies: [cutedge, warp]\n": "warp",
        "experiment: default\ntraces: [{path: synthetic:wifi, scale: -1}]\n": "scale",
        "experiment: default\ntraces: [{path: nofile.up}]\n": "nofile.up",
        "experiment: default\ncontroller: {V: -2}\n": "V",
        "experiment: default\nbaselines: {estimate_window: 0}\n": "estimate_window",
        "experiment: default\nseeds: 0\n": "seeds",
    }
    for text, word in cases.items():
        bad.write_text(text)
        with pytest.raises(ConfigError, match=word.replace("[", r"\[").replace("]", r"\]")):
            load_sweep(bad)


def test_plot_bad_inputs(tmp_path):
    r = cutedge("plot", str(tmp_path / "nothing"))
    assert r.returncode == 2 and "not a folder" in r.stderr and "Traceback" not in r.stderr
    r = cutedge("plot", str(tmp_path))
    assert r.returncode == 2 and "sweep.csv" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "sweep.csv").write_text("policy,V,trace,energy_per_frame_j\ncutedge,1,a,zz\n")
    r = cutedge("plot", str(tmp_path))
    assert r.returncode == 2 and "line 2" in r.stderr and "zz" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "sweep.csv").write_text("policy,V,trace\ncutedge,1,a\n")
    r = cutedge("plot", str(tmp_path))
    assert r.returncode == 2 and "missing columns" in r.stderr


def test_dask_executor_gives_the_same_files(tmp_path):
    pytest.importorskip("dask.distributed")
    args = ["--duration", "20", "--V", "1,100", "--policies", "cutedge,local,static-best", "--no-plot", "--quiet"]
    r1 = cutedge("sweep", *args, "--workers", "1", "--out", str(tmp_path / "local"))
    r2 = cutedge("sweep", *args, "--workers", "2", "--executor", "dask", "--out", str(tmp_path / "dask"))
    assert r1.returncode == 0 and r2.returncode == 0, (r1.stderr, r2.stderr)
    for name in ("sweep.csv", "bound.csv"):
        assert (tmp_path / "local" / name).read_text() == (tmp_path / "dask" / name).read_text()


def test_devices_sweep_and_plot_cli(tmp_path):
    """`cutedge sweep --devices` prints the many-devices table (no frontier: no lone device on an
    edge that is never a bottleneck), writes the columns, and `cutedge plot` redraws and reprints it."""
    out = tmp_path / "dev"
    r = cutedge("sweep", "--devices", "1,3", "--policies", "cutedge,edge", "--V", "10", "--duration", "10",
                "--trace", "synthetic:wifi", "--workers", "1", "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    assert "devices sharing one edge" in r.stdout and "targets met" not in r.stdout
    rows = list(csv.DictReader(open(out / "sweep.csv")))
    assert sorted({row["devices"] for row in rows}) == ["1", "3"]
    assert all(0.0 <= float(row["edge_utilisation"]) <= 1.0 for row in rows)
    meta = json.loads((out / "sweep.json").read_text())
    assert meta["devices"]["counts"] == [1, 3] and meta["devices"]["edge"] == "agx-orin-fp32"
    r = cutedge("plot", str(out))
    assert r.returncode == 0, r.stderr
    assert "devices sharing one edge" in r.stdout and (out / "tradeoff.png").stat().st_size > 10_000
    r = cutedge("sweep", "--devices", "0", "--duration", "5", "--out", str(tmp_path / "bad"))
    assert r.returncode == 2 and "--devices" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("ring", [8, AGE_RING_CHUNKS])
def test_batched_engine_agrees_past_the_age_ring(tx2_resnet50, monkeypatch, ring):
    """Bits that wait through a long fade (20 kbit/s for 400 s), with the real age ring and with
    one of 8 chunks, so that more chunks wait than it holds (the front clamped, the ring
    wrapped): the batch engine, which finds the front its own way, decides as the scalar
    controller does, slot by slot."""
    import simulation.batchsim as batchsim
    from controller import lyapunov

    monkeypatch.setattr(lyapunov, "AGE_RING_CHUNKS", ring)
    monkeypatch.setattr(batchsim, "AGE_RING_CHUNKS", ring)
    s = tx2_resnet50
    t = np.arange(5000) * s.slot_s
    cap = np.where((t < 20.0) | (t >= 420.0), 20e6, 2e4)
    arrivals = np.arange(0.0, t[-1], 0.1) + 0.003
    configs = [LyapunovConfig(V=30.0), LyapunovConfig(V=3000.0), LyapunovConfig(V=1.0, fixed_cut=2)]
    behind, ages = [], []
    for cfg in configs:
        ctl = LyapunovController(s, cfg)
        decide = ctl.decide

        def record(obs, decide=decide, ctl=ctl):
            d = decide(obs)
            behind.append(ctl._chunks - ctl._age_front)
            ages.append(ctl.uplink_age_s)
            return d

        ctl.decide = record
        ra = simulate(s, ctl, cap, arrivals, buffer_frames=300, time_decisions=False)
        rb = simulate_batch(s, [Lane("c", cfg, cap, arrivals)], buffer_frames=300)[0]
        assert not _same(ra.slots, rb.slots), (cfg, _same(ra.slots, rb.slots))
    assert max(ages) > 300.0  # bits that waited through the fade
    if ring == 8:
        assert max(behind) == ring - 1  # more chunks waited than the ring holds: the front clamped


def test_age_ring_search_against_brute_force():
    """The batch engine's search of one lane's age ring (np.searchsorted over the ring's two
    pieces) against a scan, windows wrapping the ring's end."""
    from simulation.batchsim import AGE_RING_CHUNKS as R
    from simulation.batchsim import _first_above_in

    rng = np.random.default_rng(5)
    for _ in range(500):
        n = int(rng.integers(1, 3 * R))
        history = np.cumsum(rng.choice([0.5, 1.0, 2.5], size=n))  # bits made up to chunk k
        column = np.zeros(R)
        for k in range(max(0, n - R), n):
            column[k % R] = history[k]
        lo = int(rng.integers(max(0, n - R), n))
        v = float(history[lo] + rng.uniform(-1.0, 40.0))
        want = next((x for x in range(lo, n) if history[x] > v), n)
        assert _first_above_in(column, lo, n, v) == want
