"""Sweep executors against real local instances: a process pool, a dask LocalCluster and a local
ray, each with 2 workers, give the rows of a serial run; a unit that raises in a worker reaches the
caller as one UnitError naming the unit, and what the executor started is shut down.

dask and ray come with the ``dask`` and ``ray`` extras (the README's test command installs
them); without them their tests skip. Every wait here is on a result, never on a clock: on a
loaded machine the tests are slower, not flakier (the timeouts only stop a hung cluster).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from controller.lyapunov import LyapunovConfig
from simulation.executors import UnitError
from simulation.experiment import Experiment
from simulation.sweep import (
    BOUND_FIELDS,
    ROW_FIELDS,
    SweepConfig,
    SweepOutput,
    TraceEntry,
    read_csv,
    run_sweep,
    write_csv,
)

REPO = Path(__file__).resolve().parents[2]
ADDRESS_VARS = ("DASK_SCHEDULER_ADDRESS", "RAY_ADDRESS")
# Start-up of a local ray is seconds; these stop a cluster that hangs, they time nothing.
pytestmark = pytest.mark.timeout(240)


def tiny_sweep() -> SweepConfig:
    """2 units (two synthetic traces), 2 policies, 2 V values, 20 simulated seconds."""
    return SweepConfig(
        name="executors",
        experiment=Experiment(duration_s=20.0, seed=3, controller=LyapunovConfig(throughput_floor_fps=9.0)),
        policies=("cutedge", "local"),
        V=(1.0, 100.0),
        traces=(TraceEntry("synthetic:wifi", label="wifi"), TraceEntry("synthetic:markov-lte", label="lte")),
        seeds=1,
    )


@pytest.fixture(scope="module")
def bad_trace(tmp_path_factory) -> TraceEntry:
    """A trace file no reader accepts: its unit raises a ConfigError inside the worker."""
    path = tmp_path_factory.mktemp("traces") / "garbage.up"
    path.write_text("garbage here\nmore garbage\n")
    return TraceEntry(str(path), label="garbage")


@pytest.fixture
def failing_sweep(bad_trace) -> SweepConfig:
    cfg = tiny_sweep()
    return replace(cfg, traces=(cfg.traces[0], bad_trace))  # unit 0 good, unit 1 bad


@pytest.fixture(scope="module")
def serial() -> SweepOutput:
    return run_sweep(tiny_sweep(), workers=1)


@pytest.fixture(autouse=True)
def _no_cluster_address(monkeypatch):
    # A user's cluster address must not leak in: every test says where it runs.
    for var in ADDRESS_VARS:
        monkeypatch.delenv(var, raising=False)


def same_files(a: SweepOutput, b: SweepOutput, tmp_path: Path) -> None:
    """The two runs write the same sweep.csv and bound.csv rows (numbers to 1e-9, text exact)."""
    for name, rows_of, columns in (("sweep.csv", "rows", ROW_FIELDS), ("bound.csv", "bounds", BOUND_FIELDS)):
        write_csv(tmp_path / f"a-{name}", getattr(a, rows_of), columns)
        write_csv(tmp_path / f"b-{name}", getattr(b, rows_of), columns)
        ra, rb = read_csv(tmp_path / f"a-{name}"), read_csv(tmp_path / f"b-{name}")
        assert len(ra) == len(rb) > 0
        for x, y in zip(ra, rb):
            assert x.keys() == y.keys()
            for k in x:
                if isinstance(x[k], float) and math.isnan(x[k]):
                    assert isinstance(y[k], float) and math.isnan(y[k]), (name, k)
                elif isinstance(x[k], float):
                    assert y[k] == pytest.approx(x[k], rel=1e-9, abs=1e-12), (name, k, x, y)
                else:
                    assert x[k] == y[k], (name, k)


def check_failure(err: UnitError) -> None:
    assert err.unit.index == 1 and err.unit.trace.label == "garbage"
    text = str(err)
    assert text.startswith("unit 1 (garbage, seed 3) failed: ") and "garbage.up" in text
    assert "cannot tell the trace format" in text and "\n" not in text


def counting():
    calls: list[int] = []
    return calls, calls.append


# -- local processes --------------------------------------------------------------------------


def test_local_pool_same_rows_and_progress(serial, tmp_path):
    calls, on_done = counting()
    pooled = run_sweep(tiny_sweep(), workers=2, on_done=on_done)
    assert calls == [1, 1]
    same_files(serial, pooled, tmp_path)


@pytest.mark.parametrize("workers", [1, 2])
def test_local_failure_names_the_unit(failing_sweep, workers):
    # Before: the pool broke (BrokenProcessPool), since a ConfigError does not unpickle.
    with pytest.raises(UnitError) as info:
        run_sweep(failing_sweep, workers=workers)
    check_failure(info.value)
    if workers == 1:
        assert type(info.value.__cause__).__name__ == "ConfigError"  # in process: chained
    else:
        assert "ConfigError" in info.value.remote_traceback


def test_unknown_executor_and_missing_package(monkeypatch):
    from simulation.sweep import SweepError

    with pytest.raises(SweepError, match="unknown executor 'mpi'"):
        run_sweep(tiny_sweep(), executor="mpi")
    for name, words in (("dask", "pip install 'cutedge\\[dask\\]'"), ("ray", "pip install 'cutedge\\[ray\\]'")):
        for mod in (name, f"{name}.distributed"):
            monkeypatch.setitem(sys.modules, mod, None)  # import fails as if not installed
        with pytest.raises(SweepError, match=words):
            run_sweep(tiny_sweep(), executor=name, workers=2)


# -- dask -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dask_cluster():
    """One LocalCluster for the module: 2 single-threaded worker processes, loopback, no dashboard."""
    distributed = pytest.importorskip("dask.distributed")
    import logging

    from simulation.executors import LOCAL_DASK

    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       silence_logs=logging.ERROR, **LOCAL_DASK)
    yield cluster
    cluster.close()


def test_dask_at_address_same_rows(dask_cluster, serial, tmp_path, monkeypatch):
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", dask_cluster.scheduler_address)
    calls, on_done = counting()
    out = run_sweep(tiny_sweep(), workers=2, executor="dask", on_done=on_done)
    assert calls == [1, 1]
    same_files(serial, out, tmp_path)
    assert dask_cluster.status.name == "running"  # not ours to close


def test_dask_at_address_failure_names_the_unit(dask_cluster, failing_sweep, monkeypatch):
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", dask_cluster.scheduler_address)
    with pytest.raises(UnitError) as info:
        run_sweep(failing_sweep, workers=2, executor="dask")
    check_failure(info.value)
    assert "ConfigError" in info.value.remote_traceback
    assert dask_cluster.status.name == "running"
    # and the cluster still takes work
    out = run_sweep(replace(tiny_sweep(), traces=tiny_sweep().traces[:1]), workers=2, executor="dask")
    assert len(out.rows) == 3


@pytest.fixture
def recorded_clusters(monkeypatch):
    """The LocalClusters that run_dask starts, to see that each is closed."""
    distributed = pytest.importorskip("dask.distributed")
    started: list = []

    class Recording(distributed.LocalCluster):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr("dask.distributed.LocalCluster", Recording)
    return started


def test_dask_own_cluster_same_rows_then_closed(recorded_clusters, serial, tmp_path):
    out = run_sweep(tiny_sweep(), workers=2, executor="dask")
    same_files(serial, out, tmp_path)
    assert len(recorded_clusters) == 1 and recorded_clusters[0].status.name == "closed"
    assert len(recorded_clusters[0].workers) == 0


def test_dask_own_cluster_closed_after_a_failed_unit(recorded_clusters, failing_sweep):
    with pytest.raises(UnitError) as info:
        run_sweep(failing_sweep, workers=2, executor="dask")
    check_failure(info.value)
    assert len(recorded_clusters) == 1 and recorded_clusters[0].status.name == "closed"


def test_dask_unreachable_scheduler_one_line(monkeypatch):
    dask = pytest.importorskip("dask")
    pytest.importorskip("dask.distributed")
    import socket

    from simulation.sweep import SweepError

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", f"tcp://127.0.0.1:{port}")
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        with pytest.raises(SweepError, match=f"cannot reach the scheduler at tcp://127.0.0.1:{port}") as info:
            run_sweep(tiny_sweep(), workers=2, executor="dask")
    assert "\n" not in str(info.value)


# -- ray --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_local():
    """One local ray for the module (start-up takes seconds): 2 CPUs, no dashboard."""
    ray = pytest.importorskip("ray")
    import logging

    if ray.is_initialized():
        pytest.skip("ray already initialized in this process")
    env = {var: os.environ.pop(var) for var in ("RAY_ADDRESS",) if var in os.environ}
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield ray
    ray.shutdown()
    os.environ.update(env)


def test_ray_initialized_same_rows(ray_local, serial, tmp_path):
    calls, on_done = counting()
    out = run_sweep(tiny_sweep(), workers=2, executor="ray", on_done=on_done)
    assert calls == [1, 1]
    same_files(serial, out, tmp_path)
    assert ray_local.is_initialized()  # not ours to shut down


def test_ray_initialized_failure_names_the_unit(ray_local, failing_sweep):
    with pytest.raises(UnitError) as info:
        run_sweep(failing_sweep, workers=2, executor="ray")
    check_failure(info.value)
    assert "ConfigError" in info.value.remote_traceback
    assert ray_local.is_initialized()
    assert ray_local.get(ray_local.remote(lambda: 41).remote()) == 41  # still takes work


OWN_RAY = """
import sys
from dataclasses import replace
sys.path[:0] = [{tests!r}, {repo!r}]
import ray
import ray._private.utils
# As if a `ray start` on this machine had died: ray.init(address=None) would try to join it.
ray._private.utils.read_ray_address = lambda *args, **kwargs: "127.0.0.1:9"
from test_executors import TraceEntry, tiny_sweep
from simulation.executors import UnitError
from simulation.sweep import run_sweep
cfg = tiny_sweep()
cfg = replace(cfg, traces=(cfg.traces[0], TraceEntry({bad!r}, label="garbage")))
try:
    run_sweep(cfg, workers=2, executor="ray")
