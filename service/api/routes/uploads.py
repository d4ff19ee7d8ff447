"""Uploaded tokenizers (a tokenizer.json, or a tokenizer folder as a tar) and evaluation texts:
upload, list, delete.

An upload is a multipart/form-data body with a `file` field, parsed as it streams in: reading
stops as soon as the file passes its limit, so nothing larger is ever read, spooled or held.
What it holds is checked by `service.uploads` before anything is kept.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from sqlalchemy import select

from ...models import Upload
from ...problems import ProblemError
from ...schemas import Problem, TextList, TokenizerList, UploadOut
from ...services import Services
from ...uploads import invalid, remove, store_text, store_tokenizer
from ..deps import Authorized, ServicesDep
from ..guard import MULTIPART_SLACK
from ..views import upload_out

router = APIRouter(dependencies=[Authorized], tags=["uploads"])
PROBLEM = {"model": Problem, "content": {"application/problem+json": {}}}
ERRORS = {400: PROBLEM, 413: PROBLEM, 422: PROBLEM}
GONE = {404: PROBLEM, 409: PROBLEM}
# The part is bytes: `contentMediaType` says so in OpenAPI 3.1's terms, `format: binary` in the
# terms generators and fuzzers read, so that no client takes `true` or `1` in it for a JSON value.
BINARY = {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream"}
FILE_FORM = {"type": "object", "required": ["file"], "properties": {"file": BINARY}}
FILE_BODY = {
    "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": FILE_FORM}}}
}
NO_FILE = "expected a multipart/form-data body with a `file` field"


def _too_large(limit: int) -> ProblemError:
    return ProblemError(413, f"upload larger than {limit} bytes", "/problems/too-large")


def _malformed(detail: str) -> ProblemError:
    return ProblemError(400, f"malformed multipart body: {detail}", "/problems/bad-request")


class FileField:
    """python-multipart callbacks that keep the `file` field of a form, refused once it passes
    `limit` bytes, and drop every other field."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
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

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self.data += data[start:end]
            if len(self.data) > self.limit:
                raise _too_large(self.limit)

    def _end(self) -> None:
        self.ended = True


def _boundary(request: Request) -> bytes:
    kind, options = parse_options_header(request.headers.get("content-type"))
    if kind != b"multipart/form-data" or not options.get(b"boundary"):
        raise invalid(NO_FILE)
    return options[b"boundary"]


async def receive_file(request: Request, limit: int) -> tuple[str, bytes]:
    """(file name, content) of the form's `file` field, read while the body streams in."""
    field = FileField(limit)
    parser = MultipartParser(_boundary(request), field.callbacks())
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
    return field.filename, bytes(field.data)


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
    filename, data = await receive_file(request, services.settings.max_upload_bytes)
    return upload_out(await run_in_threadpool(store_tokenizer, services, filename, data))


@router.get("/tokenizers", response_model=TokenizerList)
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
    filename, data = await receive_file(request, services.settings.max_text_bytes)
    return upload_out(await run_in_threadpool(store_text, services, filename, data))


@router.get("/texts", response_model=TextList)
async def list_texts(services: ServicesDep) -> TextList:
    uploads = await run_in_threadpool(_uploads, services, "text")
    return TextList(corpora=services.catalog.corpora(), uploads=uploads)


@router.delete("/texts/{upload_id}", status_code=204, responses=GONE)
async def delete_text(upload_id: str, services: ServicesDep) -> Response:
    """The uploaded text and its record; 409 while a queued or running job names it (a job
    that names it once it is gone fails at its start with invalid_input)."""
    await run_in_threadpool(remove, services, "text", upload_id)
    return Response(status_code=204)
