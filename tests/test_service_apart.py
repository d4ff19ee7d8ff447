"""A call in a forked child: its value, its problem and its death come back; nothing else."""

from __future__ import annotations

import os
import signal
import time

import pytest

from service.apart import Lost, apart
from service.problems import ProblemError


def grows(n: int) -> int:
    rows = [bytes(1000) for _ in range(n)]  # the child's memory, not the caller's
    return len(rows)


def refuses(detail: str) -> int:
    raise ProblemError(413, detail, "/problems/too-large")


def dies() -> int:
    os.kill(os.getpid(), signal.SIGKILL)  # as the kernel ends a process out of memory
    return 0


def hangs() -> int:
    time.sleep(60)
    return 0


def breaks() -> int:
    raise ValueError("a bug")


def test_the_value_and_the_problem_come_back() -> None:
    assert apart(30, grows, 10_000) == 10_000
    with pytest.raises(ProblemError) as e:
        apart(30, refuses, "too many tokens")
    assert (e.value.status, e.value.detail, e.value.type) == (
        413,
        "too many tokens",
        "/problems/too-large",
    )


def test_a_child_that_dies_or_runs_past_its_time_is_lost() -> None:
    with pytest.raises(Lost):
        apart(30, dies)
    started = time.monotonic()
    with pytest.raises(Lost):
        apart(0.5, hangs)
    assert time.monotonic() - started < 30  # killed, not waited for


def test_any_other_error_is_a_runtime_error_here() -> None:
    with pytest.raises(RuntimeError, match="child process failed"):
        apart(30, breaks)
