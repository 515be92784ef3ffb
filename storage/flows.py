"""Multi-step conversations, one per user per chat, that expire."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from storage.db import Database


@dataclass(frozen=True)
class Flow:
    chat_id: int
    user_id: int
    kind: str
    data: dict[str, Any]
    expires_at: float


class FlowRepository:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    async def start(self, chat_id: int, user_id: int, kind: str, ttl_seconds: float, data: dict[str, Any] | None = None) -> Flow:
        flow = Flow(chat_id, user_id, kind, data or {}, self.clock() + ttl_seconds)
        await self.db.execute(
            "INSERT OR REPLACE INTO flows (chat_id, user_id, kind, data, expires_at) VALUES (?, ?, ?, ?, ?)",
            (chat_id, user_id, kind, json.dumps(flow.data), flow.expires_at),
        )
        return flow

    async def current(self, chat_id: int, user_id: int) -> Flow | None:
        row = await self.db.fetchone(
            "SELECT chat_id, user_id, kind, data, expires_at FROM flows"
            " WHERE chat_id = ? AND user_id = ? AND expires_at > ?",
            (chat_id, user_id, self.clock()),
        )
        if row is None:
            return None
        return Flow(row[0], row[1], row[2], json.loads(row[3]), row[4])

    async def update(self, flow: Flow, data: dict[str, Any]) -> Flow:
        await self.db.execute(
            "UPDATE flows SET data = ? WHERE chat_id = ? AND user_id = ?",
            (json.dumps(data), flow.chat_id, flow.user_id),
        )
        return Flow(flow.chat_id, flow.user_id, flow.kind, data, flow.expires_at)

    async def finish(self, chat_id: int, user_id: int) -> bool:
        """End the user's flow here; True when there was one."""
        return await self.db.execute(
            "DELETE FROM flows WHERE chat_id = ? AND user_id = ?", (chat_id, user_id)
        ) > 0

    async def purge_expired(self) -> int:
        return await self.db.execute("DELETE FROM flows WHERE expires_at <= ?", (self.clock(),))
