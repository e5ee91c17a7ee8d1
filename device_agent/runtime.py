"""The live device agent: the controller's decisions carried out on a real model and GPU clock.

Every slot (wall clock) the agent reads its queues, the measured energy and its bandwidth
estimate, asks the same :class:`~controller.lyapunov.LyapunovController` the simulator uses,
pins the GPU level through a clock backend, runs heads, paces the uplink at the chosen rate and
collects results from the edge agent. Frames are never lost:

* a frame whose head ran at the last cut is complete on the device;
* a frame sent to the edge keeps its input tensor until its result arrives; if the edge goes
  silent past ``edge_timeout_s`` while requests are pending (or cannot be reached), every frame
  in flight or waiting for the uplink goes back to the front of the device's queue to be re-run
  wholly on the device (in slots, like any frame), new frames run wholly on the device, and a
  heartbeat ping every ``heartbeat_s`` detects the edge's return, after which splitting resumes.
  A busy edge that keeps answering other requests is not silent;
* a late reply for a frame already re-run locally is dropped by the client (no duplicates);
  a late RESULT is counted (``frames.late_results``);
* with several edges (``client`` a list: :mod:`device_agent.edges`), each request goes to the
  live edge with the least expected wait, and an edge is taken as down on its own, as above:
  what it had in flight goes back to the front of the uplink, unpaced, to be sent to another
  edge that is up (``frames.failed_over``), it is pinged until it answers, and only when no edge
  is up do frames fall back to the device, as with one edge;
* a BUSY reply (the edge's queue, or this device's share of it, is full) runs that frame on the
  device and keeps new frames on the device for as long as the reply advises (its retry-after),
  after which splitting resumes;
* an edge that answers it does not serve this model or input (unknown model, other cuts,
  shapes or dtype) is left alone for the rest of the run, with one message saying so;
* once every frame has arrived, the queue is drained (heads run whatever the controller's
  processing decision, at the fastest level when it chose to idle) and the uplink sends at
  least at the bandwidth estimate, so a run always ends.

The bandwidth estimate is learnt from what the agent measures. On a trace-shaped link
(emulation) each message that leaves the shaper gives a throughput sample; on a real network
each reply gives ``bits / (round trip - edge queue - edge tail)``. When no sample has come for
``probe_every_s`` (the controller keeps everything on the device, say), the oldest queued frame
is sent at cut 0 as fast as the link allows (or, when a message already waits on the uplink, that
message is): an exploration step that measures the link and still completes a real frame, so a
low initial estimate cannot lock the agent out of offloading, and no message waits on a paced
rate of zero for longer than ``probe_every_s``.

Frames are counted where things happen to them: on arrival, on completion (a second completion of
one frame is counted apart, and would break conservation), and, when a run is stopped early,
in the structure each unfinished frame is left in (the queue, a head that was running, the
uplink, the edge). The summary's conservation check compares these independent counts.

Memory does not grow with the run's tensors: a frame drops its input the moment its result is in
(no fallback can need it then), and results are not kept (the summary needs their times only);
what stays per frame is its few timestamps.

A shared edge reports its backlog (tail work queued ahead of a new request) on every RESULT and
BUSY reply; the agent passes the latest report to the controller as ``Observation.edge_wait_s``,
which prices it as latency on offloaded frames (see :meth:`LiveAgent.edge_wait_s`).

Radio energy is not on any rail of an emulated run, so the agent adds the network profile's
``P_tx(r)`` for the time it sent (documented in the summary as ``tx_energy_j``).
"""

from __future__ import annotations

import csv
import math
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from controller.calibration import CalibratingController, CalibrationConfig
from controller.lyapunov import LyapunovConfig, LyapunovController
from controller.model import SystemModel
from controller.policy import Observation, Outcome
from controller.profiles import ModelProfile, load_board, load_network
from device_agent.clock import ClockBackend, RestoreGuard
from device_agent.edges import EdgeEndpoint, pick
from device_agent.link import BandwidthEstimator, CapacityCurve, Message, Uplink
from wire.format import ErrorCode

#: error replies that mean "this edge cannot serve this model or input", not a passing fault
_REFUSALS = frozenset({ErrorCode.UNKNOWN_MODEL, ErrorCode.BAD_CUT, ErrorCode.BAD_TENSOR_COUNT,
                       ErrorCode.BAD_DTYPE, ErrorCode.BAD_SHAPE, ErrorCode.BAD_VERSION})


