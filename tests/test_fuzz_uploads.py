"""Seeded mutation fuzzing of the upload parsers, a fixed number of cases: every input is
either kept (a tokenizer, a file) or refused with a 4xx problem, never any other exception, a
Rust panic included.

TOKENGRAFT_FUZZ_CASES tokenizer files (default 6000, about 9 s on 2 cores) and twice as many
multipart bodies (each about a quarter of the cost) are run; TOKENGRAFT_FUZZ_SEED picks the
sequence of inputs. The same inputs run on every machine, however fast or busy (a failure names
the seed and the case, and leaves the input in the test's tmp folder).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import tarfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import tiny
from test_service_uploads import COMPRESS, tar_of

from hypernet.errors import InputError
from service.api.routes.uploads import receive_file
from service.problems import ProblemError
from service.uploads import tokenizer_files

CASES = int(os.environ.get("TOKENGRAFT_FUZZ_CASES", "6000"))
SEED = int(os.environ.get("TOKENGRAFT_FUZZ_SEED", "20240607"))
MAX_BYTES = 1 << 20
MAX_VOCAB = 2000
INTERESTING = [b"{", b"}", b"[", b"]", b'"', b",", b":", b"\\u", b"\\ud800", b"\x00", b"\xff",
               b"-1", b"1e999", b"4294967296", b"null", b"NaN", b"\r\n", b"--"]  # fmt: skip
VALUES = [
    None,
    True,
    False,
    -1,
    0,
    1,
    2**31,
    2**32,
    2**63,
    2**64,
    1.5,
    float("inf"),
    "",
    "x",
    "<unk>",
    "\ud800",
    [],
    {},
    [[]],
    [["a", "b"]],
    {"a": 0},
    "Ġ" * 300,
]
MODEL_TYPES = ["BPE", "WordPiece", "WordLevel", "Unigram", "Magic", ""]


# --- seeds -------------------------------------------------------------------------------------
def unigram() -> dict:
    pieces = sorted({c for line in tiny.TEXT for c in line if not c.isspace()})
    vocab = [["<unk>", 0.0], ["▁", -1.0]] + [[p, -2.0 - i / 10] for i, p in enumerate(pieces)]
    return {
        "model": {"type": "Unigram", "unk_id": 0, "vocab": vocab},
        "pre_tokenizer": {
            "type": "Metaspace",
            "replacement": "▁",
            "prepend_scheme": "always",
            "split": True,
        },
        "added_tokens": [],
    }


def with_template(spec: dict) -> dict:
    cls = {"SpecialToken": {"id": "[CLS]", "type_id": 0}}
    seq = {"Sequence": {"id": "A", "type_id": 0}}
    special = {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]}}
    template = {
        "type": "TemplateProcessing",
        "single": [cls, seq],
        "pair": [cls, seq],
        "special_tokens": special,
    }
    return {**spec, "post_processor": template}


@pytest.fixture(scope="module")
def specs() -> list[dict]:
    """tokenizer.json of each family, as dicts."""
    tokenizers = [tiny.byte_level(), tiny.sentencepiece(), tiny.wordpiece()]
    built = [json.loads(t.backend_tokenizer.to_str()) for t in tokenizers]
    return [*built, unigram(), with_template(built[2])]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The files of a saved tokenizer folder."""
    out = tmp_path_factory.mktemp("tok")
    tiny.sentencepiece().save_pretrained(out)
    return {f"tok/{p.name}": p.read_bytes() for p in sorted(out.iterdir())}


# --- mutations ---------------------------------------------------------------------------------
def truncate(rng: random.Random, data: bytes, seeds: list[bytes]) -> bytes:
    return data[: rng.randrange(len(data) + 1)]


def flip(rng: random.Random, data: bytes, seeds: list[bytes]) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if out:
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def splice(rng: random.Random, data: bytes, seeds: list[bytes]) -> bytes:
    other = rng.choice(seeds)
    return data[: rng.randrange(len(data) + 1)] + other[rng.randrange(len(other) + 1) :]


def insert(rng: random.Random, data: bytes, seeds: list[bytes]) -> bytes:
    at = rng.randrange(len(data) + 1)
    return data[:at] + rng.choice(INTERESTING) * rng.randint(1, 3) + data[at:]


def cut(rng: random.Random, data: bytes, seeds: list[bytes]) -> bytes:
    start = rng.randrange(len(data) + 1)
    return data[:start] + data[start + rng.randint(1, 64) :]


def repeat(rng: random.Random, data: bytes, seeds: list[bytes]) -> bytes:
    start = rng.randrange(len(data) + 1)
    piece = data[start : start + rng.randint(1, 256)]
    return data[:start] + piece * rng.randint(2, 8) + data[start:]


BYTE_MUTATIONS: list[Callable[[random.Random, bytes, list[bytes]], bytes]] = [
    truncate,
    flip,
    splice,
    insert,
    cut,
    repeat,
]


