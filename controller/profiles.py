"""Board, model and network profiles: the data the controller and the simulator work from.

All three are YAML files under ``configs/`` (or any path), validated on load into frozen
dataclasses. Units are SI inside: Hz, s, W, J, bit/s, bytes where a field says ``bytes``.

Model profile schema (``configs/models/*.yaml``; ``cutedge profile`` writes the same):

```yaml
model: resnet50                 # name (torchvision name or import path)
input_shape: [3, 224, 224]      # one input, without the batch dimension
dtype: float32                  # dtype of the tensors that cross a cut
result_bytes: 4000              # bytes of the final output
provenance:                     # where the numbers come from
  method: flops-estimate        # or: measured
  device: ...                   # device head_s was taken on (or estimated for)
  board: null                   # a configs/boards name when head_s was measured on that board
  clock_hz: null                # GPU clock at which head_s holds (measured profiles)
  edge_device: ...              # device tail_s was taken on (or estimated for)
  torch: ..., date: ..., generator: ...
  compression: int8             # optional: float16 | int8, when bytes are compressed wire bytes
dropped_cuts: 172               # optional: dominated candidate cuts left out of `cuts`
cuts:                           # in topological order; cut 0 sends the input, the last one
  - name: input                 # keeps everything on the device
    index: 0                    # optional: the cut's number among all candidates of the
                                #   partitioner (dnn_split), as the agents name it
    bytes: 602112               # bytes of all tensors crossing the cut, one input
    tensors: 1                  # how many tensors cross
    head_flops: 0               # FLOPs of everything before the cut
    tail_flops: 8.2e9           # FLOPs of everything after it
    head_s: 0.0                 # head time on provenance.device (at provenance.clock_hz)
    tail_s: 0.0041              # tail time on provenance.edge_device
    offered: true               # false: dominated, listed for the record, not a choice
    max_abs_error: 0.0          # optional: accuracy cost of provenance.compression at this cut
    head_s_by_level: [...]      # optional (cutedge profile --levels): median head time at each
                                #   of levels_hz (null: not measured); head_s is then the time at
                                #   provenance.clock_hz
    head_p90_s_by_level: [...]  # optional: 90th percentile of the same
    head_j_by_level: [...]      # optional: energy of one head above idle at each level (J)
levels_hz: [...]                # optional: the GPU levels the per-level lists are measured at
power:                          # optional: measured with the profile, per entry of levels_hz
  rail: VDD_GPU_SOC             # the power meter read (rail name or "total")
  idle_w: [...]                 # board power while the GPU waits (null: not measured)
  busy_w: [...]                 # board power while heads run: idle + head energy / head time
unmeasured: [...]               # optional: one line per thing that could not be measured
```

A profile with ``levels_hz`` is used as measured: at a board level it lists, head times and
powers come from the file; at a level it does not list (or lists as null) they follow the
board's fitted curves, scaled to agree with the nearest measured level.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from controller.config import ConfigError, Section, load_yaml, resolve_named

GIGA = 1e9


def _poly_ghz(coeffs: tuple[float, ...], f_hz: np.ndarray) -> np.ndarray:
    x = np.asarray(f_hz, dtype=float) / GIGA
    return sum(c * x**k for k, c in enumerate(coeffs))


@dataclass(frozen=True)
class BoardProfile:
    """A Jetson-class board: GPU levels, speed and power model.

    Latency model (fits in ``../shared/boards/jetson.md`` section 4.2): the head's time at clock
    ``f`` is ``t(f) = t_max * (phi * f_max / f + 1 - phi)``; ``phi`` (``clock_bound_fraction``) is
    the share of the time at ``f_max`` that scales with 1/f, the rest is memory-bound. Without a
    measured profile, ``t_max = flops / (2 * cuda_cores * f_max * efficiency)``.

    Power model: board power while the GPU computes is ``busy(f) = sum_k c_k (f/GHz)^k`` and
    while it waits ``idle(f)``, both polynomials in GHz.
    """

    name: str
    description: str
    levels_hz: tuple[int, ...]
    cuda_cores: int
    efficiency: float
    clock_bound_fraction: float
    switch_latency_s: float
    busy_w_poly_ghz: tuple[float, ...]
    idle_w_poly_ghz: tuple[float, ...]
    devfreq_names: tuple[str, ...] = ()
    source: str = ""

    @property
    def f_max_hz(self) -> int:
        return self.levels_hz[-1]

    @property
    def levels(self) -> np.ndarray:
        return np.asarray(self.levels_hz, dtype=float)

    def busy_power_w(self, f_hz=None) -> np.ndarray:
        return _poly_ghz(self.busy_w_poly_ghz, self.levels if f_hz is None else f_hz)

    def idle_power_w(self, f_hz=None) -> np.ndarray:
        return _poly_ghz(self.idle_w_poly_ghz, self.levels if f_hz is None else f_hz)

    def clock_scale(self, f_hz=None) -> np.ndarray:
        """Time at ``f`` relative to the time at ``f_max``."""
        f = self.levels if f_hz is None else np.asarray(f_hz, dtype=float)
        phi = self.clock_bound_fraction
        return phi * self.f_max_hz / f + (1.0 - phi)

    def time_at_max_s(self, flops) -> np.ndarray:
        peak = 2.0 * self.cuda_cores * self.f_max_hz * self.efficiency
        return np.asarray(flops, dtype=float) / peak


@dataclass(frozen=True)
class Cut:
    name: str
    bytes: int
    tensors: int
    head_flops: float
    tail_flops: float
    head_s: float
    tail_s: float
    offered: bool = True
    head_s_by_level: tuple[float | None, ...] | None = None  # per ModelProfile.levels_hz
    head_j_by_level: tuple[float | None, ...] | None = None


@dataclass(frozen=True)
class MeasuredPower:
    """Board power per measured level (``ModelProfile.levels_hz``); None where not measured."""

    rail: str
    idle_w: tuple[float | None, ...]
    busy_w: tuple[float | None, ...]


def _nearest_measured(levels_hz: tuple[int, ...], values, f_hz: float) -> int | None:
    """Index of the measured level nearest ``f_hz`` (in log frequency) with a value, or None."""
    best, best_d = None, math.inf
    for i, (lv, v) in enumerate(zip(levels_hz, values)):
        if v is None:
            continue
        d = abs(math.log(lv / f_hz))
        if d < best_d - 1e-12:
            best, best_d = i, d
    return best


def follow_measured(levels_hz: tuple[int, ...], values, f_hz: np.ndarray, fitted: np.ndarray) -> np.ndarray:
    """Per board level: the measured value at that level, else the fitted curve scaled to agree
    with the nearest measured level (the fitted curve alone if nothing was measured)."""
    out = np.array(fitted, dtype=float)
    exact = {lv: v for lv, v in zip(levels_hz, values) if v is not None}
    for j, f in enumerate(np.asarray(f_hz, dtype=float)):
        if int(round(f)) in exact:
            out[j] = exact[int(round(f))]
            continue
        i = _nearest_measured(levels_hz, values, float(f))
        if i is not None:
            ref_fit = np.interp(levels_hz[i], f_hz, fitted)
            out[j] = fitted[j] * values[i] / ref_fit if ref_fit > 0 else values[i]
    return out


@dataclass(frozen=True)
class ModelProfile:
    """Per-cut sizes and times of one DNN; see the module docstring for the file schema."""

    model: str
    input_shape: tuple[int, ...]
    dtype: str
    result_bytes: int
    cuts: tuple[Cut, ...]
    provenance: dict = field(default_factory=dict)
    source: str = ""
    levels_hz: tuple[int, ...] | None = None  # measured levels of the per-level lists
    power: MeasuredPower | None = None
    unmeasured: tuple[str, ...] = ()

    @property
    def offered(self) -> tuple[Cut, ...]:
        return tuple(c for c in self.cuts if c.offered)

    def head_times_s(self, board: BoardProfile) -> np.ndarray:
        """T_loc[p, f] for the offered cuts on ``board`` at each of its levels (s)."""
        cuts = self.offered
        measured_on = self.provenance.get("board")
        clock = self.provenance.get("clock_hz")
        if measured_on == board.name and clock:
            at_ref = np.array([c.head_s for c in cuts])
            scale = board.clock_scale() / board.clock_scale(float(clock))
            fitted = at_ref[:, None] * scale[None, :]
        else:
            at_max = board.time_at_max_s([c.head_flops for c in cuts])
            fitted = at_max[:, None] * board.clock_scale()[None, :]
        if self.levels_hz is None or measured_on != board.name:
            return fitted
        return np.stack([
            fitted[i] if c.head_s_by_level is None or i == 0
            else follow_measured(self.levels_hz, c.head_s_by_level, board.levels, fitted[i])
            for i, c in enumerate(cuts)
        ])

    def busy_idle_w(self, board: BoardProfile) -> tuple[np.ndarray, np.ndarray]:
        """Board power while heads run and while the GPU waits, per level of ``board`` (W):
        measured where this profile measured it on this board, the board's curves elsewhere."""
        busy, idle = board.busy_power_w(), board.idle_power_w()
        if self.power is None or self.levels_hz is None or self.provenance.get("board") != board.name:
            return busy, idle
        idle = follow_measured(self.levels_hz, self.power.idle_w, board.levels, idle)
        busy = follow_measured(self.levels_hz, self.power.busy_w, board.levels, busy)
        return np.maximum(busy, idle), idle

    def tail_times_s(self, edge_speedup: float = 1.0) -> np.ndarray:
        return np.array([c.tail_s for c in self.offered]) / edge_speedup

    def wire_bits(self) -> np.ndarray:
        """D(p) in bits for the offered cuts; the last cut keeps the result on the device."""
        bits = np.array([8.0 * c.bytes for c in self.offered])
        bits[-1] = 0.0
        return bits


