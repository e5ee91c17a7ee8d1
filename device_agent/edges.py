"""The edge endpoints a device agent may send tails to, and how it picks one per request.

A device can be given several edges (``cutedge device run --edge A --edge B``). Each is an
:class:`EdgeEndpoint`: its own connection (an :class:`~wire.transport.EdgeClient`), whether it
is up, what it has in flight from this device, the backlog it last reported and when, its BUSY
advice and its recent tail time. :func:`pick` chooses, per request, the live endpoint with the
least expected wait:

    wait = max(0, reported backlog - time since the report)       (the edge drains at 1 s/s)
         + this device's requests in flight there x that edge's recent mean tail time

(before an edge has reported a tail time, the profile's tail time of each request's cut stands
in for it), ties to the first endpoint given. An edge that reported a large backlog gets no
requests until its report has drained, by the clock, to below the others' waits; the next
request sent to it then brings a fresh report. That is how a report is kept fresh without a
message of its own (a PING may not ask for the backlog, see docs/wire-format.md).

With one endpoint this is exactly the single-edge agent: the only endpoint is picked whenever
it is up.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

#: weight of a new tail-time sample in an endpoint's running mean
TAIL_ALPHA = 0.3


@dataclass(eq=False)
class EdgeEndpoint:
    """One edge agent as this device sees it. ``in_flight`` maps request ids (of ``client``) to
    the frames sent there whose result has not come."""

    index: int
    client: Any  # wire.transport.EdgeClient (or anything with its submit/receive/forget)
    up: bool = True
    refused: str | None = None  # why it will not serve this model, once it said so
    in_flight: dict[int, Any] = field(default_factory=dict)
    pings: deque[int] = field(default_factory=deque)  # heartbeats not yet answered
    last_ping_s: float = -math.inf
    last_heard_s: float = -math.inf
    backlog_s: float = 0.0  # the backlog it last reported, and when that reply came
    backlog_at_s: float = -math.inf
    busy_until_s: float = -math.inf  # no requests before then: its BUSY advice
    tail_s: float | None = None  # running mean of the tail times it reported; None: none yet
    sent: int = 0         # requests sent to it
    failed_over: int = 0  # frames it had when it went down that were sent to another edge
    downs: int = 0        # times it was taken as down

    @property
    def endpoint(self) -> str:
        return str(getattr(self.client, "endpoint", f"edge {self.index}"))

    def eligible(self, now_s: float) -> bool:
        """Up and past its last BUSY advice: it may be sent new requests."""
        return self.up and now_s >= self.busy_until_s

    def reported_wait_s(self, now_s: float) -> float:
        """Its last reported backlog, drained at one second per second since the report; 0 while
        it is down (a report from before an outage says nothing about after it)."""
        if not self.up:
            return 0.0
        return max(0.0, self.backlog_s - max(0.0, now_s - self.backlog_at_s))

    def expected_wait_s(self, now_s: float, prior_tail_s: Callable[[Any], float]) -> float:
        """What a request sent now should wait there: the drained report plus what this device
        already has in flight there, each at the edge's recent mean tail time (or, before it
        has reported one, at ``prior_tail_s(frame)``)."""
        if self.tail_s is not None:
            mine = len(self.in_flight) * self.tail_s
        else:
            mine = sum(prior_tail_s(f) for f in self.in_flight.values())
        return self.reported_wait_s(now_s) + mine

    def note_backlog(self, backlog_s: float | None, now_s: float) -> None:
        if backlog_s is not None:
            self.backlog_s, self.backlog_at_s = float(backlog_s), now_s

    def note_tail(self, tail_s: float) -> None:
        if tail_s > 0.0 and math.isfinite(tail_s):
            self.tail_s = tail_s if self.tail_s is None else (1 - TAIL_ALPHA) * self.tail_s + TAIL_ALPHA * tail_s

    def went_down(self) -> None:
        self.up = False
        self.downs += 1
        self.backlog_s = 0.0
        self.last_ping_s = -math.inf


def pick(endpoints: Sequence[EdgeEndpoint], now_s: float, prior_tail_s: Callable[[Any], float]
         ) -> EdgeEndpoint | None:
    """The endpoint a request should go to now: among those that may take new requests (up, no
    BUSY advice running), else among those up, the least expected wait, ties to the first;
    None when every endpoint is down."""
    for pool in ([e for e in endpoints if e.eligible(now_s)], [e for e in endpoints if e.up]):
        if pool:
            return min(pool, key=lambda e: e.expected_wait_s(now_s, prior_tail_s))  # min keeps the first of ties
    return None


__all__ = ["EdgeEndpoint", "TAIL_ALPHA", "pick"]
