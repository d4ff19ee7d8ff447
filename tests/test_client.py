"""`service.client` and `tokengraft remote` against a live `tokengraft serve` (the transport
details a live server cannot be made to show, a dropped event stream and a hostile manifest,
against httpx's MockTransport).

The CLI's end-to-end run is on both databases; the rest, which tests the client and not the
server, on SQLite.
"""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from test_service_e2e import REPO, Server, free_port
from transformers import AutoModelForCausalLM, AutoTokenizer

from service import client as client_module
from service import keys
from service.cli import main
from service.client import BadAnswer, Client, ClientError, DownloadError
from service.config import Settings
from service.services import Services

SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
SP = {"model": "tiny", "tokenizer": "sp", "method": "subword"}  # a store tokenizer: no upload


@pytest.fixture
def server(settings: Settings, tmp_path: Path) -> Iterator[Server]:
    """`tokengraft serve` with its worker."""
    s = Server(settings, tmp_path, worker=True)
    yield s
    s.stop()


@pytest.fixture
def api(settings: Settings, tmp_path: Path) -> Iterator[Server]:
    """`tokengraft serve --no-worker`: jobs stay queued."""
    s = Server(settings, tmp_path, worker=False)
    yield s
    s.stop()


def remote(server: Server | str, *argv: str) -> int:
    url = server if isinstance(server, str) else server.url
    return main(["remote", "--server", url, *argv])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def finished(client: Client, job_id: str) -> str:
    """The job's final status, read from its event stream."""
    return list(client.events(job_id))[-1]["data"]["status"]


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tokengraft: error: "), err
    return err


# --- end to end ------------------------------------------------------------------------------
def test_submit_with_uploads_watch_and_download(
    server: Server, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tokenizer = tmp_path / "tokenizer.json"
    tokenizer.write_bytes((settings.tokenizers_dir / "sp" / "tokenizer.json").read_bytes())
    text = tmp_path / "eval.txt"
    text.write_text((settings.corpora_dir / "fox.txt").read_text())
    out = tmp_path / "checkpoint"
    argv = ["--model", "tiny", "--tokenizer", str(tokenizer), "--method", "subword"]
    argv += ["--eval-text", str(text), "--option", "seed=3", "--download", str(out)]
    assert remote(server, "submit", *argv) == 0
    captured = capsys.readouterr()
    job_id = captured.out.strip()
    assert f"job {job_id} succeeded" in captured.err

    with Client(server.url) as client:
        job, manifest = client.job(job_id), client.manifest(job_id)
    uploaded = {job["request"]["tokenizer"], job["request"]["eval_text"]}
    assert not {str(tokenizer), str(text)} & uploaded  # upload ids, not local paths
    assert job["request"]["options"] == {"seed": 3}
    assert job["result"]["report"]["eval"]  # evaluated on the uploaded text
    assert {f["path"]: f["sha256"] for f in manifest} == {
        f["path"]: sha256(out / f["path"]) for f in manifest
    }
    assert not list(out.rglob("*.part"))
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.get_input_embeddings().num_embeddings >= len(AutoTokenizer.from_pretrained(out))


def test_the_client_and_its_commands_load_no_model_library() -> None:
    code = "import sys, service.client, service.remote\n"
    code += "assert not {'torch', 'transformers'} & set(sys.modules), sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# --- downloads -------------------------------------------------------------------------------
@SQLITE
def test_download_resumes_a_part_skips_done_files_and_refuses_a_corrupt_one(
    server: Server, tmp_path: Path
) -> None:
    client = Client(server.url)
    job_id = client.submit(SP)["id"]
    assert finished(client, job_id) == "succeeded"
    whole = tmp_path / "whole"
    client.download(job_id, whole)
    big = max(client.manifest(job_id), key=lambda f: f["size"])
    data = (whole / big["path"]).read_bytes()
    seen: list[tuple[str, str | None, int, int]] = []
    client.http.event_hooks = {"response": [lambda r: seen.append(_transfer(r))]}

    resumed = tmp_path / "resumed"
    resumed.mkdir()
    (resumed / f"{big['path']}.{big['sha256'][:16]}.part").write_bytes(data[:1000])
    other = resumed / f"{big['path']}.{'0' * 16}.part"  # another job's version of the file
    other.write_bytes(b"\0" * 2000)
    client.download(job_id, resumed)
    assert (f"/artifacts/{big['path']}", "bytes=1000-", 206, len(data) - 1000) in seen
    assert (resumed / big["path"]).read_bytes() == data
    assert not list(resumed.rglob("*.part"))

    seen.clear()
    client.download(job_id, resumed)  # everything is there: only the manifest is read
    assert [path for path, *_ in seen] == [f"/jobs/{job_id}/artifacts"]

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / f"{big['path']}.{big['sha256'][:16]}.part").write_bytes(b"\0" * 1000)
    with pytest.raises(DownloadError, match="sha256"):
        client.download(job_id, corrupt)
    assert not (corrupt / big["path"]).exists()
    assert not list(corrupt.rglob("*.part"))
    client.close()


