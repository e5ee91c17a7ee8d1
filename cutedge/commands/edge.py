"""``cutedge edge``: run the edge agent, a ZeroMQ ROUTER server running DNN tails.

Every bad argument (endpoint, model, key file, size) is refused with one ``error:`` line before
the server binds. Once serving, the process logs one line per ``--log-interval-s`` and stops
cleanly (exit 0, final line) on SIGINT or SIGTERM.

``--pool ray`` keeps this process as the ZeroMQ front (same endpoint, checks, fair queue,
batching, replies) and runs the tails on ``--pool-workers`` Ray Serve replicas
(``edge_agent.pool``); whatever the pool started is shut down on every exit this process sees.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

import click

from cutedge.cli import UsageFailure


def _check_bind(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from wire.transport import check_endpoint

    try:
        return check_endpoint(value, bind=True)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _parse_models(text: str | None, default_shape: tuple[int, ...]) -> list:
    from dnn_split.models import ModelError, parse_input_shape
    from edge_agent.runner import ModelRequest
    from wire.format import check_model_id

    if text is None:
        from controller.config import configs_dir

        names = sorted(p.stem for p in (configs_dir() / "models").glob("*.yaml"))
        if not names:
            raise UsageFailure(
                "--models: no model given and no built-in model profiles in configs/models"
            )
        text = ",".join(names)
    out = []
    seen = set()
    for item in (s.strip() for s in text.split(",")):
        if not item:
            raise UsageFailure(f"--models {text!r}: empty model name")
        name, _, shape_text = item.partition("@")
        try:
            check_model_id(name)
        except ValueError as exc:
            raise UsageFailure(f"--models: {exc}") from None
        try:
            shape = parse_input_shape(shape_text) if shape_text else default_shape
        except ModelError as exc:
            raise UsageFailure(f"--models {item!r}: {exc}") from None
        if name in seen:
            raise UsageFailure(f"--models: {name} given twice")
        seen.add(name)
        out.append(ModelRequest(name, shape))
    return out


def _setup_logging() -> logging.Logger:
    """Timestamped lines on stderr for the edge's logger only (the root logger is left alone)."""
    log = logging.getLogger("cutedge.edge")
    for h in [h for h in log.handlers if getattr(h, "_cutedge_cli", False)]:
        log.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    handler._cutedge_cli = True  # type: ignore[attr-defined]
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return log


def _access_policy(bind: str, allow: tuple[str, ...], insecure: bool, curve: bool, max_connections: int,
                   handshake_timeout_s: float):
    """Who may connect, from the flags; refuses to expose a CURVE-less edge by default."""
    from edge_agent.access import AccessPolicy, parse_networks
    from wire.transport import is_loopback

    try:
        networks = parse_networks(allow)
    except ValueError as exc:
        raise UsageFailure(str(exc)) from None
    if not curve and not allow and not insecure and not is_loopback(bind):
        raise UsageFailure(
            f"--bind {bind}: reachable from other machines with CURVE off; anyone could make this "
            "edge run its models (and send it endless messages): pass --curve-secret and "
            "--curve-clients, or --allow the devices' addresses, or --insecure to serve anyone"
        )
    who = {}  # without CURVE or --allow: the policy's default, this machine only
    if networks:
        who["allow"] = networks
    elif curve or insecure:
        who["allow"] = None  # the keys decide, or anyone
    return AccessPolicy(**who, max_connections=max_connections, handshake_timeout_s=handshake_timeout_s)


def _positive_int(lo: int, hi: int):
    return click.IntRange(lo, hi)


