"""Helpers for tests of the edge pool: processes under an edge, waiting on a condition, and
killing the replica that holds the stalled call of ``edge_stallnet``."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from edge_helpers import EdgeProcess

POOL_START_S = 180.0  # generous: two replicas import torch and build the model on 2 busy cores


def descendants(pid: int) -> set[int]:
    """``pid`` and every process below it, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        out.add(p)
        todo += children.get(p, [])
    return out


def wait_until(cond, timeout_s: float, what: str, poll_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(poll_s)


def kill_stalled_replica(edge: EdgeProcess, stall: Path, timeout_s: float = 60.0) -> int:
    """Wait for the replica holding the stalled call, check it is one of the edge's pool
    workers, SIGKILL it; its PID."""
    claimed = stall / "claimed"
    text = wait_until(lambda: claimed.exists() and claimed.read_text().strip(), timeout_s,
                      "a replica took the stalled call")
    pid = int(text)
    edge.wait_for(rf"edge: pool worker pid {pid} serving", timeout_s=timeout_s)
    assert pid in descendants(edge.proc.pid)  # a process of this edge's own Ray instance
    assert "ServeReplica" in Path(f"/proc/{pid}/cmdline").read_text()
    os.kill(pid, signal.SIGKILL)
    return pid
