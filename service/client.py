"""A client for a running tokengraft server, over its HTTP API (`tokengraft remote` is its
command line).

Synchronous httpx: each call is one request (or one stream) that a script or the CLI waits for.
An answer other than 2xx raises `ClientError`, built from the server's problem+json; a 2xx
whose body is not the JSON the call expects raises `BadAnswer`; a server that cannot be reached
raises httpx's `TransportError`. Nothing here imports torch or
transformers, so that a machine without them can drive a server.
"""

from __future__ import annotations

import glob
import hashlib
import io
import itertools
import json
import re
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

import httpx

from hypernet.errors import InputError

# What the server keeps of a tokenizer folder (service.uploads.TOKENIZER_FILES, not imported:
# that module loads the model libraries). Only these are sent, never the weights beside them.
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
)  # fmt: skip
PAGE = 200  # the most jobs GET /jobs returns at once
CHUNK = 1 << 20
RETRY_SECONDS = 1.0  # before reconnecting to an event stream, until the server sends `retry:`
RECONNECTS = 5  # dropped event streams in a row before giving up
ENDED = {"succeeded", "failed", "canceled", "deleted"}  # an `end` event with these is final

Progress = Callable[[int], object]  # called with each number of bytes a download adds
# What an answer must hold: a JSON object's keys and their types; [shape] is a list of such.
Shape = dict[str, Any]
JOB: Shape = {
    "id": str, "status": str, "cancel_requested": bool, "request": dict, "created_at": str,
}  # fmt: skip
PAGE_OF_JOBS: Shape = {"jobs": [JOB], "next_cursor": (str, type(None))}
DRY_RUN: Shape = {"valid": bool}
UPLOAD: Shape = {"id": str}
MANIFEST: Shape = {"files": [{"path": str, "size": int, "sha256": str}]}
STATE: Shape = {"status": str}  # a `state` event's data


class ClientError(Exception):
    """A non-2xx answer, from its RFC 9457 problem+json where the server sent one (a proxy's
    HTML error page leaves only the status line)."""

    def __init__(
        self, status: int, title: str, detail: str | None = None, errors: list[dict] | None = None
    ) -> None:
        self.status, self.title, self.detail, self.errors = status, title, detail, errors or []
        super().__init__(status, title, detail)

    @classmethod
    def from_response(cls, response: httpx.Response) -> ClientError:
        problem = _problem(response)
        title = problem.get("title") or response.reason_phrase
        return cls(response.status_code, title, problem.get("detail"), problem.get("errors"))

    def __str__(self) -> str:
        """One line: `422 Unprocessable Entity: body.method: ...`; the field errors, where the
        server listed them, say more than its summary."""
        fields = "; ".join(_field_error(e) for e in self.errors)
        text = fields or self.detail
        return " ".join(f"{self.status} {self.title}{f': {text}' if text else ''}".split())


class BadAnswer(Exception):
    """A 2xx answer whose body is not JSON, or not of the shape the call expects (another
    server, a proxy's page): one line that says so and shows how the body starts."""

    def __init__(self, status: int, what: str, body: str) -> None:
        line = " ".join(body.split())
        shown = line if len(line) <= 60 else line[:60] + "..."
        super().__init__(f"the server answered {status} with a body that is not {what}: {shown!r}")


class DownloadError(Exception):
    """A download that cannot be trusted: a file whose sha256 is not the manifest's, or a
    manifest path that would leave the target folder."""


def _problem(response: httpx.Response) -> dict:
    if "json" not in response.headers.get("content-type", ""):
        return {}
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _field_error(error: dict) -> str:
    return f"{'.'.join(map(str, error.get('loc', [])))}: {error.get('msg', '')}"


