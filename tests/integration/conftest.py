"""Fixtures shared by the integration tests of the pathway store."""

from __future__ import annotations

import secrets
from pathlib import Path

import psycopg
import pytest


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty store on each engine: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "pathways.sqlite3")
    base: str = request.getfixturevalue("postgres_url")
    name = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(base, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return base.rsplit("/", 1)[0] + "/" + name