except UnitError as exc:
    print(exc)
else:
    sys.exit("no UnitError")
assert not ray.is_initialized(), "ray left running"
"""


def clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ADDRESS_VARS}


def test_ray_own_instance_shut_down_after_a_failed_unit(bad_trace):
    pytest.importorskip("ray")
    script = OWN_RAY.format(tests=str(Path(__file__).parent), repo=str(REPO), bad=bad_trace.path)
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=REPO, capture_output=True, text=True,
                       timeout=200, env=clean_env())
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("unit 1 (garbage, seed 3) failed: "), r.stdout


# -- the command line: cutedge sweep --executor dask|ray gives the local pool's files -----------

CLI_ARGS = ("--trace", "synthetic:wifi", "--trace", "synthetic:markov-lte", "--policies", "cutedge,local",
            "--V", "1,100", "--duration", "20", "--workers", "2", "--no-plot", "--quiet")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cutedge.cli", "sweep", *CLI_ARGS, *args], cwd=REPO,
                          capture_output=True, text=True, timeout=200, env=clean_env())


@pytest.fixture(scope="module")
def local_files(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local")
    r = cli("--executor", "local", "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.parametrize(("executor", "module"), [("dask", "dask.distributed"), ("ray", "ray")])
def test_cli_executor_same_files_as_local_pool(executor, module, local_files, tmp_path):
    pytest.importorskip(module)
    r = cli("--executor", executor, "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert f"2 units on 2 {executor} workers" in r.stderr
    assert "Traceback" not in r.stderr and "WARNING" not in r.stderr, r.stderr
    for name in ("sweep.csv", "bound.csv"):
        a, b = read_csv(local_files / name), read_csv(tmp_path / name)
        assert len(a) == len(b) > 0
        for x, y in zip(a, b):
            assert x.keys() == y.keys()
            for k in x:
                if isinstance(x[k], float) and not math.isnan(x[k]):
                    assert y[k] == pytest.approx(x[k], rel=1e-9, abs=1e-12), (name, k)
                elif not isinstance(x[k], float):
                    assert x[k] == y[k], (name, k)
