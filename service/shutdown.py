"""How a worker process is asked to stop: SIGTERM once finishes the current job, SIGTERM twice
(or SIGINT) gives it back to the queue.

Signals are counted as they arrive, not as Python's handlers see them. CPython runs a handler
only between bytecodes of the main thread, and two signals that land during one long native
call (tokenizing a large eval text) reach it once: the second SIGTERM was lost. CPython's C
handler writes a byte per signal to a wakeup fd, so a thread reading that fd counts each one,
and acts on it while the main thread is still inside the call.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

log = logging.getLogger("tokengraft.worker")

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Shutdown(threading.Thread):
    """Sets `stop` at the first SIGTERM and `abandon` at the second or at SIGINT. Install from
    the main thread; it replaces the process's SIGTERM and SIGINT handlers."""

    def __init__(self, stop: threading.Event, abandon: threading.Event) -> None:
        super().__init__(daemon=True, name="shutdown")
        self.stop, self.abandon = stop, abandon
        self.fd, write = os.pipe()
        os.set_blocking(write, False)  # the C handler must never block on a full pipe
        for signum in SIGNALS:
            signal.signal(signum, _counted_elsewhere)
        signal.set_wakeup_fd(write, warn_on_full_buffer=False)

    def run(self) -> None:
        while data := os.read(self.fd, 64):
            for signum in data:
                self.receive(signum)

    def receive(self, signum: int) -> None:
        if signum not in SIGNALS:
            return
        if self.stop.is_set() or signum == signal.SIGINT:
            self.abandon.set()
            log.info("signal %d: giving the current job back", signum)
        else:
            log.info("signal %d: stopping after the current job; again gives it back", signum)
        self.stop.set()


def _counted_elsewhere(signum: int, frame: object) -> None:
    """A Python-level handler must exist for the C handler (and its wakeup byte) to run."""
