"""Uploaded tokenizers and evaluation texts: checked before they are kept, written to a temp
folder renamed into place (and to the object store, where the storage is one) and only then
recorded; removed only while no unfinished job names them. A machine that lacks an upload's
folder fetches it from the store (`Catalog`).

A tokenizer is a bare tokenizer.json or a tar of a tokenizer folder (`archive` bounds what it
unpacks to). Its vocabulary is counted from the JSON before the tokenizers library builds it (a
two-million-token file takes seconds and hundreds of MB to build); the library's errors and its
panics are a 422, and so is a tokenizer whose ids repeat or leave more gaps than
`hypernet.vocab.check_ids` allows (its highest id + 1 is the size that counts). That check
runs in a forked child (`apart`): what the library builds is the child's memory, given back
whole when it exits. The JSON's objects are freed before the library builds the tokenizer.

A file name with a control character (NUL, which PostgreSQL's text refuses, among them) is a
422 on every database.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import unicodedata
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TypeVar

from sqlalchemy import delete
from tokenizers import Tokenizer

from hypernet.errors import InputError, is_panic
from hypernet.sources import check_config
from hypernet.vocab import check_ids

from .apart import Lost, apart
from .archive import ArchiveError, read_members
from .catalog import UPLOAD_ID
from .models import JobKind, Upload
from .problems import ProblemError
from .services import Services

TOKENIZER_FILES = {
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
}  # fmt: skip
JSON_FILES = {"tokenizer_config.json", "special_tokens_map.json"}
PROBE = "Hello, world! 123"  # encoded once: some broken tokenizers only fail (or panic) here
T = TypeVar("T")
INVALID, TOO_LARGE = "/problems/invalid-upload", "/problems/too-large"
CHECK_SECONDS = 120  # a 256k-token tokenizer.json builds in seconds; past this, it is a bomb


def invalid(detail: str) -> ProblemError:
    return ProblemError(422, detail, INVALID)


def reason(e: BaseException) -> str:
    """An error's first line, short enough for a problem's detail."""
    lines = str(e).splitlines()
    return lines[0][:300] if lines else type(e).__name__


def check_filename(name: str) -> None:
    if any(unicodedata.category(c) == "Cc" for c in name):
        raise invalid("the file name may not hold control characters")


def kept(
    store: Callable[[Services, str, bytes], Upload],
    services: Services,
    filename: str,
    file: BinaryIO,
) -> Upload:
    """`store` on the file's content, read from the temp file it streamed into."""
    file.seek(0)
    return store(services, filename, file.read())


# --- tokenizers -------------------------------------------------------------------------------
def tokenizer_files(data: bytes, max_bytes: int, max_vocab: int) -> tuple[dict[str, bytes], int]:
    """The files to keep and the vocabulary size; ProblemError (413 or 422) for anything else."""
    files = _unpack(data, max_bytes)
    for name in JSON_FILES & files.keys():
        try:
            check_config(name, _json_object(files[name], name))
        except InputError as e:  # kept, it would only fail the jobs that name it
            raise invalid(str(e)) from None
    try:
        return files, apart(CHECK_SECONDS, check_tokenizer, files["tokenizer.json"], max_vocab)
    except Lost:
        raise invalid(
            f"not a valid tokenizer.json: building it took over {CHECK_SECONDS} s or more "
            "memory than the server has"
        ) from None


def _unpack(data: bytes, max_bytes: int) -> dict[str, bytes]:
    start = data.lstrip()[:1]
    if not start:
        raise invalid("the file is empty")
    if start in b'{["':  # JSON: a tar starts with its first member's name
        return {"tokenizer.json": data}
    try:
        files = read_members(io.BytesIO(data), TOKENIZER_FILES, max_bytes)
    except ArchiveError as e:
        raise ProblemError(
            413 if e.too_large else 422, str(e), TOO_LARGE if e.too_large else INVALID
        ) from None
    if "tokenizer.json" not in files:
        raise invalid("the tar holds no tokenizer.json")
    return files


def _json_object(raw: bytes, name: str) -> dict:
    try:
        value = json.loads(raw.decode("utf-8"))  # json.loads(bytes) would take UTF-16 too
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise invalid(f"not a valid {name}: {reason(e)}") from None
    if not isinstance(value, dict):
        raise invalid(f"not a valid {name}: expected a JSON object")
    return value


def check_tokenizer(raw: bytes, max_vocab: int) -> int:
    """The vocabulary size (highest id + 1) of a tokenizer.json that is within `max_vocab` and
    usable."""
    _check_spec(raw, max_vocab)  # raw is UTF-8: from_buffer holds no str copy of it
    return _check_size(_check_built(library(Tokenizer.from_buffer, raw)), max_vocab)


def _check_spec(raw: bytes, max_vocab: int) -> None:
    """What the JSON alone shows; its objects are freed on return, before the library builds
    the tokenizer."""
    spec = _json_object(raw, "tokenizer.json")
    model = spec.get("model")
    if not isinstance(model, dict):
        raise invalid("not a valid tokenizer.json: it has no `model` object")
    _check_size(vocab_bound(spec), max_vocab)
    _check_unk(model)


def _check_size(size: int, max_vocab: int) -> int:
    if size > max_vocab:
        raise ProblemError(
            413, f"vocabulary of {size} tokens is over the limit of {max_vocab}", TOO_LARGE
        )
    return size


