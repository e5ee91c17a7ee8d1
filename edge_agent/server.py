"""The edge agent: a ZeroMQ ROUTER server that runs DNN tails for many devices.

Threads and sockets. ZeroMQ sockets belong to one thread, so one thread (the one that calls
:meth:`EdgeServer.serve`) owns the ROUTER socket: it reads every message, checks it completely
(header, frame lengths, model, cut, dtypes, shapes, limits; see ``wire.format``) and answers
pings and refusals itself, at once. A valid request goes on a bounded job queue to ``workers``
tail threads; each runs the tail on tensors that are views of the received frames and pushes the
reply (ROUTER identity + header + zero-copy output buffers) over an inproc PUSH socket back to
the main thread, which forwards it on the ROUTER. So pings are answered even while every worker
is busy, which is what the device agent relies on to tell a slow edge from a dead one.

Who may connect is decided before a peer can send a message (``edge_agent.access``): libzmq
buffers a multipart message whole, so a peer let in could make the edge hold whatever it sends.
The gate admits listed addresses (this machine by default) and, with CURVE, listed client keys
only, and caps open connections. For admitted peers, libzmq refuses frames over ``MAXMSGSIZE``
(the configured message limit) before buffering them, each peer may have at most ``rcvhwm``
messages waiting, and the job queue holds at most ``queue_bytes`` of accepted payload.

Service is fair between devices (one ROUTER peer is one device): accepted requests wait in one
queue per device and the workers take them round robin, and while several devices have requests
waiting, each may hold at most its share (1/n) of the queue's places and bytes; a lone device may
use all of it. A request past its share, or past the whole queue, gets a BUSY reply that carries
the edge's advice on how long to wait before sending again.

Batching across devices: a worker takes a queued request, then more requests for the same
(model, cut), taking devices in the same round robin, until it holds ``max_batch`` frames (dim-0
rows) or ``max_wait_ms`` has passed since it took the first; it runs the tail once on them
stacked along dim 0 (``run_batch`` of the runner) and replies to each request on its own. A
request is never held back for a batch past ``max_wait_ms``, requests for different tails are
never mixed, and a failed batch is re-run one request at a time, so a bad request fails alone.
``max_batch`` 1 is one request per tail call. Every RESULT and BUSY reply to a device that asks
(``FLAG_BACKLOG``) carries the edge's backlog: the tail work queued ahead of a new request.

Nothing a peer sends stops the server: every refusal is an ERROR reply with a code and a
one-line reason; an exception anywhere in handling one message becomes an INTERNAL or
TAIL_FAILED reply and a log line. SIGINT/SIGTERM (wired by ``cutedge edge``) call
:meth:`EdgeServer.request_stop`: the server stops taking requests, lets the workers finish what
was accepted (bounded by ``drain_timeout_s``), flushes the replies and logs a final line.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from edge_agent.access import AccessPolicy, Gate
from edge_agent.runner import TailRunner
from wire.curve import ServerKeys
from wire.format import (
    ErrorCode,
    Header,
    Limits,
    MsgType,
    WireError,
    check_limits_for,
    check_request,
    frame_nbytes,
    one_line,
    peek_request_id,
    peek_sent_ns,
)
from wire.transport import (
    Message,
    configure_socket,
    error_reply,
    frame_buffer,
    parse,
    pong_frames,
    result_frames,
)

log = logging.getLogger("cutedge.edge")

#: refusals logged one by one per interval before the rest are only counted
_LOGGED_ERRORS_PER_INTERVAL = 5
#: bounds of ``ServerConfig.max_batch`` and ``max_wait_ms`` (a longer wait is a misconfiguration:
#: every lone request would wait that long)
MAX_BATCH = 4096
MAX_WAIT_MS = 1000.0


@dataclass(frozen=True)
class ServerConfig:
    """How the edge server listens and how much it accepts.

    ``queue_bytes`` (default 4 x the message limit) bounds accepted-but-not-yet-run payload;
    ``max_queued`` bounds the number of such requests. ``rcvhwm`` is ZeroMQ's per-peer receive
    queue in messages. ``access`` says who may connect. ``served_log``: a CSV file getting one
    row per RESULT sent (peer, request id, model, cut, tail time), so a test or an operator can
    check which frames the edge ran. ``max_batch``: most frames (dim-0 rows, summed over the
    requests) one tail call runs; a single request larger than that runs alone (its own limit is
    ``limits.max_batch``). ``max_wait_ms``: how long a worker holding one request waits for more
    of the same (model, cut) before it runs what it has.
    """

    endpoint: str
    limits: Limits = field(default_factory=Limits)
    workers: int = 1
    curve: ServerKeys | None = None
    log_interval_s: float = 60.0
    queue_bytes: int | None = None
    max_queued: int = 256
    rcvhwm: int = 64
    drain_timeout_s: float = 10.0
    heartbeat_ivl_s: float = 2.0
    access: AccessPolicy = field(default_factory=AccessPolicy)
    served_log: Path | None = None
    max_batch: int = 8
    max_wait_ms: float = 2.0
    target_utilisation: float = 0.9

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        u = self.target_utilisation
        if isinstance(u, bool) or not isinstance(u, (int, float)) or not (0.0 < u <= 1.0):
            raise ValueError(f"target_utilisation must be a number in (0, 1], got {u!r}")
        if isinstance(self.max_batch, bool) or not isinstance(self.max_batch, int) or not (
            1 <= self.max_batch <= MAX_BATCH
        ):
            raise ValueError(
                f"max_batch must be an integer in 1..{MAX_BATCH} (1: no batching), "
                f"got {self.max_batch!r}"
            )
        if not (
            isinstance(self.max_wait_ms, (int, float))
            and not isinstance(self.max_wait_ms, bool)
            and 0 <= self.max_wait_ms <= MAX_WAIT_MS
        ):
            raise ValueError(
                f"max_wait_ms must be a number in 0..{MAX_WAIT_MS:g} ms, got {self.max_wait_ms!r}"
            )
        if not self.log_interval_s > 0:
            raise ValueError(f"log_interval_s must be > 0, got {self.log_interval_s}")


@dataclass
class _Counts:
    requests: int = 0  # messages other than pings
    served: int = 0  # RESULT replies sent
    errors: int = 0  # ERROR replies sent
    pings: int = 0
    tail_ns: int = 0  # summed over served requests
    tail_calls: int = 0  # runs of the tail (a batch is one)
    busy: int = 0  # BUSY replies (also counted in errors)
    refused_key: int = 0  # CURVE handshakes with an unknown key
    refused_address: int = 0  # handshakes from an address not allowed
    refused_connection: int = 0  # connections shut past the connection cap
    unlogged: int = 0  # refusals not logged one by one

    def mean_tail_ms(self) -> float:
        return self.tail_ns / self.served / 1e6 if self.served else 0.0


class _Stats:
    """Counters shared by the main thread, the workers and the ZAP thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.total = _Counts()
        self.interval = _Counts()

    def add(self, **deltas: int) -> None:
        with self._lock:
            for c in (self.total, self.interval):
                for k, v in deltas.items():
                    setattr(c, k, getattr(c, k) + v)

    def take_interval(self) -> _Counts:
        with self._lock:
            out, self.interval = self.interval, _Counts()
        return out

    def note_error(self) -> bool:
        """Count an error reply; True if it should be logged on its own line."""
        with self._lock:
            self.total.errors += 1
            self.interval.errors += 1
            if self.interval.errors <= _LOGGED_ERRORS_PER_INTERVAL:
                return True
            self.interval.unlogged += 1
            return False


