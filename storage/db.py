"""One aiosqlite connection owned by the store: WAL, foreign keys, and
numbered migrations applied each in a transaction together with its record.

The connection runs in autocommit mode and every statement goes through
``Database.lock``: SQLite transactions belong to the connection, so two
coroutines must never interleave statements inside one.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

log = logging.getLogger(__name__)

T = TypeVar("T")

_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def bundled_migrations() -> list[Migration]:
    """The numbered SQL files in storage/migrations, in order."""
    found = []
    for entry in resources.files("storage.migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations must be numbered 1..n without gaps, got {versions}")
    return found


def split_statements(sql: str) -> list[str]:
    """Split a script into complete statements (executescript would commit)."""
    statements, current = [], ""
    *pieces, tail = sql.split(";")
    for piece in pieces:
        current += piece + ";"
        if sqlite3.complete_statement(current):
            if _has_code(current[:-1]):
                statements.append(current.strip())
            current = ""
    if _has_code(current + tail):
        raise ValueError("migration ends with an incomplete statement")
    return statements


def _has_code(sql: str) -> bool:
    """True when ``sql`` holds more than whitespace and -- comments."""
    return any(line.split("--", 1)[0].strip() for line in sql.splitlines())


class Database:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self.lock = asyncio.Lock()

    @classmethod
    async def open(
        cls, path: str | Path, migrations: Sequence[Migration] | None = None
    ) -> Database:
        path = Path(path)
        if str(path) != ":memory:":
            path.parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(path, isolation_level=None)
        conn.row_factory = aiosqlite.Row
        db = cls(conn)
        try:
            await conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL is crash-safe in WAL mode (a killed process loses nothing
            # committed); only power loss can drop the last transactions.
            await conn.execute("PRAGMA synchronous=NORMAL")
            await conn.execute("PRAGMA foreign_keys=ON")
            await conn.execute("PRAGMA busy_timeout=5000")
            await db.migrate(bundled_migrations() if migrations is None else migrations)
        except BaseException:
            await conn.close()
            raise
        return db

    async def close(self) -> None:
        await self._conn.close()

    async def migrate(self, migrations: Iterable[Migration]) -> list[int]:
        """Apply what is missing; each migration and its record commit together."""
        async with self.lock:
            await self._conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
            )
            async with self._conn.execute("SELECT version FROM schema_migrations") as cur:
                applied = {row[0] for row in await cur.fetchall()}
            done = []
            for migration in migrations:
                if migration.version in applied:
                    continue
                await self._conn.execute("BEGIN IMMEDIATE")
                try:
                    for statement in split_statements(migration.sql):
                        await self._conn.execute(statement)
                    await self._conn.execute(
                        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                        (migration.version, migration.name, time.time()),
                    )
                    await self._conn.execute("COMMIT")
                except BaseException:
                    await self._conn.execute("ROLLBACK")
                    raise
                log.info("applied migration %04d_%s", migration.version, migration.name)
                done.append(migration.version)
            return done

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` on the database thread, under the lock, in ONE trip.

        aiosqlite's own cursor API costs three trips per statement (execute,
        fetch, close), each a thread hand-off and an event-loop wake-up; the
        bench counted ~75 per job. ``Connection._execute`` is the queue its
        public methods use (version pinned in pyproject.toml)."""
        async with self.lock:
            return await self._conn._execute(work, self._conn._conn)

    async def fetchone(self, sql: str, params: Sequence[Any] | dict = ()) -> sqlite3.Row | None:
        return await self.run(lambda conn: conn.execute(sql, params).fetchone())

    async def fetchall(self, sql: str, params: Sequence[Any] | dict = ()) -> list[sqlite3.Row]:
        return await self.run(lambda conn: conn.execute(sql, params).fetchall())

    async def execute(self, sql: str, params: Sequence[Any] | dict = ()) -> int:
        """Run one statement; returns the number of rows it changed."""
        return await self.run(lambda conn: conn.execute(sql, params).rowcount)

    async def transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Several statements that commit together (or not at all), in one trip."""

        def atomically(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        return await self.run(atomically)
