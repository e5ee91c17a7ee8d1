"""Bad configs and profiles: one clear error naming the file and the field."""

from __future__ import annotations

import pytest

from controller.config import ConfigError, configs_dir
from controller.profiles import load_board, load_model, load_network
from simulation.experiment import load_experiment

BOARD = (configs_dir() / "boards" / "jetson-tx2.yaml").read_text()
MODEL = (configs_dir() / "models" / "resnet50.yaml").read_text()


@pytest.mark.parametrize("name", sorted(p.stem for p in (configs_dir() / "boards").glob("*.yaml")))
def test_builtin_boards_load(name):
    b = load_board(name)
    assert list(b.levels_hz) == sorted(b.levels_hz) and len(b.levels_hz) >= 5
    assert (b.busy_power_w() > b.idle_power_w()).all()


@pytest.mark.parametrize("name", sorted(p.stem for p in (configs_dir() / "models").glob("*.yaml")))
def test_builtin_models_load(name):
    m = load_model(name)
    assert len(m.offered) >= 2


def test_builtin_networks_and_experiments_load():
    for p in (configs_dir() / "network").glob("*.yaml"):
        load_network(p)
    load_experiment("default")


def error_of(loader, tmp_path, text, name="x.yaml") -> str:
    p = tmp_path / name
    p.write_text(text) if isinstance(text, str) else p.write_bytes(text)
    with pytest.raises(ConfigError) as exc:
        loader(p)
    msg = str(exc.value)
    assert "\n" not in msg
    assert str(p) in msg
    return msg


@pytest.mark.parametrize(
    "change, field",
    [
        (("levels_hz: [140250000", "levels_hz: [-140250000"), "gpu.levels_hz[0]"),
        (("cuda_cores: 256", "cuda_cores: many"), "gpu.cuda_cores"),
        (("efficiency: 0.3", "efficiency: 1.7"), "compute.efficiency"),
        (("switch_latency_s: 0.001", "switch_latency_ms: 1"), "gpu.switch_latency_ms"),
        (("busy_w_poly_ghz: [3.77, 6.1, 0.0, 0.64]", "busy_w_poly_ghz: [1.0]"), "idle_w_poly_ghz"),
        (("clock_bound_fraction: 0.85", "clock_bound_fraction: .nan"), "compute.clock_bound_fraction"),
    ],
)
def test_bad_board_names_field(tmp_path, change, field):
    old, new = change
    assert old in BOARD
    msg = error_of(load_board, tmp_path, BOARD.replace(old, new))
    assert field in msg


def test_descending_levels(tmp_path):
    msg = error_of(load_board, tmp_path, BOARD.replace("[140250000, 229500000", "[229500000, 140250000"))
    assert "gpu.levels_hz" in msg and "ascending" in msg


@pytest.mark.parametrize(
    "text, words",
    [
        ("", "empty"),
        ("- a\n- b\n", "mapping"),
        ("name: [unclosed\n", "invalid YAML"),
        (b"\x00\x01\xff\xfe junk", "UTF-8"),
        ("!!python/object:os.system {}\n", "invalid YAML"),
    ],
)
def test_unreadable_files(tmp_path, text, words):
    assert words in error_of(load_board, tmp_path, text)


