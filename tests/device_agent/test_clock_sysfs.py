"""The sysfs backend on fake Jetson trees: discovery, levels, pin/restore, write order, errors."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import pytest
from fake_sysfs import LAYOUTS, FakeKernel, make_tree, unprivileged
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_agent.clock import (
    BackendError,
    BackendUnavailable,
    Capability,
    NotALevelError,
    PermissionDeniedError,
    check_backend,
    open_backend,
)
from device_agent.clock.sysfs import SysfsBackend, find_gpu_devfreq, of_node_name

ALL = sorted(LAYOUTS)


@pytest.fixture(params=ALL)
def board(request, tmp_path):
    return make_tree(tmp_path, request.param)


def backend_on(board, **kw) -> SysfsBackend:
    kw.setdefault("settle_s", 0.05)
    return SysfsBackend(board.root, **kw)


# -- discovery -----------------------------------------------------------------------------------


def test_layout_is_built_with_symlinks_like_sysfs(board):
    assert board.node.is_symlink()
    assert board.node.resolve() == board.real_node.resolve()
    assert "sys/devices" in str(board.node.resolve())
    assert (board.node / "device").is_symlink()
    if board.layout.of_name is not None:
        raw = (board.node / "device/of_node/name").read_bytes()
        assert raw.endswith(b"\x00")
        assert of_node_name(board.node) == board.layout.of_name
    else:
        assert of_node_name(board.node) is None


def test_finds_the_gpu_node_and_skips_the_others(board):
    node = find_gpu_devfreq(board.root)
    assert node == board.node
    others = [n for n in (board.root / "sys/class/devfreq").iterdir() if n.name != board.node.name]
    assert len(others) == len(board.layout.others)


def test_levels_are_read_from_available_frequencies_sorted(tmp_path):
    board = make_tree(tmp_path, "xavier-nx-jp4")
    # a table listed out of order, with a duplicate, still gives an ascending level list
    levels = list(board.levels_hz)
    (board.real_node / "available_frequencies").write_text(
        " ".join(map(str, levels[::-1] + levels[:1])) + "\n"
    )
    assert backend_on(board).levels_hz() == board.levels_hz


def test_no_gpu_node_is_unavailable_and_lists_what_was_found(tmp_path):
    board = make_tree(tmp_path, "orin-nano-jp6")
    (board.root / "sys/class/devfreq" / board.node.name).unlink()
    with pytest.raises(BackendUnavailable) as exc:
        SysfsBackend(board.root)
    msg = str(exc.value)
    assert "no GPU devfreq node" in msg and "15340000.vic (vic)" in msg and "\n" not in msg


def test_board_profile_narrows_the_search(tmp_path):
    board = make_tree(tmp_path, "orin-nano-jp6")
    assert (
        open_backend("sysfs", sysfs_root=board.root, board="jetson-orin-nano").backend.node
        == board.node
    )
    with pytest.raises(BackendUnavailable, match="gp10b"):
        open_backend("sysfs", sysfs_root=board.root, board="jetson-tx2")


def test_missing_available_frequencies_names_the_file(tmp_path):
    board = make_tree(tmp_path, "tx2-jp4")
    (board.real_node / "available_frequencies").unlink()
    with pytest.raises(BackendError, match=r"available_frequencies: no such file"):
        SysfsBackend(board.root)


def test_garbage_in_available_frequencies_is_one_line(tmp_path):
    board = make_tree(tmp_path, "tx2-jp4")
    (board.real_node / "available_frequencies").write_text("114750000 fast\n")
    with pytest.raises(BackendError, match=r"available_frequencies: expected Hz values"):
        SysfsBackend(board.root)


# -- pin and restore -----------------------------------------------------------------------------


@pytest.mark.parametrize("strict", [True, False], ids=["l4t-4.9-einval", "pm-qos-clamp"])
def test_pin_each_level_then_restore(board, monkeypatch, strict):
    kernel = FakeKernel(board, strict=strict).install(monkeypatch)
    before = board.state()
    b = backend_on(board)
    for hz in board.levels_hz[::3] + board.levels_hz[-1:] + board.levels_hz[:1]:
        assert b.pin(hz) == hz
        assert int(board.read("min_freq")) == int(board.read("max_freq")) == hz
        assert b.current_hz() == hz
    restored = b.restore()
    assert restored == before
    assert board.state() == before
    assert kernel.min_above_max == []
    assert b.restore() == {}  # twice is harmless
    assert board.state() == before


def test_write_order_raise_max_first_lower_min_first(tmp_path, monkeypatch):
    board = make_tree(tmp_path, "xavier-nx-jp4")
    kernel = FakeKernel(board).install(monkeypatch)
    b = backend_on(board)
    lv = board.levels_hz
    b.pin(lv[5])  # from [lv0, top]: lowering the max, min goes first
    assert kernel.writes == [("min_freq", str(lv[5])), ("max_freq", str(lv[5]))]
    kernel.writes.clear()
    b.pin(lv[9])  # raise: max first
    assert kernel.writes == [("max_freq", str(lv[9])), ("min_freq", str(lv[9]))]
    kernel.writes.clear()
    b.pin(lv[2])  # lower: min first
    assert kernel.writes == [("min_freq", str(lv[2])), ("max_freq", str(lv[2]))]
    kernel.writes.clear()
    b.restore()  # back to [lv0, top] from [lv2, lv2]: min down first, then max up
    assert kernel.writes == [("min_freq", str(lv[0])), ("max_freq", str(lv[-1]))]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_min_never_above_max_for_any_pin_sequence(data, monkeypatch):
    layout = data.draw(st.sampled_from(ALL))
    tmp = Path(tempfile.mkdtemp())
    try:
        board = make_tree(tmp, layout)
        lv = board.levels_hz
        # start from any min <= max the power mode may have left
        lo = data.draw(st.integers(0, len(lv) - 1))
        hi = data.draw(st.integers(lo, len(lv) - 1))
        (board.real_node / "min_freq").write_text(f"{lv[lo]}\n")
        (board.real_node / "max_freq").write_text(f"{lv[hi]}\n")
        before = board.state()
        with monkeypatch.context() as m:
            kernel = FakeKernel(board, strict=False).install(m)
            b = backend_on(board, settle_s=0.0)
            for hz in data.draw(st.lists(st.sampled_from(lv), min_size=1, max_size=6)):
                b.pin(hz)
            b.restore()
        assert kernel.min_above_max == []
        assert board.state() == before
        assert all(a in ("min_freq", "max_freq") for a, _ in kernel.writes)
    finally:
        shutil.rmtree(tmp)


def test_throttled_clock_warns_and_returns_what_it_reads(tmp_path, monkeypatch, caplog):
    board = make_tree(tmp_path, "orin-nano-jp6")
    lv = board.levels_hz
    FakeKernel(board, throttle_hz=lv[3]).install(monkeypatch)
    b = backend_on(board)
    with caplog.at_level(logging.WARNING, logger="device_agent"):
        assert b.pin(lv[-1]) == lv[3]
    assert "throttling or the nvpmodel cap" in caplog.text
    assert b.pin(lv[1]) == lv[1]  # below the cap the level is reached
    b.restore()


def test_clock_that_never_moves_does_not_hang(tmp_path, caplog):
    # no kernel at all: cur_freq never changes; pin gives up after settle_s with a warning
    board = make_tree(tmp_path, "tx2-jp4")
    b = backend_on(board, settle_s=0.02)
    with caplog.at_level(logging.WARNING, logger="device_agent"):
        assert b.pin(board.levels_hz[0]) == board.levels_hz[-1]
    assert "cur_freq reads" in caplog.text
    b.restore()


def test_a_kernel_thread_moving_cur_freq(tmp_path):
    board = make_tree(tmp_path, "xavier-nx-jp4")
    kernel = FakeKernel(board).start()
    try:
        b = backend_on(board, settle_s=1.0)
        assert b.pin(board.levels_hz[4]) == board.levels_hz[4]
        b.restore()
    finally:
        kernel.stop()


def test_strict_kernel_rejection_is_one_line(tmp_path, monkeypatch):
    board = make_tree(tmp_path, "tx2-jp4")
    FakeKernel(board, strict=True).install(monkeypatch)
    b = backend_on(board)
    # someone else sets max below the level we are about to write as min: EINVAL from the kernel
    b.pin(board.levels_hz[2])
    with pytest.raises(BackendError, match=r"rejected it \(EINVAL\)"):
        from device_agent.clock.sysfs import write_attr

        write_attr(board.node / "min_freq", str(board.levels_hz[-1]))
    b.restore()


def test_not_a_level_lists_the_nearest(board):
    b = backend_on(board)
    lv = board.levels_hz
    with pytest.raises(NotALevelError) as exc:
        b.pin(lv[1] + 1000)
    assert exc.value.nearest_hz == (lv[1], lv[2])
    assert f"{lv[1]}, {lv[2]}" in str(exc.value)
    with pytest.raises(NotALevelError) as exc:
        b.pin(lv[-1] * 2)
    assert exc.value.nearest_hz == (lv[-1],)
    assert b.restore() == {}


def test_governor_is_switched_while_pinned_and_restored(tmp_path, monkeypatch):
    board = make_tree(tmp_path, "orin-nano-jp6")
    kernel = FakeKernel(board).install(monkeypatch)
    b = backend_on(board, governor="userspace")
    b.pin(board.levels_hz[2])
    assert board.read("governor") == "userspace"
    assert kernel.writes[0] == ("governor", "userspace")
    assert b.restore()["governor"] == "nvhost_podgov"
    assert board.read("governor") == "nvhost_podgov"
    with pytest.raises(BackendError, match="not in .*available_governors"):
        backend_on(board, governor="ondemand-typo")


def test_missing_max_freq_is_named_and_nothing_to_restore(tmp_path, monkeypatch):
    board = make_tree(tmp_path, "orin-jp5")
    FakeKernel(board).install(monkeypatch)
    b = backend_on(board)
    (board.real_node / "max_freq").unlink()
    with pytest.raises(BackendError, match=r"max_freq: no such file"):
        b.pin(board.levels_hz[0])
    assert b.restore() == {}


def test_failed_restore_can_be_retried(tmp_path, monkeypatch):
    board = make_tree(tmp_path, "xavier-nx-jp4")
    FakeKernel(board).install(monkeypatch)
    before = board.state()
    b = backend_on(board)
    b.pin(board.levels_hz[3])
    saved = (board.real_node / "min_freq").read_text()
    (board.real_node / "min_freq").unlink()
    with pytest.raises(BackendError, match="restore incomplete"):
        b.restore()
    (board.real_node / "min_freq").write_text(saved)
    assert b.restore() == before
    assert board.state() == before


# -- permissions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["tx2-jp4", "orin-nano-jp6"])
def test_permission_denied_says_what_to_do(world_tmp, layout):
    board = make_tree(world_tmp, layout)
    before = board.state()
    with unprivileged(board):
        b = backend_on(board)  # reading is allowed
        assert b.levels_hz() == board.levels_hz and b.power_w()
        with pytest.raises(PermissionDeniedError) as exc:
            b.pin(board.levels_hz[0])
        msg = str(exc.value)
        assert "permission denied" in msg and "min_freq" in msg
        assert "root" in msg and "udev rule" in msg and "\n" not in msg
        assert b.restore() == {}  # nothing was written, nothing to undo
    assert board.state() == before


# -- the contract --------------------------------------------------------------------------------


def test_conformance_on_every_layout(board, monkeypatch):
    FakeKernel(board).install(monkeypatch)
    before = board.state()
    b = backend_on(board)
    seen = check_backend(b)
    assert seen["levels_hz"] == board.levels_hz
    assert board.state() == before
    assert Capability.RAILS in b.capabilities


def test_board_without_rails_says_so(tmp_path):
    board = make_tree(tmp_path, "nano-jp4")
    shutil.rmtree(board.root / "sys/bus")  # a Nano 2 GB has no INA3221
    b = backend_on(board)
    assert Capability.POWER not in b.capabilities and Capability.ENERGY not in b.capabilities
    check_backend(b, pin=False)
    with pytest.raises(Exception, match="no INA3221 rails"):
        b.power_w()
