"""``cutedge simulate``: one trace-driven run of the controller; summary, time series, plot.

Never imports torch or zmq (tests check this).
"""

from __future__ import annotations

import csv
import math
from dataclasses import replace
from pathlib import Path

import click

from cutedge.cli import UsageFailure
from cutedge.commands import edge_profile_option
from cutedge.jsonout import write_json


def _positive(name: str):
    def check(ctx, param, value):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise click.BadParameter(f"must be > 0, got {value}", param_hint=name)
        return value

    return check


@click.command("simulate")
@click.option("--config", "config_path", default=None, help="Experiment YAML (a configs/experiments name or a path); default: 'default'.")
@click.option("--board", default=None, help="Board profile name (configs/boards) or path.")
@click.option("--model", default=None, help="Model profile name (configs/models) or path.")
@click.option("--network", default=None, help="Uplink power model (configs/network): lte-shannon, lte-linear, or a path.")
@click.option("--trace", "trace_path", default=None, help="Uplink trace file, or synthetic[:markov-lte|5g-mmwave|wifi][?mean_mbps=X].")
@click.option("--trace-format", default=None, type=click.Choice(["auto", "mahimahi", "two-column", "gnettrack", "nuwins"]), help="Trace file format (default auto-detect).")
@click.option("--trace-column", default=None, help="G-NetTrack CSV column to read (default DL_bitrate).")
@click.option("--trace-scale", default=None, type=float, callback=_positive("--trace-scale"), help="Multiply trace capacity (e.g. a downlink trace as uplink stand-in).")
@click.option("--V", "V", default=None, type=float, help="Lyapunov trade-off knob (frames^2/J): larger saves energy, grows backlog.")
@click.option("--duration", default=None, type=float, callback=_positive("--duration"), help="Simulated seconds.")
@click.option("--fps", default=None, type=float, callback=_positive("--fps"), help="Camera frame rate.")
@click.option("--seed", default=None, type=click.IntRange(min=0), help="Seed for the synthetic trace and arrivals.")
@click.option("--devices", default=None, type=click.IntRange(min=1, max=100_000),
              help="Devices sharing one edge, each its own camera, trace shift and controller (docs/devices.md).")
@edge_profile_option
@click.option("--out", default="runs/simulate", show_default=True, help="Output folder.")
@click.option("--no-plot", is_flag=True, help="Skip timeseries.png.")
@click.option("--true-profile", default=None, metavar="FILE",
              help="Run the world from this model profile while the controller starts from --model's and calibrates "
                   "online (head times, powers), as the live agent does; the summary reports the calibration error.")
def simulate(config_path, board, model, network, trace_path, trace_format, trace_column, trace_scale, V, duration, fps, seed,
             devices, edge_profile, out, no_plot, true_profile):
    """Trace-driven simulation of the Lyapunov controller.

    Writes summary.json, timeseries.csv and timeseries.png to --out and prints a summary.
    """
    from simulation.experiment import Experiment, build_scenario, load_experiment, run_scenario

    exp = load_experiment(config_path or "default") if config_path or _has_default() else Experiment()
    changes: dict = {}
    for key, value in (("board", board), ("model", model), ("network", network), ("duration_s", duration), ("seed", seed),
                       ("devices", devices)):
        if value is not None:
            changes[key] = value
    if V is not None:
        if not (math.isfinite(V) and V >= 0):
            raise UsageFailure(f"--V must be a finite number >= 0, got {V}")
        changes["controller"] = replace(exp.controller, V=V)
    if fps is not None:
        changes["arrivals"] = replace(exp.arrivals, rate_fps=fps)
    tr = exp.trace
    if trace_path is not None:
        tr = replace(tr, path=trace_path)
    if trace_format is not None:
        tr = replace(tr, format=trace_format)
    if trace_column is not None:
        tr = replace(tr, column=trace_column)
    if trace_scale is not None:
        tr = replace(tr, scale=trace_scale)
    changes["trace"] = tr
    if edge_profile is not None:
        changes["edge"] = edge_profile
    exp = replace(exp, **changes)
    if true_profile is not None and exp.edge_profile is not None:
        raise UsageFailure("--true-profile runs one device on an edge that is never a bottleneck; drop --devices/--edge")

    scenario = build_scenario(exp)
    for note in scenario.trace.notes:
        click.echo(f"trace: {note}", err=True)
    if scenario.wrapped:
        click.echo(
            f"trace: {scenario.trace.duration_s:.1f} s long, run is {exp.n_slots * exp.slot_s:.1f} s: wrapping around",
            err=True,
        )
    if true_profile is None:
        result = run_scenario(scenario)
    else:
        result = _run_calibrating(scenario, true_profile)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_outputs(result, scenario, out_dir, plot=not no_plot)
    click.echo(format_summary(result.summary))
    click.echo(f"wrote {out_dir / 'summary.json'}, {out_dir / 'timeseries.csv'}" + ("" if no_plot else f", {out_dir / 'timeseries.png'}"))


def _run_calibrating(scenario, true_profile: str):
    """The controller starts from the scenario's profile and calibrates against a world that
    follows ``true_profile``; the summary gains ``calibration``."""
    from controller.calibration import CalibratingController
    from controller.config import ConfigError
    from controller.lyapunov import LyapunovController
    from simulation.experiment import build_world, run_scenario

    try:
        world = build_world(scenario.experiment, true_profile)
    except ConfigError as exc:
        raise UsageFailure(f"--true-profile: {exc}") from None
    policy = CalibratingController(LyapunovController(scenario.system, scenario.experiment.controller))
    start = policy.calibrator.error(world, scenario.system)
    result = run_scenario(scenario, policy, world=world)
    cal = policy.calibrator
    result.summary["calibration"] = {
        "true_profile": str(true_profile),
        "error_vs_truth_start": start,
        "error_vs_truth_end": cal.error(world),
        "measured": cal.measured_error(),
        "events": [{"time_s": t, "event": e} for t, e in cal.events],
    }
    return result


