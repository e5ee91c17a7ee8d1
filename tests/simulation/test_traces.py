"""Trace readers, resampling and the synthetic uplink (simulation/traces.py).

Real files come from the shared public sets (``$CUTEDGE_TRACES``, skipped when absent); the
expected means are the figures in that folder's README where it gives them, and otherwise are
computed here again with plain Python from the same file, following the documented conventions.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from controller.config import ConfigError
from simulation.traces import (
    SYNTHETIC_KINDS,
    TRACE_FORMATS,
    Trace,
    detect_format,
    load_trace,
    read_trace,
    synthetic_uplink,
)

GNT_HEADER = (
    "Timestamp,Longitude,Latitude,Speed,Operatorname,CellID,NetworkMode,RSRP,RSRQ,SNR,CQI,RSSI,"
    "DL_bitrate,UL_bitrate,State,PINGAVG,PINGMIN,PINGMAX,PINGSTDEV,PINGLOSS,CELLHEX,NODEHEX,"
    "LACHEX,RAWCELLID,NRxRSRP,NRxRSRQ"
)


def gnt_row(stamp: str, dl: str, ul: str = "10", mode: str = "5G") -> str:
    return (
        f"{stamp},-8.39,51.88,0,B,11,{mode},-103,-15,1.0,15,-90,{dl},{ul},D,-,-,-,-,-,B,A4DF,9CBA,"
        "10805003,-106.0,-11.0"
    )


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def volume_over(tr: Trace, span_s: float) -> float:
    """Bits the trace offers over [0, span_s), repeating it, summed segment by segment."""
    widths = np.diff(tr.edges_s)
    laps = math.floor(span_s / tr.duration_s)
    rest = span_s - laps * tr.duration_s
    lap_bits = float(np.sum(widths * tr.rate_bps))
    inside = np.clip(rest - tr.edges_s[:-1], 0.0, widths)  # the part of each segment before `rest`
    return laps * lap_bits + float(np.sum(inside * tr.rate_bps))


def config_error(fn, *args, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value), "errors must be one line"
    return info.value


# -- the Trace type ---------------------------------------------------------------------------


def test_trace_mean_duration_and_read_only():
    tr = Trace("t", None, "synthetic", np.array([0.0, 1.0, 3.0]), np.array([10.0, 20.0]))
    assert tr.duration_s == 3.0
    assert tr.volume_bits == pytest.approx(50.0)
    assert tr.mean_bps == pytest.approx(50.0 / 3.0)
    with pytest.raises(ValueError):
        tr.rate_bps[0] = 1.0
    with pytest.raises(AttributeError):
        tr.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    "edges, rate",
    [
        ([0.0], []),
        ([0.5, 1.0], [1.0]),
        ([0.0, 1.0, 1.0], [1.0, 2.0]),
        ([0.0, 2.0, 1.0], [1.0, 2.0]),
        ([0.0, 1.0], [-1.0]),
        ([0.0, 1.0], [np.nan]),
        ([0.0, 1.0, 2.0], [1.0]),
    ],
)
def test_trace_rejects_malformed_step_functions(edges, rate):
    with pytest.raises(ValueError):
        Trace("t", None, "synthetic", np.array(edges), np.array(rate))


def test_trace_rejects_unknown_format_label():
    with pytest.raises(ValueError):
        Trace("t", None, "csv", np.array([0.0, 1.0]), np.array([1.0]))


def test_scaled_multiplies_capacity_and_says_so():
    tr = Trace("t", "/x", "two-column", np.array([0.0, 1.0, 3.0]), np.array([10.0, 20.0]))
    half = tr.scaled(0.5)
    assert half.mean_bps == pytest.approx(tr.mean_bps / 2)
    assert np.array_equal(half.edges_s, tr.edges_s)
    assert any("scaled by 0.5" in n for n in half.notes)
    assert tr.scaled(1.0) is tr
    for bad in (0.0, -1.0, math.nan, math.inf, "x"):
        err = config_error(tr.scaled, bad)
        assert err.field == "scale"


# -- resample ---------------------------------------------------------------------------------


def test_resample_exact_values_and_wrap():
    tr = Trace("t", None, "synthetic", np.array([0.0, 1.0, 3.0]), np.array([10.0, 20.0]))
    caps, wrapped = tr.resample(0.5, 6)
    assert np.allclose(caps, [10, 10, 20, 20, 20, 20])
    assert wrapped is False
    caps, wrapped = tr.resample(2.0, 3)  # [0,2) [2,4) [4,6): the trace repeats after 3 s
    assert np.allclose(caps, [15.0, (20.0 + 10.0) / 2, 20.0])
    assert wrapped is True


def test_resample_exactly_one_lap_is_not_wrapped():
    tr = Trace("t", None, "synthetic", np.arange(31) * 0.1, np.linspace(1.0, 2.0, 30))
    caps, wrapped = tr.resample(0.1, 30)  # 30 * 0.1 is 3.0000000000000004 in floats
    assert wrapped is False
    assert np.allclose(caps, tr.rate_bps)
    caps, wrapped = tr.resample(0.1, 31)
    assert wrapped is True
    assert caps[-1] == pytest.approx(tr.rate_bps[0])


def test_resample_many_laps_conserves_volume():
    tr = Trace("t", None, "synthetic", np.array([0.0, 0.3, 1.0]), np.array([1e9, 3e6]))
    caps, wrapped = tr.resample(0.25, 40_000)  # 10 000 s: 10 000 laps
    assert wrapped
    assert caps.sum() * 0.25 == pytest.approx(10_000 * tr.volume_bits, rel=1e-9)
    assert caps.min() >= 0.0


def test_resample_rejects_bad_arguments():
    tr = Trace("t", None, "synthetic", np.array([0.0, 1.0]), np.array([1.0]))
    for slot in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError):
            tr.resample(slot, 3)
    with pytest.raises(ValueError):
        tr.resample(0.1, -1)
    with pytest.raises(TypeError):
        tr.resample(0.1, 2.5)  # type: ignore[arg-type]
    caps, wrapped = tr.resample(0.1, 0)
    assert caps.shape == (0,) and wrapped is False


def _brute_slot_means(widths, rates, slot_s, n_slots):
    """Each slot's mean by walking segments and laps one at a time (no cumulative sums)."""
    duration = sum(widths)
    out = []
    for k in range(n_slots):
        a, b = k * slot_s, (k + 1) * slot_s
        total = 0.0
        lap = math.floor(a / duration)
        while lap * duration < b:
            start = lap * duration
            for w, r in zip(widths, rates, strict=True):
                lo, hi = max(a, start), min(b, start + w)
                if hi > lo:
                    total += r * (hi - lo)
                start += w
            lap += 1
        out.append(total / slot_s)
    return out


