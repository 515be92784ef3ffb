"""Expiring, unguessable tokens for the input images we serve to vendors
at /media/<token>. A token stands for a Telegram file id or for bytes we
made ourselves (a quadrant cut from a grid); the Telegram file URL, which
holds the bot token, never leaves the bot."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from storage.db import Database


@dataclass(frozen=True)
class MediaItem:
    token: str
    file_id: str | None
    data: bytes | None
    mime: str
    task_id: int | None
    expires_at: float


class MediaRepository:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    async def create(
        self,
        file_id: str | None,
        mime: str,
        ttl_seconds: float,
        task_id: int | None = None,
        *,
        data: bytes | None = None,
    ) -> MediaItem:
        """A link to a Telegram file (``file_id``) or to ``data``."""
        if (file_id is None) == (data is None):
            raise ValueError("a media item is either a Telegram file or bytes")
        item = MediaItem(secrets.token_urlsafe(32), file_id, data, mime, task_id, self.clock() + ttl_seconds)
        await self.db.execute(
            "INSERT INTO media (token, file_id, data, mime, task_id, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
            (item.token, item.file_id, item.data, item.mime, item.task_id, item.expires_at),
        )
        return item

    async def valid(self, token: str) -> MediaItem | None:
        """The item behind a token that has not expired, else None."""
        row = await self.db.fetchone(
            "SELECT token, file_id, data, mime, task_id, expires_at FROM media"
            " WHERE token = ? AND expires_at > ?",
            (token, self.clock()),
        )
        return MediaItem(**dict(row)) if row else None

    async def purge_expired(self) -> int:
        return await self.db.execute("DELETE FROM media WHERE expires_at <= ?", (self.clock(),))
