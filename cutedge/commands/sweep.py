"""``cutedge sweep``: policies x V x traces x seeds in parallel; sweep.csv, bound.csv, tradeoff.png.

Never imports torch or zmq.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import click

from cutedge.cli import UsageFailure
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
@click.option("--out", default="runs/sweep", show_default=True, help="Output folder.")
@click.option("--no-plot", is_flag=True, help="Skip tradeoff.png.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--hindsight", is_flag=True, help="Also solve the hindsight bound curve E*(L) per trace (hindsight.csv; slow).")
def sweep(config_path, policies, V, traces, trace_format, trace_scale, trace_root, seeds, workers, executor, duration, out,
          no_plot, quiet, hindsight=False):
    """Sweep V and policies over traces (parallel), with the stationary LP bound per trace.

    Writes sweep.csv (one row per policy x V x trace x seed), bound.csv (p* per trace and each V
    policy's gap to it), tradeoff.png and sweep.json (the setup and notes) to --out.
    """
    import os

    from simulation.baselines import parse_policies
    from simulation.sweep import (
        SweepConfig,
        SweepError,
        TraceEntry,
        check_V,
        compare_to_baselines,
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
    n_workers = workers or os.cpu_count() or 1
    units = cfg.units()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    click.echo(
        f"sweep {cfg.name}: {len(cfg.policies)} policies, {len(cfg.V)} V values, {len(cfg.traces)} traces x "
        f"{cfg.seeds} seeds = {len(units)} units on {n_workers} {executor} workers",
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
    write_sweep(out_dir, cfg, result, n_workers, executor, plot=not no_plot, hindsight=hind_rows)
    click.echo(format_table(result.rows, result.bounds))
    click.echo(format_comparison(compare_to_baselines(result.rows)))
    files = ["sweep.csv", "bound.csv", "sweep.json"] + ([] if no_plot else ["tradeoff.png"])
    files += ["hindsight.csv"] if hind_rows is not None else []
    click.echo(f"{len(result.rows)} runs in {result.wall_s:.1f} s; wrote " + ", ".join(str(out_dir / f) for f in files))


def _builtin(name: str) -> bool:
    from controller.config import configs_dir

    return (configs_dir() / "experiments" / f"{name}.yaml").exists()


def write_sweep(out_dir: Path, cfg, result, workers: int, executor: str, plot: bool = True,
                hindsight: list[dict] | None = None) -> None:
    from simulation.sweep import (
        BOUND_FIELDS,
        HINDSIGHT_FIELDS,
        ROW_FIELDS,
        compare_to_baselines,
        write_csv,
    )

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
        "controller_vs_baselines": compare_to_baselines(result.rows),
    }
    write_json(out_dir / "sweep.json", meta)
    if plot:
        from simulation.tradeoff_plots import plot_tradeoff

        plot_tradeoff(result.rows, result.bounds, out_dir / "tradeoff.png", title=figure_title(meta), hindsight=hindsight)


def figure_title(meta: dict) -> str:
    model = Path(str(meta.get("model", ""))).stem
    board = Path(str(meta.get("board", ""))).stem
    fps = meta.get("arrivals", {}).get("rate_fps")
    net = Path(str(meta.get("network", ""))).stem
    dur = meta.get("duration_s")
    parts = [f"{model} on {board}", f"{fps:g} fps camera" if fps else "", f"{net} uplink", f"{dur:g} s runs" if dur else ""]
    return "Energy / latency trade-off: " + ", ".join(p for p in parts if p)


def format_comparison(verdicts: list[dict]) -> str:
    """Where the controller's curve is not on or below a baseline's point, say where and by how much."""
    if not verdicts:
        return ""
    above = [v for v in verdicts if v["verdict"] == "above" or (v["verdict"] == "faster" and v["excess_pct"] > 0.1)]
    faster = [v for v in verdicts if v["verdict"] == "faster" and v["excess_pct"] <= 0.1]
    lines = []
    if not above:
        lines.append("cutedge's curve is on or below every baseline that serves the load at the baselines' latencies.")
    else:
        lines.append("cutedge uses MORE energy than these baselines at the same latency:")
        for v in above:
            lines.append(
                f"  {v['trace']}: {v['baseline']} {v['energy_per_frame_j']:.3f} J/frame at {v['latency_ms']:.0f} ms; "
                f"cutedge {v['controller_energy_j']:.3f} J/frame (+{v['excess_pct']:.1f} %, V ~ {v['V']:g})"
            )
    if faster:
        lines.append("faster than every cutedge run (cutedge spends less energy but cannot match the latency):")
        for v in faster:
            lines.append(
                f"  {v['trace']}: {v['baseline']} {v['energy_per_frame_j']:.3f} J/frame at {v['latency_ms']:.0f} ms; "
                f"cutedge's fastest run {v['controller_energy_j']:.3f} J/frame ({v['excess_pct']:+.1f} %, V = {v['V']:g})"
            )
    return "\n".join(lines)


def format_table(rows: list[dict], bounds: list[dict]) -> str:
    """Per trace: p*, the controller's best gap among runs that serve the load, each baseline."""
    lines = []
    traces = list(dict.fromkeys(r["trace"] for r in rows))
    for trace in traces:
        bs = [b for b in bounds if b["trace"] == trace]
        p = bs[0]["p_star_j_per_frame"] if bs else math.nan
        if math.isfinite(p):
            lines.append(f"{trace}: LP bound p* = {p:.3f} J/frame")
        else:
            status = bs[0].get("status", "no bound") if bs else "no bound"
            lines.append(f"{trace}: LP bound: {status} (no stationary policy serves the load within the constraints)")
        ctl = [b for b in bs if b.get("policy") == "cutedge" and b.get("serves_load")]
        if ctl:
            best = min(ctl, key=lambda b: b["gap_pct"])
            lines.append(
                f"  cutedge: {best['gap_pct']:+.1f} % from p* at V = {best['V']:g}, its closest run that serves the load "
                f"({best['gap_served_pct']:+.1f} % from the bound for the load it served)"
            )
        for r in rows:
            if r["trace"] != trace or r["V"] is not None:
                continue
            lat = r["latency_ms_mean"]
            lines.append(
                f"  {r['policy']:<14} {r['energy_per_frame_j']:.3f} J/frame, {lat:.0f} ms mean latency, "
                f"{r['throughput_fps']:.2f} fps" + (f", {r['choice']}" if r.get("choice") else "")
            )
    return "\n".join(lines)
