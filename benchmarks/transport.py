"""Transport benchmark: the agents' wire code against raw pyzmq, with and without CURVE.

What is measured: ping-pong round trips of one tensor (1 MB and 10 MB, MB = 10^6 bytes) between
a client process and an echo server process on loopback, one request in flight at a time.

- ``raw``: plain pyzmq DEALER/ROUTER, one payload frame, ``copy=False`` both ways, the server
  sends the received frames straight back. The best pyzmq can do; no header, no checks.
- ``wire``: ``wire.transport.EdgeClient`` (header encode, zero-copy tensor buffer) to
  ``wire.echo`` (``decode_header`` + ``check_frames``, the reply built by ``echo_frames``), and
  the client decodes and checks the reply and wraps it with ``torch.frombuffer``: the full path
  of the agents minus the DNN.
- ``*-curve``: the same with CURVE (CurveZMQ encryption, ZAP authenticator admitting the
  client's key).

Figures: round trips per second and throughput ``GB/s = size x round trips / s / 1e9`` (payload
in one direction; each round trip moves it twice). Cases are interleaved over ``--rounds``
rounds and the median round is reported, since 2-core machines are noisy. Targets from the
issue: wire >= 0.8 x raw, and with CURVE >= 0.5 GB/s. Writes ``benchmarks/results/transport.json``.

    python benchmarks/transport.py [--seconds 1.5] [--rounds 3] [--sizes-mb 1,10]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _server(kind: str, keys_dir: str | None, max_bytes: int, conn) -> None:
    """Echo server process: ``raw`` (pyzmq only) or ``wire`` (wire.echo), CURVE if keys_dir."""
    import threading

    import zmq

    from wire.curve import ServerKeys
    from wire.echo import serve_echo
    from wire.format import Limits
    from wire.transport import configure_socket

    ctx = zmq.Context()
    auth = None
    sock = ctx.socket(zmq.ROUTER)
    limits = Limits(max_message_bytes=max_bytes)
    configure_socket(sock, limits)
    if keys_dir is not None:
        from zmq.auth.thread import ThreadAuthenticator

        keys = ServerKeys.load(Path(keys_dir) / "edge.key_secret", Path(keys_dir) / "clients")
        auth = ThreadAuthenticator(ctx)
        auth.start()
        auth.configure_curve(domain="*", location=str(keys.clients_folder))
        keys.apply(sock)
    sock.bind("tcp://127.0.0.1:*")
    conn.send(sock.getsockopt_string(zmq.LAST_ENDPOINT))
    stop = threading.Event()
    threading.Thread(target=lambda: (conn.recv(), stop.set()), daemon=True).start()
    if kind == "raw":
        sock.setsockopt(zmq.RCVTIMEO, 100)  # the same loop shape as wire.echo.serve_echo
        while not stop.is_set():
            try:
                frames = sock.recv_multipart(copy=False)
            except zmq.Again:
                continue
            sock.send_multipart(frames, copy=False)
    else:
        serve_echo(sock, limits, stop)
    sock.close(linger=0)
    if auth is not None:
        auth.stop()
    ctx.term()


class _RawClient:
    """Bare pyzmq DEALER: payload frame out, whatever comes back is taken as the echo."""

    def __init__(self, endpoint: str, size: int, curve) -> None:
        import numpy as np
        import zmq

        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            curve.apply(self.sock)
        self.sock.connect(endpoint)
        self.view = memoryview(np.random.default_rng(0).integers(0, 255, size, dtype=np.uint8))
        self.send()
        back = self.recv()
        assert len(back) == 1 and back[0].buffer == self.view, "raw echo corrupted the payload"

    def send(self) -> None:
        self.sock.send(self.view, copy=False)

    def recv(self):
        return self.sock.recv_multipart(copy=False)

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


class _WireClient:
    """``EdgeClient``: header + zero-copy tensor out, reply checked and wrapped as a tensor."""

    def __init__(self, endpoint: str, size: int, curve) -> None:
        import torch

        from wire.format import Limits
        from wire.transport import EdgeClient

        self.t = torch.randn(size // 4, generator=torch.Generator().manual_seed(0))
        self.client = EdgeClient(
            endpoint, curve=curve, limits=Limits(max_message_bytes=size + 4096)
        )
        self.send()
        reply = self.recv()
        assert torch.equal(reply.tensors[0], self.t), "wire echo corrupted the tensor"

    def send(self) -> None:
        self.client.submit("bench", 1, [self.t], timeout_s=10.0)

    def recv(self):
        reply = self.client.receive(10.0)
        if not reply.ok:
            reply.raise_for_error()
        return reply

    def close(self) -> None:
        self.client.close()


def timed(client, seconds: float, window: int) -> tuple[int, float]:
    """Round trips completed in ``seconds`` with ``window`` requests kept in flight."""
    for _ in range(3):  # warm-up
        client.send()
        client.recv()
    n = 0
    t0 = time.perf_counter()
    for _ in range(window):
        client.send()
    while True:
        client.recv()
        n += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            break
        client.send()
    for _ in range(window - 1):  # drain what is still in flight
        client.recv()
    return n, elapsed


def crypto_speed_gb_per_s(size: int = 10_000_000, reps: int = 5) -> float | None:
    """Speed of libsodium's XSalsa20-Poly1305 (what CurveZMQ runs per message) on this CPU.

    It bounds CURVE: a ping-pong round trip encrypts and decrypts the payload twice, one after
    the other, so one-direction throughput cannot beat a quarter of this. Loads the libsodium
    that pyzmq bundles (or the system's); None if there is none to load.
    """
    import ctypes
    import ctypes.util
    import glob

    import zmq

    libs = sorted(
        glob.glob(
            os.path.join(os.path.dirname(zmq.__file__), os.pardir, "pyzmq.libs", "libsodium*")
        )
    )
    path = libs[0] if libs else ctypes.util.find_library("sodium")
    if not path:
        return None
    try:
        lib = ctypes.CDLL(path)
        if lib.sodium_init() < 0:
            return None
    except (OSError, AttributeError):
        return None
    msg = ctypes.create_string_buffer(size)
    out = ctypes.create_string_buffer(size + 16)
    key = ctypes.create_string_buffer(32)
    nonce = ctypes.create_string_buffer(24)
    lib.crypto_secretbox_easy(out, msg, ctypes.c_ulonglong(size), nonce, key)
    t0 = time.perf_counter()
    for _ in range(reps):
        lib.crypto_secretbox_easy(out, msg, ctypes.c_ulonglong(size), nonce, key)
    return size * reps / (time.perf_counter() - t0) / 1e9


def _make_keys(folder: Path):
    from wire.curve import ClientKeys, make_key_pair

    make_key_pair(folder, "edge")
    make_key_pair(folder / "clients", "bench")
    return ClientKeys.load(folder / "edge.key", folder / "clients" / "bench.key_secret")


class _Server:
    """An echo server process of one kind, for one message size."""

    def __init__(self, kind: str, size: int, keys_dir: Path | None) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        base = kind.removesuffix("-curve")
        self.proc = ctx.Process(
            target=_server,
            args=(base, str(keys_dir) if keys_dir else None, size + 4096, child),
            daemon=True,
        )
        self.proc.start()
        if not self.conn.poll(60):
            raise RuntimeError(f"{kind} echo server did not start")
        self.endpoint = self.conn.recv()

    def stop(self) -> None:
        self.conn.send("stop")
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes-mb", default="1,10", help="payload sizes in MB (10^6 bytes)")
    ap.add_argument("--seconds", type=float, default=0.5, help="timed seconds per case per round")
    ap.add_argument(
        "--rounds", type=int, default=8, help="interleaved rounds; medians are reported"
    )
    ap.add_argument(
        "--window", type=int, default=4, help="requests in flight for the streaming rows"
    )
    ap.add_argument("--no-curve", action="store_true", help="skip the CURVE cases")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "transport.json"))
    args = ap.parse_args(argv)
    sizes = [int(float(s) * 1e6) for s in args.sizes_mb.split(",")]
    kinds = ["raw", "wire"] + ([] if args.no_curve else ["raw-curve", "wire-curve"])
    modes = {"pingpong": 1, "stream": args.window}

    runs: dict[tuple[str, int, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        keys_dir = Path(tmp)
        client_keys = None if args.no_curve else _make_keys(keys_dir)
        for size in sizes:
            servers = {
                k: _Server(k, size, keys_dir if k.endswith("-curve") else None) for k in kinds
            }
            clients = {}
            try:
                for k in kinds:
                    cls = _RawClient if k.startswith("raw") else _WireClient
                    clients[k] = cls(
                        servers[k].endpoint, size, client_keys if k.endswith("-curve") else None
                    )
                # interleave cases round by round: load from other processes on the machine hits
                # neighbouring measurements alike, so per-round ratios are fairer than totals
                for r in range(args.rounds):
                    for mode, window in modes.items():
                        for k in kinds:
                            n, elapsed = timed(clients[k], args.seconds, window)
                            rt = n / elapsed
                            runs.setdefault((k, size, mode), []).append(
                                {
                                    "round_trips": n,
                                    "seconds": elapsed,
                                    "round_trips_per_s": rt,
                                    "gb_per_s": size * rt / 1e9,
                                }
                            )
                    print(
                        f"round {r + 1}/{args.rounds} {size / 1e6:g} MB: "
                        + "  ".join(
                            f"{k}/{m} {runs[(k, size, m)][-1]['gb_per_s']:.3f}"
                            for m in modes
                            for k in kinds
                        )
                        + " GB/s",
                        flush=True,
                    )
            finally:
                for c in clients.values():
                    c.close()
                for srv in servers.values():
                    srv.stop()

    results = []
    print()
    print(
        f"{'size':>7s} {'mode':>9s} {'case':>11s} {'rt/s':>9s} {'rtt ms':>8s} {'GB/s':>7s}"
        "  vs raw (median of per-round ratios)"
    )
    for size in sizes:
        for mode in modes:
            for k in kinds:
                rs = runs[(k, size, mode)]
                base = runs[("raw-curve" if k.endswith("-curve") else "raw", size, mode)]
                ratios = [a["gb_per_s"] / b["gb_per_s"] for a, b in zip(rs, base)]
                ratio = statistics.median(ratios)
                rt = statistics.median(x["round_trips_per_s"] for x in rs)
                gb = statistics.median(x["gb_per_s"] for x in rs)
                print(
                    f"{size / 1e6:5.1f}MB {mode:>9s} {k:>11s} {rt:9.1f} {1e3 / rt:8.3f} {gb:7.3f}"
                    f"  {ratio:5.2f}x"
                )
                results.append(
                    {
                        "case": k,
                        "mode": mode,
                        "in_flight": modes[mode],
                        "size_bytes": size,
                        "curve": k.endswith("-curve"),
                        "median_round_trips_per_s": rt,
                        "median_gb_per_s": gb,
                        "median_ratio_to_raw": ratio,
                        "rounds": rs,
                    }
                )

    def pick(case: str, size: int, mode: str) -> dict:
        return next(
            r
            for r in results
            if r["case"] == case and r["size_bytes"] == size and r["mode"] == mode
        )

    checks = {}
    for size in sizes:
        mb = f"{size / 1e6:g}MB"
        for mode in modes:
            ratio = pick("wire", size, mode)["median_ratio_to_raw"]
            checks[f"wire_vs_raw_{mode}_{mb}"] = {
                "value": ratio,
                "target": ">= 0.8",
                "met": ratio >= 0.8,
            }
        if not args.no_curve:
            for mode in modes:
                gb = pick("wire-curve", size, mode)["median_gb_per_s"]
                checks[f"wire_curve_gb_per_s_{mode}_{mb}"] = {
                    "value": gb,
                    "target": ">= 0.5",
                    "met": gb >= 0.5,
                }
    crypto = None if args.no_curve else crypto_speed_gb_per_s()
    print()
    for name, c in checks.items():
        print(
            f"{name}: {c['value']:.3f} (target {c['target']}): {'met' if c['met'] else 'NOT met'}"
        )
    if crypto is not None:
        print(
            f"libsodium XSalsa20-Poly1305 on this CPU: {crypto:.2f} GB/s per core; a CURVE "
            f"ping-pong (encrypt + decrypt, twice, in sequence) cannot exceed {crypto / 4:.2f} "
            "GB/s one way"
        )

    import torch
    import zmq

    try:
        load = os.getloadavg()
    except OSError:
        load = None
    out = {
        "benchmark": "transport",
        "definition": "round trips of one tensor through an echo server process on loopback; "
        "pingpong = 1 in flight, stream = --window in flight; GB/s = size*rt/s/1e9 (one direction)",
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_avg_at_end": load,
            "pyzmq": zmq.__version__,
            "libzmq": zmq.zmq_version(),
            "torch": torch.__version__,
        },
        "seconds_per_case": args.seconds,
        "rounds": args.rounds,
        "window": args.window,
        "results": results,
        "checks": checks,
        "curve_crypto_gb_per_s": crypto,
        "curve_pingpong_ceiling_gb_per_s": None if crypto is None else crypto / 4,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