@settings(max_examples=150, deadline=None)
@given(
    segments=st.lists(
        # rates of 0 or at least 1 mbit/s: a subnormal rate makes the tolerance underflow to 0
        st.tuples(st.floats(0.01, 10.0), st.one_of(st.just(0.0), st.floats(1e-3, 1e9))), min_size=1, max_size=12
    ),
    slot_s=st.floats(0.005, 15.0),
    n_slots=st.integers(0, 60),
)
def test_resample_matches_brute_force(segments, slot_s, n_slots):
    widths = [w for w, _ in segments]
    rates = [r for _, r in segments]
    assume(any(r > 0 for r in rates))
    edges = np.r_[0.0, np.cumsum(widths)]
    assume(np.all(np.diff(edges) > 0))
    tr = Trace("h", None, "synthetic", edges, np.array(rates))
    caps, wrapped = tr.resample(slot_s, n_slots)
    expected = _brute_slot_means(list(np.diff(edges)), rates, slot_s, n_slots)
    scale = max(rates)
    assert caps.shape == (n_slots,)
    assert np.allclose(caps, expected, rtol=1e-7, atol=1e-7 * scale)
    assert caps.sum() * slot_s == pytest.approx(sum(expected) * slot_s, rel=1e-7, abs=1e-7 * scale)
    span = n_slots * slot_s
    assume(abs(span - tr.duration_s) > 1e-6 * tr.duration_s)
    assert wrapped == (span > tr.duration_s)


# -- generic file errors ----------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nope.trace"
    err = config_error(read_trace, path)
    assert err.source == str(path) and "not found" in err.message
    assert "not found" in config_error(detect_format, path).message


def test_directory_is_not_a_trace(tmp_path):
    assert "directory" in config_error(read_trace, tmp_path).message


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file(tmp_path, content):
    path = write(tmp_path, "empty", content)
    err = config_error(read_trace, path)
    assert err.source == str(path) and "empty" in err.message


def test_nul_bytes_are_binary_junk(tmp_path):
    path = write(tmp_path, "junk", b"0\n12\n\x00\x01\x02garbage\n")
    err = config_error(read_trace, path)
    assert err.field == "line 3" and "binary" in err.message


def test_non_utf8_is_binary_junk(tmp_path):
    path = write(tmp_path, "junk", b"0.0\t1.0\n1.0\t\xff\xfe\n")
    err = config_error(read_trace, path, "two-column")
    assert err.field == "line 2" and "UTF-8" in err.message


def test_unknown_format_name(tmp_path):
    path = write(tmp_path, "t", "0 1\n1 2\n")
    err = config_error(read_trace, path, "pensieve")
    assert err.field == "format" and "two-column" in err.message


def test_undetectable_content(tmp_path):
    path = write(tmp_path, "t", "hello world, this is prose\n")
    err = config_error(read_trace, path)
    assert err.field == "format" and "cannot tell" in err.message
    assert err.source == str(path)


def test_utf8_bom_is_ignored(tmp_path):
    path = write(tmp_path, "t", "\ufeff0.0\t1.0\n1.0\t2.0\n")
    assert read_trace(path).mean_bps == pytest.approx(2e6)


# -- detection --------------------------------------------------------------------------------


def test_detection_is_by_content_not_name(tmp_path):
    assert detect_format(write(tmp_path, "a.csv", "0\n5\n5\n9\n")) == "mahimahi"
    assert detect_format(write(tmp_path, "b.list", "0.0\t1.5\n0.5\t2.0\n")) == "two-column"
    assert detect_format(write(tmp_path, "c.up", "0 45.0\n1 44.0\n")) == "two-column"
    assert detect_format(write(tmp_path, "d.txt", "\n#####\nRun 1\n1,2,3\n")) == "nuwins"
    assert detect_format(write(tmp_path, "e.dat", "Run 3\n1,2\n")) == "nuwins"
    assert (
        detect_format(
            write(
                tmp_path, "f.down", GNT_HEADER + "\n" + gnt_row("2020.01.01_00.00.00", "5") + "\n"
            )
        )
        == "gnettrack"
    )


