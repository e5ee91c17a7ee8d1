"""EdgeClient against real sockets on 127.0.0.1: echo round trips, timeouts, stale replies, the
edge going away and coming back, and CURVE keys."""

from __future__ import annotations

import os
import socket
import stat
import threading
import time

import pytest
import torch
import zmq

from wire.curve import (
    ClientKeys,
    KeyFileError,
    ServerKeys,
    load_client_folder,
    load_key_file,
    make_key_pair,
)
from wire.echo import EchoServer
from wire.format import ErrorCode, Header, Limits, MsgType, encode_header
from wire.transport import EdgeClient, EdgeError, EdgeTimeout, configure_socket, is_loopback


@pytest.fixture
def echo():
    with EchoServer("tcp://127.0.0.1:*", limits=Limits(max_message_bytes=16 * 2**20)) as srv:
        yield srv


def test_round_trip_of_large_tensors_is_exact(echo):
    gen = torch.Generator().manual_seed(1)
    tensors = [
        torch.randn(1, 256, 64, 64, generator=gen),
        torch.randint(0, 9, (1, 7), generator=gen),
        torch.randn(3, 5, generator=gen).to(torch.bfloat16),
    ]
    with EdgeClient(echo.endpoint) as client:
        reply = client.infer("m", 2, tensors, timeout_s=10)
        assert reply.kind is MsgType.RESULT and reply.rtt_s > 0
        assert [t.dtype for t in reply.tensors] == [t.dtype for t in tensors]
        for got, want in zip(reply.tensors, tensors):
            assert torch.equal(got, want)
        assert client.in_flight == 0


def test_several_requests_in_flight_are_matched_by_id(echo):
    with EdgeClient(echo.endpoint) as client:
        ids = [client.submit("m", 0, [torch.full((4,), float(i))]) for i in range(5)]
        assert client.in_flight == 5
        # ask for them out of order: replies that arrive first are kept for later
        for i in reversed(range(5)):
            reply = client.receive(5, ids[i])
            assert reply.request_id == ids[i]
            assert torch.equal(reply.tensors[0], torch.full((4,), float(i)))
        assert client.in_flight == 0
        with pytest.raises(KeyError):
            client.receive(0.1, 12345)


def test_ping_measures_a_round_trip(echo):
    with EdgeClient(echo.endpoint) as client:
        assert 0 < client.ping(timeout_s=5) < 5


def test_forgotten_request_reply_is_dropped(echo):
    with EdgeClient(echo.endpoint) as client:
        rid = client.submit("m", 0, [torch.zeros(3)])
        client.forget(rid)
        time.sleep(0.2)
        keep = client.submit("m", 0, [torch.ones(3)])
        reply = client.receive(5)
        assert reply.request_id == keep
        assert client.dropped_replies == 1


def test_error_reply_raises_edge_error(echo):
    with EdgeClient(echo.endpoint) as client:
        # the echo refuses a RESULT sent to it: the client gets an ERROR for its request id
        rid = 77
        client._pending[rid] = (time.monotonic_ns(), [])
        client.socket.send_multipart([encode_header(Header(MsgType.RESULT, rid))])
        reply = client.receive(5, rid)
        assert not reply.ok and reply.error_code == ErrorCode.BAD_TYPE
        with pytest.raises(EdgeError, match="BAD_TYPE"):
            reply.raise_for_error()


def test_no_edge_fails_fast_with_timeout():
    ctx = zmq.Context()
    with socket.socket() as s:  # closed synchronously: nobody listens on this port afterwards
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with EdgeClient(f"tcp://127.0.0.1:{port}", context=ctx) as client:
        t0 = time.monotonic()
        with pytest.raises(EdgeTimeout, match="no connection"):
            client.ping(timeout_s=0.3)
        with pytest.raises(EdgeTimeout):
            client.infer("m", 0, [torch.zeros(2)], timeout_s=0.3)
        assert time.monotonic() - t0 < 3
        assert client.in_flight == 0  # nothing queued to be delivered stale later
    ctx.term()


def test_edge_that_goes_away_and_comes_back_is_found_again():
    limits = Limits(max_message_bytes=2**20)
    first = EchoServer("tcp://127.0.0.1:*", limits=limits)
    endpoint = first.start()
    client = EdgeClient(endpoint, reconnect_ivl_s=0.05, reconnect_ivl_max_s=0.2)
    try:
        client.ping(timeout_s=5)
        first.stop()
        with pytest.raises(EdgeTimeout):
            client.ping(timeout_s=0.5)
        second = EchoServer(endpoint, limits=limits)
        second.start()
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping(timeout_s=0.5)
                    break
                except EdgeTimeout:
                    assert time.monotonic() < deadline, "client never reached the returning edge"
            reply = client.infer("m", 0, [torch.arange(5)], timeout_s=5)
            assert torch.equal(reply.tensors[0], torch.arange(5))
        finally:
            second.stop()
    finally:
        client.close()


def test_malformed_reply_to_a_pending_request_becomes_an_error_reply():
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    configure_socket(router, Limits())
    port = router.bind_to_random_port("tcp://127.0.0.1")

    def liar():
        ident, header = router.recv_multipart()
        # right request id and magic, but it claims one tensor and sends none
        bad = bytearray(encode_header(Header(MsgType.PONG, int.from_bytes(header[8:16], "little"))))
        bad[6] = 1
        router.send_multipart([ident, bytes(bad)])

    t = threading.Thread(target=liar)
    t.start()
    with EdgeClient(f"tcp://127.0.0.1:{port}", context=ctx) as client:
        rid = client.submit_ping()
        reply = client.receive(5, rid)
        assert not reply.ok and "malformed reply" in reply.error_reason
    t.join()
    router.close(linger=0)
    ctx.term()


