"""Alembic environment: the models' metadata, the URL from `service.migrate`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

from service.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True, render_as_batch=True)  # fmt: skip
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is None:
        connectable = engine_from_config(
            config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.",
            poolclass=pool.NullPool,
        )  # fmt: skip
        with connectable.connect() as connection:
            _run(connection)
    else:
        _run(connectable)


def _run(connection) -> None:  # noqa: ANN001
    context.configure(
        connection=connection, target_metadata=target_metadata, render_as_batch=True
    )  # fmt: skip  (SQLite alters tables by copying)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
