"""Eight device agents (real ``cutedge device run`` processes, simulated clock backend) against
one ``cutedge edge --pool ray --pool-workers 2`` (a real local Ray Serve instance), one replica
SIGKILLed while it runs a request mid-run: every frame every device sent is completed exactly
once, the edge stays up and stops cleanly.

The model is TinyNet with a hook that holds one tail call (``edge_stallnet``), so the kill lands
on a replica that is running a request, whatever the timing. The devices' model profile prices
heads on the board high, so their controllers send every frame to the edge.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("ray.serve")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "edge_agent"))

import yaml  # noqa: E402
from edge_helpers import CliProcess, EdgeProcess  # noqa: E402
from edge_stallnet import INPUT_SHAPE, MODEL, STALL_ENV  # noqa: E402
from pool_helpers import POOL_START_S, descendants, kill_stalled_replica, wait_until  # noqa: E402

DEVICES = 8
FRAMES = 80
FPS = 10.0
SHAPE = ",".join(map(str, INPUT_SHAPE))


def _offloading_profile(path: Path) -> Path:
    """The FLOPs profile of the model on a Jetson Nano, with every head 10^5 times dearer."""
    from controller.profiles import load_board
    from dnn_split.partition import partition
    from dnn_split.profile import estimate_profile

    doc = dict(estimate_profile(partition(MODEL, INPUT_SHAPE, announce=lambda line: None), load_board("jetson-nano")))
    cuts = []
    for c in doc["cuts"]:
        c = dict(c)
        if c["index"] > 0:
            c["head_flops"] *= 10**5
            c["head_s"] *= 10**5
        cuts.append(c)
    doc["cuts"] = cuts
    path.write_text(yaml.safe_dump(doc))
    return path


def _served_peers(log: Path) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for line in log.read_text().splitlines()[1:]:
        parts = line.split(",")
        if len(parts) == 5:
            out.setdefault(parts[0], []).append(int(parts[1]))
    return out


def _match(devices: list[tuple[set[int], int]], peers: dict[str, list[int]]) -> dict[int, str]:
    """Which edge peer (connection) each device was: a device whose results came from the edge
    are ``taken`` and which ran ``fallback`` frames itself can be a peer that served every
    request it took and at most ``fallback`` more (run by the edge, not taken). Request ids
    start at 1 on every device, so this is a bipartite matching, found by augmenting paths."""
    can = [[p for p, rids in peers.items() if taken <= set(rids) and len(set(rids) - taken) <= fb]
           for taken, fb in devices]
    owner: dict[str, int] = {}

    def place(d: int, seen: set[str]) -> bool:
        for p in can[d]:
            if p not in seen:
                seen.add(p)
                if p not in owner or place(owner[p], seen):
                    owner[p] = d
                    return True
        return False

    for d in range(len(devices)):
        assert place(d, set()), f"device {d}: no edge peer served what it took ({len(devices[d][0])} results)"
    return {d: p for p, d in owner.items()}


def test_eight_devices_on_a_two_worker_pool_with_a_worker_killed_complete_every_frame_once(tmp_path):
    profile = _offloading_profile(tmp_path / "profile.yaml")
    stall = tmp_path / "stall"
    stall.mkdir()
    served_log = tmp_path / "served.csv"
    edge = EdgeProcess(
        "--models", f"{MODEL}@{SHAPE.replace(',', 'x')}", "--pool", "ray", "--pool-workers", "2",
        "--served-log", str(served_log), "--log-interval-s", "1",
        env={STALL_ENV: str(stall), "RAY_ADDRESS": ""},
    )
    devices: list[CliProcess] = []
    try:
        edge.wait_for(r"edge: serving .* on tcp://", POOL_START_S)
        edge.started()
        for i in range(DEVICES):
            devices.append(CliProcess(
                "device", "run", "--edge", edge.endpoint, "--model", MODEL, "--input-shape", SHAPE,
                "--backend", "simulated", "--board", "jetson-nano", "--profile", str(profile),
                "--no-calibrate", "--frames", str(FRAMES), "--fps", str(FPS), "--edge-timeout", "10",
                "--seed", "0", "--out", str(tmp_path / f"dev{i}"),
            ))
        # every device is offloading: the edge has served each of them
        wait_until(lambda: len(_served_peers(served_log)) >= DEVICES or any(d.proc.poll() for d in devices),
                   180, "the edge served all eight devices", 0.2)
        assert len(_served_peers(served_log)) >= DEVICES, "\n".join(edge.lines[-20:])
        (stall / "armed").touch()  # the next tail call any replica starts is held there
        killed = kill_stalled_replica(edge, stall)
        edge.wait_for(r"edge: pool: run_batch lost on attempt 1 of 3", timeout_s=60)
        rcs = [d.proc.wait(timeout=300) for d in devices]
        assert edge.proc.poll() is None  # the edge stayed up
        procs = descendants(edge.proc.pid)
        assert killed not in procs
        assert edge.stop(timeout_s=120) == 0
    finally:
        for d in devices:
            d.kill()
        edge.kill()
    assert rcs == [0] * DEVICES, "\n".join(ln for d in devices for ln in d.lines[-5:])
    assert any("edge: stopped after" in ln for ln in edge.lines) and any("edge: pool shut down" in ln for ln in edge.lines)
    wait_until(lambda: not [p for p in procs if Path(f"/proc/{p}").exists()], 60, "the edge's Ray processes gone", 0.2)

    # each device: every frame arrived, completed exactly once, none left anywhere
    took = []
    for i in range(DEVICES):
        out = tmp_path / f"dev{i}"
        f = json.loads((out / "summary.json").read_text())["frames"]
        assert f["arrived"] == FRAMES and f["completed"] == FRAMES, (i, f)
        assert f["in_flight"] == 0 and f["dropped"] == 0 and f["completed_twice"] == 0 and f["conserved"], (i, f)
        assert f["offloaded"] + f["local"] == FRAMES
        rows = list(csv.DictReader((out / "frames.csv").open()))
        assert sorted(int(r["fid"]) for r in rows) == list(range(FRAMES))  # each frame once
        taken = [int(r["request_id"]) for r in rows if r["path"] == "edge"]
        assert len(taken) == len(set(taken)) == f["offloaded"] > 0
        took.append((set(taken), f["fallback"]))

    # the edge: no request answered twice, and every result a device took is one the edge sent;
    # what the edge sent that a device did not take was run by that device's fallback
    peers = _served_peers(served_log)
    assert len(peers) == DEVICES
    for p, rids in peers.items():
        assert len(rids) == len(set(rids)), f"peer {p}: a request answered twice"
    _match(took, peers)