def _transfer(response: httpx.Response) -> tuple[str, str | None, int, int]:
    """(the path's tail from /artifacts on, Range sent, status, Content-Length)."""
    path = response.request.url.path
    tail = path[path.index("/artifacts/") :] if "/artifacts/" in path else path
    length = int(response.headers.get("content-length", -1))
    return tail, response.request.headers.get("range"), response.status_code, length


def manifest_server(path: str) -> httpx.MockTransport:
    body = {"files": [{"path": path, "size": 1, "sha256": "0" * 64}]}
    return httpx.MockTransport(lambda request: httpx.Response(200, json=body))


@pytest.mark.parametrize("path", ["../escape", "/etc/passwd", "a/../../b", "a\\..\\b", ""])
def test_manifest_paths_that_leave_the_folder_are_refused(path: str, tmp_path: Path) -> None:
    client = Client("http://tokengraft.test", transport=manifest_server(path))
    with pytest.raises(DownloadError, match="refusing manifest path"):
        client.download("j1", tmp_path / "out")
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []


# --- events ----------------------------------------------------------------------------------
def _dropped(frames: bytes) -> Iterator[bytes]:
    yield frames
    raise httpx.ReadError("connection reset")


def test_events_reconnect_with_last_event_id_after_the_retry_delay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    progress = 'event: progress\ndata: {"stage": "align", "fraction": %s}\n'
    streams = [
        _dropped(b"retry: 10\n\nid: 1\n" + (progress % 0.5).encode() + b"\nid: 2\nevent: prog"),
        _dropped(b"retry: 10\n\n"),  # dropped again before event 2 came
        [b"id: 2\n" + (progress % 1).encode() + b"\n"],  # closed without an `end`
        [b'event: end\ndata: {"status": "running", "reason": "server shutting down"}\n\n'],
        [b'id: 3\nevent: state\ndata: {"status": "succeeded"}\n\n'],
        [b'event: end\ndata: {"status": "succeeded"}\n\n'],
    ]
    sent: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers.get("last-event-id"))
        return httpx.Response(200, content=streams[len(sent) - 1])

    sleeps: list[float] = []
    monkeypatch.setattr(client_module.time, "sleep", sleeps.append)
    client = Client("http://tokengraft.test", transport=httpx.MockTransport(handler))
    events = list(client.events("j1"))
    assert [(e["event"], e["id"]) for e in events] == [
        ("progress", "1"), ("progress", "2"), ("state", "3"), ("end", "3"),
    ]  # fmt: skip
    assert events[1]["data"] == {"stage": "align", "fraction": 1}
    assert sent == [None, "1", "1", "2", "2", "3"]  # the half-sent event 2 was asked for again
    assert sleeps == [0.01] * 5


def test_events_give_up_after_repeated_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    monkeypatch.setattr(client_module.time, "sleep", lambda seconds: None)
    client = Client("http://tokengraft.test", transport=httpx.MockTransport(refuse))
    with pytest.raises(httpx.ConnectError):
        list(client.events("j1"))


# --- errors ----------------------------------------------------------------------------------
def test_an_error_page_without_problem_json_is_its_status_line() -> None:
    page = "<html><body><h1>502</h1>\n<pre>Traceback ...</pre></body></html>"
    answer = httpx.Response(502, text=page, headers={"content-type": "text/html"})
    client = Client("http://tokengraft.test", transport=httpx.MockTransport(lambda r: answer))
    with pytest.raises(ClientError) as caught:
        client.job("j1")
    assert str(caught.value) == "502 Bad Gateway"


def test_an_unreachable_server_is_one_line_and_status_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert remote(url, "list") == 1
    assert f"cannot reach {url}: " in one_error_line(capsys)


def answering(status: int, **body: object) -> httpx.MockTransport:
    """A server that gives every request the same answer."""
    return httpx.MockTransport(lambda request: httpx.Response(status, **body))  # type: ignore[arg-type]


NOT_JSON = {"text": "<html><body>OK</body></html>", "headers": {"content-type": "text/html"}}


@pytest.mark.parametrize(
    ("call", "body", "what"),
    [
        (lambda c: c.job("j1"), NOT_JSON, "a job"),
        (lambda c: c.job("j1"), {"json": {"id": None, "status": "queued"}}, "a job"),
        (lambda c: c.submit({"model": "m"}), {"json": ["j1"]}, "a job"),
        (lambda c: c.submit({"dry_run": True}), {"json": {"ok": 1}}, "a validation answer"),
        (lambda c: list(c.jobs()), {"json": {"jobs": [{"id": "j1"}]}}, "a page of jobs"),
        (lambda c: c.manifest("j1"), {"json": {"files": [{"path": "a"}]}}, "a manifest"),
        (lambda c: list(c.events("j1")), {"text": "event: state\ndata: {]\n\n"}, "a state"),
    ],
)
def test_a_2xx_that_is_not_the_expected_json_is_a_bad_answer(
    call: Callable[[Client], object], body: dict, what: str
) -> None:
    client = Client("http://tokengraft.test", transport=answering(200, **body))
    with pytest.raises(BadAnswer, match=f"the server answered 200 with a body that is not {what}"):
        call(client)


