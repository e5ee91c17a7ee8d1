"""The frontier report on hand-made rows whose answers are worked out below, and the table at the
end of `cutedge sweep` / `cutedge plot`."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cutedge.jsonout import jsonable
from simulation.frontier import Tolerances, frontier_report

REPO = Path(__file__).resolve().parents[2]


def row(policy, V, e, lat, thr=10.0, trace="t", seed=1, dropped=0, arrived=100, duration_s=10.0):
    """A sweep.csv row; the camera offers arrived / duration_s = 10 fps unless told."""
    return {"policy": policy, "V": V, "trace": trace, "seed": seed, "energy_per_frame_j": e, "latency_ms_mean": lat,
            "throughput_fps": thr, "frames_arrived": arrived, "frames_dropped": dropped, "duration_s": duration_s}


def bound(V, gap_served, gap, trace="t", seed=1, policy="cutedge"):
    return {"trace": trace, "seed": seed, "policy": policy, "V": V, "p_star_j_per_frame": 0.4, "status": "optimal",
            "gap_served_pct": gap_served, "gap_pct": gap}


# Trace t: the controller's curve has three runs; V = 100 falls behind the camera (9.5 < 0.99 x 10 fps).
CURVE_T = [row("cutedge", 1.0, 0.70, 200.0), row("cutedge", 10.0, 0.505, 1020.0, thr=9.9),
           row("cutedge", 100.0, 0.45, 3000.0, thr=9.5)]
ROWS_T = CURVE_T + [
    row("edge", None, 0.5, 1000.0),            # V = 10 is at all three edges: 1.01x, 1.02x, 0.99x
    row("energy-greedy", None, 0.6, 210.0),    # missed on energy: V = 1 is 0.70 / (1.01 * 0.6) = 1.155
    row("jointdnn", None, 0.8, 150.0),         # missed on latency: V = 1 is 200 / (1.02 * 150) = 1.307
    row("local", None, 0.9, 50.0, dropped=5),  # drops frames: not compared, and not the fastest baseline
    row("static-best", None, 0.3, 100.0),      # knows the trace: out of reach, reported, not a target
    row("dvfs-only", 10.0, 0.6, 1500.0),       # a point of dvfs-only's curve: reached by V = 10
    row("cutedge-no-vq", 10.0, 0.1, 10.0),     # an ablation: neither a baseline nor part of the curve
]
BOUNDS_T = [bound(1.0, 20.0, 20.0), bound(10.0, 3.0, 2.0), bound(100.0, 1.0, -5.0)]


def by_name(trace_report, key="baselines"):
    return {(e["baseline"], e["baseline_V"]): e for e in trace_report[key]}


def test_reach_miss_and_by_how_much():
    (t,) = frontier_report(ROWS_T, BOUNDS_T)["traces"]
    b = by_name(t)
    assert set(b) == {("edge", None), ("energy-greedy", None), ("jointdnn", None), ("local", None)}

    edge = b[("edge", None)]
    assert edge["reached"] is True and edge["V"] == 10.0 and edge["kind"] == "online"
    assert edge["margin_pct"] == pytest.approx(1.0) and math.isnan(edge["excess_pct"])

    greedy = b[("energy-greedy", None)]
    assert greedy["reached"] is False and greedy["binds"] == "energy" and greedy["V"] == 1.0
    assert greedy["excess_pct"] == pytest.approx(100 * (0.70 / (1.01 * 0.6) - 1))
    assert greedy["controller_energy_per_frame_j"] == pytest.approx(0.70)

    joint = b[("jointdnn", None)]
    assert joint["reached"] is False and joint["binds"] == "latency" and joint["V"] == 1.0
    assert joint["excess_pct"] == pytest.approx(100 * (200 / (1.02 * 150) - 1))

    local = b[("local", None)]
    assert local["compared"] is False and local["reached"] is None and "drops frames" in local["note"]


def test_missed_on_throughput():
    rows = [row("cutedge", 1.0, 0.5, 200.0, thr=9.0, trace="u"), row("local", None, 0.6, 300.0, trace="u")]
    (t,) = frontier_report(rows, [])["traces"]
    (local,) = t["baselines"]
    assert local["reached"] is False and local["binds"] == "throughput"
    assert local["excess_pct"] == pytest.approx(100 * (0.99 * 10 / 9.0 - 1))


def test_a_run_just_past_an_edge_misses():
    rows = [row("cutedge", 1.0, 0.5 * 1.01 * 1.001, 100.0), row("edge", None, 0.5, 100.0)]
    (e,) = frontier_report(rows, [])["traces"][0]["baselines"]
    assert e["reached"] is False and e["binds"] == "energy" and e["excess_pct"] == pytest.approx(0.1)
    loose = frontier_report(rows, [], tolerances=Tolerances(energy_ratio=1.02))["traces"][0]["baselines"][0]
    assert loose["reached"] is True


def test_hindsight_baselines_reported_not_counted():
    rep = frontier_report(ROWS_T, BOUNDS_T)
    (t,) = rep["traces"]
    h = by_name(t, "hindsight_baselines")
    assert set(h) == {("static-best", None), ("dvfs-only", 10.0)}
    assert h[("static-best", None)]["reached"] is False and h[("static-best", None)]["kind"] == "hindsight"
    assert h[("dvfs-only", 10.0)]["reached"] is True and h[("dvfs-only", 10.0)]["V"] == 10.0
    # targets: 3 compared online baselines (edge reached), lowest latency (missed), p* (met)
    assert (t["targets"], t["targets_met"], t["met"]) == (5, 2, False)
    assert (rep["targets"], rep["targets_met"], rep["met"]) == (5, 2, False)

    # a trace where every target is met although static-best is out of reach
    w = [row("cutedge", 1.0, 0.5, 100.0, trace="w"), row("cutedge", 5.0, 0.4, 500.0, trace="w"),
         row("local", None, 0.8, 100.0, trace="w"), row("static-best", None, 0.2, 2000.0, trace="w")]
    rep = frontier_report(w, [bound(1.0, 10.0, 10.0, "w"), bound(5.0, 4.0, 4.0, "w")])
    (tw,) = rep["traces"]
    assert tw["hindsight_baselines"][0]["reached"] is False
    assert (tw["targets"], tw["targets_met"], tw["met"], rep["met"]) == (3, 3, True, True)


def test_seeds_are_averaged_before_comparing():
    rows = [row("cutedge", 1.0, 0.5, 100.0, seed=1), row("cutedge", 1.0, 0.5, 100.0, seed=2),
            row("edge", None, 0.4, 100.0, seed=1), row("edge", None, 0.6, 100.0, seed=2),  # mean 0.5: reached
            row("energy-greedy", None, 0.7, 90.0, seed=1),
            row("energy-greedy", None, 0.7, 110.0, seed=2, dropped=1)]  # one seed drops: the mean is out
    (t,) = frontier_report(rows, [])["traces"]
    b = by_name(t)
    assert t["seeds"] == 2
    assert b[("edge", None)]["reached"] is True and b[("edge", None)]["energy_per_frame_j"] == pytest.approx(0.5)
    assert b[("edge", None)]["margin_pct"] == pytest.approx(0.0, abs=1e-9)
    assert b[("energy-greedy", None)]["compared"] is False


def test_lowest_latency_against_the_fastest_online_baseline():
    (t,) = frontier_report(ROWS_T, BOUNDS_T)["traces"]
    lo = t["lowest_latency"]
    # local (50 ms) drops frames and static-best (100 ms) knows the trace: jointdnn's 150 ms is the mark
    assert lo["baseline"] == "jointdnn" and lo["controller_V"] == 1.0
    assert lo["ratio"] == pytest.approx(200 / 150) and lo["met"] is False
    rows = [row("cutedge", 1.0, 0.5, 110.0), row("local", None, 0.8, 100.0)]
    assert frontier_report(rows, [])["traces"][0]["lowest_latency"]["met"] is True  # 1.1x exactly


def test_p_star_only_from_runs_that_keep_up():
    (t,) = frontier_report(ROWS_T, BOUNDS_T)["traces"]
    ps = t["p_star"]
    # V = 100 sits closest to both bounds but serves 9.5 of 10 fps: never picked
    assert ps["keeping_up_runs"] == 2
    assert ps["served"]["V"] == 10.0 and ps["served"]["gap_pct"] == 3.0 and ps["served"]["latency_ms"] == 1020.0
    assert ps["offered"]["V"] == 10.0 and ps["offered"]["gap_pct"] == 2.0
    assert ps["met"] is True
    # two seeds of bound rows are averaged too
    two = frontier_report(ROWS_T + [dict(r, seed=2) for r in ROWS_T],
                          BOUNDS_T + [bound(10.0, 9.0, 8.0, seed=2), bound(1.0, 20.0, 20.0, seed=2)])
    assert two["traces"][0]["p_star"]["served"]["gap_pct"] == pytest.approx(6.0)
    assert two["traces"][0]["p_star"]["met"] is False


def test_e_star_gaps_interpolated_along_both_curves():
    hs = [{"trace": "t", "latency_ms": 2000.0, "e_star_j_per_frame": 0.40},
          {"trace": "t", "latency_ms": 100.0, "e_star_j_per_frame": 0.60},
          {"trace": "t", "latency_ms": 500.0, "e_star_j_per_frame": 0.45},
          {"trace": "t", "latency_ms": 50.0, "e_star_j_per_frame": math.nan},  # infeasible: ignored
          {"trace": "other", "latency_ms": 1000.0, "e_star_j_per_frame": 0.1}]
    assert frontier_report(ROWS_T, BOUNDS_T)["traces"][0]["e_star"] == []
    (t,) = frontier_report(ROWS_T, BOUNDS_T, hindsight=hs)["traces"]
    at = {x["at"]: x for x in t["e_star"]}
    # the controller's keeping-up runs: (200 ms, 0.70 J) and (1020 ms, 0.505 J); V = 100 falls behind
    g = at["energy-greedy"]
    assert g["latency_ms"] == 210.0
    assert g["controller_energy_per_frame_j"] == pytest.approx(0.70 - 0.195 * 10 / 820)
    assert g["e_star_j_per_frame"] == pytest.approx(0.60 - 0.15 * 110 / 400)
    assert g["gap_pct"] == pytest.approx(100 * ((0.70 - 0.195 * 10 / 820) / (0.60 - 0.15 * 110 / 400) - 1))
    s = at["1 s"]
    assert s["latency_ms"] == 1000.0
    assert s["gap_pct"] == pytest.approx(100 * ((0.70 - 0.195 * 800 / 820) / (0.45 - 0.05 * 500 / 1500) - 1))
    # outside either curve: NaN, not an extrapolation
    short = [{"trace": "t", "latency_ms": 300.0, "e_star_j_per_frame": 0.5},
             {"trace": "t", "latency_ms": 900.0, "e_star_j_per_frame": 0.45}]
    at = {x["at"]: x for x in frontier_report(ROWS_T, BOUNDS_T, hindsight=short)["traces"][0]["e_star"]}
    assert math.isnan(at["energy-greedy"]["e_star_j_per_frame"]) and math.isnan(at["energy-greedy"]["gap_pct"])
    assert math.isnan(at["1 s"]["e_star_j_per_frame"])
    fast = [row("cutedge", 1.0, 0.6, 1500.0), row("energy-greedy", None, 0.5, 200.0)]
    (x, _) = frontier_report(fast, [], hindsight=short)["traces"][0]["e_star"]
    assert math.isnan(x["controller_energy_per_frame_j"]) and math.isnan(x["gap_pct"])


def test_nan_runs_are_left_out_and_the_report_is_json():
    rows = [row("cutedge", 1.0, math.nan, math.nan, thr=0.0),  # nothing completed
            row("cutedge", 10.0, 0.5, 400.0),
            row("edge", None, math.nan, 300.0),                # no energy figure: not compared
            row("local", None, 0.8, 100.0)]
    (t,) = frontier_report(rows, [bound(10.0, math.nan, math.nan)])["traces"]
    b = by_name(t)
    assert b[("edge", None)]["compared"] is False and "not compared" in b[("edge", None)]["note"]
    assert b[("local", None)]["V"] == 10.0 and b[("local", None)]["binds"] == "latency"
    assert t["lowest_latency"]["controller_ms"] == 400.0
    assert t["p_star"]["served"]["V"] is None and t["p_star"]["met"] is False
    none = frontier_report([row("local", None, 0.8, 100.0)], [])["traces"][0]
    assert none["baselines"][0]["compared"] is False and math.isnan(none["lowest_latency"]["ratio"])
    assert none["met"] is False
    text = json.dumps(jsonable(frontier_report(rows, [], hindsight=[])), allow_nan=False)
    assert json.loads(text)["traces"][0]["p_star"]["served"]["gap_pct"] is None


def test_format_fits_100_columns_and_says_what_binds():
    from cutedge.commands.sweep import format_frontier

    hs = [{"trace": "t", "latency_ms": 100.0, "e_star_j_per_frame": 0.6},
          {"trace": "t", "latency_ms": 2000.0, "e_star_j_per_frame": 0.4}]
    text = format_frontier(frontier_report(ROWS_T, BOUNDS_T, hindsight=hs))
    assert max(len(ln) for ln in text.splitlines()) <= 100, text
    assert "missed by 15.5 % (energy) at V = 1" in text and "reached at V = 10" in text
    assert "drops frames, not compared" in text and "static-best *" in text and "dvfs-only *" in text
    assert "E*(L) gap" in text and text.splitlines()[-1] == "frontier: 2 of 5 targets met; all met on 0 of 1 traces"


def test_sweep_prints_the_table_and_writes_frontier(tmp_path):
    out = tmp_path / "sw"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "cutedge", "sweep", "--policies", "cutedge,local,energy-greedy", "--V", "1,30",
                        "--duration", "20", "--workers", "1", "--out", str(out), "--quiet", "--no-plot"],
                       cwd=REPO, capture_output=True, text=True, timeout=240, env=env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    lines = lines[next(i for i, ln in enumerate(lines) if ln.startswith("frontier of")):]  # after HiGHS's banner
    assert any(ln.startswith("frontier: ") and "targets met" in ln for ln in lines), r.stdout
    assert sum("lowest latency" in ln for ln in lines) == 3 and sum(ln.startswith("  energy-greedy") for ln in lines) == 3
    assert max(len(ln) for ln in lines[:-1]) <= 100, r.stdout  # the last line names the files written
    front = json.loads((out / "sweep.json").read_text())["frontier"]
    assert front["policy"] == "cutedge" and len(front["traces"]) == 3
    for t in front["traces"]:
        assert {e["baseline"] for e in t["baselines"]} == {"local", "energy-greedy"}
        assert {"lowest_latency", "p_star", "e_star", "targets", "targets_met", "met"} <= set(t)
    # cutedge plot prints the same table from the files, with E*(L) once a hindsight.csv is there
    with open(out / "hindsight.csv", "w", newline="") as fh:  # trace names hold commas
        w = csv.writer(fh)
        w.writerow(["trace", "latency_ms", "e_star_j_per_frame"])
        w.writerows([t["trace"], L, e] for t in front["traces"] for L, e in ((50, 0.5), (5000, 0.3)))
    p = subprocess.run([sys.executable, "-m", "cutedge", "plot", str(out), "--out", str(tmp_path / "f.png")],
                       cwd=REPO, capture_output=True, text=True, timeout=240, env=env)
    assert p.returncode == 0, p.stderr
    again = [ln for ln in p.stdout.splitlines()[:-1] if "E*(L)" not in ln]  # last: "wrote ..."

    def shape(table):  # what the table says, not its last digits (the CSV keeps 8 of them)
        return [(ln.split()[0], "reached" in ln, "missed" in ln, "MISSED" in ln) for ln in table]

    assert shape(again) == shape(lines[:-1]) and again[-1] == lines[-2]
    assert p.stdout.count("E*(L) gap") == 3
