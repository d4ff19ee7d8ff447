"""`tokengraft remote`: submit, watch, download, list, cancel and delete jobs on a running
server, through `service.client`.

stdout carries what a script reads (a job id, JSON, the job table); progress bars and status
lines go to stderr. An answer the request caused (4xx) prints one line and exits with status 2,
like bad input to any command; a server that cannot be reached, a server error, a 2xx answer
that is not what the command expects, a failed or canceled job and a download that does not
match its manifest exit with status 1. Nothing here
imports torch or transformers.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from hypernet import cli as library
from hypernet.errors import InputError

if TYPE_CHECKING:
    from .client import Client

DEFAULT_SERVER = "http://127.0.0.1:8000"
RemoteCommand = Callable[[argparse.Namespace, "Client"], int]


def add_remote_parser(sub: library.Subparsers) -> None:
    r = sub.add_parser("remote", help="submit and follow jobs on a running tokengraft server")
    r.add_argument(
        "--server", help=f"the server's URL (default $TOKENGRAFT_SERVER, else {DEFAULT_SERVER})"
    )
    r.add_argument("--key", help="an API key (default $TOKENGRAFT_KEY)")
    rs = r.add_subparsers(dest="remote_command", required=True)
    for add in (
        add_submit_parser,
        add_watch_parser,
        add_download_parser,
        add_list_parser,
        add_cancel_parser,
        add_delete_parser,
    ):
        add(rs)


def remote(cmd: RemoteCommand) -> library.Command:
    """`cmd` with a client for the flags' server, and the server's refusals and an unreachable
    server as one line on stderr. The client is imported here: httpx takes longer to import
    than the rest of the command line, and the other commands never need it."""

    @functools.wraps(cmd)
    def run(args: argparse.Namespace) -> int:
        import httpx

        from .client import BadAnswer, Client, ClientError, DownloadError

        server = args.server or os.environ.get("TOKENGRAFT_SERVER") or DEFAULT_SERVER
        try:
            with Client(server, args.key or os.environ.get("TOKENGRAFT_KEY")) as client:
                return cmd(args, client)
        except ClientError as e:
            return _fail(str(e), 2 if e.status < 500 else 1)
        except httpx.TransportError as e:
            return _fail(f"cannot reach {server}: {_first_line(e)}", 1)
        except (BadAnswer, DownloadError) as e:
            return _fail(str(e), 1)

    return run


def _fail(message: str, status: int) -> int:
    print(f"tokengraft: error: {message}", file=sys.stderr)
    return status


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]


# --- submit ----------------------------------------------------------------------------------
def add_submit_parser(sub: library.Subparsers) -> None:
    s = sub.add_parser("submit", help="queue a transplant; prints its job id")
    s.add_argument("--model", required=True, help="a store name, bundled model or hub id")
    s.add_argument(
        "--tokenizer",
        required=True,
        help="a local folder or tokenizer.json (uploaded first), or an uploaded tokenizer's id, "
        "a store name or a hub id",
    )
    s.add_argument("--method", help="see GET /methods (default: the server's choice)")
    s.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE", help="a method option"
    )
    s.add_argument(
        "--eval-text", help="a local file (uploaded first), or an uploaded text's id or a corpus"
    )
    s.add_argument("--eval-bytes", type=int, help="evaluate on this many bytes")
    s.add_argument("--hypernet", help="a hypernetwork store name (hypernet methods)")
    s.add_argument("--donor", help="method omp: a model that already speaks the tokenizer")
    s.add_argument("--dry-run", action="store_true", help="only validate; prints the answer")
    s.add_argument("--watch", action="store_true", help="follow the job until it ends")
    s.add_argument("--download", metavar="DIR", help="watch, then download the checkpoint")
    s.add_argument("--json", action="store_true", help="print the job as JSON, not its id")
    s.set_defaults(func=cmd_submit)


@remote
def cmd_submit(args: argparse.Namespace, client: Client) -> int:
    answer = client.submit(_request(args, client))
    if args.dry_run or args.json:
        print(json.dumps(answer, indent=2))
    else:
        print(answer["id"], flush=True)
    if args.dry_run or not (args.watch or args.download):
        return 0
    status = _watch(client, answer["id"])
    if status or not args.download:
        return status
    return _download(client, answer["id"], Path(args.download))


def _request(args: argparse.Namespace, client: Client) -> dict:
    """The request body; local files named by --tokenizer and --eval-text are uploaded first
    and named by their upload ids."""
    request = {"model": args.model, "tokenizer": _tokenizer(args.tokenizer, client)}
    if args.eval_text is not None:
        request["eval_text"] = _text(args.eval_text, client)
    given = {"method": args.method, "eval_bytes": args.eval_bytes}
    given |= {"hypernet": args.hypernet, "donor": args.donor}
    request |= {k: v for k, v in given.items() if v is not None}
    return request | {"options": _options(args.option), "dry_run": args.dry_run}


def _tokenizer(value: str, client: Client) -> str:
    path = Path(value)
    return client.upload_tokenizer(path)["id"] if path.exists() else value


def _text(value: str, client: Client) -> str:
    path = Path(value)
    return client.upload_text(path)["id"] if path.is_file() else value


def _options(pairs: list[str]) -> dict:
    """--option k=8 --option temperature=0.1 --option fast=true -> typed values: the server
    checks each option's type, and "8" is not an int."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--option expects key=value, got {pair!r}")
        options[key] = _value(value)
    return options