def vocab_bound(spec: dict) -> int:
    """The vocabulary size the library would build, at most, counted from the JSON alone: the
    model's vocabulary ({token: id}, or Unigram's [[piece, score], ...]) plus the added tokens
    it lacks."""
    vocab = spec["model"].get("vocab")
    if not isinstance(vocab, dict | list):
        return 0
    added = spec.get("added_tokens")
    tokens = added if isinstance(added, list) else []
    contents = [t.get("content") for t in tokens if isinstance(t, dict)]
    return len(vocab) + len({c for c in contents if isinstance(c, str)} - _names(vocab))


def _names(vocab: dict | list) -> set[str]:
    if isinstance(vocab, dict):
        return set(vocab)
    return {p[0] for p in vocab if isinstance(p, list) and p and isinstance(p[0], str)}


def _check_unk(model: dict) -> None:
    """An unknown word makes BPE, WordPiece and WordLevel look their unk token up in the
    vocabulary, and fail on the first such word when it is not there."""
    unk, vocab = model.get("unk_token"), model.get("vocab")
    if isinstance(unk, str) and isinstance(vocab, dict) and unk not in vocab:
        raise invalid(
            f"not a valid tokenizer.json: its unk token {unk[:100]!r} is not in the vocabulary"
        )


def _check_built(tokenizer: Tokenizer) -> int:
    """The embedding rows the tokenizer needs (its highest id + 1)."""
    library(tokenizer.encode, PROBE)
    try:
        return check_ids(tokenizer.get_vocab(with_added_tokens=True))[1]
    except InputError as e:
        raise invalid(str(e)) from None


def library(call: Callable[..., T], *args: object) -> T:
    """A call into the tokenizers library. Its errors are bare Exceptions and its panics pyo3
    PanicExceptions, which derive from BaseException: both are a broken tokenizer.json."""
    try:
        return call(*args)
    except BaseException as e:
        if not (isinstance(e, Exception) or is_panic(e)):
            raise
        raise invalid(f"not a valid tokenizer.json: {reason(e)}") from None


# --- texts -------------------------------------------------------------------------------------
def check_text(data: bytes) -> None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid("an evaluation text must be UTF-8") from None
    if not data.strip():
        raise invalid("the text is empty")


# --- keeping and removing ----------------------------------------------------------------------
def store_tokenizer(services: Services, filename: str, data: bytes) -> Upload:
    limits = services.settings
    files, vocab = tokenizer_files(data, limits.max_upload_bytes, limits.max_vocab_size)
    return save(services, "tokenizer", filename, files, vocab)


def store_text(services: Services, filename: str, data: bytes) -> Upload:
    check_text(data)
    return save(services, "text", filename, {"text.txt": data}, None)


def save(
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
    digest = hashlib.sha256()  # of the files in name order, with no copy of them joined
    for name in sorted(files):
        digest.update(files[name])
    row = Upload(
        id=upload_id,
        kind=kind,
        filename=Path(filename).name[:255] or kind,
        size=sum(len(content) for content in files.values()),
        sha256=digest.hexdigest(),
        vocab_size=vocab,
    )
    try:
        services.storage.put_upload(upload_id, files)  # before the row: no row without files
        with services.sessions.begin() as s:
            s.add(row)
    except BaseException:
        with contextlib.suppress(Exception):  # the error that matters is the one raised
            services.storage.remove_upload(upload_id)
        shutil.rmtree(root / upload_id, ignore_errors=True)
        raise
    return row


def remove(services: Services, kind: str, upload_id: str) -> None:
    """The row, then the folder (renamed away first, so that it vanishes at once). Refused while
    a queued or running job names the upload; a job queued after this check fails at its start
    with invalid_input."""
    if not UPLOAD_ID.match(upload_id) or _kind(services, upload_id) != kind:
        raise ProblemError(404, f"no uploaded {kind} {upload_id}", "/problems/not-found")
    user = _user(services, upload_id)
    if user is not None:
        raise ProblemError(
            409,
            f"job {user} is queued or running with this {kind}: cancel it or let it end first",
            "/problems/upload-in-use",
        )
    with services.sessions.begin() as s:
        s.execute(delete(Upload).where(Upload.id == upload_id))
    folder = services.settings.uploads_dir / upload_id
    doomed = folder.with_name(f".{upload_id}.deleted")
    if folder.is_dir():
        folder.rename(doomed)
    shutil.rmtree(doomed, ignore_errors=True)
    services.storage.remove_upload(upload_id)


def _kind(services: Services, upload_id: str) -> str | None:
    with services.sessions() as s:
        row = s.get(Upload, upload_id)
        return None if row is None else row.kind


def _user(services: Services, upload_id: str) -> str | None:
    """An unfinished job that names the upload, if any."""
    for kind in JobKind:
        for job in services.queue.unfinished(kind):
            if upload_id in named(job.request):
                return job.id
    return None


def named(request: dict) -> set[str]:
    """What a stored job request names that may be an upload: its tokenizer, eval text, refine
    texts (transplants) and training texts (hypernets)."""
    refine = request.get("refine") or {}
    names = [
        request.get("tokenizer"),
        request.get("eval_text"),
        *(request.get("texts") or ()),
        *(refine.get("texts") or ()),
    ]
    return {n for n in names if isinstance(n, str)}
