"""A pool of edge workers on Ray Serve, behind the same ZeroMQ front the devices already use.

The :class:`~edge_agent.server.EdgeServer` stays the front: it owns the ROUTER socket, the
access gate, the fair per-device queue, batching across devices, BUSY, the served log and every
reply. Only its :class:`~edge_agent.runner.TailRunner` changes: :class:`PoolRunner` sends each
(already validated) request or batch to one replica of a Ray Serve deployment, and each replica
(:class:`TailReplica`, one Ray actor process) holds the same
:class:`~edge_agent.runner.SplitTailRunner` the local edge would build (same models, seed,
weights), so a device cannot tell a pool from one edge machine.

Failures. A tail is a pure function of its inputs, so a call whose replica died (process killed,
out of memory, node lost) or did not answer within ``attempt_timeout_s`` is sent again, to
another replica when there is one (Serve's router drops a replica once a call to it has failed
with ``ActorDiedError``, and the Serve controller starts a replacement), at most ``attempts``
times in all; then the call raises :class:`PoolUnavailable` and the server answers TAIL_FAILED
for that request. Never a silent drop, and never two answers: the runner returns one value per
call, whatever happened to earlier attempts (a late result of a timed-out attempt is cancelled
and thrown away), and the server replies once per request. An exception raised by the tail
itself is deterministic, so it is not retried: the replica catches it and returns it as a value,
the runner raises :class:`TailError`, and the server treats it like a local tail's failure (a
failed batch is re-run one request at a time, so a bad request fails alone). That split is why
the replica reports errors as values: every exception the handle raises is then the pool's, not
the tail's.

Ray. Without ``$RAY_ADDRESS`` the pool starts a local Ray instance (``address="local"``: with
``None`` Ray would join the cluster the last ``ray start`` on this machine recorded in
``/tmp/ray``, even a dead one) sized to the workers (``num_cpus`` = workers x
``cpus_per_worker``), without dashboard, and Serve without its HTTP proxy (the deployment is
reached through its handle only); :meth:`PoolRunner.close` shuts both down. With
``$RAY_ADDRESS`` it joins that cluster, deploys its own application (a unique name) and on close
deletes only that application. Each replica sets torch's intra-op threads to
``cpus_per_worker`` (1 by default), so N replicas on N cores do not oversubscribe them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from controller.config import one_line
from edge_agent.runner import ModelRequest
from wire.format import Catalog

log = logging.getLogger("cutedge.edge")

#: the engines ``cutedge edge --pool`` knows
ENGINES = ("ray",)
#: the deployment's name inside the application (an application per edge)
DEPLOYMENT = "TailReplica"


class PoolError(RuntimeError):
    """The pool could not be started (engine missing, cluster unreachable, replicas failing)."""


class PoolUnavailable(RuntimeError):
    """No replica answered a call within the allowed attempts."""


class TailError(RuntimeError):
    """The tail raised in a replica (deterministic: not retried)."""


@dataclass(frozen=True)
class PoolConfig:
    """How many replicas, what each may use, and how hard a call tries.

    ``workers``: replicas of the tail deployment. ``cpus_per_worker``: Ray CPUs each replica
    asks for, and torch's intra-op threads in it. ``max_ongoing``: calls a replica runs at once
    (Serve queues the rest in the front's router, so a replica that is busy is not sent more).
    ``attempts``: tries per call before :class:`PoolUnavailable`; ``attempt_timeout_s``: how
    long one try may take before it counts as lost. ``start_timeout_s``: how long the replicas
    may take to come up (they build every model's partition).
    """

    workers: int = 2
    cpus_per_worker: int = 1
    max_ongoing: int = 1
    attempts: int = 3
    attempt_timeout_s: float = 60.0
    start_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        for name in ("workers", "cpus_per_worker", "max_ongoing", "attempts"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        for name in ("attempt_timeout_s", "start_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")


class TailReplica:
    """What one replica runs: a :class:`~edge_agent.runner.SplitTailRunner` of its own.

    Every method returns ``(status, pid, value)``: ``("ok", pid, value)``, or ``("error", pid,
    "Type: message")`` when the tail raised, so the caller tells a failing tail from a lost
    replica without guessing at exception classes. ``pid`` is this process's, so the front can
    say which worker answered (and an operator or a test can find the process).
    """

    def __init__(self, models: Sequence[ModelRequest], device: str, seed: int, threads: int):
        from edge_agent.runner import SplitTailRunner

        torch.set_num_threads(threads)
        self.pid = os.getpid()
        self.runner = SplitTailRunner(list(models), device=device, seed=seed)

    def catalog(self) -> tuple[str, int, Catalog]:
        return "ok", self.pid, self.runner.catalog()

    def run_batch(
        self, model: str, cut: int, batch: Sequence[Sequence[torch.Tensor]]
    ) -> tuple[str, int, Any]:
        try:
            return "ok", self.pid, self.runner.run_batch(model, cut, batch)
        except Exception as exc:  # the tail's own failure: a value, not a lost replica
            return "error", self.pid, f"{type(exc).__name__}: {exc}"


#: ``call(method, args, timeout_s)``: run ``method`` of one replica; the replica's reply, or
#: any exception when the replica was lost or did not answer in time
ReplicaCall = Callable[[str, tuple, float], tuple[str, int, Any]]


class PoolRunner:
    """A :class:`~edge_agent.runner.BatchTailRunner` whose tails run on a pool of replicas.

    ``call`` reaches one replica (see :data:`ReplicaCall`); ``catalog`` is what the front
    validates requests against, and the replicas must serve the same (checked at start).
    ``on_close`` releases the engine. Thread-safe: the server's workers call it at once.
    """

    def __init__(
        self,
        call: ReplicaCall,
        catalog: Catalog,
        config: PoolConfig = PoolConfig(),
        *,
        on_close: Callable[[], None] | None = None,
        describe_pool: str = "",
    ):
        self._call_replica = call
        self._catalog = catalog
        self.config = config
        self._on_close = on_close
        self.description = describe_pool
        self._lock = threading.Lock()
        self.pids: list[int] = []  # replicas that have answered, in order of first answer
        self.retries = 0  # attempts that were lost and tried again
        self.failed_calls = 0  # calls that ran out of attempts
        self._closed = False

    # -- the TailRunner contract -------------------------------------------------------------
    def catalog(self) -> Catalog:
        return self._catalog

    def run(self, model: str, cut: int, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return self.run_batch(model, cut, [inputs])[0]

    def run_batch(
        self, model: str, cut: int, batch: Sequence[Sequence[torch.Tensor]]
    ) -> list[list[torch.Tensor]]:
        # plain lists of tensors travel (Ray pickles them); views of the received frames are
        # fine, the pickle copies what it needs
        out = self.call("run_batch", model, cut, [list(x) for x in batch])
        if len(out) != len(batch):
            raise RuntimeError(f"the pool returned {len(out)} results for {len(batch)} requests")
        return out

    # -- calls -------------------------------------------------------------------------------
    def call(self, method: str, *args: Any) -> Any:
        """``method`` on one replica, tried again on a lost replica; see the module docstring."""
        cfg = self.config
        last: BaseException | None = None
        for attempt in range(1, cfg.attempts + 1):
            if self._closed:
                raise PoolUnavailable("the pool is closed")
            try:
                status, pid, value = self._call_replica(method, args, cfg.attempt_timeout_s)
            except Exception as exc:  # the replica died, or did not answer in time
                last = exc
                if attempt < cfg.attempts:
                    with self._lock:
                        self.retries += 1
                    log.warning("edge: pool: %s lost on attempt %d of %d (%s); trying again",
                                method, attempt, cfg.attempts, one_line(exc))
                    time.sleep(min(1.0, 0.05 * 2 ** (attempt - 1)))  # let the router see the death
                continue
            self._note_pid(pid)
            if status != "ok":
                raise TailError(str(value))
            return value
        with self._lock:
            self.failed_calls += 1
        assert last is not None
        raise PoolUnavailable(
            f"no pool worker answered {method} in {cfg.attempts} attempts (last: {one_line(last)})"
        )

    def _note_pid(self, pid: int) -> None:
        with self._lock:
            if pid in self.pids:
                return
            self.pids.append(pid)
        log.info("edge: pool worker pid %d serving", pid)

    def close(self) -> None:
        """Release the engine (idempotent); calls after it fail at once."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._on_close is not None:
            self._on_close()

    def __enter__(self) -> PoolRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- Ray Serve ---------------------------------------------------------------------------------
def _quiet_ray_loggers() -> None:
    # the driver's "serve" logger prints an INFO line per deploy step on stderr; the edge has
    # its own log lines for what matters
    for name in ("ray", "ray.serve"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _deploy_failure(serve: Any, app: str, exc: BaseException) -> str:
    """Why a deployment failed, in one line: the replica constructor's exception when Serve
    recorded one (``serve.run`` itself only says that the deployment failed)."""
    try:
        message = serve.status().applications[app].deployments[DEPLOYMENT].message
    except Exception:  # no status to read: the exception is all there is
        message = ""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    return lines[-1] if lines else one_line(exc)


def start_ray_pool(
    models: Sequence[ModelRequest],
    catalog: Catalog,
    *,
    device: str = "cpu",
    seed: int = 0,
    config: PoolConfig = PoolConfig(),
) -> PoolRunner:
    """Deploy ``config.workers`` replicas of the tails on Ray Serve; a :class:`PoolRunner`.

    ``catalog`` is the one the front built from the same ``models`` (it validates requests
    with it); a replica serving another one (another cutedge or torch version on a cluster's
    workers) is refused. Raises :class:`PoolError` with one line on any failure to start, after
    shutting down whatever was started.
    """
    try:
        import ray
        from ray import serve
    except ImportError:
        raise PoolError("--pool ray needs Ray Serve: pip install 'cutedge[serve]' (or 'ray[serve]')") from None
    _quiet_ray_loggers()
    address = os.environ.get("RAY_ADDRESS") or None
    own_ray = not ray.is_initialized()
    app = f"cutedge-edge-{uuid.uuid4().hex[:8]}"
    gpus = 0.0
    if device == "cuda":
        # one machine's GPUs shared by the replicas; on a cluster one GPU each
        gpus = 1.0 if address else min(1.0, max(1, torch.cuda.device_count()) / config.workers)
    deployed = False

    def shut_down() -> None:
        local = own_ray and not address  # the instance is ours: it all goes
        if deployed and not local:
            try:
                serve.delete(app)  # a cluster we joined keeps running; our replicas go
            except Exception as exc:
                log.warning("edge: pool: could not delete %s: %s", app, one_line(exc))
        if local:
            try:
                serve.shutdown()
            except Exception as exc:  # the instance goes below anyway
                log.debug("edge: pool: serve shutdown: %s", one_line(exc))
        if own_ray:
            ray.shutdown()

    try:
        if own_ray:
            opts: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                    "logging_level": logging.ERROR}
            if not address:
                opts["num_cpus"] = config.workers * config.cpus_per_worker
                if gpus:
                    opts["num_gpus"] = torch.cuda.device_count()
            try:
                ray.init(address=address or "local", **opts)
            except ConnectionError as exc:
                hint = "" if os.environ.get("RAY_AUTH_MODE") else (
                    " (a cluster with token authentication needs RAY_AUTH_MODE=token here)")
                raise PoolError(f"ray: cannot reach the cluster at {address} ($RAY_ADDRESS): "
                                f"{one_line(exc)}{hint}") from None
        serve.start(proxy_location="Disabled", logging_config={"log_level": "WARNING"})
        actor: dict[str, Any] = {"num_cpus": config.cpus_per_worker}
        if gpus:
            actor["num_gpus"] = gpus
        deployment = serve.deployment(
            TailReplica,
            name=DEPLOYMENT,
            num_replicas=config.workers,
            max_ongoing_requests=config.max_ongoing,
            ray_actor_options=actor,
            max_constructor_retry_count=2,
            graceful_shutdown_timeout_s=5,
        )
        app_obj = deployment.bind(list(models), device, seed, config.cpus_per_worker)
        box: dict[str, Any] = {}

        def deploy() -> None:
            try:
                box["handle"] = serve.run(app_obj, name=app, route_prefix=None)
            except BaseException as exc:  # handed to the caller's thread
                box["error"] = exc

        # serve.run waits for every replica to be up and has no timeout of its own: a cluster
        # without room for the replicas would wait forever
        deployed = True
        t = threading.Thread(target=deploy, name="edge-pool-deploy", daemon=True)
        t.start()
        t.join(config.start_timeout_s)
        if t.is_alive():
            raise PoolError(f"ray: {config.workers} replicas not up within {config.start_timeout_s:g} s "
                            "(does the cluster have the CPUs/GPUs they ask for?)")
        if "error" in box:
            raise PoolError(f"ray: the tail replicas did not start: {_deploy_failure(serve, app, box['error'])}")
        handle = box["handle"]

        def call(method: str, args: tuple, timeout_s: float) -> tuple[str, int, Any]:
            response = getattr(handle, method).remote(*args)
            try:
                return response.result(timeout_s=timeout_s)
            except TimeoutError:
                response.cancel()  # its late result, if any, is thrown away
                raise

        runner = PoolRunner(
            call, catalog, config, on_close=shut_down,
            describe_pool=f"Ray Serve app {app}, {config.workers} replicas "
            f"({'cluster ' + address if address else 'local Ray instance'})",
        )
        theirs = runner.call("catalog")
        if theirs != catalog:
            raise PoolError("ray: the replicas serve other cuts than this edge computed "
                            "(another cutedge or torch version on the cluster's workers?)")
        return runner
    except BaseException:
        shut_down()
        raise


__all__ = [
    "ENGINES",
    "PoolConfig",
    "PoolError",
    "PoolRunner",
    "PoolUnavailable",
    "TailError",
    "TailReplica",
    "start_ray_pool",
]
