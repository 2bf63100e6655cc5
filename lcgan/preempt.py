"""SIGTERM/SIGINT: finish the current step, save a resumable checkpoint, exit. A second signal exits at once."""
from __future__ import annotations

import signal
import threading


class StopRequest:
    """Context manager that turns the first SIGTERM/SIGINT into a flag the loop polls between steps."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __bool__(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # second signal: the user means it
            raise SystemExit(128 + signum)
        self.signum = signum
        print(f"\n{signal.Signals(signum).name} received: saving a checkpoint after this step "
              "(send it again to exit at once)", flush=True)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