def test_explicit_format_overrides_detection(tmp_path):
    two = write(tmp_path, "two", "0.0\t1.5\n0.5\t2.0\n")
    err = config_error(read_trace, two, "mahimahi")
    assert err.field == "line 1"
    ints = write(tmp_path, "ints", "0\n5\n9\n")
    err = config_error(read_trace, ints, "two-column")
    assert err.field == "line 1" and "2 columns" in err.message
    # left to detection, the same file is read as what it is
    assert read_trace(ints).format == "mahimahi"


@pytest.mark.parametrize(
    "rel, fmt",
    [
        ("mahimahi/ATT-LTE-driving.up", "mahimahi"),
        ("pensieve/cooked_test_traces/norway_bus_1", "two-column"),
        ("pensieve/cooked_traces/trace_866_http---www.amazon.com", "two-column"),
        ("lumos5g/4G/4g_trace_driving_50015_dr", "two-column"),
        ("lumos5g/5G/5g_trace_1_driving", "two-column"),
        ("ucc-5g-cork/Download/Static/B_2019.12.16_13.40.04.csv", "gnettrack"),
        ("nuwins-5g-mmwave-uplink/throughput/static/5g/away_p1.list", "nuwins"),
        ("nuwins-5g-mmwave-uplink/throughput/driving/lte/throughput.list", "nuwins"),
    ],
)
def test_detects_each_shared_set(shared_file, rel, fmt):
    assert detect_format(shared_file(rel)) == fmt


def test_every_shared_file_reads(traces_dir):
    files = [p for p in sorted(traces_dir.rglob("*")) if p.is_file() and p.name != "README.md"]
    assert files
    for path in files:
        tr = read_trace(path)
        assert tr.duration_s > 0 and tr.mean_bps > 0, path
        assert tr.path == str(path) and tr.name == path.name


# -- mahimahi ---------------------------------------------------------------------------------


def test_mahimahi_single_line_is_12_mbps(tmp_path):
    tr = read_trace(write(tmp_path, "one", "1\n"))
    assert tr.format == "mahimahi"
    assert tr.duration_s == pytest.approx(0.001)
    assert tr.mean_bps == pytest.approx(12e6)


def test_mahimahi_millisecond_bins_and_wrap(tmp_path):
    # 0, 0, 5 and 10 ms over a 10 ms trace: the line at 10 ms is 0 ms of the next lap.
    tr = read_trace(write(tmp_path, "t", "0\n0\n5\n10\n"))
    assert tr.duration_s == pytest.approx(0.010)
    assert tr.rate_bps.size == 10
    assert tr.mean_bps == pytest.approx(4 * 12000 / 0.010)
    caps, wrapped = tr.resample(0.005, 2)
    assert np.allclose(caps, [3 * 12000 / 0.005, 1 * 12000 / 0.005])
    assert not wrapped


def test_mahimahi_tolerates_crlf_and_blank_lines(tmp_path):
    tr = read_trace(write(tmp_path, "t", "3\r\n\r\n 7 \r\n10\r\n"), "mahimahi")
    assert tr.mean_bps == pytest.approx(3 * 12000 / 0.010)


@pytest.mark.parametrize(
    "content, field, words",
    [
        ("0\n5\n12.5\n20\n", "line 3", "unparsable"),
        ("0\n5\n-3\n", "line 3", "negative"),
        ("0\n9\n5\n", "line 3", "backwards"),
        ("0\n5 6\n", "line 2", "one integer"),
        ("0\n\n7\nabc\n", "line 4", "unparsable"),
        ("0\n0\n0\n", None, "zero duration"),
        ("0\n1234567890123456789\n", "line 2", "too large"),
    ],
)
def test_mahimahi_bad_files(tmp_path, content, field, words):
    path = write(tmp_path, "bad", content)
    err = config_error(read_trace, path, "mahimahi")
    assert err.source == str(path)
    assert err.field == field
    assert words in err.message


# The README's table: duration (s, rounded) and mean capacity (Mbit/s, two decimals).
MAHIMAHI_README = {
    "ATT-LTE-driving.down": (786, 5.17),
    "ATT-LTE-driving.up": (1012, 0.83),
    "ATT-LTE-driving-2016.down": (120, 4.56),
    "ATT-LTE-driving-2016.up": (120, 1.91),
    "TMobile-LTE-driving.down": (475, 12.77),
    "TMobile-LTE-short.down": (140, 16.70),
    "TMobile-LTE-short.up": (140, 13.32),
    "TMobile-UMTS-driving.down": (928, 2.02),
    "TMobile-UMTS-driving.up": (931, 0.94),
    "Verizon-EVDO-driving.down": (1062, 0.52),
    "Verizon-EVDO-driving.up": (1065, 0.84),
}


@pytest.mark.parametrize("name", sorted(MAHIMAHI_README))
def test_mahimahi_reproduces_readme_table(shared_file, name):
    path = shared_file(f"mahimahi/{name}")
    tr = read_trace(path)
    duration_s, mean_mbps = MAHIMAHI_README[name]
    assert abs(tr.duration_s - duration_s) <= 0.5
    assert abs(tr.mean_bps / 1e6 - mean_mbps) <= 0.005 + 1e-9
    # and exactly the README's formula, counted with plain Python
    stamps = [int(line) for line in path.read_text().split()]
    assert tr.mean_bps == pytest.approx(len(stamps) * 1500 * 8 / (stamps[-1] / 1000.0), rel=1e-9)
    assert tr.rate_bps.size == stamps[-1]  # 1 ms resolution


