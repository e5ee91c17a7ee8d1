"""An echo server built from the wire code: every REQUEST comes back as a RESULT of its tensors.

Why it exists: it is the transport's reference point. The benchmark (``benchmarks/transport.py``)
measures round trips through exactly the code the agents use (header encode, full checks,
zero-copy buffers, CURVE) with no DNN in the way, and tests use it as a well-behaved peer for
:class:`wire.transport.EdgeClient`. Requests are checked with ``decode_header`` and
``check_frames`` (no model catalog: any model id and cut are echoed); pings are answered.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import zmq

from wire.curve import ServerKeys
from wire.format import ErrorCode, Limits, MsgType, WireError, peek_sent_ns
from wire.transport import configure_socket, echo_frames, error_reply, parse, pong_frames


def serve_echo(sock: zmq.Socket, limits: Limits, stop: threading.Event, poll_ms: int = 100) -> int:
    """Echo on a bound ROUTER ``sock`` until ``stop`` is set; returns messages handled."""
    handled = 0
    # blocking receives with a timeout rather than poll + receive: the cheapest loop pyzmq
    # offers, so the echo measures the wire code and not the loop around it
    sock.setsockopt(zmq.RCVTIMEO, poll_ms)
    while not stop.is_set():
        try:
            frames = sock.recv_multipart(copy=False)
        except zmq.Again:
            continue
        handled += 1
        identity, body = frames[0], frames[1:]
        t_recv = time.monotonic_ns()
        try:
            msg = parse(body, limits)
        except WireError as exc:
            sent = peek_sent_ns(body[0].buffer) if body else 0
            sock.send_multipart([identity, *error_reply(exc, sent)])
            continue
        h = msg.header
        if h.msg_type is MsgType.PING:
            reply: list[Any] = pong_frames(h)
        elif h.msg_type is MsgType.REQUEST:
            reply = echo_frames(h, msg.frames, queue_ns=time.monotonic_ns() - t_recv)
        else:
            why = f"echo accepts REQUEST and PING, got {h.msg_type.name}"
            reply = error_reply(WireError(ErrorCode.BAD_TYPE, why, h.request_id), h.sent_ns)
        sock.send_multipart([identity, *reply], copy=False)
    return handled


class EchoServer:
    """:func:`serve_echo` on its own thread and socket; ``start()`` returns the bound endpoint."""

    def __init__(
        self,
        endpoint: str = "tcp://127.0.0.1:*",
        *,
        limits: Limits | None = None,
        curve: ServerKeys | None = None,
        context: zmq.Context | None = None,
    ):
        self.requested = endpoint
        self.limits = limits or Limits()
        self.curve = curve
        self.context = context or zmq.Context.instance()
        self.endpoint = ""
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="wire-echo", daemon=True)
        self._auth: Any = None

    def _run(self) -> None:
        sock = self.context.socket(zmq.ROUTER)
        try:
            configure_socket(sock, self.limits)
            if self.curve is not None:
                self.curve.apply(sock)
            sock.bind(self.requested)
            self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        except BaseException as exc:  # hand the failure to start()
            self._error = exc
            sock.close(linger=0)
            self._ready.set()
            return
        self._ready.set()
        try:
            serve_echo(sock, self.limits, self._stop)
        finally:
            sock.close(linger=0)

    def start(self) -> str:
        if self.curve is not None:
            from zmq.auth.thread import ThreadAuthenticator

            self._auth = ThreadAuthenticator(self.context)
            self._auth.start()
            self._auth.configure_curve(domain="*", location=str(self.curve.clients_folder))
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            self.stop()
            raise self._error
        return self.endpoint

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

    def __enter__(self) -> EchoServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