@dataclass(frozen=True)
class NetworkProfile:
    """Uplink power model and the fixed parts of the path to the edge.

    ``shannon``: the trace's capacity C is what the radio gets at full power ``max_power_w``
    over bandwidth W; sending at r <= C costs ``P_max (2^(r/W) - 1) / (2^(C/W) - 1)``.
    ``linear`` (Huang et al., MobiSys 2012): ``alpha * r + beta`` while sending.
    """

    name: str
    model: str
    max_power_w: float = 0.0
    bandwidth_hz: float = 0.0
    alpha_w_per_bps: float = 0.0
    beta_w: float = 0.0
    rtt_s: float = 0.0
    downlink_bps: float = 0.0
    source: str = ""


# -- loading -------------------------------------------------------------------------------------


def _source_text(sec: Section) -> str:
    return str(sec.raw("source", ""))


def load_board(name_or_path: str | os.PathLike[str]) -> BoardProfile:
    path = resolve_named("boards", str(name_or_path))
    s = load_yaml(path)
    s.check_keys(["name", "description", "devfreq_names", "gpu", "compute", "power"])
    gpu = s.section("gpu")
    gpu.check_keys(["levels_hz", "cuda_cores", "switch_latency_s"])
    levels = gpu.numbers("levels_hz", positive=True, ascending=True)
    for i, lv in enumerate(levels):
        if not float(lv).is_integer():
            raise gpu.error(f"levels_hz[{i}]", f"must be a whole number of Hz, got {lv}")
    comp = s.section("compute")
    comp.check_keys(["efficiency", "clock_bound_fraction"])
    power = s.section("power")
    power.check_keys(["busy_w_poly_ghz", "idle_w_poly_ghz"])
    busy = tuple(power.numbers("busy_w_poly_ghz"))
    idle = tuple(power.numbers("idle_w_poly_ghz"))
    names = s.raw("devfreq_names", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise s.error("devfreq_names", "expected a list of strings")
    board = BoardProfile(
        name=s.string("name"),
        description=s.string("description", ""),
        levels_hz=tuple(int(v) for v in levels),
        cuda_cores=gpu.integer("cuda_cores", min=1),
        efficiency=comp.number("efficiency", positive=True, max=1.0),
        clock_bound_fraction=comp.number("clock_bound_fraction", min=0.0, max=1.0),
        switch_latency_s=gpu.number("switch_latency_s", min=0.0, max=1.0),
        busy_w_poly_ghz=busy,
        idle_w_poly_ghz=idle,
        devfreq_names=tuple(names),
        source=str(path),
    )
    busy_w, idle_w = board.busy_power_w(), board.idle_power_w()
    for i, f in enumerate(board.levels_hz):
        if not (busy_w[i] > 0 and idle_w[i] > 0):
            raise power.error(None, f"power model gives a non-positive power at {f} Hz")
        if idle_w[i] > busy_w[i]:
            raise power.error("idle_w_poly_ghz", f"idle power {idle_w[i]:.2f} W exceeds busy power {busy_w[i]:.2f} W at {f} Hz")
    return board


def load_model(name_or_path: str | os.PathLike[str]) -> ModelProfile:
    path = resolve_named("models", str(name_or_path))
    return model_from_section(load_yaml(path))


def model_from_mapping(data: dict, source: str = "model profile") -> ModelProfile:
    """A :class:`ModelProfile` from a mapping in the file schema (e.g. what the profiler built)."""
    return model_from_section(Section(data, source))


def model_from_section(s: Section) -> ModelProfile:
    path = s.source
    s.check_keys(["model", "input_shape", "dtype", "result_bytes", "provenance", "cuts", "dropped_cuts",
                  "levels_hz", "power", "unmeasured"])
    shape = s.numbers("input_shape", positive=True)
    s.integer("dropped_cuts", 0, min=0)
    levels = None
    if s.raw("levels_hz", None) is not None:
        levels = tuple(int(v) for v in s.numbers("levels_hz", positive=True, ascending=True))
    cuts = []
    for c in s.sections("cuts"):
        c.check_keys(["name", "index", "bytes", "tensors", "head_flops", "tail_flops", "head_s", "tail_s", "offered",
                      "max_abs_error", "head_s_by_level", "head_p90_s_by_level", "head_j_by_level"])
        c.integer("index", 0, min=0)
        c.number("max_abs_error", 0.0, min=0.0)
        by_level = {k: _per_level(c, k, levels) for k in ("head_s_by_level", "head_p90_s_by_level", "head_j_by_level")}
        cuts.append(
            Cut(
                name=c.string("name"),
                bytes=c.integer("bytes", min=0),
                tensors=c.integer("tensors", 1, min=0),
                head_flops=c.number("head_flops", min=0.0),
                tail_flops=c.number("tail_flops", min=0.0),
                head_s=c.number("head_s", min=0.0),
                tail_s=c.number("tail_s", min=0.0),
                offered=c.boolean("offered", True),
                head_s_by_level=by_level["head_s_by_level"],
                head_j_by_level=by_level["head_j_by_level"],
            )
        )
    power = None
    if s.raw("power", None) is not None:
        if levels is None:
            raise s.error("power", "measured power needs levels_hz (the levels it was measured at)")
        ps = s.section("power")
        ps.check_keys(["rail", "idle_w", "busy_w"])
        idle_w, busy_w = _per_level(ps, "idle_w", levels), _per_level(ps, "busy_w", levels)
        for i, (lv, bi, bb) in enumerate(zip(levels, idle_w or (), busy_w or ())):
            if bi is not None and bb is not None and bi > bb * 1.0001:
                raise ps.error(f"idle_w[{i}]", f"idle power {bi:.3f} W exceeds busy power {bb:.3f} W at {lv} Hz")
        power = MeasuredPower(ps.string("rail", "unknown"), idle_w or (None,) * len(levels),
                              busy_w or (None,) * len(levels))
    unmeasured = s.raw("unmeasured", [])
    if not isinstance(unmeasured, list) or not all(isinstance(u, str) for u in unmeasured):
        raise s.error("unmeasured", "expected a list of strings")
    prov = s.raw("provenance", {})
    if not isinstance(prov, dict):
        raise s.error("provenance", "expected a mapping")
    profile = ModelProfile(
        model=s.string("model"),
        input_shape=tuple(int(v) for v in shape),
        dtype=s.string("dtype", "float32"),
        result_bytes=s.integer("result_bytes", min=0),
        cuts=tuple(cuts),
        provenance=dict(prov),
        source=str(path),
        levels_hz=levels,
        power=power,
        unmeasured=tuple(unmeasured),
    )
    offered = profile.offered
    if len(offered) < 2:
        raise s.error("cuts", "at least two offered cuts are needed (the input and the full model)")
    if offered[0].head_flops != 0 or offered[0].head_s != 0:
        raise s.error("cuts[0]", "the first offered cut must send the input (head_flops and head_s 0)")
    if offered[-1].tail_flops != 0 or offered[-1].tail_s != 0:
        raise s.error(f"cuts[{len(cuts) - 1}]", "the last offered cut must run the whole model (tail_flops and tail_s 0)")
    flops = [c.head_flops for c in offered]
    if any(b < a for a, b in zip(flops, flops[1:])):
        raise s.error("cuts", "head_flops must not decrease along the cuts")
    return profile


def _per_level(sec: Section, key: str, levels: tuple[int, ...] | None) -> tuple[float | None, ...] | None:
    """An optional list with one entry per measured level: non-negative numbers or null."""
    raw = sec.raw(key, None)
    if raw is None:
        return None
    if levels is None:
        raise sec.error(key, "a per-level list needs levels_hz at the top of the profile")
    if not isinstance(raw, list) or len(raw) != len(levels):
        raise sec.error(key, f"expected a list of {len(levels)} values (one per levels_hz entry) or nulls")
    out: list[float | None] = []
    for i, v in enumerate(raw):
        if v is None:
            out.append(None)
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0:
            out.append(float(v))
        else:
            raise sec.error(f"{key}[{i}]", f"expected a number >= 0 or null, got {v!r}")
    return tuple(out)


def load_network(name_or_path: str | os.PathLike[str]) -> NetworkProfile:
    path = resolve_named("network", str(name_or_path))
    s = load_yaml(path)
    s.check_keys(["name", "model", "shannon", "linear", "rtt_s", "downlink_bps"])
    model = s.string("model", choices=("shannon", "linear"))
    common = dict(
        name=s.string("name"),
        model=model,
        rtt_s=s.number("rtt_s", 0.0, min=0.0, max=10.0),
        downlink_bps=s.number("downlink_bps", positive=True),
        source=str(path),
    )
    sub = s.section(model)
    if model == "shannon":
        sub.check_keys(["max_power_w", "bandwidth_hz"])
        return NetworkProfile(
            max_power_w=sub.number("max_power_w", positive=True),
            bandwidth_hz=sub.number("bandwidth_hz", positive=True),
            **common,
        )
    sub.check_keys(["alpha_w_per_bps", "beta_w"])
    return NetworkProfile(
        alpha_w_per_bps=sub.number("alpha_w_per_bps", min=0.0),
        beta_w=sub.number("beta_w", min=0.0),
        **common,
    )


__all__ = [
    "BoardProfile",
    "ConfigError",
    "Cut",
    "MeasuredPower",
    "ModelProfile",
    "NetworkProfile",
    "load_board",
    "load_model",
    "load_network",
    "model_from_mapping",
]
