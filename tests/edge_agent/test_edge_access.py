"""Who may connect to the edge: address and key gates, the connection cap, bounded refusal logs,
and hostile peers streaming endless messages at a real ``cutedge edge`` process."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import pytest
import zmq
from edge_helpers import serving_in_thread

from benchmarks.edge_memory import run_setup
from edge_agent.access import AccessPolicy, parse_networks
from wire.curve import ClientKeys, ServerKeys, make_key_pair
from wire.format import TensorSpec
from wire.transport import EdgeClient, EdgeTimeout

linux_only = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")


class EchoRunner:
    def catalog(self):
        return {"m": ((TensorSpec("x", (1, 4), "float32"),), None)}

    def run(self, model, cut, inputs):
        return [inputs[0] * 2]


def serving(**config):
    return serving_in_thread(EchoRunner(), **config)


def test_policy_admits_listed_networks_only():
    p = AccessPolicy(allow=parse_networks(["10.0.0.0/24", "192.168.1.7", "fd00::/8"]))
    assert p.admits("10.0.0.200") and p.admits("192.168.1.7") and p.admits("fd00::1")
    assert not p.admits("10.0.1.1") and not p.admits("192.168.1.8") and not p.admits("::1")
    assert p.admits("::ffff:10.0.0.5")  # an IPv4 peer on a dual-stack socket
    assert not p.admits("not an address")
    default = AccessPolicy()
    assert default.admits("127.0.0.1") and default.admits("127.9.9.9") and default.admits("::1")
    assert not default.admits("10.0.0.1")
    assert AccessPolicy(allow=None).admits("203.0.113.9")
    with pytest.raises(ValueError, match="'10.0.0.300'"):
        parse_networks(["10.0.0.300"])
    with pytest.raises(ValueError, match="at least one network"):
        AccessPolicy(allow=())


def test_address_gate_refuses_a_peer_before_its_first_message():
    with serving(access=AccessPolicy(allow=parse_networks(["127.0.0.1"]))) as (server, endpoint):
        with EdgeClient(endpoint) as ok:
            assert ok.ping(timeout_s=10) > 0
        ctx = zmq.Context()
        try:
            # a DEALER connecting from another loopback address is not let in
            stranger = EdgeClient(endpoint.replace("tcp://", "tcp://127.0.0.2:0;"), context=ctx)
            with stranger, pytest.raises(EdgeTimeout):
                stranger.ping(timeout_s=1.5)
        finally:
            ctx.term()
        assert server.stats.total.refused_address >= 1
        assert server.stats.total.pings == 1


def test_unknown_keys_are_counted_and_logged_at_a_bounded_rate_with_bounded_memory(tmp_path, caplog):
    make_key_pair(tmp_path, "edge")
    make_key_pair(tmp_path / "clients", "dev")
    for i in range(12):
        make_key_pair(tmp_path / "strangers", f"s{i}")
    keys = ServerKeys.load(tmp_path / "edge.key_secret", tmp_path / "clients")
    policy = AccessPolicy(allow=None, remember_refused=4, log_per_interval=3)
    caplog.set_level(logging.WARNING, logger="cutedge.edge")
    with serving(curve=keys, access=policy) as (server, endpoint):
        ctx = zmq.Context()
        try:
            for i in range(12):
                stranger = ClientKeys.load(tmp_path / "edge.key", tmp_path / "strangers" / f"s{i}.key_secret")
                with EdgeClient(endpoint, curve=stranger, context=ctx) as c, pytest.raises(EdgeTimeout):
                    c.ping(timeout_s=0.3)
        finally:
            ctx.term()
        allowed = ClientKeys.load(tmp_path / "edge.key", tmp_path / "clients" / "dev.key_secret")
        with EdgeClient(endpoint, curve=allowed) as c:
            assert c.ping(timeout_s=10) > 0
        assert server.stats.total.refused_key >= 12
        assert len(server._gate._refusals._seen) <= 4
    lines = [r for r in caplog.records if "unknown public key" in r.getMessage()]
    assert 1 <= len(lines) <= 3
    assert all(str(tmp_path) not in r.getMessage() for r in lines)


def _closed_within(s: socket.socket, timeout_s: float) -> bool:
    s.settimeout(timeout_s)
    try:
        while s.recv(4096):  # the edge's greeting comes first; then end of stream
            pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_connections_past_the_cap_are_shut_and_idle_handshakes_time_out():
    policy = AccessPolicy(max_connections=3, handshake_timeout_s=4.0)
    with serving(access=policy) as (server, endpoint):
        port = int(endpoint.rsplit(":", 1)[1])
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        time.sleep(0.3)
        extra = socket.create_connection(("127.0.0.1", port))
        assert _closed_within(extra, 2.5), "a connection past the cap was not shut"
        assert server.stats.total.refused_connection >= 1
        # the three that never start their handshake are closed by the handshake timeout
        assert all(_closed_within(s, 15.0) for s in idle)
        for s in (*idle, extra):
            s.close()
        with EdgeClient(endpoint) as c:
            assert c.ping(timeout_s=10) > 0


@linux_only
@pytest.mark.slow
@pytest.mark.parametrize("setup", ["zap", "curve"])
def test_fifty_peers_streaming_endless_messages_leave_the_edge_memory_flat(setup, tmp_path):
    r = run_setup(setup, peers=50, total_bytes=4 * 2**30, workdir=tmp_path)
    assert r["cut_off"] == 50, r
    assert r["max_sent_mib"] < 64, r  # cut off at the handshake, not after gigabytes
    assert r["rss_growth_mb"] <= 50, r
    assert r["device_failures"] == 0 and r["device_round_trips"] >= 20, r
    assert not r["stopped_by_time_limit"] and r["edge_exit_code"] == 0, r
    if setup == "zap":
        assert r["edge_log_refusals"] >= 1, r
