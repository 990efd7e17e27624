"""Shared fixtures: one real PostgreSQL for the session, a fresh database per test."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from hypothesis import HealthCheck, settings

from callrouter.store.database import ensure_database
from callrouter.store.embedded import EmbeddedPostgres
from callrouter.store.migrations import migrate

# The machine has 2 shared cores: hypothesis deadlines would measure load, not correctness.
settings.register_profile(
    "callrouter", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=200
)
settings.load_profile("callrouter")

TEMPLATE = "callrouter_template"


def world_traversable_tempdir(prefix: str) -> Path:
    """A temp dir the PostgreSQL account can reach when the tests run as root."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def postgres() -> Iterator[EmbeddedPostgres]:
    root = world_traversable_tempdir("callrouter-tests-")
    server = EmbeddedPostgres(root / "postgres")
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
async def template_database(postgres: EmbeddedPostgres) -> str:
    """A migrated database that each test's database is cloned from (fast: a file copy)."""
    await ensure_database(postgres.admin_dsn, TEMPLATE)
    dsn = postgres.admin_dsn.replace("/postgres?", f"/{TEMPLATE}?", 1)
    connection = await asyncpg.connect(dsn)
    try:
        await migrate(connection)
    finally:
        await connection.close()
    return TEMPLATE


@pytest.fixture
async def database_dsn(postgres: EmbeddedPostgres, template_database: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test."""
    name = "test_" + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(postgres.admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    finally:
        await admin.close()
    yield postgres.admin_dsn.replace("/postgres?", f"/{name}?", 1)
    admin = await asyncpg.connect(postgres.admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()