def test_missing_file_and_unknown_name(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_board(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="built-in: .*jetson-tx2"):
        load_board("jetson-tx9")


@pytest.mark.parametrize(
    "old, new, field",
    [
        ("bytes: 602112", "bytes: -5", "cuts[0].bytes"),
        ("head_flops: 0,", "head_flops: 1e9,", "cuts[0]"),
        ("dtype: float32", "dtype: [float32]", "dtype"),
    ],
)
def test_bad_model_profile(tmp_path, old, new, field):
    assert old in MODEL
    assert field in error_of(load_model, tmp_path, MODEL.replace(old, new, 1))


@pytest.mark.parametrize(
    "text, field",
    [
        ("slot_s: -0.1\n", "slot_s"),
        ("slot_ms: 100\n", "slot_ms"),
        ("arrivals: {process: drone}\n", "arrivals.process"),
        ("arrivals: {process: trace}\n", "arrivals.path"),
        ("controller: {V: -3}\n", "controller.V"),
        ("controller: {energy_budget_w: 0}\n", "controller.energy_budget_w"),
        ("controller: {dvfs: maybe}\n", "controller.dvfs"),
        ("controller: {multipliers: maybe}\n", "controller.multipliers"),
        ("controller: {multiplier_gain: 0}\n", "controller.multiplier_gain"),
        ("controller: {multiplier_window_slots: 0.5}\n", "controller.multiplier_window_slots"),
        ("controller: {latency_weight_per_s: -1}\n", "controller.latency_weight_per_s"),
        ("controller: {arrival_ewma: 1.5}\n", "controller.arrival_ewma"),
        ("controller: {arrival_phase: sometimes}\n", "controller.arrival_phase"),
        ("controller: {uplink_age: often}\n", "controller.uplink_age"),
        ("controller: {bit_pricing: true}\n", "bit_pricing"),
        ("trace: {format: pcap}\n", "trace.format"),
        ("input_bytes: lots\n", "input_bytes"),
        ("seed: -1\n", "seed"),
    ],
)
def test_bad_experiment(tmp_path, text, field):
    assert field in error_of(load_experiment, tmp_path, text)


def _measured_profile(tmp_path, board, *, levels, head_by_level, idle, busy, extra=""):
    """A resnet50-like profile measured on ``board`` at ``levels`` (per-level lists given)."""
    import yaml

    base = yaml.safe_load((configs_dir() / "models" / "mobilenet_v2.yaml").read_text())
    base["provenance"].update(method="measured", board=board.name, clock_hz=levels[-1])
    base["levels_hz"] = levels
    for i, c in enumerate(base["cuts"]):
        if i == 0:
            continue
        c["head_s_by_level"] = [h * (i + 1) if h is not None else None for h in head_by_level]
        c["head_s"] = c["head_s_by_level"][-1]
        c["head_j_by_level"] = [None] * len(levels)
    base["power"] = {"rail": "VDD_GPU_SOC", "idle_w": idle, "busy_w": busy}
    path = tmp_path / "measured.yaml"
    path.write_text(yaml.safe_dump(base) + extra)
    return path


def test_measured_per_level_tables_replace_the_fitted_curves(tmp_path):
    from controller.model import SystemModel

    board = load_board("jetson-orin-nano")
    lv = list(board.levels_hz)
    lo, hi = lv[0], lv[-1]
    path = _measured_profile(tmp_path, board, levels=[lo, hi], head_by_level=[0.02, 0.01],
                             idle=[2.0, 3.0], busy=[4.0, 7.0])
    prof = load_model(path)
    assert prof.levels_hz == (lo, hi) and prof.power.rail == "VDD_GPU_SOC"
    sysm = SystemModel.build(board, prof, load_network("lte-shannon"), 0.1)
    # measured levels: the file's values exactly
    assert sysm.head_s[1, 0] == pytest.approx(0.04) and sysm.head_s[1, -1] == pytest.approx(0.02)
    assert sysm.idle_w[0] == pytest.approx(2.0) and sysm.busy_w[-1] == pytest.approx(7.0)
    # a level between: the fitted curve, scaled to the nearest measured level (so it lies
    # between the measured ends for a monotone fit)
    mid = len(lv) // 2
    assert 0.02 <= sysm.head_s[1, mid] <= 0.04
    assert sysm.head_s[0].max() == 0.0  # the input cut has no head
    # another board: the measured lists do not apply
    other = SystemModel.build(load_board("jetson-nano"), prof, load_network("lte-shannon"), 0.1)
    assert other.idle_w[0] != pytest.approx(2.0)


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"head_by_level": [0.02], "idle": [2.0, 3.0], "busy": [4.0, 7.0]}, "head_s_by_level"),
        ({"head_by_level": [0.02, -1.0], "idle": [2.0, 3.0], "busy": [4.0, 7.0]}, "head_s_by_level[1]"),
        ({"head_by_level": [0.02, 0.01], "idle": [5.0, 3.0], "busy": [4.0, 7.0]}, "idle_w[0]"),
        ({"head_by_level": [0.02, 0.01], "idle": [2.0, "x"], "busy": [4.0, 7.0]}, "idle_w[1]"),
    ],
)
def test_bad_measured_lists_name_the_field(tmp_path, kw, field):
    board = load_board("jetson-orin-nano")
    path = _measured_profile(tmp_path, board, levels=[board.levels_hz[0], board.levels_hz[-1]], **kw)
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        load_model(path)
