"""`cutedge simulate` end to end, in a subprocess: outputs, no torch/zmq, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Run the CLI with torch and zmq made unimportable: simulate must not need them.
NO_TORCH = (
    "import sys; sys.modules['torch'] = None; sys.modules['zmq'] = None; "
    "sys.modules['torchvision'] = None; "
    "from cutedge.cli import main; rc = main(sys.argv[1:]); "
    "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]; sys.exit(rc)"
)


def cutedge(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_TORCH, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_simulate_default_writes_outputs(tmp_path):
    r = cutedge("simulate", "--duration", "60", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "throughput" in r.stdout and "latency" in r.stdout
    s = json.loads((tmp_path / "summary.json").read_text())
    for key in ("policy", "V", "slots", "slot_s", "throughput_fps", "energy_j", "energy_per_frame_j", "avg_power_w"):
        assert key in s
    assert set(s["trace"]) >= {"path", "format", "mean_bps", "duration_s"}
    assert set(s["frames"]) >= {"arrived", "completed", "dropped", "in_flight"}
    assert set(s["latency_ms"]) >= {"mean", "p50", "p95", "p99"}
    assert set(s["queues"]) >= {"mean_Qc_frames", "mean_Qx_bits", "max_Qc_frames"}
    assert set(s["decision_us"]) >= {"median", "p99"}
    f = s["frames"]
    assert f["arrived"] == f["completed"] + f["dropped"] + f["in_flight"] > 500
    assert s["slots"] == 600 and s["slot_s"] == 0.1
    lines = (tmp_path / "timeseries.csv").read_text().splitlines()
    assert len(lines) == 601
    header = lines[0].split(",")
    for col in ("time_s", "capacity_bps", "cut", "gpu_hz", "rate_bps", "Qc_frames", "Qx_bits", "energy_j"):
        assert col in header
    png = (tmp_path / "timeseries.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_simulate_real_trace_reports_file_mean(tmp_path, traces_dir):
    trace = traces_dir / "mahimahi" / "TMobile-LTE-short.up"
    r = cutedge("simulate", "--trace", str(trace), "--duration", "200", "--V", "10", "--no-plot", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["trace"]["format"] == "mahimahi"
    assert s["trace"]["mean_bps"] == pytest.approx(13.32e6, rel=0.01)
    assert s["trace"]["duration_s"] == pytest.approx(140, abs=1)
    assert "wrap" in r.stderr  # 200 s run on a 140 s trace
    assert s["V"] == 10


def test_trace_mean_is_the_file_as_read_before_scaling(tmp_path, traces_dir):
    trace = traces_dir / "mahimahi" / "TMobile-LTE-short.up"
    r = cutedge("simulate", "--trace", str(trace), "--trace-scale", "0.5", "--duration", "20", "--no-plot",
                "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    t = json.loads((tmp_path / "summary.json").read_text())["trace"]
    assert t["mean_bps"] == pytest.approx(13.32e6, rel=0.01)
    assert t["scale"] == 0.5 and t["mean_bps_scaled"] == pytest.approx(t["mean_bps"] / 2)


@pytest.mark.parametrize(
    "args, words",
    [
        (["--board", "jetson-tx9"], "jetson-tx9"),
        (["--V", "-1"], "--V"),
        (["--duration", "0"], "--duration"),
        (["--trace", "/nonexistent/trace.up"], "/nonexistent/trace.up"),
        (["--trace-format", "pcap"], "pcap"),
        (["--trace", "synthetic:lunar"], "lunar"),
    ],
)
def test_simulate_bad_arguments_one_line(tmp_path, args, words):
    r = cutedge("simulate", "--out", str(tmp_path), *args)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert words in r.stderr
    assert len([ln for ln in r.stderr.splitlines() if ln.strip()]) <= 3


def test_simulate_bad_trace_file(tmp_path):
    bad = tmp_path / "bad.log"
    bad.write_text("0.0 1.5\n1.0 -2.0\n")
    r = cutedge("simulate", "--trace", str(bad), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert str(bad) in r.stderr and "line 2" in r.stderr


def _true_profile(tmp_path, slower: float = 1.25, power: float = 1.1) -> Path:
    """The default model measured on the default board, slower and hungrier than its tables say."""
    import yaml

    from controller.config import configs_dir
    from controller.model import SystemModel
    from controller.profiles import load_board, load_model, load_network

    board = load_board("jetson-tx2")
    sysm = SystemModel.build(board, load_model("resnet50"), load_network("lte-shannon"), 0.1)
    doc = yaml.safe_load((configs_dir() / "models" / "resnet50.yaml").read_text())
    doc["provenance"].update(method="measured", board=board.name, clock_hz=board.levels_hz[-1])
    doc["levels_hz"] = list(board.levels_hz)
    offered = [c for c in doc["cuts"] if c.get("offered", True)]
    for i, c in enumerate(offered):
        c["head_s_by_level"] = [float(v) * slower for v in sysm.head_s[i]]
        c["head_s"] = c["head_s_by_level"][-1]
    doc["power"] = {"rail": "total", "idle_w": [float(v) * power for v in sysm.idle_w],
                    "busy_w": [float(v) * power for v in sysm.busy_w]}
    path = tmp_path / "true.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_true_profile_runs_the_world_from_it_and_reports_the_calibration(tmp_path):
    true = _true_profile(tmp_path)
    # V = 10 runs heads to the end (at the default V = 30 the last 200 slots send every frame
    # from the input cut: no head to measure, and the measured error is n/a)
    r = cutedge("simulate", "--duration", "60", "--V", "10", "--no-plot", "--true-profile", str(true),
                "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    assert "calibration" in r.stdout
    cal = json.loads((tmp_path / "o" / "summary.json").read_text())["calibration"]
    start, end = cal["error_vs_truth_start"], cal["error_vs_truth_end"]
    assert start["head_s"] == pytest.approx(0.2, abs=0.01)  # tables 1/1.25 of the truth
    assert end["head_s"] < 0.05 and end["busy_w"] < 0.03 and end["head_j"] < 0.25 * start["head_j"]
    assert cal["measured"]["end"]["head_s"] < cal["measured"]["start"]["head_s"]
    assert any("board drift" in e["event"] for e in cal["events"])  # 25 % slower than the tables


def test_true_profile_of_another_model_is_one_error_line(tmp_path):
    r = cutedge("simulate", "--duration", "10", "--no-plot", "--true-profile", "mobilenet_v2", "--out", str(tmp_path))
    assert r.returncode == 2
    assert "--true-profile" in r.stderr and "offered cuts" in r.stderr and "Traceback" not in r.stderr
