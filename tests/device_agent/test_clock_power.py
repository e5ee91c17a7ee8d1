"""Power rails from each sysfs layout, and energy integrated from them."""

from __future__ import annotations

import threading
import time

import pytest
from fake_sysfs import make_tree

from device_agent.clock import CounterEnergyMeter, IntegratingEnergyMeter, total_power_w
from device_agent.clock.rails import find_rails
from device_agent.clock.sysfs import SysfsBackend


def test_hwmon_rails_jp6(tmp_path):
    board = make_tree(tmp_path, "orin-nano-jp6")
    board.set_power("VDD_IN", 7.25)
    board.set_power("VDD_CPU_GPU_CV", 2.5)
    board.set_power("VDD_SOC", 1.5)
    b = SysfsBackend(board.root)
    assert b.power_w() == pytest.approx({"VDD_IN": 7.25, "VDD_CPU_GPU_CV": 2.5, "VDD_SOC": 1.5})
    assert b.board_power_w() == pytest.approx(7.25)  # the module input rail, not the sum
    # hwmon1 here; the index is globbed, not assumed
    assert all("hwmon1" in str(r.files[0]) for r in b.rails)


def test_hwmon_two_chips_skip_nc_and_shunt_sum_jp5(tmp_path):
    board = make_tree(tmp_path, "orin-jp5")
    rails = find_rails(board.root)
    assert [r.name for r in rails] == [
        "VDD_GPU_SOC",
        "VDD_CPU_CV",
        "VIN_SYS_5V0",
        "VDDQ_VDD2_1V8AO",
    ]
    assert {r.chip for r in rails} == {"1-0040", "1-0041"}
    board.set_power("VDD_GPU_SOC", 6.0)
    # no input rail on AGX Orin: the board figure is the sum of the rails
    assert SysfsBackend(board.root).board_power_w() == pytest.approx(6.0 + 1 + 1 + 1)


def test_iio_rails_with_names_jp4(tmp_path):
    board = make_tree(tmp_path, "tx2-jp4")
    board.set_power("VDD_IN", 9.876)
    board.set_power("VDD_SYS_GPU", 3.2)
    p = SysfsBackend(board.root).power_w()
    assert list(p) == [
        "VDD_SYS_GPU",
        "VDD_SYS_SOC",
        "VDD_4V0_WIFI",
        "VDD_IN",
        "VDD_SYS_CPU",
        "VDD_SYS_DDR",
    ]
    assert p["VDD_IN"] == pytest.approx(9.876) and p["VDD_SYS_GPU"] == pytest.approx(3.2)
    assert SysfsBackend(board.root).board_power_w() == pytest.approx(9.876)


def test_iio_rails_without_names_use_chip_and_channel(tmp_path):
    board = make_tree(tmp_path, "nano-jp4")
    board.set_power("6-0040:0", 4.5)
    p = SysfsBackend(board.root).power_w()
    assert p == pytest.approx({"6-0040:0": 4.5, "6-0040:1": 1.0, "6-0040:2": 1.0})


def test_thor_ina238_vin_in_microwatts(tmp_path):
    board = make_tree(tmp_path, "thor-jp7")
    board.rail_files["VIN"][0].write_text("43210000\n")
    b = SysfsBackend(board.root)
    assert b.power_w()["VIN"] == pytest.approx(43.21)
    assert b.board_power_w() == pytest.approx(43.21)


def test_unreadable_rail_reads_none_and_others_still_count(tmp_path):
    board = make_tree(tmp_path, "orin-jp5")
    board.rail_files["VDD_CPU_CV"][1].write_text("")  # mid-update or a driver hiccup
    b = SysfsBackend(board.root)
    p = b.power_w()
    assert p["VDD_CPU_CV"] is None and p["VDD_GPU_SOC"] == pytest.approx(1.0)
    assert b.board_power_w() == pytest.approx(3.0)


def test_total_power_rules():
    assert total_power_w({"VDD_SOC": 1.0, "VDD_IN": 5.0}) == 5.0
    assert total_power_w({"a": 1.0, "b": None, "c": 2.0}) == 3.0
    assert total_power_w({"a": None}) is None
    assert total_power_w({"VDD_IN": None, "b": 2.0}) is None  # the input rail decides when present


# -- energy --------------------------------------------------------------------------------------


