"""Experiment configs (``configs/experiments/*.yaml``): what one simulation run is made of.

```yaml
name: default
board: jetson-tx2            # configs/boards name or a path
model: resnet50              # configs/models name or a path
network: lte-shannon         # configs/network name or a path
input_bytes: uint8           # what cut 0 sends: tensor (the profile's bytes), uint8 (the camera
                             # frame, C*H*W bytes; normalisation runs on the edge) or a byte count
slot_s: 0.1
duration_s: 300
seed: 1
buffer_frames: 300           # device queue size; frames beyond it are dropped (and counted)
edge_speedup: 1.0            # divides the profile's tail times
devices: 1                   # devices sharing one edge, each with its own camera, controller and
                             # trace (device i: the trace shifted by i/N of the run)
edge: null                   # the shared edge's profile (configs/edges name or a path); null: an
                             # edge that is never a bottleneck with 1 device, agx-orin-fp32 with more
arrivals: {process: camera, rate_fps: 10}     # camera | poisson | trace (+ path)
trace: {path: synthetic, format: auto, column: DL_bitrate, scale: 1.0}
controller:
  V: 30
  queue_unit_bits: null      # default: D(0), the bits of one input frame
  energy_budget_w: null      # average power budget (virtual queue Z_E)
  throughput_floor_fps: null # served frame rate floor (virtual queue Z_T)
  latency_epsilon: null      # epsilon-persistence latency queue Z_L (frames/slot)
  admission_frame_value_j: null   # admission control off unless set
  dvfs: true
  rate_control: true
  virtual_queues: true
  multipliers: true          # offset the queue weights by the learnt prices of a frame and a bit
  multiplier_gain: 0.08      # the bit price's dual step, per frame-equivalent of imbalance
  multiplier_window_slots: 15   # decisions use the bit price averaged over this many slots
  latency_weight_per_s: null # omega, frames/s: weight of a frame-second of latency (null: 1/slot_s)
  arrival_ewma: 0.1          # weight of the last slot in the arrival-rate and arrival-phase estimates
  arrival_phase: true        # count an arriving frame for the head time its own slot gives it
  uplink_age: true           # weigh the uplink's bits by how long the oldest of them has waited
```
Relative paths inside the file are resolved against the file's folder.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from controller.config import ConfigError, Section, load_yaml, resolve_named
from controller.lyapunov import LyapunovConfig, LyapunovController
from controller.model import SystemModel
from controller.profiles import load_board, load_model, load_network
from controller.seeding import make_rng
from simulation.arrivals import ARRIVAL_PROCESSES, ArrivalSpec
from simulation.simulator import SimResult, simulate


@dataclass(frozen=True)
class TraceSpec:
    path: str = "synthetic"
    format: str = "auto"
    column: str = "DL_bitrate"
    scale: float = 1.0


@dataclass(frozen=True)
class Experiment:
    name: str = "default"
    board: str = "jetson-tx2"
    model: str = "resnet50"
    network: str = "lte-shannon"
    input_bytes: str | int = "uint8"
    slot_s: float = 0.1
    duration_s: float = 300.0
    seed: int = 1
    buffer_frames: int = 300
    edge_speedup: float = 1.0
    devices: int = 1
    edge: str | None = None
    arrivals: ArrivalSpec = field(default_factory=ArrivalSpec)
    trace: TraceSpec = field(default_factory=TraceSpec)
    controller: LyapunovConfig = field(default_factory=LyapunovConfig)
    source: str = "built-in defaults"

    @property
    def n_slots(self) -> int:
        return max(1, int(round(self.duration_s / self.slot_s)))

    @property
    def edge_profile(self) -> str | None:
        """The shared edge's profile, or None when the edge is never a bottleneck."""
        if self.edge is not None:
            return self.edge
        from simulation.edge import DEFAULT_EDGE

        return DEFAULT_EDGE if self.devices > 1 else None


