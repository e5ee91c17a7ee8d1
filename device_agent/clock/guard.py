"""Put the GPU clock back on every way out: return, exception, SIGINT, SIGTERM, interpreter exit.

A pinned clock that outlives the agent keeps the board slow (or hot) until someone notices, so
:class:`RestoreGuard` wraps the pinned section:

* normal return and exceptions: ``__exit__`` restores;
* SIGINT / SIGTERM: the handler raises ``KeyboardInterrupt`` / ``SystemExit(128 + signum)`` in
  the main thread, which unwinds into ``__exit__``; while the restore runs, further signals are
  recorded and ignored, so a second Ctrl-C or ``kill`` cannot cut the restore short;
* interpreter exit with the guard still open (``sys.exit`` from elsewhere): an ``atexit`` hook.

Restoring twice is harmless: backends make ``restore()`` idempotent and the guard calls it once.
Signal handlers can only be installed from the main thread; elsewhere the guard still covers
return, exceptions and exit, and says so in ``signals_handled``. SIGHUP (the SSH session drops)
and SIGQUIT are handled as SIGTERM.

What no handler can catch (SIGKILL, the OOM killer, a crash) is covered on disk
(``device_agent.clock.state``), for backends whose pin outlives the process: on entry the guard
takes the device's lock (a second process is refused in one line) and puts back what a dead
process left pinned; the backend's first pin writes the settings to restore to the state file
before it changes anything; a successful restore removes the file. A restore that fails is
raised, retried at interpreter exit and reported on stderr; the state file stays for
``cutedge device restore``.
"""

from __future__ import annotations

import atexit
import logging
import signal
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from types import FrameType, TracebackType

from device_agent.clock.base import BackendError, ClockBackend
from device_agent.clock.state import ClockLock, StaleState

GUARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
log = logging.getLogger(__name__)


def put_back(lock: ClockLock, backend: ClockBackend, stale: StaleState) -> dict[str, str]:
    """Restore what a dead process left pinned (``stale``, read under ``lock``) through
    ``backend`` (the same device), then remove the state file. A state from an earlier boot is
    only removed: the reboot reset the clock. Returns what was written back."""
    restored = backend.restore_saved(stale.saved) if stale.from_this_boot else {}
    lock.clear()
    return restored


class RestoreGuard:
    """``with RestoreGuard(backend) as guard:`` ... pins ... ; afterwards ``guard.restored`` is
    what ``backend.restore()`` put back and ``guard.signal`` the signal that ended the block."""

    def __init__(
        self,
        backend: ClockBackend,
        signals: tuple[signal.Signals, ...] = GUARDED_SIGNALS,
        *,
        state_dir: Path | None = None,
    ):
        self.backend = backend
        self.signals = signals
        self.state_dir = state_dir  # None: device_agent.clock.state.runtime_dir()
        self.lock: ClockLock | None = None
        #: what a dead process had left pinned and the entry put back: (its state, restored)
        self.recovered: tuple[StaleState, dict[str, str]] | None = None
        self.restored: dict[str, str] | None = None
        self.signal: int | None = None
        self.ignored_signals: list[int] = []
        self.signals_handled = False
        self._previous: dict[int, object] = {}
        self._restoring = False
        self._done = False

    # -- signals ----------------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._restoring or self._done or self.signal is not None:
            self.ignored_signals.append(signum)  # a second signal must not skip the restore
            return
        self.signal = signum
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._on_signal)
        self.signals_handled = True

    def _uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    # -- the state on disk ---------------------------------------------------------------------
    def _take_lock(self) -> None:
        ref = self.backend.device_ref()
        if ref is None:  # nothing outlives this process
            return
        lock = ClockLock(ref, self.state_dir).acquire()
        try:
            stale = lock.stale()
            if stale is not None:
                restored = put_back(lock, self.backend, stale)
                self.recovered = (stale, restored)
                if restored:
                    what = ", ".join(f"{k}={v}" for k, v in restored.items())
                    log.warning("restored %s first: %s", stale.describe(), what)
            self.backend.journal = self._journal
        except BaseException:
            lock.release()
            raise
        self.lock = lock

    def _journal(self, saved: Mapping[str, str]) -> None:
        assert self.lock is not None
        self.lock.record(saved)

    def _release_lock(self) -> None:
        lock, self.lock = self.lock, None
        if lock is not None:
            self.backend.journal = None
            lock.clear()
            lock.release()

    # -- restore ----------------------------------------------------------------------------------
    def restore(self) -> dict[str, str]:
        """Restore now (once); later calls return the first result. A failure is raised and
        leaves the state file and the lock in place, so a later call can try again."""
        if self._done:
            return self.restored or {}
        self._restoring = True
        try:
            self.restored = self.backend.restore()
            self._done = True
        finally:
            self._restoring = False
        self._release_lock()
        return self.restored

    def _restore_at_exit(self) -> None:
        """The interpreter is exiting with the clock not restored (the block never ended, or
        its restore failed): try once more and say how it went."""
        if self._done:
            return
        try:
            restored = self.restore()
        except BackendError as exc:
            where = f" (state kept in {self.lock.state_path})" if self.lock is not None else ""
            sys.stderr.write(
                f"error: the GPU clock is still pinned: {exc}; run `cutedge device restore`"
                f"{where}\n"
            )
            return
        what = ", ".join(f"{k}={v}" for k, v in restored.items()) or "nothing to restore"
        sys.stderr.write(f"restored at exit: {what}\n")

    def __enter__(self) -> RestoreGuard:
        self._take_lock()
        self._install()
        atexit.register(self._restore_at_exit)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._restoring = True  # first thing: from here a signal is only recorded
        try:
            self.restore()  # a failure propagates; the atexit hook stays to retry
            atexit.unregister(self._restore_at_exit)
        finally:
            self._restoring = False
            self._uninstall()