def test_energy_of_constant_power_from_the_rails(tmp_path):
    board = make_tree(tmp_path, "xavier-nx-jp4")
    board.set_power("VDD_IN", 6.4)
    b = SysfsBackend(board.root)
    with b.energy_meter(interval_s=0.005) as meter:
        time.sleep(0.15)
        mid = meter.read_j()
        time.sleep(0.05)
    total = meter.stop()
    assert 0 < mid <= total
    assert meter.samples >= 10
    assert total == pytest.approx(6.4 * meter.elapsed_s, rel=1e-9)


def test_energy_follows_a_step_in_a_rail(tmp_path):
    board = make_tree(tmp_path, "orin-nano-jp6")
    board.set_power("VDD_IN", 2.0)
    b = SysfsBackend(board.root)
    meter = b.energy_meter(interval_s=0.002).start()
    time.sleep(0.1)
    e_low, t_low = meter.read_j(), meter.elapsed_s
    board.set_power("VDD_IN", 10.0)
    e_step, t_step = meter.read_j(), meter.elapsed_s  # a sample right after the step
    time.sleep(0.1)
    e = meter.stop()
    assert e_low == pytest.approx(2.0 * t_low, rel=1e-9)
    # across the step (the time the two file writes took) the energy lies between the levels
    assert 2.0 * (t_step - t_low) <= e_step - e_low <= 10.0 * (t_step - t_low) + 1e-12
    assert e - e_step == pytest.approx(10.0 * (meter.elapsed_s - t_step), rel=1e-9)


def test_trapezoid_is_exact_for_a_ramp():
    t0 = time.monotonic()

    def ramp_w() -> float:
        return 3.0 + 20.0 * (time.monotonic() - t0)

    times = []

    def clock() -> float:
        times.append(time.monotonic())
        return times[-1]

    meter = IntegratingEnergyMeter(ramp_w, interval_s=0.003, clock=clock).start()
    time.sleep(0.12)
    e = meter.stop()
    a, b = meter._first_t - t0, meter._last[0] - t0
    expected = 3.0 * (b - a) + 10.0 * (b * b - a * a)
    # trapezoids integrate a linear function exactly; what is left is the few microseconds
    # between reading the clock and reading the power
    assert e == pytest.approx(expected, rel=2e-3)


def test_meter_skips_missing_samples_and_surfaces_errors():
    values = iter([1.0, None, 1.0] + [1.0] * 10_000)
    meter = IntegratingEnergyMeter(lambda: next(values), interval_s=0.002).start()
    time.sleep(0.02)
    assert meter.read_j() == pytest.approx(meter.elapsed_s)
    meter.stop()

    def broken() -> float:
        if threading.current_thread() is not threading.main_thread():
            raise OSError("rail gone")
        return 1.0

    meter = IntegratingEnergyMeter(broken, interval_s=0.001).start()
    time.sleep(0.02)
    with pytest.raises(Exception, match="power sampling failed: rail gone"):
        meter.read_j()
    with pytest.raises(Exception, match="power sampling failed"):
        meter.stop()


def test_counter_meter_never_goes_backwards():
    counter = iter([100.0, 101.5, 103.0, 2.0, 4.0])  # a driver reload resets the counter
    meter = CounterEnergyMeter(lambda: next(counter)).start()
    assert meter.read_j() == pytest.approx(1.5)
    assert meter.read_j() == pytest.approx(3.0)
    assert meter.read_j() == pytest.approx(3.0)
    assert meter.stop() == pytest.approx(3.0)
    assert meter.read_j() == pytest.approx(3.0)
    with pytest.raises(RuntimeError):
        meter.start()


def test_counter_meter_elapsed_spans_what_the_energy_covers():
    """A counter that takes time to read (NVML: a driver call): a constant 5 W board gives 5 W
    from energy / elapsed, not a little less because the clock was read around the counter."""
    now = [0.0]

    def clock() -> float:
        return now[0]

    def counter() -> float:
        now[0] += 0.004  # the read costs 4 ms; the counter holds the energy up to its end
        return 5.0 * now[0]

    meter = CounterEnergyMeter(counter, clock=clock).start()
    now[0] += 0.05
    e = meter.stop()
    assert e / meter.elapsed_s == pytest.approx(5.0, rel=1e-9)
