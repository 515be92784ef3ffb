"""/faceswap in its three forms: an album of two photos captioned /faceswap
(first the face, then the target), a photo captioned /faceswap in reply to
the target photo, and a guided flow that asks for the two photos in turn
(/cancel leaves it). Album parts arrive as separate updates sharing a
media_group_id; they are collected briefly and acted on once."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from telegram import ForceReply, Message, Update
from telegram.ext import Application, CommandHandler, ContextTypes

from bot.handlers.common import Requester, reply, requester
from bot.handlers.images import ImageProblem, input_image
from bot.handlers.submit import Request, start_task
from bot.i18n import t
from bot.services import Services, services
from providers.types import Capability, GenerationParams

FLOW = "faceswap"
FLOW_TTL_SECONDS = 600.0
ALBUM_QUIET_SECONDS = 1.0  # Telegram sends an album's parts within moments


async def swap(svc: Services, message: Message, who: Requester, face: dict, target: dict) -> None:
    request = Request([Capability.FACESWAP], GenerationParams(prompt="faceswap"), inputs=[face, target])
    await start_task(svc, message, who, request)


async def ask(message: Message, who: Requester, key: str) -> None:
    # ForceReply: in groups with privacy mode the answer must be a reply to reach us.
    await reply(message, t(who.language, key), reply_markup=ForceReply(selective=True))


async def start_flow(svc: Services, message: Message, who: Requester, face: dict | None = None) -> None:
    await svc.store.flows.start(message.chat_id, who.user.id, FLOW, FLOW_TTL_SECONDS, {"face": face} if face else {})
    await ask(message, who, "faceswap_send_target" if face else "faceswap_send_face")


async def feed_flow(svc: Services, message: Message, who: Requester, image: dict) -> bool:
    """Use ``image`` for the user's guided faceswap, if one is waiting: it is
    the face unless the flow already has one (or began with the target)."""
    flow = await svc.store.flows.current(message.chat_id, who.user.id)
    if flow is None or flow.kind != FLOW:
        return False
    if "target" in flow.data or "face" in flow.data:
        await svc.store.flows.finish(message.chat_id, who.user.id)
        face, target = flow.data.get("face", image), flow.data.get("target", image)
        await swap(svc, message, who, face, target)
        return True
    await svc.store.flows.update(flow, {"face": image})
    await ask(message, who, "faceswap_send_target")
    return True


async def faceswap_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/faceswap as text: in reply to a photo (the target) it asks for the
    face; alone it starts the guided flow."""
    svc = services(context)
    message = update.effective_message
    who = await requester(update, svc)
    if who is None or message is None:
        return
    target = input_image(message.reply_to_message)
    if isinstance(target, ImageProblem):
        await reply(message, t(who.language, target.key, **target.values))
        return
    if isinstance(target, dict):
        await svc.store.flows.start(message.chat_id, who.user.id, FLOW, FLOW_TTL_SECONDS, {"target": target})
        await ask(message, who, "faceswap_send_face")
        return
    await start_flow(svc, message, who)


@dataclass
class _Album:
    messages: list[Message] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class AlbumCollector:
    """Gathers the parts of an album and calls back once, after a quiet moment."""

    def __init__(self) -> None:
        self._albums: dict[str, _Album] = {}

    def add(self, message: Message, on_complete) -> None:  # type: ignore[no-untyped-def]
        group_id = message.media_group_id
        assert group_id is not None
        album = self._albums.setdefault(group_id, _Album())
        album.messages.append(message)
        if album.timer is not None:
            album.timer.cancel()
        loop = asyncio.get_running_loop()
        album.timer = loop.call_later(ALBUM_QUIET_SECONDS, self._fire, group_id, on_complete)

    def _fire(self, group_id: str, on_complete) -> None:  # type: ignore[no-untyped-def]
        album = self._albums.pop(group_id, None)
        if album is not None:
            messages = sorted(album.messages, key=lambda m: m.message_id)
            asyncio.get_running_loop().create_task(on_complete(messages))


def register(app: Application) -> None:  # type: ignore[type-arg]
    app.add_handler(CommandHandler("faceswap", faceswap_command))
