"""Uploads on SQLite and PostgreSQL: bodies are read only up to their limit, a tokenizer is
bounded before it is parsed and refused (422) rather than crash the server when it is broken,
ids leave few gaps, archives are bounded by what they unpack to, and uploads can be deleted
unless an unfinished job names them. File names hold no control characters, and uploads are
checked a bounded number at a time."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import tiny
from fastapi import FastAPI
from fastapi.testclient import TestClient
from test_service_api import REQUEST, assert_problem
from transformers import PreTrainedTokenizerFast

from hypernet.errors import InputError
from hypernet.sources import load_tokenizer
from hypernet.vocab import load_vocab
from service.api.main import create_app
from service.api.routes.uploads import RETRY_AFTER, Parses
from service.archive import ArchiveError, read_members
from service.config import Settings
from service.models import JobKind
from service.problems import ProblemError
from service.services import Services

BOUNDARY = b"tgboundary"
CHUNK = 16 * 1024


def spec_of(tokenizer: PreTrainedTokenizerFast) -> dict:
    return json.loads(tokenizer.backend_tokenizer.to_str())


@pytest.fixture(scope="module")
def byte_level() -> dict:
    """A 300-token byte-level BPE tokenizer.json, as a dict."""
    return spec_of(tiny.byte_level())


def bpe(vocab: dict[str, int], merges: list | None = None, **fields: object) -> bytes:
    model = {"type": "BPE", "vocab": vocab, "merges": merges or []}
    return json.dumps({"model": model, **fields}).encode()


def post_tokenizer(client: TestClient, data: bytes, name: str = "tokenizer.json"):  # noqa: ANN201
    return client.post("/tokenizers", files={"file": (name, data)})


COMPRESS = {  # tarfile's own gzip header holds the time: these give the same bytes every run
    "w": bytes,
    "w:gz": lambda data: gzip.compress(data, mtime=0),
    "w:bz2": bz2.compress,
    "w:xz": lzma.compress,
}


def tar_of(members: dict[str, bytes], mode: str = "w") -> bytes:
    """A tar of `members`, compressed as tarfile's write `mode` names."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as archive:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return COMPRESS[mode](buf.getvalue())


@pytest.fixture
def small(settings: Settings) -> Iterator[TestClient]:
    """The API with an upload limit of 100 kB and a vocabulary limit of 50 tokens."""
    limited = settings.model_copy(update={"max_upload_bytes": 100_000, "max_vocab_size": 50})
    with TestClient(create_app(limited)) as client:
        yield client


