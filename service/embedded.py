"""The embedded default's worker: a `tokengraft worker` process beside the API, started and
stopped with it and restarted if it dies.

A process of its own, not a thread: a transplant holds the interpreter for seconds at a time,
and in the API's process it stalled every poll of every dashboard. It also runs at a lower
priority, so that on a small machine the API answers first.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading

from .config import Settings

log = logging.getLogger("tokengraft.embedded")
NICENESS = 19  # the lowest: a poll never waits behind a transplant


def environment(settings: Settings) -> dict[str, str]:
    """The settings as the worker process reads them: TOKENGRAFT_* variables."""
    given = settings.model_dump(exclude_none=True)
    return {**os.environ, **{f"TOKENGRAFT_{k.upper()}": str(v) for k, v in given.items()}}


class WorkerProcess:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process: subprocess.Popen | None = None
        self.stopping = threading.Event()
        self.lock = threading.Lock()  # no new process once stop() has begun
        self.watcher = threading.Thread(target=self._watch, name="worker-watch", daemon=True)

    def start(self) -> None:
        self._spawn()
        self.watcher.start()

    def _spawn(self) -> None:
        command = [sys.executable, "-m", "service.cli", "worker"]
        with self.lock:
            if self.stopping.is_set():
                return
            self.process = subprocess.Popen(command, env=environment(self.settings))
        try:
            os.setpriority(os.PRIO_PROCESS, self.process.pid, NICENESS)
        except OSError:  # not allowed here: it runs at the API's priority
            log.warning("could not lower the worker's priority")

    def _watch(self) -> None:
        """Restart the worker if it exits while the API runs; its job is requeued by the
        reaper once its heartbeat is stale."""
        while not self.stopping.is_set():
            assert self.process is not None
            code = self.process.wait()
            if self.stopping.is_set():
                return
            log.error("the worker exited with status %s; starting a new one", code)
            if self.stopping.wait(1.0):
                return
            self._spawn()

    def stop(self, timeout: float = 60.0) -> None:
        """Interrupt: the worker gives its running job back to the queue and exits."""
        with self.lock:
            self.stopping.set()
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
