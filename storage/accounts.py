"""Users and chats: who they are and what they chose in /settings."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from storage.db import Database
from storage.models import Chat, User

_USER_SETTINGS = frozenset({"language", "default_provider", "aspect_ratio", "image_count"})
_CHAT_SETTINGS = frozenset({"buttons_policy"})


class AccountRepository:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    async def seen_user(self, user_id: int, language_code: str | None) -> User:
        """Record a user (and the language Telegram reports) and return them."""
        now = self.clock()
        row = await self.db.fetchone(
            """INSERT INTO users (id, language_code, created_at, updated_at) VALUES (?, ?, ?, ?)
               ON CONFLICT (id) DO UPDATE SET
                   language_code = COALESCE(excluded.language_code, users.language_code),
                   updated_at = excluded.updated_at
               RETURNING *""",
            (user_id, language_code, now, now),
        )
        assert row is not None
        return User.from_row(row)

    async def user(self, user_id: int) -> User | None:
        row = await self.db.fetchone("SELECT * FROM users WHERE id = ?", (user_id,))
        return User.from_row(row) if row else None

    async def update_user(self, user_id: int, **settings: Any) -> None:
        unknown = set(settings) - _USER_SETTINGS
        if unknown:
            raise ValueError(f"not a user setting: {sorted(unknown)}")
        sets = "".join(f", {name} = ?" for name in settings)
        await self.db.execute(
            f"UPDATE users SET updated_at = ?{sets} WHERE id = ?",
            (self.clock(), *settings.values(), user_id),
        )

    async def seen_chat(self, chat_id: int, chat_type: str, title: str | None) -> Chat:
        now = self.clock()
        row = await self.db.fetchone(
            """INSERT INTO chats (id, type, title, created_at, updated_at) VALUES (?, ?, ?, ?, ?)
               ON CONFLICT (id) DO UPDATE SET
                   type = excluded.type, title = excluded.title, updated_at = excluded.updated_at
               RETURNING *""",
            (chat_id, chat_type, title, now, now),
        )
        assert row is not None
        return Chat.from_row(row)

    async def chat(self, chat_id: int) -> Chat | None:
        row = await self.db.fetchone("SELECT * FROM chats WHERE id = ?", (chat_id,))
        return Chat.from_row(row) if row else None

    async def update_chat(self, chat_id: int, **settings: Any) -> None:
        unknown = set(settings) - _CHAT_SETTINGS
        if unknown:
            raise ValueError(f"not a chat setting: {sorted(unknown)}")
        sets = "".join(f", {name} = ?" for name in settings)
        await self.db.execute(
            f"UPDATE chats SET updated_at = ?{sets} WHERE id = ?",
            (self.clock(), *settings.values(), chat_id),
        )
