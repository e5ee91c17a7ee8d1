"""Where a sweep's units run: in this process, in local processes, on dask or on ray.

Every executor runs the same function (:func:`run_caught`, a wrapper of
:func:`simulation.sweep.run_unit`) on the same picklable units and hands each result to the
caller in the calling process, as the units finish; the sweep puts them back in unit order, so
the files are the same on every executor.

Two rules hold on all of them:

- A unit that raises comes back as a :class:`UnitFailure`, a plain value, and the caller raises
  :class:`UnitError`, which names the unit (index, trace, seed). The exception itself never
  crosses a process: a :class:`~controller.config.ConfigError` cannot be unpickled (its
  ``__init__`` takes three arguments), which broke a local process pool outright and left
  dask and ray to print the worker's traceback. A worker that dies (killed, out of memory) is
  reported the same way, naming the unit whose result was lost.
- What an executor started (a process pool, a dask ``LocalCluster``, a local ray instance) is
  shut down before it returns or raises, error or Ctrl-C. A cluster reached by address
  (``$DASK_SCHEDULER_ADDRESS``, ``$RAY_ADDRESS``, or a ray already initialized in this
  process) is left running, with this sweep's pending units cancelled.

Local clusters listen on loopback (dask; ray's own servers bind every interface, behind its token
authentication) and start no dashboard; ``workers`` sizes them. On a cluster given by address,
``workers`` is ignored and the cluster's own workers run the units; they need cutedge importable
(the same version), as they import :mod:`simulation.sweep` to run a unit.
"""

from __future__ import annotations

import logging
import os
import traceback as tb
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from controller.config import one_line
from simulation.sweep import EXECUTORS, SweepError, Unit, UnitResult

Finish = Callable[[UnitResult], None]

# No dashboard; the scheduler's small HTTP server (health, metrics) on a free loopback port, not
# 8787, which a second cluster would find taken.
LOCAL_DASK = {"dashboard_address": None, "scheduler_kwargs": {"dashboard_address": "127.0.0.1:0"}}


@dataclass(frozen=True)
class UnitFailure:
    """What a worker returns for a unit that raised: the error in one line, its traceback."""

    index: int
    error: str
    traceback: str


class UnitError(SweepError):
    """A unit that failed, on any executor; the message names the unit.

    ``unit`` is the unit; ``remote_traceback`` the worker's traceback text (empty where the
    exception is chained instead, in this process, or where the worker died without one).
    """

    def __init__(self, unit: Unit, error: str, remote_traceback: str = ""):
        self.unit = unit
        self.error = error
        self.remote_traceback = remote_traceback
        super().__init__(f"unit {unit.index} ({unit.trace.name}, seed {unit.seed}) failed: {error}")

    def __reduce__(self):  # picklable, unlike an exception whose __init__ differs from its args
        return (UnitError, (self.unit, self.error, self.remote_traceback))


def run_caught(unit: Unit) -> UnitResult | UnitFailure:
    """Run ``unit`` in a worker; an exception comes back as a :class:`UnitFailure`."""
    from simulation import sweep

    try:
        return sweep.run_unit(unit)
    except Exception as exc:
        return UnitFailure(unit.index, one_line(exc), tb.format_exc())


def _take(unit: Unit, value: UnitResult | UnitFailure) -> UnitResult:
    if isinstance(value, UnitFailure):
        raise UnitError(unit, value.error, value.traceback)
    return value


def run_units(units: Sequence[Unit], executor: str, workers: int, finish: Finish) -> None:
    """Run every unit on ``executor`` with ``workers``; ``finish(result)`` in this process after
    each, in the order they finish. Raises :class:`UnitError` at the first failed unit."""
    if executor not in EXECUTORS:
        raise SweepError(f"unknown executor {executor!r} (known: {', '.join(EXECUTORS)})")
    if workers < 1:
        raise SweepError(f"workers must be >= 1, got {workers}")
    units = list(units)
    if not units:
        return
    {"local": run_local, "dask": run_dask, "ray": run_ray}[executor](units, workers, finish)


def run_local(units: list[Unit], workers: int, finish: Finish) -> None:
    """In this process (one worker or one unit), else a process pool of ``workers``."""
    from simulation import sweep

    if workers == 1 or len(units) == 1:
        for u in units:
            try:
                r = sweep.run_unit(u)
            except Exception as exc:
                raise UnitError(u, one_line(exc)) from exc
            finish(r)
        return
    from concurrent.futures import ProcessPoolExecutor, as_completed

    pool = ProcessPoolExecutor(max_workers=min(workers, len(units)))
    try:
        futures = {pool.submit(run_caught, u): u for u in units}
        for f in as_completed(futures):
            unit = futures[f]
            try:
                value = f.result()
            except Exception as exc:  # the worker died (BrokenProcessPool) or the result was lost
                raise UnitError(unit, one_line(exc)) from exc
            finish(_take(unit, value))
    finally:
        # Units not started yet are dropped; running ones finish (a pool cannot stop them).
        pool.shutdown(wait=True, cancel_futures=True)


