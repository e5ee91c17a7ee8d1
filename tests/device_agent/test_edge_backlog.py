"""The edge's backlog: carried by its replies, parsed by the device's client, fed to the
controller as ``Observation.edge_wait_s`` (drained since the report, 0 while the edge is down).
A real edge in this process on loopback, a real device agent on the simulated clock backend."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "edge_agent"))  # edge_helpers, tinynet

from edge_helpers import serving_in_thread  # noqa: E402
from edge_tinynet import INPUT_SHAPE, MODEL  # noqa: E402

from controller.profiles import load_board, model_from_mapping  # noqa: E402
from device_agent.clock.simulated import SimulatedBackend  # noqa: E402
from device_agent.runtime import LiveAgent, LiveConfig  # noqa: E402
from dnn_split.partition import partition  # noqa: E402
from dnn_split.profile import estimate_profile  # noqa: E402
from edge_agent.runner import ModelRequest, SplitTailRunner  # noqa: E402
from wire.format import MsgType  # noqa: E402
from wire.transport import EdgeClient  # noqa: E402

BACKLOG_S = 1000.0  # large, so what drains between the reply and the observation is negligible


@pytest.fixture(scope="module")
def runner():
    return SplitTailRunner([ModelRequest(MODEL, INPUT_SHAPE)], announce=lambda line: None)


@pytest.fixture
def edge(runner):
    with serving_in_thread(runner) as (server, endpoint):
        server._jobs.backlog_s = lambda: BACKLOG_S  # what the queue would say under load
        yield endpoint


def test_a_result_carries_the_backlog_to_a_client_that_asks_and_not_to_one_that_does_not(edge):
    x = torch.rand((1, *INPUT_SHAPE))
    with EdgeClient(edge) as c:
        r = c.infer(MODEL, 0, [x], timeout_s=30)
        assert r.kind is MsgType.RESULT and r.edge_backlog_s == pytest.approx(BACKLOG_S)
    with EdgeClient(edge, ask_backlog=False) as c:  # as a device from before the field
        assert c.infer(MODEL, 0, [x], timeout_s=30).edge_backlog_s is None


class _Stop(Exception):
    pass


def _agent(endpoint: str):
    board = load_board("jetson-nano")
    part = partition(MODEL, INPUT_SHAPE, announce=lambda line: None)
    profile = model_from_mapping(estimate_profile(part, board), "FLOPs estimate")
    cfg = LiveConfig(model=MODEL, input_shape=INPUT_SHAPE, board=board.name, frames=5, calibration=None)
    return LiveAgent(cfg, part, profile, SimulatedBackend(board), EdgeClient(endpoint), log=lambda m: None)


def test_the_reported_backlog_reaches_the_controllers_observation(edge):
    agent = _agent(edge)
    try:
        seen = []

        def decide(obs):
            seen.append(obs)
            raise _Stop

        agent.policy.decide = decide
        # a reply waits on the socket when the run starts; the first slot collects it, then
        # builds the observation
        agent.client.submit(MODEL, agent.offered[0].index, [torch.rand((1, *INPUT_SHAPE))], timeout_s=5)
        assert agent.client.socket.poll(30_000)
        with pytest.raises(_Stop):
            agent.run()
        assert len(seen) == 1
        assert BACKLOG_S - 10 < seen[0].edge_wait_s <= BACKLOG_S
    finally:
        agent.client.close()


def test_the_backlog_drains_at_one_second_per_second_and_is_0_while_the_edge_is_down(edge):
    agent = _agent(edge)
    try:
        agent.edges[0].backlog_s, agent.edges[0].backlog_at_s = 1.0, 50.0
        assert agent.edge_wait_s(50.0) == 1.0
        assert agent.edge_wait_s(50.4) == pytest.approx(0.6)
        assert agent.edge_wait_s(52.0) == 0.0  # no reply for longer than the backlog: nothing left
        agent._edge_down("test")
        agent.edges[0].backlog_at_s = 50.0
        assert agent.edge_wait_s(50.0) == 0.0
    finally:
        agent.client.close()