# -- CURVE keys --------------------------------------------------------------------------------


def test_key_pair_files_are_zmq_certificates_with_a_private_secret(tmp_path):
    pub, sec = make_key_pair(tmp_path, "edge")
    assert pub.name == "edge.key" and sec.name == "edge.key_secret"
    assert stat.S_IMODE(os.stat(sec).st_mode) == 0o600
    public, secret = load_key_file(sec, need_secret=True)
    assert zmq.curve_public(secret) == public
    assert load_key_file(pub, need_secret=False) == (public, None)
    with pytest.raises(KeyFileError, match="already exists"):
        make_key_pair(tmp_path, "edge")
    make_key_pair(tmp_path, "edge", overwrite=True)
    assert load_key_file(pub, need_secret=False)[0] != public
    with pytest.raises(KeyFileError, match="key name"):
        make_key_pair(tmp_path, "../evil")


def test_bad_key_files_are_named_in_the_error(tmp_path):
    pub, sec = make_key_pair(tmp_path, "a")
    with pytest.raises(KeyFileError, match="a.key: no secret key"):
        load_key_file(pub, need_secret=True)
    with pytest.raises(KeyFileError, match="not found"):
        load_key_file(tmp_path / "missing.key", need_secret=False)
    junk = tmp_path / "junk.key"
    junk.write_text("hello\n")
    with pytest.raises(KeyFileError, match="junk.key"):
        load_key_file(junk, need_secret=False)
    short = tmp_path / "short.key"
    short.write_text('curve\n    public-key = "abc"\n')
    with pytest.raises(KeyFileError, match="40-character"):
        load_key_file(short, need_secret=False)
    other_pub, other_sec = make_key_pair(tmp_path, "b")
    mixed = tmp_path / "mixed.key_secret"
    mixed.write_text(
        pub.read_text()
        + "\n".join(line for line in other_sec.read_text().splitlines() if "secret-key" in line)
    )
    mixed.chmod(0o600)
    with pytest.raises(KeyFileError, match="does not belong"):
        load_key_file(mixed, need_secret=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(KeyFileError, match="no client public keys"):
        load_client_folder(empty)
    with pytest.raises(KeyFileError, match="not found"):
        load_client_folder(tmp_path / "nope")


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
@pytest.mark.parametrize("mode, who", [(0o644, "group and others"), (0o640, "its group"), (0o604, "group and others")])
def test_secret_key_file_open_to_others_is_refused(tmp_path, mode, who):
    pub, sec = make_key_pair(tmp_path, "edge")
    make_key_pair(tmp_path / "clients", "board1")
    sec.chmod(mode)
    for load in (lambda: load_key_file(sec, need_secret=True),
                 lambda: ServerKeys.load(sec, tmp_path / "clients"),
                 lambda: ClientKeys.load(pub, sec)):
        with pytest.raises(KeyFileError) as err:
            load()
        msg = str(err.value)
        assert "\n" not in msg and str(sec) in msg and f"mode {mode:04o}" in msg and who in msg
        assert "chmod 600" in msg
    load_key_file(pub, need_secret=False)  # a public key file may be world-readable
    sec.chmod(0o600)
    assert load_key_file(sec, need_secret=True)[1] is not None


def test_no_key_bytes_in_reprs(tmp_path):
    pub, sec = make_key_pair(tmp_path, "edge")
    _, csec = make_key_pair(tmp_path / "clients", "board1")
    server = ServerKeys.load(sec, tmp_path / "clients")
    client = ClientKeys.load(pub, csec)
    keys = [server.public, server.secret, client.public, client.secret, client.server_public, *server.clients]
    from edge_agent.server import ServerConfig

    for obj in (server, client, ServerConfig("tcp://127.0.0.1:5555", curve=server)):
        text = repr(obj) + str(obj)
        for k in keys:
            assert k.decode() not in text and repr(k) not in text, type(obj).__name__
    assert "1 client keys" in repr(server)


@pytest.mark.parametrize(
    "endpoint, local",
    [("tcp://127.0.0.1:5555", True), ("tcp://127.8.9.1:1", True), ("tcp://localhost:0", True),
     ("tcp://[::1]:5555", True), ("tcp://*:5555", False), ("tcp://0.0.0.0:5555", False),
     ("tcp://10.0.0.2:5555", False), ("tcp://[::]:5555", False), ("tcp://eth0:5555", False),
     ("not an endpoint", False)],
)
def test_is_loopback(endpoint, local):
    assert is_loopback(endpoint) is local


def test_curve_echo_serves_allowed_key_and_ignores_others(tmp_path):
    make_key_pair(tmp_path, "edge")
    make_key_pair(tmp_path / "clients", "good")
    make_key_pair(tmp_path / "strangers", "bad")
    server_keys = ServerKeys.load(tmp_path / "edge.key_secret", tmp_path / "clients")
    with EchoServer("tcp://127.0.0.1:*", curve=server_keys, context=zmq.Context()) as srv:
        good = ClientKeys.load(tmp_path / "edge.key", tmp_path / "clients" / "good.key_secret")
        with EdgeClient(srv.endpoint, curve=good) as client:
            reply = client.infer("m", 0, [torch.arange(10.0)], timeout_s=10)
            assert torch.equal(reply.tensors[0], torch.arange(10.0))
        bad = ClientKeys.load(tmp_path / "edge.key", tmp_path / "strangers" / "bad.key_secret")
        with EdgeClient(srv.endpoint, curve=bad) as client, pytest.raises(EdgeTimeout):
            client.ping(timeout_s=1.0)
