"""Long polling that confirms an update only after it was handled.

python-telegram-bot's Updater asks for the next batch (which confirms the
last one at Telegram) while the handlers of the batch still run, so a crash
in that moment loses the requests for good. Here a batch is handled first
and only then is the offset moved past it; an update handled twice after a
crash is harmless (a request makes one task: unique indexes)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from telegram import Update
from telegram.error import Conflict, InvalidToken, NetworkError, RetryAfter, TelegramError
from telegram.ext import Application

log = logging.getLogger(__name__)

RETRY_SECONDS = 2.0
DRAIN_SECONDS = 10.0


def _seconds(value: object) -> float:
    return float(value.total_seconds() if hasattr(value, "total_seconds") else value)  # type: ignore[union-attr, arg-type]


class UpdatePoller:
    def __init__(self, application: Application, long_poll_seconds: int) -> None:  # type: ignore[type-arg]
        self.application = application
        self.long_poll_seconds = long_poll_seconds
        self._offset: int | None = None
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._fetch: asyncio.Task[tuple[Update, ...]] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="update-poller")

    async def stop(self) -> None:
        """Stop asking for updates; the batch in hand is finished (bounded)."""
        self._stopping = True
        if self._fetch is not None:
            self._fetch.cancel()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=DRAIN_SECONDS)
        except TimeoutError:
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._confirm()

    async def _run(self) -> None:
        bot = self.application.bot
        while not self._stopping:
            self._fetch = asyncio.ensure_future(
                bot.get_updates(offset=self._offset, timeout=self.long_poll_seconds, allowed_updates=Update.ALL_TYPES)
            )
            try:
                updates = await self._fetch
            except asyncio.CancelledError:
                if self._stopping:
                    return
                raise
            except InvalidToken:
                log.error("Telegram rejected the bot token; polling stops")
                return
            except RetryAfter as exc:
                await asyncio.sleep(_seconds(exc.retry_after))
                continue
            except Conflict:
                log.error("another instance is polling with this token; retrying")
                await asyncio.sleep(RETRY_SECONDS * 5)
                continue
            except (NetworkError, TelegramError) as exc:
                log.warning("getUpdates failed: %s", exc)
                await asyncio.sleep(RETRY_SECONDS)
                continue
            finally:
                self._fetch = None
            if not updates:
                continue
            await asyncio.gather(*(self._handle(update) for update in updates))
            self._offset = updates[-1].update_id + 1

    async def _handle(self, update: Update) -> None:
        try:
            await self.application.process_update(update)
        except Exception:  # the error handler has logged it; the batch goes on
            log.exception("update %s failed", update.update_id)

    async def _confirm(self) -> None:
        """Tell Telegram what we handled, so a restart does not see it again."""
        if self._offset is None:
            return
        with contextlib.suppress(TelegramError):
            await self.application.bot.get_updates(offset=self._offset, timeout=0, limit=1)