# --- bodies are read only up to the limit ------------------------------------------------------
def multipart_chunks(size: int) -> Iterator[bytes]:
    """A multipart/form-data body whose `file` field holds `size` bytes, in 16 kB chunks."""
    yield (
        b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="file"; filename="t.txt"'
        b"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    for _ in range(size // CHUNK):
        yield b"a" * CHUNK
    yield b"\r\n--" + BOUNDARY + b"--\r\n"


def post_streamed(app: FastAPI, path: str, chunks: Iterator[bytes]) -> tuple[int, int]:
    """POST a chunked body straight to the ASGI app: (status, body bytes the app pulled)."""
    pulled = 0
    status = 0
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
        "headers": [
            (b"host", b"test"),
            (b"content-type", b"multipart/form-data; boundary=" + BOUNDARY),
        ],
    }

    async def receive() -> dict:
        nonlocal pulled
        chunk = next(chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    anyio.run(app, scope, receive, send)
    return status, pulled


@pytest.mark.parametrize("path", ["/tokenizers", "/texts"])
def test_an_upload_is_read_only_up_to_its_limit(settings: Settings, path: str) -> None:
    limit = 100_000
    limited = settings.model_copy(update={"max_upload_bytes": limit, "max_text_bytes": limit})
    app = create_app(limited)
    with TestClient(app):
        status, pulled = post_streamed(app, path, multipart_chunks(20 * 2**20))
    assert status == 413
    assert pulled <= limit + 2 * CHUNK
    assert not settings.uploads_dir.exists() or not any(settings.uploads_dir.iterdir())


def test_streamed_uploads_keep_their_multipart_shape(client: TestClient) -> None:
    text = client.post("/texts", files={"file": ("a b.txt", b"Der Fuchs.\n")}, data={"x": "1"})
    assert text.status_code == 201, text.text
    assert text.json()["filename"] == "a b.txt" and text.json()["size"] == 11
    assert_problem(client.post("/texts", files={"other": ("o.txt", b"x")}), 422, "file")
    assert_problem(
        client.post("/texts", content=b"plain", headers={"content-type": "text/plain"}),
        422,
        "multipart",
    )
    body = client.get("/openapi.json").json()["paths"]["/tokenizers"]["post"]["requestBody"]
    assert "file" in body["content"]["multipart/form-data"]["schema"]["properties"]


# --- the vocabulary is bounded before the full parse ---------------------------------------------
class Unparsed:
    """Stands in for tokenizers.Tokenizer where a test shows a parse never happens."""

    @staticmethod
    def from_buffer(data: bytes) -> None:
        raise AssertionError("parsed a tokenizer.json that was over the vocabulary limit")


def unigram(pieces: list[str], added: list[str]) -> bytes:
    model = {"type": "Unigram", "unk_id": 0, "vocab": [[p, -1.0] for p in pieces]}
    tokens = [
        {
            "id": 0,
            "content": a,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for a in added
    ]
    return json.dumps({"model": model, "added_tokens": tokens}).encode()


def test_a_large_vocabulary_is_refused_before_it_is_parsed(
    small: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    pieces = [f"p{i}" for i in range(40)]
    under = unigram(pieces, pieces[:20])  # added tokens the vocabulary has count once
    assert post_tokenizer(small, under).json()["vocab_size"] == 40
    monkeypatch.setattr("service.uploads.Tokenizer", Unparsed)
    big = bpe({f"t{i}": i for i in range(5000)})
    assert_problem(post_tokenizer(small, big), 413, "vocabulary of 5000 tokens")
    over = unigram(pieces, [f"<x{i}>" for i in range(20)])
    assert_problem(post_tokenizer(small, over), 413, "vocabulary of 60 tokens")


# --- broken tokenizers are a 422, never a crash --------------------------------------------------
def added(content: str) -> dict:
    return {
        "id": 0,
        "content": content,
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": False,
        "special": True,
    }


CLS = {"SpecialToken": {"id": "<cls>", "type_id": 0}}
TEMPLATE = {"type": "TemplateProcessing", "single": [CLS], "pair": [], "special_tokens": {}}
BROKEN = {
    "merge into a missing token (panics)": bpe({"a": 0, "b": 1}, [["a", "b"]]),
    "template naming a missing token (panics on encode)": bpe({"a": 0}, post_processor=TEMPLATE),
    "WordPiece without its unk token": json.dumps(
        {
            "model": {
                "type": "WordPiece",
                "vocab": {"a": 0},
                "unk_token": "[UNK]",
                "continuing_subword_prefix": "##",
                "max_input_chars_per_word": 100,
            }
        }
    ).encode(),
    "WordLevel without its unk token": json.dumps(
        {"model": {"type": "WordLevel", "vocab": {"a": 0}, "unk_token": "[UNK]"}}
    ).encode(),
    "an id that is not an int": bpe({"a": "zero"}),
    "an unknown model type": json.dumps({"model": {"type": "Magic", "vocab": {}}}).encode(),
    "an empty vocabulary": bpe({}),
}


@pytest.mark.parametrize("data", BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_tokenizer_is_a_422(client: TestClient, data: bytes) -> None:
    assert_problem(post_tokenizer(client, data), 422, "tokenizer")


@pytest.mark.parametrize("data", [b"", b"  \n", b"[]", b"{}", b'{"model": null}', b'{"model": 3}',
                                  b"null", b'"text"', b"{not json"])  # fmt: skip
def test_an_empty_or_modelless_tokenizer_is_a_422(client: TestClient, data: bytes) -> None:
    assert_problem(post_tokenizer(client, data), 422)
    assert not client.get("/tokenizers").json()["uploads"]


# --- ids name one token each, and leave few gaps ------------------------------------------------
def with_ids(spec: dict, changes: dict[str, int]) -> dict:
    changed = json.loads(json.dumps(spec))
    changed["model"]["vocab"].update(changes)
    return changed


def test_ids_with_a_gap_are_kept_and_a_spread_or_a_duplicate_refused(
    client: TestClient, byte_level: dict
) -> None:
    tokens = list(byte_level["model"]["vocab"])
    gapped = with_ids(byte_level, {"<|a|>": 301, "<|b|>": 320})  # o200k: 199999, 200018
    kept = post_tokenizer(client, json.dumps(gapped).encode())
    assert kept.status_code == 201 and kept.json()["vocab_size"] == 321  # rows, not tokens
    spread = with_ids(byte_level, {tokens[-1]: 700_000, tokens[-2]: 1_400_000, "<|c|>": 2**21})
    bound = "leave 2096852 ids unnamed below the highest, 2097152"
    assert_problem(post_tokenizer(client, json.dumps(spread).encode()), 422, bound)
    duplicate = with_ids(byte_level, {tokens[-1]: 7})
    twice = post_tokenizer(client, json.dumps(duplicate).encode())
    assert_problem(twice, 422, "token ids must be unique; id 7 names both")
    assert repr(tokens[7]) in twice.json()["detail"] and repr(tokens[-1]) in twice.json()["detail"]


def test_the_library_keeps_a_gap_and_refuses_a_spread_or_a_duplicate(
    byte_level: dict, tmp_path: Path
) -> None:
    tokens, file = list(byte_level["model"]["vocab"]), tmp_path / "tokenizer.json"
    file.write_text(json.dumps(with_ids(byte_level, {"<|a|>": 301, "<|b|>": 320})))
    vocab = load_vocab(load_tokenizer(file))
    assert len(vocab) == 321 and vocab.unused == [300, *range(302, 320)]
    assert vocab.tokens[320] == "<|b|>" and vocab.surfaces[300] is None
    cases = {tokens[-1]: 100_000}, {tokens[-1]: 7}
    messages = "at most 1024 are allowed for 300 tokens", "ids must be unique"
    for changes, message in zip(cases, messages, strict=True):
        file.write_text(json.dumps(with_ids(byte_level, changes)))
        with pytest.raises(InputError, match=message):
            load_vocab(load_tokenizer(file))


# --- archives are bounded by what they unpack to -------------------------------------------------
def test_an_archive_is_bounded_by_all_it_unpacks(small: TestClient) -> None:
    tok = bpe({"a": 0, "b": 1})
    zeros = tar_of({"tok/tokenizer.json": tok, "tok/weights.bin": bytes(8 * 2**20)}, "w:gz")
    assert len(zeros) < 100_000
    assert_problem(post_tokenizer(small, zeros, "t.tgz"), 413, "unpacks to more than")
    many = tar_of({"tok/tokenizer.json": tok, **{f"tok/{i}": b"" for i in range(100)}})
    assert_problem(post_tokenizer(small, many, "t.tar"), 413, "more than 64 members")
    long_name = tarfile.TarInfo("tok/" + "a" * 8 * 2**20)  # a GNU long-name block of 8 MB
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.GNU_FORMAT) as archive:
        archive.addfile(long_name, io.BytesIO(b""))
        info = tarfile.TarInfo("tok/tokenizer.json")
        info.size = len(tok)
        archive.addfile(info, io.BytesIO(tok))
    assert_problem(post_tokenizer(small, buf.getvalue(), "t.tgz"), 413, "unpacks to more than")
    ok = tar_of({"tok/tokenizer.json": tok, "tok/tokenizer_config.json": b"{}"}, "w:gz")
    assert post_tokenizer(small, ok, "t.tgz").status_code == 201


class Counted(io.BytesIO):
    """Bytes that count how much of them was read."""

    taken = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.taken += len(chunk)
        return chunk


def test_a_huge_member_stops_the_unpacking_at_once() -> None:
    header = tarfile.TarInfo("tokenizer.json")
    header.size = 256 * 2**20
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) as gz:
        gz.write(header.tobuf())
        for _ in range(256):
            gz.write(bytes(2**20))
    stream = Counted(raw.getvalue())
    with pytest.raises(ArchiveError, match="unpacks to more than 1000000 bytes") as refused:
        read_members(stream, {"tokenizer.json"}, 1_000_000)
    assert refused.value.too_large
    assert stream.taken < len(raw.getvalue()) // 10


def test_archive_members_may_not_leave_it() -> None:
    for name in ("../tokenizer.json", "/etc/tokenizer.json", "a/../../tokenizer.json"):
        with pytest.raises(ArchiveError, match="outside the archive"):
            read_members(io.BytesIO(tar_of({name: b"{}"})), {"tokenizer.json"}, 100_000)
    link = io.BytesIO()
    with tarfile.open(fileobj=link, mode="w") as archive:
        info = tarfile.TarInfo("tokenizer.json")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(info)
    with pytest.raises(ArchiveError, match="outside the archive"):
        read_members(io.BytesIO(link.getvalue()), {"tokenizer.json"}, 100_000)


# --- deletion ------------------------------------------------------------------------------------
def upload(client: TestClient, path: str, name: str, data: bytes) -> str:
    response = client.post(path, files={"file": (name, data)})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_uploads_can_be_deleted(client: TestClient, settings: Settings) -> None:
    tok = (settings.tokenizers_dir / "sp" / "tokenizer.json").read_bytes()
    tok_id = upload(client, "/tokenizers", "tokenizer.json", tok)
    text_id = upload(client, "/texts", "eval.txt", b"Der Fuchs springt.\n" * 20)
    assert_problem(client.delete(f"/tokenizers/{text_id}"), 404)
    assert_problem(client.delete(f"/texts/{tok_id}"), 404)
    assert_problem(client.delete("/texts/" + "0" * 32), 404)
    assert_problem(client.delete("/texts/..%2F..%2Fetc"), 404)
    assert_problem(client.delete("/texts/NOT-HEX"), 404)
    assert client.delete(f"/tokenizers/{tok_id}").status_code == 204
    assert client.delete(f"/texts/{text_id}").status_code == 204
    assert not (settings.uploads_dir / tok_id).exists()
    assert not (settings.uploads_dir / text_id).exists()
    assert client.get("/tokenizers").json()["uploads"] == []
    assert client.get("/texts").json()["uploads"] == []
    assert_problem(client.delete(f"/tokenizers/{tok_id}"), 404)
    body = {**REQUEST, "tokenizer": tok_id, "dry_run": True}
    assert_problem(client.post("/transplant", json=body), 422, tok_id)


def test_an_upload_an_unfinished_job_names_is_kept(
    client: TestClient, services: Services, settings: Settings
) -> None:
    tok = (settings.tokenizers_dir / "sp" / "tokenizer.json").read_bytes()
    tok_id = upload(client, "/tokenizers", "tokenizer.json", tok)
    text_id = upload(client, "/texts", "eval.txt", b"Der Fuchs springt.\n" * 20)
    job = client.post("/transplant", json={**REQUEST, "tokenizer": tok_id, "eval_text": text_id})
    assert job.status_code == 202, job.text
    assert_problem(client.delete(f"/tokenizers/{tok_id}"), 409, job.json()["id"])
    assert_problem(client.delete(f"/texts/{text_id}"), 409, job.json()["id"])
    assert client.post(f"/jobs/{job.json()['id']}/cancel").json()["status"] == "canceled"
    assert client.delete(f"/tokenizers/{tok_id}").status_code == 204
    for kind, request in [
        (JobKind.transplant, {"refine": {"texts": ["fox", text_id]}}),
        (JobKind.hypernet, {"texts": [text_id]}),
    ]:
        queued, _ = services.queue.enqueue(request, kind.value, kind=kind)
        assert_problem(client.delete(f"/texts/{text_id}"), 409, queued.id)
        services.queue.cancel(queued.id)
    assert client.delete(f"/texts/{text_id}").status_code == 204
    assert sorted(p.name for p in settings.uploads_dir.iterdir()) == []


def test_deleting_documents_404_and_409(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/tokenizers/{upload_id}", "/texts/{upload_id}"):
        assert {"204", "404", "409"} <= set(paths[path]["delete"]["responses"])


def test_uploaded_folders_hold_only_what_was_checked(client: TestClient) -> None:
    tok = bpe({"a": 0, "b": 1, "ab": 2}, [["a", "b"]])
    members = {"t/tokenizer.json": tok, "t/chat_template.jinja": b"{{ x }}", "t/x.py": b"evil"}
    tok_id = upload(client, "/tokenizers", "t.tar", tar_of(members))
    folder = client.app.state.services.settings.uploads_dir / tok_id
    assert sorted(p.name for p in folder.iterdir()) == ["chat_template.jinja", "tokenizer.json"]
    bad_config = tar_of({"t/tokenizer.json": tok, "t/tokenizer_config.json": b"[1]"})
    assert_problem(post_tokenizer(client, bad_config, "t.tar"), 422, "tokenizer_config.json")
    for config in ({"added_tokens_decoder": []}, {"added_tokens_decoder": {"x": {}}}):
        malformed = tar_of(
            {"t/tokenizer.json": tok, "t/tokenizer_config.json": json.dumps(config).encode()}
        )
        assert_problem(post_tokenizer(client, malformed, "t.tar"), 422, "added_tokens_decoder")
    twice = tar_of({"a/tokenizer.json": tok, "b/tokenizer.json": tok})
    assert_problem(post_tokenizer(client, twice, "t.tar"), 422, "two")


# --- file names and boundaries -------------------------------------------------------------------
def form(filename: bytes, data: bytes, boundary: bytes = BOUNDARY) -> dict:
    """A multipart body written by hand (httpx would escape a control character in the name)."""
    body = (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="'
        + filename + b'"\r\n\r\n' + data + b"\r\n--" + boundary + b"--\r\n"
    )  # fmt: skip
    return {
        "content": body,
        "headers": {"content-type": f"multipart/form-data; boundary={boundary.decode()}"},
    }


@pytest.mark.parametrize("name", [b"a\x00b.txt", b"a\x07.txt", b"a\x7f.txt", b"a\xc2\x85.txt"])
def test_a_file_name_with_a_control_character_is_a_422(client: TestClient, name: bytes) -> None:
    """PostgreSQL's text refuses NUL: a 500 there, a 201 on SQLite, before."""
    for path in ("/tokenizers", "/texts"):
        data = bpe({"a": 0}) if path == "/tokenizers" else b"Der Fuchs.\n"
        assert_problem(client.post(path, **form(name, data)), 422, "control characters")
    assert client.get("/tokenizers").json()["uploads"] == []
    assert client.get("/texts").json()["uploads"] == []
    kept = client.post("/texts", **form("Füchse ✓.txt".encode(), b"Der Fuchs.\n"))
    assert kept.status_code == 201 and kept.json()["filename"] == "Füchse ✓.txt"


def test_a_boundary_over_256_characters_is_a_400(client: TestClient) -> None:
    response = client.post("/texts", **form(b"t.txt", b"Der Fuchs.\n", b"b" * 257))
    assert_problem(response, 400, "malformed multipart body: Boundary length 257")
    assert client.post("/texts", **form(b"t.txt", b"Der Fuchs.\n", b"b" * 256)).status_code == 201


# --- uploads are checked a bounded number at a time ----------------------------------------------
def test_parses_run_at_most_their_number_at_once() -> None:
    parses, running, most = Parses(2, wait=60), [0], [0]
    lock, pair = threading.Lock(), threading.Barrier(2, timeout=60)  # two at once, or it breaks

    def check() -> None:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        pair.wait()
        with lock:
            running[0] -= 1

    async def many() -> None:
        async with anyio.create_task_group() as tasks:
            for _ in range(8):
                tasks.start_soon(parses.run, check)

    anyio.run(many)
    assert most[0] == 2


def test_an_upload_that_waits_too_long_for_its_parse_is_a_503() -> None:
    parses, started, release = Parses(1, wait=0.05), threading.Event(), threading.Event()
    refused: list[ProblemError] = []

    async def second() -> None:
        await anyio.to_thread.run_sync(started.wait)
        try:
            await parses.run(lambda: None)
        except ProblemError as e:
            refused.append(e)
        release.set()

    async def both() -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(parses.run, lambda: (started.set(), release.wait()))
            tasks.start_soon(second)

    anyio.run(both)
    assert [(e.status, e.type, e.headers) for e in refused] == [
        (503, "/problems/busy", {"Retry-After": RETRY_AFTER})
    ]