@dataclass
class Frame:
    fid: int
    arrival_s: float
    x: torch.Tensor | None  # the input; None once the result is in
    head_start_s: float = math.nan
    head_done_s: float = math.nan
    sent_s: float = math.nan
    result_s: float = math.nan
    cut: int = -1
    path: str = ""          # "edge", "local", "fallback"
    request_id: int = 0
    bits: float = 0.0
    fallback: bool = False  # sent to the edge once, now re-run on the device
    edge: int = -1          # the edge (its index among those given) that returned the result
    wire: tuple | None = None  # (cut index, tensors) while at an edge: what is sent again on failover


@dataclass
class LiveConfig:
    model: str = "resnet50"
    input_shape: tuple[int, ...] = (3, 224, 224)
    board: str = "jetson-orin-nano"
    network: str = "lte-shannon"
    slot_s: float = 0.1
    fps: float = 10.0
    frames: int | None = 300
    duration_s: float | None = None
    controller: LyapunovConfig = field(default_factory=LyapunovConfig)
    edge_timeout_s: float = 2.0
    heartbeat_s: float = 0.5
    drain_timeout_s: float = 30.0
    initial_bandwidth_bps: float = 5e6
    probe_every_s: float = 2.0
    verify_every: int = 0
    seed: int = 0
    device: str = "cpu"
    calibration: CalibrationConfig | None = field(default_factory=CalibrationConfig)  # None: off