@click.command("edge")
@click.option(
    "--bind",
    required=True,
    callback=_check_bind,
    help="Endpoint to listen on, tcp://ADDR:PORT (port 0 or *: any free port).",
)
@click.option(
    "--models",
    default=None,
    help="Comma-separated models to serve: torchvision names or package.module:factory, each "
    "optionally MODEL@CxHxW for its input shape. Default: the built-in model profiles.",
)
@click.option(
    "--input-shape",
    default="3,224,224",
    show_default=True,
    help="Input shape (no batch) for models given without @shape.",
)
@click.option(
    "--weights",
    "weights",
    multiple=True,
    metavar="MODEL=FILE",
    help="state_dict for a model (repeatable); default: seeded random weights.",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=int,
    help="Seed of the random weights; must match the device agent's.",
)
@click.option(
    "--device",
    "device",
    default="cpu",
    show_default=True,
    type=click.Choice(["cpu", "cuda"]),
    help="Where the tails run.",
)
@click.option(
    "--workers",
    default=None,
    type=_positive_int(1, 64),
    help="Tail threads (default 1; with --pool, 2 per pool worker: each waits on one replica "
    "call, two keep a replica fed while the other's result travels).",
)
@click.option(
    "--pool",
    "pool",
    default=None,
    type=click.Choice(["ray"]),
    help="Run the tails on a pool of workers on this serving engine (Ray Serve) behind this "
    "endpoint; default: in this process. Joins the cluster at $RAY_ADDRESS, else starts a "
    "local Ray instance.",
)
@click.option(
    "--pool-workers",
    default=None,
    type=_positive_int(1, 1024),
    help="Replicas in the pool (each a process holding every model's tails, one CPU each); default 2.",
)
@click.option(
    "--pool-attempts",
    default=None,
    type=_positive_int(1, 100),
    help="Tries per tail call when a pool worker dies or does not answer; then TAIL_FAILED (default 3).",
)
@click.option(
    "--curve-secret",
    type=click.Path(path_type=Path),
    default=None,
    help="The edge's NAME.key_secret; turns CURVE on.",
)
@click.option(
    "--curve-clients",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder of allowed clients' public NAME.key files.",
)
@click.option(
    "--allow",
    "allow",
    multiple=True,
    metavar="ADDR[/PREFIX]",
    help="Address or network that may connect (repeatable). Default: this machine only "
    "(127.0.0.0/8, ::1) without CURVE; any address with CURVE (the keys decide).",
)
@click.option(
    "--insecure",
    is_flag=True,
    help="Let any address connect without CURVE. Needed to serve a non-loopback address "
    "with neither CURVE nor --allow; anyone who reaches the port can then use the edge.",
)
@click.option(
    "--max-connections",
    default=64,
    show_default=True,
    type=_positive_int(1, 65536),
    help="Open connections (handshakes included); one past it is shut at once.",
)
@click.option(
    "--handshake-timeout-s",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0.1, max=600),
    help="A connection that has not finished its ZeroMQ handshake by then is closed.",
)
@click.option(
    "--served-log",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="CSV file getting one row per result sent (peer, request id, model, cut, tail ms).",
)
@click.option(
    "--max-message-bytes",
    default=64 * 2**20,
    show_default=True,
    type=_positive_int(4096, 2**40),
    help="Largest message accepted (header + tensors); also ZeroMQ's MAXMSGSIZE.",
)
@click.option(
    "--max-request-batch",
    default=16,
    show_default=True,
    type=_positive_int(1, 2**20),
    help="Largest batch (dim 0) one request may carry.",
)
@click.option(
    "--max-batch",
    default=8,
    show_default=True,
    type=_positive_int(1, 4096),
    help="Most frames one tail call runs: requests for the same model and cut, from any "
    "devices, are stacked up to this many rows (1: one request per tail call).",
)
@click.option(
    "--max-wait-ms",
    default=2.0,
    show_default=True,
    type=click.FloatRange(min=0.0, max=1000.0),
    help="How long a worker holding one request waits for more of the same tail before "
    "running what it has (0: never waits, batches only what is already queued).",
)
@click.option(
    "--target-utilisation",
    default=0.9,
    show_default=True,
    type=click.FloatRange(min=0.0, max=1.0, min_open=True),
    help="The load the reported backlog defends: past it the edge reports the backlog of a server "
    "this much slower, so the devices' controllers back off before a real queue forms (1: real queue only).",
)
@click.option(
    "--log-interval-s",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0.05),
    help="Seconds between statistics lines.",
)
def edge(
    bind: str,
    models: str | None,
    input_shape: str,
    weights: tuple[str, ...],
    seed: int,
    device: str,
    workers: int | None,
    pool: str | None,
    pool_workers: int,
    pool_attempts: int,
    curve_secret: Path | None,
    curve_clients: Path | None,
    allow: tuple[str, ...],
    insecure: bool,
    max_connections: int,
    handshake_timeout_s: float,
    served_log: Path | None,
    max_message_bytes: int,
    max_request_batch: int,
    max_batch: int,
    max_wait_ms: float,
    target_utilisation: float,
    log_interval_s: float,
) -> None:
    """Run the edge agent: serve DNN tails to device agents over ZeroMQ."""
    if (curve_secret is None) != (curve_clients is None):
        raise UsageFailure("--curve-secret and --curve-clients go together (CURVE needs both)")
    access = _access_policy(bind, allow, insecure, curve_secret is not None, max_connections, handshake_timeout_s)
    import torch

    from dnn_split.models import ModelError, parse_input_shape
    from edge_agent.runner import ModelRequest, SplitTailRunner
    from wire.curve import KeyFileError, ServerKeys

    try:
        default_shape = parse_input_shape(input_shape)
    except ModelError as exc:
        raise UsageFailure(f"--input-shape: {exc}") from None
    requests = _parse_models(models, default_shape)
    by_name = {r.name: r for r in requests}
    for item in weights:
        name, sep, path = item.partition("=")
        if not sep or not path:
            raise UsageFailure(f"--weights {item!r}: expected MODEL=FILE")
        if name not in by_name:
            raise UsageFailure(
                f"--weights {item!r}: {name} is not among --models ({', '.join(by_name)})"
            )
        by_name[name] = ModelRequest(name, by_name[name].input_shape, path)
    if pool is None and (pool_workers is not None or pool_attempts is not None):
        given = "--pool-workers" if pool_workers is not None else "--pool-attempts"
        raise UsageFailure(f"{given} sets up a pool: it needs --pool ray")
    pool_workers = 2 if pool_workers is None else pool_workers
    pool_attempts = 3 if pool_attempts is None else pool_attempts
    if workers is None:
        workers = 2 * pool_workers if pool else 1
    if device == "cuda" and not torch.cuda.is_available() and not (pool and os.environ.get("RAY_ADDRESS")):
        raise UsageFailure(
            "--device cuda: no CUDA GPU is visible to torch (torch.cuda.is_available() is False)"
        )
    keys = None
    if curve_secret is not None:
        import zmq

        if not zmq.has("curve"):
            raise UsageFailure("--curve-secret: this libzmq was built without CURVE support")
        try:
            keys = ServerKeys.load(curve_secret, curve_clients)
        except KeyFileError as exc:
            raise UsageFailure(str(exc)) from None

    log = _setup_logging()
    if device == "cpu" and workers > 1 and pool is None:
        # one tail per worker thread at a time: split the cores instead of oversubscribing them
        torch.set_num_threads(max(1, torch.get_num_threads() // workers))
    try:
        runner = SplitTailRunner(
            list(by_name.values()),
            device=device,
            seed=seed,
            announce=lambda line: log.info("edge: %s", line),
        )
    except (ModelError, ValueError) as exc:
        raise UsageFailure(f"--models: {exc}") from None
    if pool is not None:
        # the front keeps only the catalog (what it validates requests against); the replicas
        # build the same partitions, and the pool checks that theirs match
        runner = _start_pool(log, list(by_name.values()), runner.catalog(), device, seed,
                             pool_workers, pool_attempts)
    try:
        _serve(log, runner, bind, limits_args=(max_message_bytes, max_request_batch), workers=workers,
               keys=keys, log_interval_s=log_interval_s, access=access, served_log=served_log,
               max_batch=max_batch, max_wait_ms=max_wait_ms, target_utilisation=target_utilisation,
               device=device, pool=pool)
    finally:
        close = getattr(runner, "close", None)
        if close is not None:
            close()
            log.info("edge: pool shut down")


def _start_pool(log: logging.Logger, models: list, catalog, device: str, seed: int, workers: int,
                attempts: int):
    """The pool runner, started with SIGINT/SIGTERM leaving at once (what was started is shut
    down on the way out); one ``error:`` line if it cannot start."""
    from edge_agent.pool import PoolConfig, PoolError, start_ray_pool

    def leave(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGINT, leave)
    signal.signal(signal.SIGTERM, leave)
    log.info("edge: starting a pool of %d workers on Ray Serve (%s)", workers,
             f"cluster {os.environ['RAY_ADDRESS']}" if os.environ.get("RAY_ADDRESS") else "local Ray instance")
    try:
        runner = start_ray_pool(models, catalog, device=device, seed=seed,
                                config=PoolConfig(workers=workers, attempts=attempts))
    except PoolError as exc:
        raise UsageFailure(f"--pool ray: {exc}") from None
    log.info("edge: pool up: %s", runner.description)
    return runner


def _serve(log: logging.Logger, runner, bind: str, *, limits_args: tuple[int, int], workers: int, keys,
           log_interval_s: float, access, served_log: Path | None, max_batch: int, max_wait_ms: float,
           target_utilisation: float, device: str, pool: str | None) -> None:
    from edge_agent.server import EdgeServer, ServerConfig
    from wire.format import Limits
    from wire.transport import is_loopback

    max_message_bytes, max_request_batch = limits_args
    try:
        limits = Limits(max_message_bytes=max_message_bytes, max_batch=max_request_batch)
        config = ServerConfig(
            bind,
            limits,
            workers=workers,
            curve=keys,
            log_interval_s=log_interval_s,
            access=access,
            served_log=served_log,
            max_batch=max_batch,
            max_wait_ms=max_wait_ms,
            target_utilisation=target_utilisation,
        )
        server = EdgeServer(runner, config)
    except ValueError as exc:
        raise UsageFailure(f"--max-message-bytes {max_message_bytes}: {exc}") from None
    try:
        endpoint = server.start()
    except OSError as exc:
        raise UsageFailure(f"--bind {bind}: {exc}") from None

    def on_signal(signum: int, frame: object) -> None:
        server.request_stop(f"signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    served = ", ".join(
        f"{name} ({sum(s is not None for s in cuts)} cuts)"
        for name, cuts in runner.catalog().items()
    )
    log.info(
        "edge: serving %s on %s, device %s%s, %d worker%s, %s, CURVE %s, max message %d bytes; %s",
        served,
        endpoint,
        device,
        f" (pool: {runner.description})" if pool else "",
        workers,
        "" if workers == 1 else "s",
        f"batches of up to {max_batch} frames (wait {max_wait_ms:g} ms)" if max_batch > 1
        else "no batching",
        f"on ({len(keys.clients)} client keys)" if keys else "off",
        max_message_bytes,
        access.describe(),
    )
    if keys is None and not is_loopback(endpoint):
        log.warning(
            "edge: %s is reachable from other machines and CURVE is off: anyone who can reach "
            "it can send tensors to this edge, make it run its models and read the results, "
            "and the traffic is in the clear; %s; pass --curve-secret and --curve-clients "
            "(`cutedge keys` makes the key files) or bind 127.0.0.1",
            endpoint,
            "--insecure lets every address in" if access.allow is None
            else "only --allow addresses may connect, but an address can be spoofed on a shared network",
        )
    server.serve()