def test_mahimahi_resample_counts_lines_per_slot(shared_file):
    path = shared_file("mahimahi/ATT-LTE-driving-2016.up")
    tr = read_trace(path)
    stamps = [int(line) for line in path.read_text().split()]
    slot_ms = 100
    n = int(tr.duration_s * 1000) // slot_ms
    caps, wrapped = tr.resample(slot_ms / 1000, n)
    assert not wrapped
    counts = [0] * n
    for t in stamps:
        if t // slot_ms < n:
            counts[t // slot_ms] += 1
    # slot 0 also holds the last timestamp's lines (mm-link's wrap); compare the rest
    for k in range(1, n):
        assert caps[k] == pytest.approx(counts[k] * 12000 / (slot_ms / 1000), rel=1e-9, abs=1e-3)


@pytest.mark.parametrize("name", ["TMobile-LTE-driving.down", "Verizon-EVDO-driving.up"])
def test_mahimahi_resample_conserves_and_wraps(shared_file, name):
    tr = read_trace(shared_file(f"mahimahi/{name}"))
    slot_s = 0.1
    n = int(1.5 * tr.duration_s / slot_s)
    caps, wrapped = tr.resample(slot_s, n)
    assert wrapped
    assert caps.sum() * slot_s == pytest.approx(volume_over(tr, n * slot_s), rel=1e-9)
    one_lap = int(round(tr.duration_s / slot_s - 0.5))
    caps1, wrapped1 = tr.resample(slot_s, one_lap)
    assert not wrapped1


# -- two-column -------------------------------------------------------------------------------


def test_two_column_pensieve_convention(tmp_path):
    tr = read_trace(write(tmp_path, "p", "0.0\t5\n1.0\t10\n3.0\t20\n"))
    assert tr.format == "two-column"
    assert np.allclose(tr.edges_s, [0.0, 1.0, 3.0])
    assert np.allclose(tr.rate_bps, [10e6, 20e6])
    assert any("time 0" in n for n in tr.notes)


def test_two_column_first_time_one_step_covers_the_first_second(tmp_path):
    tr = read_trace(write(tmp_path, "l", "1.0\t5\n2.0\t7\n3.0\t9\n"))
    assert np.allclose(tr.edges_s, [0.0, 1.0, 2.0, 3.0])
    assert np.allclose(tr.rate_bps, [5e6, 7e6, 9e6])


def test_two_column_cut_from_the_middle_is_shifted(tmp_path):
    tr = read_trace(write(tmp_path, "m", "300 4\n301 6\n302 8\n"))
    assert np.allclose(tr.edges_s, [0.0, 1.0, 2.0, 3.0])
    assert np.allclose(tr.rate_bps, [4e6, 6e6, 8e6])
    assert any("shifted" in n for n in tr.notes)


def test_two_column_single_sample_after_zero(tmp_path):
    tr = read_trace(write(tmp_path, "s", "2.5 4\n"))
    assert tr.duration_s == pytest.approx(2.5)
    assert tr.mean_bps == pytest.approx(4e6)


def test_two_column_merges_repeated_times(tmp_path):
    tr = read_trace(write(tmp_path, "d", "0 1\n1 2\n1 4\n2 6\n"))
    assert np.allclose(tr.edges_s, [0.0, 1.0, 2.0])
    assert np.allclose(tr.rate_bps, [3e6, 6e6])
    assert any("merged" in n for n in tr.notes)


@pytest.mark.parametrize(
    "content, field, words",
    [
        ("0 1\n1 2 3\n", "line 2", "2 columns"),
        ("0 1\n1\n", "line 2", "2 columns"),
        ("0 1\n1 fast\n", "line 2", "unparsable"),
        ("0 1\n1 nan\n", "line 2", "unparsable"),
        ("0 1\n1x 2\n", "line 2", "unparsable"),
        ("0 1\n1 -2\n", "line 2", "negative capacity"),
        ("0 1\n2 2\n1 3\n", "line 3", "backwards"),
        ("-1 1\n2 2\n", "line 1", "negative time"),
        ("0 5\n", None, "zero duration"),
        ("0 0\n1 0\n2 0\n", None, "all capacity values are zero"),
    ],
)
def test_two_column_bad_files(tmp_path, content, field, words):
    path = write(tmp_path, "bad", content)
    err = config_error(read_trace, path, "two-column")
    assert err.source == str(path)
    assert err.field == field
    assert words in err.message


def _two_column_mean_plain(path: Path) -> tuple[float, float]:
    """(duration, mean bit/s) by the documented rule, with plain Python."""
    by_time: dict[float, list[float]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            t, v = line.split()
            by_time.setdefault(float(t), []).append(float(v))
    times = sorted(by_time)
    values = [sum(by_time[t]) / len(by_time[t]) for t in times]
    steps = [b - a for a, b in zip(times, times[1:], strict=False)]
    first = min(times[0], statistics.median(steps))
    start = times[0] - first
    bits = first * values[0] * 1e6
    for i in range(1, len(times)):
        bits += (times[i] - times[i - 1]) * values[i] * 1e6
    return times[-1] - start, bits / (times[-1] - start)


@pytest.mark.parametrize(
    "rel",
    [
        "pensieve/cooked_test_traces/norway_bus_1",
        "pensieve/cooked_test_traces/norway_ferry_1",
        "pensieve/cooked_traces/trace_866_http---www.amazon.com",
        "pensieve/cooked_traces/tram.jernbanetorget-ljabru-report.2010-12-09_1222CET.log",
        "lumos5g/4G/4g_trace_driving_50015_dr",
        "lumos5g/4G/4g_trace_walking_50007_c",
        "lumos5g/5G/5g_trace_1_driving",
        "lumos5g/5G/5g_trace_10_walking",
    ],
)
def test_two_column_real_files_match_plain_python(shared_file, rel):
    path = shared_file(rel)
    tr = read_trace(path)
    duration, mean = _two_column_mean_plain(path)
    assert tr.duration_s == pytest.approx(duration, rel=1e-12)
    assert tr.mean_bps == pytest.approx(mean, rel=1e-9)
    n = int(tr.duration_s * 2)
    caps, wrapped = tr.resample(1.0, n)
    assert wrapped
    assert caps.sum() * 1.0 == pytest.approx(volume_over(tr, n * 1.0), rel=1e-9)


# The README's per-file mean ranges (Mbit/s) for whole groups. The README's figures are plain
# sample means and the trace's are time-weighted (irregular steps), so allow 20 %: this checks
# the unit (Mbit/s), which a mistake would put off by a factor of 8 or 1000.
TWO_COLUMN_RANGES = [
    ("pensieve/cooked_test_traces", "norway_*", 0.68, 3.34),
    ("pensieve/cooked_traces", "trace_*", 0.19, 2.62),
    ("pensieve/cooked_traces", "*.log", 0.77, 2.81),
    ("lumos5g/5G", "*_driving", 66, 558),
    ("lumos5g/5G", "*_walking", 420, 671),
    ("lumos5g/4G", "*_driving_*", 15, 74),
    ("lumos5g/4G", "*_walking_*", 14, 100),
]


@pytest.mark.parametrize("folder, pattern, low, high", TWO_COLUMN_RANGES)
def test_two_column_groups_within_readme_ranges(traces_dir, folder, pattern, low, high):
    files = sorted((traces_dir / folder).glob(pattern))
    if not files:
        pytest.skip(f"no {pattern} in {traces_dir / folder}")
    for path in files:
        mean = read_trace(path).mean_bps / 1e6
        assert low * 0.8 <= mean <= high * 1.2, (path.name, mean)


# -- G-NetTrack -------------------------------------------------------------------------------


def _gnt(tmp_path: Path, rows: list[str], header: str = GNT_HEADER) -> Path:
    return write(tmp_path, "g.csv", "\n".join([header, *rows]) + "\n")


def test_gnettrack_merges_seconds_skips_missing_and_fills_gaps(tmp_path):
    path = _gnt(
        tmp_path,
        [
            gnt_row("2019.12.16_13.40.04", "1000"),
            gnt_row("2019.12.16_13.40.05", "2000"),
            gnt_row("2019.12.16_13.40.05", "4000"),  # same second: mean 3000
            gnt_row("2019.12.16_13.40.07", "5000"),  # 13.40.06 absent: 5000 holds over 2 s
            gnt_row("2019.12.16_13.40.08", "-"),  # missing: skipped
            gnt_row("2019.12.16_13.40.09", "7000"),
        ],
    )
    tr = read_trace(path)
    assert tr.format == "gnettrack"
    assert np.allclose(tr.edges_s, [0.0, 1.0, 2.0, 4.0, 6.0])
    assert np.allclose(tr.rate_bps, [1e6, 3e6, 5e6, 7e6])
    text = " ".join(tr.notes)
    assert "merged" in text and "skipped" in text and "kbit/s" in text


def test_gnettrack_other_column_and_midnight(tmp_path):
    path = _gnt(
        tmp_path,
        [
            gnt_row("2019.12.31_23.59.59", "1", ul="100"),
            gnt_row("2020.01.01_00.00.00", "1", ul="300"),
        ],
    )
    tr = read_trace(path, column="UL_bitrate")
    assert np.allclose(tr.edges_s, [0.0, 1.0, 2.0])
    assert np.allclose(tr.rate_bps, [1e5, 3e5])


def test_gnettrack_unknown_column_lists_numeric_ones(tmp_path):
    path = _gnt(
        tmp_path, [gnt_row("2020.01.01_00.00.00", "5"), gnt_row("2020.01.01_00.00.01", "6")]
    )
    err = config_error(read_trace, path, column="DL_Bitrate")
    assert err.field == "DL_Bitrate"
    assert "DL_bitrate" in err.message and "UL_bitrate" in err.message
    assert "NetworkMode" not in err.message and "PINGAVG" not in err.message


def test_gnettrack_non_numeric_column(tmp_path):
    path = _gnt(
        tmp_path, [gnt_row("2020.01.01_00.00.00", "5"), gnt_row("2020.01.01_00.00.01", "6")]
    )
    err = config_error(read_trace, path, column="NetworkMode")
    assert err.field == "NetworkMode"
    assert "not a numeric column" in err.message and "DL_bitrate" in err.message


@pytest.mark.parametrize(
    "rows, field, words",
    [
        (["2020.01.01_00.00.00,1,2"], "line 2", "26 comma-separated"),
        ([gnt_row("2020/01/01 00:00:00", "5")], "line 2", "yyyy.mm.dd_HH.MM.SS"),
        ([gnt_row("2020.13.01_00.00.00", "5")], "line 2", "not a valid date"),
        (
            [gnt_row("2020.01.01_00.00.05", "5"), gnt_row("2020.01.01_00.00.04", "5")],
            "line 3",
            "backwards",
        ),
        (
            [gnt_row("2020.01.01_00.00.00", "5"), gnt_row("2020.01.01_00.00.01", "-7")],
            "line 3",
            "negative",
        ),
        (
            [gnt_row("2020.01.01_00.00.00", "5"), gnt_row("2020.01.01_00.00.01", "7k")],
            "line 3",
            "unparsable",
        ),
        (
            [gnt_row("2020.01.01_00.00.00", "-"), gnt_row("2020.01.01_00.00.01", "-")],
            "DL_bitrate",
            "missing",
        ),
        (
            [gnt_row("2020.01.01_00.00.00", "0"), gnt_row("2020.01.01_00.00.01", "0")],
            "DL_bitrate",
            "zero",
        ),
        ([], None, "no data rows"),
    ],
)
def test_gnettrack_bad_files(tmp_path, rows, field, words):
    path = _gnt(tmp_path, rows)
    err = config_error(read_trace, path, "gnettrack")
    assert err.source == str(path)
    assert err.field == field
    assert words in err.message


def test_gnettrack_header_without_timestamp(tmp_path):
    path = _gnt(tmp_path, ["1,2"], header="Time,DL_bitrate")
    err = config_error(read_trace, path, "gnettrack")
    assert err.field == "line 1" and "Timestamp" in err.message


def _gnettrack_plain(path: Path, column: str = "DL_bitrate") -> tuple[float, float]:
    by_second: dict[dt.datetime, list[float]] = {}
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row[column] in ("-", ""):
                continue
            when = dt.datetime.strptime(row["Timestamp"], "%Y.%m.%d_%H.%M.%S")
            by_second.setdefault(when, []).append(float(row[column]) * 1000.0)
    seconds = sorted(by_second)
    bits, prev = 0.0, seconds[0] - dt.timedelta(seconds=1)
    for s in seconds:
        vals = by_second[s]
        bits += (s - prev).total_seconds() * sum(vals) / len(vals)
        prev = s
    duration = (seconds[-1] - seconds[0]).total_seconds() + 1.0
    return duration, bits / duration


@pytest.mark.parametrize(
    "rel",
    [
        "ucc-5g-cork/Download/Static/B_2019.12.16_13.40.04.csv",
        "ucc-5g-cork/Download/Driving/B_2020.02.13_15.02.01.csv",
        "ucc-5g-cork/Download/Driving/B_2020.01.16_12.10.03.csv",
    ],
)
def test_gnettrack_real_files_match_plain_python(shared_file, rel):
    path = shared_file(rel)
    tr = read_trace(path)
    duration, mean = _gnettrack_plain(path)
    assert tr.duration_s == pytest.approx(duration)
    assert tr.mean_bps == pytest.approx(mean, rel=1e-9)
    n = int(tr.duration_s * 10) + 25
    caps, wrapped = tr.resample(0.1, n)
    assert wrapped
    assert caps.sum() * 0.1 == pytest.approx(volume_over(tr, n * 0.1), rel=1e-9)


def test_gnettrack_means_in_readme_ranges(traces_dir):
    # README: per-file mean DL_bitrate about 2.9-121 Mbit/s (driving), 43-121 (static); this
    # checks the kbit/s reading (a Mbit/s or bit/s mistake is off by 1000).
    files = sorted((traces_dir / "ucc-5g-cork").rglob("*.csv"))
    if not files:
        pytest.skip("no Cork CSVs")
    for path in files:
        mean = read_trace(path).mean_bps / 1e6
        assert 2.9 * 0.9 <= mean <= 121 * 1.1, (path.name, mean)


# -- NUWiNS -----------------------------------------------------------------------------------

NUWINS_RULE = "###############################"


def _nuwins(tmp_path: Path, blocks: list[tuple[str, list[str]]], lead: str = "\n") -> Path:
    text = lead + "".join(
        f"{NUWINS_RULE}\n{head}\n" + "".join(f"{d}\n" for d in data) for head, data in blocks
    )
    return write(tmp_path, "n.list", text)


def test_nuwins_one_line_runs_are_100ms_samples_in_run_order(tmp_path):
    path = _nuwins(tmp_path, [("Run 2", ["4,5"]), ("Run 1", ["1,2,3"])])
    tr = read_trace(path)
    assert tr.format == "nuwins"
    assert np.allclose(tr.edges_s, np.arange(6) * 0.1)
    assert np.allclose(tr.rate_bps, [1e6, 2e6, 3e6, 4e6, 5e6])
    text = " ".join(tr.notes)
    assert "run-number order" in text and "2, 1" in text and "100 ms" in text


def test_nuwins_pick_one_run(tmp_path):
    path = _nuwins(tmp_path, [("Run 1", ["1,2,3"]), ("Run 2", ["4,5,"])])
    tr = read_trace(f"{path}#run=2")
    assert tr.name == "n.list#run=2" and tr.path == str(path)
    assert np.allclose(tr.rate_bps, [4e6, 5e6])
    err = config_error(read_trace, f"{path}#run=7")
    assert err.field == "run" and "1, 2" in err.message
    err = config_error(read_trace, f"{path}#run=x")
    assert err.field == "run"
    other = write(tmp_path, "two", "0 1\n1 2\n")
    assert config_error(read_trace, f"{other}#run=1").field == "run"


def test_nuwins_four_line_runs_use_the_time_axis(tmp_path):
    path = _nuwins(
        tmp_path,
        [
            ("Run 1", ["0.1,0.2,0.3,0.5", "1,2,3,4", "0.0,0.1", "9,9"]),
            ("Run 2", ["18.7,18.8", "5,6", "0.0", "9"]),
        ],
    )
    tr = read_trace(path)
    # run 1: 0.1 s each, the 0.3-0.5 gap held by the next sample; run 2: 0.1 s each
    assert np.allclose(tr.edges_s, [0.0, 0.1, 0.2, 0.3, 0.5, 0.6, 0.7])
    assert np.allclose(tr.rate_bps, [1e6, 2e6, 3e6, 4e6, 5e6, 6e6])
    assert any("ignored" in n for n in tr.notes)


@pytest.mark.parametrize(
    "blocks, field, words",
    [
        ([("Run 1", ["1,2,x,4"])], "line 4", "value 3"),
        ([("Run 1", ["1,2,-3"])], "line 4", "negative"),
        ([("Run 1", [])], "line 3", "no data"),
        ([("Run 1", ["1,2"]), ("Run 1", ["3"])], "line 6", "twice"),
        ([("Run 1", ["0.1,0.2,0.3", "1,2"])], "line 5", "has 3 values"),
        ([("Run 1", ["0.1,0.3,0.2", "1,2,3"])], "line 4", "backwards"),
        ([("Run 1", ["0,0,0"])], None, "zero"),
    ],
)
def test_nuwins_bad_files(tmp_path, blocks, field, words):
    path = _nuwins(tmp_path, blocks)
    err = config_error(read_trace, path, "nuwins")
    assert err.source == str(path)
    assert err.field == field
    assert words in err.message


def test_nuwins_data_outside_a_run(tmp_path):
    path = write(tmp_path, "n.list", f"{NUWINS_RULE}\n1,2,3\n")
    err = config_error(read_trace, path, "nuwins")
    assert err.field == "line 2" and "Run" in err.message


def _nuwins_plain(path: Path) -> tuple[float, float]:
    runs: dict[int, list[str]] = {}
    current = None
    for line in path.read_text().splitlines():
        s = line.strip()
        if not s or set(s) == {"#"}:
            continue
        if s.startswith("Run "):
            current = runs.setdefault(int(s.split()[1]), [])
            continue
        current.append(s)
    bits = duration = 0.0
    for k in sorted(runs):
        data = runs[k]
        if len(data) == 1:
            vals = [float(x) for x in data[0].split(",")]
            bits += sum(vals) * 1e6 * 0.1
            duration += 0.1 * len(vals)
        else:
            times = [float(x) for x in data[0].split(",")]
            vals = [float(x) for x in data[1].split(",")]
            step = statistics.median(b - a for a, b in zip(times, times[1:], strict=False))
            first = min(step, times[0])
            bits += first * vals[0] * 1e6
            for i in range(1, len(times)):
                bits += (times[i] - times[i - 1]) * vals[i] * 1e6
            duration += times[-1] - times[0] + first
    return duration, bits / duration


@pytest.mark.parametrize(
    "rel",
    [
        "nuwins-5g-mmwave-uplink/throughput/static/5g/away_p1.list",
        "nuwins-5g-mmwave-uplink/throughput/static/lte/toward_p2.list",
        "nuwins-5g-mmwave-uplink/throughput/walking/5g/away.list",
        "nuwins-5g-mmwave-uplink/throughput/walking/5g/lateral.list",
        "nuwins-5g-mmwave-uplink/throughput/driving/5g/throughput.list",
        "nuwins-5g-mmwave-uplink/throughput/driving/lte/throughput.list",
    ],
)
def test_nuwins_real_files_match_plain_python(shared_file, rel):
    path = shared_file(rel)
    tr = read_trace(path)
    duration, mean = _nuwins_plain(path)
    assert tr.duration_s == pytest.approx(duration, rel=1e-9)
    assert tr.mean_bps == pytest.approx(mean, rel=1e-9)
    n = int(tr.duration_s * 10) + 7
    caps, wrapped = tr.resample(0.1, n)
    assert wrapped
    assert caps.sum() * 0.1 == pytest.approx(volume_over(tr, n * 0.1), rel=1e-9)


def test_nuwins_static_runs_have_readme_lengths(shared_file):
    path = shared_file("nuwins-5g-mmwave-uplink/throughput/static/5g/toward_p1.list")
    for k in range(1, 7):
        tr = read_trace(f"{path}#run={k}")
        assert 110 <= tr.rate_bps.size <= 180  # README: about 120-175 samples a run
        assert tr.duration_s == pytest.approx(tr.rate_bps.size * 0.1)
    lte = read_trace(shared_file("nuwins-5g-mmwave-uplink/throughput/static/lte/away_p1.list"))
    assert 40e6 <= lte.mean_bps <= 66e6  # LTE saturates at about 46 or 65 Mbit/s


# -- synthetic --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", SYNTHETIC_KINDS)
def test_synthetic_same_seed_same_trace(kind):
    a = synthetic_uplink(120.0, 7, kind=kind)
    b = synthetic_uplink(120.0, 7, kind=kind)
    c = synthetic_uplink(120.0, 8, kind=kind)
    assert np.array_equal(a.rate_bps, b.rate_bps) and np.array_equal(a.edges_s, b.edges_s)
    assert not np.array_equal(a.rate_bps, c.rate_bps)
    assert a.format == "synthetic" and a.path is None
    assert kind in a.name and "seed=7" in a.name


@pytest.mark.parametrize("kind", SYNTHETIC_KINDS)
def test_synthetic_long_run_mean(kind):
    tr = synthetic_uplink(20_000.0, 1, mean_bps=8e6, kind=kind)
    assert tr.mean_bps == pytest.approx(8e6, rel=0.04)
    assert np.all(tr.rate_bps >= 0.0)
    assert np.allclose(np.diff(tr.edges_s), 0.1)


def test_synthetic_mean_is_a_pure_scale():
    a = synthetic_uplink(300.0, 5, mean_bps=8e6)
    b = synthetic_uplink(300.0, 5, mean_bps=16e6)
    assert np.allclose(b.rate_bps, 2.0 * a.rate_bps, rtol=1e-12)


def test_synthetic_duration_not_a_multiple_of_the_step():
    tr = synthetic_uplink(12.34, 0)
    assert tr.duration_s == 12.34
    assert tr.rate_bps.size == 124
    assert tr.edges_s[-2] == pytest.approx(12.3)
    tiny = synthetic_uplink(0.05, 0)
    assert tiny.rate_bps.size == 1 and tiny.duration_s == 0.05


def test_synthetic_kinds_have_their_character():
    lte = synthetic_uplink(5_000.0, 2, mean_bps=20e6, kind="markov-lte").rate_bps
    mmw = synthetic_uplink(5_000.0, 2, mean_bps=20e6, kind="5g-mmwave").rate_bps
    wifi = synthetic_uplink(5_000.0, 2, mean_bps=20e6, kind="wifi").rate_bps

    def lag_corr(x: np.ndarray, lag: int) -> float:
        return float(np.corrcoef(x[:-lag], x[lag:])[0, 1])

    # Markov states last seconds: capacity one second apart is still correlated
    assert lag_corr(lte, 10) > 0.3
    # mmWave blockage: a visible share of slots far below the mean
    assert np.mean(mmw < 0.1 * 20e6) > 0.03
    assert np.mean(wifi < 0.1 * 20e6) < np.mean(mmw < 0.1 * 20e6)
    # Wi-Fi is the steadiest of the three
    cv = {name: x.std() / x.mean() for name, x in (("lte", lte), ("mmw", mmw), ("wifi", wifi))}
    assert cv["wifi"] < cv["mmw"] < cv["lte"]


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(duration_s=0.0, seed=0), "duration_s"),
        (dict(duration_s=math.nan, seed=0), "duration_s"),
        (dict(duration_s=10.0, seed=0, mean_bps=-1.0), "mean_bps"),
        (dict(duration_s=10.0, seed=0, mean_bps=math.inf), "mean_bps"),
        (dict(duration_s=10.0, seed=0, kind="lte"), "kind"),
        (dict(duration_s=10.0, seed=-1), None),
        (dict(duration_s=10.0, seed=1.5), None),
        (dict(duration_s=10.0, seed=True), None),
    ],
)
def test_synthetic_bad_arguments(kwargs, field):
    assert config_error(synthetic_uplink, **kwargs).field == field