def _value(text: str) -> bool | int | float | str:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


# --- watch -----------------------------------------------------------------------------------
def add_watch_parser(sub: library.Subparsers) -> None:
    w = sub.add_parser("watch", help="follow a job's progress until it ends")
    w.add_argument("id")
    w.add_argument("--json", action="store_true", help="print the finished job as JSON")
    w.set_defaults(func=cmd_watch)


@remote
def cmd_watch(args: argparse.Namespace, client: Client) -> int:
    status = _watch(client, args.id)
    if args.json:
        print(json.dumps(client.job(args.id), indent=2))
    return status


class _Bar:
    """One tqdm bar on stderr: its description the current stage (or state), its value the
    stage's fraction, its postfix the latest message."""

    def __init__(self) -> None:
        from tqdm import tqdm

        layout = "{desc:<10} {percentage:3.0f}%|{bar}| {elapsed}{postfix}"
        self.bar = tqdm(total=100, desc="connecting", bar_format=layout, file=sys.stderr)

    def show(self, event: dict) -> None:
        data = event["data"]
        if event["event"] == "state":
            self.bar.set_description_str(data["status"], refresh=False)
            self.bar.n = 100 if data["status"] == "succeeded" else self.bar.n
        elif data.get("stage"):
            self.bar.set_description_str(data["stage"], refresh=False)
            self.bar.n = round(100 * data.get("fraction", 0))
        self.bar.set_postfix_str(data.get("message") or "", refresh=False)
        self.bar.refresh()

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()


def _watch(client: Client, job_id: str) -> int:
    """Follow the job to its end: 0 once it succeeded, 1 when it failed, was canceled or was
    deleted (with why on stderr)."""
    status = "deleted"
    with _Bar() as bar:
        for event in client.events(job_id):
            if event["event"] == "end":
                status = event["data"]["status"]
            else:
                bar.show(event)
    if status == "deleted":
        return _fail(f"job {job_id} was deleted", 1)
    print(f"job {job_id} {status}", file=sys.stderr)
    return 0 if status == "succeeded" else _job_error(client.job(job_id))


def _job_error(job: dict) -> int:
    error = job.get("error")
    if error:
        print(f"{error['type']}: {error.get('detail') or 'no detail'}", file=sys.stderr)
    return 1


# --- download --------------------------------------------------------------------------------
def add_download_parser(sub: library.Subparsers) -> None:
    d = sub.add_parser("download", help="a succeeded job's checkpoint, resumed if interrupted")
    d.add_argument("id")
    d.add_argument("--out", required=True, help="the folder (created; files there are reused)")
    d.set_defaults(func=cmd_download)


@remote
def cmd_download(args: argparse.Namespace, client: Client) -> int:
    return _download(client, args.id, Path(args.out))


def _download(client: Client, job_id: str, folder: Path) -> int:
    from tqdm import tqdm

    total = sum(f["size"] for f in client.manifest(job_id))
    with tqdm(total=total, unit="B", unit_scale=True, desc="download", file=sys.stderr) as bar:
        paths = client.download(job_id, folder, bar.update)
    print(f"downloaded {len(paths)} files into {folder}", file=sys.stderr)
    return 0


# --- list, cancel, delete --------------------------------------------------------------------
def add_list_parser(sub: library.Subparsers) -> None:
    ls = sub.add_parser("list", help="jobs, newest first")
    ls.add_argument("--status", choices=["queued", "running", "succeeded", "failed", "canceled"])
    ls.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    ls.add_argument("--json", action="store_true", help="the jobs as a JSON list")
    ls.set_defaults(func=cmd_list)


@remote
def cmd_list(args: argparse.Namespace, client: Client) -> int:
    if args.limit < 1:
        raise InputError(f"--limit must be at least 1, got {args.limit}")
    jobs = list(client.jobs(args.status, args.limit))
    if args.json:
        print(json.dumps(jobs, indent=2))
    else:
        _table([["id", "status", "method", "model", "tokenizer", "age"], *map(_row, jobs)])
    return 0


def _row(job: dict) -> list[str]:
    request = job["request"]
    names = [request.get(k) or "-" for k in ("method", "model", "tokenizer")]
    return [job["id"], job["status"], *names, _age(job["created_at"])]


def _age(created_at: str) -> str:
    seconds = (datetime.now(UTC) - datetime.fromisoformat(created_at)).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{max(int(seconds), 0)}s"


def _table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def add_cancel_parser(sub: library.Subparsers) -> None:
    c = sub.add_parser("cancel", help="cancel a queued or running job")
    c.add_argument("id")
    c.set_defaults(func=cmd_cancel)


@remote
def cmd_cancel(args: argparse.Namespace, client: Client) -> int:
    job = client.cancel(args.id)
    asked = " (cancel requested)" if job["cancel_requested"] and job["status"] == "running" else ""
    print(f"job {job['id']} {job['status']}{asked}")
    return 0


def add_delete_parser(sub: library.Subparsers) -> None:
    d = sub.add_parser("delete", help="delete a finished job and its files")
    d.add_argument("id")
    d.set_defaults(func=cmd_delete)


@remote
def cmd_delete(args: argparse.Namespace, client: Client) -> int:
    client.delete(args.id)
    print(f"job {args.id} deleted")
    return 0
