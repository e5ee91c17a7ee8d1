"""`cutedge device service`: the systemd unit for the device agent, parsed and verified."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cutedge.cli import main

RUN_ARGS = [
    "--edge",
    "tcp://10.0.0.2:5555",
    "--model",
    "resnet50",
    "--backend",
    "sysfs",
    "--board",
    "jetson-orin-nano",
    "--out",
    "runs/live 100%",
]


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """systemd's unit syntax: [Section], Key=Value, keys may repeat, # comments."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in text.splitlines():
        if not line.strip() or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, line
        current.setdefault(key, []).append(value)
    return sections


def words(exec_value: str) -> list[str]:
    # systemd quoting here is shell-like; %% and $$ are its escapes for % and $
    return [w.replace("%%", "%").replace("$$", "$") for w in shlex.split(exec_value)]


def test_unit_runs_the_agent_as_the_group_and_restores_after_stop(tmp_path, capsys):
    path = tmp_path / "cutedge-device.service"
    rc = main(
        [
            "device",
            "service",
            "--user",
            "jetson",
            "--working-dir",
            str(tmp_path),
            "--out",
            str(path),
            "--",
            *RUN_ARGS,
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert f"wrote {path}" in out
    unit = parse_unit(path.read_text())
    svc = unit["Service"]
    assert svc["User"] == ["jetson"] and svc["Group"] == ["cutedge"]
    assert svc["Restart"] == ["on-failure"]
    assert svc["WorkingDirectory"] == [str(tmp_path.resolve())]
    assert "CUTEDGE_RUNTIME_DIR=/run/cutedge" in svc["Environment"]
    assert svc["RuntimeDirectory"] == ["cutedge"] and svc["RuntimeDirectoryMode"] == ["0700"]
    start = words(svc["ExecStart"][0])
    assert start[:5] == [sys.executable, "-m", "cutedge", "device", "run"]
    assert start[5:] == RUN_ARGS  # the space and the % survive the quoting
    (stop_post,) = svc["ExecStopPost"]
    assert words(stop_post)[1:] == ["-m", "cutedge", "device", "restore"]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    # the stop hook is a working command (here: nothing to restore)
    proc = subprocess.run(words(stop_post), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("nothing to restore"), proc.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path, capsys):
    path = tmp_path / "cutedge-device.service"
    assert main(["device", "service", "--user", "jetson", "--out", str(path), "--", *RUN_ARGS]) == 0
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60
    )
    ours = [ln for ln in proc.stderr.splitlines() if path.name in ln]
    assert proc.returncode == 0 and ours == [], proc.stderr


def test_stdout_by_default_and_sudo_user(monkeypatch, capsys):
    monkeypatch.setenv("SUDO_USER", "jetson")
    assert main(["device", "service", "--", *RUN_ARGS]) == 0
    unit = parse_unit(capsys.readouterr().out)
    assert unit["Service"]["User"] == ["jetson"]


def test_a_unit_for_several_edges_passes_each_one(monkeypatch, capsys):
    monkeypatch.setenv("SUDO_USER", "jetson")
    argv = [*RUN_ARGS, "--edge", "tcp://10.0.0.3:5555"]
    assert main(["device", "service", "--", *argv]) == 0
    start = words(parse_unit(capsys.readouterr().out)["Service"]["ExecStart"][0])
    assert start[5:] == argv


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "error: give the `device run` arguments after --, e.g. -- --edge tcp://HOST:5555"),
        (["--", "--model", "vgg16"], "error: device run arguments: Missing option '--edge'."),
        (
            ["--", "--edge", "10.0.0.2"],
            "error: device run arguments: --edge '10.0.0.2': expected "
            "tcp://HOST:PORT (e.g. tcp://10.0.0.2:5555)",
        ),
        (
            ["--", "--edge", "tcp://h:1", "--edge", "h:2"],
            "error: device run arguments: --edge 'h:2': expected tcp://HOST:PORT",
        ),
        (
            ["--", "--edge", "tcp://h:1", "--edge", "tcp://h:1"],
            "error: device run arguments: --edge 'tcp://h:1' given twice",
        ),
        (
            ["--", "--edge", "tcp://h:1", "--fps", "0"],
            "error: device run arguments: Invalid value"
            " for '--fps': 0.0 is not in the range x>=0.01.",
        ),
        (
            ["--user", "root", "--", "--edge", "tcp://h:1"],
            "error: --user: the agent should not run as root",
        ),
        (
            ["--group", "bad group", "--", "--edge", "tcp://h:1"],
            "error: --group: not a valid user or group name: 'bad group'",
        ),
        (
            ["--out", "unit.txt", "--", "--edge", "tcp://h:1"],
            "error: --out: a unit file name must end in .service, got 'unit.txt'",
        ),
        (
            ["--working-dir", "/no/such/dir", "--", "--edge", "tcp://h:1"],
            "error: --working-dir: /no/such/dir is not a directory",
        ),
    ],
)
def test_bad_input_is_one_line(argv, message, capsys, monkeypatch):
    monkeypatch.setenv("SUDO_USER", "jetson")
    rc = main(["device", "service", *argv])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith(message), err


def test_help():
    proc = subprocess.run(
        [sys.executable, "-m", "cutedge", "device", "service", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent,
    )
    assert proc.returncode == 0 and "Restart" not in proc.stderr
    assert "--group NAME" in proc.stdout and "cutedge device restore" in proc.stdout