@pytest.mark.parametrize(
    ("argv", "status", "body", "what"),
    [
        (["submit", "--model", "tiny", "--tokenizer", "sp"], 202, NOT_JSON, "a job"),
        (["submit", "--model", "tiny", "--tokenizer", "sp"], 202, {"json": {"id": None}}, "a job"),
        (["submit", "--model", "m", "--tokenizer", "t", "--dry-run"], 200, NOT_JSON, "a valid"),
        (["list"], 200, {"json": []}, "a page of jobs"),
        (["cancel", "j1"], 200, {"json": {"id": "j1"}}, "a job"),
        (["download", "j1", "--out", "o"], 200, NOT_JSON, "a manifest"),
        (["watch", "j1"], 200, {"text": "event: state\ndata: null\n\n"}, "a state event"),
    ],
)
def test_a_2xx_that_is_not_the_expected_json_is_one_line_and_status_1(
    argv: list[str],
    status: int,
    body: dict,
    what: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake = functools.partial(Client, transport=answering(status, **body))
    monkeypatch.setattr(client_module, "Client", fake)
    assert remote("http://tokengraft.test", *argv) == 1
    out, err = capsys.readouterr()
    assert out == ""  # no job id, no None
    lines = err.splitlines()  # watch's progress bar comes first, on a line of its own
    assert lines[-1].startswith("tokengraft: error: ") and "Traceback" not in err, err
    assert f"the server answered {status} with a body that is not {what}" in lines[-1], err


@SQLITE
def test_invalid_requests_are_one_line_and_status_2(
    api: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["submit", "--model", "tiny", "--tokenizer", "sp", "--dry-run"]
    assert remote(api, *base, "--method", "subword") == 0
    assert json.loads(capsys.readouterr().out)["valid"] is True
    assert remote(api, *base, "--eval-bytes", "0") == 2
    assert "422 Unprocessable" in (line := one_error_line(capsys))
    assert ": body.eval_bytes: Input should be greater than or equal to 1" in line
    assert remote(api, *base, "--method", "no-such-method") == 2
    assert "no-such-method" in one_error_line(capsys)
    assert remote(api, *base, "--option", "novalue") == 2
    assert "--option expects key=value" in one_error_line(capsys)


# --- list, cancel, delete, keys --------------------------------------------------------------
@SQLITE
def test_list_cancel_and_delete(
    api: Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with Client(api.url) as client:
        ids = [client.submit(SP)["id"] for _ in range(3)]
        monkeypatch.setattr(client_module, "PAGE", 2)
        assert [j["id"] for j in client.jobs()] == ids[::-1]  # two pages, newest first
    assert remote(api, "list", "--limit", "2") == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["id", "status", "method", "model", "tokenizer", "age"]
    assert [row.split()[:5] for row in table[1:]] == [
        [i, "queued", "subword", "tiny", "sp"] for i in ids[:0:-1]
    ]
    assert remote(api, "delete", ids[0]) == 2  # queued: cancel it first
    assert "409 Conflict" in one_error_line(capsys)
    assert remote(api, "cancel", ids[0]) == 0
    assert capsys.readouterr().out == f"job {ids[0]} canceled\n"
    assert remote(api, "delete", ids[0]) == 0
    assert capsys.readouterr().out == f"job {ids[0]} deleted\n"
    assert remote(api, "list", "--json", "--status", "canceled") == 0
    assert json.loads(capsys.readouterr().out) == []


@SQLITE
def test_a_read_only_key_may_list_and_watch_but_not_cancel(
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    services = Services.build(settings)
    _, write = keys.create(services.sessions, "ci", "write")
    _, read = keys.create(services.sessions, "dashboard", "read")
    services.engine.dispose()
    api = Server(settings, tmp_path, worker=False)  # started once keys exist: it needs them
    try:
        with Client(api.url, write) as client:
            job_id = client.submit(SP)["id"]
        monkeypatch.setenv("TOKENGRAFT_KEY", read)
        assert remote(api, "list", "--json") == 0
        assert [j["id"] for j in json.loads(capsys.readouterr().out)] == [job_id]
        assert remote(api, "cancel", job_id) == 2
        assert "403 Forbidden: this API key is read-only" in one_error_line(capsys)
        assert remote(api, "--key", write, "cancel", job_id) == 0
        assert remote(api, "watch", job_id) == 1  # canceled
        assert f"job {job_id} canceled" in capsys.readouterr().err
        monkeypatch.delenv("TOKENGRAFT_KEY")
        assert remote(api, "list") == 2
        assert "401 Unauthorized" in one_error_line(capsys)
    finally:
        api.stop()