def nodes(value: object, path: tuple = ()) -> list[tuple]:
    """Paths to every container slot of a JSON value (a vocabulary's thousand entries
    included, so that one in a few picks lands inside the model)."""
    items = value.items() if isinstance(value, dict) else enumerate(value)  # type: ignore[arg-type]
    out = []
    for key, child in items:
        out.append((*path, key))
        if isinstance(child, dict | list):
            out += nodes(child, (*path, key))
    return out


def at(value: object, path: tuple) -> object:
    for key in path:
        value = value[key]  # type: ignore[index]
    return value


def replace_node(rng: random.Random, spec: dict) -> None:
    path = rng.choice(nodes(spec))
    at(spec, path[:-1])[path[-1]] = rng.choice(VALUES)  # type: ignore[index]


def drop_key(rng: random.Random, spec: dict) -> None:
    paths = [p for p in nodes(spec) if isinstance(at(spec, p[:-1]), dict)]
    path = rng.choice(paths)
    del at(spec, path[:-1])[path[-1]]  # type: ignore[union-attr]


def model_of(spec: dict) -> dict:
    """The spec's model, or a throwaway dict where an earlier mutation removed it."""
    model = spec.get("model")
    return model if isinstance(model, dict) else {}


def renumber(rng: random.Random, spec: dict) -> None:
    vocab = model_of(spec).get("vocab")
    if isinstance(vocab, dict) and vocab:
        size = len(vocab)
        choices = [-1, 0, size - 1, size, size + 1, 100_000, 2**31, 2**32, 2**63]
        vocab[rng.choice(list(vocab))] = rng.choice(choices)


def retype(rng: random.Random, spec: dict) -> None:
    model_of(spec)["type"] = rng.choice(MODEL_TYPES)


def remerge(rng: random.Random, spec: dict) -> None:
    merges = model_of(spec).get("merges")
    vocab = model_of(spec).get("vocab")
    if isinstance(merges, list) and isinstance(vocab, dict) and vocab:
        tokens = [*list(vocab)[:50], "zz", "", "Ġ"]
        merges.insert(rng.randrange(len(merges) + 1), [rng.choice(tokens), rng.choice(tokens)])


def grow(rng: random.Random, spec: dict) -> None:
    """Past the vocabulary limit, by the model's vocabulary or by added tokens."""
    added = [
        {
            "id": 0,
            "content": f"<a{i}>",
            "special": True,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
        }
        for i in range(rng.choice([10, MAX_VOCAB]))
    ]
    spec["added_tokens"] = added


JSON_MUTATIONS = [replace_node, drop_key, renumber, retype, remerge, grow]


def mutated_json(rng: random.Random, specs: list[dict]) -> bytes:
    spec = json.loads(json.dumps(rng.choice(specs)))
    for _ in range(rng.randint(1, 3)):
        rng.choice(JSON_MUTATIONS)(rng, spec)
    return json.dumps(spec).encode()


def nested(rng: random.Random) -> bytes:
    depth = rng.choice([100, 10_000, 200_000])
    return b'{"model": ' + b"[" * depth + b"]" * depth + b"}"


def odd_tar(rng: random.Random, tokenizer: bytes) -> bytes:
    """A tar with members a tokenizer folder never has: links, folders, escapes, many files,
    a name given twice."""
    buf, mode = io.BytesIO(), rng.choice(["w", "w:gz"])
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for _ in range(rng.randint(1, 80)):
            info = tarfile.TarInfo(
                rng.choice(
                    ["tok/tokenizer.json", "tok/x", "../a", "/abs", "tok/" + "n" * 300, "tok/d"]
                )
            )
            info.type = rng.choice(
                [
                    tarfile.REGTYPE,
                    tarfile.DIRTYPE,
                    tarfile.SYMTYPE,
                    tarfile.LNKTYPE,
                    tarfile.FIFOTYPE,
                ]
            )
            info.linkname = rng.choice(["", "/etc/passwd", "../x", "tok/x"])
            content = tokenizer if info.type == tarfile.REGTYPE else b""
            info.size = len(content)
            t.addfile(info, io.BytesIO(content))
    return COMPRESS[mode](buf.getvalue())


def tokenizer_input(rng: random.Random, specs: list[dict], seeds: list[bytes]) -> bytes:
    choice = rng.random()
    if choice < 0.35:
        data = mutated_json(rng, specs)
    elif choice < 0.5:
        inner = mutated_json(rng, specs) if rng.random() < 0.7 else rng.choice(seeds[:5])
        data = tar_of({"tok/tokenizer.json": inner}, rng.choice(["w", "w:gz", "w:bz2", "w:xz"]))
    elif choice < 0.55:
        data = odd_tar(rng, rng.choice(seeds[:5]))
    elif choice < 0.57:
        return nested(rng)
    else:
        data = rng.choice(seeds)
    for _ in range(rng.choice([0, 1, 1, 2, 3])):
        data = rng.choice(BYTE_MUTATIONS)(rng, data, seeds)
    return data


