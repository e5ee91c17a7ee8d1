"""Two ``cutedge edge`` processes and one ``cutedge device run --edge A --edge B`` process on
loopback, the uplink shaped by a real Mahimahi trace; edge A is killed (SIGKILL) mid-run and not
started again. The device sends A's frames again to B: every frame completes exactly once, and
what each edge ran (its served log) agrees with what the device took from it.

The setting is the single-edge system test's (VGG-16 at 64x64 on a Jetson Nano profile, a
4x-scaled T-Mobile LTE uplink), a case where the controller offloads.
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
FRAMES = 150
FPS = 10.0


def _served_rows(path) -> list[list[str]]:
    lines = path.read_text().splitlines()
    assert lines[0] == "peer,request_id,model,cut,tail_ms"
    return [ln.split(",") for ln in lines[1:] if ln.count(",") == 4]  # SIGKILL may cut the last row


def test_an_edge_killed_mid_run_is_failed_over_to_the_other_and_no_frame_is_lost_or_run_twice(tmp_path, traces_dir):
    edge_args = ("--models", f"{MODEL}@{SHAPE.replace(',', 'x')}", "--log-interval-s", "0.5")
    logs = [tmp_path / "served_a.csv", tmp_path / "served_b.csv"]
    a = EdgeProcess(*edge_args, "--served-log", str(logs[0])).started()
    b = EdgeProcess(*edge_args, "--served-log", str(logs[1])).started()
    out = tmp_path / "run"
    device = CliProcess(
        "device", "run", "--edge", a.endpoint, "--edge", b.endpoint, "--model", MODEL, "--input-shape", SHAPE,
        "--backend", "simulated", "--board", "jetson-nano",
        "--link-trace", str(traces_dir / "mahimahi" / "TMobile-LTE-short.up"), "--trace-scale", "4",
        "--frames", str(FRAMES), "--fps", str(FPS), "--edge-timeout", "1", "--verify-every", "7",
        "--out", str(out),
    )
    try:
        # split inference under way on A (the first edge, which ties go to)
        deadline = time.monotonic() + 120
        while len(_served_rows(logs[0])) < 5:
            assert time.monotonic() < deadline, "edge A served nothing:\n" + "\n".join(device.lines[-20:])
            assert device.proc.poll() is None, "device agent exited early:\n" + "\n".join(device.lines)
            time.sleep(0.2)
        a.kill()
        device.wait_for(rf"edge {a.endpoint} down .* are sent to the other edges", timeout_s=60)
        rc = device.proc.wait(timeout=180)
    finally:
        device.kill()
        a.kill()
        b.stop()
    assert rc == 0, "\n".join(device.lines + device.out_lines)

    summary = json.loads((out / "summary.json").read_text())
    f = summary["frames"]
    assert f["arrived"] == f["completed"] == FRAMES and f["in_flight"] == 0 and f["dropped"] == 0
    assert f["conserved"] and f["completed_twice"] == 0
    ea, eb = summary["edges"]
    assert (ea["endpoint"], eb["endpoint"]) == (a.endpoint, b.endpoint)
    assert ea["downs"] >= 1 and f["failed_over"] == ea["failed_over"] + eb["failed_over"] >= 1
    assert f["offloaded"] == ea["offloaded"] + eb["offloaded"] and eb["offloaded"] > 0

    rows = list(csv.DictReader((out / "frames.csv").open()))
    assert sorted(int(r["fid"]) for r in rows) == list(range(FRAMES))  # each frame once
    assert all(math.isfinite(float(r["result_s"])) for r in rows)
    # each edge ran each request once, and every result the device took from an edge is one it ran
    for log, endpoint in zip(logs, (a.endpoint, b.endpoint), strict=True):
        served = [int(r[1]) for r in _served_rows(log)]
        assert len(served) == len(set(served)), f"{endpoint} ran a request twice"
        taken = [int(r["request_id"]) for r in rows if r["path"] == "edge" and r["edge"] == endpoint]
        assert set(taken) <= set(served)
    down_s = next(e["time_s"] for e in summary["edge_events"] if e["endpoint"] == a.endpoint)
    after = [r for r in rows if r["path"] == "edge" and float(r["sent_s"]) > down_s]
    assert after and {r["edge"] for r in after} == {b.endpoint}  # B carried on alone
    assert summary["verify"]["checked"] > 0 and summary["verify"]["max_abs_err"] <= 1e-4
    assert f"edges: {a.endpoint} {ea['offloaded']} frames, {b.endpoint} {eb['offloaded']} frames" in "\n".join(device.out_lines)