def _quiet_dask_worker() -> None:
    """In each worker process of a cluster started here: a worker whose heartbeat races the
    scheduler's close logs an ERROR traceback on stderr after a sweep that went well (seen in
    CI; ``silence_logs`` reaches only the nanny's logger there). A unit's own failure comes back
    as a value (``run_caught``) and a dead worker as KilledWorker, so nothing is lost."""
    logging.getLogger("distributed").setLevel(logging.CRITICAL)


def run_dask(units: list[Unit], workers: int, finish: Finish) -> None:
    """On the dask scheduler at ``$DASK_SCHEDULER_ADDRESS``, else on a ``LocalCluster`` of
    ``workers`` single-threaded worker processes started (and closed) here."""
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise SweepError("--executor dask needs dask.distributed: pip install 'cutedge[dask]' (or 'dask[distributed]')") from None
    address = os.environ.get("DASK_SCHEDULER_ADDRESS")
    cluster = client = None
    futures: list = []
    try:
        if address:
            try:
                client = Client(address)
            except (OSError, TimeoutError) as exc:
                raise SweepError(f"dask: cannot reach the scheduler at {address} ($DASK_SCHEDULER_ADDRESS): {one_line(exc)}") from None
        else:
            cluster = LocalCluster(n_workers=min(workers, len(units)), threads_per_worker=1, processes=True,
                                   host="127.0.0.1", silence_logs=logging.ERROR, **LOCAL_DASK)
            client = Client(cluster)
            client.run(_quiet_dask_worker)
        token = uuid.uuid4().hex[:12]
        keys = [f"cutedge-unit-{u.index}-{token}" for u in units]
        futures = client.map(run_caught, units, key=keys)
        by_key = dict(zip(keys, units))
        for f in as_completed(futures):
            unit = by_key[f.key]
            try:
                value = f.result()
            except Exception as exc:  # KilledWorker, a lost scheduler, a result that would not unpickle
                raise UnitError(unit, one_line(exc)) from exc
            finish(_take(unit, value))
    finally:
        try:
            if client is not None:
                try:
                    if futures:
                        client.cancel(futures)
                finally:
                    client.close()
        finally:
            if cluster is not None:
                cluster.close()


def run_ray(units: list[Unit], workers: int, finish: Finish) -> None:
    """On the ray already initialized in this process, else the cluster at ``$RAY_ADDRESS``,
    else a local instance with ``workers`` CPUs started (and shut down) here."""
    try:
        import ray
    except ImportError:
        raise SweepError("--executor ray needs ray: pip install 'cutedge[ray]' (or 'ray')") from None
    started = not ray.is_initialized()
    pending: list = []
    try:
        if started:
            address = os.environ.get("RAY_ADDRESS") or None
            # "local", not None: with None ray joins the cluster the last `ray start` on this
            # machine wrote to /tmp/ray/ray_current_cluster, even one long dead.
            size = {} if address else {"num_cpus": min(workers, len(units))}
            try:
                ray.init(address=address or "local", include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR, **size)
            except ConnectionError as exc:
                # ray start enables token authentication, but a driver given an address sends the
                # token only in token mode: the usual reason a cluster that runs refuses us.
                hint = "" if os.environ.get("RAY_AUTH_MODE") else " (a cluster with token authentication needs RAY_AUTH_MODE=token here)"
                raise SweepError(f"ray: cannot reach the cluster at {address} ($RAY_ADDRESS): {one_line(exc)}{hint}") from None
        remote = ray.remote(run_caught)
        refs = {remote.options(name=f"cutedge-unit-{u.index}").remote(u): u for u in units}
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            unit = refs[ready[0]]
            try:
                value = ray.get(ready[0])
            except Exception as exc:  # WorkerCrashedError, a lost node, ...
                raise UnitError(unit, one_line(exc)) from exc
            finish(_take(unit, value))
    finally:
        if started:
            ray.shutdown()  # stops this sweep's processes, pending tasks with them
        else:
            for ref in pending:
                try:
                    ray.cancel(ref)
                except Exception:  # already finished or gone: nothing to cancel
                    pass


__all__ = ["UnitError", "UnitFailure", "run_caught", "run_dask", "run_local", "run_ray", "run_units"]
