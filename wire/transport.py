"""Sending and receiving cutedge messages over ZeroMQ, and the client the device agent uses.

Everything goes through ``send_multipart(copy=False)`` / ``recv_multipart(copy=False)``: tensor
buffers are handed to libzmq as ``memoryview``s of the tensors' memory and come back as
``zmq.Frame`` objects whose ``.buffer`` the receiver wraps with ``torch.frombuffer``. Python
never copies a payload byte. Headers are checked (:func:`parse`) before a buffer is looked at.

:class:`EdgeClient` is a DEALER socket speaking to the edge's ROUTER. It can keep several
requests in flight (``submit`` / ``receive``) or do one round trip (``infer``), answers whether
the edge is there (``ping``), and never blocks longer than the timeout it is given: with
``ZMQ_IMMEDIATE`` a request is only queued on a live connection, so a request made while the
edge is down fails fast instead of being delivered, stale, when the edge comes back.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import zmq

from wire.curve import ClientKeys
from wire.format import (
    FLAG_BACKLOG,
    MAX_BACKLOG_US,
    ErrorCode,
    Header,
    Limits,
    MsgType,
    WireError,
    check_frames,
    decode_header,
    decode_reason,
    encode_header,
    error_frames,
    peek_request_id,
)
from wire.tensors import tensors_to_wire, wire_to_tensors

if TYPE_CHECKING:
    import torch


#: how many given-up request ids a client remembers, to count results that come for them late
_FORGOTTEN_KEPT = 4096

_ENDPOINT = re.compile(r"^tcp://(\*|\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\*|[0-9]{1,5})$")


def check_endpoint(value: str, *, bind: bool) -> str:
    """``value`` if it is ``tcp://HOST:PORT`` (``bind``: HOST and PORT may also be ``*``);
    otherwise ValueError with one line saying what was expected."""
    m = _ENDPOINT.match(value)
    example = "tcp://0.0.0.0:5555" if bind else "tcp://10.0.0.2:5555"
    if not m or (not bind and "*" in (m.group(1), m.group(2))):
        raise ValueError(f"{value!r}: expected tcp://{'ADDR' if bind else 'HOST'}:PORT (e.g. {example})")
    port = m.group(2)
    if port != "*" and not (0 if bind else 1) <= int(port) <= 65535:
        raise ValueError(f"{value!r}: port {port} outside {0 if bind else 1}..65535")
    return value


def is_loopback(endpoint: str) -> bool:
    """Whether a ``tcp://HOST:PORT`` endpoint (as :func:`check_endpoint` accepts it) can only be
    reached from this machine: 127.0.0.0/8, ``::1`` or ``localhost``. ``*``, ``0.0.0.0``, any
    other address and interface names are reachable from elsewhere."""
    m = _ENDPOINT.match(endpoint)
    if not m:
        return False
    host = m.group(1).strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def configure_socket(sock: zmq.Socket, limits: Limits, *, linger_s: float = 0.0) -> None:
    """Options every cutedge socket gets.

    ``MAXMSGSIZE``: libzmq drops a peer that sends a frame larger than the configured message
    limit before buffering it, so no frame can make this process allocate more than that.
    """
    sock.setsockopt(zmq.MAXMSGSIZE, limits.max_message_bytes)
    sock.setsockopt(zmq.LINGER, int(linger_s * 1000))


def frame_buffer(frame: Any) -> memoryview:
    """The bytes of a received frame (``zmq.Frame`` or bytes-like) without copying."""
    return frame.buffer if isinstance(frame, zmq.Frame) else memoryview(frame)


@dataclass
class Message:
    """A received message whose header and frame lengths have been checked."""

    header: Header
    frames: list[Any]  # frames after the header (zmq.Frame or bytes-like); keep them alive

    @property
    def buffers(self) -> list[memoryview]:
        return [frame_buffer(f) for f in self.frames]

    def tensors(self) -> list[torch.Tensor]:
        """The tensors of a REQUEST or RESULT, zero-copy over the frames."""
        return wire_to_tensors(self.header.tensors, self.buffers)

    def reason(self) -> str:
        """The one-line reason of an ERROR message."""
        return decode_reason(frame_buffer(self.frames[0])) if self.frames else ""


def parse(frames: Sequence[Any], limits: Limits) -> Message:
    """Decode and check a message (without the ROUTER identity frame); raises WireError."""
    if not frames:
        raise WireError(ErrorCode.BAD_FRAMES, "empty message (no header frame)")
    header = decode_header(frame_buffer(frames[0]), limits)
    check_frames(header, frames[1:])
    return Message(header, list(frames[1:]))


# -- building messages -------------------------------------------------------------------------


def request_frames(
    model: str,
    cut: int,
    tensors: Sequence[torch.Tensor],
    request_id: int,
    sent_ns: int | None = None,
    *,
    ask_backlog: bool = False,
) -> list[Any]:
    """Header and zero-copy buffers of a REQUEST for the tail of ``model`` from ``cut``.

    ``ask_backlog`` sets :data:`~wire.format.FLAG_BACKLOG`: the reply should carry the edge's
    backlog (an edge from before the flag refuses such a request with BAD_HEADER)."""
    descs, bufs = tensors_to_wire(tensors)
    sent = time.monotonic_ns() if sent_ns is None else sent_ns
    header = encode_header(
        Header(
            MsgType.REQUEST,
            request_id,
            model,
            cut,
            tensors=descs,
            sent_ns=sent,
            flags=FLAG_BACKLOG if ask_backlog else 0,
        )
    )
    return [header, *bufs]


def backlog_us(request: Header, backlog_s: float | None) -> int | None:
    """The backlog field for a reply to ``request``: None unless the request asked for it."""
    if backlog_s is None or not request.flags & FLAG_BACKLOG:
        return None
    return min(MAX_BACKLOG_US, max(0, round(backlog_s * 1e6)))


def _result_header(
    request: Header, descs: tuple, queue_ns: int, tail_ns: int, backlog_s: float | None = None
) -> bytes:
    us = backlog_us(request, backlog_s)
    return encode_header(
        Header(
            MsgType.RESULT,
            request.request_id,
            request.model,
            request.cut,
            tensors=descs,
            sent_ns=request.sent_ns,
            edge_queue_ns=queue_ns,
            edge_tail_ns=tail_ns,
            flags=0 if us is None else FLAG_BACKLOG,
            edge_backlog_us=us or 0,
        )
    )


def result_frames(
    request: Header,
    outputs: Sequence[torch.Tensor],
    *,
    queue_ns: int = 0,
    tail_ns: int = 0,
    backlog_s: float | None = None,
) -> list[Any]:
    """Header and zero-copy buffers of the RESULT answering ``request``; ``backlog_s`` (the
    edge's backlog) travels only if the request asked for it."""
    descs, bufs = tensors_to_wire(outputs)
    return [_result_header(request, descs, queue_ns, tail_ns, backlog_s), *bufs]


def echo_frames(
    request: Header, buffers: Sequence[Any], *, queue_ns: int = 0, tail_ns: int = 0
) -> list[Any]:
    """A RESULT carrying the request's own buffers back (benchmarks and transport tests)."""
    return [_result_header(request, request.tensors, queue_ns, tail_ns), *buffers]


def ping_frames(request_id: int, sent_ns: int | None = None) -> list[bytes]:
    sent = time.monotonic_ns() if sent_ns is None else sent_ns
    return [encode_header(Header(MsgType.PING, request_id, sent_ns=sent))]


def pong_frames(ping: Header) -> list[bytes]:
    return [encode_header(Header(MsgType.PONG, ping.request_id, sent_ns=ping.sent_ns))]


def error_reply(
    exc: WireError,
    sent_ns: int = 0,
    retry_after_s: float = 0.0,
    *,
    request: Header | None = None,
    backlog_s: float | None = None,
) -> list[bytes]:
    """The ERROR reply for a refused message (``retry_after_s``: a BUSY reply's advice;
    ``backlog_s`` the edge's backlog, sent only if ``request`` asked for it)."""
    us = None if request is None else backlog_us(request, backlog_s)
    return error_frames(
        exc.code, exc.reason, exc.request_id, sent_ns, int(retry_after_s * 1e9), us
    )


# -- client ------------------------------------------------------------------------------------


class EdgeError(RuntimeError):
    """The edge refused or failed a request: its error code and one-line reason."""

    def __init__(self, code: ErrorCode | int, reason: str, request_id: int):
        try:
            self.code: ErrorCode | int = ErrorCode(code)
            name = self.code.name
        except ValueError:
            self.code, name = code, f"code {code}"
        self.reason = reason
        self.request_id = request_id
        super().__init__(f"edge refused request {request_id}: {name}: {reason}")


class EdgeTimeout(TimeoutError):
    """No answer (or no connection to send on) within the timeout."""


@dataclass
class Reply:
    """One answer from the edge to a request or a ping."""

    request_id: int
    kind: MsgType  # RESULT, ERROR or PONG
    rtt_s: float
    tensors: list[Any] = field(default_factory=list)
    edge_queue_s: float = 0.0
    edge_tail_s: float = 0.0
    error_code: ErrorCode | int | None = None
    error_reason: str = ""
    retry_after_s: float = 0.0  # BUSY: how long the edge advises waiting before sending again
    #: tail work queued at the edge ahead of a new request when it replied, s; None: not
    #: reported (an edge from before the backlog field, or a reply that never carries it)
    edge_backlog_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.kind is not MsgType.ERROR

    def raise_for_error(self) -> Reply:
        if self.kind is MsgType.ERROR:
            raise EdgeError(self.error_code or 0, self.error_reason, self.request_id)
        return self


class EdgeClient:
    """A DEALER connection to one edge agent.

    Replies are matched to requests by id; a reply for a request the caller gave up on
    (``forget``, or a timeout in ``infer``/``ping``) is dropped when it arrives (a RESULT among
    them is counted in ``late_results``: work the edge did that nobody took). Result tensors
    are zero-copy views of the received frames: they stay valid as long as they are referenced.

    ``ask_backlog``: requests set ``FLAG_BACKLOG``, so replies carry the edge's backlog
    (``Reply.edge_backlog_s``). An edge from before that flag answers such a request with
    BAD_HEADER; the client then stops asking (that one request fails, later ones are plain).
    """

    def __init__(
        self,
        endpoint: str,
        *,
        limits: Limits | None = None,
        curve: ClientKeys | None = None,
        context: zmq.Context | None = None,
        reconnect_ivl_s: float = 0.1,
        reconnect_ivl_max_s: float = 1.0,
        ask_backlog: bool = True,
    ):
        self.endpoint = endpoint
        self.ask_backlog = ask_backlog
        self.limits = limits or Limits()
        self._own_context = context is None
        self.context = context or zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        configure_socket(self.socket, self.limits)
        self.socket.setsockopt(zmq.IMMEDIATE, 1)
        self.socket.setsockopt(zmq.RECONNECT_IVL, int(reconnect_ivl_s * 1000))
        self.socket.setsockopt(zmq.RECONNECT_IVL_MAX, int(reconnect_ivl_max_s * 1000))
        if curve is not None:
            curve.apply(self.socket)
        self.socket.connect(endpoint)
        self._ids = itertools.count(1)
        # request id -> (monotonic ns when sent, the frames sent). Holding the frames until the
        # reply (or forget) means the sent tensors are released here, in the caller's thread,
        # not by pyzmq's garbage-collector thread racing the next send for the GIL; that race
        # cost ~50 us per message on a 2-core machine.
        self._pending: dict[int, tuple[int, list[Any]]] = {}
        self._ready: dict[int, Reply] = {}
        self._rcvtimeo_ms = -1
        self.dropped_replies = 0  # stale or malformed replies thrown away
        # requests given up with ``forget`` (the newest few thousand), so a RESULT that comes
        # for one anyway is told apart from garbage: counted in ``late_results``, then dropped
        self._forgotten: dict[int, None] = {}
        self.late_results = 0

    # -- lifecycle --
    def close(self) -> None:
        self.socket.close(linger=0)
        if self._own_context:
            self.context.term()

    def __enter__(self) -> EdgeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sending --
    def _send(self, frames: list[Any], request_id: int, sent_ns: int, timeout_s: float) -> int:
        # try at once (the common case: connected, queue not full); wait only if that fails
        try:
            self.socket.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            if not self.socket.poll(int(timeout_s * 1000), zmq.POLLOUT):
                raise EdgeTimeout(
                    f"no connection to the edge at {self.endpoint} within {timeout_s:g} s"
                ) from None
            try:
                self.socket.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                raise EdgeTimeout(f"edge at {self.endpoint} not accepting messages") from None
        self._pending[request_id] = (sent_ns, frames)
        return request_id

    def submit(
        self, model: str, cut: int, tensors: Sequence[torch.Tensor], *, timeout_s: float = 1.0
    ) -> int:
        """Send a request for the tail of ``model`` from ``cut``; returns its request id."""
        rid = next(self._ids)
        sent = time.monotonic_ns()
        frames = request_frames(model, cut, tensors, rid, sent, ask_backlog=self.ask_backlog)
        return self._send(frames, rid, sent, timeout_s)

    def submit_ping(self, *, timeout_s: float = 1.0) -> int:
        rid = next(self._ids)
        sent = time.monotonic_ns()
        return self._send(ping_frames(rid, sent), rid, sent, timeout_s)

    def forget(self, request_id: int) -> None:
        """Give up on a request: its reply, if it ever comes, is dropped (a RESULT is counted
        in ``late_results``)."""
        if self._pending.pop(request_id, None) is not None:
            self._forgotten[request_id] = None
            if len(self._forgotten) > _FORGOTTEN_KEPT:
                del self._forgotten[next(iter(self._forgotten))]
        self._ready.pop(request_id, None)

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    # -- receiving --
    def _take_one(self, flags: int = zmq.NOBLOCK) -> None:
        frames = self.socket.recv_multipart(flags=flags, copy=False)
        now = time.monotonic_ns()
        try:
            msg = parse(frames, self.limits)
        except WireError as exc:
            rid = peek_request_id(frame_buffer(frames[0])) if frames else 0
            if rid in self._pending:
                sent = self._pending.pop(rid)[0]
                why = f"malformed reply from edge: {exc.reason}"
                self._ready[rid] = Reply(
                    rid, MsgType.ERROR, (now - sent) / 1e9, error_code=exc.code, error_reason=why
                )
            else:
                self.dropped_replies += 1
            return
        h = msg.header
        pending = self._pending.pop(h.request_id, None)
        if pending is None or h.msg_type not in (MsgType.RESULT, MsgType.ERROR, MsgType.PONG):
            self.dropped_replies += 1
            if pending is None and h.request_id in self._forgotten:
                del self._forgotten[h.request_id]
                if h.msg_type is MsgType.RESULT:
                    self.late_results += 1
            return
        rtt_s = (now - pending[0]) / 1e9
        backlog_s = h.edge_backlog_us / 1e6 if h.flags & FLAG_BACKLOG else None
        if h.msg_type is MsgType.ERROR:
            if h.status == ErrorCode.BAD_HEADER and self.ask_backlog:
                # only an edge that does not know FLAG_BACKLOG refuses a header this client built
                self.ask_backlog = False
            reply = Reply(
                h.request_id,
                h.msg_type,
                rtt_s,
                error_code=h.status,
                error_reason=msg.reason(),
                retry_after_s=h.edge_queue_ns / 1e9,
                edge_backlog_s=backlog_s,
            )
        elif h.msg_type is MsgType.PONG:
            reply = Reply(h.request_id, h.msg_type, rtt_s)
        else:
            try:
                tensors = msg.tensors()
            except (ValueError, RuntimeError) as exc:  # a dtype this torch lacks, say
                reply = Reply(
                    h.request_id,
                    MsgType.ERROR,
                    rtt_s,
                    error_code=ErrorCode.BAD_DTYPE,
                    error_reason=f"cannot decode result: {exc}",
                )
            else:
                reply = Reply(
                    h.request_id,
                    h.msg_type,
                    rtt_s,
                    tensors,
                    h.edge_queue_ns / 1e9,
                    h.edge_tail_ns / 1e9,
                    edge_backlog_s=backlog_s,
                )
        self._ready[h.request_id] = reply

    def receive(self, timeout_s: float, request_id: int | None = None) -> Reply:
        """The next reply (or the reply to ``request_id``) within ``timeout_s``.

        Raises :class:`EdgeTimeout` if none came; the request stays pending (call ``forget``).
        """
        deadline = time.monotonic() + timeout_s
        while True:
            if request_id is None:
                if self._ready:
                    return self._ready.pop(next(iter(self._ready)))
            elif request_id in self._ready:
                return self._ready.pop(request_id)
            elif request_id not in self._pending:
                raise KeyError(f"request {request_id} is not pending")
            left_ms = max(0, int((deadline - time.monotonic()) * 1000))
            # one blocking receive with a timeout (not poll + receive): one GIL release per
            # reply instead of two, which shows on small machines
            if self._rcvtimeo_ms != left_ms:
                self.socket.setsockopt(zmq.RCVTIMEO, left_ms)
                self._rcvtimeo_ms = left_ms
            try:
                self._take_one(0)
            except zmq.Again:
                if time.monotonic() >= deadline:
                    what = "a reply" if request_id is None else f"the reply to request {request_id}"
                    raise EdgeTimeout(
                        f"no {what} from the edge at {self.endpoint} within {timeout_s:g} s"
                    ) from None

    def infer(
        self, model: str, cut: int, tensors: Sequence[torch.Tensor], *, timeout_s: float = 5.0
    ) -> Reply:
        """One round trip: the tail's outputs, or :class:`EdgeError` / :class:`EdgeTimeout`."""
        t0 = time.monotonic()
        rid = self.submit(model, cut, tensors, timeout_s=timeout_s)
        try:
            reply = self.receive(max(0.0, timeout_s - (time.monotonic() - t0)), rid)
        except EdgeTimeout:
            self.forget(rid)
            raise
        return reply.raise_for_error()

    def ping(self, *, timeout_s: float = 1.0) -> float:
        """Round-trip time of a PING in seconds; :class:`EdgeTimeout` if the edge is not there."""
        t0 = time.monotonic()
        rid = self.submit_ping(timeout_s=timeout_s)
        try:
            reply = self.receive(max(0.0, timeout_s - (time.monotonic() - t0)), rid)
        except EdgeTimeout:
            self.forget(rid)
            raise
        reply.raise_for_error()
        return reply.rtt_s


__all__ = [
    "EdgeClient",
    "EdgeError",
    "EdgeTimeout",
    "Message",
    "Reply",
    "backlog_us",
    "configure_socket",
    "echo_frames",
    "error_reply",
    "frame_buffer",
    "is_loopback",
    "parse",
    "ping_frames",
    "pong_frames",
    "request_frames",
    "result_frames",
]