def load_experiment(path: str | os.PathLike[str]) -> Experiment:
    """Load and validate an experiment file (a configs/experiments name or a path)."""
    p = resolve_named("experiments", str(path))
    s = load_yaml(p)
    s.check_keys([f.name for f in fields(Experiment) if f.name != "source"])
    base = p.parent
    d = Experiment()
    kw: dict = {"source": str(p)}
    if "name" in s:
        kw["name"] = s.string("name")
    for key in ("board", "model", "network"):
        if key in s:
            kw[key] = _relative(s.string(key), base)
    if "input_bytes" in s:
        kw["input_bytes"] = _input_bytes(s)
    if "slot_s" in s:
        kw["slot_s"] = s.number("slot_s", positive=True, max=60.0)
    if "duration_s" in s:
        kw["duration_s"] = s.number("duration_s", positive=True)
    if "seed" in s:
        kw["seed"] = s.integer("seed", min=0)
    if "buffer_frames" in s:
        kw["buffer_frames"] = s.integer("buffer_frames", min=1)
    if "edge_speedup" in s:
        kw["edge_speedup"] = s.number("edge_speedup", positive=True)
    if "devices" in s:
        kw["devices"] = s.integer("devices", min=1, max=100_000)
    if s.raw("edge", None) is not None:
        kw["edge"] = edge_field(s, base)
    if "arrivals" in s:
        a = s.section("arrivals")
        a.check_keys(["process", "rate_fps", "path"])
        process = a.string("process", d.arrivals.process, choices=ARRIVAL_PROCESSES)
        path_ = a.string("path", None)
        if process == "trace" and path_ is None:
            raise a.error("path", "the trace arrival process needs a path to a file of arrival times")
        kw["arrivals"] = ArrivalSpec(
            process=process,
            rate_fps=a.number("rate_fps", d.arrivals.rate_fps, positive=True),
            path=_relative(path_, base) if path_ else None,
        )
    if "trace" in s:
        t = s.section("trace")
        t.check_keys(["path", "format", "column", "scale"])
        from simulation.traces import TRACE_FORMATS

        tpath = t.string("path", "synthetic")
        kw["trace"] = TraceSpec(
            path=tpath if tpath.startswith("synthetic") else _relative(tpath, base),
            format=t.string("format", "auto", choices=TRACE_FORMATS),
            column=t.string("column", "DL_bitrate"),
            scale=t.number("scale", 1.0, positive=True),
        )
    if "controller" in s:
        kw["controller"] = controller_config(s.section("controller"))
    return replace(d, **kw)


def edge_field(s: Section, base: Path) -> str:
    """A config's ``edge`` field: a configs/edges name or a path (relative to the file's folder),
    loaded and checked now, so a bad profile is one error naming this field (not one in a worker)."""
    from simulation.edge import load_edge

    value = _relative(s.string("edge"), base)
    try:
        load_edge(value)
    except ConfigError as exc:
        raise s.error("edge", str(exc)) from None
    return value


def controller_config(c: Section) -> LyapunovConfig:
    names = [f.name for f in fields(LyapunovConfig)]
    c.check_keys(names)
    kw: dict = {}
    for f in fields(LyapunovConfig):
        if f.name not in c or c.raw(f.name, None) is None:
            continue
        if f.name in ("dvfs", "rate_control", "virtual_queues", "multipliers", "arrival_phase",
                      "uplink_age"):
            kw[f.name] = c.boolean(f.name)
        elif f.name == "latency_weight_per_s":
            kw[f.name] = c.number(f.name, min=0.0)
        elif f.name == "arrival_ewma":
            kw[f.name] = c.number(f.name, positive=True, max=1.0)
        elif f.name == "multiplier_window_slots":
            kw[f.name] = c.number(f.name, min=1.0)
        elif f.name in ("fixed_cut", "fixed_level"):
            kw[f.name] = c.integer(f.name, min=0)
        elif f.name == "V":
            kw["V"] = c.number("V", min=0.0)
        else:
            kw[f.name] = c.number(f.name, positive=True)
    return LyapunovConfig(**kw)


def _relative(value: str | None, base: Path) -> str | None:
    if value is None:
        return None
    p = Path(value)
    if p.is_absolute() or not (("/" in value) or p.suffix in (".yaml", ".yml")):
        return value  # a built-in name, or absolute
    return str((base / p).resolve())


def _input_bytes(s: Section) -> str | int:
    v = s.raw("input_bytes")
    if v in ("tensor", "uint8"):
        return v
    if isinstance(v, int) and not isinstance(v, bool) and v > 0:
        return v
    raise s.error("input_bytes", f"expected tensor, uint8 or a positive byte count, got {v!r}")


# -- building and running ------------------------------------------------------------------------


@dataclass
class Scenario:
    """Everything one run needs, built from an :class:`Experiment`."""

    experiment: Experiment
    system: SystemModel
    trace: object  # simulation.traces.Trace
    capacity_bps: np.ndarray
    wrapped: bool
    arrival_times_s: np.ndarray


def build_system(exp: Experiment) -> SystemModel:
    board = load_board(exp.board)
    model = load_model(exp.model)
    network = load_network(exp.network)
    if exp.input_bytes == "tensor":
        input_bytes = None
    elif exp.input_bytes == "uint8":
        input_bytes = int(np.prod(model.input_shape))
    else:
        input_bytes = int(exp.input_bytes)
    system = SystemModel.build(board, model, network, exp.slot_s, edge_speedup=exp.edge_speedup, input_bytes=input_bytes)
    if exp.edge_profile is not None:
        # a shared edge: a lone request's tail takes what the edge profile says (controller and
        # baselines plan with it; the queue and the batches come on top, in simulation.edge)
        from simulation.edge import load_edge, tail_flops

        edge = load_edge(exp.edge_profile)
        tail = edge.batch_s(tail_flops(system), 1) * (tail_flops(system) > 0)
        tail.setflags(write=False)
        system = replace(system, tail_s=tail)
    return system


