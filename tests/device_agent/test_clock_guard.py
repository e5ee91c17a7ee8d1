"""Restore on every exit: return, exception, SIGINT, SIGTERM (in-process and a real subprocess)."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fake_sysfs import FakeKernel, make_tree

from device_agent.clock import RestoreGuard
from device_agent.clock.sysfs import SysfsBackend

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def pinned(tmp_path, monkeypatch):
    """A fake Xavier NX with a kernel, its state before, and a sysfs backend on it."""
    board = make_tree(tmp_path, "xavier-nx-jp4")
    kernel = FakeKernel(board).install(monkeypatch)
    return board, kernel, board.state(), SysfsBackend(board.root, settle_s=0.05)


def test_normal_return_restores(pinned):
    board, _, before, b = pinned
    with RestoreGuard(b) as guard:
        b.pin(board.levels_hz[2])
        assert board.state() != before
    assert board.state() == before
    assert guard.restored == before and guard.signal is None
    assert guard.restore() == before  # again: same answer, nothing written
    assert b.restore() == {}


def test_exception_restores(pinned):
    board, _, before, b = pinned
    with pytest.raises(ZeroDivisionError):
        with RestoreGuard(b):
            b.pin(board.levels_hz[2])
            1 / 0  # noqa: B018
    assert board.state() == before


def test_backend_as_context_manager_restores_and_closes(pinned):
    board, _, before, b = pinned
    with pytest.raises(RuntimeError):
        with b:
            b.pin(board.levels_hz[7])
            raise RuntimeError("agent crashed")
    assert board.state() == before


def test_sigint_restores_then_raises_keyboardinterrupt(pinned):
    board, _, before, b = pinned
    previous = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with RestoreGuard(b) as guard:
            b.pin(board.levels_hz[2])
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(10)  # interrupted by the handler's exception
    assert board.state() == before
    assert guard.signal == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is previous  # handlers put back


def test_sigterm_restores_then_exits_143(pinned):
    board, _, before, b = pinned
    with pytest.raises(SystemExit) as exc:
        with RestoreGuard(b):
            b.pin(board.levels_hz[2])
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)
    assert exc.value.code == 128 + signal.SIGTERM
    assert board.state() == before


def test_second_signal_during_restore_does_not_cut_it_short(pinned, monkeypatch):
    board, kernel, before, b = pinned
    store = kernel.store
    fired = []

    def store_and_get_killed_again(path, value):
        # a second `kill` lands while the restore is writing min_freq/max_freq
        if fired == [] and guard._restoring:
            fired.append(True)
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)
        store(path, value)

    from device_agent.clock import sysfs

    monkeypatch.setattr(sysfs, "store", store_and_get_killed_again)
    with pytest.raises(SystemExit):
        with RestoreGuard(b) as guard:
            b.pin(board.levels_hz[4])
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)
    assert fired
    assert guard.ignored_signals == [signal.SIGTERM, signal.SIGINT]
    assert board.state() == before


def test_guard_outside_the_main_thread_still_restores(pinned):
    board, _, before, b = pinned
    result = {}

    def worker() -> None:
        with RestoreGuard(b) as guard:
            b.pin(board.levels_hz[1])
        result["handled"] = guard.signals_handled

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert result == {"handled": False}
    assert board.state() == before


# -- a real process killed mid-hold --------------------------------------------------------------


def _lines(stream, out: queue.Queue) -> None:
    for line in stream:
        out.put(line)
    out.put(None)


def _wait_for(q: queue.Queue, text: str, timeout_s: float = 30.0) -> list[str]:
    seen = []
    while True:
        line = q.get(timeout=timeout_s)
        if line is None:
            raise AssertionError(f"process ended before printing {text!r}: {''.join(seen)}")
        seen.append(line)
        if text in line:
            return seen


@pytest.mark.parametrize(
    ("sig", "code"),
    [
        (signal.SIGTERM, 128 + signal.SIGTERM),
        (signal.SIGINT, 130),
        (signal.SIGHUP, 128 + signal.SIGHUP),  # the SSH session drops
        (signal.SIGQUIT, 128 + signal.SIGQUIT),
    ],
    ids=["SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT"],
)
def test_cli_killed_mid_hold_restores_the_tree(tmp_path, sig, code):
    board = make_tree(tmp_path, "orin-nano-jp6")
    before = board.state()
    kernel = FakeKernel(board).start()  # moves cur_freq for the child, as the kernel would
    target = board.levels_hz[2]
    cmd = [
        sys.executable,
        "-m",
        "cutedge",
        "device",
        "clock",
        str(target),
        "--backend",
        "sysfs",
        "--sysfs-root",
        str(board.root),
        "--hold",
        "30",
        "--governor",
        "userspace",
    ]
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    out_q: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, out_q), daemon=True).start()
    try:
        head = _wait_for(out_q, "holding 30 s")
        assert board.state() == {
            "min_freq": str(target),
            "max_freq": str(target),
            "governor": "userspace",
        }
        proc.send_signal(sig)
        rc = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
        kernel.stop()
    rest = []
    while (line := out_q.get(timeout=5)) is not None:
        rest.append(line)
    stdout, stderr = "".join(head + rest), proc.stderr.read()
    assert rc == code, stderr
    assert board.state() == before
    assert re.search(r"before: \d+ MHz; pinned 510 MHz; now 510 MHz", stdout), stdout
    assert (
        f"restored: min_freq={before['min_freq']}, max_freq={before['max_freq']}, "
        "governor=nvhost_podgov" in stdout
    )
    assert "Traceback" not in stderr
