"""The fake Bot API behaves like the real one, as seen through the real ``telegram.Bot``.

PTB turns ``{"description": "Bad Request: xyz"}`` into ``BadRequest("Xyz")`` (prefix removed,
``str.capitalize()`` applied, which lower-cases the rest), so messages are compared lower-cased.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import time
import warnings
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
import telegram
from PIL import Image
from telegram import (
    BotCommand,
    BotCommandScopeChat,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaPhoto,
    ReplyParameters,
)
from telegram.error import BadRequest, Conflict, Forbidden, InvalidToken, NetworkError, RetryAfter
from telegram.ext import Application, CallbackQueryHandler, CommandHandler

from tests.fakes.server import serve
from tests.fakes.telegram import FakeTelegram, iter_entities_text

pytestmark = [
    # One loopback server for the module (uvicorn needs ~0.15 s to stop); fresh fake per test.
    pytest.mark.asyncio(loop_scope="module"),
    # PTB warns about RetryAfter.retry_after's future type whenever it builds a RetryAfter.
    pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning"),
]

TOKEN = "123456789:AAH-fake_token_for_tests_0123456789"
USER = 4242
GROUP = -100500


def png(width: int = 64, height: int = 48, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "PNG")
    return buf.getvalue()


def make_bot(url: str, token: str = TOKEN) -> telegram.Bot:
    return telegram.Bot(token, base_url=f"{url}/bot", base_file_url=f"{url}/file/bot")


def retry_seconds(exc: RetryAfter) -> float:
    with warnings.catch_warnings():  # PTB 22 deprecates the int form of retry_after
        warnings.simplefilter("ignore")
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, dt.timedelta) else float(value)


class Mount:
    """ASGI app forwarding to the FakeTelegram mounted by the current test."""

    def __init__(self) -> None:
        self.url = ""
        self.fake: FakeTelegram | None = None

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        assert self.fake is not None
        await self.fake.app(scope, receive, send)

    def mount(self, fake: FakeTelegram) -> FakeTelegram:
        if self.fake is not None:
            self.fake.close()  # release long polls of the previous test's fake
        self.fake, fake.url = fake, self.url
        return fake


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server() -> AsyncIterator[Mount]:
    mount = Mount()
    async with serve(mount) as url:
        mount.url = url
        yield mount
        if mount.fake is not None:
            mount.fake.close()


@pytest_asyncio.fixture(loop_scope="module")
async def fake(server: Mount) -> AsyncIterator[FakeTelegram]:
    fake = server.mount(FakeTelegram(TOKEN))
    yield fake
    fake.close()


@pytest_asyncio.fixture(loop_scope="module")
async def bot(fake: FakeTelegram) -> AsyncIterator[telegram.Bot]:
    async with make_bot(fake.url) as bot:  # type: ignore[arg-type]
        yield bot


@pytest.fixture
def chat(fake: FakeTelegram) -> int:
    fake.user_message(USER, USER, "hello")
    return USER


def keyboard(*data: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton(d.upper(), callback_data=d) for d in data]])


# ----------------------------------------------------------------------------- basics


async def test_get_me_matches_bot_api(fake: FakeTelegram, bot: telegram.Bot) -> None:
    me = await bot.get_me()
    assert me.id == 123456789
    assert me.is_bot and me.username == "drawbridge_test_bot"
    assert me.can_join_groups is True
    assert me.can_read_all_group_messages is False  # privacy mode on
    assert me.supports_inline_queries is False
    assert fake.calls("getMe") and all(c.ok for c in fake.calls("getMe"))


async def test_wrong_token_and_unknown_method(fake: FakeTelegram) -> None:
    with pytest.raises(InvalidToken):
        async with make_bot(fake.url, "987654:WRONG"):  # type: ignore[arg-type]
            pass
    assert (fake.requests[-1].status, fake.requests[-1].error) == (401, "Unauthorized")
    async with httpx.AsyncClient(base_url=fake.url) as client:  # type: ignore[arg-type]
        r = await client.post(f"/bot{TOKEN}/noSuchMethod")
        assert r.status_code == 404
        assert r.json() == {"ok": False, "error_code": 404, "description": "Not Found"}
        # Method names are case-insensitive; JSON bodies work like form bodies.
        r = await client.post(f"/bot{TOKEN}/GETME")
        assert r.json()["result"]["username"] == "drawbridge_test_bot"
        fake.add_chat(USER)
        markup = {"inline_keyboard": [[{"text": "a", "callback_data": "a"}]]}
        r = await client.post(
            f"/bot{TOKEN}/sendMessage", json={"chat_id": USER, "text": "x", "reply_markup": markup}
        )
        assert r.status_code == 200 and r.json()["result"]["reply_markup"] == markup
        r = await client.get(
            f"/bot{TOKEN}/sendMessage", params={"chat_id": USER, "text": "via query"}
        )
        assert r.json()["result"]["text"] == "via query"


# ----------------------------------------------------------------------------- sendMessage


async def test_send_message_and_replies(fake: FakeTelegram, bot: telegram.Bot, chat: int) -> None:
    user_msg_id = fake.chat_history(chat)[0].message_id
    sent = await bot.send_message(chat, "hi there", reply_parameters=ReplyParameters(user_msg_id))
    assert sent.text == "hi there" and sent.chat.id == chat
    assert sent.reply_to_message is not None and sent.reply_to_message.message_id == user_msg_id
    assert sent.message_id > user_msg_id  # one id sequence per chat
    stored = fake.message(chat, sent.message_id)
    assert stored.from_bot and stored.reply_to_message_id == user_msg_id

    with pytest.raises(BadRequest) as err:
        await bot.send_message(chat, "x", reply_parameters=ReplyParameters(999_999))
    assert err.value.message.lower() == "message to be replied not found"
    with pytest.raises(BadRequest) as err:  # the legacy spelling is converted by PTB, same result
        await bot.send_message(chat, "x", reply_to_message_id=999_999)
    assert "message to be replied not found" in err.value.message.lower()
    lenient = ReplyParameters(999_999, allow_sending_without_reply=True)
    ok = await bot.send_message(chat, "x", reply_parameters=lenient)
    assert ok.reply_to_message is None

    with pytest.raises(BadRequest, match="(?i)chat not found"):
        await bot.send_message(777, "nobody here")
    with pytest.raises(BadRequest, match="(?i)message text is empty"):
        await bot.send_message(chat, "")
    with pytest.raises(BadRequest, match="(?i)text must be non-empty"):
        await bot.send_message(chat, "   ")
    await bot.send_message(chat, "x" * 4096)
    with pytest.raises(BadRequest, match="(?i)message is too long"):
        await bot.send_message(chat, "x" * 4097)
    # The limit applies after entity parsing: markup does not count.
    await bot.send_message(chat, "<b>" + "x" * 4096 + "</b>", parse_mode="HTML")
    assert len(fake.bot_messages(chat)) == 4
    failed = fake.calls("sendMessage", chat, ok=False)
    assert [c.status for c in failed] == [400] * 5


async def test_html_parse_mode(fake: FakeTelegram, bot: telegram.Bot, chat: int) -> None:
    html = '<b>Bold</b> &amp; <a href="https://x.org/?a=1&b=2">link</a> 😀<i>i</i>'
    sent = await bot.send_message(chat, html, parse_mode="HTML")
    assert sent.text == "Bold & link 😀i"
    assert iter_entities_text(sent.text, [e.to_dict() for e in sent.entities]) == [
        ("bold", "Bold"), ("text_link", "link"), ("italic", "i")
    ]
    assert sent.entities[2].offset == 14  # UTF-16: the emoji counts twice
    assert fake.message(chat, sent.message_id).raw_text.startswith("<b>Bold</b>")

    cases = {
        "<b>unclosed": 'can\'t find end tag corresponding to start tag "b"',
        "<b><i>x</b></i>": 'unmatched end tag at byte offset 7, expected "</i>", found "</b>"',
        "<script>x</script>": 'unsupported start tag "script" at byte offset 0',
        "1 < 2": "unsupported start tag",
        "fish & chips": "can't parse entities",
        "<span>x</span>": "tg-spoiler",
    }
    for text, expected in cases.items():
        with pytest.raises(BadRequest) as err:
            await bot.send_message(chat, text, parse_mode="HTML")
        assert err.value.message.lower().startswith("can't parse entities"), text
        assert expected in err.value.message.lower(), (text, err.value.message)
    with pytest.raises(BadRequest, match="(?i)unsupported parse_mode"):
        await bot.send_message(chat, "x", parse_mode="BBCode")


async def test_markdown_v2_requires_escaping(bot: telegram.Bot, chat: int) -> None:
    text = r"*Done\!* 1\.5 \- [site](https://e.org)"
    sent = await bot.send_message(chat, text, parse_mode="MarkdownV2")
    assert sent.text == "Done! 1.5 - site"
    assert [e.type for e in sent.entities] == ["bold", "text_link"]
    for text, char in (("Done!", "!"), ("1.5", "."), ("a-b", "-"), ("(x)", "(")):
        with pytest.raises(BadRequest) as err:
            await bot.send_message(chat, text, parse_mode="MarkdownV2")
        assert f"character '{char}' is reserved" in err.value.message.lower()
    with pytest.raises(BadRequest, match="(?i)can't find end of bold entity at byte offset 0"):
        await bot.send_message(chat, "*unclosed", parse_mode="MarkdownV2")


async def test_inline_keyboard_validation(fake: FakeTelegram, bot: telegram.Bot, chat: int) -> None:
    ok = await bot.send_message(chat, "pick", reply_markup=keyboard("x" * 64))
    assert ok.reply_markup is not None
    assert ok.reply_markup.inline_keyboard[0][0].callback_data == "x" * 64
    for data in ("x" * 65, "é" * 33):  # the limit is 64 *bytes* of UTF-8, not characters
        with pytest.raises(BadRequest, match="(?i)^button_data_invalid$"):
            await bot.send_message(chat, "pick", reply_markup=keyboard(data))
    no_action = InlineKeyboardMarkup([[InlineKeyboardButton("no action")]])
    with pytest.raises(BadRequest, match="(?i)text buttons are unallowed in the inline keyboard"):
        await bot.send_message(chat, "pick", reply_markup=no_action)
    both = InlineKeyboardButton("two", url="https://e.org", api_kwargs={"callback_data": "y"})
    with pytest.raises(BadRequest, match="(?i)exactly one"):
        await bot.send_message(chat, "pick", reply_markup=InlineKeyboardMarkup([[both]]))
    ftp = InlineKeyboardMarkup([[InlineKeyboardButton("f", url="ftp://e.org")]])
    with pytest.raises(BadRequest, match="(?i)is invalid: unsupported url protocol"):
        await bot.send_message(chat, "pick", reply_markup=ftp)
    assert [m.message_id for m in fake.bot_messages(chat)] == [ok.message_id]


# ----------------------------------------------------------------------------- photos & files


async def test_send_photo_returns_sizes_and_stores_file(
    fake: FakeTelegram, bot: telegram.Bot, chat: int
) -> None:
    data = png(1000, 600)
    sent = await bot.send_photo(chat, data, caption="<b>art</b>", parse_mode="HTML")
    sizes = [(p.width, p.height) for p in sent.photo]
    assert sizes == [(90, 54), (320, 192), (800, 480), (1000, 600)]  # largest last
    assert all(p.file_size and p.file_id and p.file_unique_id for p in sent.photo)
    assert len({p.file_id for p in sent.photo}) == 4
    assert sent.caption == "art" and sent.caption_entities[0].type == "bold"
    stored = fake.message(chat, sent.message_id)
    assert stored.kind == "photo" and stored.upload == data
    assert fake.calls("sendPhoto")[0].files  # sent as a multipart upload
    largest = Image.open(io.BytesIO(fake.file_bytes(sent.photo[-1].file_id)))
    assert largest.size == (1000, 600) and largest.format == "JPEG"  # re-encoded, like Telegram

    with pytest.raises(BadRequest, match="(?i)message caption is too long"):
        await bot.send_photo(chat, data, caption="c" * 1025)


async def test_send_photo_by_file_id_and_rejections(
    fake: FakeTelegram, bot: telegram.Bot, chat: int
) -> None:
    first = await bot.send_photo(chat, png())
    again = await bot.send_photo(chat, first.photo[-1].file_id)
    assert again.message_id != first.message_id
    assert [p.file_unique_id for p in again.photo] == [p.file_unique_id for p in first.photo]
    assert not fake.calls("sendPhoto")[1].files  # reuse sends no bytes

    with pytest.raises(BadRequest, match="(?i)wrong file identifier/http url specified"):
        await bot.send_photo(chat, "AgACAgIAAxkBAAIBnotarealfileid")
    with pytest.raises(BadRequest, match="(?i)wrong file identifier/http url specified"):
        await bot.send_photo(chat, "https://example.com/cat.jpg")
    with pytest.raises(BadRequest, match="(?i)^image_process_failed$"):
        await bot.send_photo(chat, b"this is not an image", filename="x.jpg")
    with pytest.raises(BadRequest, match="(?i)^photo_invalid_dimensions$"):
        await bot.send_photo(chat, png(2100, 100))  # aspect ratio 21 > 20
    with pytest.raises(BadRequest, match="(?i)^photo_invalid_dimensions$"):
        await bot.send_photo(chat, png(9000, 1001))  # width + height > 10000
    doc = await bot.send_document(chat, b"%PDF-1.4 fake", filename="report.pdf")
    with pytest.raises(BadRequest, match="(?i)type of file mismatch"):
        await bot.send_photo(chat, doc.document.file_id)
    assert len(fake.bot_messages(chat)) == 3


async def test_document_and_get_file_roundtrip(
    fake: FakeTelegram, bot: telegram.Bot, chat: int
) -> None:
    payload = bytes(range(256)) * 40
    sent = await bot.send_document(chat, payload, filename="blob.bin")
    doc = sent.document
    assert doc.file_name == "blob.bin" and doc.file_size == len(payload)
    assert doc.mime_type == "application/octet-stream"
    file = await bot.get_file(doc.file_id)
    assert file.file_size == len(payload) and file.file_path
    assert bytes(await file.download_as_bytearray()) == payload
    assert fake.file_downloads

    # A photo sent by a user: the largest size is downloadable as a JPEG of the right size.
    message = fake.user_message(USER, USER, photo=png(400, 300), caption="make it blue")
    assert message["photo"][-1]["width"] == 400 and message["caption"] == "make it blue"
    user_file = await bot.get_file(message["photo"][-1]["file_id"])
    image = Image.open(io.BytesIO(bytes(await user_file.download_as_bytearray())))
    assert image.size == (400, 300)

    with pytest.raises(BadRequest, match="(?i)invalid file_id"):
        await bot.get_file("nonsense")
    async with httpx.AsyncClient(base_url=fake.url) as client:  # type: ignore[arg-type]
        path = file.file_path.rsplit(f"/file/bot{TOKEN}/", 1)[1]
        assert (await client.get(f"/file/bot{TOKEN}/{path}")).content == payload
        assert (await client.get(f"/file/bot999:WRONG/{path}")).status_code == 401
        assert (await client.get(f"/file/bot{TOKEN}/documents/nope.bin")).status_code == 404


async def test_send_media_group(fake: FakeTelegram, bot: telegram.Bot, chat: int) -> None:
    album = await bot.send_media_group(
        chat,
        [InputMediaPhoto(png(color=(0, 0, 255)), caption="one"), InputMediaPhoto(png())],
    )
    assert len(album) == 2
    assert album[0].media_group_id and album[0].media_group_id == album[1].media_group_id
    assert album[0].caption == "one" and album[1].caption is None
    assert all(m.photo and m.photo[-1].width == 64 for m in album)
    assert album[1].message_id == album[0].message_id + 1
    assert len(fake.calls("sendMediaGroup")[0].files) == 2  # attach:// parts

    with pytest.raises(BadRequest):
        await bot.send_media_group(chat, [InputMediaPhoto(png())])
    with pytest.raises(BadRequest, match="(?i)reply_markup"):
        await bot.send_media_group(
            chat,
            [InputMediaPhoto(png()), InputMediaPhoto(png())],
            api_kwargs={"reply_markup": json.dumps(keyboard("a").to_dict())},
        )
    assert len(fake.bot_messages(chat)) == 2


# ----------------------------------------------------------------------------- editing & deleting


async def test_edit_message_rules(fake: FakeTelegram, bot: telegram.Bot, chat: int) -> None:
    sent = await bot.send_message(chat, "Working…", reply_markup=keyboard("cancel"))
    with pytest.raises(BadRequest) as err:
        await bot.edit_message_text(
            "Working…", chat, sent.message_id, reply_markup=keyboard("cancel")
        )
    assert "not modified" in err.value.message.lower()

    # Same text but no reply_markup is a modification: Telegram removes the keyboard.
    edited = await bot.edit_message_text("Working…", chat, sent.message_id)
    assert edited.reply_markup is None and edited.edit_date is not None
    stored = fake.message(chat, sent.message_id)
    assert stored.buttons == [] and len(stored.edits) == 1
    assert stored.edits[0].before["text"] == "Working…"

    with pytest.raises(BadRequest, match="(?i)message to edit not found"):
        await bot.edit_message_text("x", chat, 999_999)
    user_msg = fake.chat_history(chat)[0]
    with pytest.raises(BadRequest, match="(?i)message can't be edited"):
        await bot.edit_message_text("x", chat, user_msg.message_id)
    photo = await bot.send_photo(chat, png(), caption="c")
    with pytest.raises(BadRequest, match="(?i)there is no text in the message to edit"):
        await bot.edit_message_text("x", chat, photo.message_id)
    with pytest.raises(BadRequest, match="(?i)there is no caption in the message to edit"):
        await bot.edit_message_caption(chat, sent.message_id, caption="x")
    recaptioned = await bot.edit_message_caption(chat, photo.message_id, caption="new")
    assert recaptioned.caption == "new"
    with pytest.raises(BadRequest, match="(?i)not modified"):
        await bot.edit_message_reply_markup(chat, sent.message_id, reply_markup=None)


async def test_delete_message(fake: FakeTelegram, bot: telegram.Bot, chat: int) -> None:
    sent = await bot.send_message(chat, "bye")
    assert await bot.delete_message(chat, sent.message_id) is True
    with pytest.raises(BadRequest, match="(?i)message to delete not found"):
        await bot.delete_message(chat, sent.message_id)
    assert fake.bot_messages(chat) == []
    assert fake.bot_messages(chat, include_deleted=True)[0].deleted
    with pytest.raises(BadRequest, match="(?i)message to edit not found"):
        await bot.edit_message_text("x", chat, sent.message_id)


async def test_set_message_reaction(fake: FakeTelegram, bot: telegram.Bot, chat: int) -> None:
    request = fake.user_message(USER, USER, "/imagine a cat")
    assert await bot.set_message_reaction(chat, request["message_id"], "👀") is True
    assert fake.message(chat, request["message_id"]).bot_reactions == [{"type": "emoji", "emoji": "👀"}]
    with pytest.raises(BadRequest, match="(?i)reaction_invalid"):  # not one of Telegram's reaction emoji
        await bot.set_message_reaction(chat, request["message_id"], "🦊")
    with pytest.raises(BadRequest, match="(?i)reactions_too_many"):  # bots get one, like non-premium users
        await bot.set_message_reaction(chat, request["message_id"], ["👀", "👍"])
    with pytest.raises(BadRequest, match="(?i)message_id_invalid"):
        await bot.set_message_reaction(chat, 999_999, "👀")
    assert await bot.set_message_reaction(chat, request["message_id"]) is True  # none: taken back
    assert fake.message(chat, request["message_id"]).bot_reactions == []


# ----------------------------------------------------------------------------- failures & limits


async def test_fault_injection(fake: FakeTelegram, bot: telegram.Bot, chat: int) -> None:
    fake.fail_next("sendMessage", 429, retry_after=7)
    with pytest.raises(RetryAfter) as err:
        await bot.send_message(chat, "x")
    assert retry_seconds(err.value) == 7
    assert fake.calls("sendMessage")[-1].error == "Too Many Requests: retry after 7"
    assert (await bot.send_message(chat, "x")).text == "x"  # only the next call failed

    fake.fail_next("SENDMESSAGE", 500, times=2)
    for _ in range(2):
        with pytest.raises(NetworkError, match="Internal Server Error"):
            await bot.send_message(chat, "x")
    fake.fail_next("sendMessage", 502)
    with pytest.raises(NetworkError, match="Bad Gateway"):
        await bot.send_message(chat, "x")
    assert len(fake.bot_messages(chat)) == 1

    fake.block_bot(chat)
    with pytest.raises(Forbidden, match="bot was blocked by the user"):
        await bot.send_message(chat, "x")


async def test_flood_control(server: Mount) -> None:
    fake = server.mount(FakeTelegram(TOKEN, enforce_flood_limits=True))
    async with make_bot(server.url) as bot:
        fake.freeze_time()  # only advance_time() moves the clock: no flakiness
        fake.add_chat(USER)
        for i in range(3):  # a short burst to one private chat is fine
            await bot.send_message(USER, f"m{i}")
        await bot.send_chat_action(USER, "typing")  # chat actions don't count
        await bot.set_message_reaction(USER, fake.user_message(USER, USER, "hi")["message_id"], "👀")  # nor reactions
        with pytest.raises(RetryAfter) as err:
            await bot.send_message(USER, "too fast")
        assert retry_seconds(err.value) == 1
        assert fake.calls("sendMessage", USER)[-1].status == 429
        fake.advance_time(1)
        await bot.send_message(USER, "after waiting")

        fake.add_chat(GROUP)
        for i in range(20):
            await bot.send_message(GROUP, f"g{i}")
        with pytest.raises(RetryAfter) as err:  # 20 per minute per group
            await bot.send_message(GROUP, "21st")
        assert 50 < retry_seconds(err.value) <= 60

        fake.advance_time(61)
        for chat_id in range(1, 12):
            fake.add_chat(chat_id)
        for chat_id in range(1, 11):
            for _ in range(3):
                await bot.send_message(chat_id, "bulk")
        with pytest.raises(RetryAfter):  # 30 per second overall
            await bot.send_message(11, "31st")
        assert len(fake.bot_messages(USER)) == 4
        assert len(fake.bot_messages(GROUP)) == 20
        assert fake.bot_messages(11) == []


# ----------------------------------------------------------------------------- updates


async def test_get_updates_long_poll_offset_and_entities(
    fake: FakeTelegram, bot: telegram.Bot
) -> None:
    started = time.monotonic()
    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await asyncio.sleep(0.1)
    fake.user_message(USER, USER, "/start@drawbridge_test_bot hi @someone 😀")
    updates = await asyncio.wait_for(poll, 2)
    assert time.monotonic() - started < 2  # answered as soon as the update arrived
    [update] = updates
    message = update.message
    assert message.text.startswith("/start") and message.chat.type == "private"
    assert message.from_user.language_code == "en"
    assert [(e.type, e.offset, e.length) for e in message.entities] == [
        ("bot_command", 0, 26), ("mention", 30, 8)
    ]
    # Unconfirmed updates are delivered again; a higher offset confirms them.
    assert [u.update_id for u in await bot.get_updates(timeout=0)] == [update.update_id]
    assert await bot.get_updates(offset=update.update_id + 1, timeout=0) == ()
    assert fake.pending_updates() == []

    started = time.monotonic()
    assert await bot.get_updates(timeout=dt.timedelta(seconds=0.3)) == ()
    assert 0.25 < time.monotonic() - started < 2

    # allowed_updates is respected and remembered; filtered updates are gone for good.
    fake.user_message(USER, USER, "text")
    assert await bot.get_updates(timeout=0, allowed_updates=["callback_query"]) == ()
    fake.user_message(USER, USER, "again")
    assert await bot.get_updates(timeout=0) == ()
    assert await bot.get_updates(timeout=0, allowed_updates=["message"]) == ()
    fake.user_message(USER, USER, "finally")
    assert [u.message.text for u in await bot.get_updates(timeout=0)] == ["finally"]


async def test_concurrent_get_updates_conflict(fake: FakeTelegram, bot: telegram.Bot) -> None:
    async with make_bot(fake.url) as second:  # type: ignore[arg-type]
        first_poll = asyncio.create_task(bot.get_updates(timeout=5))
        await asyncio.sleep(0.1)
        second_poll = asyncio.create_task(second.get_updates(timeout=5))
        with pytest.raises(Conflict, match="terminated by other getUpdates request"):
            await asyncio.wait_for(first_poll, 2)
        fake.user_message(USER, USER, "for the survivor")
        assert len(await asyncio.wait_for(second_poll, 2)) == 1


async def test_webhook_blocks_polling(fake: FakeTelegram, bot: telegram.Bot) -> None:
    with pytest.raises(BadRequest, match="(?i)https url must be provided"):
        await bot.set_webhook("http://example.com/hook")
    assert await bot.set_webhook("https://example.com/hook", secret_token="s3cret")
    assert (await bot.get_webhook_info()).url == "https://example.com/hook"
    with pytest.raises(Conflict, match="can't use getUpdates method while webhook is active"):
        await bot.get_updates(timeout=0)
    fake.user_message(USER, USER, "queued")
    assert await bot.delete_webhook(drop_pending_updates=True)
    assert await bot.get_updates(timeout=0) == ()


async def test_callback_queries(fake: FakeTelegram, bot: telegram.Bot, chat: int) -> None:
    sent = await bot.send_message(chat, "choose", reply_markup=keyboard("red", "blue"))
    with pytest.raises(ValueError):  # users can only press buttons that exist
        fake.press_button(chat, USER, sent.message_id, "green")
    query_id = fake.press_button(chat, USER, sent.message_id, "blue")
    [update] = [u for u in await bot.get_updates(timeout=0) if u.callback_query]
    assert update.callback_query.id == query_id and update.callback_query.data == "blue"
    assert update.callback_query.message.message_id == sent.message_id

    assert await bot.answer_callback_query(query_id, text="Blue it is") is True
    too_old = "(?i)query is too old and response timeout expired or query id is invalid"
    with pytest.raises(BadRequest, match=too_old):
        await bot.answer_callback_query(query_id)
    [answer] = fake.callback_answers
    assert answer.text == "Blue it is" and answer.latency is not None and 0 <= answer.latency < 5

    late = fake.press_button(chat, USER, sent.message_id, text="RED")
    fake.advance_time(16)
    with pytest.raises(BadRequest, match="(?i)query is too old"):
        await bot.answer_callback_query(late)
    with pytest.raises(BadRequest, match="(?i)query is too old"):
        await bot.answer_callback_query("12345")


async def test_group_privacy_mode(fake: FakeTelegram, bot: telegram.Bot) -> None:
    fake.user_message(GROUP, USER, "just chatting")
    fake.user_message(GROUP, USER, "/draw@other_bot cat")
    fake.user_message(GROUP, USER, "/draw a cat")
    updates = await bot.get_updates(timeout=0)
    assert [u.message.text for u in updates] == ["/draw a cat"]
    assert updates[0].message.chat.type == "group" and updates[0].message.chat.title
    reply = await bot.send_message(GROUP, "which style?")
    fake.user_message(GROUP, USER, "watercolor", reply_to_message_id=reply.message_id)
    updates = await bot.get_updates(offset=updates[-1].update_id + 1, timeout=0)
    assert updates[0].message.reply_to_message.message_id == reply.message_id
    assert len(fake.undelivered) == 2

    fake.set_chat_admin(GROUP, fake.bot_id)  # admins see everything
    fake.user_message(GROUP, USER, "now visible")
    updates = await bot.get_updates(offset=updates[-1].update_id + 1, timeout=0)
    assert [u.message.text for u in updates] == ["now visible"]
    member = await bot.get_chat_member(GROUP, fake.bot_id)
    assert member.status == "administrator"
    assert (await bot.get_chat_member(GROUP, USER)).status == "member"


async def test_set_my_commands(fake: FakeTelegram, bot: telegram.Bot, chat: int) -> None:
    with pytest.raises(BadRequest, match="(?i)^bot_command_invalid$"):
        await bot.set_my_commands([BotCommand("Start!", "begin")])
    with pytest.raises(BadRequest, match="(?i)^bot_command_description_invalid$"):
        await bot.set_my_commands([BotCommand("start", "d" * 257)])
    assert await bot.set_my_commands([BotCommand("start", "Begin"), BotCommand("help", "Help")])
    assert await bot.set_my_commands([BotCommand("start", "Начать")], language_code="ru")
    admin = [BotCommand("admin", "Admin")]
    assert await bot.set_my_commands(admin, scope=BotCommandScopeChat(chat))
    assert [c.command for c in await bot.get_my_commands()] == ["start", "help"]
    russian = await bot.get_my_commands(language_code="ru")
    assert [c.description for c in russian] == ["Начать"]
    assert fake.commands_for(f"chat:{chat}") == [("admin", "Admin")]
    assert await bot.delete_my_commands()
    assert await bot.get_my_commands() == ()


async def test_wait_for_helpers(fake: FakeTelegram, bot: telegram.Bot, chat: int) -> None:
    async def later() -> None:
        await asyncio.sleep(0.05)
        await bot.send_message(chat, "done!")

    task = asyncio.create_task(later())
    msg = await fake.wait_for_message(chat, lambda m: m.text == "done!", timeout=2)
    assert msg.text == "done!"
    await task
    with pytest.raises(AssertionError, match="FakeTelegram") as err:
        await fake.wait_for(lambda: len(fake.bot_messages(chat)) > 5, timeout=0.05)
    assert "sendMessage" in str(err.value) and "done!" in str(err.value)


# ----------------------------------------------------------------------------- the real Application


async def test_real_application_polling_round_trip() -> None:
    """A PTB Application polls the fake, replies, handles a button press and shuts down fast.

    Uses FakeTelegram.serve() (its own server) to prove shutdown works with a live long poll.
    """
    fake = FakeTelegram(TOKEN)

    async def start(update, context) -> None:  # type: ignore[no-untyped-def]
        await update.message.reply_text("Pick a size", reply_markup=keyboard("small", "large"))

    async def pressed(update, context) -> None:  # type: ignore[no-untyped-def]
        await update.callback_query.answer("ok")
        await update.callback_query.edit_message_text(f"Size: {update.callback_query.data}")

    async with fake.serve() as url:
        builder = Application.builder().token(TOKEN).base_url(f"{url}/bot")
        app = builder.base_file_url(f"{url}/file/bot").build()
        app.add_handler(CommandHandler("start", start))
        app.add_handler(CallbackQueryHandler(pressed))
        async with app:
            await app.start()
            await app.updater.start_polling(allowed_updates=["message", "callback_query"])
            fake.user_message(USER, USER, "/start")
            menu = await fake.wait_for_message(USER, lambda m: m.buttons, timeout=3)
            assert menu.callback_data == ["small", "large"]
            fake.press_button(USER, USER, menu.message_id, "large")
            await fake.wait_for(
                lambda: fake.message(USER, menu.message_id).text == "Size: large", timeout=3
            )
            assert fake.callback_answers[0].text == "ok"
            started = time.monotonic()
            await app.updater.stop()
            await app.stop()
        assert time.monotonic() - started < 2
    assert not fake.internal_errors
    assert fake.calls("deleteWebhook")  # PTB's polling bootstrap
    assert not [c for c in fake.calls("getUpdates") if c.status == 409]
