"""Edge batching benchmark: tail throughput with batching across devices on and off.

What is measured: a real edge (``edge_agent.server.EdgeServer`` with a ``SplitTailRunner``, in
its own process) serving the tail of ResNet-18 (seeded random weights, nothing downloaded) at a
3x64x64 input from its middle cut, on loopback. N device clients (threads of this process, each
its own DEALER ``EdgeClient``, ``--window`` requests in flight) send real tensors of the cut's
shape for ``--seconds`` after a warm-up; the figure is completed tails (RESULT replies) per
second over all devices, for N = 1, 4, 16 and 32, with batching on (``--max-batch``, default
16, ``--max-wait-ms``) and off (max_batch 1: one request per tail call).

Threads, deliberately: the edge runs ``--workers`` tail workers (default 1) with
``--torch-threads`` intra-op threads (default 1) so that on a 2-core machine one core runs the
tails and the other this process's clients and both processes' ZeroMQ I/O threads; the same
settings serve both cases, so the ratio is batching's alone. Cases are interleaved over
``--rounds`` rounds (each round starts an edge per setting) and the median round is reported.
Writes ``benchmarks/results/edge_batching.json``:
``{"on": {"1": fps, ...}, "off": {...}, "ratio": {...}, "setting": {...}, "machine": {...}}``.

    python benchmarks/edge_batching.py [--seconds 3] [--rounds 2] [--devices 1,4,16,32]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MODEL = "resnet18"
INPUT_SHAPE = (3, 64, 64)


def _edge(max_batch: int, max_wait_ms: float, workers: int, threads: int, conn) -> None:
    """The edge process: serve until the parent says stop, then send back its counters."""
    import logging

    import torch

    torch.set_num_threads(threads)
    logging.getLogger("cutedge.edge").setLevel(logging.ERROR)
    from edge_agent.runner import ModelRequest, SplitTailRunner
    from edge_agent.server import EdgeServer, ServerConfig

    runner = SplitTailRunner([ModelRequest(MODEL, INPUT_SHAPE)], seed=0, announce=lambda line: None)
    cuts = runner.catalog()[MODEL]
    with_tail = [i for i, spec in enumerate(cuts) if spec is not None]
    cut = with_tail[len(with_tail) // 2]
    spec = [(s.shape, s.dtype) for s in cuts[cut]]
    server = EdgeServer(
        runner,
        ServerConfig(
            "tcp://127.0.0.1:0",
            workers=workers,
            max_batch=max_batch,
            max_wait_ms=max_wait_ms,
            log_interval_s=3600,
        ),
    )
    endpoint = server.start()
    conn.send((endpoint, cut, spec, len(cuts)))
    threading.Thread(target=lambda: (conn.recv(), server.request_stop("benchmark over")), daemon=True).start()
    server.serve()
    c = server.stats.total
    conn.send({"served": c.served, "tail_calls": c.tail_calls, "errors": c.errors, "busy": c.busy})


def _device(endpoint: str, cut: int, spec, window: int, seed: int, state: dict, stop: threading.Event) -> None:
    """One device: keep ``window`` requests in flight until ``stop``, then collect the rest."""
    import torch

    from wire.format import MsgType
    from wire.transport import EdgeClient, EdgeTimeout

    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(shape, generator=g).to(getattr(torch, dtype)) for shape, dtype in spec]
    with EdgeClient(endpoint) as client:
        pending = 0
        while not stop.is_set() or pending:
            while not stop.is_set() and pending < window:
                client.submit(MODEL, cut, xs, timeout_s=5)
                pending += 1
            try:
                reply = client.receive(10)
            except EdgeTimeout:
                state["timeouts"] += 1
                break
            pending -= 1
            if reply.kind is MsgType.RESULT:
                state["done"] += 1
                state["backlog_s"] = reply.edge_backlog_s
            else:
                state["errors"] += 1


def _measure(endpoint: str, cut: int, spec, n: int, window: int, warmup_s: float, seconds: float) -> dict:
    stop = threading.Event()
    states = [{"done": 0, "errors": 0, "timeouts": 0, "backlog_s": None} for _ in range(n)]
    threads = [
        threading.Thread(target=_device, args=(endpoint, cut, spec, window, i, states[i], stop), daemon=True)
        for i in range(n)
    ]
    for t in threads:
        t.start()
    time.sleep(warmup_s)
    start = sum(s["done"] for s in states)
    t0 = time.perf_counter()
    time.sleep(seconds)
    done = sum(s["done"] for s in states) - start
    elapsed = time.perf_counter() - t0
    stop.set()
    for t in threads:
        t.join(30)
    per_device = [s["done"] for s in states]
    return {
        "fps": done / elapsed,
        "errors": sum(s["errors"] for s in states),
        "timeouts": sum(s["timeouts"] for s in states),
        "min_device_share": min(per_device) / (sum(per_device) / n) if sum(per_device) else 0.0,
        "last_backlog_ms": [None if s["backlog_s"] is None else s["backlog_s"] * 1e3 for s in states][:1],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="measured seconds per case")
    ap.add_argument("--warmup", type=float, default=0.7, help="seconds before measuring, per case")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--devices", default="1,4,16,32")
    ap.add_argument("--window", type=int, default=2, help="requests in flight per device")
    ap.add_argument("--max-batch", type=int, default=16, help="batching on: frames per tail call")
    ap.add_argument("--max-wait-ms", type=float, default=2.0)
    ap.add_argument("--workers", type=int, default=1, help="edge tail workers")
    ap.add_argument("--torch-threads", type=int, default=1, help="edge torch intra-op threads")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "edge_batching.json")
    args = ap.parse_args()
    import torch
    import zmq

    torch.set_num_threads(1)  # the clients only build tensors once
    devices = [int(d) for d in args.devices.split(",")]
    settings = {"on": args.max_batch, "off": 1}
    print(f"edge: {MODEL} at {'x'.join(map(str, INPUT_SHAPE))}, CPU, {args.workers} worker(s), "
          f"torch threads {args.torch_threads} in the edge, 1 in the clients; this machine has "
          f"{os.cpu_count()} CPUs; {args.window} requests in flight per device; "
          f"batching on = max_batch {args.max_batch}, max_wait {args.max_wait_ms:g} ms; off = max_batch 1")
    rounds: dict[str, dict[int, list[dict]]] = {k: {n: [] for n in devices} for k in settings}
    edge_counts: dict[str, list[dict]] = {k: [] for k in settings}
    cut_info = None
    ctx = mp.get_context("spawn")
    for r in range(args.rounds):
        for name, max_batch in settings.items():
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_edge, args=(max_batch, args.max_wait_ms, args.workers, args.torch_threads, child))
            proc.start()
            endpoint, cut, spec, n_cuts = parent.recv()
            cut_info = {"cut": cut, "of_cuts": n_cuts, "crossing": [[list(s), d] for s, d in spec]}
            for n in devices:
                res = _measure(endpoint, cut, spec, n, args.window, args.warmup, args.seconds)
                rounds[name][n].append(res)
                print(f"round {r + 1} batching {name:3s} {n:3d} devices: {res['fps']:8.1f} frames/s"
                      + (f" ({res['errors']} errors, {res['timeouts']} timeouts)" if res["errors"] or res["timeouts"] else ""),
                      flush=True)
            parent.send("stop")
            edge_counts[name].append(parent.recv())
            proc.join(30)
    med = {k: {str(n): statistics.median(x["fps"] for x in rounds[k][n]) for n in devices} for k in settings}
    ratio = {str(n): med["on"][str(n)] / med["off"][str(n)] for n in devices}
    print()
    print(f"{'devices':>8} | {'batching on':>12} | {'batching off':>12} | {'on / off':>8}   (tail frames/s, median of {args.rounds} rounds)")
    for n in devices:
        print(f"{n:8d} | {med['on'][str(n)]:12.1f} | {med['off'][str(n)]:12.1f} | {ratio[str(n)]:7.2f}x")
    for k in settings:
        served = sum(c["served"] for c in edge_counts[k])
        calls = sum(c["tail_calls"] for c in edge_counts[k])
        print(f"batching {k}: {served} tails served in {calls} tail calls (mean batch {served / max(1, calls):.2f}), "
              f"{sum(c['errors'] for c in edge_counts[k])} errors")
    out = {
        "on": med["on"],
        "off": med["off"],
        "ratio": ratio,
        "benchmark": "edge_batching",
        "definition": "completed tails (RESULT replies) per second over all devices, on loopback; "
                      "median of the rounds",
        "setting": {
            "model": MODEL, "input_shape": list(INPUT_SHAPE), "device": "cpu", **(cut_info or {}),
            "seconds_per_case": args.seconds, "warmup_s": args.warmup, "rounds": args.rounds,
            "window": args.window, "max_batch_on": args.max_batch, "max_wait_ms": args.max_wait_ms,
            "workers": args.workers, "edge_torch_threads": args.torch_threads, "client_torch_threads": 1,
            "clients": "threads of one process, one DEALER each", "edge": "its own process",
        },
        "edge_counts": edge_counts,
        "rounds": {k: {str(n): rounds[k][n] for n in devices} for k in settings},
        "machine": {
            "platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "load_avg_at_end": list(os.getloadavg()), "torch": torch.__version__,
            "pyzmq": zmq.pyzmq_version(), "libzmq": zmq.zmq_version(),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
