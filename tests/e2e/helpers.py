"""Small helpers shared by the end-to-end tests."""

from __future__ import annotations

import asyncio
import io
import os
import sys
from pathlib import Path

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


def cli_env(**variables: str) -> dict[str, str]:
    """The environment for ``python -m bot`` in a subprocess: this one
    without any of the bot's own variables, plus ``variables``."""
    ours = ("TELEGRAM_", "COMFYUI_", "A1111_", "OPENAI_", "MJ_PROXY_", "PROVIDERS_FILE", "DATABASE_URL")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    env.update(variables)
    return env


async def run_check(env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    """``python -m bot check`` while this event loop goes on serving fakes."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "check", cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


def first_text(message: StoredMessage) -> str:
    """What a message said when it was sent: a status message becomes the
    result in place, so its text now is the result's caption."""
    if message.edits:
        before = message.edits[0].before
        return before.get("text") or before.get("caption") or ""
    return message.text or message.caption or ""


def texts_shown(message: StoredMessage) -> list[str]:
    """Every text or caption the message showed, oldest first."""
    shown = [e.before.get("text") or e.before.get("caption") or "" for e in message.edits]
    return [*shown, message.text or message.caption or ""]
