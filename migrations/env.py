"""alembic environment for pgqueue's own schema; pgqueue.migrate builds the Config in code."""

from alembic import context
from sqlalchemy import create_engine, pool, text

from pgqueue.migrate import VERSION_TABLE

config = context.config
schema = config.attributes["schema"]  # validated by pgqueue.config.validate_schema


def run_offline() -> None:
    context.configure(
        dialect_name="postgresql",
        literal_binds=True,
        version_table=VERSION_TABLE,
        version_table_schema=schema,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        context.run_migrations()


def run_online() -> None:
    connect = config.attributes["connect"]
    engine = create_engine("postgresql+psycopg://", creator=connect, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            version_table=VERSION_TABLE,
            version_table_schema=schema,
            transactional_ddl=True,
        )
        with context.begin_transaction():
            # Concurrent `pgqueue migrate` runs queue up here; each then reads the version
            # the previous one committed and has nothing left to do.
            connection.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"pgqueue migrate {schema}"}
            )
            connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
