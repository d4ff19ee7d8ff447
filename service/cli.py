"""The `tokengraft` command: the library's commands (`hypernet.cli`) and the service's own,
serve, worker, migrate, keys and openapi.

The commands only parse arguments and print; the work is in the library and the service. Bad
input ends with a one-line message and exit status 2.
"""

from __future__ import annotations

import argparse
import functools
import socket
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from hypernet import cli as library
from hypernet.errors import InputError
from service import remote

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from service.config import Settings
    from service.services import Services

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def main(argv: Sequence[str] | None = None) -> int:
    return library.run(parser().parse_args(argv))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tokengraft", description=library.DESCRIPTION)
    sub = p.add_subparsers(dest="command", required=True)
    library.add_parsers(sub)
    add_parsers(sub)
    return p


def add_parsers(sub: library.Subparsers) -> None:
    """Every service command, listed after the library's."""
    for add in (
        add_serve_parser,
        add_worker_parser,
        add_migrate_parser,
        add_keys_parser,
        add_openapi_parser,
        remote.add_remote_parser,
    ):
        add(sub)


def _add_database_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        help="SQLite file, artifacts and uploads (default ./tokengraft-data, or "
        "$TOKENGRAFT_DATA_DIR)",
    )
    p.add_argument(
        "--database-url",
        help="e.g. postgresql+psycopg://user@host/db (default: SQLite in the data dir)",
    )


def _add_storage_flags(p: argparse.ArgumentParser) -> None:
    """Where artifacts and uploads are kept: the same for the API and every worker."""
    p.add_argument(
        "--storage",
        help="file://DIR (default: the data dir's jobs folder) or s3://BUCKET/PREFIX, whose "
        "endpoint, region and credentials come from the AWS environment (AWS_ENDPOINT_URL, ...)",
    )
    p.add_argument(
        "--storage-redirect",
        action="store_true",
        default=None,
        help="answer artifact downloads with a 307 to a presigned URL of the object store",
    )


def _migrated(args: argparse.Namespace) -> Settings:
    """The settings the flags give, with the database brought to the current schema first."""
    from service.config import Settings
    from service.migrate import upgrade

    given = {"data_dir": args.data_dir, "database_url": args.database_url}
    given |= {"corpora_dir": getattr(args, "corpora_dir", None)}
    given |= {k: getattr(args, k, None) for k in ("storage", "storage_redirect")}
    settings = Settings(**{k: v for k, v in given.items() if v is not None})
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.url)
    return settings


def _services(args: argparse.Namespace) -> Services:
    from service.services import Services

    return Services.build(_migrated(args))


# --- serve and worker ------------------------------------------------------------------------
def add_serve_parser(sub: library.Subparsers) -> None:
    sv = sub.add_parser("serve", help="the HTTP service, with an in-process worker")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--corpora-dir", help="folder of NAME.txt eval texts requests may name")
    sv.add_argument("--no-worker", action="store_true", help="API only; run `tokengraft worker`")
    sv.add_argument(
        "--processes",
        type=int,
        default=1,
        help="API processes sharing the listening socket (over 1 needs --no-worker)",
    )
    _add_database_flags(sv)
    _add_storage_flags(sv)
    sv.set_defaults(func=cmd_serve)