def build_scenario(exp: Experiment) -> Scenario:
    from simulation.traces import load_trace

    system = build_system(exp)
    trace = load_trace(
        exp.trace.path,
        format=exp.trace.format,
        column=exp.trace.column,
        scale=exp.trace.scale,
        seed=exp.seed,
        duration_s=exp.duration_s,
    )
    caps, wrapped = trace.resample(exp.slot_s, exp.n_slots)
    arrivals = exp.arrivals.times(exp.n_slots * exp.slot_s, make_rng(exp.seed, "arrivals"))
    return Scenario(exp, system, trace, caps, wrapped, arrivals)


def device_inputs(sc: Scenario, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(capacity, arrival times) of each of ``n`` devices of ``sc``'s experiment: device 0 is the
    scenario itself; device i sees the trace shifted by ``i/n`` of the run (wrapped around) and
    its own camera (a phase drawn from its own stream; a file of arrival times is shifted the same
    way as the trace)."""
    exp = sc.experiment
    n_slots, horizon = exp.n_slots, exp.n_slots * exp.slot_s
    out = [(sc.capacity_bps, sc.arrival_times_s)]
    for i in range(1, n):
        shift = (i * n_slots) // n
        caps = np.roll(sc.capacity_bps, -shift)
        if exp.arrivals.process == "trace":
            arr = np.sort((sc.arrival_times_s - shift * exp.slot_s) % horizon)
        else:
            arr = exp.arrivals.times(horizon, make_rng(exp.seed, f"arrivals/device-{i}"))
        out.append((caps, arr))
    return out


def run_devices(sc: Scenario) -> SimResult:
    """The experiment's N devices on one shared edge (:mod:`simulation.edge`), in the batch
    engine: device 0's per-slot and per-frame records, with the summary of all N
    (:func:`simulation.edge.summarize_devices`)."""
    from simulation.batchsim import Lane, simulate_batch
    from simulation.edge import load_edge, summarize_devices

    exp = sc.experiment
    edge = load_edge(exp.edge_profile)
    lanes = [Lane("cutedge", exp.controller, c, a, edge=0) for c, a in device_inputs(sc, exp.devices)]
    results = simulate_batch(sc.system, lanes, buffer_frames=exp.buffer_frames, edge=edge)
    first = results[0]
    first.summary = summarize_devices(results, "cutedge", sc.system.cut_names)
    return first


def build_world(exp: Experiment, true_profile: str | os.PathLike[str]) -> SystemModel:
    """The system the world follows when the controller's profile is not the truth
    (``cutedge simulate --true-profile``): the experiment's board and network, ``true_profile``'s
    head times and powers. Its cuts must be the experiment model's."""
    world = build_system(replace(exp, model=str(true_profile)))
    believed = build_system(exp)
    if world.cut_names != believed.cut_names or world.n_levels != believed.n_levels:
        raise ConfigError(
            world.model.source, "cuts",
            f"its offered cuts {list(world.cut_names)} are not the model profile's "
            f"{list(believed.cut_names)} (both must describe the same model and partition)",
        )
    return world


def run_scenario(sc: Scenario, policy=None, *, time_decisions: bool = True, world: SystemModel | None = None) -> SimResult:
    """Simulate ``policy`` (default: the Lyapunov controller of the experiment) on ``sc``; the
    world follows ``world``'s tables when given (the policy still decides from its own)."""
    exp = sc.experiment
    if exp.edge_profile is not None:
        if policy is not None or world is not None:
            raise ConfigError(exp.source, "devices", "devices sharing an edge run the experiment's controller only "
                              "(no other policy object, no --true-profile)")
        result = run_devices(sc)
        controller_ran = True
    else:
        if policy is None:
            policy = LyapunovController(sc.system, exp.controller)
        result = simulate(world or sc.system, policy, sc.capacity_bps, sc.arrival_times_s, buffer_frames=exp.buffer_frames,
                          time_decisions=time_decisions)
        controller_ran = isinstance(getattr(policy, "inner", policy), LyapunovController)
    trace = sc.trace
    result.summary = {
        "policy": result.summary["policy"],
        "V": float(exp.controller.V) if controller_ran else None,
        **{k: v for k, v in result.summary.items() if k != "policy"},
        "trace": {
            "path": trace.path,
            "name": trace.name,
            "format": trace.format,
            "mean_bps": float(trace.mean_bps) / exp.trace.scale,  # the file as read, before --trace-scale
            "duration_s": float(trace.duration_s),
            "scale": exp.trace.scale,
            "mean_bps_scaled": float(trace.mean_bps),
            "wrapped": bool(sc.wrapped),
            "notes": list(trace.notes),
        },
        "setup": {
            "experiment": exp.source,
            "board": sc.system.board.name,
            "model": sc.system.model.model,
            "network": sc.system.network.name,
            "cuts": list(sc.system.cut_names),
            "arrivals": {"process": exp.arrivals.process, "rate_fps": exp.arrivals.rate_fps},
            "seed": exp.seed,
        },
    }
    if not math.isfinite(result.summary["energy_j"]):
        raise RuntimeError("simulation produced a non-finite energy")
    return result
