"""``cutedge sweep``: policies x V x traces x seeds in parallel; sweep.csv, bound.csv, tradeoff.png.

Never imports torch or zmq.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import click

from cutedge.cli import UsageFailure
from cutedge.commands import edge_profile_option
from cutedge.jsonout import write_json


def _split_numbers(text: str, option: str) -> list[float]:
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            out.append(float(item))
        except ValueError:
            raise UsageFailure(f"{option}: not a number: {item!r}") from None
    if not out:
        raise UsageFailure(f"{option}: no value given")
    return out


@click.command("sweep")
@click.option("--config", "config_path", default=None, help="Sweep YAML (a configs/experiments name or a path); default: sweep-default.")
@click.option("--policies", default=None, help="Comma-separated policy names, or 'all' (see docs/tradeoff.md).")
@click.option("--V", "V", default=None, help="Comma-separated V values for the V policies (frames^2/J).")
@click.option("--trace", "traces", multiple=True, help="A trace file or synthetic spec; repeat for several (replaces the config's list).")
@click.option("--trace-format", default="auto", show_default=True,
              type=click.Choice(["auto", "mahimahi", "two-column", "gnettrack", "nuwins"]), help="Format of --trace files.")
@click.option("--trace-scale", default=1.0, show_default=True, type=float, help="Capacity factor for --trace files.")
@click.option("--trace-root", default=None, help="Folder that relative trace paths (config or --trace) are read from.")
@click.option("--seeds", default=None, type=click.IntRange(min=1), help="Seeds per trace (experiment seed, +1, ...).")
@click.option("--workers", default=None, type=click.IntRange(min=1), help="Parallel workers (default: CPU count).")
@click.option("--executor", default="local", show_default=True, type=click.Choice(["local", "dask", "ray"]),
              help="local processes, or a dask / ray cluster (needs that package).")
@click.option("--duration", default=None, type=float, help="Simulated seconds per run.")
@click.option("--devices", default=None,
              help="Comma-separated device counts sharing one edge, e.g. 1,4,16,64 (a unit each; docs/devices.md).")
@edge_profile_option
@click.option("--out", default="runs/sweep", show_default=True, help="Output folder.")
@click.option("--no-plot", is_flag=True, help="Skip tradeoff.png.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--hindsight", is_flag=True, help="Also solve the hindsight bound curve E*(L) per trace (hindsight.csv; slow).")
def sweep(config_path, policies, V, traces, trace_format, trace_scale, trace_root, seeds, workers, executor, duration,
          devices, edge_profile, out, no_plot, quiet, hindsight=False):
    """Sweep V and policies over traces (parallel), with the stationary LP bound per trace.

    Writes sweep.csv (one row per policy x V x trace x seed), bound.csv (p* per trace and each V
    policy's gap to it), tradeoff.png and sweep.json (the setup, notes and the frontier report) to
    --out, and prints the frontier table (docs/tradeoff.md, "Reading the frontier table").
    """
    import os

    from simulation.baselines import parse_policies
    from simulation.sweep import (
        SweepConfig,
        SweepError,
        TraceEntry,
        check_devices,
        check_V,
        load_sweep,
        resolve_trace_path,
        run_sweep,
    )

    if trace_root is not None and not Path(trace_root).is_dir():
        raise UsageFailure(f"--trace-root {trace_root}: not a folder")
    if config_path is None and _builtin("sweep-default"):
        config_path = "sweep-default"
    cfg = load_sweep(config_path, trace_root=trace_root) if config_path else SweepConfig()
    if policies is not None:
        try:
            cfg = replace(cfg, policies=tuple(parse_policies(policies)))
        except ValueError as exc:
            raise UsageFailure(f"--policies: {exc}") from None
    if V is not None:
        try:
            cfg = replace(cfg, V=check_V(_split_numbers(V, "--V"), "--V"))
        except ValueError as exc:
            raise UsageFailure(str(exc)) from None
    if traces:
        if not (math.isfinite(trace_scale) and trace_scale > 0):
            raise UsageFailure(f"--trace-scale must be > 0, got {trace_scale}")
        entries = []
        for spec in traces:
            path = resolve_trace_path(spec, trace_root, None)
            entries.append(TraceEntry(path=path, format=trace_format, scale=trace_scale, label=TraceEntry(spec, scale=trace_scale).name))
        cfg = replace(cfg, traces=tuple(entries))
    if seeds is not None:
        cfg = replace(cfg, seeds=seeds)
    if duration is not None:
        if not (math.isfinite(duration) and duration > 0):
            raise UsageFailure(f"--duration must be > 0, got {duration}")
        cfg = replace(cfg, experiment=replace(cfg.experiment, duration_s=duration))
    if devices is not None:
        try:
            counts = [float(x) for x in _split_numbers(devices, "--devices")]
            cfg = replace(cfg, devices=tuple(check_devices(counts, "--devices")))
        except SweepError as exc:
            raise UsageFailure(str(exc)) from None
    if edge_profile is not None:
        cfg = replace(cfg, experiment=replace(cfg.experiment, edge=edge_profile))
    n_workers = workers or os.cpu_count() or 1
    units = cfg.units()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    click.echo(
        f"sweep {cfg.name}: {len(cfg.policies)} policies, {len(cfg.V)} V values, {len(cfg.traces)} traces x "
        f"{cfg.seeds} seeds" + (f" x {len(cfg.devices)} device counts" if cfg.devices else "")
        + f" = {len(units)} units on {n_workers} {executor} workers",
        err=True,
    )
    try:
        if quiet:
            result = run_sweep(cfg, workers=n_workers, executor=executor)
        else:
            with click.progressbar(length=len(units), label="units", file=click.get_text_stream("stderr"),
                                   show_eta=True, show_pos=True) as bar:
                result = run_sweep(cfg, workers=n_workers, executor=executor, on_done=bar.update)
    except SweepError as exc:
        raise UsageFailure(str(exc)) from None
    for note in dict.fromkeys(result.notes):
        click.echo(f"trace: {note}", err=True)
    hind_rows = None
    if hindsight:
        from simulation.sweep import hindsight_rows

        click.echo("hindsight bound E*(L): one LP per trace ...", err=True)
        try:
            hind_rows = hindsight_rows(cfg, result.rows)
        except (SweepError, ValueError) as exc:
            raise UsageFailure(f"--hindsight: {exc}") from None
    meta = write_sweep(out_dir, cfg, result, n_workers, executor, plot=not no_plot, hindsight=hind_rows)
    if meta["frontier"]["traces"]:
        click.echo(format_frontier(meta["frontier"]))
    if "devices" in meta:
        from simulation.scaling import format_devices

        click.echo(format_devices(meta["devices"]["report"]))
    files = ["sweep.csv", "bound.csv", "sweep.json"] + ([] if no_plot else ["tradeoff.png"])
    files += ["hindsight.csv"] if hind_rows is not None else []
    click.echo(f"{len(result.rows)} runs in {result.wall_s:.1f} s; wrote " + ", ".join(str(out_dir / f) for f in files))


def _builtin(name: str) -> bool:
    from controller.config import configs_dir

    return (configs_dir() / "experiments" / f"{name}.yaml").exists()


def write_sweep(out_dir: Path, cfg, result, workers: int, executor: str, plot: bool = True,
                hindsight: list[dict] | None = None) -> dict:
    """Write sweep.csv, bound.csv, hindsight.csv (with ``hindsight``), sweep.json (with the
    frontier report, and the many-devices report of a sweep over device counts) and
    tradeoff.png; return what sweep.json holds."""
    from simulation.frontier import frontier_report
    from simulation.sweep import BOUND_FIELDS, HINDSIGHT_FIELDS, ROW_FIELDS, write_csv

    write_csv(out_dir / "sweep.csv", result.rows, ROW_FIELDS)
    write_csv(out_dir / "bound.csv", result.bounds, BOUND_FIELDS)
    if hindsight is not None:
        write_csv(out_dir / "hindsight.csv", hindsight, HINDSIGHT_FIELDS)
    exp = cfg.experiment
    meta = {
        "name": cfg.name,
        "config": cfg.source,
        "experiment": exp.source,
        "board": exp.board,
        "model": exp.model,
        "network": exp.network,
        "slot_s": exp.slot_s,
        "duration_s": exp.duration_s,
        "arrivals": {"process": exp.arrivals.process, "rate_fps": exp.arrivals.rate_fps},
        "controller": {k: v for k, v in vars(exp.controller).items() if k != "V"},
        "policies": list(cfg.policies),
        "V": list(cfg.V),
        "traces": [vars(t) for t in cfg.traces],
        "seeds": cfg.seeds,
        "baselines": vars(cfg.options),
        "bound_tangents": cfg.tangents,
        "workers": workers,
        "executor": executor,
        "wall_s": result.wall_s,
        "unit_s": result.unit_s,
        "notes": list(dict.fromkeys(result.notes)),
        "frontier": frontier_report(result.rows, result.bounds, hindsight),
    }
    from simulation.scaling import devices_report, has_devices

    if has_devices(result.rows):
        meta["devices"] = {"counts": sorted({int(r["devices"]) for r in result.rows}), "edge": cfg.edge_profile,
                           "report": devices_report(result.rows, cfg.options.serve_fraction)}
    write_json(out_dir / "sweep.json", meta)
    if plot:
        from simulation.tradeoff_plots import plot_tradeoff

        plot_tradeoff(result.rows, result.bounds, out_dir / "tradeoff.png", title=figure_title(meta), hindsight=hindsight)
    return meta


def figure_title(meta: dict) -> str:
    model = Path(str(meta.get("model", ""))).stem
    board = Path(str(meta.get("board", ""))).stem
    fps = meta.get("arrivals", {}).get("rate_fps")
    net = Path(str(meta.get("network", ""))).stem
    dur = meta.get("duration_s")
    parts = [f"{model} on {board}", f"{fps:g} fps camera" if fps else "", f"{net} uplink", f"{dur:g} s runs" if dur else ""]
    return "Energy / latency trade-off: " + ", ".join(p for p in parts if p)


FRONTIER_HEAD = (
    "frontier of {policy}: a baseline is reached by one run with energy per frame <= {e:g}x, mean latency\n"
    "<= {l:g}x and throughput >= {t:g}x its own; * knows the trace (reported, not a target)"
)


def _V(v) -> str:
    return "-" if v is None else f"{v:g}"


def _pct(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:+.1f} %"


def _reach_text(e: dict) -> str:
    if not e["compared"]:
        return e["note"]
    at = f"{e['controller_energy_per_frame_j']:.3f} J, {e['controller_latency_ms']:.0f} ms"
    if e["reached"]:
        return f"reached at V = {_V(e['V'])}: {at} (energy {_pct(e['margin_pct'])})"
    return f"missed by {_by(e['excess_pct'])} % ({e['binds']}) at V = {_V(e['V'])}: {at}"


def _by(x: float) -> str:
    return f"{x:.2f}" if x < 1.0 else f"{x:.1f}"


def _point(name: str, e: dict) -> str:
    return (f"  {name:<15} {e['energy_per_frame_j']:7.3f} {e['latency_ms']:7.0f} {e['throughput_fps']:6.2f}   "
            + _reach_text(e))


def format_frontier(report: dict) -> str:
    """The frontier report as a table (100 columns): per trace, each baseline reached or not and by
    how much, the lowest-latency and p* figures, the gaps to E*(L); then how many targets are met."""
    if not report["traces"]:
        return ""
    tol, policy = report["tolerances"], report["policy"]
    lines = [FRONTIER_HEAD.format(policy=policy, e=tol["energy_ratio"], l=tol["latency_ratio"], t=tol["throughput_ratio"])]
    for t in report["traces"]:
        p = t["p_star_j_per_frame"]
        bound = f"p* = {p:.3f} J/frame" if p is not None and math.isfinite(p) else f"LP bound: {t['bound_status']}"
        seeds = f", {t['seeds']} seeds" if t["seeds"] > 1 else ""
        lines.append(f"{t['trace']}: {bound}, {t['offered_fps']:.1f} fps camera{seeds}, "
                     f"{t['targets_met']}/{t['targets']} targets met")
        lines.append(f"  {'baseline':<15} {'J/frame':>7} {'lat ms':>7} {'fps':>6}   {policy}")
        for e in t["baselines"]:
            lines.append(_point(e["baseline"], e))
        dvfs = [e for e in t["hindsight_baselines"] if e["baseline"] == "dvfs-only"]
        for e in t["hindsight_baselines"]:
            if e["baseline"] != "dvfs-only":
                lines.append(_point(e["baseline"] + " *", e))
        if dvfs:
            done = [e for e in dvfs if e["compared"]]
            hit = sum(bool(e["reached"]) for e in done)
            text = f"  {'dvfs-only *':<15} {hit}/{len(dvfs)} points reached"
            text += f" ({len(dvfs) - len(done)} not compared)" if len(done) < len(dvfs) else ""
            missed = [e for e in done if not e["reached"]]
            if missed:
                w = max(missed, key=lambda e: e["excess_pct"])
                text += f"; worst miss {_by(w['excess_pct'])} % ({w['binds']}) at its V = {_V(w['baseline_V'])}"
            lines.append(text)
        lo = t["lowest_latency"]
        if not math.isfinite(lo["ratio"]):
            lines.append(f"  lowest latency  no {policy} run or no online baseline without drops to compare  MISSED")
        else:
            lines.append(
                f"  lowest latency  {lo['controller_ms']:.0f} ms at V = {_V(lo['controller_V'])}, {lo['baseline']} "
                f"{lo['baseline_ms']:.0f} ms: {lo['ratio']:.2f}x (target <= {tol['lowest_latency_ratio']:g}x)  "
                + ("met" if lo["met"] else "MISSED")
            )
        ps = t["p_star"]
        for key, label, tail in (("served", "p* served load", f"(target <= {tol['p_star_gap_pct']:g} %)  "
                                  + ("met" if ps["met"] else "MISSED")), ("offered", "p* offered load", "(information)")):
            g = ps[key]
            if g["V"] is None:
                lines.append(f"  {label:<15} no run keeps up with the camera ({tol['keeps_up_ratio']:g}x its rate)  "
                             + ("" if key == "offered" else "MISSED"))
                continue
            runs = f", best of {ps['keeping_up_runs']} keeping-up runs" if key == "served" else ""
            lines.append(f"  {label:<15} {_pct(g['gap_pct'])} at V = {_V(g['V'])}, {g['latency_ms']:.0f} ms{runs} {tail}")
        if t["e_star"]:
            parts = [f"{_pct(x['gap_pct'])} at {x['latency_ms']:.0f} ms" + (" (energy-greedy's)" if x["at"] == "energy-greedy" else "")
                     for x in t["e_star"]]
            lines.append(f"  {'E*(L) gap':<15} " + ", ".join(parts))
    n_met = sum(t["met"] for t in report["traces"])
    lines.append(f"frontier: {report['targets_met']} of {report['targets']} targets met; all met on {n_met} of "
                 f"{len(report['traces'])} traces")
    return "\n".join(lines)
