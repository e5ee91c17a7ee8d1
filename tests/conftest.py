"""Shared fixtures: small systems built from the real configs."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _private_runtime_dir(tmp_path_factory, monkeypatch):
    """Each test keeps its clock locks and state files (device_agent.clock.state) to itself,
    and never in this machine's /run/cutedge; subprocesses inherit the variable."""
    d = tmp_path_factory.mktemp("run")
    d.chmod(0o700)
    monkeypatch.setenv("CUTEDGE_RUNTIME_DIR", str(d))
    return d


@pytest.fixture(scope="session")
def tx2_resnet50():
    """The default system: ResNet-50 on a Jetson TX2, Shannon uplink, 100 ms slots."""
    from simulation.experiment import Experiment, build_system

    return build_system(Experiment())


@pytest.fixture(scope="session")
def tx2_resnet50_linear():
    from simulation.experiment import Experiment, build_system

    return build_system(Experiment(network="lte-linear"))


@pytest.fixture(scope="session")
def traces_dir() -> Path:
    """The shared public trace sets (``$CUTEDGE_TRACES`` overrides); skip when absent."""
    from simulation.traces import TRACES_ENV, shared_traces_dir

    root = shared_traces_dir()
    if not root.is_dir():
        pytest.skip(f"shared traces not found at {root} (set {TRACES_ENV} to their folder)")
    return root