class LiveAgent:
    """One run of the device agent. ``run()`` returns the summary dict."""

    def __init__(self, cfg: LiveConfig, partition, profile: ModelProfile, backend: ClockBackend, client, *,
                 link: CapacityCurve | None = None, source=None, log=print):
        self.cfg = cfg
        self.part = partition
        self.backend = backend
        clients = [] if client is None else list(client) if isinstance(client, (list, tuple)) else [client]
        self.edges = [EdgeEndpoint(i, c) for i, c in enumerate(clients)]  # in the order given: ties go to the first
        self.client = clients[0] if clients else None  # the first edge's (the only one's, usually)
        self._poller = None  # on every edge's socket, built when first needed
        self.log = log
        board = load_board(cfg.board)
        self.profile = profile
        self.system = SystemModel.build(board, self.profile, load_network(cfg.network), cfg.slot_s)
        self.offered = [c for c in partition.cuts if c.offered]
        if [c.name for c in self.offered] != list(self.system.cut_names):
            raise ValueError("the model profile's offered cuts do not match the partition's: "
                             f"{list(self.system.cut_names)} vs {[c.name for c in self.offered]}")
        self.policy = LyapunovController(self.system, cfg.controller)
        if cfg.calibration is not None:  # the tables follow what this board measures
            self.policy = CalibratingController(self.policy, cfg.calibration)
        self._slot_heads: list[tuple[int, float]] = []  # (cut, seconds) of the heads run this slot
        self._drift_seen = 0
        self.levels = [int(f) for f in board.levels_hz]
        hw_levels = set(backend.levels_hz())
        self.level_hz = [f if f in hw_levels else min(hw_levels, key=lambda h: abs(h - f)) for f in self.levels]
        self.uplink = Uplink(link)
        self.estimator = BandwidthEstimator(cfg.initial_bandwidth_bps)
        self.source = source or synthetic_source(cfg.input_shape, cfg.seed)
        self.local = len(self.offered) - 1
        self.dev = torch.device(cfg.device)  # where heads run; the partition must be there already
        self.frames: list[Frame] = []
        self.queue: deque[Frame] = deque()
        self.edge_events: list[tuple[float, str]] = []
        self.rows: list[dict] = []
        self.verify: list[float] = []
        self._errors_seen: set[str] = set()
        self._last_sample_s = 0.0
        self.probes = 0
        self.edge_errors = 0
        self.busy_replies: list[tuple[float, float]] = []  # (when, advised wait s)
        self.n_failed_over = 0  # frames an edge had when it went down, sent again to another edge
        self.n_arrived = 0
        self.n_completed = 0
        self.n_completed_twice = 0
        self._running: Frame | None = None  # the frame whose head runs now
        self._t0 = 0.0

    # -- time ------------------------------------------------------------------------------------
    def now(self) -> float:
        return time.monotonic() - self._t0

    # -- the run -----------------------------------------------------------------------------------
    def run(self) -> dict:
        cfg = self.cfg
        n_target = cfg.frames if cfg.frames is not None else int(math.floor((cfg.duration_s or 0) * cfg.fps))
        arrivals = np.arange(n_target) / cfg.fps
        meter = self.backend.energy_meter()
        with RestoreGuard(self.backend) as guard, torch.inference_mode():
            meter.start()
            self.guard = guard
            try:
                self._t0 = time.monotonic()
                next_arrival = 0
                t = 0
                last_arrivals = 0
                cur_level = -1
                last_energy = 0.0
                last_read = 0.0
                last_sent = 0.0
                deadline_all = arrivals[-1] + cfg.drain_timeout_s if n_target else 0.0
                while True:
                    t = max(t, int(self.now() // cfg.slot_s))  # a slot overrun by compute is skipped, not replayed
                    slot_start = t * cfg.slot_s
                    slot_end = slot_start + cfg.slot_s
                    self._sleep_until(slot_start)
                    next_arrival, came = self._admit(arrivals, next_arrival, self.now())
                    self._service_network()
                    obs = Observation(t, float(len(self.queue)), self.uplink.queued_bits, self.estimator.estimate_bps,
                                      last_arrivals, self.edge_wait_s(self.now()))
                    d = self.policy.decide(obs)
                    cut, rate, level, process = d.cut, d.rate_bps, d.level, d.process
                    if not self._offloading(self.now()):
                        cut, rate = self.local, 0.0
                    draining = next_arrival >= n_target
                    if draining and not process and self.queue:
                        process, level = True, len(self.levels) - 1
                    if draining and self._offloading(self.now()) and (
                            self.uplink.queue or (self.queue and cut != self.local)):
                        rate = max(rate, self.estimator.estimate_bps)
                    if level != cur_level:
                        self.backend.pin(self.level_hz[level])
                        cur_level = level
                    self.uplink.set_rate(rate if self.edge_up else 0.0, self.now())
                    self._maybe_probe()
                    done = 0
                    T_plan = float(self.policy.system.head_s[cut, level])  # calibrated tables when on
                    # the slot runs out while heads, the link and the edge work; frames arriving
                    # during it join the queue at once and start in it (as in the simulator)
                    while True:
                        now = self.now()
                        next_arrival, more = self._admit(arrivals, next_arrival, now)
                        came += more
                        if now >= slot_end - 1e-4:
                            break
                        # a head starts if it should end within the slot (the first one always)
                        if cut != self.local and not self.edge_up:  # the edge went down during the slot
                            cut = self.local
                            T_plan = float(self.policy.system.head_s[cut, level])
                        if process and self.queue and (done == 0 or T_plan <= 0 or now + T_plan <= slot_end):
                            frame = self.queue.popleft()
                            self._run_head(frame, cut)
                            done += 1
                            self._service_network()
                            continue
                        wait = slot_end - now
                        if next_arrival < n_target:
                            wait = min(wait, max(0.0, arrivals[next_arrival] - now))
                        self._service_network(wait_s=min(0.002, max(0.0, wait)))
                    energy = meter.read_j()
                    t_read = self.now()
                    tx_j = self._tx_energy(rate, self.uplink.sent_bits - last_sent)
                    slot_energy = energy - last_energy + tx_j
                    heads = [s for c, s in self._slot_heads if c == cut]
                    self.policy.observe(Outcome(
                        slot_energy, done, self.uplink.sent_bits - last_sent, cut, level,
                        sum(heads) / len(heads) if heads else math.nan,
                        sum(s for _, s in self._slot_heads), energy - last_energy, t_read - last_read))
                    self._slot_heads.clear()
                    self._note_drift()
                    self.rows.append({
                        "time_s": slot_start, "capacity_est_bps": obs.capacity_bps,
                        "capacity_bps": self.uplink.capacity_bps(slot_start) if self.uplink.capacity else math.nan,
                        "cut": cut, "gpu_hz": self.level_hz[level], "rate_bps": rate,
                        "sent_bits": self.uplink.sent_bits - last_sent, "Qc_frames": obs.queue_frames, "Qx_bits": obs.queue_bits,
                        "energy_j": slot_energy, "tx_energy_j": tx_j, "heads_done": done, "arrivals": came,
                        "process": process, "edge_up": self.edge_up, "edge_wait_s": obs.edge_wait_s,
                    })
                    last_energy, last_sent, last_read = energy, self.uplink.sent_bits, t_read
                    last_arrivals = came
                    t += 1
                    # every frame is queued, on the uplink, at the edge or done
                    finished = next_arrival >= n_target and not (self.queue or self.uplink.busy or self._at_edges())
                    if finished:
                        break
                    if next_arrival >= n_target and self.now() > deadline_all:
                        self._fallback_all()
                        break
            finally:  # also on SIGINT/SIGTERM (the guard restores the clock, then exits)
                meter.stop()
                self.elapsed_s = self.now()
        self.restored = guard.restored or {}
        return self.summary()

    @property
    def calibrator(self):
        """The online calibration's estimates (``controller.calibration.Calibrator``), or None."""
        return getattr(self.policy, "calibrator", None)

    @property
    def edge_up(self) -> bool:
        """Whether some edge is up (frames may be split)."""
        return any(ep.up for ep in self.edges)

    def edge_wait_s(self, now: float) -> float:
        """The edge's backlog as the controller should see it now, in seconds.

        The edge reported the work queued ahead of a new request when it replied; it works that
        off at one second per second, and what other devices sent since is unknown, so the
        report decays linearly from when it came and reaches 0 by itself when no reply has come
        for that long. While the edge is down (or refuses this model) nothing goes there: 0.
        With several edges this is the report of the edge a request sent now would go to
        (:func:`device_agent.edges.pick`: the least expected wait).
        """
        ep = pick(self.edges, now, self._prior_tail_s)
        return 0.0 if ep is None else ep.reported_wait_s(now)

    def _offloading(self, now: float) -> bool:
        """Whether frames may go to an edge now: one is up and its last BUSY advice has run out."""
        return any(ep.eligible(now) for ep in self.edges)

    def _note_drift(self) -> None:
        """Log the calibration's drift events (each once) as they come."""
        cal = self.calibrator
        if cal is None or len(cal.events) == self._drift_seen:
            return
        for _, event in cal.events[self._drift_seen:]:  # summary: calibration.events
            self.log(f"[{self.now():7.2f} s] {event}")
        self._drift_seen = len(cal.events)

    def _admit(self, arrivals: np.ndarray, next_arrival: int, now: float) -> tuple[int, int]:
        """Queue the frames that have arrived by ``now``; (next frame to arrive, how many came)."""
        came = 0
        while next_arrival < len(arrivals) and arrivals[next_arrival] <= now:
            self.frames.append(Frame(next_arrival, float(arrivals[next_arrival]), self.source(next_arrival)))
            self.queue.append(self.frames[-1])
            self.n_arrived += 1
            next_arrival += 1
            came += 1
        return next_arrival, came

    def _sleep_until(self, t_s: float) -> None:
        while True:
            left = t_s - self.now()
            if left <= 0:
                return
            self._service_network(wait_s=min(left, 0.005))

    # -- compute ---------------------------------------------------------------------------------
    def _head(self, cut: int, x: torch.Tensor):
        """The head up to offered cut ``cut`` on ``x``, run on ``cfg.device``; outputs in host
        memory (what the wire sends), so the time taken includes the GPU finishing."""
        outs = self.part.head(self.offered[cut])(x.to(self.dev))
        if self.dev.type == "cpu":
            return outs
        return type(outs)(t.cpu() for t in outs) if isinstance(outs, (tuple, list)) else outs.cpu()

    def _run_head(self, frame: Frame, cut: int) -> None:
        spec = self.offered[cut]
        frame.head_start_s = self.now()
        self._running = frame
        self.backend.mark_busy(True)
        try:
            outs = self._head(cut, frame.x)
        finally:
            self.backend.mark_busy(False)
        frame.head_done_s = self.now()
        self._slot_heads.append((cut, frame.head_done_s - frame.head_start_s))
        frame.cut = cut
        if cut == self.local:
            frame.sent_s = frame.head_done_s
            self._complete(frame, "fallback" if frame.fallback else "local", frame.head_done_s)
        else:
            self._push(frame, spec.index, outs)
        self._running = None

    def _complete(self, frame: Frame, path: str, when_s: float) -> None:
        """A frame's result is in (from the head at the last cut, or from the edge)."""
        if math.isfinite(frame.result_s):  # never expected: counted so conservation shows it
            self.n_completed_twice += 1
            return
        frame.result_s = when_s
        frame.path = path
        frame.x = frame.wire = None
        self.n_completed += 1

    def _push(self, frame: Frame, cut_index: int, outs, unpaced: bool = False) -> None:
        tensors = list(outs) if isinstance(outs, (tuple, list)) else [outs]
        frame.bits = 8.0 * sum(t.numel() * t.element_size() for t in tensors)
        self.uplink.push(Message(frame.bits, (frame, cut_index, tensors), self.now(), unpaced=unpaced))

    def _maybe_probe(self) -> None:
        """Send the oldest queued frame at cut 0, unpaced, when the link has not been measured
        for ``probe_every_s``: the estimate then follows the link even while nothing is offloaded."""
        now = self.now()
        if not self._offloading(now) or self._at_edges() or now - self._last_sample_s < self.cfg.probe_every_s:
            return
        if self.uplink.queue:
            # a message is already waiting (the controller may hold a small bit queue at rate 0
            # for long): send it unpaced, which measures the link and unblocks that frame
            head = self.uplink.queue[0]
            if not head.unpaced:
                head.unpaced = True
                self.probes += 1
                self._last_sample_s = now
            return
        if not self.queue:
            return
        frame = self.queue.popleft()
        frame.head_start_s = frame.head_done_s = now
        frame.cut = 0
        self.probes += 1
        self._last_sample_s = now  # one probe at a time
        self._push(frame, self.offered[0].index, frame.x, unpaced=True)

    def _run_locally(self, frame: Frame) -> None:
        """Run the whole model on the device, now, for a frame the edge will not answer."""
        frame.fallback = True
        self._run_head(frame, self.local)

    # -- network -----------------------------------------------------------------------------------
    def _service_network(self, wait_s: float = 0.0) -> None:
        now = self.now()
        for msg, t_dep, paced in self.uplink.advance(now):
            frame, cut_index, tensors = msg.payload
            if self.uplink.capacity is not None:  # an emulated link: the shaper's timing is the measurement
                if msg.active_s > 0.0:
                    self.estimator.add(msg.bits, msg.active_s, paced)
                    if not paced:
                        self._last_sample_s = now
            frame.sent_s = t_dep
            self._send(frame, cut_index, tensors)
        if not self.edges:
            return
        self._collect(wait_s)
        now = self.now()
        for ep in self.edges:
            if ep.up and ep.in_flight:
                oldest = min(f.sent_s for f in ep.in_flight.values())
                if now - max(oldest, ep.last_heard_s) > self.cfg.edge_timeout_s:
                    self._edge_down(f"no reply within {self.cfg.edge_timeout_s:g} s", ep=ep)
            if not ep.up and ep.refused is None and now - ep.last_ping_s >= self.cfg.heartbeat_s:
                ep.last_ping_s = now
                if len(ep.pings) >= 16:
                    ep.client.forget(ep.pings.popleft())
                try:
                    ep.pings.append(ep.client.submit_ping(timeout_s=0.01))
                except Exception:  # EdgeTimeout: still no connection
                    pass

    def _prior_tail_s(self, frame: Frame) -> float:
        """The profile's edge time of a frame's tail: an edge's tail time before it reported one."""
        return float(self.system.tail_s[frame.cut]) if 0 <= frame.cut < len(self.system.tail_s) else 0.0

    def _send(self, frame: Frame, cut_index: int, tensors: list) -> None:
        """Hand a message that left the uplink to the edge with the least expected wait (or, with
        no edge up, put its frame back in the device's queue)."""
        ep = pick(self.edges, self.now(), self._prior_tail_s)
        if ep is None:
            self._requeue([frame])
            return
        frame.wire = (cut_index, tensors)  # kept until the result is in: another edge may need it
        try:
            rid = ep.client.submit(self.cfg.model, cut_index, tensors, timeout_s=0.05)
        except Exception as exc:  # EdgeTimeout: no connection
            self._edge_down(f"cannot send: {exc}", also=[frame], ep=ep)
            return
        frame.request_id = rid
        ep.in_flight[rid] = frame
        ep.sent += 1

    def _collect(self, wait_s: float) -> None:
        """Take every reply that has come, from every edge; if none had, wait up to ``wait_s``
        for one (on all the edges' sockets at once) and take what came."""
        if self._drain_replies() or wait_s <= 0.0:
            return
        if self._poller is None:
            import zmq

            self._poller = zmq.Poller()
            for ep in self.edges:
                self._poller.register(ep.client.socket, zmq.POLLIN)
        if self._poller.poll(int(wait_s * 1000)):
            self._drain_replies()

    def _drain_replies(self) -> int:
        from wire.transport import EdgeTimeout

        n = 0
        for ep in self.edges:
            while True:
                try:
                    reply = ep.client.receive(0.0)
                except EdgeTimeout:
                    break
                n += 1
                self._on_reply(ep, reply)
        return n

    def _on_reply(self, ep: EdgeEndpoint, reply) -> None:
        from wire.format import MsgType

        now = self.now()
        ep.last_heard_s = now
        if reply.kind is MsgType.PONG:
            if reply.request_id in ep.pings:
                for rid in ep.pings:
                    ep.client.forget(rid)
                ep.pings.clear()
                if not ep.up:
                    others = any(e.up for e in self.edges)
                    ep.up = True
                    what = "it gets frames again" if others else "splitting resumes"
                    self.edge_events.append((now, f"edge back: {what}", ep.endpoint))
                    self.log(f"[{now:7.2f} s] {self._name(ep)} answered a heartbeat: {what}")
            return
        ep.note_backlog(reply.edge_backlog_s, now)  # every reply tells the edge's state, whatever became of its frame
        frame = ep.in_flight.pop(reply.request_id, None)
        if frame is None:
            return
        if not reply.ok:
            self.edge_errors += 1
            code = reply.error_code
            if code in _REFUSALS:  # the edge does not serve this model/input: no use retrying
                self._edge_refuses(reply.error_reason, frame, ep)
                return
            if code == ErrorCode.SHUTTING_DOWN:
                self._edge_down("the edge is shutting down", also=[frame], ep=ep)
                return
            if code == ErrorCode.BUSY:  # run it here; offload there again once the advised wait is over
                wait = max(reply.retry_after_s, self.cfg.slot_s / 10)
                if not self.busy_replies:
                    self.log(f"[{now:7.2f} s] {self._name(ep)} busy: {reply.error_reason}; frames stay "
                             f"{'on the device' if len(self.edges) == 1 else 'off it'} for {wait * 1e3:.0f} ms "
                             "(and after each later BUSY reply, as advised)")
                self.busy_replies.append((now, wait))
                ep.busy_until_s = max(ep.busy_until_s, now + wait)
                if not self._offloading(now):
                    self.uplink.set_rate(0.0, now)  # hold what waits on the uplink too
                self._run_locally(frame)
                return
            if reply.error_reason not in self._errors_seen:  # once per reason, not per frame
                self._errors_seen.add(reply.error_reason)
                self.log(f"edge error for frame {frame.fid}: {reply.error_reason}; running such frames locally")
            self._run_locally(frame)
            return
        x = frame.x  # kept for the check below; the frame itself lets go of it now
        frame.edge = ep.index
        self._complete(frame, "edge", now)
        ep.note_tail(reply.edge_tail_s)
        if self.uplink.capacity is None:  # a real network: the transfer time is in the round trip
            net_s = reply.rtt_s - reply.edge_queue_s - reply.edge_tail_s
            if net_s > 1e-4:
                self.estimator.add(frame.bits, net_s, False)
                self._last_sample_s = frame.result_s
        if self.cfg.verify_every and frame.fid % self.cfg.verify_every == 0:
            full = self._head(self.local, x)
            full = full[0] if isinstance(full, (tuple, list)) else full
            self.verify.append(float((full - reply.tensors[0]).abs().max()))

    def _name(self, ep: EdgeEndpoint) -> str:
        """How log lines name an edge: "edge" when there is one, "edge ENDPOINT" among several."""
        return "edge" if len(self.edges) == 1 else f"edge {ep.endpoint}"

    def _edge_down(self, why: str, also: list[Frame] = (), ep: EdgeEndpoint | None = None) -> None:
        """Take ``ep`` (default: the first edge) as down. What it had in flight, and ``also``
        (frames that were on their way to it), goes to another edge that is up, sent again, or,
        with none up, back to the device's queue with everything waiting on the uplink."""
        ep = self.edges[0] if ep is None else ep
        if not ep.up:
            self._redistribute(list(also))
            return
        ep.went_down()
        now = self.now()
        self.edge_events.append((now, f"edge down: {why}", ep.endpoint))
        lost = list(ep.in_flight.values())
        for rid in list(ep.in_flight):
            ep.client.forget(rid)  # a result that still comes is dropped (and counted) by the client
        ep.in_flight.clear()
        if any(e.up for e in self.edges):
            self.log(f"[{now:7.2f} s] {self._name(ep)} down ({why}): {len(lost) + len(also)} frame(s) it had "
                     "are sent to the other edges")
            self._resend(lost + list(also), ep)
            return
        waiting = [m.payload[0] for m in self.uplink.drain()] + list(also)
        gone = "" if len(self.edges) == 1 else "no edge left: "
        self.log(f"[{now:7.2f} s] {self._name(ep)} down ({why}): {gone}{len(lost)} sent and {len(waiting)} "
                 "unsent frames go back to the device's queue")
        self._requeue(lost + waiting)

    def _redistribute(self, frames: list[Frame]) -> None:
        """Frames an edge will not answer: sent again to another edge if one is up, else run here."""
        if any(e.up for e in self.edges):
            self._resend(frames, None)
        else:
            self._requeue(frames)

    def _resend(self, frames: list[Frame], source: EdgeEndpoint | None) -> None:
        """Put frames whose head already ran back at the front of the uplink, unpaced (they were
        sent once; they leave as fast as the link allows); the edge is picked when each leaves."""
        local = [f for f in frames if f.wire is None]  # never expected: such a frame runs here
        if local:
            self._requeue(local)
        now = self.now()
        for frame in sorted((f for f in frames if f.wire is not None), key=lambda f: f.fid, reverse=True):
            cut_index, tensors = frame.wire
            frame.request_id, frame.sent_s = 0, math.nan
            self.uplink.push_front(Message(frame.bits, (frame, cut_index, tensors), now, unpaced=True))
            self.n_failed_over += 1
            if source is not None:
                source.failed_over += 1

    def _edge_refuses(self, reason: str, frame: Frame, ep: EdgeEndpoint | None = None) -> None:
        """The edge answered that it cannot run this model or input (not served, other cuts or
        shapes): it gets no frame from now on (with one edge, every frame runs on the device),
        and no heartbeat brings it back."""
        ep = self.edges[0] if ep is None else ep
        if ep.refused is None:
            ep.refused = reason
            if len(self.edges) == 1:
                self.log(f"[{self.now():7.2f} s] the edge refuses {self.cfg.model}: {reason}; everything runs "
                         "on the device for the rest of the run (start the edge with this model and input shape)")
            else:
                self.log(f"[{self.now():7.2f} s] {self._name(ep)} refuses {self.cfg.model}: {reason}; it gets no "
                         "frame for the rest of the run (start it with this model and input shape)")
            self._edge_down(f"refuses {self.cfg.model}: {reason}", also=[frame], ep=ep)
        else:
            self._redistribute([frame])

    @property
    def refused(self) -> str | None:
        """Why the (first) edge refused this model, once it said so."""
        return self.edges[0].refused if self.edges else None

    def _requeue(self, frames: list[Frame]) -> None:
        """Put frames the edge will not answer back at the front of the queue, oldest first."""
        for frame in sorted(frames, key=lambda f: f.fid, reverse=True):
            frame.fallback = True
            frame.cut, frame.request_id, frame.wire = -1, 0, None
            frame.head_start_s = frame.head_done_s = frame.sent_s = math.nan
            self.queue.appendleft(frame)

    def _at_edges(self) -> int:
        """Frames sent to an edge whose result has not come."""
        return sum(len(ep.in_flight) for ep in self.edges)

    def _fallback_all(self) -> None:
        """Drain timeout: every frame not completed yet runs on the device."""
        at_edges = [f for ep in self.edges for f in ep.in_flight.values()]
        for frame in at_edges + [m.payload[0] for m in self.uplink.drain()] + list(self.queue):
            if not math.isfinite(frame.result_s):
                self._run_locally(frame)
        for ep in self.edges:
            for rid in list(ep.in_flight):
                ep.client.forget(rid)
            ep.in_flight.clear()
        self.queue.clear()

    def _tx_energy(self, rate: float, bits: float) -> float:
        if bits <= 0 or rate <= 0:
            return 0.0
        cap = self.estimator.estimate_bps
        return self.system.tx_power_w(rate, max(cap, rate)) * bits / rate

    # -- results -----------------------------------------------------------------------------------
    def summary(self) -> dict:
        fr = self.frames
        done = [f for f in fr if math.isfinite(f.result_s)]
        lat = np.array([f.result_s - f.arrival_s for f in done]) * 1e3
        duration = getattr(self, "elapsed_s", len(self.rows) * self.cfg.slot_s)
        energy = float(sum(r["energy_j"] for r in self.rows))
        n = len(done)
        pct = (lambda q: float(np.percentile(lat, q))) if n else (lambda q: math.nan)
        return {
            "policy": self.policy.name,
            "V": self.cfg.controller.V,
            "slots": len(self.rows),
            "slot_s": self.cfg.slot_s,
            "trace": {"path": getattr(self, "trace_path", None), "format": getattr(self, "trace_format", None),
                      "mean_bps": getattr(self, "trace_mean_bps", None), "duration_s": getattr(self, "trace_duration_s", None)},
            "frames": self.frame_counts(done),
            "throughput_fps": n / duration if duration else 0.0,
            "energy_j": energy,
            "energy_per_frame_j": energy / n if n else math.nan,
            "avg_power_w": energy / duration if duration else 0.0,
            "tx_energy_j": float(sum(r["tx_energy_j"] for r in self.rows)),
            "latency_ms": {"mean": float(lat.mean()) if n else math.nan, "p50": pct(50), "p95": pct(95), "p99": pct(99)},
            "queues": {
                "mean_Qc_frames": float(np.mean([r["Qc_frames"] for r in self.rows])) if self.rows else 0.0,
                "mean_Qx_bits": float(np.mean([r["Qx_bits"] for r in self.rows])) if self.rows else 0.0,
                "max_Qc_frames": float(max((r["Qc_frames"] for r in self.rows), default=0.0)),
            },
            "decision_us": {"median": math.nan, "p99": math.nan},
            "calibration": self._calibration_summary(),
            "edge_events": [{"time_s": t, "event": e, "endpoint": ep} for t, e, ep in self.edge_events],
            "edges": self.edge_counts(done),
            "probes": self.probes,
            "edge_errors": self.edge_errors,
            "bandwidth_estimate_bps": self.estimator.estimate_bps,
            "verify": {"checked": len(self.verify), "max_abs_err": max(self.verify) if self.verify else None},
            "backend": {"name": self.backend.name, "device": self.backend.device,
                        "restored": getattr(self, "restored", None) or getattr(getattr(self, "guard", None), "restored", None) or {}},
            "setup": {"model": self.cfg.model, "board": self.cfg.board, "network": self.cfg.network,
                      "cuts": list(self.system.cut_names), "fps": self.cfg.fps, "device": self.cfg.device},
        }

    def _calibration_summary(self) -> dict | None:
        cal = self.calibrator
        if cal is None:
            return None
        out = cal.measured_error()
        out["events"] = [e for _, e in cal.events]
        return out

    def frame_counts(self, done: list[Frame]) -> dict:
        """Frames counted where they arrived, completed and, for a run stopped early, where each
        unfinished one was left; ``conserved`` checks these independent counts against each other."""
        left = {
            "queued": len(self.queue),
            "running": int(self._running is not None and not math.isfinite(self._running.result_s)),
            "uplink": self.uplink.messages,
            "at_edge": self._at_edges(),
        }
        in_flight = sum(left.values())
        # no path of the agent gives a frame up (an edge that fails it has it run here), so a
        # frame that arrived and is neither complete nor anywhere is one the agent lost
        dropped = self.n_arrived - self.n_completed - in_flight
        return {
            "arrived": self.n_arrived, "completed": self.n_completed,
            "dropped": dropped, "in_flight": in_flight, "left": left,
            "completed_twice": self.n_completed_twice,
            "conserved": dropped == 0 and self.n_completed_twice == 0
                         and len(done) == self.n_completed and len(self.frames) == self.n_arrived,
            "offloaded": sum(f.path == "edge" for f in done),
            "local": sum(f.path in ("local", "fallback") for f in done),
            "fallback": sum(f.path == "fallback" for f in done),
            "busy_replies": len(self.busy_replies),
            "failed_over": self.n_failed_over,
            "late_results": sum(getattr(ep.client, "late_results", 0) for ep in self.edges),
        }

    def edge_counts(self, done: list[Frame]) -> list[dict]:
        """Per edge, in the order given: requests sent there, results taken from it, the frames
        it had when it went down that were sent to another edge, its outages, results that came
        from it for frames given up there (dropped), and why it refused this model, if it did."""
        return [{
            "endpoint": ep.endpoint, "sent": ep.sent,
            "offloaded": sum(f.path == "edge" and f.edge == ep.index for f in done),
            "failed_over": ep.failed_over, "downs": ep.downs,
            "late_results": getattr(ep.client, "late_results", 0), "refused": ep.refused,
        } for ep in self.edges]

    def write_frames_csv(self, path: Path) -> None:
        cols = ["fid", "arrival_s", "head_start_s", "head_done_s", "sent_s", "result_s", "latency_ms", "cut", "cut_name", "path",
                "request_id", "edge"]
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(cols)
            for f in self.frames:
                lat = (f.result_s - f.arrival_s) * 1e3 if math.isfinite(f.result_s) else math.nan
                name = self.system.cut_names[f.cut] if f.cut >= 0 else ""
                w.writerow([f.fid, *(f"{v:.6f}" for v in (f.arrival_s, f.head_start_s, f.head_done_s, f.sent_s, f.result_s)),
                            f"{lat:.3f}", f.cut, name, f.path, f.request_id if f.path == "edge" else "",
                            self.edges[f.edge].endpoint if f.path == "edge" else ""])

    def slot_arrays(self) -> dict[str, np.ndarray]:
        keys = self.rows[0].keys() if self.rows else []
        return {k: np.array([r[k] for r in self.rows]) for k in keys}


def synthetic_source(input_shape, seed: int):
    """Frames as seeded random images: frame ``i`` is the same tensor in every run."""

    def frame(i: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed * 1_000_003 + i)
        return torch.rand((1, *input_shape), generator=g)

    return frame


def folder_source(folder: str | Path, input_shape):
    """Frames from the images in ``folder`` (sorted, cycled), resized to ``input_shape``."""
    from torchvision.io import ImageReadMode, read_image
    from torchvision.transforms.functional import resize

    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise FileNotFoundError(f"{folder}: no .jpg/.jpeg/.png images")
    cache: dict[int, torch.Tensor] = {}

    def frame(i: int) -> torch.Tensor:
        k = i % len(files)
        if k not in cache:
            img = read_image(str(files[k]), ImageReadMode.RGB).float() / 255.0
            cache[k] = resize(img, list(input_shape[1:]), antialias=True).unsqueeze(0)
        return cache[k]

    return frame
