"""The deployed system on one machine: ``cutedge edge`` and ``cutedge device run`` as real
processes over loopback, the uplink shaped by a real Mahimahi trace, the edge killed (SIGKILL)
mid-run and started again on the same port.

VGG-16 at 64x64 on a Jetson Nano profile is a case where the controller offloads (the raw input
costs less radio energy than the head costs GPU energy on a 4x-scaled T-Mobile LTE uplink), so
the split path is exercised before the kill and must come back after the restart.
"""

from __future__ import annotations

import csv
import json
import math
import time

import pytest

pytest.importorskip("torch")
pytest.importorskip("torchvision")

from edge_helpers import CliProcess, EdgeProcess  # noqa: E402  (tests/system/conftest.py)

MODEL = "vgg16"
SHAPE = "3,64,64"
FRAMES = 300
FPS = 10.0


def _served(edge: EdgeProcess) -> int:
    """Requests served, summed over the edge's statistics lines so far."""
    total = 0
    for line in edge.lines:
        if "edge: last" in line and " served" in line:
            total += int(line.split(" requests, ")[1].split(" served")[0])
    return total


@pytest.fixture
def trace(traces_dir):
    return traces_dir / "mahimahi" / "TMobile-LTE-short.up"


def test_edge_killed_and_restarted_mid_run_loses_no_frame_and_splitting_resumes(tmp_path, trace):
    edge_args = ("--models", f"{MODEL}@{SHAPE.replace(',', 'x')}", "--log-interval-s", "0.5")
    served_logs = [tmp_path / "served1.csv", tmp_path / "served2.csv"]
    edge = EdgeProcess(*edge_args, "--served-log", str(served_logs[0])).started()
    out = tmp_path / "run"
    device = CliProcess(
        "device", "run", "--edge", edge.endpoint, "--model", MODEL, "--input-shape", SHAPE,
        "--backend", "simulated", "--board", "jetson-nano",
        "--link-trace", str(trace), "--trace-scale", "4",
        "--frames", str(FRAMES), "--fps", str(FPS), "--edge-timeout", "1",
        "--verify-every", "7", "--out", str(out),
    )
    edge2 = None
    try:
        # split inference under way: the edge has served tails
        deadline = time.monotonic() + 120
        while _served(edge) < 10:
            assert time.monotonic() < deadline, "the edge served nothing:\n" + "\n".join(device.lines[-20:])
            assert device.proc.poll() is None, "device agent exited early:\n" + "\n".join(device.lines)
            time.sleep(0.2)
        edge.kill()
        device.wait_for(r"edge down", timeout_s=30)
        edge2 = EdgeProcess(*edge_args, "--served-log", str(served_logs[1]), bind=edge.endpoint).started()
        device.wait_for(r"edge answered a heartbeat: splitting resumes", timeout_s=30)
        rc = device.proc.wait(timeout=180)
        served_after = _served(edge2)
    finally:
        device.kill()
        edge.kill()
        if edge2 is not None:
            edge2.stop()
    assert rc == 0, "\n".join(device.lines + device.out_lines)

    summary = json.loads((out / "summary.json").read_text())
    frames = summary["frames"]
    assert frames["arrived"] == FRAMES
    assert frames["completed"] == FRAMES and frames["in_flight"] == 0 and frames["dropped"] == 0
    assert frames["conserved"] and frames["completed_twice"] == 0
    assert frames["offloaded"] + frames["local"] == FRAMES

    rows = list(csv.DictReader((out / "frames.csv").open()))
    assert sorted(int(r["fid"]) for r in rows) == list(range(FRAMES))  # each frame once
    assert all(math.isfinite(float(r["result_s"])) for r in rows)
    assert {r["path"] for r in rows} <= {"edge", "local", "fallback"}

    # both sides agree: every result the device took from the edge is a request an edge ran,
    # no edge ran a request twice, and the requests an edge ran whose result the device did not
    # take (the killed edge's last ones) were run on the device instead
    served: list[int] = []
    for log in served_logs:
        with log.open() as fh:
            lines = fh.read().splitlines()
        assert lines[0] == "peer,request_id,model,cut,tail_ms"
        whole = [ln.split(",") for ln in lines[1:] if ln.count(",") == 4]  # SIGKILL may cut the last row
        assert len({r[0] for r in whole}) <= 1  # one device on each edge
        served += [int(r[1]) for r in whole]
    assert len(served) == len(set(served)), "an edge ran a request twice"
    taken = [int(r["request_id"]) for r in rows if r["path"] == "edge"]
    assert len(taken) == frames["offloaded"] and set(taken) <= set(served)
    assert len(set(served) - set(taken)) <= frames["fallback"]

    events = [e["event"] for e in summary["edge_events"]]
    assert events[0].startswith("edge down") and "edge back" in events[1], events
    back_s = summary["edge_events"][1]["time_s"]
    resumed = [r for r in rows if r["path"] == "edge" and float(r["sent_s"]) > back_s]
    assert resumed and served_after >= len(resumed) > 0  # splitting resumed on the new edge

    # the tables were calibrated from what the run measured (on by default)
    cal = summary["calibration"]
    assert cal["pairs_measured"] >= 1 and cal["slots_compared"] > 0
    assert cal["end"]["slot_energy"] < 0.02  # the simulated board's powers are its tables: kept
    assert cal["end"]["head_s"] < cal["start"]["head_s"]  # FLOPs tables of a Nano vs this CPU

    # results that came over the split path equal the full model's on the device
    assert summary["verify"]["checked"] > 0
    assert summary["verify"]["max_abs_err"] <= 1e-4
    # the simulated clock was pinned and put back
    assert "gpu_hz" in summary["backend"]["restored"]
    assert (out / "timeseries.png").stat().st_size > 10_000


def test_an_edge_that_does_not_serve_the_model_is_left_alone(tmp_path):
    """The edge serves mobilenet_v2; the device runs resnet18. The first request is refused
    (unknown model): the agent says so once, runs everything on the device, completes every
    frame and does not keep knocking."""
    edge = EdgeProcess("--models", "mobilenet_v2@3x32x32", "--log-interval-s", "0.5").started()
    out = tmp_path / "run"
    try:
        device = CliProcess(
            "device", "run", "--edge", edge.endpoint, "--model", "resnet18", "--input-shape", "3,32,32",
            "--backend", "simulated", "--board", "jetson-nano", "--duration", "5", "--fps", "10",
            "--out", str(out),
        )
        rc = device.proc.wait(timeout=120)
    finally:
        device.kill()
        edge.stop()
    assert rc == 0, "\n".join(device.lines)
    summary = json.loads((out / "summary.json").read_text())
    f = summary["frames"]
    assert f["arrived"] == 50 and f["completed"] == 50 and f["offloaded"] == 0
    assert summary["edge_errors"] >= 1
    events = [e["event"] for e in summary["edge_events"]]
    assert len(events) == 1 and "refuses resnet18" in events[0] and "not served here" in events[0], events
    assert sum("the edge refuses resnet18" in ln for ln in device.lines) == 1
