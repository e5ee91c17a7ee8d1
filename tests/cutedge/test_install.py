"""A real install: build the wheel, install it into a fresh virtual environment, run the commands.

Editable installs put the source tree on the path, so they cannot show a wheel that lacks its
configs or a module that only imports because the tree is there. Here the wheel is built with
``pip wheel . --no-deps``, installed with its dependencies into a new venv (no
``--system-site-packages``, no ``PYTHONPATH``), and every command runs from a folder outside the
repository; the first test checks that the packages really come from the venv.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# the top-level packages of the wheel (pyproject.toml's list, less the subpackages)
TOP_LEVEL = (
    "cutedge",
    "controller",
    "simulation",
    "device_agent",
    "edge_agent",
    "dnn_split",
    "wire",
)


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


def _clean_env(tmp: Path) -> dict[str, str]:
    """This environment without anything that would point into the source tree."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env = {k: v for k, v in env.items() if not k.startswith("CUTEDGE_")}
    env["CUTEDGE_RUNTIME_DIR"] = str(tmp / "run")
    env["PYTHONNOUSERSITE"] = "1"
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path, dict[str, str]]:
    """(the wheel, the venv's bin folder, the environment to run it in)."""
    tmp = tmp_path_factory.mktemp("install")
    env = _clean_env(tmp)
    # setuptools builds under ./build by default, where files deleted from the tree linger and
    # would go into the wheel; build somewhere fresh instead
    extra = tmp / "setup-extra.cfg"
    extra.write_text(f"[build]\nbuild_base = {tmp / 'build'}\n")
    build_env = dict(env, DIST_EXTRA_CONFIG=str(extra))
    dist = tmp / "dist"
    _run(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-q", "-w", str(dist)],
        cwd=REPO,
        env=build_env,
    )
    (wheel,) = dist.glob("cutedge-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp, env=env)
    bin_dir = venv / "bin"
    _run([str(bin_dir / "python"), "-m", "pip", "install", "-q", str(wheel)], cwd=tmp, env=env)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    work = tmp / "elsewhere"
    work.mkdir()
    return wheel, bin_dir, env


def _cutedge(installed, *args: str) -> str:
    _, bin_dir, env = installed
    cwd = bin_dir.parent.parent / "elsewhere"
    return _run([str(bin_dir / "cutedge"), *args], cwd=cwd, env=env)


def test_the_packages_come_from_the_venv_not_the_tree(installed):
    _, bin_dir, env = installed
    code = (
        "import importlib, json\n"
        f"names = {TOP_LEVEL + ('cutedge.configs',)!r}\n"
        "print(json.dumps({n: importlib.import_module(n).__file__ for n in names}))\n"
    )
    files = json.loads(_run([str(bin_dir / "python"), "-c", code], cwd=bin_dir, env=env))
    site = (bin_dir.parent / "lib").resolve()
    for name, file in files.items():
        path = Path(file).resolve()
        assert path.is_relative_to(site), f"{name} imported from {path}, not the venv"
        assert not path.is_relative_to(REPO), f"{name} imported from the source tree"


def test_the_wheel_holds_every_builtin_config(installed):
    wheel = installed[0]
    with zipfile.ZipFile(wheel) as z:
        shipped = {
            n for n in z.namelist() if n.startswith("cutedge/configs/") and n.endswith(".yaml")
        }
    in_tree = {
        "cutedge/configs/" + p.relative_to(REPO / "configs").as_posix()
        for p in (REPO / "configs").rglob("*.yaml")
    }
    assert in_tree and shipped == in_tree


def test_help_and_version(installed):
    out = _cutedge(installed, "--help")
    for name in ("simulate", "sweep", "device", "edge"):
        assert f"  {name} " in out, out
    from cutedge import __version__

    assert _cutedge(installed, "--version").strip() == f"cutedge, version {__version__}"


def test_simulate_writes_its_outputs(installed, tmp_path):
    out = tmp_path / "sim"
    _cutedge(installed, "simulate", "--duration", "30", "--out", str(out))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"]["arrived"] > 0
    assert (out / "timeseries.csv").stat().st_size > 0 and (out / "timeseries.png").exists()
    # devices on a shared edge: the built-in edge profile comes from the installed package
    _cutedge(installed, "simulate", "--devices", "4", "--duration", "10", "--no-plot", "--out", str(out / "dev"))
    summary = json.loads((out / "dev" / "summary.json").read_text())
    assert summary["devices"] == 4 and summary["edge"]["profile"] == "agx-orin-fp32"


def test_small_sweep_writes_sweep_csv(installed, tmp_path):
    out = tmp_path / "sweep"
    _cutedge(
        installed,
        "sweep",
        "--policies",
        "cutedge,local",
        "--V",
        "1,10",
        "--duration",
        "30",
        "--out",
        str(out),
    )
    with (out / "sweep.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["policy"] for r in rows} == {"cutedge", "local"}
    assert {float(r["V"]) for r in rows if r["policy"] == "cutedge"} == {1.0, 10.0}


def test_device_info_without_hardware(installed):
    info = json.loads(_cutedge(installed, "device", "info", "--backend", "simulated", "--json"))
    assert info["backend"] == "simulated" and info["levels_hz"]
    assert "backend:" in _cutedge(installed, "device", "info")  # auto: whatever this machine has
    assert "nothing to restore" in _cutedge(installed, "device", "restore")
    unit = _cutedge(installed, "device", "service", "--user", "jetson", "--", "--edge", "tcp://h:1")
    assert "Restart=on-failure" in unit and str(installed[1]) in unit  # the venv's python


def test_pyproject_lists_every_package_folder():
    """pyproject.toml lists the packages (find cannot map configs/): a new package folder that
    is not in the list would be missing from the wheel."""
    tomllib = pytest.importorskip("tomllib")
    listed = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = set()
    for top in TOP_LEVEL:
        for init in (REPO / top).rglob("__init__.py"):
            found.add(".".join(init.parent.relative_to(REPO).parts))
    configs = REPO / "configs"
    found |= {"cutedge.configs"} | {
        f"cutedge.configs.{d.name}"
        for d in configs.iterdir()
        if d.is_dir() and any(d.glob("*.yaml"))
    }
    assert listed == found
