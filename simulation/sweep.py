"""Sweeps: every policy x V x trace x seed on one system, the LP bound per trace, one CSV row each.

A sweep is cut into work units, one per (trace, seed). A unit builds its scenario once, finds
the best static pair in hindsight (which ``static-best`` and ``dvfs-only`` need), runs every
policy lane together in the batched engine (:mod:`simulation.batchsim`), solves the stationary
LP bound (:mod:`simulation.bounds`) for the offered load and for each V policy's served load,
and returns plain rows. Units are independent and deterministic (every random draw comes from
the unit's seed), so the same sweep gives the same numbers with any number of workers and on
any executor; rows are put back in unit order.

Sweep config (``configs/experiments/sweep-*.yaml``)::

    name: sweep-default
    experiment: default            # the experiment every run starts from (name or path)
    duration_s: 600                # optional overrides of the experiment
    controller: {throughput_floor_fps: 9.5}   # merged into the experiment's controller section
    policies: all                  # or a list of names (simulation.baselines.POLICY_NAMES)
    V: [0.3, 1, 3, ...]            # values for the V policies
    seeds: 1                       # seeds experiment.seed, +1, ...
    traces:                        # synthetic specs or files; relative file paths are resolved
      - {path: "synthetic:markov-lte", label: LTE}          # against --trace-root, then
      - {path: mahimahi/ATT-LTE-driving.up, label: ATT}    # $CUTEDGE_TRACES, then this file's
      - {path: lumos5g/4G/x, format: two-column, scale: 0.1}   # folder
    baselines: {estimate_window: 10, arrival_ewma: 0.2, jointdnn_latency_weight_j_per_s: null,
                serve_fraction: 0.99}
    bound: {tangents: 64}
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from controller.config import ConfigError, Section, load_yaml, resolve_named
from controller.lyapunov import LyapunovConfig
from simulation.arrivals import arrivals_per_slot
from simulation.baselines import (
    FIXED_POLICIES,
    V_POLICIES,
    BaselineOptions,
    controller_config,
    make_policy,
    parse_policies,
    static_best,
)
from simulation.experiment import Experiment, TraceSpec, build_scenario, edge_field, load_experiment
from simulation.experiment import controller_config as parse_controller

DEFAULT_V = (0.3, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 3000.0)
DEFAULT_TRACES = (
    ("synthetic:markov-lte", "LTE (synthetic)"),
    ("synthetic:5g-mmwave", "5G mmWave (synthetic)"),
    ("synthetic:wifi", "Wi-Fi (synthetic)"),
)
EXECUTORS = ("local", "dask", "ray")
DEVICE_BATCH_LANES = 1024
"""Lanes per batch-engine call in a many-devices unit (whole groups; bounds the records' memory)."""

ROW_FIELDS = (
    "policy", "V", "trace", "seed", "throughput_fps", "energy_per_frame_j", "avg_power_w", "energy_j",
    "tx_energy_j", "latency_ms_mean", "latency_ms_p50", "latency_ms_p95", "latency_ms_p99", "frames_arrived",
    "frames_completed", "frames_dropped", "frames_in_flight", "mean_Qc_frames", "mean_Qx_bits", "max_Qc_frames",
    "end_Qc_frames", "end_Qx_bits", "mean_gpu_mhz", "busy_share", "cut_shares", "choice", "trace_mean_mbps",
    "trace_wrapped", "duration_s", "devices", "jain_fairness", "edge_utilisation", "edge_mean_batch",
    "edge_mean_backlog_s", "edge_end_backlog_s",
)
BOUND_FIELDS = (
    "trace", "seed", "p_star_w", "p_star_j_per_frame", "p_star_mix", "arrival_fps", "policy", "V", "avg_power_w",
    "energy_per_frame_j", "throughput_fps", "gap_pct", "serves_load", "p_star_served_w", "gap_served_pct", "status",
)


class SweepError(ValueError):
    """A sweep that cannot run as asked (bad executor, missing package, bad trace list)."""


@dataclass(frozen=True)
class TraceEntry:
    """One trace of a sweep: a synthetic spec or a file, how to read it, and its label."""

    path: str
    format: str = "auto"
    column: str = "DL_bitrate"
    scale: float = 1.0
    label: str = ""

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        if self.path.startswith("synthetic"):
            return self.path
        return Path(self.path).name + (f" x{self.scale:g}" if self.scale != 1.0 else "")


@dataclass(frozen=True)
class SweepConfig:
    name: str = "sweep"
    experiment: Experiment = field(default_factory=Experiment)
    policies: tuple[str, ...] = tuple(parse_policies("all"))
    V: tuple[float, ...] = DEFAULT_V
    traces: tuple[TraceEntry, ...] = tuple(TraceEntry(p, label=lbl) for p, lbl in DEFAULT_TRACES)
    seeds: int = 1
    options: BaselineOptions = field(default_factory=BaselineOptions)
    tangents: int = 64
    source: str = "built-in defaults"
    devices: tuple[int, ...] = ()  # devices per run, each a unit of its own; () = the experiment's

    @property
    def device_counts(self) -> tuple[int, ...]:
        return self.devices or (self.experiment.devices,)

    @property
    def edge_profile(self) -> str | None:
        """The edge every unit uses: device counts compared with each other share the same kind
        of edge, one device included (None: a lone device on an edge never a bottleneck)."""
        return replace(self.experiment, devices=max(self.device_counts)).edge_profile

    def units(self) -> list[Unit]:
        base = self.experiment.seed
        counts = self.device_counts
        edge = self.edge_profile
        out = []
        for ti, tr in enumerate(self.traces):
            for k in range(self.seeds):
                for n in counts:
                    exp = replace(self.experiment, devices=n, edge=edge)
                    out.append(Unit(len(out), tr, ti, base + k, exp, self.policies, self.V, self.options, self.tangents))
        return out


@dataclass(frozen=True)
class Unit:
    """One (trace, seed) of a sweep: everything a worker needs, picklable."""

    index: int
    trace: TraceEntry
    trace_index: int
    seed: int
    experiment: Experiment
    policies: tuple[str, ...]
    V: tuple[float, ...]
    options: BaselineOptions
    tangents: int


@dataclass
class UnitResult:
    index: int
    rows: list[dict]
    bounds: list[dict]
    notes: list[str]
    seconds: float


# -- config ----------------------------------------------------------------------------------


def check_V(values: Sequence[float], source: str = "V") -> tuple[float, ...]:
    out = []
    for v in values:
        try:
            x = float(v)
        except (TypeError, ValueError):
            raise ConfigError(source, None, f"not a number: {v!r}") from None
        if not (math.isfinite(x) and x >= 0.0):
            raise ConfigError(source, None, f"V must be finite and >= 0, got {v!r}")
        out.append(x)
    if not out:
        raise ConfigError(source, None, "no V value given")
    return tuple(dict.fromkeys(out))


def resolve_trace_path(path: str, trace_root: str | os.PathLike[str] | None, config_dir: Path | None) -> str:
    """Where a sweep's trace file is: absolute as is; relative against ``trace_root``, then
    ``$CUTEDGE_TRACES``, then the config file's folder. Synthetic specs pass through."""
    if path.startswith("synthetic"):
        return path
    p = Path(path.split("#", 1)[0])
    suffix = path[len(str(p)) :] if "#" in path else ""
    if p.is_absolute():
        return path
    roots: list[Path] = []
    if trace_root is not None:
        roots.append(Path(trace_root))
    elif os.environ.get("CUTEDGE_TRACES"):
        roots.append(Path(os.environ["CUTEDGE_TRACES"]))
    if config_dir is not None and trace_root is None:
        roots.append(config_dir)
    if not roots:
        roots.append(Path.cwd())
    for root in roots:
        if (root / p).exists():
            return str((root / p).resolve()) + suffix
    where = " or ".join(str(r) for r in roots)
    raise ConfigError(path, None, f"trace file not found under {where} (give the folder with --trace-root)")


def load_sweep(path: str | os.PathLike[str], trace_root: str | os.PathLike[str] | None = None) -> SweepConfig:
    """Load a sweep config (a configs/experiments name or a path)."""
    p = resolve_named("experiments", str(path))
    s = load_yaml(p)
    known = ["name", "experiment", "duration_s", "controller", "policies", "V", "seeds", "traces", "baselines", "bound",
             "devices", "edge"]
    if "experiment" not in s and "policies" not in s and "V" not in s:
        raise ConfigError(p, None, "not a sweep config (expected experiment, policies, V, traces); use cutedge simulate for an experiment file")
    s.check_keys(known)
    base = load_experiment(_relative_config(s.string("experiment", "default"), p.parent))
    if "duration_s" in s:
        base = replace(base, duration_s=s.number("duration_s", positive=True))
    if "controller" in s:
        base = replace(base, controller=merge_controller(base.controller, s.section("controller")))
    if s.raw("edge", None) is not None:
        base = replace(base, edge=edge_field(s, p.parent))
    devices: tuple[int, ...] = ()
    if "devices" in s:
        raw = s.raw("devices")
        devices = tuple(check_devices([raw] if isinstance(raw, int) and not isinstance(raw, bool) else raw, f"{p}: devices"))
    policies = tuple(parse_policies("all"))
    if "policies" in s:
        raw = s.raw("policies")
        try:
            policies = tuple(parse_policies(raw if isinstance(raw, str) else [str(x) for x in raw]))
        except (ValueError, TypeError) as exc:
            raise s.error("policies", str(exc)) from None
    V = DEFAULT_V
    if "V" in s:
        V = check_V(s.numbers("V", min=0.0), f"{p}: V")
    seeds = s.integer("seeds", 1, min=1)
    traces = tuple(TraceEntry(path, label=lbl) for path, lbl in DEFAULT_TRACES)
    if "traces" in s:
        entries = []
        for t in s.sections("traces"):
            t.check_keys(["path", "format", "column", "scale", "label"])
            from simulation.traces import TRACE_FORMATS

            raw_path = t.string("path")
            entries.append(
                TraceEntry(
                    path=resolve_trace_path(raw_path, trace_root, p.parent),
                    format=t.string("format", "auto", choices=TRACE_FORMATS),
                    column=t.string("column", "DL_bitrate"),
                    scale=t.number("scale", 1.0, positive=True),
                    label=t.string("label", "") or TraceEntry(raw_path).name,
                )
            )
        traces = tuple(entries)
    options = BaselineOptions()
    if "baselines" in s:
        b = s.section("baselines")
        names = [f.name for f in fields(BaselineOptions)]
        b.check_keys(names)
        kw: dict = {}
        if "estimate_window" in b:
            kw["estimate_window"] = b.integer("estimate_window", min=1)
        if "arrival_ewma" in b:
            kw["arrival_ewma"] = b.number("arrival_ewma", positive=True, max=1.0)
        if b.raw("jointdnn_latency_weight_j_per_s", None) is not None:
            kw["jointdnn_latency_weight_j_per_s"] = b.number("jointdnn_latency_weight_j_per_s", min=0.0)
        if "serve_fraction" in b:
            kw["serve_fraction"] = b.number("serve_fraction", positive=True, max=1.0)
        options = BaselineOptions(**kw)
    tangents = 64
    if "bound" in s:
        bd = s.section("bound")
        bd.check_keys(["tangents"])
        tangents = bd.integer("tangents", 64, min=2, max=10_000)
    return SweepConfig(
        name=s.string("name", p.stem), experiment=base, policies=policies, V=V, traces=traces, seeds=seeds,
        options=options, tangents=tangents, source=str(p), devices=devices,
    )


def check_devices(values, source: str = "devices") -> list[int]:
    """Device counts: whole numbers >= 1, no repeats (a list, or one number)."""
    if not isinstance(values, (list, tuple)) or not values:
        raise SweepError(f"{source}: expected a device count or a list of them, got {values!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) or not 1 <= v <= 100_000:
            raise SweepError(f"{source}: a device count must be a whole number in [1, 100000], got {v!r}")
        out.append(int(v))
    if len(set(out)) != len(out):
        raise SweepError(f"{source}: repeated device count in {out}")
    return out


def _relative_config(value: str, base: Path) -> str:
    q = Path(value)
    if q.is_absolute() or not ("/" in value or q.suffix in (".yaml", ".yml")):
        return value
    return str((base / q).resolve())


def merge_controller(cfg: LyapunovConfig, section: Section) -> LyapunovConfig:
    """``cfg`` with the keys present in ``section`` replaced (validated like an experiment's)."""
    parsed = parse_controller(section)
    present = {f.name: getattr(parsed, f.name) for f in fields(LyapunovConfig) if f.name in section}
    try:
        return replace(cfg, **present)
    except ValueError as exc:
        raise section.error(None, str(exc)) from None


# -- one unit --------------------------------------------------------------------------------

_BOUND_CACHE: dict = {}


def _bound_for(system, exp: Experiment, tangents: int, constrained: bool = True):
    """One compiled LP per (system, constraints) per process (DPP: compile once, solve often).

    ``constrained``: with the controller's energy budget and throughput floor (p* of the
    configured problem); without them for the served-load bound of a run, which must hold for
    any run, including one that breaks a constraint.
    """
    from simulation.bounds import StationaryBound

    c = exp.controller
    budget = c.energy_budget_w if constrained else None
    floor = c.throughput_floor_fps if constrained else None
    key = (exp.board, exp.model, exp.network, exp.input_bytes, exp.slot_s, exp.edge_speedup, tangents, budget, floor)
    b = _BOUND_CACHE.get(key)
    if b is None:
        b = StationaryBound(system, tangents=tangents, energy_budget_w=budget, throughput_floor_fps=floor)
        _BOUND_CACHE[key] = b
    return b


def run_unit(unit: Unit) -> UnitResult:
    """Run every policy of ``unit`` on its scenario; the rows and bound rows, in a fixed order."""
    from simulation.batchsim import Lane, Schedule, simulate_batch

    t0 = time.perf_counter()
    tr = unit.trace
    exp = replace(
        unit.experiment,
        seed=unit.seed,
        trace=TraceSpec(path=tr.path, format=tr.format, column=tr.column, scale=tr.scale),
    )
    sc = build_scenario(exp)
    notes = [f"{tr.name}: {n}" for n in sc.trace.notes]
    if sc.wrapped:
        notes.append(f"{tr.name}: trace is {sc.trace.duration_s:.1f} s, run is {exp.n_slots * exp.slot_s:.1f} s: wrapped around")
    if exp.edge_profile is not None:
        return _run_devices_unit(unit, exp, sc, notes, t0)
    system = sc.system
    per_slot = arrivals_per_slot(sc.arrival_times_s, exp.slot_s, exp.n_slots)
    needs_static = any(p in ("static-best", "dvfs-only") for p in unit.policies)
    static = None
    if needs_static:
        static = static_best(system, sc.capacity_bps, sc.arrival_times_s, buffer_frames=exp.buffer_frames,
                             serve_fraction=unit.options.serve_fraction)
        if not static.serves:
            notes.append(f"{tr.name} seed {unit.seed}: no fixed (cut, level) serves the load; static-best serves the most")

    lanes: list = []
    meta: list[tuple[str, float | None]] = []
    for name in unit.policies:
        if name in V_POLICIES:
            for V in unit.V:
                cfg = controller_config(name, exp.controller, V, None if static is None else static.cut)
                lanes.append(Lane(name, cfg, sc.capacity_bps, sc.arrival_times_s))
                meta.append((name, V))
        elif name in FIXED_POLICIES and name != "static-best":
            pol = make_policy(name, system, options=unit.options)
            cuts, levels = pol.schedule(sc.capacity_bps, per_slot)
            lanes.append(Lane(name, Schedule(name, cuts, levels), sc.capacity_bps, sc.arrival_times_s))
            meta.append((name, None))
    results = dict(zip(range(len(lanes)), simulate_batch(system, lanes, buffer_frames=exp.buffer_frames)))
    by_policy: list[tuple[str, float | None, object]] = []
    i = 0
    for name in unit.policies:
        if name == "static-best":
            by_policy.append((name, None, static.result))
            continue
        while i < len(meta) and meta[i][0] == name:
            by_policy.append((name, meta[i][1], results[i]))
            i += 1

    rows = []
    trace_mean = float(np.mean(sc.capacity_bps)) / 1e6
    for name, V, res in by_policy:
        choice = ""
        if name in ("static-best", "dvfs-only") and static is not None:
            choice = system.cut_names[static.cut] + ("" if name == "dvfs-only" else f"@{system.levels_hz[static.level] / 1e6:.0f}MHz")
        rows.append(summary_row(res.summary, name, V, tr.name, unit.seed, choice, trace_mean, sc.wrapped, exp.n_slots * exp.slot_s))

    bounds = []
    arrival_fps = len(sc.arrival_times_s) / (exp.n_slots * exp.slot_s)
    lp = _bound_for(system, exp, unit.tangents)
    lp_served = _bound_for(system, exp, unit.tangents, constrained=False)
    full = lp.solve(sc.capacity_bps, arrival_fps)
    mix = " ".join(f"{k}:{v:.2f}" for k, v in full.mix.items() if v > 0.005)
    for (name, V, res), row in zip(by_policy, rows):
        if V is None:
            continue
        served = lp_served.solve_served(res)
        p, ps = full.p_star_w, served.p_star_w
        bounds.append({
            "trace": tr.name, "seed": unit.seed, "p_star_w": p, "p_star_j_per_frame": full.p_star_j_per_frame,
            "p_star_mix": mix, "arrival_fps": arrival_fps, "policy": name, "V": V, "avg_power_w": row["avg_power_w"],
            "energy_per_frame_j": row["energy_per_frame_j"], "throughput_fps": row["throughput_fps"],
            "gap_pct": 100.0 * (row["avg_power_w"] / p - 1.0) if p > 0 else math.nan,
            "serves_load": row["frames_completed"] >= unit.options.serve_fraction * row["frames_arrived"] and row["frames_dropped"] == 0,
            "p_star_served_w": ps, "gap_served_pct": 100.0 * (row["avg_power_w"] / ps - 1.0) if ps > 0 else math.nan,
            "status": full.status if full.status == served.status else f"{full.status}/{served.status}",
        })
    if not any(n in V_POLICIES for n in unit.policies):
        bounds.append({
            "trace": tr.name, "seed": unit.seed, "p_star_w": full.p_star_w, "p_star_j_per_frame": full.p_star_j_per_frame,
            "p_star_mix": mix, "arrival_fps": arrival_fps, "policy": "", "V": None, "status": full.status,
        })
    return UnitResult(unit.index, rows, bounds, notes, time.perf_counter() - t0)


def _run_devices_unit(unit: Unit, exp: Experiment, sc, notes: list[str], t0: float) -> UnitResult:
    """A unit whose devices share one finite edge (``simulation.edge``): every policy (x V) is
    one group of ``exp.devices`` lanes on its own edge, all in one batch; one aggregated row per
    group. ``static-best`` and ``dvfs-only`` (one pair found in hindsight for one device) and the
    LP bound (a single device's) have no multi-device form and are left out, with a note."""
    from simulation.batchsim import Lane, Schedule, simulate_batch
    from simulation.edge import load_edge, summarize_devices
    from simulation.experiment import device_inputs

    tr, n = unit.trace, exp.devices
    system = sc.system
    edge = load_edge(exp.edge_profile)
    skipped = [p for p in unit.policies if p in ("static-best", "dvfs-only")]
    if skipped:
        notes.append(f"{tr.name}, {n} devices: {', '.join(skipped)} left out (a pair found in hindsight for one device; "
                     "no form for devices sharing an edge)")
    inputs = device_inputs(sc, n)
    per_slot = [arrivals_per_slot(a, exp.slot_s, exp.n_slots) for _, a in inputs]
    lanes: list = []
    meta: list[tuple[str, float | None]] = []
    for name in unit.policies:
        if name in skipped:
            continue
        if name in V_POLICIES:
            for V in unit.V:
                cfg = controller_config(name, exp.controller, V, None)
                lanes += [Lane(name, cfg, c, a, edge=len(meta)) for c, a in inputs]
                meta.append((name, V))
        else:
            for (c, a), ps in zip(inputs, per_slot):
                cuts, levels = make_policy(name, system, options=unit.options).schedule(c, ps)
                lanes.append(Lane(name, Schedule(name, cuts, levels), c, a, edge=len(meta)))
            meta.append((name, None))
    # groups in batches of about DEVICE_BATCH_LANES lanes (memory: ~80 bytes per lane-slot)
    results: list = []
    per_call = max(1, DEVICE_BATCH_LANES // n)
    for g0 in range(0, len(meta), per_call):
        chunk = [replace(lane, edge=lane.edge - g0) for lane in lanes[g0 * n:(g0 + per_call) * n]]
        results += simulate_batch(system, chunk, buffer_frames=exp.buffer_frames, edge=edge)
    rows = []
    trace_mean = float(np.mean(sc.capacity_bps)) / 1e6
    for g, (name, V) in enumerate(meta):
        sm = summarize_devices(results[g * n:(g + 1) * n], name, system.cut_names)
        rows.append(summary_row(sm, name, V, tr.name, unit.seed, "", trace_mean, sc.wrapped, exp.n_slots * exp.slot_s))
    return UnitResult(unit.index, rows, [], notes, time.perf_counter() - t0)


def summary_row(sm: dict, policy: str, V: float | None, trace: str, seed: int, choice: str, trace_mean_mbps: float,
                wrapped: bool, duration_s: float) -> dict:
    """One sweep.csv row from a run's summary (the nested summary flattened, SI units)."""
    fr, lat, q, ch = sm["frames"], sm["latency_ms"], sm["queues"], sm["choices"]
    edge = sm.get("edge")
    shares = " ".join(f"{k}:{v:.2f}" for k, v in ch["cut_share"].items() if v > 0.005)
    return {
        "policy": policy, "V": V, "trace": trace, "seed": seed,
        "throughput_fps": sm["throughput_fps"], "energy_per_frame_j": sm["energy_per_frame_j"],
        "avg_power_w": sm["avg_power_w"], "energy_j": sm["energy_j"], "tx_energy_j": sm["tx_energy_j"],
        "latency_ms_mean": lat["mean"], "latency_ms_p50": lat["p50"], "latency_ms_p95": lat["p95"],
        "latency_ms_p99": lat["p99"], "frames_arrived": fr["arrived"], "frames_completed": fr["completed"],
        "frames_dropped": fr["dropped"], "frames_in_flight": fr["in_flight"], "mean_Qc_frames": q["mean_Qc_frames"],
        "mean_Qx_bits": q["mean_Qx_bits"], "max_Qc_frames": q["max_Qc_frames"], "end_Qc_frames": q["end_Qc_frames"],
        "end_Qx_bits": q["end_Qx_bits"], "mean_gpu_mhz": ch["mean_gpu_hz"] / 1e6, "busy_share": ch["busy_share"],
        "cut_shares": shares, "choice": choice, "trace_mean_mbps": trace_mean_mbps, "trace_wrapped": bool(wrapped),
        "duration_s": duration_s, "devices": sm.get("devices", 1), "jain_fairness": sm.get("jain_fairness", 1.0),
        "edge_utilisation": edge["utilisation"] if edge else None,
        "edge_mean_batch": edge["mean_batch"] if edge else None,
        "edge_mean_backlog_s": edge["mean_backlog_s"] if edge else None,
        "edge_end_backlog_s": edge["end_backlog_s"] if edge else None,
    }


# -- running many units ----------------------------------------------------------------------


@dataclass
class SweepOutput:
    rows: list[dict]
    bounds: list[dict]
    notes: list[str]
    wall_s: float
    unit_s: list[float]


def run_sweep(
    cfg: SweepConfig,
    *,
    workers: int = 1,
    executor: str = "local",
    on_done: Callable[[int], None] | None = None,
) -> SweepOutput:
    """Run every unit of ``cfg`` on ``executor`` (:mod:`simulation.executors`); ``on_done(1)``
    in this process after each finished unit (progress). A failed unit raises
    :class:`simulation.executors.UnitError` (a :class:`SweepError` naming the unit), after the
    executor has shut down what it started."""
    from simulation.executors import run_units

    if executor not in EXECUTORS:
        raise SweepError(f"unknown executor {executor!r} (known: {', '.join(EXECUTORS)})")
    if workers < 1:
        raise SweepError(f"workers must be >= 1, got {workers}")
    units = cfg.units()
    t0 = time.perf_counter()
    done: dict[int, UnitResult] = {}

    def finish(r: UnitResult) -> None:
        done[r.index] = r
        if on_done is not None:
            on_done(1)

    run_units(units, executor, workers, finish)
    ordered = [done[i] for i in range(len(units))]
    return SweepOutput(
        rows=[row for r in ordered for row in r.rows],
        bounds=[row for r in ordered for row in r.bounds],
        notes=[n for r in ordered for n in r.notes],
        wall_s=time.perf_counter() - t0,
        unit_s=[r.seconds for r in ordered],
    )


# -- files -----------------------------------------------------------------------------------


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return "" if not math.isfinite(v) else f"{v:.8g}"
    return str(v)


def write_csv(path: str | os.PathLike[str], rows: list[dict], columns: Sequence[str]) -> None:
    import csv

    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(columns)
        for row in rows:
            w.writerow([_cell(row.get(c)) for c in columns])


NUMERIC = {
    "V", "seed", "throughput_fps", "energy_per_frame_j", "avg_power_w", "energy_j", "tx_energy_j", "latency_ms_mean",
    "latency_ms_p50", "latency_ms_p95", "latency_ms_p99", "frames_arrived", "frames_completed", "frames_dropped",
    "frames_in_flight", "mean_Qc_frames", "mean_Qx_bits", "max_Qc_frames", "end_Qc_frames", "end_Qx_bits",
    "mean_gpu_mhz", "busy_share", "trace_mean_mbps", "duration_s", "p_star_w", "p_star_j_per_frame", "arrival_fps",
    "gap_pct", "p_star_served_w", "gap_served_pct",
    "latency_ms", "e_star_j_per_frame", "serve_fraction", "solve_s",  # hindsight.csv
}


def read_csv(path: str | os.PathLike[str], required: Sequence[str] = ()) -> list[dict]:
    """Rows of a sweep.csv, bound.csv or hindsight.csv, numbers as floats (empty cells: NaN, or
    None for V); ``required`` columns must be there."""
    import csv

    p = Path(path)
    try:
        fh = open(p, newline="")
    except FileNotFoundError:
        raise ConfigError(p, None, "file not found (run cutedge sweep first)") from None
    except OSError as exc:
        raise ConfigError(p, None, f"cannot read: {exc.strerror}") from None
    with fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None:
            raise ConfigError(p, None, "empty file")
        missing = sorted(set(required) - set(reader.fieldnames))
        if missing:
            raise ConfigError(p, None, f"missing columns {', '.join(missing)}")
        rows = []
        for lineno, raw in enumerate(reader, start=2):
            row: dict = {}
            for k, v in raw.items():
                if k is None:
                    raise ConfigError(p, f"line {lineno}", "more cells than columns")
                if k in NUMERIC:
                    if v in ("", None):
                        row[k] = None if k == "V" else math.nan
                    else:
                        try:
                            row[k] = float(v)
                        except ValueError:
                            raise ConfigError(p, f"line {lineno}", f"{k}: not a number: {v!r}") from None
                elif k in ("serves_load", "trace_wrapped"):
                    row[k] = v == "true"
                else:
                    row[k] = v
            rows.append(row)
    return rows


__all__ = [
    "BOUND_FIELDS",
    "DEFAULT_TRACES",
    "DEFAULT_V",
    "EXECUTORS",
    "ROW_FIELDS",
    "SweepConfig",
    "SweepError",
    "SweepOutput",
    "TraceEntry",
    "Unit",
    "load_sweep",
    "read_csv",
    "resolve_trace_path",
    "run_sweep",
    "run_unit",
    "write_csv",
]


# -- the hindsight bound curve E*(L) (cutedge sweep --hindsight) ------------------------------

HINDSIGHT_FIELDS = ("trace", "seed", "latency_ms", "e_star_j_per_frame", "status", "serve_fraction", "solve_s")
HINDSIGHT_REQUIRED = ("trace", "latency_ms", "e_star_j_per_frame")
"""The columns a hindsight.csv needs for its curve (``read_csv(path, HINDSIGHT_REQUIRED)``)."""


def hindsight_rows(cfg: SweepConfig, rows: list[dict], points: int = 10, widen: float = 1.25,
                   policy: str = "cutedge") -> list[dict]:
    """E*(L) per trace (:mod:`simulation.hindsight`) at ``points`` log-spaced latencies spanning
    the mean latencies of ``policy``'s rows on that trace (any V policy's, or any row's, when it
    has none), widened by ``widen`` each side. Solved on the first seed's scenario, for runs that
    complete ``cfg.options.serve_fraction`` of the frames; one compiled LP per trace serves every L.
    """
    from simulation.hindsight import HindsightBound, latency_grid_s

    if points < 1:
        raise SweepError(f"hindsight points must be >= 1, got {points!r}")
    if not (math.isfinite(widen) and widen >= 1.0):
        raise SweepError(f"hindsight widen must be >= 1, got {widen!r}")
    out = []
    for tr in cfg.traces:
        mine = [r for r in rows if r["trace"] == tr.name]
        pick = [r for r in mine if r["policy"] == policy] or [r for r in mine if r.get("V") is not None] or mine
        lats = [r["latency_ms_mean"] / 1e3 for r in pick if math.isfinite(r.get("latency_ms_mean", math.nan))]
        if not lats:
            continue
        exp = replace(cfg.experiment, seed=cfg.experiment.seed,
                      trace=TraceSpec(path=tr.path, format=tr.format, column=tr.column, scale=tr.scale))
        sc = build_scenario(exp)
        hb = HindsightBound(sc.system, sc.capacity_bps, sc.arrival_times_s, serve_fraction=cfg.options.serve_fraction)
        for pt in hb.curve(latency_grid_s(min(lats) / widen, max(lats) * widen, points)):
            out.append({"trace": tr.name, "seed": exp.seed, "latency_ms": pt.latency_s * 1e3,
                        "e_star_j_per_frame": pt.e_star_j_per_frame, "status": pt.status,
                        "serve_fraction": cfg.options.serve_fraction, "solve_s": pt.solve_s})
    return out


