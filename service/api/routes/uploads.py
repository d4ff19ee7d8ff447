"""Uploaded tokenizers (a tokenizer.json, or a tokenizer folder as a tar) and evaluation texts.

Uploads are size-limited while they stream in, parsed before they are kept, written to a temp
folder renamed into place, and only then recorded. Tar members are never extracted by name:
only known tokenizer files are read, and any member whose path tries to leave the archive
refuses the whole upload.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from fastapi import APIRouter, UploadFile
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from tokenizers import Tokenizer

from ...models import Upload
from ...problems import ProblemError
from ...schemas import Problem, TextList, TokenizerList, UploadOut
from ...services import Services
from ..deps import Authorized, ServicesDep
from ..views import upload_out

router = APIRouter(dependencies=[Authorized], tags=["uploads"])
TOKENIZER_FILES = {
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
}  # fmt: skip
ERRORS = {
    413: {"model": Problem, "content": {"application/problem+json": {}}},
    422: {"model": Problem, "content": {"application/problem+json": {}}},
}


def _invalid(detail: str) -> ProblemError:
    return ProblemError(422, detail, "/problems/invalid-upload")


async def _read_limited(file: UploadFile, limit: int) -> bytes:
    data = bytearray()
    while chunk := await file.read(1 << 20):
        data += chunk
        if len(data) > limit:
            raise ProblemError(413, f"upload larger than {limit} bytes", "/problems/too-large")
    return bytes(data)


def _tokenizer_files(data: bytes, limit: int) -> dict[str, bytes]:
    """{file name: bytes} from a bare tokenizer.json or a tar of a tokenizer folder; a
    compressed tar may not unpack to more than `limit` bytes."""
    if data.lstrip()[:1] == b"{":
        return {"tokenizer.json": data}
    try:
        archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")  # noqa: SIM115 (closed below)
    except tarfile.TarError:
        raise _invalid("expected a tokenizer.json or a tar of a tokenizer folder") from None
    files: dict[str, bytes] = {}
    unpacked = 0
    with archive:
        for member in archive.getmembers():
            name = PurePosixPath(member.name)
            if name.is_absolute() or ".." in name.parts or member.islnk() or member.issym():
                raise _invalid(f"tar member {member.name!r} points outside the archive")
            if member.isfile() and name.name in TOKENIZER_FILES:
                unpacked += member.size
                if unpacked > limit:
                    raise ProblemError(413, f"the tar unpacks to more than {limit} bytes",
                                       "/problems/too-large")  # fmt: skip
                extracted = archive.extractfile(member)
                assert extracted is not None
                files[name.name] = extracted.read()
    if "tokenizer.json" not in files:
        raise _invalid("the tar holds no tokenizer.json")
    return files


def _save(
    services: Services, kind: str, filename: str, files: dict[str, bytes], vocab: int | None
) -> Upload:
    upload_id = uuid.uuid4().hex
    root = services.settings.uploads_dir
    tmp = root / f".{upload_id}.tmp"
    tmp.mkdir(parents=True)
    try:
        for name, content in files.items():
            (tmp / name).write_bytes(content)
        tmp.rename(root / upload_id)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    blob = b"".join(files[k] for k in sorted(files))
    row = Upload(
        id=upload_id, kind=kind, filename=Path(filename).name[:255] or kind, size=len(blob),
        sha256=hashlib.sha256(blob).hexdigest(), vocab_size=vocab,
    )  # fmt: skip
    try:
        with services.sessions.begin() as s:
            s.add(row)
    except BaseException:
        shutil.rmtree(root / upload_id, ignore_errors=True)
        raise
    return row


def _store_tokenizer(services: Services, filename: str, data: bytes) -> Upload:
    files = _tokenizer_files(data, services.settings.max_upload_bytes)
    try:
        tokenizer = Tokenizer.from_str(files["tokenizer.json"].decode())
    except Exception as e:  # the Rust side raises bare Exception on every parse error
        raise _invalid(f"not a valid tokenizer.json: {str(e).splitlines()[0][:300]}") from None
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    if vocab == 0:
        raise _invalid("the tokenizer's vocabulary is empty")
    limit = services.settings.max_vocab_size
    if vocab > limit:
        raise ProblemError(413, f"vocabulary of {vocab} tokens is over the limit of {limit}",
                           "/problems/too-large")  # fmt: skip
    return _save(services, "tokenizer", filename, files, vocab)


def _store_text(services: Services, filename: str, data: bytes) -> Upload:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid("an evaluation text must be UTF-8") from None
    if not data.strip():
        raise _invalid("the text is empty")
    return _save(services, "text", filename, {"text.txt": data}, None)


Store = Callable[[Services, str, bytes], Upload]


def _uploads(services: Services, kind: str) -> list[UploadOut]:
    with services.sessions() as s:
        rows = s.scalars(select(Upload).where(Upload.kind == kind).order_by(Upload.created_at))
        return [upload_out(r) for r in rows]


async def _upload(file: UploadFile, services: Services, limit: int, store: Store) -> UploadOut:
    data = await _read_limited(file, limit)
    return upload_out(await run_in_threadpool(store, services, file.filename or "", data))


@router.post("/tokenizers", status_code=201, response_model=UploadOut, responses=ERRORS)
async def upload_tokenizer(file: UploadFile, services: ServicesDep) -> UploadOut:
    return await _upload(file, services, services.settings.max_upload_bytes, _store_tokenizer)


@router.get("/tokenizers", response_model=TokenizerList)
async def list_tokenizers(services: ServicesDep) -> TokenizerList:
    uploads = await run_in_threadpool(_uploads, services, "tokenizer")
    return TokenizerList(store=services.catalog.tokenizers(), uploads=uploads)


@router.post("/texts", status_code=201, response_model=UploadOut, responses=ERRORS)
async def upload_text(file: UploadFile, services: ServicesDep) -> UploadOut:
    return await _upload(file, services, services.settings.max_text_bytes, _store_text)


@router.get("/texts", response_model=TextList)
async def list_texts(services: ServicesDep) -> TextList:
    uploads = await run_in_threadpool(_uploads, services, "text")
    return TextList(corpora=services.catalog.corpora(), uploads=uploads)