# -- load_trace -------------------------------------------------------------------------------


def test_load_trace_synthetic_specs():
    default = load_trace(None, seed=4, duration_s=30.0)
    assert np.array_equal(default.rate_bps, synthetic_uplink(30.0, 4).rate_bps)
    assert np.array_equal(
        load_trace("synthetic", seed=4, duration_s=30.0).rate_bps, default.rate_bps
    )
    named = load_trace("synthetic:markov-lte", seed=4, duration_s=30.0)
    assert np.array_equal(named.rate_bps, default.rate_bps)
    wifi = load_trace("synthetic:wifi?mean_mbps=8&duration_s=60&seed=3", seed=99)
    ref = synthetic_uplink(60.0, 3, 8e6, "wifi")
    assert np.array_equal(wifi.rate_bps, ref.rate_bps)
    assert load_trace("synthetic?mean_mbps=2", duration_s=10.0).duration_s == 10.0
    assert load_trace(None).duration_s == 600.0


def test_load_trace_reads_files_and_scales(tmp_path):
    path = write(tmp_path, "t", "0 4\n1 8\n")
    tr = load_trace(str(path), scale=0.25)
    assert tr.mean_bps == pytest.approx(2e6)
    assert any("scaled" in n for n in tr.notes)
    assert load_trace(path, format="two-column").mean_bps == pytest.approx(8e6)
    syn = load_trace("synthetic", scale=2.0, duration_s=20.0)
    assert syn.mean_bps == pytest.approx(2.0 * load_trace("synthetic", duration_s=20.0).mean_bps)


@pytest.mark.parametrize(
    "spec, kwargs, field",
    [
        ("synthetic:lte", {}, "kind"),
        ("synthetic:wifi?speed=3", {}, "speed"),
        ("synthetic:wifi?mean_mbps=fast", {}, "mean_mbps"),
        ("synthetic:wifi?mean_mbps=-2", {}, "mean_mbps"),
        ("synthetic:wifi?duration_s=0", {}, "duration_s"),
        ("synthetic:wifi?seed=1.5", {}, "seed"),
        ("synthetic:wifi?seed", {}, "seed"),
        ("synthetic", {"scale": 0.0}, "scale"),
        ("synthetic", {"scale": math.nan}, "scale"),
        ("", {}, None),
        ("syntheticwifi", {}, None),
    ],
)
def test_load_trace_bad_specs(spec, kwargs, field):
    err = config_error(load_trace, spec, **kwargs)
    assert err.field == field


def test_trace_formats_contract():
    assert TRACE_FORMATS == ("auto", "mahimahi", "two-column", "gnettrack", "nuwins")
    assert len(SYNTHETIC_KINDS) >= 3
