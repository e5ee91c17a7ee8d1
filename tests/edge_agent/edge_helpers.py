"""Helpers for edge tests: run ``cutedge edge`` (or any subcommand) as a subprocess and watch its
log, or an ``EdgeServer`` in this process on a thread."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
START_TIMEOUT_S = 90.0


class CliProcess:
    """``python -m cutedge ARGS...`` as a real subprocess, stderr collected line by line."""

    name = "cutedge"

    def __init__(self, *args: str, env: dict[str, str] | None = None):
        cmd = [sys.executable, "-m", "cutedge", *args]
        full_env = os.environ.copy()
        full_env["PYTHONPATH"] = os.pathsep.join(
            [str(HERE), str(REPO), full_env.get("PYTHONPATH", "")]
        )
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: list[str] = []
        self._new: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.out_lines: list[str] = []  # stdout, read too so a chatty process never blocks on it
        threading.Thread(target=self._read_out, daemon=True).start()

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.out_lines.append(line.rstrip("\n"))

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            line = line.rstrip("\n")
            self.lines.append(line)
            self._new.put(line)

    def wait_for(self, pattern: str, timeout_s: float = 10.0, start: int = 0) -> re.Match[str]:
        """The first log line (from index ``start``) matching ``pattern``; fails on timeout/exit."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        seen = start
        while True:
            while seen < len(self.lines):
                m = rx.search(self.lines[seen])
                seen += 1
                if m:
                    return m
            if self.proc.poll() is not None and self._new.empty():
                self._reader.join(1)
                if seen >= len(self.lines):
                    raise AssertionError(
                        f"{self.name} exited ({self.proc.returncode}) before {pattern!r}:\n"
                        + "\n".join(self.lines)
                    )
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"no log line {pattern!r} within {timeout_s} s:\n" + "\n".join(self.lines[-20:])
                )
            try:
                self._new.get(timeout=min(left, 0.2))
            except queue.Empty:
                pass

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(
                f"{self.name} did not stop within its timeout:\n" + "\n".join(self.lines[-20:])
            ) from None
        self._reader.join(5)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


class EdgeProcess(CliProcess):
    """``python -m cutedge edge --bind tcp://127.0.0.1:0 ...``.

    The edge picks a free port itself and logs it; :attr:`endpoint` is read from that line, so
    no port is guessed and none can be taken in between (``bind`` restarts an edge on the port
    an earlier one logged).
    """

    name = "edge"

    def __init__(self, *args: str, env: dict[str, str] | None = None, bind: str = "tcp://127.0.0.1:0"):
        super().__init__("edge", "--bind", bind, *args, env=env)
        self.endpoint = ""

    def started(self) -> EdgeProcess:
        m = self.wait_for(r"edge: serving .* on (tcp://127\.0\.0\.1:\d+)", START_TIMEOUT_S)
        self.endpoint = m.group(1)
        return self

    def rss_bytes(self) -> int:
        """Resident set size of the edge process, from /proc."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS in /proc status")


@contextlib.contextmanager
def serving_in_thread(runner, **config):
    """An ``EdgeServer`` for ``runner`` on a free loopback port, serving on a thread of this
    process (``config``: ``ServerConfig`` fields; a 64 KiB message limit unless given); yields
    (server, endpoint) and stops it, checking it stopped, on the way out."""
    from edge_agent.server import EdgeServer, ServerConfig
    from wire.format import Limits

    config.setdefault("limits", Limits(max_message_bytes=2**16))
    server = EdgeServer(runner, ServerConfig("tcp://127.0.0.1:0", **config))
    endpoint = server.start()
    t = threading.Thread(target=server.serve)
    t.start()
    try:
        yield server, endpoint
    finally:
        server.request_stop("test over")
        t.join(30)
        assert not t.is_alive()
