"""The worker's signals, in a child process (they replace its handlers): each one counts even
while the main thread sits in one long native call, where Python handlers do not run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# The main thread waits on a torch future (native, no Python handler runs until it returns);
# a thread sends the signals, waits for the event named first (the last the signals should
# set), then wakes the main thread.
CHILD = """
import json, os, signal, sys, threading, time
import torch
from service.shutdown import Shutdown

stop, abandon = threading.Event(), threading.Event()
Shutdown(stop, abandon).start()
future, seen = torch.futures.Future(), {}

def send():
    for name in sys.argv[2:]:
        os.kill(os.getpid(), getattr(signal, name))
        time.sleep(0.1)
    {"stop": stop, "abandon": abandon}[sys.argv[1]].wait(10)
    seen.update(stop=stop.is_set(), abandon=abandon.is_set())
    future.set_result(None)

threading.Thread(target=send).start()
future.wait()
print(json.dumps(seen))
"""


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["stop", "SIGTERM"], {"stop": True, "abandon": False}),
        (["abandon", "SIGTERM", "SIGTERM"], {"stop": True, "abandon": True}),
        (["abandon", "SIGINT"], {"stop": True, "abandon": True}),
    ],
)
def test_each_signal_counts_while_the_main_thread_is_in_native_code(
    argv: list[str], expected: dict
) -> None:
    run = subprocess.run(
        [sys.executable, "-c", CHILD, *argv], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.splitlines()[-1]) == expected
