"""A call run in a forked child process, its answer sent back as JSON over a pipe.

What the tokenizers library builds from an uploaded tokenizer.json is several times the file
(about 450 MB for 60 MB), in many small blocks the allocator keeps after they are freed: run in
the API process, every upload checked would leave it larger. In a child, that memory is the
child's and goes back whole when it exits; a panic, an abort or a bomb that exhausts memory ends
the child, not the API. Forked rather than spawned: a fresh interpreter would import the API's
modules (seconds) for every upload, while a fork shares them copy-on-write and its child only
parses and builds.

Only a `ProblemError` crosses back (as status, detail and type); anything else the child raises
is logged there and becomes a RuntimeError here.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import time
from collections.abc import Callable

from .problems import ProblemError

log = logging.getLogger("tokengraft.api")


class Lost(Exception):
    """The child ran past its time (and was killed) or died without an answer."""


def apart(seconds: float, call: Callable[..., int], *args: object) -> int:
    """`call(*args)`, an int, computed in a child; Lost if it ran past `seconds` or died."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the parent's code
        os.close(read)
        _answer(write, call, args)
    os.close(write)
    try:
        raw = _read(read, time.monotonic() + seconds, pid)
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    return _value(raw)


def _answer(fd: int, call: Callable[..., int], args: tuple) -> None:
    status = 0
    try:
        answer: dict = {"value": call(*args)}
    except ProblemError as e:
        answer = {"status": e.status, "detail": e.detail, "type": e.type}
    except BaseException:
        log.exception("a check in a child process failed")
        answer, status = {"error": "failed"}, 1
    try:
        os.write(fd, json.dumps(answer).encode())  # a few hundred bytes: within the pipe's buffer
    finally:
        os._exit(status)  # no atexit handler, no flush of the parent's buffers


def _read(fd: int, deadline: float, pid: int) -> bytes:
    chunks = []
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
    os.kill(pid, signal.SIGKILL)
    return b""


def _value(raw: bytes) -> int:
    if not raw:
        raise Lost()
    answer = json.loads(raw)
    if "value" in answer:
        return answer["value"]
    if "status" in answer:
        raise ProblemError(answer["status"], answer["detail"], answer["type"])
    raise RuntimeError("a check in a child process failed; its log has the details")
