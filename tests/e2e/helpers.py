"""Small helpers shared by the end-to-end tests."""

from __future__ import annotations

import io

from PIL import Image

from tests.fakes.telegram import FakeTelegram, StoredMessage


def png(width: int = 320, height: int = 240, colour: tuple[int, int, int] = (180, 60, 60)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, format="PNG")
    return out.getvalue()


def photos(telegram: FakeTelegram, chat_id: int) -> list[StoredMessage]:
    return [m for m in telegram.bot_messages(chat_id) if m.photo]


def image_size(telegram: FakeTelegram, message: StoredMessage) -> tuple[int, int]:
    """Size of what the bot uploaded (the fake keeps the original bytes)."""
    assert message.upload is not None
    with Image.open(io.BytesIO(message.upload)) as image:
        return image.size


def is_result(message: StoredMessage) -> bool:
    """A finished image: it carries buttons or belongs to an album (a
    progress preview is a photo too, but has neither)."""
    return bool((message.photo or message.document) and (message.reply_markup or message.media_group_id))


async def result_after(telegram: FakeTelegram, chat_id: int, after: int, timeout: float = 15) -> StoredMessage:
    return await telegram.wait_for_message(chat_id, is_result, timeout=timeout, after_message_id=after)


async def settled(bot, user_id: int, timeout: float = 10.0) -> list:  # type: ignore[no-untyped-def]
    """The user's tasks once none is still on its way (the last message can
    reach the chat a moment before its task is marked delivered)."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while True:
        tasks = await bot.store.tasks.recent(user_id, limit=50)
        if all(t.status.final for t in tasks) or time.monotonic() > deadline:
            return tasks
        await asyncio.sleep(0.05)