# --- the properties ----------------------------------------------------------------------------
def refused(e: ProblemError | InputError) -> str:
    status = e.status if isinstance(e, ProblemError) else 422
    detail = e.detail if isinstance(e, ProblemError) else str(e)
    assert 400 <= status < 500, f"{status}: {detail}"
    json.dumps({"detail": detail}, ensure_ascii=False).encode()  # as the response encodes it
    return f"refused {status}"


def parse_tokenizer(data: bytes) -> str:
    try:
        files, vocab = tokenizer_files(data, MAX_BYTES, MAX_VOCAB)
    except (ProblemError, InputError) as e:
        return refused(e)
    assert "tokenizer.json" in files and 0 < vocab <= MAX_VOCAB
    return "parsed"


def run_cases(
    count: int, make: Callable[[random.Random], bytes], check: Callable[[bytes], str], tmp: Path
) -> Counter:
    """Outcomes of `count` generated cases; the first input that raises anything but a
    refusal fails the test (kept in `tmp` as failing-input.bin)."""
    rng = random.Random(SEED)
    outcomes: Counter = Counter()
    start = time.monotonic()
    for case in range(count):
        data = make(rng)
        try:
            outcomes[check(data)] += 1
        except BaseException as e:  # a Rust panic is a BaseException, not an Exception
            if isinstance(e, KeyboardInterrupt):
                raise
            (tmp / "failing-input.bin").write_bytes(data)
            pytest.fail(
                f"seed {SEED}, case {case}: {type(e).__module__}.{type(e).__name__}: "
                f"{str(e)[:300]} (input: {tmp / 'failing-input.bin'})"
            )
    print(f"{count} cases in {time.monotonic() - start:.1f} s: {dict(outcomes)}")
    return outcomes


def test_tokenizer_parser_fuzz(
    specs: list[dict], folder: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUST_BACKTRACE", "0")  # panics are expected; their traces are noise
    seeds = [json.dumps(s).encode() for s in specs]
    seeds += [tar_of(folder, mode) for mode in ("w", "w:gz", "w:bz2", "w:xz")]
    for seed in seeds:
        assert parse_tokenizer(seed) == "parsed"
    outcomes = run_cases(
        CASES, lambda rng: tokenizer_input(rng, specs, seeds), parse_tokenizer, tmp_path
    )
    assert outcomes["parsed"] and outcomes["refused 422"] and outcomes["refused 413"]


# --- multipart bodies --------------------------------------------------------------------------
class Streamed:
    """What `receive_file` reads of a request: its headers and its body in chunks."""

    def __init__(self, content_type: bytes, body: bytes, chunk: int) -> None:
        self.headers = {"content-type": content_type.decode("latin-1")}
        self.body, self.chunk = body, chunk

    async def stream(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self.body), self.chunk):
            yield self.body[start : start + self.chunk]


BOUNDARIES = [b"b0undary", b"-", b"x" * 70, b'"quoted"']


def multipart_body(rng: random.Random, boundary: bytes) -> bytes:
    name = rng.choice([b"file", b"other", b"", b'fi"le'])
    filename = rng.choice([b'; filename="a.txt"', b"; filename=b.json", b"", b'; filename="\xff"'])
    content = rng.choice([b"Der Fuchs.\n", b"", b"--" + boundary, b"a" * 5000])
    part = (
        b"--"
        + boundary
        + b'\r\nContent-Disposition: form-data; name="'
        + name
        + b'"'
        + filename
        + b"\r\nContent-Type: text/plain\r\n\r\n"
        + content
        + b"\r\n"
    )
    return part * rng.randint(1, 2) + b"--" + boundary + b"--\r\n"


def multipart_input(rng: random.Random) -> bytes:
    boundary = rng.choice(BOUNDARIES)
    body = multipart_body(rng, boundary.strip(b'"'))
    for _ in range(rng.choice([0, 1, 2])):
        body = rng.choice(BYTE_MUTATIONS)(rng, body, [body])
    kind = rng.choice([b"multipart/form-data; boundary=", b"text/plain; boundary=", b""])
    return json.dumps([(kind + boundary).decode("latin-1"), body.decode("latin-1")]).encode()


def read_multipart(case: bytes) -> str:
    content_type, body = (s.encode("latin-1") for s in json.loads(case))
    request = Streamed(content_type, body, 1 + len(body) % 97)
    try:
        asyncio.run(receive_file(request, 4096, io.BytesIO()))  # type: ignore[arg-type]
    except (ProblemError, InputError) as e:
        return refused(e)
    return "read"


def test_multipart_reader_fuzz(tmp_path: Path) -> None:
    outcomes = run_cases(2 * CASES, multipart_input, read_multipart, tmp_path)
    assert outcomes["read"] and outcomes["refused 400"] and outcomes["refused 413"]
