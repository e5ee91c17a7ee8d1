"""Edge memory under attack: hostile ZMTP peers streaming one endless message each.

libzmq buffers a multipart message whole before the application sees it, so a peer the edge
lets in can make it hold whatever it sends (a plain ROUTER grows by the size of the message).
This benchmark starts ``cutedge edge`` as a real process and points hostile peers at it: each is a
hand-written ZMTP 3.0 client on a raw TCP socket (no libzmq on its side, so nothing holds its
message back) that completes the greeting and the NULL handshake and then sends one message of
1 MiB frames, all flagged MORE, until it has sent ``--total-gib`` or the edge cuts it off. Meanwhile
an authorised device (a real ``EdgeClient``) keeps doing round trips. Two set-ups:

- ``zap``: CURVE off, ``--allow 127.0.0.1``; the hostile peers connect from 127.0.0.2 (on Linux all
  of 127.0.0.0/8 is this machine), so the address gate refuses them at the handshake;
- ``curve``: CURVE on with one allowed client key; the hostile peers offer the NULL mechanism.

``--unprotected-mib N`` also runs one peer against an edge started with ``--insecure`` and sending
N MiB, to show that the attack is real there (that edge's RSS grows by about N MiB).

Writes benchmarks/results/edge_memory.json: ``rss_growth_mb`` (the largest growth over the
set-ups of the edge's peak RSS, ``VmHWM``, over its RSS before the attack; target <= 50), and per
set-up the bytes the peers got out before being cut off, how many were cut off, and the
authorised device's round trips and longest gap.

    python benchmarks/edge_memory.py [--peers 50] [--total-gib 4] [--unprotected-mib 0]

Linux only (reads /proc, binds 127.0.0.2).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODEL = "benchmarks.soak:tiny_net"
SHAPE = (3, 32, 32)
FRAME = 2**20

_GREETING_HEAD = b"\xff" + bytes(8) + b"\x7f" + bytes([3, 0])


def _greeting(mechanism: bytes) -> bytes:
    return _GREETING_HEAD + mechanism.ljust(20, b"\0") + b"\0" + bytes(31)


def _ready() -> bytes:
    body = b"\x05READY" + bytes([11]) + b"Socket-Type" + struct.pack(">I", 6) + b"DEALER"
    return bytes([0x04, len(body)]) + body


@dataclass
class FloodResult:
    sent_bytes: int = 0
    cut_off: bool = False
    error: str = ""


def flood(host: str, port: int, *, source: str, total_bytes: int, mechanism: bytes = b"NULL",
          stop: threading.Event | None = None) -> FloodResult:
    """One hostile peer: ZMTP 3.0 greeting and NULL READY, then one message of 1 MiB frames
    (MORE on every frame) until ``total_bytes`` are sent, the edge cuts the connection, or
    ``stop`` is set. Returns what got out and whether the edge cut it off."""
    out = FloodResult()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(10.0)
    try:
        s.bind((source, 0))
        s.connect((host, port))
        s.sendall(_greeting(mechanism))
        s.sendall(_ready())
        frame = bytes([0x03]) + struct.pack(">Q", FRAME) + bytes(FRAME)  # long frame, MORE
        while out.sent_bytes < total_bytes and not (stop and stop.is_set()):
            s.sendall(frame)
            out.sent_bytes += FRAME
    except (OSError, TimeoutError) as exc:  # reset, broken pipe: the edge cut us off
        out.cut_off = True
        out.error = type(exc).__name__
    finally:
        s.close()
    return out


def rss_kb(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1])
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EdgeUnderTest:
    """``cutedge edge`` as a subprocess serving the tiny net on a free loopback port."""

    def __init__(self, *extra: str, cwd: Path = REPO):
        self.port = free_port()
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        self.log = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cutedge", "edge", "--bind", self.endpoint, "--models",
             f"{MODEL}@{'x'.join(map(str, SHAPE))}", "--log-interval-s", "1", *extra],
            cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=self.log, text=True)

    def wait_serving(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if "edge: serving" in self.text():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"cutedge edge exited ({self.proc.returncode}):\n{self.text()}")
            time.sleep(0.1)
        raise RuntimeError(f"cutedge edge did not start within {timeout_s} s:\n{self.text()}")

    def text(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def attack(edge: EdgeUnderTest, *, peers: int, total_bytes: int, source: str, curve=None,
           time_limit_s: float = 120.0) -> dict:
    """Hostile peers against ``edge`` while an authorised client does round trips; figures."""
    import torch

    from wire.transport import EdgeClient, EdgeTimeout

    try:  # reset the peak (VmHWM) to the current RSS, so the peak is the attack's (Linux >= 4.0)
        Path(f"/proc/{edge.proc.pid}/clear_refs").write_text("5")
    except OSError:
        pass
    before = rss_kb(edge.proc.pid)["VmRSS"]
    stop = threading.Event()
    results: list[FloodResult] = [FloodResult() for _ in range(peers)]

    def one(i: int) -> None:
        results[i] = flood("127.0.0.1", edge.port, source=source, total_bytes=total_bytes, stop=stop)

    served, gaps, failures = 0, [], []
    x = torch.rand(1, *SHAPE, generator=torch.Generator().manual_seed(0))
    with EdgeClient(edge.endpoint, curve=curve) as client:
        client.infer(MODEL, 0, [x], timeout_s=30)  # warm: the tail is built
        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(peers)]
        t0 = last = time.monotonic()
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads) or served < 20:
            try:
                client.infer(MODEL, 0, [x], timeout_s=10)
                served += 1
            except (EdgeTimeout, RuntimeError) as exc:
                failures.append(str(exc))
            now = time.monotonic()
            gaps.append(now - last)
            last = now
            if now - t0 > time_limit_s:
                stop.set()
                break
        for t in threads:
            t.join(30)
    wall = time.monotonic() - t0
    mem = rss_kb(edge.proc.pid)
    return {
        "peers": peers,
        "peer_total_bytes": total_bytes,
        "cut_off": sum(r.cut_off for r in results),
        "max_sent_mib": round(max(r.sent_bytes for r in results) / 2**20, 1),
        "sum_sent_mib": round(sum(r.sent_bytes for r in results) / 2**20, 1),
        "rss_before_mb": round(before / 1024, 1),
        "rss_peak_mb": round(mem["VmHWM"] / 1024, 1),
        "rss_growth_mb": round((mem["VmHWM"] - before) / 1024, 1),
        "device_round_trips": served,
        "device_failures": len(failures),
        "device_failure_example": failures[0] if failures else "",
        "device_longest_gap_ms": round(max(gaps) * 1e3, 1),
        "wall_s": round(wall, 2),
        "stopped_by_time_limit": stop.is_set(),
    }


def run_setup(name: str, *, peers: int, total_bytes: int, workdir: Path) -> dict:
    """One set-up (``zap``, ``curve`` or ``unprotected``) from start to stop of its edge."""
    curve = None
    if name == "zap":
        edge, source = EdgeUnderTest("--allow", "127.0.0.1"), "127.0.0.2"
    elif name == "curve":
        from wire.curve import ClientKeys, make_key_pair

        make_key_pair(workdir, "edge")
        make_key_pair(workdir / "clients", "device")
        curve = ClientKeys.load(workdir / "edge.key", workdir / "clients" / "device.key_secret")
        edge = EdgeUnderTest("--curve-secret", str(workdir / "edge.key_secret"),
                             "--curve-clients", str(workdir / "clients"))
        source = "127.0.0.1"
    elif name == "unprotected":
        edge, source = EdgeUnderTest("--insecure"), "127.0.0.1"
    else:
        raise ValueError(f"unknown set-up {name!r}")
    try:
        edge.wait_serving()
        figures = attack(edge, peers=peers, total_bytes=total_bytes, source=source, curve=curve)
    finally:
        rc = edge.stop()
    figures["edge_exit_code"] = rc
    figures["edge_log_refusals"] = sum("refused" in line for line in edge.text().splitlines())
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peers", type=int, default=50)
    ap.add_argument("--total-gib", type=float, default=4.0, help="what each hostile peer tries to send")
    ap.add_argument("--unprotected-mib", type=int, default=0,
                    help="also run one peer sending this many MiB at an --insecure edge (0: skip)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "edge_memory.json"))
    args = ap.parse_args()
    if not Path("/proc/self/status").exists():
        raise SystemExit("benchmarks/edge_memory.py reads /proc: Linux only")
    total = int(args.total_gib * 2**30)
    out: dict = {"setups": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("zap", "curve"):
            print(f"{name}: {args.peers} peers, {args.total_gib:g} GiB each ...", flush=True)
            out["setups"][name] = run_setup(name, peers=args.peers, total_bytes=total, workdir=Path(tmp) / name)
            print(f"  {out['setups'][name]}", flush=True)
        if args.unprotected_mib:
            print(f"unprotected: 1 peer, {args.unprotected_mib} MiB ...", flush=True)
            out["unprotected"] = run_setup("unprotected", peers=1, total_bytes=args.unprotected_mib * 2**20,
                                           workdir=Path(tmp) / "unprotected")
            print(f"  {out['unprotected']}", flush=True)
    out["rss_growth_mb"] = max(s["rss_growth_mb"] for s in out["setups"].values())
    out["target"] = "rss_growth_mb <= 50 with every hostile peer cut off and the device served"
    out.update(python=platform.python_version(), machine=platform.machine(), cpus=os.cpu_count(),
               date=time.strftime("%Y-%m-%d"))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"rss_growth_mb: {out['rss_growth_mb']}\nwrote {args.out}")


if __name__ == "__main__":
    main()
