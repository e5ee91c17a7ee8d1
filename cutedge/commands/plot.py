"""``cutedge plot DIR``: redraw the trade-off figures of a sweep folder without re-running it."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cutedge.cli import UsageFailure


@click.command("plot")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", default=None, help="Output PNG (default: FOLDER/tradeoff.png).")
@click.option("--title", default=None, help="Figure title (default: from FOLDER/sweep.json).")
def plot(folder: Path, out, title):
    """Redraw tradeoff.png from FOLDER/sweep.csv (and FOLDER/bound.csv, FOLDER/hindsight.csv when
    present) and print the frontier table (with the gaps to E*(L) when hindsight.csv is there) and,
    for a sweep over device counts, the many-devices table."""
    from cutedge.commands.sweep import format_frontier
    from simulation.frontier import frontier_report
    from simulation.sweep import HINDSIGHT_REQUIRED, ROW_FIELDS, read_csv
    from simulation.tradeoff_plots import plot_tradeoff

    if not folder.is_dir():
        raise UsageFailure(f"{folder}: not a folder (give the --out folder of a cutedge sweep)")
    rows = read_csv(folder / "sweep.csv")
    if not rows:
        raise UsageFailure(f"{folder / 'sweep.csv'}: no rows")
    missing = [c for c in ("policy", "V", "trace", "energy_per_frame_j", "latency_ms_mean", "throughput_fps",
                           "frames_arrived", "frames_completed", "frames_dropped", "duration_s") if c not in rows[0]]
    if missing:
        raise UsageFailure(f"{folder / 'sweep.csv'}: missing columns {', '.join(missing)} (expected those of cutedge sweep: "
                           f"{', '.join(ROW_FIELDS[:6])}, ...)")
    bounds = read_csv(folder / "bound.csv") if (folder / "bound.csv").exists() else []
    hind_path = folder / "hindsight.csv"
    hindsight = read_csv(hind_path, HINDSIGHT_REQUIRED) if hind_path.exists() else None
    if title is None:
        title = ""
        meta_path = folder / "sweep.json"
        if meta_path.exists():
            try:
                from cutedge.commands.sweep import figure_title

                title = figure_title(json.loads(meta_path.read_text()))
            except (ValueError, TypeError, AttributeError):
                click.echo(f"warning: {meta_path}: unreadable, drawing without a title", err=True)
    path = Path(out) if out else folder / "tradeoff.png"
    plot_tradeoff(rows, bounds, path, title=title, hindsight=hindsight)
    report = frontier_report(rows, bounds, hindsight)
    if report["traces"]:
        click.echo(format_frontier(report))
    from simulation.scaling import devices_report, format_devices, has_devices

    if has_devices(rows):
        click.echo(format_devices(devices_report(rows)))
    click.echo(f"wrote {path}")
