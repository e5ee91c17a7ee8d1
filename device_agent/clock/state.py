"""Clock state that survives a crash: the settings to put back, on disk, under a lock.

A pin changes state that outlives the process: devfreq ``min_freq``/``max_freq``/``governor``
stay where the agent left them, NVML keeps locked clocks. Restoring in ``finally`` and in signal
handlers covers every exit but SIGKILL, the OOM killer and a crash of the interpreter, and after
one of those the next run would read the pinned values as "the original". So, for each device,
two files in the runtime directory (:func:`runtime_dir`):

* ``<key>.lock``: held with ``flock`` by the one process that may pin the device; it holds that
  process's pid and command line for the message a second process gets. Never removed: the
  kernel drops the lock when its holder dies, however it dies, which is what makes a state file
  *stale* without trusting a pid that may have been reused.
* ``<key>.json``: written (atomically, 0600) before the first pin changes anything: how to reopen
  the device, the settings to put back, the pid and the boot id. Removed after a successful
  restore.

A state file whose lock can be taken is stale: ``cutedge device restore`` and the next
``device clock``/``device run`` on that device put its settings back first (see
:class:`~device_agent.clock.guard.RestoreGuard`). One from an earlier boot is only removed: the
reboot reset the clock.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import stat
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from device_agent.clock.base import BackendError

RUNTIME_ENV = "CUTEDGE_RUNTIME_DIR"
SYSTEM_RUNTIME_DIR = Path("/run/cutedge")
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


class ClockStateError(BackendError):
    """The runtime directory or a state file cannot be used; the message names it."""


class ClockBusyError(ClockStateError):
    """Another live process holds the device's clock lock."""


