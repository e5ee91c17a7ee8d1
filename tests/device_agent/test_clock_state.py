"""Clock state that survives a crash: SIGKILL after a pin, `cutedge device restore`, the next
run's start, two processes pinning at once, a failed restore retried at exit."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from fake_sysfs import FakeKernel, make_tree
from test_clock_guard import _lines, _wait_for

from cutedge.cli import main
from device_agent.clock import BackendError, ClockBusyError, ClockLock, RestoreGuard, runtime_dir
from device_agent.clock.sysfs import SysfsBackend

REPO = Path(__file__).resolve().parents[2]


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


class Holder:
    """`cutedge device clock HZ --hold 60` in a real process, started and waited for."""

    def __init__(self, board, hz: int):
        cmd = [
            sys.executable,
            "-m",
            "cutedge",
            "device",
            "clock",
            str(hz),
            "--backend",
            "sysfs",
            "--sysfs-root",
            str(board.root),
            "--hold",
            "60",
            "--governor",
            "userspace",
        ]
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=_lines, args=(self.proc.stdout, self.lines), daemon=True).start()
        _wait_for(self.lines, "holding 60 s")

    def stop(self, sig: int) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=20)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def board(tmp_path):
    board = make_tree(tmp_path / "tree", "orin-nano-jp6")
    kernel = FakeKernel(board).start()  # moves cur_freq for the child processes
    yield board
    kernel.stop()


def _pinned(board, hz: int) -> dict[str, str]:
    return {"min_freq": str(hz), "max_freq": str(hz), "governor": "userspace"}


def _killed_while_pinned(board) -> tuple[dict[str, str], int]:
    before = board.state()
    hz = board.levels_hz[2]
    holder = Holder(board, hz)
    try:
        assert board.state() == _pinned(board, hz)
        (state,) = runtime_dir().glob("*.json")
        assert json.loads(state.read_text())["saved"] == before  # written before the pin
        pid = holder.proc.pid
        assert holder.stop(signal.SIGKILL) == -signal.SIGKILL
    finally:
        holder.close()
    assert board.state() == _pinned(board, hz)  # nothing could restore it
    return before, pid


def test_restore_puts_back_what_a_killed_process_left_pinned(board, capsys):
    before, pid = _killed_while_pinned(board)
    rc, out, err = cli(capsys, "device", "restore", "--sysfs-root", str(board.root))
    assert rc == 0, err
    assert board.state() == before
    assert out == (
        f"restored 17000000.gpu (pinned by pid {pid}, which is gone): "
        f"min_freq={before['min_freq']}, max_freq={before['max_freq']}, governor=nvhost_podgov\n"
    )
    assert list(runtime_dir().glob("*.json")) == []
    rc, out, _ = cli(capsys, "device", "restore")
    assert rc == 0 and out.startswith("nothing to restore (no clock state in ")


def test_the_next_run_restores_first_and_keeps_the_true_original(board, capsys):
    before, pid = _killed_while_pinned(board)
    rc, out, err = cli(
        capsys, "device", "clock", str(board.levels_hz[5]), "--sysfs-root", str(board.root)
    )
    assert rc == 0, err
    assert f"warning: restored 17000000.gpu (pinned by pid {pid}, which is gone) first" in err
    # restored to the settings before the killed run, not to the ones it had pinned
    assert f"restored: min_freq={before['min_freq']}, max_freq={before['max_freq']}" in out
    assert board.state() == before
    assert list(runtime_dir().glob("*.json")) == []


def test_a_second_pinning_process_is_refused_in_one_line(board, capsys):
    before = board.state()
    hz = board.levels_hz[1]
    holder = Holder(board, hz)
    try:
        rc, out, err = cli(
            capsys, "device", "clock", str(board.levels_hz[4]), "--sysfs-root", str(board.root)
        )
        assert rc == 2 and out == ""
        (line,) = err.splitlines()
        assert line.startswith(
            f"error: the GPU clock of 17000000.gpu is held by another process (pid "
            f"{holder.proc.pid}: cutedge device clock {hz}"
        ) and line.endswith("; stop it first")
        assert board.state() == _pinned(board, hz)  # the holder's pin stands
        rc, _, err = cli(capsys, "device", "restore")
        assert rc == 2 and err.startswith("error: not restored: the GPU clock of 17000000.gpu")
        assert holder.stop(signal.SIGTERM) == 128 + signal.SIGTERM
    finally:
        holder.close()
    assert board.state() == before


def test_state_from_an_earlier_boot_is_dropped_not_restored(tmp_path, capsys):
    board = make_tree(tmp_path, "xavier-nx-jp4")
    backend = SysfsBackend(board.root)
    lock = ClockLock(backend.device_ref()).acquire()
    lock.record({"min_freq": "114750000", "max_freq": "114750000", "governor": "userspace"})
    data = json.loads(lock.state_path.read_text())
    lock.state_path.write_text(json.dumps(dict(data, boot_id="an-earlier-boot")))
    lock.release()
    before = board.state()
    rc, out, _ = cli(capsys, "device", "restore")
    assert rc == 0 and "from an earlier boot" in out
    assert board.state() == before and not lock.state_path.exists()


def test_a_failed_restore_is_raised_kept_and_retried_at_exit(tmp_path, monkeypatch, capsys):
    board = make_tree(tmp_path, "tx2-jp4")
    kernel = FakeKernel(board).install(monkeypatch)
    before = board.state()
    failing = {"on": False}

    def store(path, value):
        if failing["on"]:
            raise OSError(5, "Input/output error")
        kernel.store(path, value)

    from device_agent.clock import sysfs

    monkeypatch.setattr(sysfs, "store", store)
    guard = RestoreGuard(SysfsBackend(board.root, settle_s=0.01))
    with pytest.raises(BackendError, match="restore incomplete"):
        with guard:
            guard.backend.pin(board.levels_hz[3])
            failing["on"] = True
    assert board.state() != before and guard.lock is not None
    assert guard.lock.state_path.exists()  # kept for `cutedge device restore`
    failing["on"] = False
    guard._restore_at_exit()  # what the interpreter runs at exit
    import atexit

    atexit.unregister(guard._restore_at_exit)
    assert board.state() == before
    assert capsys.readouterr().err.startswith("restored at exit: min_freq=")
    assert list(runtime_dir().glob("*.json")) == []
    ClockLock(SysfsBackend(board.root).device_ref()).acquire().release()  # the lock is free


def test_a_runtime_dir_others_can_write_is_refused(tmp_path, monkeypatch, capsys):
    board = make_tree(tmp_path / "tree", "tx2-jp4")
    FakeKernel(board).install(monkeypatch)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("CUTEDGE_RUNTIME_DIR", str(shared))
    before = board.state()
    rc, _, err = cli(capsys, "device", "clock", "854.25MHz", "--sysfs-root", str(board.root))
    assert rc == 2
    assert err == (
        f"error: runtime directory {shared} is writable by others (mode 777): make it 0700 or set "
        "CUTEDGE_RUNTIME_DIR=DIR\n"
    )
    assert board.state() == before


def test_simulated_backend_keeps_no_state(capsys):
    rc, _, _ = cli(
        capsys,
        "device",
        "clock",
        "1.02GHz",
        "--backend",
        "simulated",
        "--board",
        "jetson-orin-nano",
    )
    assert rc == 0 and list(runtime_dir().iterdir()) == []


@pytest.mark.skipif(os.name != "posix", reason="flock is POSIX")
def test_lock_is_exclusive_within_one_host(tmp_path):
    ref = {"kind": "sysfs", "id": str(tmp_path / "node"), "name": "node"}
    first = ClockLock(ref).acquire()
    with pytest.raises(ClockBusyError, match=rf"held by another process \(pid {os.getpid()}:"):
        ClockLock(ref).acquire()
    first.release()
    ClockLock(ref).acquire().release()
