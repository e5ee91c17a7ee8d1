"""``cutedge profile --levels``: per-level head times, head energy and idle power, through the
clock backends, on a fake Orin Nano sysfs tree whose rails follow the pinned clock and on the
simulated board; the clock is put back on every way out (SIGTERM included); what cannot be
measured is one line and listed in ``unmeasured``; the file feeds the system model as is."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from controller.model import SystemModel
from controller.profiles import load_board, load_model, load_network
from cutedge.cli import main

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests" / "device_agent"))

from fake_sysfs import FakeKernel, FakePower, make_tree  # noqa: E402

MHZ = 1_000_000
ORIN = "jetson-orin-nano"
SMALL = ["--model", "resnet18", "--input-shape", "3,32,32"]
TINY = ["--model", "tiny_split_models:tiny", "--input-shape", "3,16,16"]
# short windows: enough meter readings (every 5 ms) for the fake rails, a fast run
FAST = ["--repeats", "2", "--warmup", "1", "--idle-s", "0.05", "--energy-window-s", "0.05"]


def cli(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["profile", *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def warnings(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("warning: ")]


@pytest.fixture
def orin(tmp_path, monkeypatch):
    """A fake Orin Nano (JetPack 6) whose rails follow the clock and mark_busy, in-process."""
    board = make_tree(tmp_path / "root", "orin-nano-jp6", release=True)
    kernel = FakeKernel(board, power=FakePower()).install(monkeypatch)
    return board, kernel


def sysfs_args(board) -> list[str]:
    return ["--backend", "sysfs", "--sysfs-root", str(board.root), "--board", ORIN]


# -- the fake Orin Nano --------------------------------------------------------------------------


def test_all_levels_on_the_fake_orin_follow_the_pinned_clock(orin, tmp_path, capsys):
    board, kernel = orin
    before = board.state()
    path = tmp_path / "p.yaml"
    rc, out, err = cli(
        capsys, *SMALL, "--levels", "all", *sysfs_args(board), *FAST, "--out", str(path)
    )
    assert rc == 0, err
    assert board.state() == before  # min, max and governor put back
    assert "restored: " in err and "estimate: 8 level(s)" in err
    raw = yaml.safe_load(path.read_text())
    levels = list(board.levels_hz)
    assert raw["levels_hz"] == levels and raw["unmeasured"] == []
    prov = raw["provenance"]
    assert prov["method"] == "measured" and prov["board"] == ORIN
    assert prov["clock_hz"] == levels[-1] and prov["clock_backend"] == "sysfs"
    assert prov["l4t"] == "R36.4.3" and prov["date"]
    # the idle power is the meter's, and it follows the pinned clock as the fake's model says
    model = kernel.power
    idle = raw["power"]["idle_w"]
    assert raw["power"]["rail"] == "VDD_IN"
    for f, w in zip(levels, idle):
        assert w == pytest.approx(model.idle_w(f), abs=0.011)  # 5 mW steps of the INA3221
    assert all(b > a for a, b in zip(idle, idle[1:]))
    assert idle[-1] - idle[0] == pytest.approx(model.idle_w(levels[-1]) - model.idle_w(levels[0]), abs=0.02)
    busy = raw["power"]["busy_w"]
    cuts = raw["cuts"]
    assert len(cuts) == 5
    for j, f in enumerate(levels):
        # the file's own relation, and busy clearly above idle by about the fake's dynamic power
        measured = [c for c in cuts[1:] if c["head_j_by_level"][j] is not None]
        assert len(measured) == 4
        expect = idle[j] + sum(c["head_j_by_level"][j] for c in measured) / sum(
            c["head_s_by_level"][j] for c in measured
        )
        assert busy[j] == pytest.approx(expect, rel=1e-4)
        dynamic = model.busy_w(f) - model.idle_w(f)
        assert busy[j] - idle[j] > 0.5 * dynamic
    # the fake (like the simulated board) counts busy power by the wall clock of the timed
    # runs, so a run stalled by a loaded machine inflates one level's figure: look at most
    ratios = sorted(
        (b - i) / (model.busy_w(f) - model.idle_w(f)) for f, b, i in zip(levels, busy, idle)
    )
    assert 0.8 < ratios[len(ratios) // 2] < 1.5
    for c in cuts:
        for key in ("head_s_by_level", "head_p90_s_by_level", "head_j_by_level"):
            assert len(c[key]) == len(levels)
    assert cuts[0]["index"] == 0 and all(
        v == 0 for k in ("head_s_by_level", "head_p90_s_by_level", "head_j_by_level")
        for v in cuts[0][k]
    )
    for c in cuts[1:]:
        assert all(s > 0 for s in c["head_s_by_level"])
        assert all(p >= s for p, s in zip(c["head_p90_s_by_level"], c["head_s_by_level"]))
        assert all(j > 0 for j in c["head_j_by_level"])
        assert c["head_s"] == c["head_s_by_level"][-1]
    # the backend told the fake when heads ran
    assert True in kernel.busy_marks and kernel.busy is False

    # the system model built for this board uses the measured values at the measured levels
    prof = load_model(path)
    sm = SystemModel.build(load_board(ORIN), prof, load_network("lte-shannon"), 0.1)
    assert list(sm.levels_hz) == levels
    for i, c in enumerate(cuts):
        assert list(sm.head_s[i]) == pytest.approx(c["head_s_by_level"], rel=1e-9)
    assert list(sm.idle_w) == pytest.approx(idle, rel=1e-9)
    assert list(sm.busy_w) == pytest.approx(busy, rel=1e-9)
    # ...and only on that board
    other = SystemModel.build(load_board("jetson-nano"), prof, load_network("lte-shannon"), 0.1)
    assert list(other.idle_w) == pytest.approx(list(load_board("jetson-nano").idle_power_w()))


def test_sigterm_mid_run_puts_the_clock_back(tmp_path):
    """A real `cutedge profile --levels all` process on the fake Orin tree, sent SIGTERM while
    a level is pinned: the clock files are as they were, and no profile is written."""
    board = make_tree(tmp_path / "root", "orin-nano-jp6")
    kernel = FakeKernel(board, power=FakePower()).start()  # moves cur_freq for the child
    before = board.state()
    out = tmp_path / "p.yaml"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cutedge", "profile", *SMALL, "--levels", "all", *sysfs_args(board),
         "--repeats", "5", "--warmup", "1", "--idle-s", "2", "--out", str(out)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while board.state() == before:  # pinned once min_freq or max_freq moved
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the profiler never pinned a level"
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        kernel.stop()
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr
    assert board.state() == before  # min, max and governor put back
    assert "restored: " in stderr and "after signal 15" in stderr
    assert "no profile written" in stderr and not out.exists()


def test_a_rail_that_reads_nothing_is_one_line_and_the_times_are_kept(
    tmp_path, capsys, monkeypatch
):
    board = make_tree(tmp_path / "root", "orin-nano-jp6")
    FakeKernel(board, power=FakePower(dead=("VDD_IN",))).install(monkeypatch)
    before = board.state()
    path = tmp_path / "p.yaml"
    rc, _, err = cli(
        capsys, *TINY, "--levels", "1020MHz", *sysfs_args(board), *FAST, "--out", str(path)
    )
    assert rc == 0, err
    assert board.state() == before
    lines = [w for w in warnings(err) if "VDD_IN" in w]
    assert len(lines) == 1 and "reads nothing" in lines[0]
    raw = yaml.safe_load(path.read_text())
    assert raw["levels_hz"] == [1_020_000_000]
    assert len(raw["unmeasured"]) == 1 and "rail VDD_IN" in raw["unmeasured"][0]
    assert raw["power"] == {"rail": "VDD_IN", "idle_w": [None], "busy_w": [None]}
    assert all(c["head_j_by_level"] == [None] for c in raw["cuts"][1:])
    assert all(c["head_s_by_level"][0] > 0 for c in raw["cuts"][1:])
    load_model(path)


def test_a_meter_too_coarse_for_the_heads_is_recorded(orin, tmp_path, capsys):
    board, _ = orin
    path = tmp_path / "p.yaml"
    # a meter reading every 0.5 s: two readings inside the 1.3 s idle window, none inside the
    # two runs of each tiny head (no energy window to stretch them)
    rc, _, err = cli(
        capsys, *TINY, "--levels", "306MHz", *sysfs_args(board), "--repeats", "2", "--warmup",
        "1", "--idle-s", "1.3", "--energy-window-s", "0", "--meter-interval-s", "0.5",
        "--out", str(path),
    )
    assert rc == 0, err
    raw = yaml.safe_load(path.read_text())
    coarse = [u for u in raw["unmeasured"] if "meter readings inside the timed window" in u]
    assert len(coarse) == 1 and coarse[0].startswith("head energy at 306 MHz not measured for")
    assert sum(coarse[0] in w for w in warnings(err)) == 1
    assert all(c["head_j_by_level"] == [None] for c in raw["cuts"][1:])
    assert all(c["head_s_by_level"][0] > 0 for c in raw["cuts"][1:])
    assert raw["power"]["busy_w"] == [None]
    assert raw["power"]["idle_w"][0] == pytest.approx(FakePower().idle_w(306 * MHZ), abs=0.011)


def test_levels_current_pins_nothing(orin, tmp_path, capsys):
    board, kernel = orin
    path = tmp_path / "p.yaml"
    rc, _, err = cli(
        capsys, *TINY, "--levels", "current", *sysfs_args(board), *FAST, "--out", str(path)
    )
    assert rc == 0, err
    assert kernel.writes == []  # not one write to the devfreq node
    raw = yaml.safe_load(path.read_text())
    assert raw["levels_hz"] == [board.levels_hz[-1]]
    assert raw["provenance"]["levels"] == "current (not pinned)"
    assert "restored" not in err


# -- the simulated board ---------------------------------------------------------------------


def test_simulated_board_powers(tmp_path, capsys):
    path = tmp_path / "p.yaml"
    rc, _, err = cli(
        capsys, *SMALL, "--levels", "all", "--backend", "simulated", "--board", ORIN,
        "--repeats", "3", "--warmup", "1", "--idle-s", "0.05", "--energy-window-s", "0",
        "--out", str(path),
    )
    assert rc == 0, err
    board = load_board(ORIN)
    raw = yaml.safe_load(path.read_text())
    assert raw["levels_hz"] == list(board.levels_hz) and raw["unmeasured"] == []
    assert raw["power"]["rail"] == "board"
    # idle: the exact integral of the board's idle power over the window
    assert raw["power"]["idle_w"] == pytest.approx(list(board.idle_power_w()), rel=0.01)
    # busy: the board's busy power, as far as the median head time stands for all the runs
    dynamic = board.busy_power_w() - board.idle_power_w()
    ratios = sorted(
        (b - i) / d for b, i, d in zip(raw["power"]["busy_w"], raw["power"]["idle_w"], dynamic)
    )
    # busy power is booked by the wall clock of the timed runs: a run stalled by a loaded
    # machine raises one level's figure, never lowers it much
    assert ratios[0] > 0.5 and 0.8 < ratios[len(ratios) // 2] < 1.5
    assert "restored: gpu_hz=1020000000" in err


def test_a_level_not_offered_or_refused_is_one_line_and_the_others_are_measured(
    tmp_path, capsys, monkeypatch
):
    from device_agent.clock import PermissionDeniedError
    from device_agent.clock.simulated import SimulatedBackend

    pin = SimulatedBackend.pin

    def refusing_pin(self, hz):
        if hz == 510 * MHZ:
            raise PermissionDeniedError("cannot write max_freq: permission denied (test)")
        return pin(self, hz)

    monkeypatch.setattr(SimulatedBackend, "pin", refusing_pin)
    path = tmp_path / "p.yaml"
    rc, _, err = cli(
        capsys, *TINY, "--levels", "306MHz,123456789,510MHz,1020MHz", "--backend", "simulated",
        "--board", ORIN, *FAST, "--out", str(path),
    )
    assert rc == 0, err
    raw = yaml.safe_load(path.read_text())
    assert raw["levels_hz"] == [306 * MHZ, 1020 * MHZ]
    not_offered = [u for u in raw["unmeasured"] if "123456789 Hz" in u]
    refused = [u for u in raw["unmeasured"] if "510 MHz" in u]
    assert len(not_offered) == 1 and "is not a GPU level" in not_offered[0]
    assert len(refused) == 1 and "permission denied" in refused[0]
    assert len(raw["unmeasured"]) == 2
    assert sum("123456789" in w for w in warnings(err)) == 1
    assert sum("510 MHz" in w for w in warnings(err)) == 1
    assert raw["provenance"]["clock_hz"] == 1020 * MHZ
    load_model(path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--levels", "all", "--backend", "nvml"], "--backend nvml: only --levels current"),
        (["--levels", "306MHz", "--backend", "nvml"], "--backend nvml: only --levels current"),
        (["--levels", "fast"], "--levels: HZ: expected a clock"),
        (["--levels", "all", "--estimate"], "--levels and --estimate do not go together"),
        (["--levels", "all", "--clock-hz", "1e9"], "--levels and --clock-hz do not go together"),
        (["--backend", "simulated"], "--backend goes with --levels"),
        (["--idle-s", "1"], "--idle-s goes with --levels"),
        (["--levels", "1MHz", "--backend", "simulated"], "no level of"),
    ],
)
def test_bad_level_arguments_are_one_error_line(capsys, args, message):
    rc, out, err = cli(capsys, *TINY, *args)
    assert rc == 2 and out == ""
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], err


def test_sysfs_without_a_board_name_is_one_error_line(orin, capsys):
    board, kernel = orin
    rc, _, err = cli(capsys, *TINY, "--levels", "all", "--backend", "sysfs", "--sysfs-root",
                     str(board.root))
    assert rc == 2 and "error: --levels: give --board NAME" in err
    assert kernel.writes == []


# -- GPU -------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_heads_at_simulated_levels(tmp_path, capsys):
    path = tmp_path / "p.yaml"
    rc, _, err = cli(
        capsys, *SMALL, "--device", "cuda", "--levels", "306MHz,1020MHz", "--backend",
        "simulated", "--board", ORIN, *FAST, "--out", str(path),
    )
    assert rc == 0, err
    raw = yaml.safe_load(path.read_text())
    assert "CUDA events" in raw["provenance"]["generator"]
    assert all(s > 0 for c in raw["cuts"][1:] for s in c["head_s_by_level"])
    assert all(j is not None and j > 0 for c in raw["cuts"][1:] for j in c["head_j_by_level"])


def _nvml_gpu() -> bool:
    try:
        from device_agent.clock import BackendError
        from device_agent.clock.nvml_backend import NvmlBackend

        b = NvmlBackend()
    except (ImportError, BackendError):
        return False
    b.close()
    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _nvml_gpu(), reason="needs an NVIDIA GPU with NVML")
def test_nvml_current_level_pins_nothing(tmp_path, capsys, monkeypatch):
    from device_agent.clock.nvml_backend import NvmlBackend

    def no_pin(self, hz):
        raise AssertionError("cutedge profile pinned a shared GPU")

    monkeypatch.setattr(NvmlBackend, "pin", no_pin)
    path = tmp_path / "p.yaml"
    rc, _, err = cli(
        capsys, *SMALL, "--device", "cuda", "--levels", "current", "--backend", "nvml",
        "--repeats", "5", "--idle-s", "0.3", "--out", str(path),
    )
    assert rc == 0, err
    raw = yaml.safe_load(path.read_text())
    assert len(raw["levels_hz"]) == 1 and raw["provenance"]["clock_backend"] == "nvml"
    assert raw["provenance"]["board"] is None and raw["provenance"]["nvidia_driver"]
    assert all(c["head_s_by_level"][0] > 0 for c in raw["cuts"][1:])
    load_model(path)