def _private_dir(path: Path) -> Path:
    """``path`` as a directory only this user can use: created 0700, or checked if it exists."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.lstat()
    except OSError as exc:
        raise ClockStateError(
            f"runtime directory {path}: {exc.strerror or exc} (set {RUNTIME_ENV}=DIR)"
        ) from None
    if not stat.S_ISDIR(st.st_mode):
        raise ClockStateError(f"runtime directory {path}: not a directory (set {RUNTIME_ENV}=DIR)")
    if st.st_uid != os.geteuid():
        raise ClockStateError(
            f"runtime directory {path} belongs to uid {st.st_uid}, not to this user "
            f"(uid {os.geteuid()}): run as its owner or set {RUNTIME_ENV}=DIR"
        )
    if st.st_mode & 0o022:
        raise ClockStateError(
            f"runtime directory {path} is writable by others (mode {stat.S_IMODE(st.st_mode):o}): "
            f"make it 0700 or set {RUNTIME_ENV}=DIR"
        )
    return path


def runtime_dir() -> Path:
    """Where clock state lives: ``$CUTEDGE_RUNTIME_DIR``; else ``/run/cutedge`` when this user
    can use it (root, or the systemd unit's ``RuntimeDirectory=``); else
    ``$XDG_RUNTIME_DIR/cutedge``; else ``cutedge-<uid>`` in the temporary directory.

    ``/run`` and ``$XDG_RUNTIME_DIR`` are emptied at boot, as the clock is reset."""
    env = os.environ.get(RUNTIME_ENV)
    if env:
        return _private_dir(Path(env))
    candidates = [SYSTEM_RUNTIME_DIR]
    if os.environ.get("XDG_RUNTIME_DIR"):
        candidates.append(Path(os.environ["XDG_RUNTIME_DIR"]) / "cutedge")
    for path in candidates:
        try:
            return _private_dir(path)
        except ClockStateError:
            continue
    return _private_dir(Path(tempfile.gettempdir()) / f"cutedge-{os.geteuid()}")


def boot_id() -> str | None:
    try:
        return BOOT_ID.read_text().strip() or None
    except OSError:
        return None


def device_key(ref: Mapping[str, str]) -> str:
    """File name stem for a device reference (``kind`` plus a hash of its ``id``)."""
    digest = hashlib.sha256(ref["id"].encode()).hexdigest()[:16]
    return f"{ref['kind']}-{digest}"


@dataclass(frozen=True)
class StaleState:
    """What a process that is gone left pinned."""

    path: Path
    ref: dict[str, str]  # how to reopen the device (ClockBackend.device_ref)
    saved: dict[str, str]  # the settings to put back
    pid: int | None
    command: str
    boot_id: str | None

    @property
    def from_this_boot(self) -> bool:
        now = boot_id()
        return self.boot_id is None or now is None or self.boot_id == now

    def describe(self) -> str:
        who = f"pid {self.pid}" if self.pid is not None else "a process"
        return f"{self.ref.get('name', self.ref['id'])} (pinned by {who}, which is gone)"


def read_state(path: Path) -> StaleState:
    """Parse a state file; a damaged one is a ClockStateError naming the file and the field."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ClockStateError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except ValueError:
        raise ClockStateError(f"{path}: not a JSON clock state file") from None
    if not isinstance(data, dict):
        raise ClockStateError(f"{path}: expected a JSON object")
    for field in ("ref", "saved"):
        value = data.get(field)
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise ClockStateError(f"{path}: {field}: expected an object of strings, got {value!r}")
    for field in ("kind", "id"):
        if field not in data["ref"]:
            raise ClockStateError(f"{path}: ref.{field}: missing")
    pid = data.get("pid")
    return StaleState(
        path,
        data["ref"],
        data["saved"],
        pid if isinstance(pid, int) else None,
        str(data.get("command", "")),
        data.get("boot_id") if isinstance(data.get("boot_id"), str) else None,
    )


class ClockLock:
    """The lock and state file of one device (``ref``: ``ClockBackend.device_ref()``)."""

    def __init__(self, ref: Mapping[str, str], directory: Path | None = None):
        self.ref = dict(ref)
        self.directory = directory if directory is not None else runtime_dir()
        key = device_key(self.ref)
        self.lock_path = self.directory / f"{key}.lock"
        self.state_path = self.directory / f"{key}.json"
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> ClockLock:
        """Take the lock, or raise :class:`ClockBusyError` naming the process that has it."""
        if self._fd is not None:
            return self
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ClockStateError(f"{self.lock_path}: cannot open: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "pid unknown"
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise ClockBusyError(
                    f"the GPU clock of {self.ref.get('name', self.ref['id'])} is held by another "
                    f"process ({holder}); stop it first"
                ) from None
            raise ClockStateError(f"{self.lock_path}: cannot lock: {exc.strerror or exc}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {_command()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor drops the flock

    def stale(self) -> StaleState | None:
        """The state file left by a process that is gone (call with the lock held)."""
        if not self.state_path.exists():
            return None
        return read_state(self.state_path)

    def record(self, saved: Mapping[str, str]) -> None:
        """Write the settings to put back, atomically, before the first pin changes anything."""
        data = {
            "ref": self.ref,
            "saved": dict(saved),
            "pid": os.getpid(),
            "command": _command(),
            "boot_id": boot_id(),
        }
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.state_path)
        except OSError as exc:
            raise ClockStateError(
                f"{self.state_path}: cannot write the clock state: {exc.strerror or exc}; "
                "not pinning"
            ) from None

    def clear(self) -> None:
        for path in (self.state_path, self.state_path.with_name(self.state_path.name + ".tmp")):
            try:
                path.unlink()
            except FileNotFoundError:
                pass


def _command() -> str:
    argv = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else ["python"]
    if argv[0] == "__main__.py":
        argv[0] = "cutedge"
    return " ".join(argv)[:300]


def state_files(directory: Path | None = None) -> list[Path]:
    """Every state file in the runtime directory, sorted."""
    d = directory if directory is not None else runtime_dir()
    return sorted(d.glob("*.json"))


__all__ = [
    "RUNTIME_ENV",
    "ClockBusyError",
    "ClockLock",
    "ClockStateError",
    "StaleState",
    "boot_id",
    "device_key",
    "read_state",
    "runtime_dir",
    "state_files",
]
