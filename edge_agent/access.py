"""Who may connect to the edge: a ZAP handler and a connection cap, before any frame is read.

libzmq buffers a multipart message whole before the application sees it, and no socket option
caps a message's total size, so a peer that is let in can make the edge hold as much memory as
it cares to send. The only defence is to keep unknown peers out during the ZeroMQ handshake,
before they may send a message at all. :class:`Gate` does that, in one thread of its own:

* it is the context's ZAP handler (``inproc://zeromq.zap.01``). Every handshake on the edge's
  ROUTER asks it (the socket has a ZAP domain, so even the NULL mechanism asks): the peer's
  address must lie in one of the allowed networks (``AccessPolicy.allow``; ``None`` lets any
  address in), and with CURVE on its public key must be one of the listed client keys. A peer
  refused here is disconnected by libzmq; a frame it sends after its handshake message is a
  protocol error, so it can make the edge hold at most one frame (<= the message limit);
* it watches the ROUTER's monitor socket and counts open TCP connections (handshakes in progress
  included). A connection accepted past ``max_connections`` is shut down at once, before it can
  send a handshake, so no more than ``max_connections`` peers can each hold one frame in the
  handshake, and each for at most ``handshake_timeout_s`` (libzmq's ``ZMQ_HANDSHAKE_IVL``);
* unknown CURVE keys and refused addresses are counted; a bounded number of distinct ones is
  remembered (so a reconnecting peer is logged once, not at every attempt) and at most
  ``log_per_interval`` refusal lines are logged per statistics interval; the rest are only
  counted, in the edge's statistics line.

The rules are checked in that order: connection cap, address, key. Nothing a peer sends can stop
the gate: a malformed ZAP request is answered with a refusal (libzmq never sends one).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import zmq

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
#: the networks a CURVE-less edge admits when none are given: this machine only
LOOPBACK = ("127.0.0.0/8", "::1/128")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(items: Iterable[str], what: str = "--allow") -> tuple[Network, ...]:
    """Networks from ``ADDR`` or ``ADDR/PREFIX`` strings; ValueError naming a bad one."""
    out = []
    for item in items:
        text = item.strip()
        try:
            out.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(
                f"{what} {item!r}: expected an IP address or network (e.g. 10.0.0.7 or 10.0.0.0/24)"
            ) from None
    return tuple(out)


@dataclass(frozen=True)
class AccessPolicy:
    """Who the edge lets in. ``allow=None`` admits every address (CURVE keys, if on, still
    decide); the default admits this machine only."""

    allow: tuple[Network, ...] | None = parse_networks(LOOPBACK)
    max_connections: int = 64
    handshake_timeout_s: float = 5.0
    remember_refused: int = 256
    log_per_interval: int = 5

    def __post_init__(self) -> None:
        if self.allow is not None and not self.allow:
            raise ValueError("allow: give at least one network, or None to admit any address")
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {self.max_connections}")
        if not self.handshake_timeout_s > 0:
            raise ValueError(f"handshake_timeout_s must be > 0, got {self.handshake_timeout_s}")

    def admits(self, address: str) -> bool:
        if self.allow is None:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == n.version and ip in n for n in self.allow)

    def describe(self) -> str:
        who = "any address" if self.allow is None else ", ".join(str(n) for n in self.allow)
        return f"admits {who}; at most {self.max_connections} connections"


class _Refusals:
    """Bounded memory of refused peers: distinct keys seen, and how many lines were logged."""

    def __init__(self, remember: int, per_interval: int):
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._remember = remember
        self._per_interval = per_interval
        self._logged = 0

    def should_log(self, who: str | None) -> bool:
        """Whether to log a refusal of ``who`` (None: not tied to one peer, rate limit only)."""
        if who is None:
            return self._take()
        if who in self._seen:
            self._seen.move_to_end(who)
            return False
        self._seen[who] = None
        if len(self._seen) > self._remember:
            self._seen.popitem(last=False)
        return self._take()

    def _take(self) -> bool:
        if self._logged >= self._per_interval:
            return False
        self._logged += 1
        return True

    def new_interval(self) -> None:
        self._logged = 0


class Gate:
    """The edge's ZAP handler and connection counter; see the module docstring.

    ``count(name)`` is called (from the gate's thread) for every refusal, with ``name`` one of
    ``refused_address``, ``refused_key``, ``refused_connection``.
    """

    def __init__(
        self,
        context: zmq.Context,
        policy: AccessPolicy,
        *,
        client_keys: Iterable[bytes] | None = None,  # Z85 public keys; None: CURVE off
        count: Callable[[str], None] = lambda name: None,
        log: logging.Logger | None = None,
    ):
        self.context = context
        self.policy = policy
        self.keys = None if client_keys is None else frozenset(client_keys)
        self._count = count
        self.log = log or logging.getLogger("cutedge.edge")
        self._refusals = _Refusals(policy.remember_refused, policy.log_per_interval)
        self._interval = threading.Event()
        self._open: set[int] = set()
        self._port = 0
        self._zap: zmq.Socket | None = None
        self._monitor: zmq.Socket | None = None
        self._thread: threading.Thread | None = None
        self._stop_addr = f"inproc://cutedge-gate-stop-{id(self):x}"
        self._stop_push: zmq.Socket | None = None

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def start(self) -> None:
        """Bind the ZAP endpoint (before any socket binds); the thread starts in :meth:`watch`."""
        self._zap = self.context.socket(zmq.REP)
        self._zap.setsockopt(zmq.LINGER, 0)
        try:
            self._zap.bind(ZAP_ENDPOINT)
        except zmq.ZMQError as exc:
            self._zap.close()
            self._zap = None
            raise RuntimeError(f"another ZAP handler already runs in this context: {exc}") from None

    def prepare(self, router: zmq.Socket) -> None:
        """Before ``router`` binds: ask it for ZAP on every handshake and watch its connections."""
        router.setsockopt(zmq.ZAP_DOMAIN, b"cutedge")
        router.setsockopt(zmq.HANDSHAKE_IVL, int(self.policy.handshake_timeout_s * 1000))
        self._monitor = router.get_monitor_socket(
            zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED
        )

    def watch(self, endpoint: str) -> None:
        """Start the gate's thread for the bound ``endpoint`` (tcp://HOST:PORT)."""
        self._port = int(endpoint.rsplit(":", 1)[1])
        pull = self.context.socket(zmq.PULL)
        pull.bind(self._stop_addr)
        self._stop_push = self.context.socket(zmq.PUSH)
        self._stop_push.connect(self._stop_addr)
        self._thread = threading.Thread(target=self._run, args=(pull,), name="edge-gate", daemon=True)
        self._thread.start()

    def new_interval(self) -> None:
        """The statistics interval turned: refusal lines may be logged again."""
        self._interval.set()

    def stop(self) -> None:
        if self._thread is not None and self._stop_push is not None:
            self._stop_push.send(b"")
            self._thread.join(5)
        for s in (self._stop_push, self._monitor, self._zap):
            if s is not None:
                s.close(linger=0)
        self._stop_push = self._monitor = self._zap = None
        self._thread = None

    # -- the gate's thread ---------------------------------------------------------------------
    def _run(self, stop: zmq.Socket) -> None:
        assert self._zap is not None and self._monitor is not None
        poller = zmq.Poller()
        poller.register(self._monitor, zmq.POLLIN)
        poller.register(self._zap, zmq.POLLIN)
        poller.register(stop, zmq.POLLIN)
        try:
            while True:
                events = dict(poller.poll(500))
                if self._interval.is_set():
                    self._interval.clear()
                    self._refusals.new_interval()
                if stop in events:
                    return
                # connection events first: a ZAP request then sees its own connection counted
                self._read_monitor()
                if self._zap in events:
                    try:
                        self._answer(self._zap.recv_multipart())
                    except Exception:  # never let one request stop the gate
                        self.log.exception("edge: the access gate failed on one request")
        finally:
            stop.close(linger=0)

    def _read_monitor(self) -> None:
        from zmq.utils.monitor import parse_monitor_message

        assert self._monitor is not None
        while True:
            try:
                msg = self._monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            ev = parse_monitor_message(msg)
            fd = int(ev["value"])
            if ev["event"] == zmq.EVENT_ACCEPTED:
                if len(self._open) >= self.policy.max_connections:
                    self._refuse("refused_connection", None,
                                 f"more than {self.policy.max_connections} connections open")
                    self._shut(fd)
                self._open.add(fd)
            else:
                self._open.discard(fd)

    def _shut(self, fd: int) -> None:
        """End a connection libzmq owns: shut the TCP stream down (libzmq then sees it end and
        closes it itself); the descriptor is checked to be a TCP connection on our port."""
        try:
            s = socket.socket(fileno=os.dup(fd))
        except OSError:
            return
        try:
            if s.type == socket.SOCK_STREAM and s.getsockname()[1] == self._port:
                s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        finally:
            s.close()

    def _answer(self, msg: list[bytes]) -> None:
        assert self._zap is not None
        if len(msg) < 6:
            version = msg[0] if msg else b"1.0"
            rid = msg[1] if len(msg) > 1 else b""
            self._zap.send_multipart([version, rid, b"500", b"malformed ZAP request", b"", b""])
            return
        version, rid, _domain, address, _identity, mechanism = msg[:6]
        creds = msg[6:]
        addr = address.decode("ascii", "replace")
        ok, why = True, "OK"
        if not self.policy.admits(addr):
            ok, why = False, "address not allowed"
            self._refuse("refused_address", addr, f"refused a connection from {addr}: not in the allowed networks")
        elif self.keys is not None:
            from zmq.utils import z85

            key = creds[0] if mechanism == b"CURVE" and creds and len(creds[0]) == 32 else b""
            if not key or z85.encode(key) not in self.keys:
                ok, why = False, "unknown client key"
                shown = z85.encode(key).decode("ascii") if key else f"(mechanism {mechanism.decode('ascii', 'replace')})"
                self._refuse("refused_key", shown, f"refused CURVE client with unknown public key {shown} from {addr}")
        self._zap.send_multipart([version, rid, b"200" if ok else b"400", why.encode(), b"", b""])

    def _refuse(self, counter: str, who: str | None, line: str) -> None:
        self._count(counter)
        if self._refusals.should_log(None if who is None else f"{counter}:{who}"):
            self.log.warning("edge: %s", line)


__all__ = ["LOOPBACK", "AccessPolicy", "Gate", "parse_networks"]
