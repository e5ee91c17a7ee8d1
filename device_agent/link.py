"""The device's uplink: a paced FIFO of messages, optionally shaped to follow a capacity trace,
and the bandwidth estimator the controller reads.

:class:`Uplink` is a fluid link: between two calls to :meth:`Uplink.advance` it moves
``integral of min(rate, C(t)) dt`` bits from the front of its FIFO; a message departs when its
last bit has left. ``C(t)`` comes from a trace (emulation: both agents on one machine over
loopback, the link made as slow as the trace says) or is unlimited (a real network, where the
device only paces at the controller's rate). It is the same fluid model the simulator uses, so
an emulated run and ``cutedge simulate`` on the same trace can be compared.

:class:`BandwidthEstimator` learns the capacity from what the link delivers, never from the
trace: each departed message gives a throughput sample. A sample taken while the device's own
pacing was the bottleneck says only "capacity >= this", so it can raise the estimate (by at most
a probing step) but never lower it.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Message:
    """One message on the uplink: ``bits`` to send, and whatever the caller needs back."""

    bits: float
    payload: Any
    queued_s: float
    unpaced: bool = False  # a probe: sent as fast as the link allows, whatever the pacing rate
    left_bits: float = field(init=False)
    started_s: float | None = None
    pace_bits: float = 0.0  # what the pacing rate alone would have let through while it was sent
    active_s: float = 0.0   # time it was being sent (pacing rate > 0): the throughput sample's time

    def __post_init__(self) -> None:
        self.left_bits = float(self.bits)


class CapacityCurve:
    """Cumulative capacity of a trace: bits the link can carry between two times (wraps around)."""

    def __init__(self, edges_s: np.ndarray, rate_bps: np.ndarray):
        self.edges = np.asarray(edges_s, dtype=float)
        self.rate = np.asarray(rate_bps, dtype=float)
        self.cum = np.concatenate([[0.0], np.cumsum(self.rate * np.diff(self.edges))])
        self.duration = float(self.edges[-1])
        self.volume = float(self.cum[-1])

    @classmethod
    def from_trace(cls, trace, slot_s: float) -> CapacityCurve:
        """The trace's mean capacity per slot, as the simulator sees it. Packet-level traces
        (Mahimahi: one packet per line, ms timestamps) would otherwise starve a paced sender in
        the milliseconds between packets, which a real bottleneck buffer smooths out."""
        n = max(1, math.ceil(trace.duration_s / slot_s - 1e-9))
        caps, _ = trace.resample(slot_s, n)
        return cls(np.arange(n + 1) * slot_s, caps)

    def bits_until(self, t: float) -> float:
        """Bits carried on [0, t]."""
        laps, rem = divmod(t, self.duration)
        i = int(np.searchsorted(self.edges, rem, side="right")) - 1
        i = min(max(i, 0), len(self.rate) - 1)
        return laps * self.volume + self.cum[i] + self.rate[i] * (rem - self.edges[i])

    def rate_at(self, t: float) -> float:
        rem = t % self.duration
        i = int(np.searchsorted(self.edges, rem, side="right")) - 1
        return float(self.rate[min(max(i, 0), len(self.rate) - 1)])


class Uplink:
    """A paced FIFO link. Call :meth:`advance` with the current time; it returns departures."""

    def __init__(self, capacity: CapacityCurve | None = None, start_s: float = 0.0):
        self.capacity = capacity
        self.queue: deque[Message] = deque()
        self.rate_bps = 0.0
        self._t = start_s
        self._t0 = start_s
        self.sent_bits = 0.0
        self._held: list[tuple[Message, float, bool]] = []

    @property
    def busy(self) -> bool:
        """Messages queued, or departed but not yet handed out by :meth:`advance`."""
        return bool(self.queue or self._held)

    @property
    def messages(self) -> int:
        """How many messages :attr:`busy` is about."""
        return len(self.queue) + len(self._held)

    @property
    def queued_bits(self) -> float:
        return sum(m.left_bits for m in self.queue)

    def push(self, msg: Message) -> None:
        self.queue.append(msg)

    def push_front(self, msg: Message) -> None:
        """Queue ``msg`` ahead of every message not yet started (a message partly sent keeps the
        link until its last bit has left: a radio does not interleave them)."""
        at = 1 if self.queue and self.queue[0].started_s is not None else 0
        self.queue.insert(at, msg)

    def set_rate(self, rate_bps: float, now_s: float) -> None:
        """Change the pacing rate from ``now_s`` on (bits up to now move at the old rate; messages
        that leave meanwhile are handed out by the next :meth:`advance`)."""
        self._held = self.advance(now_s)  # includes what was held before
        self.rate_bps = max(0.0, float(rate_bps))

    def capacity_bps(self, now_s: float) -> float:
        return math.inf if self.capacity is None else self.capacity.rate_at(now_s - self._t0)

    def _budget(self, t0: float, t1: float, unpaced: bool = False) -> float:
        """Bits the link can move on [t0, t1]: the least of the pacing rate's share (none for an
        unpaced message) and the trace's capacity (none on an unshaped link)."""
        paced = math.inf if unpaced else self.rate_bps * (t1 - t0)
        if self.capacity is None:
            return paced
        return min(paced, self.capacity.bits_until(t1 - self._t0) - self.capacity.bits_until(t0 - self._t0))

    def advance(self, now_s: float) -> list[tuple[Message, float, bool]]:
        """Move bits up to ``now_s``; returns ``(message, departure time, paced)`` for each message
        whose last bit left, in order. ``paced`` is true when the device's rate, not the link,
        limited the transfer (its throughput is then only a lower bound on capacity): the link
        delivered at least 95 % of what the pacing allowed. Otherwise the link was the bottleneck
        and ``bits / active_s`` (the time it was being sent) measures its capacity, as a device
        would see it."""
        out, self._held = self._held, []
        t = self._t
        if now_s <= t:
            return out
        while self.queue and t < now_s:
            msg = self.queue[0]
            if msg.started_s is None:
                t = max(t, msg.queued_s)  # the link idled until this message was queued
                msg.started_s = t
                if t >= now_s:
                    break
            budget = self._budget(t, now_s, msg.unpaced)
            if budget < msg.left_bits - 1e-9:
                msg.left_bits -= budget
                self.sent_bits += budget
                self._charge(msg, now_s - t)
                t = now_s
                break
            # the message finishes inside [t, now]: find when (bisection on the budget)
            lo, hi = t, now_s
            if math.isinf(budget):  # unpaced on an unshaped link: leaves at once
                lo = hi = t
            for _ in range(40):
                mid = 0.5 * (lo + hi)
                if self._budget(t, mid, msg.unpaced) >= msg.left_bits:
                    hi = mid
                else:
                    lo = mid
            self._charge(msg, hi - t)
            self.sent_bits += msg.left_bits
            msg.left_bits = 0.0
            self.queue.popleft()
            out.append((msg, hi, not msg.unpaced and msg.bits >= 0.95 * msg.pace_bits))
            t = hi
        self._t = now_s
        return out

    def _charge(self, msg: Message, dt: float) -> None:
        """``msg`` was at the head of the link for ``dt`` seconds at the current pacing rate."""
        msg.pace_bits += self.rate_bps * dt
        if msg.unpaced or self.rate_bps > 0.0:
            msg.active_s += dt

    def drain(self) -> list[Message]:
        """Take every message still queued (e.g. to run it locally when the edge is gone)."""
        msgs = [m for m, _, _ in self._held] + list(self.queue)
        self._held = []
        self.queue.clear()
        return msgs


class BandwidthEstimator:
    """Capacity estimate from delivered messages: EWMA of samples, censored samples probe up.

    ``initial_bps`` is used until the first sample. ``alpha`` weighs a new uncensored sample;
    a censored one (pacing-limited) lifts the estimate to at most ``probe`` times the sample.
    """

    def __init__(self, initial_bps: float = 5e6, alpha: float = 0.3, probe: float = 1.25):
        if not initial_bps > 0:
            raise ValueError(f"initial_bps must be > 0, got {initial_bps}")
        self.estimate_bps = float(initial_bps)
        self.alpha = alpha
        self.probe = probe
        self.samples = 0

    def add(self, bits: float, seconds: float, paced: bool) -> None:
        if seconds <= 0 or bits <= 0:
            return
        sample = bits / seconds
        self.samples += 1
        if paced:
            # capacity >= sample for sure; probe a step above the estimate when pacing at it
            self.estimate_bps = max(self.estimate_bps, sample, min(self.probe * sample, self.probe * self.estimate_bps))
        else:
            self.estimate_bps = (1 - self.alpha) * self.estimate_bps + self.alpha * sample
