"""jtop (jetson-stats) and NVML backends, with the libraries' real exception types.

Here there is no jtop service and no NVIDIA driver: the real ``jtop().start()`` raises
``JtopException`` and the real ``nvmlInit()`` raises ``NVMLError_LibraryNotFound``, and the tests
check what the user is told. What cannot exist here (a running jtop service, a GPU answering
NVML) is played by small fakes that return the libraries' data shapes and raise their real
exception classes. The test marked ``gpu`` runs the conformance check on a real GPU when there
is one and skips otherwise.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_sysfs import FakeKernel, make_tree

from cutedge.cli import main
from device_agent.clock import (
    BackendError,
    BackendUnavailable,
    Capability,
    NotSupportedError,
    PermissionDeniedError,
    check_backend,
    open_backend,
)
from device_agent.clock.sysfs import SysfsBackend

jtop = pytest.importorskip("jtop")
pynvml = pytest.importorskip("pynvml")

REPO = Path(__file__).resolve().parents[2]


def _nvml_works() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


def _jtop_service_up() -> bool:
    try:
        client = jtop.jtop()
        client.start()
    except jtop.JtopException:
        return False
    client.close()
    return True


# -- jtop ----------------------------------------------------------------------------------------


@pytest.mark.skipif(_jtop_service_up(), reason="a jtop service is running on this machine")
def test_real_jtop_without_service_is_one_line():
    from device_agent.clock.jtop_backend import open_jtop_client

    with pytest.raises(BackendUnavailable) as exc:
        open_jtop_client()
    assert (
        str(exc.value)
        == "jtop: The jtop.service is not active. Please run: sudo jtop --install-service"
    )


@pytest.mark.skipif(_jtop_service_up(), reason="a jtop service is running on this machine")
def test_jtop_backend_falls_back_to_sysfs_and_says_so(tmp_path, capsys):
    board = make_tree(tmp_path, "orin-nano-jp6")
    sel = open_backend("jtop", sysfs_root=board.root)
    assert isinstance(sel.backend, SysfsBackend)
    assert sel.notes == [
        "jtop: The jtop.service is not active. Please run: sudo jtop --install-service; "
        "using backend sysfs instead"
    ]
    assert main(["device", "info", "--backend", "jtop", "--sysfs-root", str(board.root)]) == 0
    out, err = capsys.readouterr()
    assert "backend:  sysfs" in out
    assert (
        err.count("\n") == 1
        and "sudo jtop --install-service" in err
        and "using backend sysfs" in err
    )


@pytest.mark.skipif(_jtop_service_up(), reason="a jtop service is running on this machine")
def test_jtop_without_service_and_without_devfreq_is_an_error(tmp_path, capsys):
    assert main(["device", "info", "--backend", "jtop", "--sysfs-root", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: jtop: The jtop.service is not active")
    assert "no GPU devfreq node to fall back on" in lines[-1] and "Traceback" not in err


def test_jetson_stats_not_installed(tmp_path, monkeypatch):
    board = make_tree(tmp_path, "tx2-jp4")
    monkeypatch.setitem(sys.modules, "jtop", None)  # import jtop -> ImportError
    sel = open_backend("jtop", sysfs_root=board.root)
    assert sel.backend.name == "sysfs"
    assert sel.notes == [
        "jtop: jetson-stats is not installed (pip install 'cutedge[jetson]', then sudo jtop "
        "--install-service); using backend sysfs instead"
    ]


def test_auto_imports_neither_jtop_nor_nvml_on_a_jetson_tree(tmp_path):
    board = make_tree(tmp_path, "xavier-nx-jp4")
    code = (
        "import sys; from device_agent.clock import open_backend; "
        f"s = open_backend('auto', sysfs_root={str(board.root)!r}); "
        "print(s.backend.name, s.notes, *(m in sys.modules for m in ('jtop', 'pynvml', 'numpy')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.split(" ", 1)[0] == "sysfs"
    assert out.stdout.strip().endswith("[] False False False")


class FakeJtopClient:
    """What a started ``jtop.jtop`` exposes (jetson.md section 1.2), without the service."""

    interval = 0.5

    def __init__(self) -> None:
        self.error: Exception | None = None
        self.closed = False
        self.power = {
            "rail": {
                "VDD_IN": {
                    "online": True,
                    "type": "INA3221",
                    "volt": 5000,
                    "curr": 1450,
                    "power": 7250,
                    "avg": 7000,
                },
                "VDD_CPU_GPU_CV": {
                    "online": True,
                    "type": "INA3221",
                    "volt": 5000,
                    "curr": 500,
                    "power": 2500,
                    "avg": 2400,
                },
                "VDD_SOC": {
                    "online": False,
                    "type": "INA3221",
                    "volt": 0,
                    "curr": 0,
                    "power": 0,
                    "avg": 0,
                },
            },
            "tot": {
                "online": True,
                "type": "INA3221",
                "power": 7250,
                "avg": 7000,
                "name": "VDD_IN",
            },
        }
        self.temperature = {
            "gpu": {"online": True, "temp": 41.5},
            "PMIC": {"online": False, "temp": -256},
        }
        self.nvpmodel = type("NVPModel", (), {"name": "15W", "id": 0})()
        self.jetson_clocks = type(
            "JetsonClocks", (), {"status": "inactive", "__bool__": lambda s: False}
        )()

    def ok(self, spin: bool = False) -> bool:
        if self.error is not None:
            raise self.error
        return True

    def close(self) -> None:
        self.closed = True


def test_jtop_backend_telemetry_and_clock_through_sysfs(tmp_path, monkeypatch):
    from device_agent.clock.jtop_backend import JtopBackend

    board = make_tree(tmp_path, "orin-nano-jp6")
    FakeKernel(board).install(monkeypatch)
    before = board.state()
    client = FakeJtopClient()
    b = JtopBackend(client, SysfsBackend(board.root, settle_s=0.05))
    assert b.power_w() == {"VDD_IN": 7.25, "VDD_CPU_GPU_CV": 2.5, "VDD_SOC": None}
    assert b.board_power_w() == 7.25
    assert b.telemetry() == {
        "temperature_c": {"gpu": 41.5},
        "nvpmodel": "15W",
        "jetson_clocks": {"enabled": False, "status": "inactive"},
        "interval_s": 0.5,
    }
    assert b.capabilities >= {
        Capability.PIN,
        Capability.TELEMETRY,
        Capability.RAILS,
        Capability.ENERGY,
    }
    with b:
        assert b.pin(board.levels_hz[3]) == board.levels_hz[3]
        assert board.read("max_freq") == str(board.levels_hz[3])
    assert board.state() == before and client.closed
    # energy comes from the sysfs rails (jtop refreshes once a second)
    assert type(b.energy_meter()).__name__ == "IntegratingEnergyMeter"


def test_jtop_backend_conformance_and_lost_service(tmp_path, monkeypatch):
    from device_agent.clock.jtop_backend import JtopBackend

    board = make_tree(tmp_path, "xavier-nx-jp4")
    FakeKernel(board).install(monkeypatch)
    client = FakeJtopClient()
    b = JtopBackend(client, SysfsBackend(board.root, settle_s=0.05))
    check_backend(b)
    client.error = jtop.JtopException("Lost connection with jtop server")
    with pytest.raises(BackendError, match="^jtop: Lost connection with jtop server$"):
        b.power_w()


def test_jtop_backend_without_devfreq_is_telemetry_only():
    from device_agent.clock.jtop_backend import JtopBackend

    b = JtopBackend(FakeJtopClient(), None)
    assert Capability.PIN not in b.capabilities and Capability.LEVELS not in b.capabilities
    with pytest.raises(NotSupportedError, match="no GPU devfreq node"):
        b.pin(1)
    check_backend(b)


# -- NVML ----------------------------------------------------------------------------------------


@pytest.mark.skipif(_nvml_works(), reason="NVML works on this machine")
def test_real_nvml_without_driver_is_unavailable():
    from device_agent.clock.nvml_backend import NvmlBackend

    with pytest.raises(BackendUnavailable) as exc:
        NvmlBackend()
    assert (
        str(exc.value) == "NVML: NVML Shared Library Not Found (no NVIDIA driver on this machine)"
    )


@pytest.mark.skipif(_nvml_works(), reason="NVML works on this machine")
def test_auto_says_which_fallback_fired(tmp_path, capsys):
    sel = open_backend("auto", sysfs_root=tmp_path, board="jetson-xavier-nx")
    assert sel.backend.name == "simulated"
    (note,) = sel.notes
    assert note.startswith("auto: sysfs: no GPU devfreq node under")
    assert "NVML: NVML Shared Library Not Found" in note
    assert note.endswith("using backend simulated (jetson-xavier-nx)")


class FakeGpu:
    """Answers the pynvml calls the backend makes, like an A100 would; ``fail`` maps a pynvml
    function name to the real exception class it should raise."""

    def __init__(self, monkeypatch, **fail: type[Exception]) -> None:
        self.gfx_mhz = list(range(1410, 200, -15))  # NVML lists clocks descending
        self.cur_mhz = 1410
        self.locked: tuple[int, int] | None = None
        self.energy_mj = 5_000_000
        self.calls: list[str] = []
        self.fail = fail
        for name in (
            "nvmlInit",
            "nvmlShutdown",
            "nvmlDeviceGetHandleByIndex",
            "nvmlDeviceGetName",
            "nvmlDeviceGetSupportedMemoryClocks",
            "nvmlDeviceGetSupportedGraphicsClocks",
            "nvmlDeviceGetClockInfo",
            "nvmlDeviceSetGpuLockedClocks",
            "nvmlDeviceResetGpuLockedClocks",
            "nvmlDeviceGetPowerUsage",
            "nvmlDeviceGetTotalEnergyConsumption",
        ):
            monkeypatch.setattr(pynvml, name, self._wrap(name))

    def _wrap(self, name):
        impl = getattr(self, name)

        def call(*args):
            self.calls.append(name)
            if name in self.fail:
                raise self.fail[name]()
            return impl(*args)

        return call

    def nvmlInit(self):
        pass  # noqa: E704, N802

    def nvmlShutdown(self):
        pass  # noqa: E704, N802

    def nvmlDeviceGetHandleByIndex(self, i):
        return ("gpu", i)  # noqa: E704, N802

    def nvmlDeviceGetName(self, h):
        return "NVIDIA A100-SXM4-40GB"  # noqa: E704, N802

    def nvmlDeviceGetSupportedMemoryClocks(self, h):
        return [1215]  # noqa: E704, N802

    def nvmlDeviceGetSupportedGraphicsClocks(self, h, mem):
        return list(self.gfx_mhz)  # noqa: E704, N802

    def nvmlDeviceGetClockInfo(self, h, kind):
        return self.cur_mhz  # noqa: E704, N802

    def nvmlDeviceSetGpuLockedClocks(self, h, lo, hi):  # noqa: N802
        self.locked, self.cur_mhz = (lo, hi), hi

    def nvmlDeviceResetGpuLockedClocks(self, h):  # noqa: N802
        self.locked, self.cur_mhz = None, 1410

    def nvmlDeviceGetPowerUsage(self, h):
        return 87_500  # noqa: E704, N802

    def nvmlDeviceGetTotalEnergyConsumption(self, h):  # noqa: N802
        self.energy_mj += 1234
        return self.energy_mj


def test_nvml_conformance_and_units(monkeypatch):
    from device_agent.clock.nvml_backend import NvmlBackend

    gpu = FakeGpu(monkeypatch)
    b = NvmlBackend()
    assert b.device == "GPU 0: NVIDIA A100-SXM4-40GB"
    assert b.levels_hz()[0] == 210_000_000 and b.levels_hz()[-1] == 1_410_000_000
    assert b.power_w() == {"gpu": 87.5}
    check_backend(b)
    assert b.pin(1_005_000_000) == 1_005_000_000 and gpu.locked == (1005, 1005)
    assert b.restore() == {"locked_clocks": "reset (default range)"} and gpu.locked is None
    meter = b.energy_meter().start()
    assert meter.read_j() == pytest.approx(1.234)  # the driver's counter, mJ -> J
    b.close()
    b.close()
    assert gpu.calls.count("nvmlShutdown") == 1


def test_nvml_lock_without_root(monkeypatch, capsys):
    from device_agent.clock.nvml_backend import NvmlBackend

    FakeGpu(monkeypatch, nvmlDeviceSetGpuLockedClocks=pynvml.NVMLError_NoPermission)
    b = NvmlBackend()
    assert Capability.PIN in b.capabilities  # only trying tells; NVML has no query for it
    with pytest.raises(
        PermissionDeniedError, match=r"^NVML: locking GPU clocks needs root: run it as root"
    ):
        b.pin(1_005_000_000)
    assert b.restore() == {}
    assert main(["device", "clock", "1005MHz", "--backend", "nvml"]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == "error: NVML: locking GPU clocks needs root: run it as root (sudo cutedge device ...)\n"
    )


def test_nvml_not_supported_parts_are_left_out(monkeypatch):
    from device_agent.clock.nvml_backend import NvmlBackend

    FakeGpu(
        monkeypatch,
        nvmlDeviceGetSupportedMemoryClocks=pynvml.NVMLError_NotSupported,
        nvmlDeviceGetTotalEnergyConsumption=pynvml.NVMLError_NotSupported,
    )
    b = NvmlBackend()
    assert Capability.LEVELS not in b.capabilities and Capability.PIN not in b.capabilities
    assert Capability.ENERGY in b.capabilities  # integrated from power instead of the counter
    assert type(b.energy_meter()).__name__ == "IntegratingEnergyMeter"
    with pytest.raises(NotSupportedError, match="cannot pin"):
        b.pin(1_005_000_000)
    check_backend(b)

    FakeGpu(
        monkeypatch,
        nvmlDeviceGetPowerUsage=pynvml.NVMLError_NotSupported,
        nvmlDeviceGetTotalEnergyConsumption=pynvml.NVMLError_NotSupported,
    )
    b = NvmlBackend()
    assert Capability.POWER not in b.capabilities and Capability.ENERGY not in b.capabilities
    with pytest.raises(NotSupportedError):
        b.power_w()
    check_backend(b)


def test_nvml_driver_not_loaded(monkeypatch):
    from device_agent.clock.nvml_backend import NvmlBackend

    FakeGpu(monkeypatch, nvmlInit=pynvml.NVMLError_DriverNotLoaded)
    with pytest.raises(
        BackendUnavailable, match=r"^NVML: Driver Not Loaded \(load the NVIDIA driver first\)$"
    ):
        NvmlBackend()


def test_nvml_never_pins_on_a_jetson(monkeypatch, tmp_path):
    from device_agent.clock.nvml_backend import NvmlBackend

    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text("# R36 (release), REVISION: 4.3\n")
    FakeGpu(monkeypatch)
    b = NvmlBackend(root=tmp_path)
    assert Capability.PIN not in b.capabilities
    with pytest.raises(NotSupportedError, match="use the sysfs backend"):
        b.pin(1_005_000_000)
    # auto does not even try NVML there
    sel = open_backend("auto", sysfs_root=tmp_path)
    assert sel.backend.name == "simulated" and "skipped on a Jetson" in sel.notes[0]


def test_auto_picks_nvml_off_jetson(monkeypatch, tmp_path):
    FakeGpu(monkeypatch)
    sel = open_backend("auto", sysfs_root=tmp_path)
    assert sel.backend.name == "nvml"
    assert sel.notes[0].startswith("auto: sysfs: no GPU devfreq node") and sel.notes[0].endswith(
        "using backend nvml"
    )


@pytest.mark.gpu
@pytest.mark.skipif(not _nvml_works(), reason="needs an NVIDIA GPU and driver (NVML)")
def test_real_gpu_conformance():
    from device_agent.clock.nvml_backend import NvmlBackend

    b = NvmlBackend()
    try:
        seen = check_backend(b, pin=os.geteuid() == 0 and Capability.PIN in b.capabilities)
        assert seen["device"].startswith("GPU 0: ")
    finally:
        b.restore()
        b.close()


@pytest.mark.skipif(_jtop_service_up(), reason="a jtop service is running on this machine")
def test_auto_jtop_wrapping_on_a_board(tmp_path, monkeypatch):
    # auto wraps sysfs in jtop only on the real root; the wrapping step itself, both outcomes:
    from device_agent.clock import selection

    board = make_tree(tmp_path, "orin-nano-jp6")
    clock = SysfsBackend(board.root)
    notes: list[str] = []
    assert selection._with_jtop(clock, notes, chosen=False) is clock  # the real, absent service
    assert notes == [
        "jtop: The jtop.service is not active. Please run: sudo jtop --install-service; "
        "telemetry from sysfs only"
    ]
    monkeypatch.setattr(selection, "open_jtop_client", FakeJtopClient)
    wrapped = selection._with_jtop(clock, notes, chosen=False)
    assert wrapped.name == "jtop" and wrapped.current_hz() == clock.current_hz() and len(notes) == 1