def _has_default() -> bool:
    from controller.config import configs_dir

    return (configs_dir() / "experiments" / "default.yaml").exists()


def write_outputs(result, scenario, out_dir: Path, plot: bool = True) -> None:
    write_json(out_dir / "summary.json", result.summary)
    s = result.slots
    columns = ["time_s", "capacity_bps", "cut", "gpu_hz", "rate_bps", "sent_bits", "Qc_frames", "Qx_bits"]
    columns += [k for k in ("Z_E", "Z_T", "Z_L") if k in s]
    columns += ["energy_j", "tx_energy_j", "busy_s", "heads_done", "arrivals", "admitted", "process"]
    names = scenario.system.cut_names
    with open(out_dir / "timeseries.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(columns[:3] + ["cut_name"] + columns[3:])
        cols = [s[c] for c in columns]
        for i in range(len(s["time_s"])):
            row = [_cell(c[i]) for c in cols]
            w.writerow(row[:3] + [names[int(s["cut"][i])]] + row[3:])
    if plot:
        from simulation.plots import plot_timeseries

        sm = result.summary
        title = (
            f"{sm['setup']['model']} on {sm['setup']['board']}, {sm['trace']['name']}, V={sm['V']:g}: "
            f"{sm['throughput_fps']:.2f} fps, {sm['energy_per_frame_j']:.3f} J/frame, "
            f"{sm['latency_ms']['mean']:.0f} ms mean latency"
        )
        plot_timeseries(s, list(names), out_dir / "timeseries.png", title=title)


def _cell(v):
    if isinstance(v, (bool,)) or type(v).__name__ == "bool_":
        return int(v)
    if isinstance(v, float) or type(v).__name__.startswith("float"):
        return f"{float(v):.6g}"
    return int(v)


def format_summary(sm: dict) -> str:
    fr = sm["frames"]
    lat = sm["latency_ms"]
    q = sm["queues"]
    tr = sm["trace"]
    scaled = f" x {tr['scale']:g}" if tr.get("scale", 1.0) != 1.0 else ""
    rows = [
        ("policy", f"{sm['policy']} (V = {sm['V']:g})" if sm.get("V") is not None else sm["policy"]),
        ("setup", f"{sm['setup']['model']} on {sm['setup']['board']}, {sm['setup']['network']}"),
        ("trace", f"{tr['name']} ({tr['format']}, mean {tr['mean_bps'] / 1e6:.2f} Mbit/s{scaled}, {tr['duration_s']:.0f} s{', wrapped' if tr['wrapped'] else ''})"),
        ("slots", f"{sm['slots']} x {sm['slot_s'] * 1e3:g} ms"),
        ("frames", f"{fr['arrived']} arrived, {fr['completed']} completed, {fr['dropped']} dropped, {fr['in_flight']} in flight"),
        ("throughput", f"{sm['throughput_fps']:.2f} frames/s"),
        ("energy", f"{sm['energy_j']:.1f} J, {_num(sm['energy_per_frame_j'], '.3f')} J/frame, {sm['avg_power_w']:.2f} W average"),
        ("latency", f"mean {_num(lat['mean'], '.0f')} ms, p50 {_num(lat['p50'], '.0f')}, p95 {_num(lat['p95'], '.0f')}, p99 {_num(lat['p99'], '.0f')}"),
        ("queues", f"Q_c mean {q['mean_Qc_frames']:.2f} frames (max {q['max_Qc_frames']:.0f}), Q_x mean {q['mean_Qx_bits'] / 1e6:.2f} Mbit"),
        ("split", ", ".join(f"{k} {v:.0%}" for k, v in sm["choices"]["cut_share"].items() if v > 0) or "GPU idle"),
        ("GPU clock", f"mean {sm['choices']['mean_gpu_hz'] / 1e6:.0f} MHz, busy {sm['choices']['busy_share']:.0%}"),
        ("decision", f"median {_num(sm['decision_us']['median'], '.1f')} us, p99 {_num(sm['decision_us']['p99'], '.1f')} us"),
    ]
    edge = sm.get("edge")
    if edge:
        rows[5:5] = [("devices", f"{sm.get('devices', 1)} sharing one edge ({edge['profile']}); per device above except "
                                 f"frames and energy (totals); Jain's fairness {sm.get('jain_fairness', 1.0):.3f}")]
        rows.append(("edge", f"utilisation {edge['utilisation']:.0%}, backlog mean {edge['mean_backlog_s'] * 1e3:.0f} ms "
                             f"(max {edge['max_backlog_s'] * 1e3:.0f}), {edge['requests']} requests in {edge['batches']} "
                             f"batches (mean {edge['mean_batch']:.1f}), {_num(edge['mean_edge_ms'], '.0f')} ms at the edge"))
    cal = sm.get("calibration")
    if cal:
        a, b = cal["error_vs_truth_start"], cal["error_vs_truth_end"]
        rows.append(("calibration", f"table error vs the true profile: head time {a['head_s']:.1%} -> {b['head_s']:.1%}, "
                                    f"head energy {a['head_j']:.1%} -> {b['head_j']:.1%}, idle power {a['idle_w']:.1%} -> "
                                    f"{b['idle_w']:.1%} ({cal['measured']['pairs_measured']} pairs measured)"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:>{width}}  {v}" for k, v in rows)


def _num(v, fmt):
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)
