"""`cutedge device info` and `cutedge device clock`: output, JSON, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fake_sysfs import LAYOUTS, FakeKernel, make_tree, own_runtime_dir, unprivileged

from cutedge.cli import main

REPO = Path(__file__).resolve().parents[2]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["device", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if not ln.startswith("note: ")]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_info_json_on_each_layout(tmp_path, capsys, layout):
    board = make_tree(tmp_path, layout)
    rc, out, err = run(
        capsys, "info", "--backend", "sysfs", "--sysfs-root", str(tmp_path), "--json"
    )
    assert rc == 0 and err == ""
    info = json.loads(out)
    assert info["backend"] == "sysfs"
    assert board.node.name in info["device"]
    assert info["levels_hz"] == list(board.levels_hz)
    assert all(isinstance(f, int) for f in info["levels_hz"])
    assert info["current_hz"] == board.levels_hz[-1]
    assert set(info["power_w"]) == set(board.rail_files)
    assert all(w == pytest.approx(1.0) for w in info["power_w"].values())


def test_info_text(tmp_path, capsys):
    make_tree(tmp_path, "xavier-nx-jp4")
    rc, out, _ = run(capsys, "info", "--sysfs-root", str(tmp_path))
    assert rc == 0
    assert "backend:  sysfs" in out
    assert "levels:   15, 114.75 204 306" in out and "1109.25 MHz" in out
    assert "current:  1109.25 MHz (1109250000 Hz)" in out
    assert (
        "power:    VDD_IN 1.000 W, VDD_CPU_GPU_CV 1.000 W, VDD_SOC 1.000 W (board 1.000 W)" in out
    )


def test_info_json_without_rails_has_null_power(tmp_path, capsys):
    import shutil

    make_tree(tmp_path, "nano-jp4")
    shutil.rmtree(tmp_path / "sys/bus")
    rc, out, _ = run(capsys, "info", "--sysfs-root", str(tmp_path), "--json")
    info = json.loads(out)
    assert rc == 0 and info["power_w"] is None and "power" not in info["capabilities"]


def test_info_reports_an_unreadable_clock_and_goes_on(tmp_path, capsys):
    board = make_tree(tmp_path, "orin-nano-jp6")
    (board.real_node / "cur_freq").unlink()
    rc, out, err = run(capsys, "info", "--sysfs-root", str(tmp_path), "--json")
    info = json.loads(out)
    assert rc == 0 and info["current_hz"] is None
    assert "cur_freq: no such file" in info["errors"]["current_hz"]
    assert "warning: current_hz: cannot read" in err


def test_info_simulated_board(capsys):
    rc, out, err = run(capsys, "info", "--backend", "simulated", "--board", "jetson-tx2", "--json")
    info = json.loads(out)
    assert rc == 0 and err == ""
    assert info["backend"] == "simulated" and info["device"].startswith("jetson-tx2")
    assert info["levels_hz"] == sorted(info["levels_hz"]) and len(info["levels_hz"]) == 14
    assert list(info["power_w"]) == ["board"] and info["power_w"]["board"] > 0


def test_info_auto_on_an_empty_tree_says_why_it_simulates(tmp_path, capsys):
    rc, out, err = run(capsys, "info", "--sysfs-root", str(tmp_path), "--json")
    assert rc == 0 and json.loads(out)["backend"] in ("simulated", "nvml")
    (note,) = err.splitlines()
    assert (
        note.startswith("note: auto: sysfs: no GPU devfreq node under") and "using backend" in note
    )


def test_clock_pins_holds_and_restores(tmp_path, capsys, monkeypatch):
    board = make_tree(tmp_path, "tx2-jp4")
    FakeKernel(board).install(monkeypatch)
    before = board.state()
    rc, out, err = run(
        capsys, "clock", "854.25MHz", "--sysfs-root", str(tmp_path), "--hold", "0.05"
    )
    assert rc == 0, err
    assert "before: 1300.5 MHz; pinned 854.25 MHz; now 854.25 MHz" in out
    assert "holding 0.05 s" in out
    assert (
        f"restored: min_freq={before['min_freq']}, max_freq={before['max_freq']}, "
        "governor=nvhost_podgov" in out
    )
    assert board.state() == before


def test_clock_warns_when_the_clock_is_held_elsewhere(tmp_path, capsys, monkeypatch):
    board = make_tree(tmp_path, "orin-nano-jp6")
    FakeKernel(board, throttle_hz=612_000_000).install(monkeypatch)
    rc, out, err = run(capsys, "clock", "1020000000", "--sysfs-root", str(tmp_path))
    assert rc == 0
    assert "pinned 1020 MHz; now 612 MHz" in out
    assert err.startswith("warning: 17000000.gpu: cur_freq reads 612000000 Hz")


def test_clock_on_the_simulated_backend(capsys):
    rc, out, _ = run(
        capsys, "clock", "1.02GHz", "--backend", "simulated", "--board", "jetson-orin-nano"
    )
    assert rc == 0
    assert "pinned 1020 MHz" in out and "restored: gpu_hz=1020000000" in out


def test_not_a_level_lists_the_nearest(tmp_path, capsys, monkeypatch):
    board = make_tree(tmp_path, "xavier-nx-jp4")
    FakeKernel(board).install(monkeypatch)
    before = board.state()
    rc, out, err = run(capsys, "clock", "1000000000", "--sysfs-root", str(tmp_path))
    assert rc == 2 and out == ""
    assert one_error_line(err) == (
        "error: 1000000000 Hz is not a GPU level of 17000000.gv11b; nearest levels: 956250000, "
        "1007250000 Hz (all levels: cutedge device info)"
    )
    assert board.state() == before


def test_permission_error_is_one_line(world_tmp, capsys, monkeypatch):
    board = make_tree(world_tmp, "orin-nano-jp6")
    before = board.state()
    own_runtime_dir(world_tmp, monkeypatch)
    with unprivileged(board):
        rc, out, err = run(capsys, "clock", "306MHz", "--sysfs-root", str(world_tmp))
    assert rc == 2
    line = one_error_line(err)
    assert line.startswith(
        f"error: cannot write {board.node}/min_freq: permission denied; run as root"
    )
    assert "udev rule in docs/device-backends.md" in line
    assert "restored" not in out
    assert board.state() == before


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["clock", "fast"],
            "error: HZ: expected a clock such as 1109250000 or 1109.25MHz, got 'fast'",
        ),
        (
            ["clock", "12parsecs"],
            "error: HZ: expected a clock such as 1109250000 or 1109.25MHz, got '12parsecs'",
        ),
        (["clock", "0"], "error: HZ: expected a positive whole number of Hz, got '0'"),
        (["clock", "1.5"], "error: HZ: expected a positive whole number of Hz, got '1.5'"),
        (["clock", "306MHz", "--hold", "-1"], "error: --hold: expected seconds >= 0, got '-1'"),
        (["clock", "306MHz", "--hold", "soon"], "error: --hold: expected seconds >= 0, got 'soon'"),
        (
            ["info", "--backend", "cuda"],
            "error: --backend: unknown backend 'cuda' "
            "(choose from auto, sysfs, jtop, nvml, simulated)",
        ),
        (
            ["info", "--sysfs-root", "/no/such/dir"],
            "error: --sysfs-root: /no/such/dir is not a directory",
        ),
        (
            ["info", "--backend", "simulated", "--board", "jetson-xyz"],
            "error: jetson-xyz: no such board (built-in: ",
        ),
        (
            ["clock", "306MHz", "--backend", "simulated", "--governor", "userspace"],
            "error: --governor: applies to devfreq (sysfs, jtop), not the simulated backend",
        ),
    ],
)
def test_bad_arguments_are_one_line(capsys, argv, message):
    rc, out, err = run(capsys, *argv)
    assert rc == 2
    assert one_error_line(err).startswith(message)


def test_sysfs_without_a_gpu_node_is_one_line(tmp_path, capsys):
    rc, _, err = run(capsys, "info", "--backend", "sysfs", "--sysfs-root", str(tmp_path))
    assert rc == 2
    assert one_error_line(err).startswith(
        f"error: no GPU devfreq node under {tmp_path}/sys/class/devfreq"
    )


def test_console_script_exit_status_on_a_bad_level(tmp_path):
    make_tree(tmp_path, "orin-nano-jp6")
    cmd = [
        sys.executable,
        "-m",
        "cutedge",
        "device",
        "clock",
        "300MHz",
        "--sysfs-root",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr == (
        "error: 300000000 Hz is not a GPU level of 17000000.gpu; nearest levels: 306000000 Hz "
        "(all levels: cutedge device info)\n"
    )


def test_controller_does_not_import_the_device_backends():
    code = (
        "import sys, pkgutil, importlib, controller\n"
        "for m in pkgutil.walk_packages(controller.__path__, 'controller.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = [m for m in sys.modules if m.startswith(('device_agent', 'jtop', 'pynvml'))]\n"
        "print(bad)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
