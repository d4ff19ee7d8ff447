"""Uploaded tokenizers (a tokenizer.json, or a tokenizer folder as a tar) and evaluation texts:
upload, list, delete.

An upload is a multipart/form-data body with a `file` field, parsed as it streams in and
written to an unnamed temp file: reading stops as soon as the file passes its limit, so nothing
larger is ever read or spooled, and a body that is coming in holds no memory. What it holds is
checked by `service.uploads` before anything is kept, `upload_parses` uploads at a time (a
tokenizer.json's parse holds several times its size); the others wait their turn, up to
`upload_wait_seconds`, then get a 503.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import BinaryIO

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from sqlalchemy import select

from ...models import Upload
from ...problems import ProblemError
from ...schemas import Problem, TextList, TokenizerList, UploadOut
from ...services import Services
from ...uploads import check_filename, invalid, kept, remove, store_text, store_tokenizer
from ..deps import Authorized, ServicesDep
from ..guard import MULTIPART_SLACK
from ..views import upload_out

router = APIRouter(dependencies=[Authorized], tags=["uploads"])
PROBLEM = {"model": Problem, "content": {"application/problem+json": {}}}
ERRORS = {400: PROBLEM, 413: PROBLEM, 422: PROBLEM, 503: PROBLEM}
GONE = {404: PROBLEM, 409: PROBLEM}
# The part is bytes: `contentMediaType` says so in OpenAPI 3.1's terms, `format: binary` in the
# terms generators and fuzzers read, so that no client takes `true` or `1` in it for a JSON value.
BINARY = {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream"}
FILE_FORM = {"type": "object", "required": ["file"], "properties": {"file": BINARY}}
FILE_BODY = {
    "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": FILE_FORM}}}
}
NO_FILE = "expected a multipart/form-data body with a `file` field"
RETRY_AFTER = "10"  # seconds: a parse of the largest tokenizer.json takes a few


def _too_large(limit: int) -> ProblemError:
    return ProblemError(413, f"upload larger than {limit} bytes", "/problems/too-large")


def _malformed(detail: str) -> ProblemError:
    return ProblemError(400, f"malformed multipart body: {detail}", "/problems/bad-request")


class Parses:
    """At most `size` uploads checked (and held in memory) at once; an upload waits up to
    `wait` seconds for its turn, then is refused with a 503."""

    def __init__(self, size: int, wait: float) -> None:
        self.slots = anyio.Semaphore(size)
        self.wait = wait

    async def run(self, call: Callable[..., Upload], *args: object) -> Upload:
        """`call` in the threadpool once a slot is free; the slot is held until it returns."""
        await self._acquire()
        try:
            return await run_in_threadpool(call, *args)
        finally:
            self.slots.release()

    async def _acquire(self) -> None:
        with anyio.move_on_after(self.wait) as waiting:
            await self.slots.acquire()
        if waiting.cancelled_caught:
            raise ProblemError(
                503,
                f"the server is checking other uploads; try again in {RETRY_AFTER} s",
                "/problems/busy",
                {"Retry-After": RETRY_AFTER},
            )


class FileField:
    """python-multipart callbacks that write the `file` field of a form to `into`, refused once
    it passes `limit` bytes, and drop every other field."""

    def __init__(self, limit: int, into: BinaryIO) -> None:
        self.limit, self.into = limit, into
        self.size = 0
        self.filename: str | None = None
        self.ended = False
        self._header = self._value = self._disposition = b""
        self._in_file = False

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_end": self._end,
        }

    def _begin(self) -> None:
        self._disposition, self._in_file = b"", False

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        if self._header.lower() == b"content-disposition":
            self._disposition = self._value
        self._header = self._value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        self._in_file = options.get(b"name") == b"file" and b"filename" in options
        if self._in_file and self.filename is not None:
            raise invalid("the form has two `file` fields")
        if self._in_file:
            self.filename = options[b"filename"].decode("utf-8", "replace")
            check_filename(self.filename)  # before the file's bytes are read

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self.size += end - start
            if self.size > self.limit:
                raise _too_large(self.limit)
            self.into.write(data[start:end])

    def _end(self) -> None:
        self.ended = True


def _boundary(request: Request) -> bytes:
    kind, options = parse_options_header(request.headers.get("content-type"))
    if kind != b"multipart/form-data" or not options.get(b"boundary"):
        raise invalid(NO_FILE)
    return options[b"boundary"]


def _parser(request: Request, field: FileField) -> MultipartParser:
    try:
        return MultipartParser(_boundary(request), field.callbacks())
    except FormParserError as e:  # a boundary longer than python-multipart takes
        raise _malformed(str(e)) from None


async def receive_file(request: Request, limit: int, into: BinaryIO) -> str:
    """The file name of the form's `file` field, whose content is written to `into` while the
    body streams in."""
    field = FileField(limit, into)
    parser = _parser(request, field)
    read = 0
    async for chunk in request.stream():
        read += len(chunk)
        if read > limit + MULTIPART_SLACK:
            raise _too_large(limit)
        try:
            parser.write(chunk)
        except FormParserError as e:
            raise _malformed(str(e)) from None
    if not field.ended:
        raise _malformed("it ended before its closing boundary")
    if field.filename is None:
        raise invalid(NO_FILE)
    return field.filename


async def upload(
    request: Request,
    services: Services,
    limit: int,
    store: Callable[[Services, str, bytes], Upload],
) -> Upload:
    """The form's file, received into a temp file beside the uploads, then checked and kept by
    `store` once a parse slot is free."""
    folder = services.settings.uploads_dir
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=folder) as into:
        filename = await receive_file(request, limit, into)
        return await request.app.state.parses.run(kept, store, services, filename, into)


def _uploads(services: Services, kind: str) -> list[UploadOut]:
    with services.sessions() as s:
        rows = s.scalars(select(Upload).where(Upload.kind == kind).order_by(Upload.created_at))
        return [upload_out(r) for r in rows]


@router.post(
    "/tokenizers",
    status_code=201,
    response_model=UploadOut,
    responses=ERRORS,
    openapi_extra=FILE_BODY,
)
async def upload_tokenizer(request: Request, services: ServicesDep) -> UploadOut:
    """A tokenizer.json, or a tar (plain, gzip, bzip2 or xz) of a tokenizer folder."""
    limit = services.settings.max_upload_bytes
    return upload_out(await upload(request, services, limit, store_tokenizer))


@router.get("/tokenizers", response_model=TokenizerList)
@router.head("/tokenizers", response_model=TokenizerList)
async def list_tokenizers(services: ServicesDep) -> TokenizerList:
    uploads = await run_in_threadpool(_uploads, services, "tokenizer")
    return TokenizerList(store=services.catalog.tokenizers(), uploads=uploads)


@router.delete("/tokenizers/{upload_id}", status_code=204, responses=GONE)
async def delete_tokenizer(upload_id: str, services: ServicesDep) -> Response:
    """The uploaded tokenizer's files and record; 409 while a queued or running job names it
    (a job that names it once it is gone fails at its start with invalid_input)."""
    await run_in_threadpool(remove, services, "tokenizer", upload_id)
    return Response(status_code=204)


@router.post(
    "/texts", status_code=201, response_model=UploadOut, responses=ERRORS, openapi_extra=FILE_BODY
)
async def upload_text(request: Request, services: ServicesDep) -> UploadOut:
    """A UTF-8 text, for evaluation, refine or hypernetwork training."""
    limit = services.settings.max_text_bytes
    return upload_out(await upload(request, services, limit, store_text))


@router.get("/texts", response_model=TextList)
@router.head("/texts", response_model=TextList)
async def list_texts(services: ServicesDep) -> TextList:
    uploads = await run_in_threadpool(_uploads, services, "text")
    return TextList(corpora=services.catalog.corpora(), uploads=uploads)


@router.delete("/texts/{upload_id}", status_code=204, responses=GONE)
async def delete_text(upload_id: str, services: ServicesDep) -> Response:
    """The uploaded text and its record; 409 while a queued or running job names it (a job
    that names it once it is gone fails at its start with invalid_input)."""
    await run_in_threadpool(remove, services, "text", upload_id)
    return Response(status_code=204)
