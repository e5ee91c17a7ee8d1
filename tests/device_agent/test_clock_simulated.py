"""The simulated backend: a board profile acting as a GPU."""

from __future__ import annotations

import pytest

from controller.profiles import load_board
from device_agent.clock import NotALevelError, check_backend, open_backend
from device_agent.clock.simulated import DEFAULT_BOARD, SimulatedBackend


class SimClock:
    """Simulated time: sleep advances it, nothing waits."""

    def __init__(self) -> None:
        self.t = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.t += s


@pytest.fixture(params=["jetson-tx2", "jetson-xavier-nx", "jetson-orin-nano", "jetson-nano"])
def board(request):
    return load_board(request.param)


def test_levels_and_power_come_from_the_profile(board):
    b = SimulatedBackend(board)
    assert b.levels_hz() == board.levels_hz
    assert b.current_hz() == board.levels_hz[-1]
    f = board.levels_hz[1]
    b.pin(f)
    assert b.power_w() == {"board": pytest.approx(float(board.idle_power_w(f)))}
    b.mark_busy(True)
    assert b.board_power_w() == pytest.approx(float(board.busy_power_w(f)))
    assert b.board_power_w() > float(board.idle_power_w(f))


def test_energy_is_exact_for_busy_and_idle_spans(board):
    clock = SimClock()
    b = SimulatedBackend(board, clock=clock, sleep=clock.sleep)
    lo, hi = board.levels_hz[0], board.levels_hz[-1]
    meter = b.energy_meter().start()
    clock.t += 2.0  # idle at the top level
    b.mark_busy(True)
    clock.t += 0.5  # busy at the top level
    b.pin(lo)  # the switch takes the profile's latency, still busy at the old level
    clock.t += 1.0  # busy at the lowest level
    b.mark_busy(False)
    clock.t += 0.25
    expected = (
        2.0 * float(board.idle_power_w(hi))
        + (0.5 + board.switch_latency_s) * float(board.busy_power_w(hi))
        + 1.0 * float(board.busy_power_w(lo))
        + 0.25 * float(board.idle_power_w(lo))
    )
    assert meter.read_j() == pytest.approx(expected, rel=1e-12)
    assert meter.stop() == pytest.approx(expected, rel=1e-12)
    assert meter.elapsed_s == pytest.approx(3.75 + board.switch_latency_s)
    assert clock.slept == [board.switch_latency_s]


def test_pin_restore_and_errors(board):
    clock = SimClock()
    b = SimulatedBackend(board, initial_hz=board.levels_hz[2], clock=clock, sleep=clock.sleep)
    assert b.restore() == {}
    assert b.pin(board.levels_hz[2]) == board.levels_hz[2]
    assert clock.slept == []  # no change of level, no switch latency
    b.pin(board.levels_hz[-1])
    assert b.restore() == {"gpu_hz": str(board.levels_hz[2])}
    assert b.current_hz() == board.levels_hz[2]
    assert b.restore() == {}
    with pytest.raises(NotALevelError, match="nearest levels"):
        b.pin(board.levels_hz[0] - 1)
    with pytest.raises(NotALevelError):
        SimulatedBackend(board, initial_hz=123)


def test_conformance(board):
    check_backend(SimulatedBackend(board, sleep=lambda s: None))


def test_open_by_name_uses_the_default_board():
    sel = open_backend("simulated")
    assert sel.backend.board.name == DEFAULT_BOARD and sel.notes == []
    assert open_backend("simulated", board="jetson-tx2").backend.board.name == "jetson-tx2"