@library.quiet_transformers
def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from service.api.main import create_app
    from service.api.protocol import BoundedHead

    if args.processes < 1:
        raise InputError(f"--processes must be at least 1, not {args.processes}")
    if args.processes > 1 and not args.no_worker:
        raise InputError(
            "--processes over 1 needs --no-worker: run the workers as `tokengraft worker`"
        )
    settings = _public_settings(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    where = f"http://{args.host}:{args.port} (data in {settings.data_dir})"
    print(
        f"tokengraft serving on {where}; dashboard at http://{args.host}:{args.port}/ui/",
        file=sys.stderr,
    )
    # httptools parses HTTP fast (BoundedHead: with a bound on a request's head); the asyncio
    # loop, unlike uvloop, served 16 pollers without 100-300 ms stragglers (bench/polling.py)
    server = {"host": args.host, "port": args.port, "log_level": "warning"}
    http = functools.partial(BoundedHead, limit=settings.max_header_bytes)
    server |= {"loop": "asyncio", "http": http}
    if args.processes == 1:
        uvicorn.run(create_app(settings, worker=not args.no_worker), **server)
    else:
        _serve_processes(settings, args.processes, server)
    return 0


def _serve_processes(settings: Settings, processes: int, server: dict) -> None:
    """uvicorn's supervisor: `processes` children share one listening socket. Each child
    builds its own app from an import string, so the settings reach it as TOKENGRAFT_*
    variables, as they reach the embedded worker; SIGTERM to this process stops them all."""
    import os

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from service.embedded import environment

    sock = listening(server["host"], server["port"])
    os.environ.update(environment(settings))
    app = "service.api.main:app_from_environment"
    config = uvicorn.Config(app, factory=True, workers=processes, **server)
    Multiprocess(config, sockets=[sock]).run()


def listening(host: str, port: int) -> socket.socket:
    """The socket the API processes share, bound as uvicorn's `workers` binds it but with
    IPPROTO_TCP: uvicorn leaves proto 0 (its issue #3149), accepted connections inherit it,
    and asyncio then never sets TCP_NODELAY on them, so a response written in two parts
    (headers, body) waited ~40 ms for the client's delayed ACK: 330 polls/s instead of
    thousands (bench/load.py)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.set_inheritable(True)
    return sock


def _public_settings(args: argparse.Namespace) -> Settings:
    """The settings, refused where the service would listen beyond this machine without keys."""
    from service import keys

    services = _services(args)
    try:
        if args.host not in LOOPBACK and not keys.any_active(services.sessions):
            raise InputError(
                f"refusing to listen on {args.host} without API keys: create one with "
                "`tokengraft keys create NAME`, or serve on 127.0.0.1"
            )
    finally:
        services.engine.dispose()
    return services.settings


def add_worker_parser(sub: library.Subparsers) -> None:
    w = sub.add_parser("worker", help="run transplant jobs from the database")
    w.add_argument("--corpora-dir", help="folder of NAME.txt eval texts requests may name")
    _add_database_flags(w)
    _add_storage_flags(w)
    w.set_defaults(func=cmd_worker)


@library.quiet_transformers
def cmd_worker(args: argparse.Namespace) -> int:
    import logging

    from service.shutdown import Shutdown
    from service.worker import Worker

    services = _services(args)
    worker = Worker(services.settings, services.queue, services.storage, services.catalog)
    Shutdown(worker.stop, worker.abandon).start()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        worker.run()
    finally:
        services.engine.dispose()
    return 0


# --- the database ----------------------------------------------------------------------------
def add_migrate_parser(sub: library.Subparsers) -> None:
    mg = sub.add_parser("migrate", help="bring the database to the current schema")
    _add_database_flags(mg)
    mg.set_defaults(func=cmd_migrate)


def cmd_migrate(args: argparse.Namespace) -> int:
    from sqlalchemy.engine import make_url

    url = make_url(_migrated(args).url).render_as_string(hide_password=True)
    print(f"database at the current schema: {url}")
    return 0


def add_keys_parser(sub: library.Subparsers) -> None:
    k = sub.add_parser("keys", help="API keys").add_subparsers(dest="keys_command", required=True)
    kc = k.add_parser("create", help="create a key; prints it once")
    kc.add_argument("name", help="who or what uses it")
    kc.add_argument(
        "--scope",
        choices=["write", "read"],
        default="write",
        help="read: GET and HEAD only, for dashboards",
    )
    kc.set_defaults(func=cmd_keys_create)
    kl = k.add_parser("list", help="list keys (never their secrets)")
    kl.set_defaults(func=cmd_keys_list)
    kr = k.add_parser("revoke", help="revoke a key by id")
    kr.add_argument("id")
    kr.set_defaults(func=cmd_keys_revoke)
    for sp in (kc, kl, kr):
        _add_database_flags(sp)


def _key_sessions(args: argparse.Namespace) -> sessionmaker[Session]:
    """Sessions alone, not the whole Services: key commands load no model library."""
    from service.db import make_engine, make_sessions

    return make_sessions(make_engine(_migrated(args).url))


def cmd_keys_create(args: argparse.Namespace) -> int:
    from service import keys

    row, key = keys.create(_key_sessions(args), args.name, args.scope)
    print(key)
    print(f"key {row.id} ({row.scope}) created; it is shown only once", file=sys.stderr)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    from service import keys

    for row in keys.all_keys(_key_sessions(args)):
        state = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "active"
        print(f"{row.id}  {row.scope:<5}  {state:<24}  {row.name}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from service import keys

    if not keys.revoke(_key_sessions(args), args.id):
        raise InputError(f"no API key {args.id}")
    print(f"revoked {args.id}")
    return 0


def add_openapi_parser(sub: library.Subparsers) -> None:
    openapi = sub.add_parser("openapi", help="print the HTTP API's OpenAPI schema (YAML)")
    openapi.set_defaults(func=cmd_openapi)


def cmd_openapi(args: argparse.Namespace) -> int:
    import yaml

    from service.api.main import create_app

    print(yaml.safe_dump(create_app().openapi(), sort_keys=False, allow_unicode=True), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