class Client:
    """The HTTP API of one server, with an API key when it needs one."""

    def __init__(
        self,
        server: str,
        key: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.server = server.rstrip("/")
        self.http = httpx.Client(
            base_url=self.server, headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    # --- requests -----------------------------------------------------------------------------
    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self.http.request(method, path, **kwargs)
        if not response.is_success:
            raise ClientError.from_response(response)
        return response

    def _json(self, method: str, path: str, what: str, shape: Shape, **kwargs: Any) -> dict:
        """The answer's JSON object, `what` the call expects, if it has the keys of `shape`."""
        response = self._send(method, path, **kwargs)
        return _shaped(response.status_code, response.text, what, shape)

    @contextmanager
    def _stream(self, path: str, headers: dict[str, str]) -> Iterator[httpx.Response]:
        """A streamed GET whose error answers are read and raised before any byte is used."""
        with self.http.stream("GET", path, headers=headers) as response:
            if not response.is_success:
                response.read()
                raise ClientError.from_response(response)
            yield response

    # --- uploads and jobs ---------------------------------------------------------------------
    def upload_tokenizer(self, path: Path) -> dict:
        """A tokenizer.json as it is, or a folder as a gzipped tar of its tokenizer files: the
        server then keeps its config and special tokens too."""
        if path.is_dir():
            return self._upload("/tokenizers", "tokenizer.tar.gz", _tokenizer_tar(path))
        return self._upload("/tokenizers", path.name, path.read_bytes())

    def upload_text(self, path: Path) -> dict:
        """A UTF-8 text, to evaluate (or refine) on by its id."""
        return self._upload("/texts", path.name, path.read_bytes())

    def _upload(self, path: str, name: str, data: bytes) -> dict:
        return self._json("POST", path, "an upload", UPLOAD, files={"file": (name, data)})

    def submit(self, request: dict) -> dict:
        """POST /transplant: the queued job, or for `"dry_run": true` the validation answer."""
        if request.get("dry_run"):
            return self._json("POST", "/transplant", "a validation answer", DRY_RUN, json=request)
        return self._json("POST", "/transplant", "a job", JOB, json=request)

    def job(self, job_id: str) -> dict:
        return self._json("GET", f"/jobs/{_segment(job_id)}", "a job", JOB)

    def jobs(self, status: str | None = None, limit: int | None = None) -> Iterator[dict]:
        """Newest first, at most `limit` (None: all), following the cursor from page to page,
        so that jobs submitted meanwhile neither repeat nor push others out."""
        size = min(limit or PAGE, PAGE)
        params = {"status": status, "limit": size} if status else {"limit": size}
        pages = self._pages(params)
        return itertools.islice((job for page in pages for job in page), limit)

    def _pages(self, params: dict) -> Iterator[list[dict]]:
        cursor = None
        while True:
            page = self._json(
                "GET",
                "/jobs",
                "a page of jobs",
                PAGE_OF_JOBS,
                params=params | ({"cursor": cursor} if cursor else {}),
            )
            yield page["jobs"]
            if (cursor := page["next_cursor"]) is None:
                return

    def cancel(self, job_id: str) -> dict:
        """A queued job is canceled at once; a running one stops within about a second."""
        return self._json("POST", f"/jobs/{_segment(job_id)}/cancel", "a job", JOB)

    def delete(self, job_id: str) -> None:
        """A finished job and its files (the server refuses one that is not finished: 409)."""
        self._send("DELETE", f"/jobs/{_segment(job_id)}")

    # --- events -------------------------------------------------------------------------------
    def events(self, job_id: str, last_event_id: str | None = None) -> Iterator[dict]:
        """The job's events ({"event", "id", "data"}) until its final `end` event. A dropped
        stream, or one the server ended as it shut down (an `end` with a reason, not passed
        on), is reopened after the server's `retry:` delay with `Last-Event-ID`, so no event
        is missed or repeated."""
        reader, failures = _EventReader(last_event_id), 0
        while True:
            try:
                for event in self._events_once(job_id, reader):
                    failures = 0
                    yield event
                    if event["event"] == "end":
                        return
            except httpx.TransportError as e:
                error: httpx.TransportError = e
            else:
                error = httpx.RemoteProtocolError(f"the event stream of job {job_id} ended early")
            failures += 1
            if failures > RECONNECTS:
                raise error
            time.sleep(reader.retry)

    def _events_once(self, job_id: str, reader: _EventReader) -> Iterator[dict]:
        headers = {"Last-Event-ID": reader.last_id} if reader.last_id else {}
        with self._stream(f"/jobs/{_segment(job_id)}/events", headers) as response:
            for event in reader.read(response.iter_lines()):
                if event["event"] != "end" or event["data"].get("status") in ENDED:
                    yield event  # not the `end` of a server shutting down: reconnect instead

    # --- artifacts ----------------------------------------------------------------------------
    def manifest(self, job_id: str) -> list[dict]:
        """A succeeded job's files: path, size and sha256 each."""
        path = f"/jobs/{_segment(job_id)}/artifacts"
        return self._json("GET", path, "a manifest", MANIFEST)["files"]

    def download(self, job_id: str, folder: Path, progress: Progress | None = None) -> list[Path]:
        """Every file of a succeeded job into `folder` (a checkpoint transformers loads). Files
        already there with the right sha256 are kept, a `.part` left by an interrupted
        download of the same file is continued (its name holds the sha256's first 16 digits, so
        another job's is not: it is removed), and nothing takes its final name before its
        sha256 is checked."""
        files = self.manifest(job_id)
        targets = [_target(folder, f["path"]) for f in files]  # all checked before any is written
        return [
            self._fetch(job_id, f, target, progress or _ignore)
            for f, target in zip(files, targets, strict=True)
        ]

    def _fetch(self, job_id: str, file: dict, target: Path, progress: Progress) -> Path:
        if target.is_file() and _sha256(target) == file["sha256"]:
            progress(file["size"])
            return target
        part = _part(target, file["sha256"])
        target.parent.mkdir(parents=True, exist_ok=True)
        url = f"/jobs/{_segment(job_id)}/artifacts/{quote(file['path'])}"
        self._transfer(url, part, file, progress)
        if _sha256(part) != file["sha256"]:
            part.unlink()
            raise DownloadError(f"{file['path']}: sha256 differs from the manifest; removed")
        return part.replace(target)

    def _transfer(self, url: str, part: Path, file: dict, progress: Progress) -> None:
        """Into `part`, continuing what it holds: `If-Range` with the file's strong ETag (its
        sha256) makes a server whose file changed send all of it (200), which starts over."""
        have = part.stat().st_size if part.exists() else 0
        if have == file["size"]:
            progress(have)
            return
        have = 0 if have > file["size"] else have
        headers = {"Range": f"bytes={have}-", "If-Range": f'"{file["sha256"]}"'} if have else {}
        with self._stream(url, headers) as response:
            resumed = response.status_code == 206  # else 200: the whole file, from the start
            progress(have if resumed else 0)
            with part.open("ab" if resumed else "wb") as out:
                for chunk in response.iter_bytes(CHUNK):
                    out.write(chunk)
                    progress(len(chunk))


class _EventReader:
    """A text/event-stream parser (the WHATWG HTML rules, for the fields this server sends),
    whose last event id and retry delay outlive a connection. Our own, some twenty lines, not
    httpx-sse: that package parses but leaves reconnecting with `Last-Event-ID` and `retry:`,
    the part that matters here, to its caller."""

    def __init__(self, last_id: str | None) -> None:
        self.last_id, self.retry = last_id, RETRY_SECONDS
        self._pending_id = last_id

    def read(self, lines: Iterable[str]) -> Iterator[dict]:
        """The events of one connection; an event it cut short is forgotten, its id too."""
        kind, data, self._pending_id = "message", [], self.last_id
        for line in lines:
            if not line:  # an event ends: its id counts only once it is complete
                self.last_id = self._pending_id
                if data:
                    text = "\n".join(data)
                    yield {"event": kind, "id": self.last_id, "data": _event_data(kind, text)}
                kind, data = "message", []
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name == "event":
                kind = value
            else:
                self._field(name, value)

    def _field(self, name: str, value: str) -> None:
        if name == "id":
            self._pending_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value) / 1000


def _shaped(status: int, body: str, what: str, shape: Shape) -> dict:
    """`body` as the JSON object it should be, or BadAnswer."""
    try:
        value = json.loads(body)
    except ValueError:
        value = None
    if not _fits(value, shape):
        raise BadAnswer(status, what, body)
    return value


def _fits(value: object, shape: Shape) -> bool:
    return isinstance(value, dict) and all(
        key in value and _is(value[key], kind) for key, kind in shape.items()
    )


def _is(value: object, kind: Any) -> bool:
    """`value` is of `kind`: a type, a tuple of types, or [shape] (a list of such objects)."""
    if isinstance(kind, list):
        return isinstance(value, list) and all(_fits(item, kind[0]) for item in value)
    return isinstance(value, kind)


def _event_data(kind: str, text: str) -> dict:
    """An event's data: a JSON object, with a status where the event is a change of state."""
    return _shaped(200, text, f"a {kind} event", STATE if kind == "state" else {})


def _target(folder: Path, path: str) -> Path:
    """Where a manifest path goes inside `folder`; one that would leave it (absolute, `..`, a
    backslash) refuses the whole download."""
    pure = PurePosixPath(path)
    if not pure.parts or pure.is_absolute() or ".." in pure.parts or "\\" in path:
        raise DownloadError(f"refusing manifest path {path!r}: it would leave {folder}")
    return folder.joinpath(*pure.parts)


def _tokenizer_tar(folder: Path) -> bytes:
    """The folder's tokenizer files as a gzipped tar, each a regular member (a hub cache's
    symlinks would be refused by the server)."""
    if not (folder / "tokenizer.json").is_file():
        raise InputError(f"{folder} holds no tokenizer.json")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name in TOKENIZER_FILES:
            if (folder / name).is_file():
                data = (folder / name).read_bytes()
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _part(target: Path, sha256: str) -> Path:
    """Where `target` is downloaded to, `NAME.<16 hex digits of its sha256>.part`, once the
    parts of other versions of it are gone."""
    stale = re.compile(re.escape(target.name) + r"\.[0-9a-f]{16}\.part")
    part = target.with_name(f"{target.name}.{sha256[:16]}.part")
    for other in target.parent.glob(f"{glob.escape(target.name)}.*.part"):
        if other != part and stale.fullmatch(other.name):
            other.unlink(missing_ok=True)
    return part


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _segment(value: str) -> str:
    """A path segment: a job id from the command line cannot reach another route."""
    return quote(value, safe="")


def _ignore(size: int) -> None:
    """The progress callback when none is given."""
