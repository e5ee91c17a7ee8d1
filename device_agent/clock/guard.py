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
return, exceptions and exit, and says so in ``signals_handled``.
"""

from __future__ import annotations

import atexit
import signal
import threading
from types import FrameType, TracebackType

from device_agent.clock.base import ClockBackend

GUARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RestoreGuard:
    """``with RestoreGuard(backend) as guard:`` ... pins ... ; afterwards ``guard.restored`` is
    what ``backend.restore()`` put back and ``guard.signal`` the signal that ended the block."""

    def __init__(
        self, backend: ClockBackend, signals: tuple[signal.Signals, ...] = GUARDED_SIGNALS
    ):
        self.backend = backend
        self.signals = signals
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

    # -- restore ----------------------------------------------------------------------------------
    def restore(self) -> dict[str, str]:
        """Restore now (once); later calls return the first result."""
        if self._done:
            return self.restored or {}
        self._restoring = True
        try:
            self.restored = self.backend.restore()
            self._done = True
        finally:
            self._restoring = False
        return self.restored

    def __enter__(self) -> RestoreGuard:
        self._install()
        atexit.register(self.restore)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._restoring = True  # first thing: from here a signal is only recorded
        try:
            self.restore()
        finally:
            atexit.unregister(self.restore)
            self._uninstall()
