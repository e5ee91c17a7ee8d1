"""`cutedge device run`: one-line errors for bad input, and a run on a board's (fake) sysfs tree
with no edge to talk to: every frame completes on the device and the clock is put back."""

from __future__ import annotations

import csv
import json
import socket

import pytest
from fake_sysfs import FakeKernel, make_tree

from cutedge.cli import main

pytest.importorskip("torch")
pytest.importorskip("torchvision")


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["device", "run", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


BASE = ("--edge", "tcp://127.0.0.1:9", "--backend", "simulated", "--board", "jetson-nano", "--frames", "3")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--model", "nosuchnet"), "error: --model nosuchnet: unknown model 'nosuchnet'"),
        (("--input-shape", "3,x"), "error: --input-shape: input shape '3,x'"),
        (("--curve-server-key", "/nope.key", "--curve-client-secret", "/nope.key_secret"),
         "error: CURVE: /nope.key: key file not found"),
        (("--curve-server-key", "/nope.key"), "error: CURVE needs both"),
        (("--source", "/no/such/folder"), "error: --source /no/such/folder: No such file or directory"),
        (("--link-trace", "/no/such/trace.txt"), "error: /no/such/trace.txt: file not found"),
        (("--network", "nonet"), "error: nonet: no such network"),
        (("--duration", "2"), "error: give --frames or --duration, not both"),
        (("--fps", "0"), "--fps"),
        pytest.param(("--device", "cuda"), "error: --device cuda: torch sees no CUDA device here",
                     marks=pytest.mark.skipif(_has_cuda(), reason="this machine has CUDA")),
        (("--edge", "foo"), "error: --edge 'foo': expected tcp://HOST:PORT"),
        (("--edge", "tcp://*:5555"), "error: --edge 'tcp://*:5555': expected tcp://HOST:PORT"),
        (("--edge", "tcp://10.0.0.2:70000"), "port 70000 outside 1..65535"),
        # several edges: each is checked, and the error names the bad one
        (("--edge", "tcp://127.0.0.1:9"), "error: --edge 'tcp://127.0.0.1:9' given twice"),
        (("--edge", "tcp://127.0.0.1:10", "--edge", "tcp://127.0.0.1:0"),
         "error: --edge 'tcp://127.0.0.1:0': port 0 outside 1..65535"),
    ],
)
def test_bad_input_is_one_error_line(capsys, args, message):
    rc, out, err = run(capsys, *BASE, *args)
    assert rc == 2 and out == ""
    lines = [ln for ln in err.splitlines() if "random weights" not in ln]
    assert len(lines) == 1 or lines[-1].startswith("Error:"), err
    assert message in err


def test_empty_image_folder(capsys, tmp_path):
    rc, _, err = run(capsys, *BASE, "--source", str(tmp_path))
    assert rc == 2 and f"error: --source {tmp_path}: no .jpg/.jpeg/.png images" in err


def test_without_an_edge_every_frame_completes_on_the_device_and_the_clock_is_restored(
    tmp_path, capsys, monkeypatch
):
    board = make_tree(tmp_path / "root", "orin-nano-jp6")
    FakeKernel(board).install(monkeypatch)
    before = board.state()
    out = tmp_path / "run"
    rc, stdout, err = run(
        capsys, "--edge", f"tcp://127.0.0.1:{_unused_port()}", "--backend", "sysfs",
        "--sysfs-root", str(tmp_path / "root"), "--board", "jetson-orin-nano",
        "--model", "mobilenet_v2", "--input-shape", "3,32,32", "--duration", "3", "--fps", "10",
        "--edge-timeout", "0.3", "--no-calibrate", "--out", str(out),
    )  # no calibration: the FLOPs tables keep the frames local, so it is the probe that finds no edge
    assert rc == 0, err
    summary = json.loads((out / "summary.json").read_text())
    f = summary["frames"]
    assert summary["calibration"] is None
    assert f["arrived"] == 30 and f["completed"] == 30 and f["in_flight"] == 0
    assert f["offloaded"] == 0 and f["local"] == 30
    # the agent probed the link once it had no sample for 2 s, found no edge and said so
    assert summary["probes"] >= 1
    assert summary["edge_events"] and summary["edge_events"][0]["event"].startswith("edge down")
    rows = list(csv.DictReader((out / "frames.csv").open()))
    assert sorted(int(r["fid"]) for r in rows) == list(range(30))
    assert summary["backend"]["name"] == "sysfs"
    assert board.state() == before  # min, max and governor put back
    assert "restored: " in stdout
    # the same keys as `cutedge simulate`
    for key in ("throughput_fps", "energy_per_frame_j", "avg_power_w", "latency_ms", "queues", "slots"):
        assert key in summary


