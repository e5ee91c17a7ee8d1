"""``cutedge device run``: the live device agent against an edge agent (see device_agent/runtime.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from cutedge.cli import UsageFailure
from cutedge.jsonout import write_json


def check_edges(endpoints) -> list[str]:
    """The ``--edge`` values, checked: each ``tcp://HOST:PORT``, none given twice. ValueError
    with one line naming the bad value otherwise."""
    from wire.transport import check_endpoint

    seen: list[str] = []
    for value in endpoints:
        try:
            check_endpoint(value, bind=False)
        except ValueError as exc:
            raise ValueError(f"--edge {exc}") from None
        if value in seen:
            raise ValueError(f"--edge {value!r} given twice")
        seen.append(value)
    if not seen:
        raise ValueError("--edge: give at least one edge endpoint")
    return seen


@click.command("run")
@click.option("--edge", "edge_endpoint", required=True, multiple=True,
              help="Edge agent endpoint, e.g. tcp://10.0.0.2:5555. Repeat it for several edges: each request "
                   "goes to the live one with the least expected wait (its reported backlog, drained, plus this "
                   "device's requests in flight there); one that dies is failed over (docs/wire-format.md).")
@click.option("--model", default="resnet50", show_default=True, help="torchvision name or package.module:factory (the edge must serve it).")
@click.option("--input-shape", default="3,224,224", show_default=True, help="C,H,W of one frame.")
@click.option("--weights", default=None, help="state_dict file (the edge must load the same); default: seeded random weights.")
@click.option("--backend", default="auto", show_default=True, type=click.Choice(["auto", "sysfs", "jtop", "nvml", "simulated"]))
@click.option("--board", default=None, help="Board profile for levels and power model (configs/boards); default: the simulated backend's board.")
@click.option("--sysfs-root", default="/", show_default=True, help="Root of the sysfs tree (a copy of it, for tests).")
@click.option("--network", default="lte-shannon", show_default=True, help="Uplink power model (configs/network).")
@click.option("--profile", "profile_path", default=None, help="Model profile measured on this board (cutedge profile); default: FLOPs estimate.")
@click.option("--device", "torch_device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]),
              help="Where heads run: cuda (the board's GPU, whose clock the controller sets), cpu, or auto (cuda when torch sees one).")
@click.option("--source", default="synthetic", show_default=True, help="synthetic, or a folder of .jpg/.png images.")
@click.option("--fps", default=10.0, show_default=True, type=click.FloatRange(min=0.01), help="Camera frame rate.")
@click.option("--frames", default=None, type=click.IntRange(min=1), help="Frames to process (default 300 unless --duration).")
@click.option("--duration", default=None, type=click.FloatRange(min=0.1), help="Seconds of camera frames.")
@click.option("--link-trace", default=None, help="Shape the uplink to follow this trace (one-machine emulation).")
@click.option("--trace-format", default="auto", show_default=True, type=click.Choice(["auto", "mahimahi", "two-column", "gnettrack", "nuwins"]))
@click.option("--trace-scale", default=1.0, show_default=True, type=click.FloatRange(min=0.0, min_open=True))
@click.option("--V", "V", default=None, type=click.FloatRange(min=0.0), help="Lyapunov trade-off knob (frames^2/J).")
@click.option("--slot", "slot_s", default=0.1, show_default=True, type=click.FloatRange(min=0.005, max=10.0), help="Slot length in seconds.")
@click.option("--edge-timeout", default=2.0, show_default=True, type=click.FloatRange(min=0.05), help="Seconds without a reply before the edge is taken as down.")
@click.option("--verify-every", default=0, show_default=True, type=click.IntRange(min=0), help="Check every N-th edge result against the full model on the device.")
@click.option("--curve-server-key", default=None, help="The edge's public key file (turns CURVE on); with several --edge, every edge's (they share one key pair).")
@click.option("--curve-client-secret", default=None, help="This device's secret key file (with --curve-server-key).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--out", default="runs/device", show_default=True, help="Output folder.")
@click.option("--calibrate/--no-calibrate", default=True, show_default=True,
              help="Fold measured head times and powers into the controller's tables as the run goes.")
def run(edge_endpoint, model, input_shape, weights, backend, board, sysfs_root, network, profile_path, torch_device, source, fps, frames, duration,
        link_trace, trace_format, trace_scale, V, slot_s, edge_timeout, verify_every, curve_server_key, curve_client_secret, seed, out,
        calibrate):
    """Run the device agent: heads here, tails on the edge, clock and rate by the controller.

    Writes summary.json (the keys of `cutedge simulate` plus frames.offloaded and frames.local,
    frames.failed_over, and per edge its counts under edges), frames.csv (one row per frame) and
    timeseries.png to --out. The GPU clock is restored on every
    exit path.
    """
    from controller.calibration import CalibrationConfig
    from controller.config import ConfigError
    from controller.profiles import load_board, load_model, load_network, model_from_mapping
    from device_agent.clock import BackendError, open_backend
    from device_agent.link import CapacityCurve
    from device_agent.runtime import LiveAgent, LiveConfig, folder_source
    from dnn_split.models import ModelError, parse_input_shape
    from dnn_split.partition import partition
    from dnn_split.profile import estimate_profile
    from simulation.experiment import Experiment
    from simulation.plots import plot_timeseries
    from simulation.traces import load_trace
    from wire.transport import EdgeClient

    try:
        endpoints = check_edges(edge_endpoint)
    except ValueError as exc:
        raise UsageFailure(str(exc)) from None
    if frames is not None and duration is not None:
        raise UsageFailure("give --frames or --duration, not both")
    if (curve_server_key is None) != (curve_client_secret is None):
        raise UsageFailure("CURVE needs both --curve-server-key and --curve-client-secret")
    try:
        shape = parse_input_shape(input_shape)
    except Exception as exc:  # noqa: BLE001 - reported as one line
        raise UsageFailure(f"--input-shape: {exc}") from None
    try:
        sel = open_backend(backend, board=board, sysfs_root=sysfs_root)
    except BackendError as exc:
        raise UsageFailure(str(exc)) from None
    for note in sel.notes:
        click.echo(note, err=True)
    be = sel.backend
    board_name = board or getattr(getattr(be, "board", None), "name", None)
    if board_name is None:
        raise UsageFailure(f"backend {be.name} does not name a board: give --board (configs/boards) for the power model")
    board_profile = load_board(board_name)
    load_network(network)  # a bad name fails here, before the model is built
    keys = None
    if curve_server_key:
        from wire.curve import ClientKeys, KeyFileError

        try:
            keys = ClientKeys.load(curve_server_key, curve_client_secret)
        except KeyFileError as exc:
            raise UsageFailure(f"CURVE: {exc}") from None
    try:
        src = folder_source(source, shape) if source != "synthetic" else None
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise UsageFailure(f"--source {source}: {exc.strerror}" if exc.strerror else f"--source {exc}") from None
    import torch

    if torch_device == "auto":
        torch_device = "cuda" if torch.cuda.is_available() else "cpu"
    elif torch_device == "cuda" and not torch.cuda.is_available():
        raise UsageFailure("--device cuda: torch sees no CUDA device here (use --device cpu, or a CUDA build of torch)")
    try:
        part = partition(model, shape, weights=weights, seed=seed, announce=lambda m: click.echo(m, err=True))
    except ModelError as exc:
        raise UsageFailure(f"--model {model}: {exc}") from None
    part.to(torch_device)
    if profile_path:
        model_profile = load_model(profile_path)
    else:
        model_profile = model_from_mapping(estimate_profile(part, board_profile), f"FLOPs estimate of {model}")
    curve = None
    trace = None
    if link_trace:
        trace = load_trace(link_trace, format=trace_format, scale=trace_scale, seed=seed)
        curve = CapacityCurve.from_trace(trace, slot_s)
    ctl = Experiment().controller
    if V is not None:
        ctl = replace(ctl, V=V)
    cfg = LiveConfig(model=model, input_shape=shape, board=board_profile.name, network=network, slot_s=slot_s, fps=fps,
                     frames=frames if frames is not None else (None if duration else 300), duration_s=duration,
                     controller=ctl, edge_timeout_s=edge_timeout, verify_every=verify_every, seed=seed, device=torch_device,
                     calibration=CalibrationConfig() if calibrate else None)
    # one connection per edge, all with the same CURVE keys (one server key for every edge)
    clients = [EdgeClient(endpoint, curve=keys) for endpoint in endpoints]
    try:
        try:
            agent = LiveAgent(cfg, part, model_profile, be, clients, link=curve, source=src, log=lambda m: click.echo(m, err=True))
        except ValueError as exc:  # a --profile measured for other cuts than this partition's
            raise UsageFailure(f"--profile {profile_path}: {exc}") from None
        if trace is not None:
            agent.trace_path, agent.trace_format = trace.path, trace.format
            # the file as read, before --trace-scale (as in `cutedge simulate`)
            agent.trace_mean_bps, agent.trace_duration_s = float(trace.mean_bps) / trace_scale, float(trace.duration_s)
        stopped: BaseException | None = None
        try:
            summary = agent.run()
        except (SystemExit, KeyboardInterrupt) as exc:  # SIGTERM/SIGINT: the clock is already back
            stopped = exc
            summary = agent.summary()
            summary["stopped"] = f"interrupted at {agent.elapsed_s:.1f} s ({type(exc).__name__} {getattr(exc, 'code', '')})".strip()
    except ConfigError:
        raise
    except BackendError as exc:
        raise UsageFailure(str(exc)) from None
    finally:
        for client in clients:
            client.close()
        be.close()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "summary.json", summary)
    agent.write_frames_csv(out_dir / "frames.csv")
    slots = agent.slot_arrays()
    if slots:
        slots["level"] = slots["gpu_hz"]
        slots["process"] = slots["process"].astype(bool)
        plot_timeseries(slots, list(agent.system.cut_names), out_dir / "timeseries.png",
                        title=f"live: {model} on {board_profile.name} ({be.name} backend), V={cfg.controller.V:g}")
    f = summary["frames"]
    lat = summary["latency_ms"]
    click.echo(f"frames: {f['arrived']} arrived, {f['completed']} completed ({f['offloaded']} via the edge, "
               f"{f['local']} on the device, {f['fallback']} of them fallback), {f['in_flight']} not completed")
    if len(endpoints) > 1:
        click.echo("edges: " + ", ".join(f"{e['endpoint']} {e['offloaded']} frames" for e in summary["edges"])
                   + f"; {f['failed_over']} failed over to another edge, {f['late_results']} late results dropped")
    click.echo(f"throughput {summary['throughput_fps']:.2f} fps, latency mean {lat['mean']:.0f} ms p95 {lat['p95']:.0f} ms, "
               f"energy {summary['energy_per_frame_j']:.3f} J/frame")
    if summary["backend"]["restored"]:
        click.echo("restored: " + ", ".join(f"{k}={v}" for k, v in summary["backend"]["restored"].items()))
    click.echo(f"wrote {out_dir / 'summary.json'}, {out_dir / 'frames.csv'}, {out_dir / 'timeseries.png'}")
    if stopped is not None:
        click.echo(f"stopped by a signal: {f['in_flight']} frame(s) had not completed; they are counted as in_flight", err=True)
        raise stopped