@dataclass
class _Job:
    identity: Any
    message: Message
    t_recv_ns: int
    nbytes: int
    rows: int = 1  # dim 0 of its tensors: the frames it adds to a batch
    tail: tuple[str, int] = ("", 0)  # (model, cut): only jobs of one tail share a batch


class _FairQueue:
    """Accepted requests, one FIFO per device, taken round robin; admission by fair share.

    ``offer`` admits a job or returns the seconds a BUSY reply advises waiting. While n devices
    have jobs waiting, each may hold at most ``max_jobs // n`` jobs (at least one) and
    ``max_bytes // n`` bytes (at least one message); one device alone may fill the whole queue.
    ``running`` jobs count against the totals until ``done``.

    ``take_batch`` fills a batch in the same turn order: the device whose turn it is gives the
    first job; then each device in turn whose next job is for the same tail and still fits gives
    that one job, and the round goes on until the batch is full or no device has a matching job
    (then it waits for new ones, up to ``max_wait_s`` after the first). Only a device's next job
    is looked at, so each device's requests still start in the order it sent them.
    """

    def __init__(self, max_jobs: int, max_bytes: int, workers: int, target_utilisation: float = 1.0,
                 clock=time.monotonic):
        self.max_jobs, self.max_bytes, self.workers = max_jobs, max_bytes, workers
        # the backlog of a virtual server at target_utilisation of the workers' speed: the tail
        # work done is added to it, and it drains at rho*workers seconds per second (the rule of
        # simulation.edge: the backlog reported rises as soon as the load passes rho)
        self.rho = float(target_utilisation)
        self._clock = clock
        self._virtual_s = 0.0
        self._virtual_at = clock()
        self._cv = threading.Condition()
        self._waiting: dict[bytes, deque[_Job]] = {}
        self._ring: deque[bytes] = deque()  # devices with jobs waiting, in turn order
        self._bytes: dict[bytes, int] = {}
        self.jobs = 0  # waiting + running
        self.bytes = 0
        self.queued = 0  # waiting only
        self._closed = False
        self._tail_s: float | None = None  # running mean of tail time per job (batches shared)

    def _per_job_s(self) -> float:
        return 0.01 if self._tail_s is None else self._tail_s

    def offer(self, key: bytes, job: _Job) -> tuple[float, str] | None:
        with self._cv:
            mine = self._waiting.get(key)
            n_dev = len(self._ring) + (mine is None)
            mine_jobs = len(mine) if mine else 0
            mine_bytes = self._bytes.get(key, 0)
            full = self.jobs >= self.max_jobs or self.bytes + job.nbytes > self.max_bytes
            over_share = n_dev > 1 and (
                mine_jobs >= max(1, self.max_jobs // n_dev)
                or (mine_bytes and mine_bytes + job.nbytes > self.max_bytes // n_dev)
            )
            if full or over_share:
                # this device's next place frees after its own waiting jobs, each one turn of
                # the round robin over the devices waiting
                ahead = max(1, mine_jobs) * max(1, n_dev) if over_share else max(1, self.jobs)
                wait_s = min(5.0, max(0.001, ahead * self._per_job_s() / self.workers))
                if full:
                    why = f"edge queue full ({self.jobs} requests, {self.bytes} bytes waiting)"
                else:
                    why = (f"this device's share of the edge queue is full ({mine_jobs} of its "
                           f"requests waiting while {n_dev} devices wait)")
                return wait_s, f"{why}; retry in {wait_s * 1e3:.0f} ms"
            if mine is None:
                mine = self._waiting[key] = deque()
                self._ring.append(key)
            mine.append(job)
            self._bytes[key] = mine_bytes + job.nbytes
            self.jobs += 1
            self.queued += 1
            self.bytes += job.nbytes
            # every waiter: an idle worker, and one filling a batch that this job may join
            self._cv.notify_all()
            return None

    def _pop(self, key: bytes) -> _Job:
        """The next job of device ``key``; the device goes to the back of the turn order."""
        mine = self._waiting[key]
        job = mine.popleft()
        self._ring.remove(key)
        if mine:
            self._ring.append(key)
            self._bytes[key] -= job.nbytes
        else:
            del self._waiting[key], self._bytes[key]
        self.queued -= 1
        return job

    def _fill(self, batch: list[_Job], rows: int, max_rows: int) -> int:
        tail = batch[0].tail
        took = True
        while took and rows < max_rows:
            took = False
            for key in list(self._ring):  # one round: at most one job per device
                job = self._waiting[key][0]
                if job.tail == tail and rows + job.rows <= max_rows:
                    batch.append(self._pop(key))
                    rows += job.rows
                    took = True
                    if rows >= max_rows:
                        break
        return rows

    def take_batch(self, max_rows: int = 1, max_wait_s: float = 0.0) -> list[_Job]:
        """Jobs for one tail, at most ``max_rows`` frames (the first job always, whatever its
        size), round robin over devices; ``[]`` once closed and empty."""
        with self._cv:
            while not self._ring:
                if self._closed:
                    return []
                self._cv.wait()
            batch = [self._pop(self._ring[0])]
            rows = batch[0].rows
            deadline = None
            while rows < max_rows:
                rows = self._fill(batch, rows, max_rows)
                if rows >= max_rows or self._closed or max_wait_s <= 0:
                    break
                now = time.monotonic()
                if deadline is None:
                    deadline = now + max_wait_s
                if now >= deadline:
                    break
                self._cv.wait(deadline - now)
            return batch

    def take(self) -> _Job | None:
        """The next job, round robin over devices; None once closed and empty."""
        batch = self.take_batch(1)
        return batch[0] if batch else None

    def done(self, job: _Job, tail_s: float | None) -> None:
        self.done_batch([job], tail_s)

    def done_batch(self, jobs: Sequence[_Job], tail_s: float | None) -> None:
        """``jobs`` have been answered; ``tail_s``: the time their tail work took in all."""
        with self._cv:
            self.jobs -= len(jobs)
            self.bytes -= sum(j.nbytes for j in jobs)
            if tail_s is not None and jobs:
                per_job = tail_s / len(jobs)
                self._tail_s = per_job if self._tail_s is None else self._tail_s + 0.3 * (per_job - self._tail_s)
                self._virtual_s = self._virtual_now() + tail_s

    def _virtual_now(self) -> float:
        """The virtual server's backlog now (drained since the last look); under the lock."""
        now = self._clock()
        self._virtual_s = max(0.0, self._virtual_s - self.rho * self.workers * (now - self._virtual_at))
        self._virtual_at = now
        return self._virtual_s

    def backlog_s(self) -> float:
        """Seconds of tail work queued ahead of a request arriving now: the jobs waiting times
        the recent mean tail time per job (batching included), over the workers. What the
        running tails still have to do is left out (unknown; at most one batch per worker)."""
        with self._cv:
            virtual = self._virtual_now() / (self.rho * self.workers)
            if not self.queued:
                return virtual
            return max(self.queued * self._per_job_s() / self.workers, virtual)

    def close(self) -> None:
        """Workers finish what waits, then ``take`` returns None."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    @property
    def devices_waiting(self) -> int:
        with self._cv:
            return len(self._ring)


class _ServedLog:
    """One CSV row per RESULT sent, written by the workers (a lock keeps rows whole)."""

    def __init__(self, path: Path):
        self._lock = threading.Lock()
        self._fh = open(path, "w", buffering=1)
        self._fh.write("peer,request_id,model,cut,tail_ms\n")

    def add(self, peer: bytes, request_id: int, model: str, cut: int, tail_ns: int) -> None:
        with self._lock:
            if self._fh.closed:  # a tail that outlived the drain timeout
                return
            self._fh.write(f"{peer.hex()},{request_id},{model},{cut},{tail_ns / 1e6:.3f}\n")

    def close(self) -> None:
        with self._lock:
            self._fh.close()


class EdgeServer:
    """A ROUTER server running tails from ``runner``; see the module docstring."""

    def __init__(
        self, runner: TailRunner, config: ServerConfig, *, context: zmq.Context | None = None
    ):
        self.runner = runner
        self.config = config
        self.limits = config.limits
        self.catalog = runner.catalog()
        self._check_catalog_fits()
        self._own_context = context is None
        self.context = context or zmq.Context()
        self.stats = _Stats()
        self.queue_bytes = config.queue_bytes or 4 * self.limits.max_message_bytes
        self._jobs = _FairQueue(config.max_queued, self.queue_bytes, config.workers, config.target_utilisation)
        self._served_log: _ServedLog | None = None
        self._stop = threading.Event()
        self._stop_reason = ""
        self._started_at = 0.0
        self._workers: list[threading.Thread] = []
        self._gate: Gate | None = None
        self.router: zmq.Socket | None = None
        self._results: zmq.Socket | None = None
        self._results_addr = f"inproc://cutedge-edge-results-{id(self):x}"
        self.endpoint = ""

    def _check_catalog_fits(self) -> None:
        """Refuse a message limit too small for a cut it offers (it could never serve it)."""
        for model, cuts in self.catalog.items():
            for cut, spec in enumerate(cuts):
                if spec is None:
                    continue
                need = check_limits_for(spec, self.limits)
                if need > self.limits.max_message_bytes:
                    raise ValueError(
                        f"max message bytes {self.limits.max_message_bytes} is smaller than one "
                        f"request for {model} cut {cut} ({need} bytes)"
                    )
                if len(spec) > self.limits.max_tensors:
                    raise ValueError(
                        f"{model} cut {cut} sends {len(spec)} tensors, "
                        f"over the limit {self.limits.max_tensors}"
                    )

    # -- start -------------------------------------------------------------------------------
    def start(self) -> str:
        """Bind the sockets, start authentication and workers; return the bound endpoint.

        A port of ``*`` or ``0`` binds a free port; the returned endpoint names it.
        """
        cfg = self.config
        self._gate = Gate(
            self.context,
            cfg.access,
            client_keys=None if cfg.curve is None else cfg.curve.clients,
            count=lambda name: self.stats.add(**{name: 1}),
            log=log,
        )
        self._gate.start()
        router = self.context.socket(zmq.ROUTER)
        configure_socket(router, self.limits, linger_s=1.0)
        router.setsockopt(zmq.RCVHWM, cfg.rcvhwm)
        router.setsockopt(zmq.HEARTBEAT_IVL, int(cfg.heartbeat_ivl_s * 1000))
        router.setsockopt(zmq.HEARTBEAT_TIMEOUT, int(cfg.heartbeat_ivl_s * 3000))
        if cfg.curve is not None:
            cfg.curve.apply(router)
        self._gate.prepare(router)
        endpoint = cfg.endpoint
        if endpoint.startswith("tcp://") and endpoint.endswith(":0"):
            endpoint = endpoint[:-2] + ":*"
        try:
            router.bind(endpoint)
        except zmq.ZMQError as exc:
            router.close(linger=0)
            self._stop_gate()
            raise OSError(f"cannot bind {cfg.endpoint}: {exc.strerror}") from None
        self.router = router
        self.endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
        self._gate.watch(self.endpoint)
        if cfg.served_log is not None:
            self._served_log = _ServedLog(cfg.served_log)
        self._results = self.context.socket(zmq.PULL)
        self._results.bind(self._results_addr)
        for i in range(cfg.workers):
            t = threading.Thread(target=self._worker, name=f"edge-worker-{i}", daemon=True)
            t.start()
            self._workers.append(t)
        self._started_at = time.monotonic()
        return self.endpoint

    def _stop_gate(self) -> None:
        if self._gate is not None:
            self._gate.stop()
            self._gate = None

    def request_stop(self, reason: str = "stop requested") -> None:
        """Ask :meth:`serve` to shut down; safe from a signal handler or another thread."""
        self._stop_reason = reason
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- main loop ---------------------------------------------------------------------------
    def serve(self) -> None:
        """Serve until :meth:`request_stop`; then drain, flush and close everything."""
        if self.router is None:
            self.start()
        assert self.router is not None and self._results is not None
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self._results, zmq.POLLIN)
        interval = self.config.log_interval_s
        next_log = time.monotonic() + interval
        last_log = time.monotonic()
        try:
            while not self._stop.is_set():
                wait_ms = max(0, min(100, int((next_log - time.monotonic()) * 1000) + 1))
                events = dict(poller.poll(wait_ms))
                if self._results in events:
                    self._forward_results()
                if self.router in events:
                    self._read_requests()
                now = time.monotonic()
                if now >= next_log:
                    self._log_interval(now - last_log)
                    last_log = now
                    next_log = now + interval
        finally:
            self._shutdown(poller)

    def _read_requests(self, max_messages: int = 64) -> None:
        assert self.router is not None
        for _ in range(max_messages):
            try:
                frames = self.router.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            try:
                self._handle(frames)
            except Exception as exc:  # a bug must not take the server down; say so and go on
                log.exception("edge: internal error handling a message")
                rid = peek_request_id(frame_buffer(frames[1])) if len(frames) > 1 else 0
                why = f"internal error: {type(exc).__name__}: {exc}"
                self._reply_error(frames[0], WireError(ErrorCode.INTERNAL, why, rid))

    def _handle(self, frames: Sequence[Any]) -> None:
        t_recv = time.monotonic_ns()
        identity, body = frames[0], frames[1:]
        try:
            msg = parse(body, self.limits)
        except WireError as exc:
            self.stats.add(requests=1)
            self._reply_error(identity, exc, peek_sent_ns(frame_buffer(body[0])) if body else 0)
            return
        h = msg.header
        if h.msg_type is MsgType.PING:
            self.stats.add(pings=1)
            if self._stop.is_set():
                self._reply_error(
                    identity,
                    WireError(ErrorCode.SHUTTING_DOWN, "edge is shutting down", h.request_id),
                    h.sent_ns,
                )
            else:
                self._send(identity, pong_frames(h))
            return
        self.stats.add(requests=1)
        try:
            if h.msg_type is not MsgType.REQUEST:
                raise WireError(
                    ErrorCode.BAD_TYPE,
                    f"the edge accepts REQUEST and PING, got {h.msg_type.name}",
                    h.request_id,
                )
            check_request(h, self.catalog, self.limits)
            if self._stop.is_set():
                raise WireError(ErrorCode.SHUTTING_DOWN, "edge is shutting down", h.request_id)
        except WireError as exc:
            self._reply_error(identity, exc, h.sent_ns)
            return
        job = _Job(identity, msg, t_recv, h.payload_bytes, h.tensors[0].shape[0], (h.model, h.cut))
        busy = self._jobs.offer(bytes(frame_buffer(identity)), job)
        if busy is not None:
            self.stats.add(busy=1)
            wait_s, why = busy
            self._reply_error(
                identity, WireError(ErrorCode.BUSY, why, h.request_id), h.sent_ns, wait_s, request=h
            )

    def _reply_error(
        self,
        identity: Any,
        exc: WireError,
        sent_ns: int = 0,
        retry_after_s: float = 0.0,
        *,
        request: Header | None = None,
    ) -> None:
        if self.stats.note_error():
            peer = bytes(frame_buffer(identity)).hex()
            log.warning(
                "edge: refused request %d from peer %s: %s: %s",
                exc.request_id,
                peer,
                exc.code.name,
                exc.reason,
            )
        backlog = None if request is None else self._jobs.backlog_s()
        self._send(
            identity, error_reply(exc, sent_ns, retry_after_s, request=request, backlog_s=backlog)
        )

    def _send(self, identity: Any, frames: list[Any]) -> None:
        assert self.router is not None
        try:
            self.router.send_multipart([identity, *frames], flags=zmq.NOBLOCK, copy=False)
        except zmq.ZMQError:  # peer gone or its queue full: the reply is lost, the server goes on
            pass

    def _forward_results(self) -> None:
        assert self._results is not None
        while True:
            try:
                frames = self._results.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            assert self.router is not None
            try:
                self.router.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
            except zmq.ZMQError:
                pass

    # -- workers -----------------------------------------------------------------------------
    def _worker(self) -> None:
        push = self.context.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 1000)
        push.connect(self._results_addr)
        max_rows, max_wait_s = self.config.max_batch, self.config.max_wait_ms / 1e3
        try:
            while True:
                jobs = self._jobs.take_batch(max_rows, max_wait_s)
                if not jobs:
                    return
                tail_s = None
                try:
                    replies, tail_s = self._run_jobs(jobs)
                    for job, frames in zip(jobs, replies, strict=True):
                        push.send_multipart([job.identity, *frames], copy=False)
                finally:
                    self._jobs.done_batch(jobs, tail_s)
                    del jobs
        finally:
            push.close()

    def _run_jobs(self, jobs: list[_Job]) -> tuple[list[list[Any]], float | None]:
        """One reply per job, in order, and the tail time they took in all (None: none ran).

        Several jobs go through ``run_batch`` when the runner has it; if that raises (or the
        runner has none), each job runs alone, so a request the tail cannot take fails alone.
        """
        h0 = jobs[0].message.header
        replies: list[list[Any] | None] = [None] * len(jobs)
        inputs: list[tuple[int, list[Any]]] = []
        for j, job in enumerate(jobs):  # wrap every request before stacking any
            try:
                inputs.append((j, job.message.tensors()))
            except Exception as exc:
                replies[j] = self._tail_failed(job, exc)
        run_batch = getattr(self.runner, "run_batch", None)
        tail_s: float | None = None
        if len(inputs) > 1 and run_batch is not None:
            t_start = time.monotonic_ns()
            try:
                outs = run_batch(h0.model, h0.cut, [x for _, x in inputs])
                if len(outs) != len(inputs):
                    raise RuntimeError(f"run_batch returned {len(outs)} results for {len(inputs)} requests")
            except Exception as exc:
                log.debug("edge: batch of %d for %s cut %d failed (%s: %s); running it one by one",
                          len(inputs), h0.model, h0.cut, type(exc).__name__, exc)
            else:
                t_end = time.monotonic_ns()
                self.stats.add(tail_calls=1)
                tail_s = (t_end - t_start) / 1e9
                for (j, _), out in zip(inputs, outs, strict=True):
                    replies[j] = self._result(jobs[j], out, t_start, t_end)
                inputs = []
        for j, x in inputs:
            t_start = time.monotonic_ns()
            try:
                out = self.runner.run(h0.model, h0.cut, x)
            except Exception as exc:
                replies[j] = self._tail_failed(jobs[j], exc)
                continue
            t_end = time.monotonic_ns()
            self.stats.add(tail_calls=1)
            tail_s = (tail_s or 0.0) + (t_end - t_start) / 1e9
            replies[j] = self._result(jobs[j], out, t_start, t_end)
        return replies, tail_s  # type: ignore[return-value]

    def _result(self, job: _Job, outputs: Sequence[Any], t_start: int, t_end: int) -> list[Any]:
        """The RESULT frames for ``job`` (an error reply if they cannot travel)."""
        h = job.message.header
        try:
            frames = result_frames(
                h,
                outputs,
                queue_ns=t_start - job.t_recv_ns,
                tail_ns=t_end - t_start,
                backlog_s=self._jobs.backlog_s(),
            )
            size = sum(frame_nbytes(f) for f in frames)
            if size > self.limits.max_message_bytes:
                raise RuntimeError(
                    f"result is {size} bytes, "
                    f"over the message limit {self.limits.max_message_bytes}"
                )
        except Exception as exc:
            return self._tail_failed(job, exc)
        self.stats.add(served=1, tail_ns=t_end - t_start)
        if self._served_log is not None:
            self._served_log.add(bytes(frame_buffer(job.identity)), h.request_id, h.model, h.cut, t_end - t_start)
        return frames

    def _tail_failed(self, job: _Job, exc: Exception) -> list[Any]:
        h = job.message.header
        reason = f"tail of {h.model} from cut {h.cut} failed: {type(exc).__name__}: {exc}"
        if self.stats.note_error():
            log.warning("edge: request %d: %s", h.request_id, one_line(reason))
        return error_reply(
            WireError(ErrorCode.TAIL_FAILED, reason, h.request_id),
            h.sent_ns,
            request=h,
            backlog_s=self._jobs.backlog_s(),
        )

    # -- logging and shutdown ----------------------------------------------------------------
    def _log_interval(self, span_s: float) -> None:
        c = self.stats.take_interval()
        extra = []
        if c.unlogged:
            extra.append(f"{c.unlogged} refusals not logged")
        if c.busy:
            extra.append(f"{c.busy} BUSY")
        for n, what in ((c.refused_key, "unknown CURVE keys"), (c.refused_address, "addresses not allowed"),
                        (c.refused_connection, "connections over the cap")):
            if n:
                extra.append(f"{n} handshakes refused ({what})")
        if self._gate is not None:
            self._gate.new_interval()
        queued = self._jobs.jobs
        log.info(
            "edge: last %.1f s: %d requests, %d served, %d errors, %d pings, "
            "mean tail %.2f ms, mean batch %.1f, %d queued%s",
            span_s,
            c.requests,
            c.served,
            c.errors,
            c.pings,
            c.mean_tail_ms(),
            c.served / c.tail_calls if c.tail_calls else 0.0,
            queued,
            f" ({'; '.join(extra)})" if extra else "",
        )

    def _shutdown(self, poller: zmq.Poller) -> None:
        log.info(
            "edge: stopping (%s): finishing %d accepted requests",
            self._stop_reason or "stop requested",
            self._jobs.jobs,
        )
        self._jobs.close()
        deadline = time.monotonic() + self.config.drain_timeout_s
        while any(t.is_alive() for t in self._workers) and time.monotonic() < deadline:
            events = dict(poller.poll(50))
            if self._results in events:
                self._forward_results()
            if self.router in events:
                self._read_requests()  # answered SHUTTING_DOWN
        for t in self._workers:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        self._forward_results()
        stuck = sum(t.is_alive() for t in self._workers)
        assert self.router is not None and self._results is not None
        self.router.close(linger=1000)
        self._results.close(linger=0)
        self._stop_gate()
        if self._served_log is not None:
            self._served_log.close()
        if self._own_context and not stuck:
            self.context.term()
        c = self.stats.total
        up = time.monotonic() - self._started_at
        log.info(
            "edge: stopped after %.1f s: %d requests, %d served, %d errors, %d pings, "
            "mean tail %.2f ms%s",
            up,
            c.requests,
            c.served,
            c.errors,
            c.pings,
            c.mean_tail_ms(),
            f"; {stuck} workers still running a tail were abandoned" if stuck else "",
        )


__all__ = ["EdgeServer", "ServerConfig"]