def test_a_frame_lets_go_of_its_input_once_its_result_is_in(tmp_path, capsys, monkeypatch):
    """Memory must not grow with the run: at the end of a run (before the agent goes away) no
    input tensor of a completed frame is still alive."""
    import gc
    import weakref

    import device_agent.runtime as runtime

    refs: list[weakref.ref] = []
    make = runtime.synthetic_source

    def source(shape, seed):
        frame = make(shape, seed)

        def tracked(i):
            x = frame(i)
            refs.append(weakref.ref(x))
            return x

        return tracked

    alive_at_end: list[int] = []
    summary = runtime.LiveAgent.summary

    def counting_summary(self):
        gc.collect()
        alive_at_end.append(sum(r() is not None for r in refs))
        return summary(self)

    monkeypatch.setattr(runtime, "synthetic_source", source)
    monkeypatch.setattr(runtime.LiveAgent, "summary", counting_summary)
    rc, _, err = run(
        capsys, "--edge", f"tcp://127.0.0.1:{_unused_port()}", "--backend", "simulated",
        "--board", "jetson-nano", "--model", "mobilenet_v2", "--input-shape", "3,32,32",
        "--frames", "20", "--fps", "20", "--edge-timeout", "0.3", "--out", str(tmp_path / "run"),
    )
    assert rc == 0, err
    assert len(refs) == 20 and alive_at_end and alive_at_end[0] == 0


