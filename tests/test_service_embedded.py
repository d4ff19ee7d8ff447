"""The embedded default's worker process: started with the API, restarted when it dies, and
interrupted (its job given back) when the API stops."""

from __future__ import annotations

import os
import signal
import time

from service.config import Settings
from service.embedded import WorkerProcess, environment
from service.services import Services


def wait_for(condition, timeout: float = 60) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_settings_reach_the_worker_process(settings: Settings) -> None:
    env = environment(settings)
    assert env["TOKENGRAFT_DATA_DIR"] == str(settings.data_dir)
    assert env["TOKENGRAFT_DATABASE_URL"] == settings.url
    assert env["TOKENGRAFT_HEARTBEAT_SECONDS"] == str(settings.heartbeat_seconds)
    assert "TOKENGRAFT_HYPERNETS_DIR" in env and "TOKENGRAFT_MAX_VOCAB_SIZE" in env


def test_a_dead_worker_is_replaced_and_the_last_is_stopped(
    settings: Settings, services: Services
) -> None:
    embedded = WorkerProcess(settings)
    embedded.start()
    try:
        first = embedded.process
        assert first is not None
        wait_for(lambda: services.queue.live_workers(settings.stale_seconds) == 1)
        assert os.getpriority(os.PRIO_PROCESS, first.pid) >= os.getpriority(os.PRIO_PROCESS, 0)
        first.send_signal(signal.SIGKILL)
        wait_for(lambda: embedded.process is not first and embedded.process.poll() is None)
        wait_for(lambda: services.queue.live_workers(settings.stale_seconds) >= 1)
    finally:
        embedded.stop()
    assert embedded.process.poll() is not None
    time.sleep(2 * settings.poll_seconds)
    assert embedded.process.poll() is not None  # and nothing started after stop
