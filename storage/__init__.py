"""Database access. All SQL lives in this package, so a PostgreSQL backend
can replace it behind the same repositories."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from storage.accounts import AccountRepository
from storage.db import Database
from storage.flows import FlowRepository
from storage.media import MediaRepository
from storage.tasks import TaskRepository


@dataclass
class Store:
    db: Database
    tasks: TaskRepository
    accounts: AccountRepository
    media: MediaRepository
    flows: FlowRepository

    @classmethod
    async def open(cls, path: str | Path, clock: Callable[[], float] = time.time) -> "Store":
        db = await Database.open(path)
        return cls(
            db=db,
            tasks=TaskRepository(db, clock),
            accounts=AccountRepository(db, clock),
            media=MediaRepository(db, clock),
            flows=FlowRepository(db, clock),
        )

    async def close(self) -> None:
        await self.db.close()