def test_sigterm_mid_run_restores_the_clock_and_counts_every_frame(tmp_path):
    """A real `cutedge device run` process on a fake Orin tree, killed with SIGTERM mid-run."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    board = make_tree(tmp_path / "root", "orin-nano-jp6")
    before = board.state()
    out = tmp_path / "run"
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cutedge", "device", "run", "--edge", f"tcp://127.0.0.1:{_unused_port()}",
         "--backend", "sysfs", "--sysfs-root", str(tmp_path / "root"), "--board", "jetson-orin-nano",
         "--model", "mobilenet_v2", "--input-shape", "3,32,32", "--duration", "120", "--fps", "10",
         "--out", str(out)],
        cwd=repo, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        # the agent has pinned a level once min_freq or max_freq moved
        while board.state() == before:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the agent never pinned a level"
            time.sleep(0.1)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr
    assert board.state() == before  # min, max and governor put back
    summary = json.loads((out / "summary.json").read_text())
    f = summary["frames"]
    assert f["arrived"] > 0 and f["arrived"] == f["completed"] + f["in_flight"]
    # counted apart: where each unfinished frame was left, and no frame lost or completed twice
    assert f["in_flight"] == sum(f["left"].values()) and f["conserved"] and f["dropped"] == 0
    assert summary["stopped"].startswith("interrupted")
    assert "stopped by a signal" in stderr
    rows = list(csv.DictReader((out / "frames.csv").open()))
    assert len(rows) == f["arrived"]


def test_profile_measured_for_other_cuts_is_one_error_line(capsys, tmp_path):
    from controller.profiles import load_board
    from dnn_split.partition import partition
    from dnn_split.profile import dump_profile, estimate_profile

    other = tmp_path / "resnet18.yaml"
    dump_profile(estimate_profile(partition("resnet18", (3, 32, 32)), load_board("jetson-nano")), other)
    rc, out, err = run(capsys, *BASE, "--model", "mobilenet_v2", "--input-shape", "3,32,32", "--profile", str(other))
    assert rc == 2 and out == ""
    assert f"error: --profile {other}: the model profile's offered cuts do not match the partition's" in err


@pytest.mark.skipif(not _has_cuda(), reason="needs a CUDA GPU")
def test_heads_run_on_cuda_and_every_frame_completes(tmp_path, capsys):
    out = tmp_path / "run"
    rc, _, err = run(
        capsys, "--edge", f"tcp://127.0.0.1:{_unused_port()}", "--backend", "simulated", "--board", "jetson-orin-nano",
        "--model", "mobilenet_v2", "--input-shape", "3,32,32", "--duration", "2", "--fps", "10", "--device", "cuda",
        "--out", str(out),
    )
    assert rc == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["setup"]["device"] == "cuda"
    assert summary["frames"]["completed"] == summary["frames"]["arrived"] == 20


def test_a_busy_edge_is_left_alone_for_the_wait_it_advises(tmp_path, capsys, monkeypatch, traces_dir):
    """An edge with room for one request and a slow tail answers BUSY; the agent runs those
    frames itself, sends nothing during each advised wait, and every frame completes once."""
    import threading
    import time

    import device_agent.runtime as runtime
    from edge_agent.runner import ModelRequest, SplitTailRunner
    from edge_agent.server import EdgeServer, ServerConfig
    from wire.transport import EdgeClient

    class SlowTails(SplitTailRunner):
        def run(self, model, cut, inputs):
            time.sleep(0.3)
            return super().run(model, cut, inputs)

    import logging

    # an earlier `cutedge edge` test may have left its handler on a stream that is closed now
    monkeypatch.setattr(logging.getLogger("cutedge.edge"), "handlers", [])
    server = EdgeServer(SlowTails([ModelRequest("vgg16", (3, 64, 64))]),
                        ServerConfig("tcp://127.0.0.1:0", workers=1, max_queued=1))
    endpoint = server.start()
    serve = threading.Thread(target=server.serve)
    serve.start()
    submits: list[float] = []
    submit = EdgeClient.submit

    def timed_submit(self, *a, **k):
        submits.append(time.monotonic())
        return submit(self, *a, **k)

    agents = []
    summary = runtime.LiveAgent.summary

    def keep(self):
        agents.append(self)
        return summary(self)

    monkeypatch.setattr(EdgeClient, "submit", timed_submit)
    monkeypatch.setattr(runtime.LiveAgent, "summary", keep)
    try:
        rc, out, err = run(
            capsys, "--edge", endpoint, "--backend", "simulated", "--board", "jetson-nano",
            "--model", "vgg16", "--input-shape", "3,64,64",
            "--link-trace", str(traces_dir / "mahimahi" / "TMobile-LTE-short.up"), "--trace-scale", "4",
            "--frames", "40", "--fps", "10", "--no-calibrate", "--out", str(tmp_path / "run"),
        )
    finally:
        server.request_stop("test over")
        serve.join(30)
    assert rc == 0, err
    agent = agents[0]
    f = json.loads((tmp_path / "run" / "summary.json").read_text())["frames"]
    assert f["completed"] == f["arrived"] == 40 and f["conserved"]
    assert f["busy_replies"] == len(agent.busy_replies) > 0 and f["offloaded"] > 0
    assert "edge busy" in out + err
    for t_busy, wait in agent.busy_replies:
        start, end = agent._t0 + t_busy + 0.005, agent._t0 + t_busy + wait - 0.005
        assert not [t for t in submits if start < t < end], (t_busy, wait)
